"""L-BFGS without line search and without host syncs: every step is a fixed set of tensor ops.

torch.optim.LBFGS converts several tensors to Python numbers per step (loss, tolerances, and
one `alpha=` per history pair), and each conversion waits for the GPU. Here the two-loop
recursion is written in matrix form over the whole history (Byrd, Nocedal & Schnabel 1994):
with A = S Y^T and recency order (oldest first), the first loop is the unit upper-triangular
system (I + diag(rho) triu(A, 1)) alpha = rho * S g and the second the unit lower-triangular
system (I + diag(rho) tril(A^T, -1)) c = alpha - gamma rho * Y q, so a step costs a handful of
matrix-vector products and two small triangular solves, whatever the history length.

Pairs with too little curvature (y.s <= 1e-10) enter the history with rho = 0, which makes
them inert. As in torch, the pair's step s is the step taken, t * d, even when the caller then
projects x (the engine clamps pixels to [0, 1]): the actual change of x makes the directions
depend discontinuously on which pixels touch a bound, and results wander with the input's
last bit.

torch's first step is steepest descent with an L1 length of lr: over an image's hundreds of
thousands of pixels that moves none of them by more than a few 1e-4, and with bf16
activations the change of gradient it measures is rounding noise, so the first curvature
pair can send the second step anywhere. `first_step` sizes the first step by its largest
element instead, and `max_step` bounds every step's (both in the units of x; the engine
passes pixel values).

After the first step, a step only writes into buffers allocated up front and keeps its push
counter on the device, so the same sequence of kernels serves every later step: it can be
captured once in a CUDA graph and replayed (bench/probes/gpu_graph_probe.py). On the CPU, where
nothing is captured, the products run over the pairs pushed so far only (the host counts
them): the empty slots are inert but each matrix-vector product over a 512 px job's history
reads 50 rows of 590k values, most of them zeros early in a level.
"""

from __future__ import annotations

import torch

_CURVATURE_EPS = 1e-10
# Curvature pairs kept; a pyramid level (or tile) starts a fresh history.
HISTORY = 50


class LBFGS:
    """Minimise over the tensor `x` in place; call step(grad) after each gradient evaluation."""

    def __init__(
        self,
        x: torch.Tensor,
        history: int,
        lr: float = 1.0,
        first_step: float | None = None,
        max_step: float | None = None,
    ) -> None:
        """first_step: the first step's largest change of an element (None: torch's rule, an
        L1 length of at most lr); max_step: no step changes an element by more (None: no
        bound)."""
        if history < 1:
            raise ValueError("history must be at least 1")
        self.x = x
        self.lr = lr
        self.first_step = first_step
        self.max_step = max_step
        self.m = history
        n = x.numel()
        opts = {"device": x.device, "dtype": torch.float32}
        self.s = torch.zeros(history, n, **opts)
        self.y = torch.zeros(history, n, **opts)
        self.a = torch.zeros(history, history, **opts)  # a[i, j] = s_i . y_j, slot order
        self.rho = torch.zeros(history, **opts)
        self.gamma = torch.ones((), **opts)  # initial inverse Hessian scale y.s / y.y
        # Row k: slot indices from oldest to newest after k % m pushes.
        idx = torch.arange(history, device=x.device)
        self.order = (idx[:, None] + idx[None, :]) % history
        self.eye = torch.eye(history, **opts)
        self.pushes = torch.zeros((), dtype=torch.long, device=x.device)
        # Pairs pushed, counted on the host: where shapes may change between steps (not on a
        # GPU, whose steps must stay one sequence of kernels), only the filled slots are used.
        self.count = 0
        self.trim = x.device.type == "cpu"
        self.prev_step = torch.zeros(n, **opts)
        self.prev_g = torch.zeros(n, **opts)
        self.started = False

    def step(self, grad: torch.Tensor) -> None:
        """Move x along the L-BFGS direction computed from `grad` (the gradient at x)."""
        x = self.x.detach().view(-1)  # a view: x must be contiguous, the step lands in it
        g = grad.detach().reshape(-1).float()
        if not self.started:
            self.started = True
            d = -g
            if self.first_step is None:  # torch: steepest descent, L1 length at most lr
                t = torch.clamp(1.0 / g.abs().sum().clamp_min(1e-30), max=1.0) * self.lr
            else:
                t = self.first_step / g.abs().amax().clamp_min(1e-30)
        else:
            self._push(self.prev_step, g - self.prev_g)
            d = -self._inverse_hessian_times(g)
            # A direction that does not descend (numerical trouble) falls back to -g.
            d = torch.where(torch.dot(g, d) < 0, d, -g)
            t = self.lr
        if self.max_step is not None:
            t = torch.clamp(self.max_step / d.abs().amax().clamp_min(1e-30), max=t)
        torch.mul(d, t, out=self.prev_step)
        self.prev_g.copy_(g)
        x.add_(self.prev_step)

    def _push(self, s: torch.Tensor, y: torch.Tensor) -> None:
        """Add the pair (s, y) = (step, change of gradient) in place of the oldest."""
        j = (self.pushes % self.m).view(1)  # a device index: no host sync, no baked-in slot
        self.pushes.add_(1)
        self.count += 1
        k = self._filled()
        ys = torch.dot(y, s)
        ok = ys > _CURVATURE_EPS
        self.s.index_copy_(0, j, s[None])
        self.y.index_copy_(0, j, y[None])
        a = self.a[:k, :k]  # a view: the products land in self.a
        a.index_copy_(0, j, (self.y[:k] @ s)[None])
        a.index_copy_(1, j, (self.s[:k] @ y)[:, None])
        rho = ok / ys.clamp_min(_CURVATURE_EPS)  # 0 where the curvature is too small
        self.rho.index_copy_(0, j, rho.view(1))
        self.gamma.copy_(torch.where(ok, ys / torch.dot(y, y).clamp_min(1e-30), self.gamma))

    def _filled(self) -> int:
        """Slots the products run over: those filled so far where trimming, else all."""
        return min(self.count, self.m) if self.trim else self.m

    def _inverse_hessian_times(self, g: torch.Tensor) -> torch.Tensor:
        k = self._filled()
        if k < self.m:  # slots 0 .. k - 1 filled in order: oldest .. newest
            p = self.order[0, :k]
        else:
            p = self.order.index_select(0, (self.pushes % self.m).view(1))[0]  # oldest .. newest
        s, y, eye = self.s[:k], self.y[:k], self.eye[:k, :k]
        a = self.a[:k, :k][p][:, p]
        rho = self.rho[:k][p]
        upper = torch.addcmul(eye, rho[:, None], torch.triu(a, 1))
        alpha = torch.linalg.solve_triangular(
            upper, (rho * (s @ g)[p])[:, None], upper=True, unitriangular=True
        )[:, 0]
        alpha_slots = torch.empty_like(alpha).index_copy_(0, p, alpha)
        q = torch.addmv(g, y.T, alpha_slots, alpha=-1)
        lower = torch.addcmul(eye, rho[:, None], torch.tril(a.T, -1))
        rhs = torch.addcmul(alpha, self.gamma * rho, (y @ q)[p], value=-1)
        c = torch.linalg.solve_triangular(lower, rhs[:, None], upper=False, unitriangular=True)
        c_slots = torch.empty_like(alpha).index_copy_(0, p, c[:, 0])
        return torch.addmv(self.gamma * q, s.T, c_slots)
