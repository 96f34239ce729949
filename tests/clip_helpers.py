"""A tiny synthetic clip with a known motion, and its warping error, for the clip tests over
a daemon (test_clip_daemon.py, test_ray.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from brushwork.settings import Settings

PAINTINGS = Path(__file__).resolve().parents[1] / "plugin" / "brushwork" / "styles"
PAN = 2  # px a frame: the content moves right by this much


def panned_clip(frames: int = 8, size: int = 64, pan: int = PAN) -> list[np.ndarray]:
    """`frames` RGB u8 frames of `size` px: a window over a painting (bundled with the
    plug-in, public domain) moving left by `pan` px a frame, so the picture moves right."""
    with Image.open(PAINTINGS / "the-great-wave.jpg") as painting:
        wide = np.asarray(
            painting.convert("RGB").resize((size + pan * frames, size), Image.LANCZOS)
        )
    return [wide[:, pan * (frames - t) : pan * (frames - t) + size].copy() for t in range(frames)]


def style() -> np.ndarray:
    with Image.open(PAINTINGS / "the-starry-night.jpg") as painting:
        return np.asarray(painting.convert("RGB").resize((64, 52), Image.LANCZOS))


def reader(clip: list[np.ndarray]):
    """A clip's frames from an index on (clip.Clip's `frames`)."""

    def frames(start: int) -> Iterator[np.ndarray]:
        yield from clip[start:]

    return frames


def warping_error(frame: np.ndarray, before: np.ndarray, pan: int = PAN) -> float:
    """Mean squared difference between a frame and the one before it moved by the exact
    flow (`pan` px right), over the pixels both saw, a margin off the borders."""
    m = 4
    return float(((frame[m:-m, m + pan : -m] - before[m:-m, m : -m - pan]) ** 2).mean())


def clip_error(frames: list[np.ndarray], pan: int = PAN) -> float:
    """The mean warping error over a clip's consecutive frames (float, [0, 1] pixels)."""
    return float(np.mean([warping_error(b, a, pan) for a, b in itertools.pairwise(frames)]))


# 64 px, one scale, 12 steps: about half a second a frame on 2 busy cores. A fixed seed: the
# independent frames' flicker is the method's, not their noise's.
CLIP = Settings(size=64, iterations=12, scales=1, seed=0)
