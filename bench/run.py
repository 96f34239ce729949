"""Brushwork against the naive seed algorithm, side by side, at several sizes.

    PYTHONPATH=daemon python bench/run.py --device cpu --sizes 128,256,512
    PYTHONPATH=daemon python bench/run.py --device cuda --sizes 512,1024,2048,4096 --fp32-too

Both sides minimise the seed's objective (Gram style loss, content start, style weight 10,
the same weights at every level: `SEED_OBJECTIVE`), since naive.py and evaluate.py code only
that one; Brushwork's default settings (sliced loss, palette start) are also timed, as
"brushwork, defaults", on the same images: their loss columns score them on the seed's
objective, which they do not minimise, so they have no speed-up.

For each size: Brushwork on a fresh engine (with --warm, the default on GPUs, timed again on
the same engine: style targets cached and cuDNN tuned, as in the daemon), optionally with
autocast off or torch.compile, then the naive reference, run until its loss reaches
Brushwork's (both scored by evaluate.loss_terms) or its time cap. Every run is a fresh
subprocess, so peak RSS and peak GPU memory belong to that run alone.
Writes bench/results/<device>-<date>.json and .md, and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CONTENT = REPO / "examples" / "tubingen.jpg"
DEFAULT_STYLE = REPO / "examples" / "starry_night.jpg"
SEED_OBJECTIVE = {
    "style_loss": "gram",
    "init": "content",
    "style_weight": 10.0,
    "style_gain": 1.0,
    "style_layer_falloff": 1.0,
    "finer_levels": "full",
}


def _inputs(job: dict, device):
    """Content at long side `size` (aspect kept) and the style stretched to the same size:
    both programs get the very same pixels (naive.py explains why the sizes must match)."""
    import torch
    from PIL import Image

    content = Image.open(job["content"]).convert("RGB")
    w, h = content.size
    scale = job["size"] / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    content = content.resize(size, Image.Resampling.LANCZOS)
    style = Image.open(job["style"]).convert("RGB").resize(size, Image.Resampling.LANCZOS)
    arrays = [np.asarray(im, dtype=np.float32) / 255 for im in (content, style)]
    tensors = [torch.from_numpy(a).permute(2, 0, 1)[None].contiguous().to(device) for a in arrays]
    return arrays, tensors


def _peaks(device) -> dict:
    import torch

    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": rss_kb / 1024}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_brushwork(job: dict) -> dict:
    import torch

    from brushwork.engine import Engine
    from brushwork.scales import level_steps, pyramid
    from brushwork.settings import Settings
    from evaluate import loss_terms, reference_model

    settings = Settings(**job["settings"])
    engine = Engine(weights=job["weights"], device=job["device"], precision=job["precision"])
    if job.get("compile"):
        engine.model.forward = torch.compile(engine.model.forward)
    (content, style), (c_t, s_t) = _inputs(job, engine.device)
    levels = len(pyramid(*content.shape[:2], settings))
    final_steps = level_steps(settings, levels)[-1]
    marks: dict[int, float] = {}
    every = max(1, final_steps // 2)  # two reports in the final level: its rate, few syncs

    def progress(p) -> None:
        marks[p.iteration] = p.elapsed

    runs = {}
    for phase in ("cold", "warm") if job["warm"] else ("cold",):
        marks.clear()
        _sync(engine.device)
        t, cpu = time.perf_counter(), time.process_time()
        result = engine.stylize(content, [style], settings, progress=progress, progress_every=every)
        _sync(engine.device)
        runs[phase] = time.perf_counter() - t
    cpu = time.process_time() - cpu
    done = sorted(marks)
    final_rate = (
        (marks[done[-1]] - marks[done[-2]]) / (done[-1] - done[-2]) if len(done) > 1 else None
    )
    image = torch.from_numpy(np.ascontiguousarray(result.image)).permute(2, 0, 1)[None]
    if job.get("save"):
        from PIL import Image

        Image.fromarray((result.image * 255).round().astype(np.uint8)).save(job["save"])
    peaks = _peaks(engine.device)  # before the common evaluation, which is not the engine's
    model = reference_model(job["weights"], engine.device)
    objective = Settings(**job["objective"])  # the seed's, whatever this run minimised
    terms = loss_terms(model, c_t, s_t, image.to(engine.device), objective)
    return {
        "kind": "brushwork",
        "precision": str(engine.compute_dtype).replace("torch.", ""),
        "iterations": result.iterations,
        "cold_s": runs["cold"],
        "time_s": runs[phase],
        "ms_per_it": 1000 * runs[phase] / result.iterations,
        "cpu_s": cpu,
        "ms_per_it_full_size": None if final_rate is None else 1000 * final_rate,
        "engine_losses": result.losses,
        "losses": terms,
        **peaks,
    }


def run_naive(job: dict) -> dict:

    import naive
    from brushwork.engine import pick_device
    from brushwork.settings import Settings
    from evaluate import loss_terms, reference_model

    device = pick_device(job["device"])
    model = reference_model(job["weights"], device)
    settings = Settings(**job["settings"])
    _, (c_t, s_t) = _inputs(job, device)
    cpu = time.process_time()
    out = naive.stylize(
        model, c_t, s_t, settings, target=job["target"], time_cap=job["cap_s"],
        history=job["history"],
    )  # fmt: skip
    peaks = _peaks(device)
    if job.get("save"):
        from PIL import Image

        pixels = out.image[0].permute(1, 2, 0).cpu().numpy()
        Image.fromarray((pixels * 255).round().astype(np.uint8)).save(job["save"])
    return {
        "kind": "naive",
        "iterations": out.iterations,
        "time_s": out.elapsed,
        "ms_per_it": 1000 * out.elapsed / max(1, out.iterations),
        "cpu_s": time.process_time() - cpu,
        "reached": out.reached,
        "own_loss": out.loss,
        "losses": loss_terms(model, c_t, s_t, out.image, settings),
        **peaks,
    }


def _subprocess(job: dict) -> dict:
    """One run in a fresh interpreter; its last stdout line is the JSON result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), str(REPO / "daemon"), env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--job", json.dumps(job)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  {job['kind']} at {job['size']} px failed: {tail}", file=sys.stderr)
        return {"kind": job["kind"], "error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(v, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    head = (
        "| size | run | ms/it (avg) | ms/it (full size) | time to result s | peak RSS MB "
        "| peak GPU MB | content | style | tv | total | speed-up at equal loss |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        for run in row["runs"]:
            if "error" in run:
                lines.append(f"| {row['size']} | {run['label']} | failed: {run['error']} |")
                continue
            loss = run["losses"]
            lines.append(
                f"| {row['size']} | {run['label']} | {_fmt(run['ms_per_it'])} "
                f"| {_fmt(run.get('ms_per_it_full_size'))} | {_fmt(run['time_s'], '.2f')} "
                f"| {_fmt(run['peak_rss_mb'])} | {_fmt(run.get('peak_gpu_mb'))} "
                f"| {loss['content']:.4f} | {loss['style']:.4f} | {loss['tv']:.4f} "
                f"| {loss['total']:.4f} | {run.get('speedup', '')} |"
            )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="128,256,512")
    p.add_argument("--iterations", type=int, default=None, help="default: Settings' default")
    p.add_argument("--caps", default="60,120,300", help="naive time cap per size, seconds")
    p.add_argument("--content", default=str(DEFAULT_CONTENT))
    p.add_argument("--style", default=str(DEFAULT_STYLE))
    p.add_argument("--weights", default=os.environ.get("BRUSHWORK_WEIGHTS"))
    p.add_argument("--fp32-too", action="store_true", help="also Brushwork in fp32")
    p.add_argument("--compile", action="store_true", help="also Brushwork with torch.compile")
    p.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time a second run on the same engine (cached style targets, tuned kernels), as "
        "in the daemon; default: on for GPUs, off for the CPU, where it changes little",
    )
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--images", default=None, help="save each result as PNG in this folder")
    args = p.parse_args()
    if args.job:
        job = json.loads(args.job)
        result = run_naive(job) if job["kind"] == "naive" else run_brushwork(job)
        print(json.dumps(result))
        return 0

    import torch

    from brushwork.lbfgs import HISTORY as LBFGS_HISTORY
    from brushwork.settings import Settings

    iterations = {} if args.iterations is None else {"iterations": args.iterations}
    settings = Settings(**SEED_OBJECTIVE, **iterations)
    defaults = Settings(**iterations)
    sizes = [int(s) for s in args.sizes.split(",")]
    caps = [float(c) for c in args.caps.split(",")]
    caps = (caps + [caps[-1]] * len(sizes))[: len(sizes)]  # the last cap repeats as needed
    images_dir = Path(args.images) if args.images else None
    if images_dir:
        images_dir.mkdir(parents=True, exist_ok=True)
    base = {
        "device": args.device, "weights": args.weights, "content": args.content,
        "style": args.style, "history": LBFGS_HISTORY,
        "warm": args.warm if args.warm is not None else not args.device.startswith("cpu"),
    }  # fmt: skip
    variants = [("brushwork", "auto", False, settings)]
    if args.fp32_too:
        variants.append(("brushwork fp32", "fp32", False, settings))
    if args.compile:
        variants.append(("brushwork compiled", "auto", True, settings))
    variants.append(("brushwork, defaults", "auto", False, defaults))
    now = datetime.datetime.now(datetime.UTC)
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else _cpu_name()
    record = {
        "date": now.isoformat(timespec="seconds"),
        "device": args.device,
        "device_name": device_name or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": _load(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "content": Path(args.content).name,
        "style": Path(args.style).name,
        "settings": settings.to_dict(),
        "default_settings": defaults.to_dict(),
        "lbfgs_history": LBFGS_HISTORY,
        "rows": [],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{args.device.split(':')[0]}-{now:%Y-%m-%d}"
    for size, cap in zip(sizes, caps, strict=True):
        seed = settings.replace(size=size).to_dict()
        job = {**base, "size": size, "settings": seed, "objective": seed}
        runs = []
        for label, precision, compiled, own in variants:
            name = label.replace(",", "").replace(" ", "-")
            save = str(images_dir / f"{name}-{size}.png") if images_dir else None
            run = _subprocess(
                {**job, "kind": "brushwork", "precision": precision, "compile": compiled,
                 "save": save, "settings": own.replace(size=size).to_dict()}
            )  # fmt: skip
            runs.append({"label": label, **run})
            print(f"{size} px {label}: {run}", file=sys.stderr, flush=True)
        ours = runs[0]
        if "error" not in ours:
            save = str(images_dir / f"naive-{size}.png") if images_dir else None
            naive_run = _subprocess(
                {**job, "kind": "naive", "target": ours["losses"]["total"], "cap_s": cap,
                 "save": save}
            )  # fmt: skip
            if "error" not in naive_run:
                ratio = naive_run["time_s"] / ours["time_s"]
                reached = naive_run["reached"]
                naive_run["speedup"] = f"{ratio:.1f}x" if reached else f">= {ratio:.1f}x (cap)"
                ours["speedup"] = naive_run["speedup"]
            runs.append({"label": "naive", **naive_run})
            print(f"{size} px naive: {naive_run}", file=sys.stderr, flush=True)
        record["rows"].append({"size": size, "naive_cap_s": cap, "runs": runs})
        _write(record, stem)  # after every size: a run cut short keeps what it measured
    print(table(record["rows"]))
    print(f"wrote {stem}.json and .md", file=sys.stderr)
    return 0


def _write(record: dict, stem: Path) -> None:
    record["loadavg_after"] = _load()
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    header = (
        f"# {record['device_name']} ({record['device']}), {record['date']}\n\n"
        f"torch {record['torch']}, Python {record['python']}, {record['cpu_count']} CPUs, "
        f"{record['torch_threads']} torch threads, load average {record['loadavg_before']} "
        f"before, {record['loadavg_after']} after\n"
        f"{record['content']} styled as {record['style']}; settings: {record['settings']}\n\n"
    )
    stem.with_suffix(".md").write_text(header + table(record["rows"]) + "\n")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor()


def _load() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


if __name__ == "__main__":
    sys.exit(main())
