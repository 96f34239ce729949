"""The daemon on Ray workers against the daemon on its own engine: throughput and overhead.

    PYTHONPATH=daemon nice -n 10 .venv/bin/python bench/ray_bench.py [--jobs 8] [--size 128]

Starts `brushwork serve` on loopback three times: with its own engine ("local"), with
`--ray auto --workers 1` and with `--workers 2` (CPU actors); they take turns, a few rounds of:

- a fixed batch: --jobs crops of examples/tubingen.jpg in the style of The Starry Night,
  through the batch command's own code (commands/batch.Batch: one job per worker plus one
  queued, results written to files); jobs per minute over the whole batch;
- the per-job overhead: tiny jobs one after the other (model warm, style cached): submit ->
  accepted, submit -> first iteration, last iteration -> result back; medians.

Prints a table and writes bench/results/<device>-<date>-ray.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from brushwork import images, pixels
from brushwork.client import Client
from brushwork.commands.batch import Batch, plan
from brushwork.protocol import ProgressReply, ResultReply
from brushwork.settings import Settings
from protocol_bench import daemons, machine_line, machine_report

ROOT = Path(__file__).resolve().parents[1]
POOLS = [  # name, `serve` options
    ("local", ()),
    ("ray, 1 worker", ("--ray", "auto", "--workers", "1")),
    ("ray, 2 workers", ("--ray", "auto", "--workers", "2")),
]
TINY = Settings(size=64, iterations=3, scales=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6, help="jobs in the batch")
    parser.add_argument("--size", type=int, default=128, help="long side of each output")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--scales", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="batches on each daemon")
    parser.add_argument("--overhead-jobs", type=int, default=4, help="tiny jobs a round")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    settings = Settings(size=args.size, iterations=args.iterations, scales=args.scales)

    load_before = os.getloadavg()[0]
    # All three up at once and measured in turns: the load others put on this machine
    # meanwhile weighs on each alike.
    with (
        daemons(POOLS) as endpoints,
        tempfile.TemporaryDirectory() as folder,
        contextlib.ExitStack() as stack,
    ):
        inputs = write_inputs(Path(folder), args.jobs)
        clients = {
            name: stack.enter_context(Client(endpoint, timeout=60))
            for name, endpoint in endpoints.items()
        }
        seconds: dict[str, list[float]] = {name: [] for name in clients}
        timings: dict[str, list[dict[str, float]]] = {name: [] for name in clients}
        for client in clients.values():
            per_job_timings(client, 1)  # warm: model, allocator, style targets
        for round_ in range(args.rounds):
            for name, client in clients.items():
                out = Path(folder) / f"{name}-{round_}"
                seconds[name].append(run_batch(client, settings, inputs, out))
                timings[name] += per_job_timings(client, args.overhead_jobs)
                print(f"round {round_ + 1} {name}: {seconds[name][-1]:.1f} s", file=sys.stderr)
        runs = []
        for name, client in clients.items():
            workers = client.info().workers
            median = statistics.median(seconds[name])
            runs.append(
                {
                    "pool": name,
                    "workers": len(workers),
                    "threads": [w["threads"] for w in workers],
                    "batch_seconds": seconds[name],
                    "jobs_per_minute": args.jobs / median * 60,
                    "overhead": {
                        k: statistics.median(t[k] for t in timings[name]) for k in timings[name][0]
                    },
                }
            )

    report = {
        **machine_report(load_before, ray=ray_version()),
        "batch": {"jobs": args.jobs, "rounds": args.rounds, **settings.to_dict()},
        "tiny_job": {"count": args.overhead_jobs * args.rounds, **TINY.to_dict()},
        "runs": runs,
    }
    text = markdown(report)
    print(text)
    stem = args.out / f"cpu-{report['date']}-ray"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(text)
    return 0


def write_inputs(folder: Path, count: int) -> list[Path]:
    """`count` different crops of the Tübingen photo, and the style image."""
    photo = Image.open(ROOT / "examples" / "tubingen.jpg").convert("RGB")
    w, h = photo.size
    paths = []
    for i in range(count):
        left = i * (w // 4) // max(1, count - 1)
        path = folder / f"in-{i:02d}.png"
        photo.crop((left, 0, left + 3 * w // 4, h)).save(path)
        paths.append(path)
    return paths


def run_batch(client: Client, settings: Settings, inputs: list[Path], out: Path) -> float:
    """Seconds the batch command's code takes for `inputs`, outputs written."""
    out.mkdir()
    style = pixels.from_array(images.load(ROOT / "examples" / "starry_night.jpg"))
    items = plan([str(p) for p in inputs], out, ".png")
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # its per-file lines
        failures = Batch(client, settings, [style], None, len(items), 95).run(items)
    seconds = time.perf_counter() - start
    if failures:
        raise SystemExit(f"batch failed: {failures}")
    return seconds


