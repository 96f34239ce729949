"""The pyramid a job works through and the resampling between its levels.

Sizes are (H, W). Images are float tensors (1, C, H, W) in [0, 1]; numpy images (H, W, C).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from brushwork.settings import Settings

MIN_SIDE = 32  # below this VGG's fifth block sees a single pixel; coarser scales are dropped
# VGG pools four times before conv5_1: a thinner image has no activations there. Thinner
# outputs (a 1x1 layer, a 1500x1 line) are optimised at this side and resized back.
MIN_WORK_SIDE = 16
STEP_RATIO = 2  # steps of a level over those of the next finer one
# The share of its steps a "light" finer level runs (Settings.finer_levels): at 512 px the
# harness kept both measures within 0.007 with 16 steps of the 33; with 12 within 0.009, at
# the edge (docs/quality.md, "Light finer levels").
LIGHT_SHARE = 0.5

Size = tuple[int, int]  # (H, W) of an image


def output_size(height: int, width: int, long_side: int) -> Size:
    """(H, W) with the long side scaled to `long_side` (0 keeps the size), aspect kept."""
    if long_side == 0:
        return height, width
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def scale_sizes(height: int, width: int, scales: int, min_side: int = MIN_SIDE) -> list[Size]:
    """Pyramid from coarse to fine, each level twice the previous, at most `scales` levels,
    none but the output itself with a short side under `min_side`; the finest level is at
    least MIN_WORK_SIDE on each side."""
    sizes = []
    for level in reversed(range(scales)):
        f = 2.0**-level
        h, w = max(1, round(height * f)), max(1, round(width * f))
        if min(h, w) >= min_side:
            sizes.append((h, w))
        elif level == 0:
            sizes.append((max(MIN_WORK_SIDE, h), max(MIN_WORK_SIDE, w)))
    return sizes


def pyramid(height: int, width: int, settings: Settings) -> list[Size]:
    """The levels Engine.stylize works for an output of (height, width) with these settings:
    what the memory estimate, the remote fitting and the benchmarks must walk too."""
    return scale_sizes(height, width, settings.scales, settings.min_scale)


def style_size(style: Size, level: Size, settings: Settings) -> Size:
    """(H, W) a style image of size `style` is resized to for a pyramid level of size `level`:
    long side `style_scale` times the level's, aspect kept, no side under MIN_WORK_SIDE."""
    long_side = max(MIN_SIDE, round(max(level) * settings.style_scale))
    h, w = output_size(*style, long_side)
    return max(MIN_WORK_SIDE, h), max(MIN_WORK_SIDE, w)


def split_iterations(total: int, levels: int) -> list[int]:
    """Steps per level, coarse to fine: each finer level gets 1/STEP_RATIO of the previous
    one's (the look is made at the coarsest level, finer ones add detail at 4x the cost a
    step); the coarsest takes the rounding."""
    shares = [STEP_RATIO**-k for k in range(levels)]
    steps = [round(total * w / sum(shares)) for w in shares]
    steps[0] = total - sum(steps[1:])
    return steps


def level_steps(settings: Settings, levels: int) -> list[int]:
    """The steps Engine.stylize runs at each of `levels` pyramid levels, coarse to fine: the
    iterations split (split_iterations), a "light" finer level (Settings.finer_levels) then
    keeping LIGHT_SHARE of its steps, at least one where it had any."""
    steps = split_iterations(settings.iterations, levels)
    if settings.finer_levels == "full":
        return steps
    return steps[:1] + [min(n, max(1, round(n * LIGHT_SHARE))) for n in steps[1:]]


def to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(device)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).detach().float().cpu().numpy()


def resize(x: torch.Tensor, size: Size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(
        0, 1
    )


def resized(image: np.ndarray, size: Size) -> np.ndarray:
    """Float (H, W, C) in [0, 1] at `size` (H, W), resampled as the engine resamples."""
    return to_numpy(resize(to_tensor(image, torch.device("cpu")), size))


def upscale(x: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The previous level's result at the content's size, with the content's detail that the
    smaller level could not hold added back (the difference between the content and its
    down-and-up-sampled self): the content term at the new level starts low, and the steps
    go to the style instead of redrawing edges the content already has."""
    size = tuple(content.shape[-2:])
    detail = content - resize(resize(content, tuple(x.shape[-2:])), size)
    return (resize(x, size) + detail).clamp(0, 1)
