"""Gatys style transfer: minimise J(G) = a*Jc(C, G) + b*Js(S, G) + c*TV(G) over the pixels of G,
coarse to fine, with progress reports and a cancel token checked every iteration."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from brushwork import color, images, losses, tiling
from brushwork import weights as weights_mod
from brushwork.errors import BrushworkError
from brushwork.lbfgs import LBFGS
from brushwork.settings import Settings
from brushwork.vgg import CHANNELS, VGGFeatures

MIN_SIDE = 32  # below this VGG's fifth block sees a single pixel; coarser scales are dropped
# VGG pools four times before conv5_1: a thinner image has no activations there. Thinner
# outputs (a 1x1 layer, a 1500x1 line) are optimised at this side and resized back.
MIN_WORK_SIDE = 16
PREVIEW_SIDE = 256
# Tiles share the whole image's statistics, so in a level's first round over the tiles each
# tile sees a rest not yet worked at this level and overdoes its strokes to make up for it; a
# second round lets the tiles correct each other. The level's steps are split between the
# rounds in these parts: the first round gets a third, so there is less to overdo (evened
# halves left Brad Pitt's first tile visibly busier; bench/README.md, "Tiles").
TILE_ROUND_PARTS = (1, 2)
MEMORY_FRACTION = 0.7  # of the memory a job may use, what its VGG passes get (tile budget)
PRECISIONS = ("auto", "fp32", "bf16")
# Style statistics kept across jobs, bounded by bytes (one style's moments at the default layers
# are 1.3 MB in fp32, its sliced marginals 15 MB), so a daemon fed ever new styles holds at
# most this much for them.
STYLE_CACHE_BYTES = 256 << 20
# The style loss's targets (blended moments, for W2 an eigendecomposition per layer) per pyramid
# level's styles, kept for jobs that repeat a style: each is about one style's moments in size.
TARGET_CACHE_ENTRIES = 16
LBFGS_HISTORY = 50
# L-BFGS steps in pixel units (pixels live in [0, 1]). torch's first step (an L1 length of 1
# over the whole image) moves no pixel by more than a few 1e-4 at 256 px, under the rounding
# of bf16 activations, so the first curvature pair was noise and the second step could land
# anywhere, 30 px values once (bench/README.md). The first step moves the pixel with the
# largest gradient by LBFGS_FIRST_STEP, and no step moves any pixel by more than LBFGS_MAX_STEP.
LBFGS_FIRST_STEP = 0.01
LBFGS_MAX_STEP = 0.1
# Whole-image buffers, per pixel (fp32 RGB is 12 B): what tiling cannot shrink. Input images
# as float and their split copies; per output pixel the level's content, x, the canvas and its
# owner map, resize temporaries and the result; per style pixel (resized) the style and a
# resize temporary. Measured against peak RSS by bench/reliability.py (memory rows).
INPUT_BYTES_PER_PIXEL = 32
OUTPUT_BYTES_PER_PIXEL = 100
STYLE_BYTES_PER_PIXEL = 24


class Cancelled(Exception):
    """The cancel token was set; raised between two iterations."""


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class Progress:
    iteration: int  # 1-based, over all scales
    total: int
    losses: dict[str, float]  # weighted terms: content, style, tv, total
    elapsed: float  # seconds since the start of the job
    level: int  # 1-based pyramid level (scale), coarse to fine
    levels: int
    step: int  # 1-based step within the level, over its tiles
    steps: int  # steps of the level
    fraction: float  # share of the job done, by time (see _Run.estimate); never decreases
    eta: float | None = None  # seconds left; None until a step has been timed
    preview: np.ndarray | None = None  # float32 (h, w, 3), long side at most preview_side


@dataclass(frozen=True)
class Result:
    image: np.ndarray  # float32 (H, W, 3|4) in [0, 1]; alpha passed through
    losses: dict[str, float]
    iterations: int
    elapsed: float
    settings: Settings
    device: str


def pick_device(name: str = "auto") -> torch.device:
    """auto -> cuda, then mps, then cpu; an explicit device that is missing is an error."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "cpu": True,
    }
    if name == "auto":
        return torch.device(next(d for d, ok in available.items() if ok))
    kind = name.split(":")[0]
    if kind not in available:
        raise BrushworkError(f"unknown device {name!r}: use auto, cuda, mps or cpu")
    if not available[kind]:
        raise BrushworkError(f"device {name!r} is not available on this machine")
    return torch.device(name)


