"""Video: how much less a clip flickers when its frames are held to each other (temporal.py,
Ruder et al. 2016) than stylised one by one, at what cost to each frame, and how fast.

On a synthetic clip (bench/clips.py: a photo panned and zoomed by known amounts, a disc
crossing it) whose exact flow is known:

- warping error (Lai et al. 2018): the mean over frames of the mean squared difference between
  output frame t and output frame t-1 warped to it, over the pixels visible in both. Measured
  with the exact flow and visibility, and with a flow other than the DIS that stylised
  (DeepFlow, else Farneback: other_flow), reliable by the same forward-backward check; the
  content's own error under the exact flow is the floor (resampling);
- per-frame quality: the harness's content kept and style match (bench/measures.py), mean
  over the frames;
- seconds per frame (this machine's CPU, shared with other work: say so when quoting).

Writes a table (stdout, and --report as markdown), a contact strip of the frames (content,
independent, temporal) and a crop into --sheets, and a small animated WebP of both, side by
side, into --results.

    PYTHONPATH=<opencv-contrib-python-headless> python bench/video.py --side 256 --frames 8
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import clips
import measures
from brushwork import flow, temporal
from brushwork.engine import Engine
from brushwork.images import load
from brushwork.settings import Settings, Temporal

SHARED = Path(__file__).resolve().parents[2] / "shared" / "images"
if not SHARED.exists():
    SHARED = Path("/work/shared/images")


def stylise(engine, frames, style, settings, hold: Temporal | None) -> tuple[list, float]:
    """The clip's frames stylised in order, held to each other with `hold` (None: one by
    one); with the mean seconds a frame."""
    history = temporal.History(hold.offsets if hold else (1,))
    out, start = [], time.perf_counter()
    for i, frame in enumerate(frames):
        previous = history.previous(i) if hold else []
        result = temporal.stylize_frame(
            engine, frame, [style], settings, previous=previous, temporal=hold or Temporal()
        ).image
        history.add(i, frame, result)
        out.append(result)
        print(f"  frame {i + 1}/{len(frames)}", file=sys.stderr, flush=True)
    return out, (time.perf_counter() - start) / len(frames)


def _t(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image[..., :3], np.float32)).permute(2, 0, 1)[None]


def other_flow() -> tuple[str, object]:
    """A flow method other than the DIS that stylised: DeepFlow (Weinzaepfel et al. 2013) where
    OpenCV's contrib modules are on the path (PYTHONPATH=<opencv-contrib-python-headless>),
    else Farneback's polynomial expansion."""
    import cv2

    if hasattr(cv2, "optflow"):
        return "DeepFlow", lambda a, b: cv2.optflow.createOptFlow_DeepFlow().calc(a, b, None)
    return "Farneback", lambda a, b: cv2.calcOpticalFlowFarneback(
        a, b, None, 0.5, 4, 15, 5, 5, 1.2, 0
    )


def _grey(x: np.ndarray) -> np.ndarray:
    return (x[..., :3] @ np.array([0.299, 0.587, 0.114]) * 255).round().astype(np.uint8)


def warping_error(outputs: list[np.ndarray], flows, masks) -> float:
    errors = []
    for t in range(1, len(outputs)):
        warped = flow.warp(_t(outputs[t - 1]), flows[t])
        m = masks[t]
        errors.append(float(((_t(outputs[t]) - warped).pow(2) * m).sum() / (3 * m.sum())))
    return float(np.mean(errors))


