"""Does torch.compile's CUDA-graph mode cut the launch-bound 512 px iteration on a GPU?

512 px, 500 iterations, eager against torch.compile(mode="reduce-overhead") of the VGG forward,
each a cold and a warm run in its own process. Prints one JSON line per mode.
    PYTHONPATH=daemon python bench/gpu_compile_probe.py
"""

import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
from brushwork import images
from brushwork.engine import Engine
from brushwork.settings import Settings
mode = sys.argv[1]
e = Engine(device="cuda")
if mode != "eager":
    e.model.forward = torch.compile(e.model.forward, mode=mode)
c = images.load("examples/tubingen.jpg")
s = images.load("examples/starry_night.jpg")
out = {"mode": mode}
for run in ("cold", "warm"):
    torch.cuda.synchronize()
    t = time.perf_counter()
    r = e.stylize(c, [s], Settings(size=512, iterations=500, seed=0))
    torch.cuda.synchronize()
    out[run] = {"s": round(time.perf_counter() - t, 3), "total": round(r.losses["total"], 4)}
    print(json.dumps(out), flush=True)
"""

for mode in sys.argv[1:] or ("eager", "reduce-overhead"):
    r = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True)
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-1500:], flush=True)
