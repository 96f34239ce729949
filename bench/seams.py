"""Where tiles hand over: tiled and untiled runs of the same job, line by line.

A tiled job gives every pixel to one tile (tiling.Canvas); a seam, if any, lies on the lines
where the owner changes. For each job below, the same settings and seed run untiled and with
a forced tile size, in one process, on the CPU. Each output is rounded to 8 bits (what a PNG
holds), and every line between two adjacent rows (or columns) gets its step: the mean
|difference| across it, over its whole length and the three channels. A line's ratio is its
step over the median step of all lines in that direction; its rank, the share of those lines
with a smaller step. The lines, in groups (each table cell: the group's largest ratio):

- handover: where the owner changes at the output level, and at each coarser tiled level
  (scaled to the output; the finer levels rework them);
- beside handover: the BESIDE lines either side of one, where its step can spread;
- window edges: where a tile's window ends inside the image (its padded border);
- image border: BORDER lines at each edge of the image, where VGG's own zero padding marks
  tiled and untiled runs alike;
- the rest: every other line. Their largest ratio is what the image itself holds.

Also the loss of both outputs, scored alike in fp32 (evaluate.loss_terms, the style at the
output's size), the quality harness's content kept and style match (measures.py: what the
pictures show, which no loss here minimises), and the time of both runs.

    PYTHONPATH=daemon .venv/bin/python bench/seams.py     # all jobs; tables to bench/results/

Before and after a change to the tiled path: run the old code with --look, then the new one
with --before pointing there; the table then has both tiled runs against the untiled one, and
the crop shows all three:

    PYTHONPATH=/tmp/old/daemon .venv/bin/python bench/seams.py --jobs 0 --look /tmp/old-look \\
        --out /tmp/old-look
    PYTHONPATH=daemon .venv/bin/python bench/seams.py --jobs 0 --look /tmp/new-look \\
        --before /tmp/old-look

--look DIR (default out/seams-cpu-<date>, not in git) gets the outputs, their times and losses,
and a 2x crop (tiled | untiled; with --before, tiled before | tiled | untiled) around the first
crossing of handover lines at the output level, to look at. The table goes to --out
(default bench/results/seams-cpu-<date>.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

import evaluate
import measures
from brushwork import engine as engine_mod
from brushwork import images, scales, tiling
from brushwork.settings import Settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "images"
BORDER = 2  # lines at each edge of the image, where VGG's zero padding marks any run
BESIDE = 2  # lines either side of a handover line, where a seam's step can spread
GROUPS = {
    "handover": "handover",
    "beside": f"beside handover (±{BESIDE})",
    "edge": "window edges",
    "border": f"image border ({BORDER} a side)",
    "rest": "the rest",
}
# Column and panel names of the runs: the code at hand tiled and untiled, and with --before
# the tiled run of the code it replaces.
LABELS = {"before": "tiled before", "tiled": "tiled", "untiled": "untiled"}


@dataclass(frozen=True)
class Job:
    content: Path
    style: Path
    size: int
    tile: int


def _shared(content: str, style: str) -> tuple[Path, Path]:
    return SHARED / "content" / f"{content}.jpg", SHARED / "style" / f"{style}.jpg"


JOBS = [
    Job(*_shared("golden_gate", "the_scream"), 768, 320),  # the job of the report
    Job(REPO / "examples" / "tubingen.jpg", REPO / "examples" / "starry_night.jpg", 512, 192),
    Job(*_shared("brad_pitt", "picasso_selfport1907"), 512, 256),
    Job(*_shared("hoovertowernight", "the_great_wave"), 640, 256),
    Job(*_shared("golden_gate", "composition_vii"), 512, 128),
]


def profile(image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """For the lines between rows, then between columns: each line's ratio and rank."""
    out = []
    for axis in (0, 1):
        step = np.abs(np.diff(image, axis=axis)).mean((1, 2) if axis == 0 else (0, 2))
        rank = (step[:, None] > step[None, :]).mean(1)
        out.append((step / np.median(step), rank))
    return out


