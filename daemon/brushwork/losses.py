"""The cost J(G) = a*Jc(C, G) + b*Js(S, G) (+ a total-variation term), as in Gatys et al. 2015.

Activations `a` are (1, nC, nH, nW) tensors from one VGG layer. Caffe VGG16 sees pixels in
0..255, so raw Jc and Js[l] are huge and differ by orders of magnitude between layers. The engine
therefore divides each term by its target's own energy (`content_scale`, `style_scale`): the
weights a, b and lambda_l become unit-free, every layer starts on an equal footing, and L-BFGS
sees a well-scaled problem at every image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def content_loss(a_c: torch.Tensor, a_g: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """weight * Jc, Jc = 1/2 ||a(C) - a(G)||^2, in fp32. (Each term takes its weight: one
    kernel fewer forward and backward than a product outside.)"""
    return F.mse_loss(_at_least_fp32(a_g), a_c, reduction="sum") * (0.5 * weight)


def content_energy(a_c: torch.Tensor) -> float:
    """Jc(C, 0) = 1/2 ||a(C)||^2."""
    return 0.5 * float(a_c.float().pow(2).sum())


def content_scale(a_c: torch.Tensor, density: float | None = None) -> float:
    """1 / Jc(C, 0): makes Jc the relative error of G's activations. With `density` (energy
    per activation element of a whole image), 1 / (density * elements) instead: a tile of
    that image then weighs content as the whole image does, whatever its own contents."""
    energy = content_energy(a_c) if density is None else density * a_c.numel()
    return 1.0 / max(energy, 1e-12)


@dataclass(frozen=True)
class Moments:
    """First and second raw moments of one layer's activations over its N = nH nW positions:
    mean[k] = 1/N sum_ij a[i,j,k] and second[k,m] = 1/N sum_ij a[i,j,k] a[i,j,m]. Both are
    averages, so several style images blend and tiles of one image add up linearly."""

    mean: torch.Tensor  # (nC,), fp32
    second: torch.Tensor  # (nC, nC), fp32

    def __mul__(self, w: float) -> Moments:
        return Moments(self.mean * w, self.second * w)

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.mean + other.mean, self.second + other.second)

    def covariance(self, delta: float = 0.0) -> torch.Tensor:
        """Sigma = second - mean mean^T, plus delta I (added to the diagonal in place)."""
        cov = self.second - torch.outer(self.mean, self.mean)
        cov.diagonal().add_(delta)
        return cov

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.mean, self.second))


def moments(a: torch.Tensor) -> Moments:
    _, n_c, n_h, n_w = a.shape
    f = _at_least_fp32(a.reshape(n_c, n_h * n_w))
    return Moments(f.mean(dim=1), (f @ f.T) / (n_h * n_w))


@dataclass(frozen=True)
class Rest:
    """The rest of the image while a tile is optimised (tiling.py): the sums of its
    activations' moments over its positions (Moments times their count) and the whole image's
    count of positions. The tile's activations are a part of the image's: the statistics a
    style loss compares are the image's, (rest + the part's sums) / count."""

    sums: Moments
    count: int


def moments_with(a: torch.Tensor, rest: Rest | None) -> Moments:
    """moments(a), or with `rest` the moments of the image `a`'s positions are a part of."""
    if rest is None:
        return moments(a)
    return (moments(a) * (a.shape[-2] * a.shape[-1]) + rest.sums) * (1 / rest.count)


def gram(a: torch.Tensor) -> torch.Tensor:
    """M[k, m] = sum_ij a[i, j, k] a[i, j, m] / (nH nW nC).

    The normalisation is the seed's 1/(2 nH nW nC)^2 split between the two Grams, so a style
    image of another size than G compares fairly.
    """
    return gram_of(moments(a))


def gram_of(m: Moments) -> torch.Tensor:
    """The seed's normalised Gram matrix from the moments: second / nC."""
    return m.second / m.second.shape[0]


