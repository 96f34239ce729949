"""The sync-free L-BFGS takes the steps torch.optim.LBFGS takes (no line search, one evaluation
per step), including once the history is full and old pairs drop out."""

import torch

from brushwork.lbfgs import LBFGS


def _problem(n: int = 40):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(n, n, generator=g)
    q = q @ q.T / n + 0.1 * torch.eye(n)
    b = torch.randn(n, generator=g)
    return lambda x: 0.5 * x @ q @ x - b @ x + 0.1 * (x**4).sum()


def _step(f, x: torch.Tensor, opt: LBFGS) -> float:
    """One step of `opt` on f at x, as the engine takes it (one evaluation, no line search);
    f's value before the step."""
    x.grad = None
    loss = f(x)
    loss.backward()
    with torch.no_grad():
        opt.step(x.grad)
    return loss.item()


def test_steps_match_torch_lbfgs():
    f = _problem()
    ref = torch.zeros(40, requires_grad=True)
    torch_opt = torch.optim.LBFGS([ref], lr=1, max_iter=1, history_size=4)
    x = torch.zeros(40, requires_grad=True)
    ours = LBFGS(x, history=4)
    for _ in range(12):  # three times the history: the ring buffer wraps around

        def closure():
            torch_opt.zero_grad()
            loss = f(ref)
            loss.backward()
            return loss

        torch_opt.step(closure)
        _step(f, x, ours)
        assert torch.allclose(x, ref, atol=1e-4), (x - ref).abs().max()
    assert f(x) < f(torch.zeros(40)) - 1


def test_a_projected_step_still_minimises():
    """With a projection after each step (the engine clamps pixels) and no line search, f is
    not monotone, but it gets well below its start and never blows up."""
    f = _problem()
    x = torch.zeros(40, requires_grad=True)
    opt = LBFGS(x, history=5)
    values = []
    for _ in range(30):
        values.append(_step(f, x, opt))
        with torch.no_grad():
            x.clamp_(-0.5, 0.5)
    assert values[-1] < values[0] - 5 and max(values) <= values[0]


def test_steps_after_the_first_only_write_into_their_buffers():
    """What lets a CUDA graph replay one captured step: after the first step, no attribute is
    rebound and no buffer reallocated, and the push counter lives in a tensor."""
    f = _problem()
    x = torch.zeros(40, requires_grad=True)
    opt = LBFGS(x, history=3)

    _step(f, x, opt)
    state = {k: (v, v.data_ptr()) for k, v in vars(opt).items() if isinstance(v, torch.Tensor)}
    for _ in range(7):  # wraps the history twice
        _step(f, x, opt)
    after = {k: (v, v.data_ptr()) for k, v in vars(opt).items() if isinstance(v, torch.Tensor)}
    assert after.keys() == state.keys()
    for k, (tensor, ptr) in state.items():
        assert after[k][0] is tensor and after[k][1] == ptr, k
    assert int(opt.pushes) == 7


def test_first_step_and_step_bound_are_in_element_units():
    """The engine's steps in pixel units: the first moves the element with the largest
    gradient by exactly first_step; no step moves any element by more than max_step (the
    unbounded steps on this problem reach several times that); it still minimises."""
    f = _problem()

    def run(**steps: float) -> tuple[list[float], list[float]]:
        """Each step's largest element change and the values of f, over 30 steps."""
        x = torch.zeros(40, requires_grad=True)
        opt = LBFGS(x, history=5, **steps)
        moves, values = [], []
        for _ in range(30):
            values.append(_step(f, x, opt))
            moves.append(opt.prev_step.abs().max().item())
        return moves, values

    moves, values = run(first_step=0.01, max_step=0.05)
    free_moves, _ = run(first_step=0.01)
    assert abs(moves[0] - 0.01) < 1e-7 and abs(free_moves[0] - 0.01) < 1e-7
    assert max(moves) <= 0.05 + 1e-7 < 0.15 < max(free_moves)
    assert values[-1] < values[0] - 5


def test_trimmed_products_and_a_capped_history_take_the_same_steps():
    """On the CPU the products run over the filled slots only; a history of steps - 1 pairs
    keeps every pair a run of that many steps makes (the engine's cap): both take the steps
    of the full-width products over a history of 50 (the old path), before and after the
    ring buffer wraps."""
    f = _problem()

    def run(history: int, trim: bool, steps: int) -> torch.Tensor:
        x = torch.zeros(40, requires_grad=True)
        opt = LBFGS(x, history=history)
        opt.trim = trim
        for _ in range(steps):
            _step(f, x, opt)
        return x.detach()

    old = run(50, trim=False, steps=9)
    assert torch.allclose(run(50, trim=True, steps=9), old, atol=1e-6)
    assert torch.allclose(run(8, trim=True, steps=9), old, atol=1e-6)
    assert torch.allclose(run(4, trim=True, steps=12), run(4, trim=False, steps=12), atol=1e-6)