def lines(settings: Settings, height: int, width: int) -> tuple[dict, dict]:
    """The lines of the output (line k lies between rows, or columns, k and k + 1) in GROUPS,
    each line in the first group that claims it, as (rows, columns) sets per group; and the
    level of the pyramid each handover line comes from. Handover lines and window edges are
    taken at every tiled level as the engine plans them, scaled to the output."""
    handover, edge, level = [set(), set()], [set(), set()], {}
    for h, w in scales.pyramid(height, width, settings):
        tile = min(settings.tile, max(h, w))
        overlap = tiling.overlap_for(tile)
        plan = tiling.plan(h, w, tile, overlap)
        owner = tiling.Canvas(torch.zeros(1, 1, h, w), plan, overlap).owner.numpy()
        for axis, n, out in ((0, h, height), (1, w, width)):
            changes = np.flatnonzero((np.diff(owner, axis=axis) != 0).any(axis=1 - axis))
            ends = {t.y0 if axis == 0 else t.x0 for t in plan} - {0}
            ends |= {t.y1 if axis == 0 else t.x1 for t in plan} - {n}
            # line k of a level n px long (between pixels k and k + 1) at the output's scale
            for k in changes:
                line = round((k + 1) * out / n) - 1
                handover[axis].add(line)
                level[axis, line] = f"{w}x{h}"
            edge[axis].update(round(e * out / n) - 1 for e in ends)
    groups = {name: [set(), set()] for name in GROUPS}
    for axis, n in ((0, height), (1, width)):
        every = set(range(n - 1))
        taken: set[int] = set()
        for name, found in (
            ("handover", handover[axis]),
            ("beside", {k + d for k in handover[axis] for d in range(-BESIDE, BESIDE + 1)}),
            ("edge", edge[axis]),
            ("border", set(range(BORDER)) | set(range(n - 1 - BORDER, n - 1))),
            ("rest", every),
        ):
            groups[name][axis] = (found & every) - taken
            taken |= groups[name][axis]
    return groups, level


def _cell(prof: list, at: list[set[int]]) -> str:
    """The largest ratio among the lines `at` (rows, columns), with its rank."""
    found = [(prof[axis][0][k], prof[axis][1][k]) for axis in (0, 1) for k in at[axis]]
    if not found:
        return "-"
    ratio, rank = max(found)
    return f"{ratio:.2f} ({rank:.1%})"


def _load(path: Path) -> np.ndarray:
    return images.to_float(images.load(path))[..., :3]