def other_flows(frames: list[np.ndarray], method) -> tuple[list, list]:
    """The flows t -> t-1 by `method` and their reliability (flow.reliability)."""

    def f(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(method(_grey(a), _grey(b))).permute(2, 0, 1)[None]

    flows, masks = [None], [None]
    for t in range(1, len(frames)):
        forward = f(frames[t], frames[t - 1])
        flows.append(forward)
        masks.append(flow.reliability(forward, f(frames[t - 1], frames[t])))
    return flows, masks


def strip(rows: list[list[np.ndarray]], crop: tuple[slice, slice] | None = None) -> Image.Image:
    cells = [[f[crop] if crop else f for f in row] for row in rows]
    sheet = np.concatenate([np.concatenate(row, axis=1) for row in cells], axis=0)
    return Image.fromarray((sheet.clip(0, 1) * 255).round().astype(np.uint8))


def animation(path: Path, pairs: list[np.ndarray], fps: float) -> None:
    frames = [Image.fromarray((f.clip(0, 1) * 255).round().astype(np.uint8)) for f in pairs]
    frames[0].save(
        path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0,
        quality=70, method=6,
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--photo", default="content/golden_gate.jpg")
    p.add_argument("--sprite", default=str(Path(__file__).parent / "images" / "chelsea.jpg"))
    p.add_argument("--style", default="style/starry_night.jpg")
    p.add_argument("--weights", default="100", help="temporal weights to measure, W,W,...")
    p.add_argument("--offsets", default="1,2,4")
    p.add_argument("--iterations", type=int, default=Settings().iterations)
    p.add_argument("--sheets", type=Path, default=Path("out/video"))
    p.add_argument("--results", type=Path, help="write the animated WebP here")
    p.add_argument("--report", type=Path, help="append the table here (markdown)")
    args = p.parse_args()

    clip = clips.make_clip(str(SHARED / args.photo), args.sprite, args.frames, args.side)
    style = load(SHARED / args.style)
    settings = Settings(size=args.side, iterations=args.iterations)
    offsets = tuple(int(k) for k in args.offsets.split(","))
    engine = Engine()
    cpu = platform.processor() or platform.machine()
    print(f"# {args.frames} frames at {args.side} px, {args.style}, on {engine.device} ({cpu})")

    runs = {"independent": stylise(engine, clip.frames, style, settings, None)}
    for w in (float(x) for x in args.weights.split(",")):
        hold = Temporal(weight=w, offsets=offsets)
        runs[f"temporal w={w:g}"] = stylise(engine, clip.frames, style, settings, hold)

    name, method = other_flow()
    other = other_flows(clip.frames, method)
    rows = [
        f"| frames | warping error, exact flow | {name} flow | content kept | style match "
        "| s/frame |",
        "|---|---|---|---|---|---|",
        f"| content | {warping_error(clip.frames, clip.flows, clip.visible):.2e} "
        f"| {warping_error(clip.frames, *other):.2e} | | | |",
    ]
    base = None
    for name, (outputs, seconds) in runs.items():
        scores = [measures.measure(o, c, style) for o, c in zip(outputs, clip.frames, strict=True)]
        kept = np.mean([s["content"] for s in scores])
        match = np.mean([s["style"] for s in scores])
        exact = warping_error(outputs, clip.flows, clip.visible)
        farne = warping_error(outputs, *other)
        base = base or (exact, farne, kept, match)
        ratio = "" if name == "independent" else (
            f" ({base[0] / exact:.1f}x / {base[1] / farne:.1f}x lower; content "
            f"{kept / base[2] - 1:+.1%}, style {match / base[3] - 1:+.1%})"
        )  # fmt: skip
        rows.append(
            f"| {name}{ratio} | {exact:.2e} | {farne:.2e} | {kept:.3f} | {match:.3f} "
            f"| {seconds:.1f} |"
        )
    table = "\n".join(rows)
    print(table)
    if args.report:
        with args.report.open("a") as f:
            f.write(f"\n{args.frames} frames at {args.side} px, {args.style} ({engine.device}, "
                    f"{cpu}; offsets {args.offsets}):\n\n{table}\n")  # fmt: skip

    args.sheets.mkdir(parents=True, exist_ok=True)
    independent, held = runs["independent"][0], list(runs.values())[-1][0]
    shown = [clip.frames[:8], independent[:8], held[:8]]
    strip(shown).save(args.sheets / f"strip-{args.side}.png")
    h, w = clip.frames[0].shape[:2]
    crop = (slice(h // 4, h // 4 + h // 3), slice(w // 3, w // 3 + w // 3))
    strip(shown, crop).resize((w // 3 * 8 * 2, h // 3 * 3 * 2), Image.Resampling.NEAREST).save(
        args.sheets / f"strip-{args.side}-crop.png"
    )
    if args.results:
        pairs = [np.concatenate([a, b], axis=1) for a, b in zip(independent, held, strict=True)]
        animation(args.results / f"video-{args.side}.webp", pairs, fps=8)


if __name__ == "__main__":
    main()
