"""Kernels one engine iteration launches, by phase, counted on the CPU.

On a GPU at 512 px and below the eager engine waits on kernel launches, not on arithmetic:
an H200 took about 5 ms an iteration for about 2 ms of work (README, docs/performance.md), so the
number of ops dispatched per iteration is what its time scales with. This counts them without
a GPU: every aten op of a steady-state iteration (after the first L-BFGS step) is seen by a
TorchDispatchMode and put under forward (VGG and losses), backward or L-BFGS step. View ops
(reshape, transpose, detach) launch no kernel and are counted apart. Random weights, since
only the kernels matter:
    PYTHONPATH=daemon python bench/launch_count.py
"""

from __future__ import annotations

import collections

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from brushwork import engine, lbfgs, optimize
from brushwork.settings import Settings
from brushwork.vgg import VGGFeatures, random_state_dict

COUNTED = 5  # steady-state iterations counted; the table shows their mean


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.phase = "forward"
        self.ops: collections.Counter[tuple[str, bool]] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[(self.phase, func.is_view)] += 1
        return func(*args, **(kwargs or {}))


def count(precision: str) -> dict[str, tuple[float, float]]:
    """{phase: (kernel ops, view ops)} per iteration."""
    counter = _Count()
    step, backward = lbfgs.LBFGS.step, torch.Tensor.backward

    def in_phase(phase, fn):
        def wrapped(*args, **kwargs):
            before, counter.phase = counter.phase, phase
            try:
                return fn(*args, **kwargs)
            finally:
                counter.phase = before

        return wrapped

    def run_steps(self, iterate, steps, shown):
        for _ in range(3):  # the first L-BFGS step differs; the history is not full either way
            iterate()
        with counter:
            for _ in range(COUNTED):
                iterate()

    lbfgs.LBFGS.step = in_phase("L-BFGS step", step)
    torch.Tensor.backward = in_phase("backward", backward)
    original = optimize.Run.run_steps
    optimize.Run.run_steps = run_steps
    try:
        model = VGGFeatures(random_state_dict(), "caffe")
        e = engine.Engine(model=model, device="cpu", precision=precision)
        image = np.random.default_rng(0).random((48, 48, 3), dtype=np.float32)
        e.stylize(image, [image], Settings(size=48, scales=1, iterations=COUNTED + 3))
    finally:
        lbfgs.LBFGS.step, torch.Tensor.backward = step, backward
        optimize.Run.run_steps = original
    phases = ("forward", "backward", "L-BFGS step")
    return {
        p: (counter.ops[(p, False)] / COUNTED, counter.ops[(p, True)] / COUNTED) for p in phases
    }


def main() -> None:
    print("| precision | phase | kernel ops | view ops |\n|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        rows = count(precision)
        for phase, (kernels, views) in rows.items():
            print(f"| {precision} | {phase} | {kernels:.0f} | {views:.0f} |")
        kernels = sum(k for k, _ in rows.values())
        views = sum(v for _, v in rows.values())
        print(f"| {precision} | **iteration** | **{kernels:.0f}** | {views:.0f} |")


if __name__ == "__main__":
    main()
