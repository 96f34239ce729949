"""The cost J(G) = a*Jc(C, G) + b*Js(S, G) (+ a total-variation term), as in Gatys et al. 2015.

Activations `a` are (1, nC, nH, nW) tensors from one VGG layer. Caffe VGG16 sees pixels in
0..255, so raw Jc and Js[l] are huge and differ by orders of magnitude between layers. The engine
therefore divides each term by its target's own energy (`content_scale`, `style_scale`): the
weights a, b and lambda_l become unit-free, every layer starts on an equal footing, and L-BFGS
sees a well-scaled problem at every image size.
"""

from __future__ import annotations

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


def gram(a: torch.Tensor) -> torch.Tensor:
    """M[k, m] = sum_ij a[i, j, k] a[i, j, m] / (nH nW nC).

    The normalisation is the seed's 1/(2 nH nW nC)^2 split between the two Grams, so a style
    image of another size than G compares fairly.
    """
    _, n_c, n_h, n_w = a.shape
    f = _at_least_fp32(a.reshape(n_c, n_h * n_w))
    return (f @ f.T) / (n_c * n_h * n_w)


def style_layer_loss(gram_s: torch.Tensor, a_g: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """weight * Js[l], Js[l] = 1/(2 nH nW nC)^2 * sum (M_S - M_G)^2 (Grams as in gram())."""
    return _StyleLayerLoss.apply(gram_s, a_g, weight)


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
    def forward(ctx, gram_s: torch.Tensor, a_g: torch.Tensor, weight: float) -> torch.Tensor:
        _, n_c, n_h, n_w = a_g.shape
        n = n_c * n_h * n_w
        f = a_g.reshape(n_c, n_h * n_w)
        f32 = _at_least_fp32(f)
        d = torch.addmm(gram_s, f32, f32.T, beta=-1, alpha=1 / n)  # M_G - M_S
        ctx.save_for_backward(d, f)
        ctx.scale, ctx.shape = weight / n, a_g.shape
        return torch.dot(d.view(-1), d.view(-1)) * (0.25 * weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        d, f = ctx.saved_tensors
        grad_f = torch.mm(d.to(f.dtype), f, out=torch.empty_like(f))  # f's dtype and layout
        return None, grad_f.mul_(grad * ctx.scale).view(ctx.shape), None


def style_scale(gram_s: torch.Tensor) -> float:
    """1 / (1/4 ||M_S||^2): makes Js[l] the relative error of G's Gram matrix."""
    return 1.0 / max(float(0.25 * gram_s.pow(2).sum()), 1e-12)


def style_loss(
    grams_s: dict[str, torch.Tensor],
    acts_g: dict[str, torch.Tensor],
    layer_weights: dict[str, float],
) -> torch.Tensor:
    """Js = sum_l lambda_l Js[l]."""
    return torch.stack(
        [style_layer_loss(grams_s[n], acts_g[n], w) for n, w in layer_weights.items()]
    ).sum()


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels: discourages high-frequency noise."""
    return F.mse_loss(x[..., 1:, :], x[..., :-1, :]) + F.mse_loss(x[..., 1:], x[..., :-1])


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))
