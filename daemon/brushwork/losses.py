"""The cost J(G) = a*Jc(C, G) + b*Js(S, G) (+ a total-variation term), as in Gatys et al. 2015
(+ for a video frame, the temporal term of Ruder et al. 2016).

Activations `a` are (1, nC, nH, nW) tensors from one VGG layer. Caffe VGG16 sees pixels in
0..255, so raw Jc and Js[l] are huge and differ by orders of magnitude between layers. The engine
therefore divides each term by its target's own energy (`content_scale`, `style_scale`): the
weights a, b and lambda_l become unit-free, every layer starts on an equal footing, and L-BFGS
sees a well-scaled problem at every image size.

Past 600 lines for a reason: the three style losses, their gradients written out, and the host
sort the sliced one needs are one unit behind STYLE_LOSSES, and no other module should see
their internals.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
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
    f = _at_least_fp32(flat(a))
    return Moments(f.mean(dim=1), (f @ f.T) / f.shape[1])


def flat(a: torch.Tensor) -> torch.Tensor:
    """(1, nC, nH, nW) activations as (nC, nH nW), a view in either memory format (a reshape
    copies channels_last activations, the engine's on CUDA and CPUs)."""
    return a.flatten(2)[0]


def _position_major(f: torch.Tensor) -> bool:
    """Whether flat() activations lie position by position in memory (channels_last)."""
    return f.stride(1) != 1


def _product(
    m: torch.Tensor, f: torch.Tensor, position_major: bool, offset: torch.Tensor | None = None
) -> torch.Tensor:
    """m @ f (+ offset per row) for (nC, N) f, laid out position by position where
    `position_major`: a gradient in the activations' own layout goes into the convolution's
    backward without a reorder (docs/performance.md)."""
    if not position_major:
        return torch.mm(m, f) if offset is None else torch.addmm(offset[:, None], m, f)
    product = torch.mm(f.T, m.T) if offset is None else torch.addmm(offset[None], f.T, m.T)
    return product.T


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
        f = flat(a_g)
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
        grad_f = _product(d.to(f.dtype), f, _position_major(f))  # f's dtype and layout
        return None, grad_f.mul_(grad * ctx.scale).view(ctx.shape), None, None


def style_scale(gram_s: torch.Tensor) -> float:
    """1 / (1/4 ||M_S||^2): makes Js[l] the relative error of G's Gram matrix."""
    return 1.0 / max(float(0.25 * gram_s.pow(2).sum()), 1e-12)


class StyleLoss(Protocol):
    """A style loss: what it needs of a style image's layer (describe), several images' worth
    blended (weights summing to 1), the target made of that once, the target's relative-error
    scale, and the loss of G's activations (a part of the image's, with `rest`: what the
    image described as `whole` over `count` positions is without the part's, made by rest())."""

    describes: str

    def describe(self, a: torch.Tensor) -> Any: ...

    def blend(self, parts: list[tuple[Any, float]]) -> Any: ...

    def rest(self, whole: Any, count: int, part: torch.Tensor) -> Any: ...

    def target(self, described: Any) -> Any: ...

    def scale(self, target: Any) -> float: ...

    def __call__(
        self, target: Any, a_g: torch.Tensor, weight: float, rest: Any = None
    ) -> torch.Tensor: ...


class _MomentLoss:
    """A style loss on the activations' moments: all it needs of a style image is its
    Moments, which several style images blend into (weights summing to 1) and a large image's
    tiles add up to."""

    describes = "moments"  # what describe() gives: style images' cache entries are shared

    def describe(self, a: torch.Tensor) -> Moments:
        return moments(a)

    def blend(self, parts: list[tuple[Moments, float]]) -> Moments:
        return blend_moments(parts)

    def rest(self, whole: Moments, count: int, part: torch.Tensor) -> Rest:
        return Rest(whole * count + moments(part) * -(part.shape[-2] * part.shape[-1]), count)


def blend_moments(parts: list[tuple[Moments, float]]) -> Moments:
    """sum_k w_k m_k."""
    total = parts[0][0] * parts[0][1]
    for m, w in parts[1:]:
        total = total + m * w
    return total


class GramLoss(_MomentLoss):
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


class W2Loss(_MomentLoss):
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
        _, _, n_h, n_w = a_g.shape
        f = flat(a_g)
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
        grad_f = _product(d.to(f.dtype), f, _position_major(f), offset)
        return None, None, None, None, grad_f.mul_(grad * ctx.scale).view(ctx.shape), None, None


def sqrtm(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix."""
    lam, v = torch.linalg.eigh(a)
    return (v * lam.clamp_min(0).sqrt()) @ v.T


# Quantiles kept of each projection of a style layer: the quantile function is smooth enough
# that a finer grid changes nothing a picture shows, and a style's marginals stay a few MB.
QUANTILES = 4096


def directions(n_c: int, seed: int | None = None) -> torch.Tensor:
    """(nC, nC) fixed orthonormal directions for a layer of nC channels: a seeded random
    rotation, the same for every image and device, so the sliced loss is one deterministic
    function for L-BFGS (Heitz et al. draw new ones every step, for Adam). Every rotation
    matches the style equally well, so a job's `seed` picks its own: another picture at the
    same quality. None: the rotation every unseeded job has used."""
    if seed is not None:
        return _seeded_directions(n_c, seed)
    if n_c not in _DIRECTIONS:
        _DIRECTIONS[n_c] = _rotation(torch.Generator().manual_seed(n_c), n_c)
    return _DIRECTIONS[n_c]


_DIRECTIONS: dict[int, torch.Tensor] = {}


@functools.lru_cache(maxsize=32)  # a few seeds' worth (the default layers: 1.4 MB a seed)
def _seeded_directions(n_c: int, seed: int) -> torch.Tensor:
    # Hashed with nC, so that no seed gives the unseeded rotation of some layer.
    mixed = hashlib.blake2b(f"{seed}:{n_c}".encode(), digest_size=8).digest()
    return _rotation(torch.Generator().manual_seed(int.from_bytes(mixed) >> 1), n_c)


def _rotation(g: torch.Generator, n_c: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n_c, n_c, generator=g, dtype=torch.float64))
    return (q * r.diagonal().sign()).float()


@dataclass(frozen=True)
class Marginals:
    """A layer's activations projected on each of directions(nC): per direction the sorted
    values, resampled to at most QUANTILES evenly spaced quantiles. The one-dimensional
    distributions the sliced Wasserstein distance compares."""

    values: torch.Tensor  # (K, Q), each row ascending, fp32

    def at(self, n: int) -> torch.Tensor:
        """(K, n) the quantiles at (i + 1/2) / n, i = 0 .. n - 1 (linear between kept ones)."""
        return self.quantile((torch.arange(n, device=self.values.device) + 0.5) / n)

    def quantile(self, levels: torch.Tensor) -> torch.Tensor:
        """(K, m) the quantiles at levels in [0, 1], (m,) for every row or (K, m) a row each;
        the kept values stand at (j + 1/2) / Q, linear between them."""
        q = self.values.shape[1]
        pos = (levels * q - 0.5).clamp(0, q - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=q - 1)
        frac = (pos - lo).to(self.values.dtype)
        if levels.dim() == 1:
            return torch.lerp(self.values[:, lo], self.values[:, hi], frac)
        return torch.lerp(self.values.gather(1, lo), self.values.gather(1, hi), frac)

    def levels(self, v: torch.Tensor, below: torch.Tensor) -> torch.Tensor:
        """(K, m) the levels of each row's (K, m) values v, given how many kept values lie
        below each (as merging sorted rows counts them): quantile()'s inverse, 0 below the
        least kept value and 1 above the greatest."""
        q = self.values.shape[1]
        if q == 1:
            return (v > self.values).to(v.dtype)
        hi = below.clamp(1, q - 1)
        lo = hi - 1
        v_lo, v_hi = self.values.gather(1, lo), self.values.gather(1, hi)
        frac = ((v - v_lo) / (v_hi - v_lo).clamp_min(1e-12)).clamp(0, 1)
        level = (lo + frac + 0.5) / q
        return level.masked_fill_(v < self.values[:, :1], 0).masked_fill_(
            v > self.values[:, -1:], 1
        )

    def without(self, count: int, part: torch.Tensor) -> Marginals:
        """The marginals of the `count` positions these describe less a part of them, whose
        (K, n) projections `part` are: the count below any value is the whole's less the
        part's. Exact for a whole kept in full, within a quantile's step otherwise."""
        # The part first: where it ties with a kept value (a whole kept in full holds the
        # part's own values), it sorts first, and the running maximum below ends level.
        values = torch.cat([part, self.values], dim=1)
        order = _argsort_rows(values)
        values, mine = values.gather(1, order), (order < part.shape[1]).to(values.dtype)
        kept_below = (1 - mine).cumsum(1).sub_(1 - mine).long()
        # Counts at mid-mass, as the levels are: a value held once counts half below itself.
        below = count * self.levels(values, kept_below) - (mine.cumsum(1) - 0.5 * mine)
        rest = count - part.shape[1]
        cdf = below.cummax(dim=1).values.clamp_(0, rest) / rest
        return _resampled(values, cdf, min(rest, QUANTILES))

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size()


def projections(a: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """(nC, nH nW) a layer's activations projected on directions(nC, seed), in fp32 at least."""
    f = _at_least_fp32(flat(a))
    return directions(f.shape[0], seed).to(f).T @ f


def marginals(a: torch.Tensor, seed: int | None = None) -> Marginals:
    p = projections(a, seed)
    m = Marginals(p.gather(1, _argsort_rows(p)))
    return m if m.values.shape[1] <= QUANTILES else Marginals(m.at(QUANTILES))


def mixture(parts: list[tuple[Marginals, float]]) -> Marginals:
    """The marginals of a mixture: each part's samples weighted by its weight over its count
    (style images blended, or a large image's tiles weighted by their positions)."""
    parts = [(m, w) for m, w in parts if w > 0]
    if len(parts) == 1 and parts[0][0].values.shape[1] <= QUANTILES:
        return parts[0][0]
    mass = torch.cat([torch.full((m.values.shape[1],), w / m.values.shape[1]) for m, w in parts])
    # A few directions at a time: sorting all of many tiles' quantiles holds several copies.
    rows = max(1, (1 << 22) // len(mass))
    chunks = [
        _mixed(torch.cat([m.values[i : i + rows] for m, _ in parts], dim=1), mass)
        for i in range(0, len(parts[0][0].values), rows)
    ]
    return Marginals(torch.cat(chunks))


def _mixed(values: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    order = _argsort_rows(values, runs=True)  # each part's quantiles ascend
    values = values.gather(1, order)
    mass = mass.to(values)[order]
    cdf = mass.cumsum(1) - 0.5 * mass  # each sample's mid-mass quantile level
    cdf = cdf / (cdf[:, -1:] + 0.5 * mass[:, -1:])
    return _resampled(values, cdf, min(values.shape[1], QUANTILES)).values


def _resampled(values: torch.Tensor, cdf: torch.Tensor, q: int) -> Marginals:
    """Marginals of q quantiles from ascending rows of values at ascending levels cdf."""
    levels = ((torch.arange(q, device=values.device) + 0.5) / q).to(values).expand(len(values), q)
    # The levels are evenly spaced, so how many lie at or below each cdf value is a floor,
    # and how many cdf values lie below each level a running count (no search).
    at = (cdf * q + 0.5).floor_().clamp_(0, q).long()
    hi = _counts(at, q).clamp_(1, values.shape[1] - 1)
    lo = hi - 1
    c_lo, c_hi = cdf.gather(1, lo), cdf.gather(1, hi)
    frac = ((levels - c_lo) / (c_hi - c_lo).clamp_min(1e-12)).clamp(0, 1)
    return Marginals(torch.lerp(values.gather(1, lo), values.gather(1, hi), frac))


def _counts(at: torch.Tensor, n: int) -> torch.Tensor:
    """(K, n): for each i < n, how many of the row's indices `at` (in 0 .. n) are at most i;
    with `at` where one sorted row's values go among another's n, how many lie below each."""
    c = torch.zeros(len(at), n + 1, dtype=torch.long, device=at.device)
    return c.scatter_add_(1, at, torch.ones_like(at)).cumsum(1)[:, :n]


def _argsort_rows(p: torch.Tensor, runs: bool = False) -> torch.Tensor:
    """Each row's ascending order, ties by position. On the host NumPy's sorts, 5-10x torch's
    on the CPUs measured (docs/performance.md), its rows split over torch's threads (NumPy
    lets go of the GIL while it sorts); torch's elsewhere. float32 rows go through a radix
    sort (_radix_argsort); `runs`: each row is a few ascending runs laid end to end, which
    NumPy's stable sort merges (3x its vectorised sort on such rows here, slower on shuffled
    ones)."""
    if p.device.type != "cpu":
        return p.argsort(dim=1, stable=True)
    a = p.detach().numpy()
    order = np.empty(a.shape, dtype=np.int64)

    def sort(rows: slice) -> None:
        if a.dtype != np.float32:
            order[rows] = a[rows].argsort(1, kind="stable")
        elif runs:
            order[rows] = _packed_argsort(a[rows], "stable")
        else:  # a block of rows at a time: the passes' index arrays stay small
            block = max(1, RADIX_BLOCK // a.shape[1])
            for lo in range(rows.start, rows.stop, block):
                hi = min(rows.stop, lo + block)
                order[lo:hi] = _radix_argsort(a[lo:hi])

    n = max(1, min(torch.get_num_threads(), len(a)))
    bounds = np.linspace(0, len(a), n + 1).astype(int)
    list(_sorters(n).map(sort, [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]))
    return torch.from_numpy(order)


def _packed_argsort(a: np.ndarray, kind: str | None = None) -> np.ndarray:
    """argsort of float32 rows as one sort of int64 keys, the float's bits made to order as
    integers in the high half and the position in the low half: NumPy sorts int64 keys
    1.7x faster than it argsorts floats (docs/performance.md), and ties go by position."""
    bits = a.view(np.int32)
    key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)
    key <<= 32
    key |= np.arange(a.shape[1])
    key.sort(axis=1, kind=kind)
    return key & 0xFFFFFFFF


# Elements per block of rows the radix sort takes at once (its index arrays are 8 bytes each).
RADIX_BLOCK = 1 << 20


def _radix_argsort(a: np.ndarray) -> np.ndarray:
    """argsort of float32 rows, ties by position, as two stable sorts of 16-bit halves of
    keys that order as the floats do (least significant half first): NumPy's stable argsort
    of 16-bit integers is a radix sort, linear in the row's length, and the two passes took
    half the CPU time of _packed_argsort on a 512 px job's rows (docs/performance.md)."""
    bits = a.view(np.uint32)
    key = bits ^ ((bits >> 31) * np.uint32(0x7FFFFFFF) | np.uint32(0x80000000))
    low = np.argsort(key.astype(np.uint16), axis=1, kind="stable")
    high = np.take_along_axis((key >> 16).astype(np.uint16), low, 1)
    return np.take_along_axis(low, np.argsort(high, axis=1, kind="stable"), 1)


@functools.cache
def _sorters(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n, thread_name_prefix="brushwork-sort")


# A forked child inherits the pool but not its threads: it makes its own.
os.register_at_fork(after_in_child=_sorters.cache_clear)


@dataclass(frozen=True)
class SlicedRest:
    """The rest of the image while a tile is optimised, for the sliced loss: the marginals of
    the positions the tile does not own, and the whole image's count of positions."""

    marginals: Marginals
    count: int


@dataclass(frozen=True)
class SlicedTarget:
    """The style's marginals, the directions on their device, their quantiles at each count
    of positions asked (a pyramid level asks for one count at every step) and SW(S, 0), taken
    once rather than at every step."""

    marginals: Marginals
    directions: torch.Tensor
    energy: float  # SW(S, 0), the relative error's denominator
    _at: dict[int, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def quantiles(self, n: int) -> torch.Tensor:
        if n not in self._at:
            self._at.clear()
            self._at[n] = self.marginals.at(n)
        return self._at[n]


class SlicedLoss:
    """The sliced 2-Wasserstein distance (Heitz et al. 2021) between G's and S's activations:
    the mean over positions of the squared difference of sorted projections, summed over the
    directions,

        SW[l] = sum_k 1/N sum_i (sort(d_k . F_G)_i - Q_S,k((i + 1/2) / N))^2,

    with Q_S,k the quantile function of the style's projections on d_k. Where W2 matches a
    Gaussian (mean and covariance), this matches the whole distribution along every
    direction: the heavy tails of a stroke texture, not only its spread. A part of the image
    (a tile, `rest` given) takes its terms of the sum: its i-th projection's rank among the
    image's N is its rank in the part plus the rest's count below it. `seed` picks the
    directions (directions()): a loss of its own per seed (named())."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        # What describe() gives: marginals on this seed's directions, cached apart.
        self.describes = "marginals" if seed is None else f"marginals:{seed}"

    def describe(self, a: torch.Tensor) -> Marginals:
        return marginals(a, self.seed)

    def blend(self, parts: list[tuple[Marginals, float]]) -> Marginals:
        return mixture(parts)

    def rest(self, whole: Marginals, count: int, part: torch.Tensor) -> SlicedRest | None:
        """None where the part holds (about) all the image's positions: it is the image."""
        if count <= part.shape[-2] * part.shape[-1]:
            return None
        return SlicedRest(whole.without(count, projections(part, self.seed)), count)

    def target(self, m: Marginals) -> SlicedTarget:
        d = directions(m.values.shape[0], self.seed).to(m.values)
        return SlicedTarget(m, d, energy=float(m.values.pow(2).mean(1).sum()))

    # The relative error times this: the sliced distance of a picture from the style is a
    # smaller share of SW(S, 0) than W2's of W2(S, 0), and at 5x the weight it keeps as much
    # of the subject as W2 at the default weight (harness, 8 pairs at 256 px: 25 against W2's
    # 5 to 5.5), so one style weight gives one look with either loss.
    GAIN = 5.0

    def scale(self, target: SlicedTarget) -> float:
        """GAIN / SW(S, 0): the relative error, as for the other losses, times GAIN."""
        return self.GAIN / max(target.energy, 1e-12)

    def __call__(
        self,
        target: SlicedTarget,
        a_g: torch.Tensor,
        weight: float,
        rest: SlicedRest | None = None,
    ) -> torch.Tensor:
        return _SlicedLayerLoss.apply(a_g, target, rest, weight)


class _SlicedLayerLoss(torch.autograd.Function):
    """SW[l] with its gradient written out: with P = D^T F the projections and R = P - Q the
    residuals, Q holding the style's quantiles in the order of P's ranks (the i-th smallest
    projection is sent to the i-th quantile), dSW/dF = 2/N D R (ranks are constant almost
    everywhere)."""

    @staticmethod
    def forward(ctx, a_g, target, rest, weight):
        _, _, n_h, n_w = a_g.shape
        d, n = target.directions, n_h * n_w
        f = _at_least_fp32(flat(a_g))
        p = d.T @ f
        order = _argsort_rows(p)
        if rest is None:
            count, matched = n, torch.empty_like(p).scatter_(1, order, target.quantiles(n))
        else:
            count, matched = rest.count, _matched_part(p, order, target.marginals, rest)
        r = p.sub_(matched)
        ctx.save_for_backward(d, r)
        ctx.scale, ctx.shape, ctx.dtype = 2 * weight / count, a_g.shape, a_g.dtype
        ctx.position_major = _position_major(f)
        return r.pow(2).sum() * (weight / count)

    @staticmethod
    def backward(ctx, grad):
        d, r = ctx.saved_tensors
        grad_f = _product(d, r, ctx.position_major).mul_(grad * ctx.scale)
        return grad_f.to(ctx.dtype).view(ctx.shape), None, None, None


def _matched_part(
    p: torch.Tensor, order: torch.Tensor, style: Marginals, rest: SlicedRest
) -> torch.Tensor:
    """The style's quantile each of a part's projections p is sent to: at the level of its
    rank among the whole image's, its rank in the part plus the rest's count below it. In
    the part's sorted order, where the rest's kept values fall among the part's counts
    them (a search of the few kept values, not of the many projections), a few rows at a
    time: the levels and their indices would be several times p."""
    k, n = p.shape
    out = torch.empty_like(p)
    rows = max(1, (1 << 20) // n)
    ranks = torch.arange(n, device=p.device, dtype=p.dtype)
    for lo in range(0, k, rows):
        i = slice(lo, min(k, lo + rows))
        sorted_p, kept = p[i].gather(1, order[i]), Marginals(rest.marginals.values[i])
        below = _counts(torch.searchsorted(sorted_p, kept.values, right=True), n)
        level = (ranks + (rest.count - n) * kept.levels(sorted_p, below) + 0.5) / rest.count
        out[i].scatter_(1, order[i], Marginals(style.values[i]).quantile(level))
    return out


STYLE_LOSSES: dict[str, StyleLoss] = {"gram": GramLoss(), "w2": W2Loss(), "sw": SlicedLoss()}


def named(kind: str, seed: int | None = None) -> StyleLoss:
    """The style loss `kind` names (STYLE_LOSSES), on the directions `seed` picks where it
    has any (the sliced loss); the moment losses have nothing a seed could vary."""
    if kind == "sw" and seed is not None:
        return SlicedLoss(seed)
    return STYLE_LOSSES[kind]


def style_loss(
    kind: str,
    targets: dict[str, object],
    acts_g: dict[str, torch.Tensor],
    layer_weights: dict[str, float],
    rests: dict[str, object] | None = None,
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


# Where the mask frees pixels beside held ones (a disocclusion's edge, a motion boundary),
# the few free pixels take on the tails of the style's distribution that the held ones cannot
# move to, and are painted as bright speckle. A smoothness term on the free pixels only damps
# it: on the synthetic clip at 128 px their warping error 5.7e-2 -> 3.2e-2 (frames styled alone:
# 3.6e-2), the held pixels' 1.1e-3 -> 1.3e-3 (docs/video.md). 1 did too little, 30 and 100
# held the free pixels' error lower and the held ones' higher.
FREED_SMOOTHNESS = 10.0


def temporal_loss(
    x: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    weight: float,
    elements: int | None = None,
) -> torch.Tensor:
    """weight * 1/D sum_p c(p) (x(p) - w(p))^2 (Ruder et al. 2016): x held to the earlier
    frames warped to it (w), where the mask c trusts the warp; plus FREED_SMOOTHNESS * 1/D
    sum_p (1 - c(p)) |grad x(p)|^2, the free pixels kept smooth. D: the whole image's elements
    (C H W), so that a tile's terms are its share of the image's (default: x's own)."""
    d = elements or x.numel()
    held = (mask * (x - target).pow(2)).sum() * (weight / d)
    free = 1 - mask
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2) * free[..., 1:, :]
    dx = (x[..., 1:] - x[..., :-1]).pow(2) * free[..., 1:]
    return held + (dy.sum() + dx.sum()) * (FREED_SMOOTHNESS / d)


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))