def output_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) with the long side scaled to `long_side` (0 keeps the size), aspect kept."""
    if long_side == 0:
        return height, width
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def scale_sizes(
    height: int, width: int, scales: int, min_side: int = MIN_SIDE
) -> list[tuple[int, int]]:
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


def pyramid(height: int, width: int, settings: Settings) -> list[tuple[int, int]]:
    """The levels Engine.stylize works for an output of (height, width) with these settings:
    what the memory estimate, the remote fitting and the benchmarks must walk too."""
    return scale_sizes(height, width, settings.scales, settings.min_scale)


def style_size(
    style: tuple[int, int], level: tuple[int, int], settings: Settings
) -> tuple[int, int]:
    """(H, W) a style image of size `style` is resized to for a pyramid level of size `level`:
    long side `style_scale` times the level's, aspect kept, no side under MIN_WORK_SIDE."""
    long_side = max(MIN_SIDE, round(max(level) * settings.style_scale))
    h, w = output_size(*style, long_side)
    return max(MIN_WORK_SIDE, h), max(MIN_WORK_SIDE, w)


STEP_RATIO = 2  # steps of a level over those of the next finer one


def split_iterations(total: int, levels: int) -> list[int]:
    """Steps per level, coarse to fine: each finer level gets 1/STEP_RATIO of the previous
    one's (the look is made at the coarsest level, finer ones add detail at 4x the cost a
    step); the coarsest takes the rounding."""
    shares = [STEP_RATIO**-k for k in range(levels)]
    steps = [round(total * w / sum(shares)) for w in shares]
    steps[0] = total - sum(steps[1:])
    return steps


def _to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(device)


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).detach().float().cpu().numpy()


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(
        0, 1
    )


def resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float (H, W, C) in [0, 1] at `size` (H, W), resampled as the engine resamples."""
    return _to_numpy(_resize(_to_tensor(image, torch.device("cpu")), size))


def pick_precision(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype of the VGG passes.

    auto: bf16 on CUDA GPUs that have it and on CPUs with native bf16 (AMX, AVX512-BF16), where
    it runs VGG about twice as fast; elsewhere bf16 is emulated and slower, so fp32. The losses
    and the optimiser always work in fp32. fp16 is not offered: the normalised losses make the
    activation gradients far smaller than fp16 can hold.
    """
    if precision not in PRECISIONS:
        raise BrushworkError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def _cpu_has_native_bf16() -> bool:
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def bytes_per_pixel(
    grad: bool,
    dtype: torch.dtype = torch.float32,
    history: int = LBFGS_HISTORY,
    style_loss: str = "sw",
) -> int:
    """Peak memory per pixel of one VGG pass up to conv5_1: measured on CPU as the growth of
    peak RSS from 512 to 1024 px (bench/README.md). With `grad`: the activations kept for
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


Size = tuple[int, int]  # (H, W) of an image


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


class Engine:
    """Holds VGG16 on a device and a cache of style targets; stylize() runs one job. A `model`
    passed in becomes the engine's: it is moved to the device and compute dtype in place."""

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str = "auto",
        *,
        model: VGGFeatures | None = None,
        precision: str = "auto",
        memory_fraction: float = MEMORY_FRACTION,
        memory_limit: float = math.inf,
    ) -> None:
        """memory_limit: bytes one job may use at most (a daemon's per-job budget); the tile
        budget is memory_fraction of the smaller of it and the memory available."""
        self.device = pick_device(device)
        self.compute_dtype = pick_precision(self.device, precision)
        # channels_last lets cuDNN and oneDNN's bf16 kernels run fastest; oneDNN's fp32
        # convolutions are a little slower with it (bench/README.md).
        fast_layout = self.device.type == "cuda" or (
            self.device.type == "cpu" and self.compute_dtype == torch.bfloat16
        )
        layout = torch.channels_last if fast_layout else torch.contiguous_format
        # No cudnn.benchmark: every pyramid level and style size is a new shape to autotune,
        # and on an H200 a cold 512 px job took 7.8 s with it, 4.9 s without (same peak memory;
        # a probe, since deleted; bench/README.md).
        if model is None:
            model = VGGFeatures.from_weights(weights_mod.load(weights_mod.resolve_path(weights)))
        self.model = model.compute_in(self.device, self.compute_dtype, layout)
        self.memory_fraction = memory_fraction
        self.memory_limit = memory_limit
        self._style_cache: OrderedDict[tuple, dict[str, losses.Moments]] = OrderedDict()
        self._target_cache: OrderedDict[tuple, dict[str, object]] = OrderedDict()

    def features(self, image: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        """Activations of `layers` in the compute dtype; the losses take them to fp32 where
        they need it."""
        return self.model(_as_rgb(image.to(self.device)), layers)

    def tile_budget(self) -> float:
        """Bytes the VGG passes of one job may use now."""
        return self.memory_fraction * min(available_memory(self.device), self.memory_limit)

    def tile_side(self, settings: Settings, height: int, width: int, grad: bool = True) -> int:
        """Tile side for an image of height x width (tile_for, at this engine's budget)."""
        per_px = bytes_per_pixel(grad, self.compute_dtype, style_loss=settings.style_loss)
        return tile_for(settings, height, width, per_px, self.tile_budget())

    def estimate(
        self, content: Size, styles: Sequence[Size], settings: Settings, init: Size | None = None
    ) -> MemoryEstimate:
        """Peak memory of stylize() for images of these (H, W) sizes, on this engine now."""
        return estimate_memory(
            content, styles, settings, self.compute_dtype, self.tile_budget(), init
        )

    def stylize(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        settings: Settings,
        *,
        init_image: np.ndarray | None = None,
        progress: Callable[[Progress], None] | None = None,
        preview_every: int = 0,
        cancel: CancelToken | None = None,
        progress_every: int = 1,
        preview_side: int = PREVIEW_SIDE,
    ) -> Result:
        """progress_every > 1 reports only every N-th iteration (and the last, and those with
        a preview): on a GPU each report waits for the device, which costs about one
        iteration's worth of overlap. Previews are at most `preview_side` px (long side)."""
        start = time.perf_counter()
        if not styles:
            raise ValueError("at least one style image is needed")
        blend = settings.blend_weights(len(styles))
        if settings.init == "image" and init_image is None:
            raise ValueError("init 'image' needs an init image")
        rgb, alpha = images.split_alpha(images.to_float(content))
        style_rgbs = [images.split_alpha(images.to_float(s))[0] for s in styles]
        out_h, out_w = output_size(rgb.shape[0], rgb.shape[1], settings.size)

        content_full = _to_tensor(rgb, self.device)
        style_full = [_to_tensor(s, self.device) for s in style_rgbs]
        if settings.preserve_colors == "histogram":
            style_full = [color.match_histogram(s, content_full) for s in style_full]
        luminance = settings.preserve_colors == "luminance"
        chroma = _resize(content_full, (out_h, out_w)) if luminance else None

        generator = (
            torch.Generator().manual_seed(settings.seed) if settings.seed is not None else None
        )
        sizes = pyramid(out_h, out_w, settings)
        steps = split_iterations(settings.iterations, len(sizes))
        tiles = [self.tile_side(settings, h, w) for h, w in sizes]
        plans = [
            tiling.plan(h, w, t, tiling.overlap_for(t))
            for (h, w), t in zip(sizes, tiles, strict=True)
        ]
        run = _Run(
            self.features, settings, progress, max(1, progress_every), preview_every,
            preview_side, cancel, start, chroma,
            [(n, [t.area for t in p]) for n, p in zip(steps, plans, strict=True)],
        )  # fmt: skip
        x = None
        for level, ((h, w), n, tile, tile_plan) in enumerate(
            zip(sizes, steps, tiles, plans, strict=True)
        ):
            run.begin_level(level)
            content_s = _resize(content_full, (h, w))
            style_s = [_resize(s, style_size(s.shape[-2:], (h, w), settings)) for s in style_full]
            if luminance:
                y_c = color.luminance(content_s)
                style_s = [color.match_luminance(color.luminance(s), y_c) for s in style_s]
                content_s = y_c
            if x is None:
                x = self._init(content_s, settings, init_image, generator, luminance)
                if settings.init == "palette" and settings.preserve_colors == "none":
                    x = color.recolor(x, *color.palette(style_full, blend))
            else:
                x = _upscale(x, content_s)
            targets = self._style_targets(style_s, blend, settings)
            if len(tile_plan) == 1:
                x = run.optimize(x, content_s, targets, n)
            else:
                x = run.optimize_tiles(
                    x, content_s, targets, n, tile_plan, tiling.overlap_for(tile)
                )

        out = _to_numpy(run.to_rgb(_resize(x, (out_h, out_w))))
        if alpha is not None:
            a = _to_numpy(_resize(_to_tensor(alpha[..., None], self.device), (out_h, out_w)))
            out = np.concatenate([out, a], axis=2)
        return Result(
            image=out,
            losses=run.last_losses,
            iterations=run.iteration,
            elapsed=time.perf_counter() - start,
            settings=settings,
            device=str(self.device),
        )

    def _init(
        self,
        content: torch.Tensor,
        settings: Settings,
        init_image: np.ndarray | None,
        generator: torch.Generator | None,
        luminance: bool,
    ) -> torch.Tensor:
        if settings.init in ("palette", "content"):
            return content.clone()
        if settings.init == "noise":
            noise = torch.rand(content.shape, generator=generator)
            return noise.to(content)
        rgb, _ = images.split_alpha(images.to_float(init_image))
        x = _resize(_to_tensor(rgb, self.device), tuple(content.shape[-2:]))
        return color.luminance(x) if luminance else x

    def _style_targets(
        self, styles: list[torch.Tensor], blend: tuple[float, ...], settings: Settings
    ) -> dict[str, object]:
        """The style loss's targets per style layer, from what it needs of each style image
        (the moments; for the sliced loss also the marginals) blended over the images."""
        keys = tuple(self._style_key(style, settings) for style in styles)
        cache_key = (keys, blend, settings.style_loss)
        if cache_key in self._target_cache:
            self._target_cache.move_to_end(cache_key)
            return self._target_cache[cache_key]
        loss = losses.STYLE_LOSSES[settings.style_loss]
        parts = [self._described(s, k, settings) for s, k in zip(styles, keys, strict=True)]
        targets = {}
        for name in settings.style_layers:
            blended = loss.blend([(d[name], w) for d, w in zip(parts, blend, strict=True)])
            targets[name] = loss.target(blended)
        self._target_cache[cache_key] = targets
        while len(self._target_cache) > TARGET_CACHE_ENTRIES:
            self._target_cache.popitem(last=False)
        return targets

    def _style_key(self, style: torch.Tensor, settings: Settings) -> tuple:
        digest = hashlib.blake2b(style.cpu().numpy().tobytes(), digest_size=16).digest()
        describes = losses.STYLE_LOSSES[settings.style_loss].describes
        return (digest, tuple(style.shape), settings.style_layers, self.compute_dtype, describes)

    def _described(self, style: torch.Tensor, key: tuple, settings: Settings) -> dict[str, object]:
        """What the style loss needs of one style image, per style layer (cached)."""
        if key in self._style_cache:
            self._style_cache.move_to_end(key)
            return self._style_cache[key]
        loss = losses.STYLE_LOSSES[settings.style_loss]
        layers = settings.style_layers
        h, w = style.shape[-2:]
        tile = self.tile_side(settings.replace(tile=0), h, w, grad=False)
        if tile >= max(h, w):
            with torch.no_grad():
                stats = {n: loss.describe(a) for n, a in self.features(style, set(layers)).items()}
        else:  # a style image too large for one pass: described tile by tile
            stats = tiling.tiled_described(self.features, style, layers, tile, loss)
        self._style_cache[key] = stats
        while self.style_cache_bytes() > STYLE_CACHE_BYTES and len(self._style_cache) > 1:
            self._style_cache.popitem(last=False)
        return stats

    def style_cache_size(self) -> int:
        return len(self._style_cache)

    def style_cache_bytes(self) -> int:
        return sum(m.nbytes for stats in self._style_cache.values() for m in stats.values())


def round_steps(steps: int) -> list[int]:
    """A tiled level's steps per round over its tiles, split as TILE_ROUND_PARTS (rounds
    left with no step dropped)."""
    total = sum(TILE_ROUND_PARTS)
    ends = [steps * sum(TILE_ROUND_PARTS[:k]) // total for k in range(len(TILE_ROUND_PARTS) + 1)]
    return [b - a for a, b in itertools.pairwise(ends) if b > a]


def _upscale(x: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The previous level's result at the content's size, with the content's detail that the
    smaller level could not hold added back (the difference between the content and its
    down-and-up-sampled self): the content term at the new level starts low, and the steps
    go to the style instead of redrawing edges the content already has."""
    size = tuple(content.shape[-2:])
    detail = content - _resize(_resize(content, tuple(x.shape[-2:])), size)
    return (_resize(x, size) + detail).clamp(0, 1)


def _as_rgb(x: torch.Tensor) -> torch.Tensor:
    """VGG sees a luminance image as grey RGB."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


Features = Callable[[torch.Tensor, set[str]], dict[str, torch.Tensor]]


class _Pixels:
    """What the optimiser moves (`leaf`) and the image it stands for: here the pixels
    themselves, kept in [0, 1]."""

    def __init__(self, x: torch.Tensor) -> None:
        self.leaf = x.detach().float().contiguous().clone().requires_grad_(True)

    def pixels(self) -> torch.Tensor:
        return self.leaf

    def clamp_(self) -> None:
        self.leaf.clamp_(0, 1)


@dataclass(frozen=True)
class _Part:
    """A tile as a part of its image: per layer (content and style), the positions of its
    window it owns (flat indices), and per style layer the rest of the image (losses.Rest).
    `share`: the owned part of the content layer's positions of the whole image."""

    positions: dict[str, torch.Tensor]
    rests: dict[str, object]  # what the style loss's rest() makes
    share: float


def _positions(a: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The activations (1, C, h, w) at flat positions `index`, as a (1, C, 1, n) map."""
    return a.flatten(2).index_select(2, index)[:, :, None]


class _Scaled:
    """For a tile: the optimiser moves v (from 0), the image is x = x0 + free * v, so a step
    moves each pixel in proportion to its scale in `free`, and not at all where that is 0. A
    change of variables rather than a gradient scaled pixel by pixel: that is the gradient of
    no function, and L-BFGS's curvature pairs would then mix two problems. The bounds on v
    keep x in [0, 1]."""

    def __init__(self, x: torch.Tensor, free: torch.Tensor) -> None:
        self.start = x.detach().float().contiguous().clone()
        self.free = free.to(self.start)
        self.leaf = torch.zeros_like(self.start).requires_grad_(True)
        inverse = torch.where(self.free > 0, 1 / self.free, 0).expand_as(self.start)
        self.low, self.high = -self.start * inverse, (1 - self.start) * inverse

    def pixels(self) -> torch.Tensor:
        return torch.addcmul(self.start, self.free, self.leaf)

    def clamp_(self) -> None:
        torch.clamp(self.leaf, self.low, self.high, out=self.leaf)


class _Run:
    """State of one stylize() call across scales and tiles: iterations, progress, cancel."""

    def __init__(
        self,
        features: Features,
        settings: Settings,
        progress: Callable[[Progress], None] | None,
        progress_every: int,
        preview_every: int,
        preview_side: int,
        cancel: CancelToken | None,
        start: float,
        chroma: torch.Tensor | None,
        levels: list[tuple[int, list[int]]],
    ) -> None:
        """`levels`: per pyramid level, its steps per tile and its tiles' areas in px."""
        self.features = features
        self.settings = settings
        self.progress = progress
        self.progress_every = progress_every
        self.preview_every = preview_every
        self.preview_side = preview_side
        self.cancel = cancel
        self.start = start
        self.chroma = chroma  # content at output size, for luminance-only transfer
        self.level_steps = [n * len(areas) for n, areas in levels]
        self.total = sum(self.level_steps)
        # Work is counted in pixels: a step computes the area it optimises.
        self.total_cost = sum(n * sum(areas) for n, areas in levels)
        self.cost_done = 0
        self.step_pixels = 0  # px of the image (or tile) being optimised
        self.iteration = 0
        self.level = 0  # 0-based index into level_steps
        self.step = 0  # steps done in the current level
        self.last_losses: dict[str, float] = {}
        self.seconds_per_px: float | None = None  # measured in the latest timed level
        self.mark: tuple[float, int] | None = None  # (elapsed, cost_done): this level's 1st report
        self.fraction = 0.0

    def begin_level(self, level: int) -> None:
        self.level, self.step, self.mark = level, 0, None

    def estimate(self, elapsed: float) -> tuple[float, float | None]:
        """(fraction done, seconds left) at a report.

        Seconds per pixel are timed between this level's reports and applied to the pixels
        left; levels not reached yet borrow the latest timed rate. Pixels alone are not time:
        a small level's steps are dominated by per-step overhead (on a GPU nearly all of it),
        so a coarse level takes far more than its share of pixels. The estimate is exact for
        the level under way and corrects itself at each new level; the fraction is elapsed
        over elapsed + left, and never moves back.
        """
        if self.mark is None:
            self.mark = (elapsed, self.cost_done)
        elif self.cost_done > self.mark[1]:
            self.seconds_per_px = (elapsed - self.mark[0]) / (self.cost_done - self.mark[1])
        if self.iteration == self.total:
            self.fraction = 1.0
            return 1.0, 0.0
        if self.seconds_per_px is None:  # nothing timed yet: pixels are the best guess
            self.fraction = max(self.fraction, self.cost_done / self.total_cost)
            return self.fraction, None
        left = self.seconds_per_px * (self.total_cost - self.cost_done)
        self.fraction = max(self.fraction, elapsed / (elapsed + left) if elapsed > 0 else 0.0)
        return self.fraction, left

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        if self.chroma is None:
            return x
        return color.with_chroma(x, _resize(self.chroma, tuple(x.shape[-2:])).to(x))

    def style_weights(self, targets: dict[str, object]) -> dict[str, float]:
        """b lambda_l / Js[l](S, 0) per style layer (each layer's relative error), times
        style_gain for every level above the coarsest."""
        s = self.settings
        scale = losses.STYLE_LOSSES[s.style_loss].scale
        gain = s.style_gain**self.level
        return {
            name: gain * s.style_weight * w * scale(targets[name])
            for name, w in zip(s.style_layers, s.layer_weights(), strict=True)
        }

    def optimize(
        self,
        x: torch.Tensor,
        content: torch.Tensor,
        targets: dict[str, object],
        steps: int,
        preview: Callable[[torch.Tensor], torch.Tensor] | None = None,
        free: torch.Tensor | None = None,
        content_density: float | None = None,
        part: _Part | None = None,
    ) -> torch.Tensor:
        """`steps` optimiser steps on x; `preview` maps x to the image a preview shows;
        `free` (tiles) scales each pixel's steps, 0 holding it fixed (_Scaled);
        `content_density` normalises the content term as for the whole image (tiles); and
        `part` (tiles): both terms on the positions x owns, as parts of the whole image's."""
        s = self.settings
        with torch.no_grad():
            content_target = self.features(content, {s.content_layer})[s.content_layer].float()

        def owned(name: str, a: torch.Tensor) -> torch.Tensor:
            return a if part is None else _positions(a, part.positions[name])

        content_target = owned(s.content_layer, content_target)
        content_weight = s.content_weight * losses.content_scale(content_target, content_density)
        if part is not None:  # the whole image's relative error, of which this is a share
            content_weight *= part.share
        layer_weights = self.style_weights(targets)
        layers = {s.content_layer, *s.style_layers}
        v = _Scaled(x, free) if free is not None else _Pixels(x)
        # L-BFGS: one function evaluation per step (no line search), so cancel and progress run
        # every iteration; the curvature history lives for one scale (or tile).
        opt = (
            LBFGS(v.leaf, LBFGS_HISTORY, first_step=LBFGS_FIRST_STEP, max_step=LBFGS_MAX_STEP)
            if s.optimizer == "lbfgs"
            else None
        )
        adam = torch.optim.Adam([v.leaf], lr=s.learning_rate) if opt is None else None

        def iterate() -> dict[str, torch.Tensor]:
            """One evaluation of J and one optimiser step: tensor ops only, no host sync."""
            v.leaf.grad = None
            x = v.pixels()
            acts = self.features(x, layers)
            acts = {n: owned(n, a) for n, a in acts.items()}
            terms = {
                "content": losses.content_loss(
                    content_target, acts[s.content_layer], content_weight
                ),
                "style": losses.style_loss(
                    s.style_loss, targets, acts, layer_weights, part and part.rests
                ),
                "tv": s.tv_weight * losses.tv_loss(x),
            }
            terms["total"] = terms["content"] + terms["style"] + terms["tv"]
            terms["total"].backward()
            with torch.no_grad():
                if opt is not None:
                    opt.step(v.leaf.grad)
                else:
                    adam.step()
                v.clamp_()
            return terms

        self.step_pixels = x.shape[-2] * x.shape[-1]
        shown = v.pixels if preview is None else lambda: preview(v.pixels())
        self.run_steps(iterate, steps, shown)
        return v.pixels().detach()

    def run_steps(
        self,
        iterate: Callable[[], dict[str, torch.Tensor]],
        steps: int,
        shown: Callable[[], torch.Tensor],
    ) -> None:
        """Call iterate() `steps` times (each computes step_pixels px); between calls check
        the cancel token and report progress with the image shown() returns."""
        terms = None
        for _ in range(steps):
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled
            terms = iterate()
            self.iteration += 1
            self.step += 1
            self.cost_done += self.step_pixels
            if self.progress is not None and (
                self.iteration % self.progress_every == 0
                or self.iteration == self.total
                or self._preview_due()
            ):  # no host sync unless someone reads the numbers
                self._check(terms)
                self._report(shown())
        if terms is not None:
            self._check(terms)  # one sync per scale or tile

    def optimize_tiles(
        self,
        x: torch.Tensor,
        content: torch.Tensor,
        targets: dict[str, object],
        steps: int,
        tiles: list[tiling.Tile],
        overlap: int,
    ) -> torch.Tensor:
        """`steps` steps per tile, in order, each from the pixels the tiles before it left and
        with their finished pixels held (tiling.Canvas), its style term on the whole image's
        statistics (_part), in rounds over the tiles that share the steps (round_steps); the
        level's losses are the last round's, the tiles' weighted by area."""
        canvas = tiling.Canvas(x, tiles, ramp=overlap)
        content = content.cpu()
        density = self._content_density(content, tiles, x.device)
        side = max(max(t.y1 - t.y0, t.x1 - t.x0) for t in tiles)
        layers = self.settings.style_layers
        loss = losses.STYLE_LOSSES[self.settings.style_loss]
        image = tiling.ImageSums(self.features, canvas.pixels, layers, side, loss, device=x.device)
        area = sum(t.area for t in tiles)
        for n in round_steps(steps):
            weighted: dict[str, float] = {}
            for i, tile in enumerate(tiles):
                window = canvas.read(tile).to(x.device)
                out = self.optimize(
                    window, tile.of(content).to(x.device), targets, n,
                    preview=lambda t, tile=tile, i=i: canvas.pasted(tile, i, t),
                    free=canvas.free(tile, i).to(x.device), content_density=density,
                    part=self._part(canvas, tile, i, window, image.total()),
                )  # fmt: skip
                canvas.add(tile, i, out)
                image.update(canvas.pixels, tile)
                for k, v in self.last_losses.items():
                    weighted[k] = weighted.get(k, 0.0) + v * tile.area
            self.last_losses = {k: v / area for k, v in weighted.items()}
        return canvas.image().to(x.device)

    def _part(
        self,
        canvas: tiling.Canvas,
        tile: tiling.Tile,
        index: int,
        window: torch.Tensor,
        whole: dict[str, tuple[object, int]],
    ) -> _Part | None:
        """The tile as a part of the image as the canvas stands (_Part): the `whole` image as
        described (tiling.ImageSums) less the owned positions. None where the tile owns no
        position at some layer (tiny tiles): then its window stands for the whole image, as
        before."""
        s = self.settings
        loss = losses.STYLE_LOSSES[s.style_loss]
        layers = tuple(dict.fromkeys((*whole, s.content_layer)))
        owned = tile.of(canvas.owner) == index
        with torch.no_grad():
            acts = self.features(window, set(layers))
        positions, rests = {}, {}
        for name in layers:
            i = tiling.owned_positions(owned, name, tuple(acts[name].shape[-2:])).to(window.device)
            if not len(i):
                return None
            positions[name] = i
            if name in whole:
                rests[name] = loss.rest(*whole[name], _positions(acts[name], i))
        c = s.content_layer
        share = len(positions[c]) / tiling.layer_positions(c, *canvas.pixels.shape[-2:])
        return _Part(positions, rests, share=share)

    def _content_density(
        self, content: torch.Tensor, tiles: list[tiling.Tile], device: torch.device
    ) -> float:
        """Energy of the content target per activation element over the whole level. Each
        tile normalising by its own energy would give a tile of sky (little energy) a far
        larger content weight than a tile of houses: less style there, and a visible step
        in texture where the two meet. One forward pass per tile, about a quarter of one
        iteration."""
        layer = self.settings.content_layer
        energy = elements = 0.0
        for tile in tiles:
            with torch.no_grad():
                a = self.features(tile.of(content).to(device), {layer})[layer]
            energy += losses.content_energy(a)
            elements += a.numel()
        return energy / elements

    def _check(self, terms: dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.detach().float() for v in terms.values()]).tolist()  # one sync
        self.last_losses = dict(zip(terms, values, strict=True))
        if not all(math.isfinite(v) for v in values):
            raise BrushworkError(
                "the optimisation diverged (loss is not finite); lower the weights"
            )

    def _preview_due(self) -> bool:
        return bool(self.preview_every) and (
            self.iteration % self.preview_every == 0 or self.iteration == self.total
        )

    def _report(self, x: torch.Tensor) -> None:
        preview = None
        if self._preview_due():
            side = min(self.preview_side, max(x.shape[-2:]))
            small = _resize(x.detach(), output_size(*x.shape[-2:], side))
            preview = _to_numpy(self.to_rgb(small))
        elapsed = time.perf_counter() - self.start
        fraction, eta = self.estimate(elapsed)
        self.progress(
            Progress(
                iteration=self.iteration,
                total=self.total,
                losses=self.last_losses,
                elapsed=elapsed,
                level=self.level + 1,
                levels=len(self.level_steps),
                step=self.step,
                steps=self.level_steps[self.level],
                fraction=fraction,
                eta=eta,
                preview=preview,
            )
        )
