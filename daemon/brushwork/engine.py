"""Gatys style transfer: minimise J(G) = a*Jc(C, G) + b*Js(S, G) + c*TV(G) over the pixels of G,
coarse to fine, with progress reports and a cancel token checked every iteration.

The Engine holds VGG16 on a device and the style statistics it has computed; stylize() walks
the pyramid (scales.py), tiles a level where its passes would not fit (budget.py) and runs
each level's steps (optimize.py).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from brushwork import color, images, losses, tiling
from brushwork import weights as weights_mod
from brushwork.budget import (
    MEMORY_FRACTION,
    MemoryEstimate,
    available_memory,
    bytes_per_pixel,
    estimate_memory,
    tile_for,
)
from brushwork.errors import BrushworkError
from brushwork.flow import Guide
from brushwork.optimize import Cancelled, CancelToken, Progress, Run
from brushwork.scales import (
    Size,
    level_steps,
    output_size,
    pyramid,
    resize,
    style_size,
    to_numpy,
    to_tensor,
    upscale,
)
from brushwork.settings import Settings
from brushwork.vgg import VGGFeatures

__all__ = ["CancelToken", "Cancelled", "Engine", "Progress", "Result", "pick_device"]

PREVIEW_SIDE = 256
# Std of a seeded job's start jitter, in pixel values: a seed moves where the strokes begin
# and the harness measures stay within the seeds' own spread (docs/quality.md, "Seeds").
START_JITTER = 0.02
PRECISIONS = ("auto", "fp32", "bf16")
# Style statistics kept across jobs, bounded by bytes (one style's moments at the default layers
# are 1.3 MB in fp32, its sliced marginals 15 MB), so a daemon fed ever new styles holds at
# most this much for them.
STYLE_CACHE_BYTES = 256 << 20
# The style loss's targets (blended moments, for W2 an eigendecomposition per layer) per pyramid
# level's styles, kept for jobs that repeat a style: each is about one style's moments in size.
TARGET_CACHE_ENTRIES = 16


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
        # channels_last lets cuDNN and oneDNN's kernels run fastest: bf16's, and fp32's on
        # both AMD EPYCs measured (a pass 4-14 % faster; docs/performance.md).
        layout = (
            torch.channels_last if self.device.type in ("cuda", "cpu") else torch.contiguous_format
        )
        # No cudnn.benchmark: every pyramid level and style size is a new shape to autotune,
        # and on an H200 a cold 512 px job took 7.8 s with it, 4.9 s without (same peak memory;
        # a probe, since deleted; docs/performance.md).
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
        guide: Guide | None = None,
    ) -> Result:
        """progress_every > 1 reports only every N-th iteration (and the last, and those with
        a preview): on a GPU each report waits for the device, which costs about one
        iteration's worth of overlap. Previews are at most `preview_side` px (long side).
        `guide` (a video frame, temporal.stylize_frame): each level starts from its target
        where its mask holds the pixels, and adds the temporal term toward it."""
        start = time.perf_counter()
        if not styles:
            raise ValueError("at least one style image is needed")
        blend = settings.blend_weights(len(styles))
        if settings.init == "image" and init_image is None:
            raise ValueError("init 'image' needs an init image")
        rgb, alpha = images.split_alpha(images.to_float(content))
        style_rgbs = [images.split_alpha(images.to_float(s))[0] for s in styles]
        out_h, out_w = output_size(rgb.shape[0], rgb.shape[1], settings.size)

        content_full = to_tensor(rgb, self.device)
        style_full = [to_tensor(s, self.device) for s in style_rgbs]
        if settings.preserve_colors == "histogram":
            style_full = [color.match_histogram(s, content_full) for s in style_full]
        luminance = settings.preserve_colors == "luminance"
        chroma = resize(content_full, (out_h, out_w)) if luminance else None

        generator = (
            torch.Generator().manual_seed(settings.seed) if settings.seed is not None else None
        )
        sizes = pyramid(out_h, out_w, settings)
        steps = level_steps(settings, len(sizes))
        tiles = [self.tile_side(settings, h, w) for h, w in sizes]
        plans = [
            tiling.plan(h, w, t, tiling.overlap_for(t))
            for (h, w), t in zip(sizes, tiles, strict=True)
        ]
        run = Run(
            self.features, settings, progress, max(1, progress_every), preview_every,
            preview_side, cancel, start, chroma,
            [(n, [t.area for t in p]) for n, p in zip(steps, plans, strict=True)],
        )  # fmt: skip
        x = None
        for level, ((h, w), n, tile, tile_plan) in enumerate(
            zip(sizes, steps, tiles, plans, strict=True)
        ):
            at = settings.at_level(level)
            run.begin_level(level, at)
            content_s = resize(content_full, (h, w))
            style_s = [resize(s, style_size(s.shape[-2:], (h, w), settings)) for s in style_full]
            if luminance:
                y_c = color.luminance(content_s)
                style_s = [color.match_luminance(color.luminance(s), y_c) for s in style_s]
                content_s = y_c
            if x is None:
                x = self._init(content_s, settings, init_image, generator, luminance)
                if settings.init == "palette" and settings.preserve_colors == "none":
                    x = color.recolor(x, *color.palette(style_full, blend))
                if generator is not None:
                    x = _jittered(x, generator)
            else:
                x = upscale(x, content_s)
            if guide is not None:
                target, mask = (t.to(x) for t in guide.at((h, w)))
                target = color.luminance(target) if luminance else target
                x = torch.lerp(x, target, mask)
                run.held = (target, mask, guide.weight)
            targets = self._style_targets(style_s, blend, at)
            if len(tile_plan) == 1:
                x = run.optimize(x, content_s, targets, n)
            else:
                x = run.optimize_tiles(
                    x, content_s, targets, n, tile_plan, tiling.overlap_for(tile)
                )

        out = to_numpy(run.to_rgb(resize(x, (out_h, out_w))))
        if alpha is not None:
            a = to_numpy(resize(to_tensor(alpha[..., None], self.device), (out_h, out_w)))
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
        x = resize(to_tensor(rgb, self.device), tuple(content.shape[-2:]))
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
        loss = losses.named(settings.style_loss, settings.seed)
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
        describes = losses.named(settings.style_loss, settings.seed).describes
        return (digest, tuple(style.shape), settings.style_layers, self.compute_dtype, describes)

    def _described(self, style: torch.Tensor, key: tuple, settings: Settings) -> dict[str, object]:
        """What the style loss needs of one style image, per style layer (cached)."""
        if key in self._style_cache:
            self._style_cache.move_to_end(key)
            return self._style_cache[key]
        loss = losses.named(settings.style_loss, settings.seed)
        layers = settings.style_layers
        h, w = style.shape[-2:]
        tile = self.tile_side(settings.replace(tile=0), h, w, grad=False)
        if tile >= max(h, w):
            with torch.no_grad():
                stats = {n: loss.describe(a) for n, a in self.features(style, set(layers)).items()}
        else:  # a style image too large for one pass: described tile by tile
            stats = tiling.ImageSums(self.features, style, layers, tile, loss).described()
        self._style_cache[key] = stats
        while self.style_cache_bytes() > STYLE_CACHE_BYTES and len(self._style_cache) > 1:
            self._style_cache.popitem(last=False)
        return stats

    def style_cache_size(self) -> int:
        return len(self._style_cache)

    def style_cache_bytes(self) -> int:
        return sum(m.nbytes for stats in self._style_cache.values() for m in stats.values())


def _jittered(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The start plus a little of the seed's noise (START_JITTER of the pixel range): with
    the seed's directions (losses.directions), what makes two seeds two pictures."""
    noise = torch.randn(x.shape, generator=generator).to(x)
    return (x + START_JITTER * noise).clamp_(0, 1)


def _as_rgb(x: torch.Tensor) -> torch.Tensor:
    """VGG sees a luminance image as grey RGB."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
