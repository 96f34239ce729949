"""What a job holds in memory, and the tile side that keeps its VGG passes within a budget.

The daemon checks jobs against estimate_memory before accepting them; the engine tiles a level
when its passes would not fit (tile_for). The per-pixel figures were measured against peak RSS
(bench/reliability.py, bench/tiled_memory.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from brushwork import losses, tiling
from brushwork.lbfgs import HISTORY
from brushwork.scales import Size, output_size, pyramid, style_size
from brushwork.settings import Settings
from brushwork.vgg import CHANNELS

MEMORY_FRACTION = 0.7  # of the memory a job may use, what its VGG passes get (tile budget)
# Whole-image buffers, per pixel (fp32 RGB is 12 B): what tiling cannot shrink. Input images
# as float and their split copies; per output pixel the level's content, x, the canvas and its
# owner map, resize temporaries and the result; per style pixel (resized) the style and a
# resize temporary. Measured against peak RSS by bench/reliability.py (memory rows).
INPUT_BYTES_PER_PIXEL = 32
OUTPUT_BYTES_PER_PIXEL = 100
STYLE_BYTES_PER_PIXEL = 24


def bytes_per_pixel(
    grad: bool,
    dtype: torch.dtype = torch.float32,
    history: int = HISTORY,
    style_loss: str = "sw",
) -> int:
    """Peak memory per pixel of one VGG pass up to conv5_1: measured on CPU as the growth of
    peak RSS from 512 to 1024 px (docs/performance.md). With `grad`: the activations kept for
    the backward pass (in `dtype`), the L-BFGS history (2 x history fp32 RGB images) and, for
    the sliced loss, the projections, their order and residuals (1.1 KB, measured alike)."""
    if not grad:
        return 1200  # forward only: a few live conv1 activations (64 channels) and a copy
    activations = 1500 if dtype == torch.bfloat16 else 2100
    sliced = 1100 if style_loss == "sw" else 0
    return activations + 2 * history * 3 * 4 + sliced


def described_bytes(settings: Settings, side: int) -> int:
    """What a tiled level keeps of its image per core of `side` px (tiling.ImageSums): each
    style layer's moments, or under the sliced loss its marginals (fp32)."""
    total = 0
    for name in settings.style_layers:
        channels = CHANNELS[name]
        positions = tiling.layer_positions(name, side, side)
        kept = min(losses.QUANTILES, positions) if settings.style_loss == "sw" else channels + 1
        total += 4 * channels * kept
    return total


def tile_for(settings: Settings, height: int, width: int, per_px: int, budget: float) -> int:
    """Tile side for an image of height x width: its long side when it fits in `budget` bytes
    at `per_px` (no tiling), else settings.tile, else the largest multiple of 64 px that fits."""
    if settings.tile:
        return min(settings.tile, max(height, width))
    if height * width * per_px <= budget:
        return max(height, width)
    side = int(math.sqrt(budget / per_px)) // 64 * 64
    return max(64, side)


@dataclass(frozen=True)
class MemoryEstimate:
    """What a job will hold at its peak, in bytes: `fixed` whole-image buffers (they grow with
    the images; tiling cannot shrink them) plus the largest VGG pass's `working` set (a tile's
    when the job is tiled)."""

    output: tuple[int, int]  # (H, W) of the result
    styles: tuple[tuple[int, int], ...]  # (H, W) of each style at the finest level
    tile: int  # tile side at the finest level; its long side when not tiled
    fixed: int
    working: int

    @property
    def total(self) -> int:
        return self.fixed + self.working


def estimate_memory(
    content: Size,
    styles: Sequence[Size],
    settings: Settings,
    dtype: torch.dtype,
    budget: float,
    init: Size | None = None,
) -> MemoryEstimate:
    """Peak memory of Engine.stylize for images of these (H, W) sizes, with the engine's own
    pyramid, style sizes and tiles (`budget`: the tile budget in bytes)."""
    out = output_size(*content, settings.size)
    inputs = content[0] * content[1] + sum(h * w for h, w in styles)
    inputs += init[0] * init[1] if init else 0
    fixed = working = 0
    grad = bytes_per_pixel(True, dtype, style_loss=settings.style_loss)
    no_grad = bytes_per_pixel(False, dtype)
    style_sizes: list[tuple[int, int]] = []
    tile = max(out)
    for h, w in pyramid(*out, settings):
        style_sizes = [style_size(s, (h, w), settings) for s in styles]
        tile = tile_for(settings, h, w, grad, budget)
        passes = [min(h, tile) * min(w, tile) * grad]
        for sh, sw in style_sizes:
            t = tile_for(settings.replace(tile=0), sh, sw, no_grad, budget)
            passes.append(min(sh, t) * min(sw, t) * no_grad)
        working = max(working, *passes)
        styles_px = sum(sh * sw for sh, sw in style_sizes)
        cores = len(tiling.cores(h, w, tile)) if tile < max(h, w) else 0
        described = cores * described_bytes(settings, tile)
        fixed = max(
            fixed, OUTPUT_BYTES_PER_PIXEL * h * w + STYLE_BYTES_PER_PIXEL * styles_px + described
        )
    fixed += INPUT_BYTES_PER_PIXEL * inputs
    return MemoryEstimate(out, tuple(style_sizes), tile, fixed, working)


def device_memory(device: torch.device) -> tuple[int, int | None]:
    """(total, free) bytes of the device's memory; free is None where it is unknown."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return total, free
    if device.type == "mps":
        return torch.mps.recommended_max_memory(), None
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):  # macOS has no SC_AVPHYS_PAGES
        free = None
    return total, free


def available_memory(device: torch.device) -> int:
    """Bytes a job may use on `device`: free GPU memory, or the RAM the OS can still give."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux: what the OS reports, else the total
        total, free = device_memory(device)
        return total if free is None else free
