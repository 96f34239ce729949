"""Does one CUDA graph per level, around the whole iteration, meet 512 px x 500 iterations <= 1.5 s?

The eager engine is launch-bound at 512 px (about 5 ms per iteration on an H200, bf16 and fp32
alike), and torch.compile's graphs around VGG alone did not help (docs/performance.md): the
launches left are the losses, the backward pass and the L-BFGS step. Every iteration after the
first is the same kernels on the same buffers (lbfgs.py keeps its counter on the device), so
here _Run.run_steps is replaced by one that runs WARMUP iterations eagerly on a side stream,
captures one iteration and replays it, with cancel and progress still between iterations.

Each mode runs in its own process, a cold and a warm job each; one JSON line per mode, with the
final loss so that graphs can be checked against eager (they should agree to float rounding):
    PYTHONPATH=daemon python bench/probes/gpu_graph_probe.py [eager] [graphs] [--size 512]
"""

import argparse
import json
import subprocess
import sys
import time

WARMUP = 3  # eager iterations before capture: the first L-BFGS step, cuBLAS/cuDNN set-up


def graphed_run_steps(original):
    import torch

    def run_steps(self, iterate, steps, shown):
        eager = min(steps, WARMUP)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            original(self, iterate, eager, shown)
        torch.cuda.current_stream().wait_stream(side)
        if steps == eager:
            return
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            terms = iterate()  # recorded, not run: every replay is one iteration

        def replay():
            graph.replay()
            return terms

        original(self, replay, steps - eager, shown)

    return run_steps


def child(mode: str, size: int, iterations: int) -> None:
    import torch

    from brushwork import engine, images
    from brushwork.settings import Settings

    if mode == "graphs":
        engine._Run.run_steps = graphed_run_steps(engine._Run.run_steps)
    e = engine.Engine(device="cuda")
    content = images.load("examples/tubingen.jpg")
    style = images.load("examples/starry_night.jpg")
    out = {"mode": mode, "size": size, "iterations": iterations}
    for run in ("cold", "warm"):
        torch.cuda.synchronize()
        t = time.perf_counter()
        r = e.stylize(content, [style], Settings(size=size, iterations=iterations, seed=0))
        torch.cuda.synchronize()
        out[run] = {"s": round(time.perf_counter() - t, 3), "total": round(r.losses["total"], 5)}
    out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("modes", nargs="*", default=["eager", "graphs"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(args.modes[0], args.size, args.iterations)
        return
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--child", mode, "--size", str(args.size)]
        r = subprocess.run(
            [*cmd, "--iterations", str(args.iterations)], capture_output=True, text=True
        )
        print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-1500:])


if __name__ == "__main__":
    main()
