"""Where the GPU memory peak of a cold 512 px job comes from: cuDNN autotuning or the job.

Runs the same cold job twice in fresh processes, with cudnn.benchmark on and off, and prints
time, peak allocated memory of the first (autotuning) run and of a second warm run.
"""

import subprocess
import sys

CHILD = r"""
import json, sys, time, numpy as np, torch
from brushwork.engine import Engine
from brushwork.settings import Settings
from brushwork import images
bench = sys.argv[1] == "1"
e = Engine(device="cuda")
torch.backends.cudnn.benchmark = bench
c = images.load("examples/tubingen.jpg"); s = images.load("examples/starry_night.jpg")
out = {"cudnn_benchmark": bench}
for run in ("cold", "warm"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    r = e.stylize(c, [s], Settings(size=512, iterations=500, seed=0))
    torch.cuda.synchronize()
    out[run] = {"s": round(time.perf_counter() - t, 3),
                "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20),
                "total": round(r.losses["total"], 4)}
print(json.dumps(out))
"""

for flag in ("1", "0"):
    r = subprocess.run([sys.executable, "-c", CHILD, flag], capture_output=True, text=True)
    print(r.stdout.strip() or r.stderr[-2000:])
