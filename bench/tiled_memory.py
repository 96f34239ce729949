"""Peak host memory of tiled CPU jobs as the image grows, under a fixed 1 GB tile budget.

Memory that grows with the image beyond the budget is what the daemon's pixel limit
(server.BYTES_PER_PIXEL) must cover. Each size runs in a fresh process (peak RSS is per process):
    PYTHONPATH=daemon .venv/bin/python bench/tiled_memory.py 1024 2048 3072
"""

import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET = 1.0e9


def one(size: int) -> None:
    from brushwork import images
    from brushwork.budget import available_memory
    from brushwork.engine import Engine
    from brushwork.settings import Settings

    engine = Engine(device="cpu")
    engine.memory_fraction = BUDGET / available_memory(engine.device)
    content = images.load(REPO / "examples" / "tubingen.jpg")
    style = images.load(REPO / "examples" / "starry_night.jpg")
    out = engine.stylize(content, [style], Settings(size=size, iterations=2, scales=1)).image
    h, w = out.shape[:2]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tile = engine.tile_side(Settings(), h, w)
    print(f"| {w}x{h} | {h * w / 1e6:.2f} | {tile} | {peak_mb:.0f} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        one(int(sys.argv[2]))
    else:
        print("| output | Mpx | tile px | peak RSS MB |\n| --- | --- | --- | --- |", flush=True)
        for size in sys.argv[1:]:
            subprocess.run([sys.executable, __file__, "--one", size], check=True)