def style_layer_loss(
    gram_s: torch.Tensor, a_g: torch.Tensor, weight: float = 1.0, rest: Rest | None = None
) -> torch.Tensor:
    """weight * Js[l], Js[l] = 1/(2 nH nW nC)^2 * sum (M_S - M_G)^2 (Grams as in gram());
    with `rest`, M_G is the Gram of the image a_g is a part of."""
    return _StyleLayerLoss.apply(gram_s, a_g, weight, rest)


class _StyleLayerLoss(torch.autograd.Function):
    """Js[l] with its gradient written out: with F the (nC, nH nW) activations, N = nC nH nW
    and D = M_G - M_S (symmetric), dJs[l]/dF = D F / N. Autograd would differentiate
    F F^T / N through both factors and the square term by term: a dozen kernels per layer
    where this takes three, and on a GPU at small sizes kernel launches are the time.

    The Gram and D are fp32 whatever the activations' dtype: near the optimum M_G - M_S is a
    small difference of large numbers. The gradient D F / N is computed in the activations'
    dtype: it flows into bf16 convolutions anyway, a bf16 product ran 4-5x faster than fp32's
    on this CPU's AMX (and uses a GPU's tensor cores), and only F itself, not an fp32 copy,
    is kept for the backward pass."""

    @staticmethod
    def forward(
        ctx, gram_s: torch.Tensor, a_g: torch.Tensor, weight: float, rest: Rest | None
    ) -> torch.Tensor:
        _, n_c, n_h, n_w = a_g.shape
        n = n_c * (n_h * n_w if rest is None else rest.count)
        f = a_g.reshape(n_c, n_h * n_w)
        f32 = _at_least_fp32(f)
        if rest is not None:  # the rest's share of M_G moves to the other side
            gram_s = gram_s - rest.sums.second * (1 / n)
        d = torch.addmm(gram_s, f32, f32.T, beta=-1, alpha=1 / n)  # M_G - M_S
        ctx.save_for_backward(d, f)
        ctx.scale, ctx.shape = weight / n, a_g.shape
        return torch.dot(d.view(-1), d.view(-1)) * (0.25 * weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor, None, None]:
        d, f = ctx.saved_tensors
        grad_f = torch.mm(d.to(f.dtype), f, out=torch.empty_like(f))  # f's dtype and layout
        return None, grad_f.mul_(grad * ctx.scale).view(ctx.shape), None, None


def style_scale(gram_s: torch.Tensor) -> float:
    """1 / (1/4 ||M_S||^2): makes Js[l] the relative error of G's Gram matrix."""
    return 1.0 / max(float(0.25 * gram_s.pow(2).sum()), 1e-12)


class GramLoss:
    """The seed's style loss (Gatys et al. 2015): Js[l] between normalised Gram matrices."""

    def target(self, m: Moments) -> torch.Tensor:
        return gram_of(m)

    def scale(self, target: torch.Tensor) -> float:
        return style_scale(target)

    def __call__(
        self, target: torch.Tensor, a_g: torch.Tensor, weight: float, rest: Rest | None = None
    ) -> torch.Tensor:
        return style_layer_loss(target, a_g, weight, rest)


@dataclass(frozen=True)
class Gaussian:
    """A style layer's activations as a Gaussian N(mean, cov), cov regularised by delta I,
    with root = cov^(1/2) and trace = tr(cov): what W2 needs of the style, computed once."""

    mean: torch.Tensor
    root: torch.Tensor
    trace: float
    delta: float


class W2Loss:
    """The squared 2-Wasserstein distance between Gaussians fitted to G's and S's activations
    (as in crowsonkb's style transfer):

        W2^2 = ||mu_G - mu_S||^2 + tr(Sigma_G) + tr(Sigma_S) - 2 tr((A Sigma_G A)^(1/2)),
        A = Sigma_S^(1/2).

    Unlike the Gram matrix, which mixes the mean into the second moment (post-ReLU means are
    large, so they dominate it), the mean and the covariance are matched separately, and the
    covariance on the square-root scale: weak texture directions count, not only the few
    strongest. `DELTA` (relative to the mean variance) keeps rank-deficient covariances (a
    deep layer at a coarse scale has fewer positions than channels) well conditioned."""

    DELTA = 1e-2

    def target(self, m: Moments) -> Gaussian:
        cov = m.covariance()
        delta = self.DELTA * float(cov.diagonal().mean().clamp_min(1e-12))
        cov.diagonal().add_(delta)
        return Gaussian(m.mean, sqrtm(cov), float(cov.diagonal().sum()), delta)

    def scale(self, target: Gaussian) -> float:
        """1 / W2^2(S, 0) = 1 / (||mu_S||^2 + tr(Sigma_S)): the relative error, as for Gram."""
        return 1.0 / max(float(target.mean.pow(2).sum()) + target.trace, 1e-12)

    def __call__(
        self, target: Gaussian, a_g: torch.Tensor, weight: float, rest: Rest | None = None
    ) -> torch.Tensor:
        return _W2LayerLoss.apply(target.mean, target.root, target.trace, target.delta, a_g,
                                  weight, rest)  # fmt: skip