def _score(model, content: np.ndarray, style: np.ndarray, out: np.ndarray, s: Settings) -> float:
    """evaluate.loss_terms' total, the content and style resized as the engine's output level
    sees them."""
    h, w = out.shape[:2]
    sh, sw = scales.output_size(*style.shape[:2], round(max(h, w) * s.style_scale))

    def tensor(a: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        return x.clamp(0, 1)

    return evaluate.loss_terms(
        model, tensor(content, (h, w)), tensor(style, (sh, sw)), tensor(out, (h, w)), s
    )["total"]


def _crossing(handover: list[set[int]], level: dict, height: int, width: int) -> tuple[int, int]:
    """The first crossing of a row and a column where tiles hand over at the output level
    (the lines the issue saw), else of any handover lines, else the middle."""
    picked = []
    for axis, n in ((0, height), (1, width)):
        found = sorted(handover[axis])
        finest = [k for k in found if level[axis, k] == f"{width}x{height}"]
        picked.append((finest or found or [n // 2])[0])
    return picked[0], picked[1]


def _crop(panels: dict[str, np.ndarray], at: tuple[int, int], path: Path, half: int = 80):
    """Side by side, each labelled: `half` px around `at` in every image, zoomed 2x (nearest,
    so a one-pixel line stays one line of 2 px)."""
    (y, x), gap, label = at, 8, 14
    tiles = []
    for image in panels.values():
        y0, x0 = max(0, y - half), max(0, x - half)
        tiles.append(image[y0 : y + half + 1, x0 : x + half + 1])
    height = max(t.shape[0] for t in tiles)
    sheet = Image.new(
        "RGB", (sum(2 * t.shape[1] + gap for t in tiles), 2 * height + label), "white"
    )
    draw, left = ImageDraw.Draw(sheet), 0
    for name, t in zip(panels, tiles, strict=True):
        zoomed = Image.fromarray((t * 255).round().astype(np.uint8))
        sheet.paste(zoomed.resize((2 * t.shape[1], 2 * t.shape[0]), Image.NEAREST), (left, label))
        draw.text((left + 2, 1), name, fill="black")
        left += 2 * t.shape[1] + gap
    sheet.save(path)


def _run(engine, model, job: Job, iterations: int) -> dict[str, dict]:
    """The job tiled and untiled: each output (8 bits), its time and its loss."""
    content, style = _load(job.content), _load(job.style)
    base = Settings(size=job.size, iterations=iterations)  # unseeded: one picture each
    runs = {}
    for name, s in (("tiled", base.replace(tile=job.tile)), ("untiled", base)):
        start = time.perf_counter()
        image = engine.stylize(content, [style], s).image
        took = time.perf_counter() - start
        image = (image * 255).round() / 255
        runs[name] = {"image": image, "time": took, "loss": _score(model, content, style, image, s)}
    return runs


def _kept(directory: Path, index: int) -> dict:
    """The tiled run a --look DIR holds for job `index`."""
    numbers = json.loads((directory / f"{index}.json").read_text())["tiled"]
    image = _load(directory / f"{index}-tiled.png")
    return {"image": image, **numbers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", default=",".join(str(i) for i in range(len(JOBS))))
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument(
        "--look", type=Path, help="outputs, timings and 2x crops; default: out/seams-cpu-DATE"
    )
    parser.add_argument(
        "--before", type=Path, help="a --look DIR of another version: its tiled runs join in"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    date = datetime.date.today().isoformat()
    args.look = args.look or REPO / "out" / f"seams-cpu-{date}"
    engine = engine_mod.Engine(device="cpu")
    model = evaluate.reference_model(None, torch.device("cpu"))
    tiled = ["before", "tiled"] if args.before else ["tiled"]
    shown = (*tiled, "untiled")
    jobs, detail = [], []
    for index in (int(j) for j in args.jobs.split(",")):
        job = JOBS[index]
        runs = _run(engine, model, job, args.iterations)
        if args.before:
            runs = {"before": _kept(args.before, index), **runs}
        h, w = runs["tiled"]["image"].shape[:2]
        groups, level = lines(Settings(size=job.size, tile=job.tile), h, w)
        prof = {name: profile(run["image"]) for name, run in runs.items()}
        label = f"{job.content.stem} x {job.style.stem}"
        rows = [
            f"| {GROUPS[g]} | {sum(map(len, at))} | "
            + " | ".join(_cell(prof[n], at) for n in shown)
            + " |"
            for g, at in groups.items()
        ]
        rows += [
            "| time (s) | | " + " | ".join(f"{runs[n]['time']:.0f}" for n in shown) + " |",
            "| loss (evaluate.py) | | "
            + " | ".join(f"{runs[n]['loss']:.3f}" for n in shown)
            + " |",
        ]
        content, style = _load(job.content), _load(job.style)
        scores = {n: measures.measure(runs[n]["image"], content, style) for n in shown}
        for key, what in (("content", "content kept"), ("style", "style match")):
            cells = " | ".join(f"{scores[n][key]:.3f}" for n in shown)
            rows.append(f"| {what} (measures.py) | | {cells} |")
        columns = ["lines", "count", *(f"{LABELS[n]}: max ratio (rank)" for n in shown)]
        jobs.append(f"## {label}: {w}x{h}, tile {job.tile}\n\n" + _table(columns, rows))
        print(jobs[-1], flush=True)
        for axis, k in [(a, k) for a in (0, 1) for k in sorted(groups["handover"][a])]:
            ratios = " | ".join(
                f"{prof[n][axis][0][k]:.2f} ({prof[n][axis][1][k]:.1%})" for n in shown
            )
            where = f"{('row', 'column')[axis]} {k}"
            detail.append(f"| {label} | {where} | {level[axis, k]} | {ratios} |")
        args.look.mkdir(parents=True, exist_ok=True)
        for name, run in runs.items():
            images.save(args.look / f"{index}-{name}.png", run["image"])
        numbers = {n: {"time": r["time"], "loss": r["loss"]} for n, r in runs.items()}
        (args.look / f"{index}.json").write_text(json.dumps(numbers, indent=1))
        crossing = _crossing(groups["handover"], level, h, w)
        panels = {LABELS[n]: runs[n]["image"] for n in shown}
        _crop(panels, crossing, args.look / f"{index}-crop-2x.png")
    line_columns = ["job", "line", "level", *(f"{LABELS[n]}: ratio (rank)" for n in shown)]
    report = (
        f"# Handover lines, tiled against untiled, CPU, {date}\n\n"
        f"`bench/seams.py`, {args.iterations} iterations, unseeded, other settings default "
        f"({Settings().scales} scales), torch {torch.__version__}, "
        f"{str(engine.compute_dtype).removeprefix('torch.')}. Ratio: a line's step over the "
        "median step of its direction; rank: the share of lines in that direction with a "
        "smaller step. Each cell: the largest ratio among the lines of the group.\n\n"
        + "\n\n".join(jobs) + "\n\n## Every handover line\n\n"
        + _table(line_columns, detail) + "\n"
    )  # fmt: skip
    print("\n" + report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"seams-cpu-{date}.md").write_text(report)


def _table(columns: list[str], rows: list[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + " --- |" * len(columns)
    return "\n".join([head, *rows])


if __name__ == "__main__":
    main()
