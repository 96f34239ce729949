"""Every CPU time in floor passes: the README's 512 px job and the 160 px draft, as multiples of
one VGG16 pass measured in the same run, so that figures from different machines compare.

    PYTHONPATH=daemon .venv/bin/python bench/speed.py                      # engine's precision
    PYTHONPATH=daemon .venv/bin/python bench/speed.py --precision fp32     # an AVX2-only CPU's
    PYTHONPATH=daemon .venv/bin/python bench/speed.py --tiny --out /tmp/x  # the dry run (tests)

The floor pass: one forward of VGG16 to the deepest layer the settings use plus the backward
to the pixels, at FLOOR_SIDE x FLOOR_SIDE, in the engine's precision (the least any step of a
512 px job can cost). Rows:

- **job**: `Engine.stylize` of Tübingen x The Starry Night at the defaults (`--seed 0`, the
  README's command without the CLI's start-up) in a fresh process: the engine just loaded, no
  style cached. Its peak RSS is that process's alone; its floor passes are measured in the
  same process right after the job, and the level times come from its progress reports.
- **draft, new style / cached style**: `Settings.at_quality("draft")` at DRAFT_SIDE px (what
  the GIMP dialog's preview runs) from submit to result on a warm daemon on loopback (it has
  run one job of another style), first with a style it has not described, then again.

Each floor figure is the median of FLOOR_REPEATS passes after one to warm up. Writes
bench/results/speed-<device>-<date>[-tag].{md,json} (or under --out) and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "daemon"))
sys.path.insert(0, str(HERE))

from brushwork import images, pixels, weights  # noqa: E402
from brushwork.client import Client  # noqa: E402
from brushwork.engine import Engine  # noqa: E402
from brushwork.settings import VGG16_LAYERS, Settings  # noqa: E402
from brushwork.vgg import VGGFeatures  # noqa: E402
from protocol_bench import start_daemon  # noqa: E402
from reliability import cpu  # noqa: E402

CONTENT = REPO / "examples" / "tubingen.jpg"
STYLE = REPO / "examples" / "starry_night.jpg"
FLOOR_SIDE, JOB_SIDE, DRAFT_SIDE = 512, 512, 160
FLOOR_REPEATS = 3
# --tiny: the same rows at sizes where everything takes seconds (the CI dry run).
TINY = {"floor": 64, "job": 64, "draft": 48, "iterations": 6}


def deepest(settings: Settings) -> str:
    """The deepest VGG layer a step of these settings runs to."""
    return max((settings.content_layer, *settings.style_layers), key=VGG16_LAYERS.index)


def floor_passes(
    engine: Engine, side: int, layer: str, repeats: int = FLOOR_REPEATS
) -> list[float]:
    """Seconds of one forward to `layer` and backward to the pixels at side x side, after one
    to warm up, `repeats` times. The pass is VGG16 as it stood when the unit was set (held in
    the engine's dtype; channels_last on CUDA and in bf16, else contiguous), not as the
    engine now runs it: what the engine gains on VGG itself counts in its favour."""
    device, dtype = engine.device, engine.compute_dtype
    fast = device.type == "cuda" or dtype == torch.bfloat16
    layout = torch.channels_last if fast else torch.contiguous_format
    model = VGGFeatures.from_weights(weights.load(weights.resolve_path()))
    model.compute_in(device, dtype, layout)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, side, side, generator=g).to(device)
    times = []
    for _ in range(repeats + 1):
        leaf = x.clone().requires_grad_(True)
        _sync(device)
        start = time.perf_counter()
        a = model(leaf, {layer})[layer]
        a.float().sum().backward()
        _sync(engine.device)
        times.append(time.perf_counter() - start)
    return times[1:]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _fit(path: Path, side: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        return np.asarray(img)


def job_child(args: argparse.Namespace) -> dict:
    """The job row, in this (fresh) process: time, level times, peak RSS, then the floor."""
    settings = job_settings(args)
    engine = Engine(device=args.device, precision=args.precision)
    content, style = np.asarray(images.load(CONTENT)), np.asarray(images.load(STYLE))
    marks: list[tuple[int, float]] = []

    def progress(p) -> None:
        if p.step == p.steps:
            marks.append((p.level, p.elapsed))

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = engine.stylize(content, [style], settings, progress=progress)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.save:
        images.save(args.save, result.image)
    floor = floor_passes(engine, args.floor_side, deepest(settings))
    ends = [t for _, t in marks]
    return {
        "seconds": seconds,
        "levels": [b - a for a, b in zip([0.0, *ends], ends, strict=False)],
        "peak_rss_mb": peak / 1024,
        "rss_before_job_mb": rss_before / 1024,
        "floor": floor,
        "losses": result.losses,
        "dtype": str(engine.compute_dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
    }


def job_settings(args: argparse.Namespace) -> Settings:
    s = Settings(size=args.job_side, seed=0)
    if args.tiny:
        s = s.replace(iterations=TINY["iterations"])
    return s.replace(**dict(args.set))


def draft_settings(args: argparse.Namespace) -> Settings:
    s = Settings(seed=0).replace(**dict(args.set)).at_quality("draft")
    return s.replace(size=args.draft_side)


def run_job(args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", *sys.argv[1:]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "daemon"), str(HERE)])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the job's process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_drafts(args: argparse.Namespace) -> dict:
    """Submit -> result of the draft on a warm daemon, a new style then the same again."""
    settings = draft_settings(args)
    content = pixels.from_array(_fit(CONTENT, args.draft_side * 2))
    style = _fit(STYLE, args.draft_side * 2)
    other = pixels.from_array(np.ascontiguousarray(style[::-1]))  # warms all but this style
    process, endpoint = start_daemon(args.device)
    times = {}
    try:
        with Client(endpoint, timeout=120) as client:
            client.stylize(content, [other], settings)
            for label in ("new style", "cached style"):
                start = time.perf_counter()
                client.stylize(content, [pixels.from_array(style)], settings)
                times[label] = time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(30)
    engine = Engine(device=args.device, precision=args.precision)
    times["floor"] = floor_passes(engine, args.floor_side, deepest(settings))
    return times


def table(report: dict) -> str:
    job, drafts = report.get("job"), report.get("drafts")
    rows = ["| measure | seconds | floor passes |", "| --- | --- | --- |"]
    if job:
        floor = statistics.median(job["floor"])
        rows.append(f"| floor pass ({report['floor_side']} px, to {report['deepest']}, "
                    f"{job['dtype']}) | {floor:.3f} | 1 |")  # fmt: skip
        rows.append(f"| {report['job_side']} px job, defaults | {job['seconds']:.1f} | "
                    f"**{job['seconds'] / floor:.1f}** |")  # fmt: skip
        for i, t in enumerate(job["levels"]):
            rows.append(f"| level {i + 1} of the job | {t:.1f} | {t / floor:.1f} |")
        rows.append(f"| peak RSS of the job | {job['peak_rss_mb']:.0f} MB | |")
    if drafts:
        floor = statistics.median(drafts["floor"])
        rows.append(f"| floor pass, beside the daemon | {floor:.3f} | 1 |")
        for label in ("new style", "cached style"):
            t = drafts[label]
            rows.append(f"| {report['draft_side']} px draft, {label}, submit -> result | "
                        f"{t:.2f} | **{t / floor:.2f}** |")  # fmt: skip
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (engine rows)")
    parser.add_argument("--rows", default="job,drafts", help="job and/or drafts")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a dry run in seconds")
    parser.add_argument("--set", action="append", default=[], type=_setting,
                        metavar="KEY=JSON", help="override a setting (repeatable)")  # fmt: skip
    parser.add_argument("--tag", default="", help="suffix of the report's name")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--save", help="write the job's image here (the child only)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.floor_side = TINY["floor"] if args.tiny else FLOOR_SIDE
    args.job_side = TINY["job"] if args.tiny else JOB_SIDE
    args.draft_side = TINY["draft"] if args.tiny else DRAFT_SIDE
    if args.child:
        print(json.dumps(job_child(args)))
        return 0
    if args.precision != "auto" and "drafts" in args.rows:
        print("note: the daemon's drafts run in its own (auto) precision", file=sys.stderr)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu(),
        "device": args.device,
        "torch": torch.__version__,
        "precision": args.precision,
        "load_before": os.getloadavg()[0],
        "settings": dict(args.set),
        "floor_side": args.floor_side,
        "job_side": args.job_side,
        "draft_side": args.draft_side,
        "deepest": deepest(job_settings(args)),
    }
    if "job" in args.rows:
        report["job"] = run_job(args)
    if "drafts" in args.rows:
        report["drafts"] = run_drafts(args)
    report["load_after"] = os.getloadavg()[0]
    title = f"{args.device} {report['date'][:10]}{' ' + args.tag if args.tag else ''}"
    text = (
        f"# Speed in floor passes, {title}\n\n"
        f"{report['cpu']}; torch {report['torch']}, precision {args.precision}, "
        f"load average {report['load_before']:.1f} before, {report['load_after']:.1f} after; "
        f"settings changed: {report['settings'] or 'none'}.\n\n{table(report)}\n"
    )
    print(text)
    name = f"speed-{args.device}-{report['date'][:10]}{'-' + args.tag if args.tag else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(text)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, json.loads(value)


if __name__ == "__main__":
    sys.exit(main())
