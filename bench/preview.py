"""Time to a preview (issue 29.6): what the GIMP dialog's preview waits for, from submit to
the result on a warm daemon, idle and while a 512 px job runs on the same (only) worker.

    PYTHONPATH=daemon .venv/bin/python bench/preview.py             # writes bench/results
    PYTHONPATH=daemon .venv/bin/python bench/preview.py --dry-run   # tiny sizes, no file

The preview is the dialog's: Settings.at_quality("draft") at 160 px, submitted in the
preview lane (PROTOCOL.md, "Lanes"), its content already scaled to 160 px as a client sends
it. The full job is the README's: Tübingen x Starry Night at 512 px, default settings; the
previews come while it runs its finest level, whose steps (one VGG pass at 512 px each) are
the longest a preview may wait for. The full job's steps go on after each preview; the bench
cancels it once the previews are timed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "daemon"))

from brushwork import images, pixels  # noqa: E402
from brushwork.client import Client, DaemonError  # noqa: E402
from brushwork.protocol import FULL, PREVIEW, ProgressReply  # noqa: E402
from brushwork.settings import Settings  # noqa: E402
from reliability import cpu, running  # noqa: E402


def load(path: Path, side: int | None = None) -> np.ndarray:
    """An image as u8 RGB, its long side scaled to `side` (a client sends what it needs)."""
    rgb = images.load(path)[..., :3]
    if side is None:
        return rgb
    image = Image.fromarray(rgb)
    scale = side / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS))


def time_preview(client: Client, content, style, settings: Settings) -> float:
    """Seconds from submit to the preview's result."""
    start = time.perf_counter()
    client.wait(client.submit(content, [style], settings, lane=PREVIEW))
    return time.perf_counter() - start


class FullJob(threading.Thread):
    """The artist's full job, its client listening (and heartbeating) on this thread until
    stopped, then cancelling it."""

    def __init__(self, daemon, content, style, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.client = daemon.client(timeout=60)
        self.job = self.client.submit(content, [style], settings, lane=FULL)
        self.stop, self.running = threading.Event(), threading.Event()  # running: finest level
        self.eta: float | None = None
        self.start()

    def run(self) -> None:
        try:
            for event in self.client.events(self.job, self.stop):
                if isinstance(event, ProgressReply):
                    self.eta = event.eta
                    if event.level == event.levels and event.step >= 2:
                        self.running.set()  # its finest level: its longest steps
        except DaemonError:  # stopped
            self.client.abandon(self.job)
        finally:
            self.client.close()


def measure(args: argparse.Namespace) -> dict:
    content = pixels.from_array(load(args.content, args.preview_size))
    full_content = pixels.from_array(load(args.content))
    style = pixels.from_array(load(args.style))
    draft = Settings(size=args.preview_size).at_quality("draft")
    full = Settings(size=args.full_size)
    if args.dry_run:
        full = full.replace(iterations=400, scales=1)  # still running when the previews come
    with (
        tempfile.TemporaryDirectory() as folder,
        running(Path(folder)) as daemon,
        daemon.client(timeout=60) as dialog,
    ):
        time_preview(dialog, content, style, draft)  # warm: the style described once
        idle = [time_preview(dialog, content, style, draft) for _ in range(args.repeats)]
        artist = FullJob(daemon, full_content, style, full)
        if not artist.running.wait(600):
            raise RuntimeError("the full job did not start")
        busy, left = [], []
        for _ in range(args.repeats):
            busy.append(time_preview(dialog, content, style, draft))
            # What a preview without the lane would wait: the rest of the full job.
            left.append(artist.eta)
            time.sleep(1.0)  # the full job takes a few steps again
        artist.stop.set()
        artist.join(60)
    return {
        "load": os.getloadavg()[1],  # the 5-minute load average as the run ends
        "idle": idle,
        "busy": busy,
        "full_left": [x for x in left if x],
        "draft": draft,
        "full": full,
    }


def markdown(r: dict, args: argparse.Namespace, when: str) -> str:
    med = statistics.median
    d = r["draft"]
    rows = [
        ("idle daemon", r["idle"]),
        (f"while a {args.full_size} px job runs", r["busy"]),
    ]
    lines = [
        f"# Time to a preview, CPU, {when}",
        "",
        f"CPU: {cpu()}, {os.cpu_count()} cores; VGG passes in {precision()}. The machine "
        f"was shared with other developers' builds and benchmarks while this ran (load "
        f"average {r['load']:.1f} over the last 5 minutes): absolute seconds are high and "
        "noisy; the ratio within the run is the figure to compare.",
        "",
        f'Preview: `Settings.at_quality("draft")` at {d.size} px ({d.iterations} steps, '
        f"{d.scales} scale), lane `preview`, content sent at {d.size} px. Full job: "
        f"{args.full_size} px, default settings ({r['full'].iterations} steps, "
        f"{r['full'].scales} scales), {args.content.name} x {args.style.name}. Seconds from "
        "submit to the preview's result on a warm daemon (the style already described), "
        f"{args.repeats} runs each; the busy ones while the full job runs its finest level.",
        "",
        "| daemon | median s | runs (s) |",
        "| --- | --- | --- |",
    ]
    for name, times in rows:
        lines.append(f"| {name} | {med(times):.1f} | {', '.join(f'{t:.1f}' for t in times)} |")
    ratio = med(r["busy"]) / med(r["idle"])
    lines += ["", f"Busy over idle: {ratio:.2f}x."]
    if r["full_left"]:
        lines.append(
            f"Without the lane a preview would wait for the rest of the full job: "
            f"{med(r['full_left']):.0f} s left of it (its eta) when the previews came."
        )
    return "\n".join(lines) + "\n"


def precision() -> str:
    """The compute dtype a CPU daemon's engine picks here (engine.pick_precision)."""
    import torch

    from brushwork.engine import pick_precision

    return str(pick_precision(torch.device("cpu"))).removeprefix("torch.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--content", type=Path, default=REPO / "examples" / "tubingen.jpg")
    p.add_argument("--style", type=Path, default=REPO / "examples" / "starry_night.jpg")
    p.add_argument("--preview-size", type=int, default=160)
    p.add_argument("--full-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, one run, no file")
    args = p.parse_args()
    if args.dry_run:
        args.preview_size, args.full_size, args.repeats = 48, 64, 1
    when = datetime.date.today().isoformat()
    report = markdown(measure(args), args, when)
    print(report)
    if not args.dry_run:
        path = args.out / f"preview-cpu-{when}.md"
        path.write_text(report)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