class _W2LayerLoss(torch.autograd.Function):
    """W2^2 with its gradient written out. With X = F - mu_G the centred (nC, N) activations
    and T = A (A Sigma_G A)^(-1/2) A the optimal transport map between the two Gaussians,
    dW2^2/dF = 2/N ((I - T) X + (mu_G - mu_S)): each feature vector is pulled toward its image
    under the transport map. One eigendecomposition of A Sigma_G A per layer gives both the
    square root in the loss and T."""

    @staticmethod
    def forward(ctx, mean_s, root_s, trace_s, delta, a_g, weight, rest):
        _, n_c, n_h, n_w = a_g.shape
        f = a_g.reshape(n_c, n_h * n_w)
        # Sigma_G from the raw moments, as the style's (W2Loss.target): no centred copy of the
        # activations, which at the first layers is the largest tensor of the step.
        g = moments_with(a_g, rest)
        mean, cov = g.mean, g.covariance(delta)
        m = root_s @ cov @ root_s
        lam, v = torch.linalg.eigh(0.5 * (m + m.T))
        lam = lam.clamp_min(delta * delta)  # M >= delta A^2 >= delta^2 I, up to rounding
        av = root_s @ v
        transport = (av * lam.rsqrt()) @ av.T  # A M^(-1/2) A
        identity_minus_t = transport.neg_()
        identity_minus_t.diagonal().add_(1)  # I - T, without an identity matrix
        shift = mean - mean_s
        ctx.save_for_backward(identity_minus_t, shift, mean, f)
        ctx.scale, ctx.shape = 2 * weight / (n_h * n_w if rest is None else rest.count), a_g.shape
        w2 = shift.dot(shift) + cov.diagonal().sum() + trace_s - 2 * lam.sqrt().sum()
        return w2 * weight

    @staticmethod
    def backward(ctx, grad):
        d, shift, mean, f = ctx.saved_tensors
        # (I - T)(F - mu 1^T) + shift 1^T = (I - T) F + (shift - (I - T) mu) 1^T: F uncentred.
        offset = (shift - d @ mean).to(f.dtype)
        grad_f = torch.addmm(offset[:, None], d.to(f.dtype), f)
        return None, None, None, None, grad_f.mul_(grad * ctx.scale).view(ctx.shape), None, None


def sqrtm(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix."""
    lam, v = torch.linalg.eigh(a)
    return (v * lam.clamp_min(0).sqrt()) @ v.T


STYLE_LOSSES = {"gram": GramLoss(), "w2": W2Loss()}


def style_loss(
    kind: str,
    targets: dict[str, object],
    acts_g: dict[str, torch.Tensor],
    layer_weights: dict[str, float],
    rests: dict[str, Rest] | None = None,
) -> torch.Tensor:
    """Js = sum_l lambda_l Js[l], with the style loss `kind` names (STYLE_LOSSES); `rests`:
    acts_g are a part of an image (a tile's), the rest of it per layer."""
    loss, rests = STYLE_LOSSES[kind], rests or {}
    return torch.stack(
        [loss(targets[n], acts_g[n], w, rests.get(n)) for n, w in layer_weights.items()]
    ).sum()


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels: discourages high-frequency noise."""
    return F.mse_loss(x[..., 1:, :], x[..., :-1, :]) + F.mse_loss(x[..., 1:], x[..., :-1])


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))
