"""A clip on `serve --ray` with 1 and 2 workers: seconds a frame, and the warping error at the
joins of the chunks against the rest of the clip.

    PYTHONPATH=daemon nice -n 10 .venv/bin/python bench/video_ray.py [--frames 24] [--size 96]

Starts `brushwork serve --ray auto` on loopback with `--workers 1` and `--workers 2` (CPU
actors; each stops its own local Ray cluster when terminated) and runs the same synthetic
clip on each through clip.Clip, as `brushwork video --server` does: examples/tubingen.jpg
panned --pan px a frame (the exact flow is known), in the style of The Starry Night. One
worker runs the clip as one chain; two run two chunks at once, the later one starting
--overlap frames before the join and cross-faded there. The frames styled one by one on the
1-worker daemon give the flicker the method removes.

Warping error: the mean squared difference between frame t and frame t-1 moved by the exact
flow (pixels in [0, 1], a margin off the borders), over the frame pairs that touch a join
(the faded frames and the pair after them) and over the others.

Prints a table and writes bench/results/cpu-<date>-video-ray.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from brushwork import pixels
from brushwork.client import Client
from brushwork.clip import Chunk, Clip, Segment, plan
from brushwork.settings import Settings
from protocol_bench import daemons, machine_line, machine_report

ROOT = Path(__file__).resolve().parents[1]
POOLS = [("ray, 1 worker", 1), ("ray, 2 workers", 2)]
MARGIN = 4  # px off the borders in the warping error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=96, help="long side of the frames")
    parser.add_argument("--pan", type=int, default=2, help="px a frame")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--overlap", type=int, default=4, help="faded frames a join")
    parser.add_argument("--rounds", type=int, default=2, help="clips on each daemon, in turns")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    settings = Settings(size=args.size, iterations=args.iterations, scales=1, seed=0)
    clip = panned(args.frames, args.size, args.pan)
    style = np.asarray(Image.open(ROOT / "examples" / "starry_night.jpg").convert("RGB"))

    load_before = os.getloadavg()[0]
    # Both up at once and measured in turns: the load others put on this shared machine
    # meanwhile weighs on each alike.
    pools = [(name, ("--ray", "auto", "--workers", str(workers))) for name, workers in POOLS]
    with daemons(pools) as endpoints, contextlib.ExitStack() as stack:
        clients = {
            name: stack.enter_context(Client(endpoint, timeout=60))
            for name, endpoint in endpoints.items()
        }
        for client in clients.values():
            warm(client, clip, style, settings)
        seconds: dict[str, list[float]] = {name: [] for name in clients}
        outputs = {}
        for round_ in range(args.rounds):
            for (name, workers), client in zip(POOLS, clients.values(), strict=True):
                chunks = plan([Segment(0, len(clip))], workers, args.overlap)
                outputs[name], took = run_clip(client, clip, style, settings, chunks)
                seconds[name].append(took)
                print(f"round {round_ + 1} {name}: {took:.1f} s", file=sys.stderr)
        runs = [
            measure(name, workers, plan([Segment(0, len(clip))], workers, args.overlap),
                    outputs[name], seconds[name], args.pan)
            for name, workers in POOLS
        ]  # fmt: skip
        alone, took = run_alone(clients[POOLS[0][0]], clip, style, settings)
        runs.append(measure(f"{POOLS[0][0]}, frames alone", 1, [], alone, [took], args.pan))

    report = {
        **machine_report(load_before),
        "clip": {"frames": args.frames, "pan": args.pan, "overlap": args.overlap},
        "rounds": args.rounds,
        "settings": settings.to_dict(),
        "runs": runs,
    }
    text = markdown(report)
    print(text)
    stem = args.out / f"cpu-{report['date']}-video-ray"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(text)
    return 0


def panned(frames: int, size: int, pan: int) -> list[np.ndarray]:
    """A window over the Tübingen photo moving left `pan` px a frame: the picture moves right."""
    photo = Image.open(ROOT / "examples" / "tubingen.jpg").convert("RGB")
    height = size * 3 // 4
    wide = photo.resize((size + pan * frames, height * photo.width // photo.height), Image.LANCZOS)
    strip = np.asarray(wide)[:height]
    return [strip[:, pan * (frames - t) : pan * (frames - t) + size].copy() for t in range(frames)]


def warm(client: Client, clip: list[np.ndarray], style: np.ndarray, settings: Settings) -> None:
    """One frame on every worker: the style's targets computed, the flow's code loaded."""
    workers = len(client.info().workers)
    Clip(client, lambda i: iter(clip[i:]), lambda i, image: None, [style], settings).run(
        [Chunk(0, 2)] * workers
    )


def run_clip(client, clip, style, settings, chunks) -> tuple[list[np.ndarray], float]:
    out: dict[int, np.ndarray] = {}
    start = time.perf_counter()
    Clip(client, lambda i: iter(clip[i:]), out.__setitem__, [style], settings).run(chunks)
    seconds = time.perf_counter() - start
    return [out[i] for i in range(len(clip))], seconds


def run_alone(client, clip, style, settings) -> tuple[list[np.ndarray], float]:
    start = time.perf_counter()
    out = [
        pixels.to_array(
            client.stylize(pixels.from_array(f), [pixels.from_array(style)], settings,
                           output_dtype="f32").image
        )
        for f in clip
    ]  # fmt: skip
    return out, time.perf_counter() - start


def warping_error(frame: np.ndarray, before: np.ndarray, pan: int) -> float:
    m = MARGIN
    return float(((frame[m:-m, m + pan : -m] - before[m:-m, m : -m - pan]) ** 2).mean())


def measure(name, workers, chunks, out, seconds, pan) -> dict:
    """Seconds a frame (the median round's); the warping error of the pairs (t-1, t) that
    touch a join and of the others."""
    joins = {t for c in chunks for t in range(c.start, c.start + c.fade + 1) if c.fade}
    errors = {t: warping_error(out[t], out[t - 1], pan) for t in range(1, len(out))}
    at = [e for t, e in errors.items() if t in joins]
    rest = [e for t, e in errors.items() if t not in joins]
    return {
        "run": name,
        "workers": workers,
        "seconds": seconds,
        "seconds_per_frame": statistics.median(seconds) / len(out),
        "frames_computed": sum(c.end - c.start for c in chunks) or len(out),
        "warping_error_at_joins": float(np.mean(at)) if at else None,
        "warping_error_elsewhere": float(np.mean(rest)),
        "warping_error_max_at_joins": float(np.max(at)) if at else None,
    }


def markdown(report: dict) -> str:
    c, s = report["clip"], report["settings"]
    lines = [
        f"# A clip on Ray workers, 1 against 2, CPU ({report['date']})",
        "",
        machine_line(report),
        "",
        f"{c['frames']} frames of examples/tubingen.jpg panned {c['pan']} px a frame, at"
        f" {s['size']} px, {s['iterations']} steps on one scale, in the style of The Starry"
        f" Night, through clip.Clip (`brushwork video --server`); two workers run two chunks,"
        f" the later one starting {c['overlap']} frames early, cross-faded at the join; both"
        f" daemons up at once, {report['rounds']} rounds in turns. Each"
        " `serve --ray auto` daemon gives its CPU actors the machine's cores shared out (one"
        " worker: 2 threads; two: 1 each). Warping error: mean squared difference to the frame"
        " before moved by the exact flow ([0, 1] pixels).",
        "",
        "| run | workers | frames computed | each round | s a frame (median) | warping error"
        " at the joins (max) | elsewhere |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["runs"]:
        joins = (
            f"{r['warping_error_at_joins']:.5f} ({r['warping_error_max_at_joins']:.5f})"
            if r["warping_error_at_joins"] is not None
            else "no joins"
        )
        lines.append(
            f"| {r['run']} | {r['workers']} | {r['frames_computed']} |"
            f" {', '.join(f'{t:.1f} s' for t in r['seconds'])} |"
            f" {r['seconds_per_frame']:.2f} | {joins} | {r['warping_error_elsewhere']:.5f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
