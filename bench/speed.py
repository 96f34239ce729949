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
DAEMON_START = 600  # seconds the daemon may take to answer (a loaded machine takes minutes)
# --tiny: the same rows at sizes where everything takes seconds (the CI dry run).
TINY = {"floor": 64, "job": 64, "draft": 48, "iterations": 6}


def deepest(settings: Settings) -> str:
    """The deepest VGG layer a step of these settings runs to."""
    return max((settings.content_layer, *settings.style_layers), key=VGG16_LAYERS.index)


def floor_passes(
    engine: Engine, side: int, layer: str, repeats: int = FLOOR_REPEATS
) -> dict[str, list[float]]:
    """Wall and CPU seconds of one forward to `layer` and backward to the pixels at side x
    side, after one to warm up, `repeats` times. The pass is VGG16 as it stood when the unit
    was set (held in the engine's dtype; channels_last on CUDA and in bf16, else
    contiguous), not as the engine now runs it: what the engine gains on VGG itself counts
    in its favour."""
    device, dtype = engine.device, engine.compute_dtype
    fast = device.type == "cuda" or dtype == torch.bfloat16
    layout = torch.channels_last if fast else torch.contiguous_format
    model = VGGFeatures.from_weights(weights.load(weights.resolve_path()))
    model.compute_in(device, dtype, layout)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, side, side, generator=g).to(device)
    times: dict[str, list[float]] = {"wall": [], "cpu": []}
    for i in range(repeats + 1):
        leaf = x.clone().requires_grad_(True)
        _sync(device)
        wall, cpu_time = time.perf_counter(), time.process_time()
        a = model(leaf, {layer})[layer]
        a.float().sum().backward()
        _sync(engine.device)
        if i:
            times["wall"].append(time.perf_counter() - wall)
            times["cpu"].append(time.process_time() - cpu_time)
    return times


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
    """A job's rows, in this (fresh) process: time, level times, peak RSS (and GPU memory),
    then the floor."""
    settings = job_settings(args, args.child_side)
    cuda = args.device.startswith("cuda")
    engine = Engine(device=args.device, precision=args.precision)
    content, style = np.asarray(images.load(CONTENT)), np.asarray(images.load(STYLE))
    marks: list[tuple[float, float]] = []

    def progress(p) -> None:
        if p.step == p.steps:
            marks.append((time.perf_counter() - start, time.process_time() - start_cpu))

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, start_cpu = time.perf_counter(), time.process_time()
    every = max(1, settings.iterations // args.previews) if args.previews else 0
    result = engine.stylize(
        content, [style], settings, progress=progress, preview_every=every,
        progress_every=10 if cuda else 1,  # on a GPU each report waits for the device
    )  # fmt: skip
    _sync(engine.device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    if args.save:
        images.save(args.save, result.image)
    floor = floor_passes(engine, args.floor_side, deepest(settings))
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "levels": _differences([w for w, _ in marks]),
        "levels_cpu": _differences([c for _, c in marks]),
        "peak_rss_mb": peak / 1024,
        "rss_before_job_mb": rss_before / 1024,
        "gpu_mb": gpu_mb,
        "floor": floor,
        "losses": result.losses,
        "dtype": str(engine.compute_dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
    }


def _differences(ends: list[float]) -> list[float]:
    return [b - a for a, b in zip([0.0, *ends], ends, strict=False)]


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process `pid` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def job_settings(args: argparse.Namespace, side: int) -> Settings:
    s = Settings(size=side, seed=0)
    if args.tiny:
        s = s.replace(iterations=TINY["iterations"])
    return s.replace(**dict(args.set))


def draft_settings(args: argparse.Namespace) -> Settings:
    s = Settings(seed=0).replace(**dict(args.set)).at_quality("draft")
    return s.replace(size=args.draft_side)


def run_job(args: argparse.Namespace, side: int) -> dict:
    command = [sys.executable, __file__, *sys.argv[1:], "--child", "--child-side", str(side)]
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
    process, endpoint = start_daemon(args.device, timeout=DAEMON_START)
    times = {}
    try:
        with Client(endpoint, timeout=120) as client:
            client.stylize(content, [other], settings)
            for label in ("new style", "cached style"):
                start, start_cpu = time.perf_counter(), _cpu_seconds(process.pid)
                client.stylize(content, [pixels.from_array(style)], settings)
                times[label] = time.perf_counter() - start
                times[f"{label} cpu"] = _cpu_seconds(process.pid) - start_cpu
    finally:
        process.terminate()
        process.wait(30)
    engine = Engine(device=args.device, precision=args.precision)
    times["floor"] = floor_passes(engine, args.floor_side, deepest(settings))
    return times


def table(report: dict) -> str:
    """Wall and CPU seconds, each over the floor pass's own (on a loaded machine the CPU
    times' ratio is the steadier: other processes stretch wall times unevenly)."""
    drafts = report.get("drafts")
    rows = [
        "| measure | wall s | floor passes (wall) | CPU s | floor passes (CPU) |",
        "| --- | --- | --- | --- | --- |",
    ]

    def row(name: str, wall: float, cpu_time: float, floor: dict, bold: bool = False) -> str:
        w, c = statistics.median(floor["wall"]), statistics.median(floor["cpu"])
        b = "**" if bold else ""
        ratios = f"{b}{wall / w:.2f}{b} | {cpu_time:.2f} | {b}{cpu_time / c:.2f}{b}"
        return f"| {name} | {wall:.2f} | {ratios} |"

    for side, job in report.get("jobs", {}).items():
        floor = job["floor"]
        name = f"floor pass ({report['floor_side']} px, to {report['deepest']}, {job['dtype']})"
        rows.append(
            row(name, statistics.median(floor["wall"]), statistics.median(floor["cpu"]), floor)
        )
        rows.append(row(f"{side} px job", job["seconds"], job["cpu_seconds"], floor, True))
        for i, (w, c) in enumerate(zip(job["levels"], job["levels_cpu"], strict=True)):
            rows.append(row(f"level {i + 1} of the job", w, c, floor))
        rows.append(f"| peak RSS of the {side} px job | {job['peak_rss_mb']:.0f} MB | | | |")
        if job["gpu_mb"] is not None:
            rows.append(f"| peak GPU memory of the {side} px job | {job['gpu_mb']:.0f} MB | | | |")
    if drafts:
        floor = drafts["floor"]
        rows.append(row("floor pass, beside the daemon", statistics.median(floor["wall"]),
                        statistics.median(floor["cpu"]), floor))  # fmt: skip
        for label in ("new style", "cached style"):
            name = f"{report['draft_side']} px draft, {label}, submit -> result (daemon's CPU)"
            rows.append(row(name, drafts[label], drafts[f"{label} cpu"], floor, True))
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (engine rows)")
    parser.add_argument("--rows", default="job,drafts", help="job and/or drafts")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads here and in the daemon (0: torch's default); on a "
                        "loaded machine 1 keeps CPU times honest (no spinning)")  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a dry run in seconds")
    parser.add_argument("--set", action="append", default=[], type=_setting,
                        metavar="KEY=JSON", help="override a setting (repeatable)")  # fmt: skip
    parser.add_argument("--tag", default="", help="suffix of the report's name")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--save", help="write the job's image here (the child only)")
    parser.add_argument("--job-sides", default=str(JOB_SIDE), help="output sides of the jobs")
    parser.add_argument("--previews", type=int, default=0,
                        help="previews a job sends (the plug-in asks for 5; 0: none)")  # fmt: skip
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-side", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.floor_side = TINY["floor"] if args.tiny else FLOOR_SIDE
    args.job_sides = [TINY["job"]] if args.tiny else [int(v) for v in args.job_sides.split(",")]
    args.draft_side = TINY["draft"] if args.tiny else DRAFT_SIDE
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the daemon's
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
        "threads": torch.get_num_threads(),
        "load_before": os.getloadavg()[0],
        "settings": dict(args.set),
        "floor_side": args.floor_side,
        "job_sides": args.job_sides,
        "draft_side": args.draft_side,
        "deepest": deepest(job_settings(args, args.job_sides[0])),
    }
    status = 0
    if "job" in args.rows:
        report["jobs"] = {side: run_job(args, side) for side in args.job_sides}
        write(report, args)  # kept should the drafts fail
    if "drafts" in args.rows:
        try:
            report["drafts"] = run_drafts(args)
        except SystemExit as e:  # the daemon did not start: the jobs' rows still count
            report["drafts_error"], status = str(e), 1
    write(report, args)
    return status


def write(report: dict, args: argparse.Namespace) -> None:
    """Print the table and write it (.md) with every figure (.json)."""
    report["load_after"] = os.getloadavg()[0]
    title = f"{args.device} {report['date'][:10]}{' ' + args.tag if args.tag else ''}"
    text = (
        f"# Speed in floor passes, {title}\n\n"
        f"{report['cpu']}; torch {report['torch']}, precision {args.precision}, "
        f"{report['threads']} threads, "
        f"load average {report['load_before']:.1f} before, {report['load_after']:.1f} after; "
        f"settings changed: {report['settings'] or 'none'}.\n\n{table(report)}\n"
    )
    if "drafts_error" in report:
        text += f"\nNo drafts: {report['drafts_error']}\n"
    print(text)
    name = f"speed-{args.device}-{report['date'][:10]}{'-' + args.tag if args.tag else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(text)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")


def _setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, json.loads(value)


if __name__ == "__main__":
    sys.exit(main())