def per_job_timings(client: Client, count: int) -> list[dict[str, float]]:
    """`count` tiny jobs one after the other (model warm, style cached), each timed (ms):
    submit -> accepted, submit -> first iteration, last iteration -> result, one iteration."""
    rng = np.random.default_rng(0)
    style = pixels.from_array(np.random.default_rng(1).integers(0, 256, (64, 64, 3), "u1"))
    timings = []
    for _ in range(count):
        content = pixels.from_array(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        start = time.perf_counter()
        job = client.submit(content, [style], TINY)
        accepted = time.perf_counter()
        seen = []
        for event in client.events(job):
            seen.append(time.perf_counter())
            assert isinstance(event, ProgressReply | ResultReply)
        timings.append(
            {
                "submit_to_accepted_ms": (accepted - start) * 1e3,
                "submit_to_first_iteration_ms": (seen[0] - start) * 1e3,
                "last_iteration_to_result_ms": (seen[-1] - seen[-2]) * 1e3,
                "one_iteration_ms": (seen[-2] - seen[0]) / (len(seen) - 2) * 1e3,
            }
        )
    return timings


def ray_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("ray")
    except Exception:  # not installed: the local rows still mean something
        return None


def markdown(report: dict) -> str:
    b = report["batch"]
    t = report["tiny_job"]
    lines = [
        f"# The daemon on Ray workers, CPU ({report['date']})",
        "",
        machine_line(report, "ray"),
        "",
        f"Batch: {b['jobs']} crops of Tübingen in the style of The Starry Night, "
        f"{b['size']} px, {b['iterations']} iterations over {b['scales']} scales, through "
        "`commands/batch.Batch` (a job per worker plus one queued, PNGs written); the three "
        f"daemons run side by side and take turns, {b['rounds']} rounds, so the machine's other "
        "load weighs on each alike.",
        "",
        "| daemon | workers | CPU threads each | batch, each round | jobs/minute (median) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["runs"]:
        threads = "/".join(str(n) for n in r["threads"])
        rounds = ", ".join(f"{t:.1f} s" for t in r["batch_seconds"])
        lines.append(
            f"| {r['pool']} | {r['workers']} | {threads} | {rounds} | {r['jobs_per_minute']:.1f} |"
        )
    lines += [
        "",
        f"Per-job overhead: medians of {t['count']} tiny jobs ({t['size']} px, "
        f"{t['iterations']} iterations) one after the other, after a warm-up job, taken in "
        "turns with the batches.",
        "",
        "| daemon | submit -> accepted | submit -> first iteration | last iteration -> result "
        "| one iteration |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["runs"]:
        o = r["overhead"]
        lines.append(
            f"| {r['pool']} | {o['submit_to_accepted_ms']:.1f} ms "
            f"| {o['submit_to_first_iteration_ms']:.1f} ms "
            f"| {o['last_iteration_to_result_ms']:.1f} ms | {o['one_iteration_ms']:.1f} ms |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
