"""Gatys style transfer: minimise J(G) = a*Jc(C, G) + b*Js(S, G) + c*TV(G) over the pixels of G,
coarse to fine, with progress reports and a cancel token checked every iteration."""

from __future__ import annotations

import hashlib
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

from brushwork import color, images, losses
from brushwork import weights as weights_mod
from brushwork.errors import BrushworkError
from brushwork.settings import Settings
from brushwork.vgg import VGGFeatures

MIN_SIDE = 32  # below this VGG's fifth block sees a single pixel; coarser scales are dropped
PREVIEW_SIDE = 256
_STYLE_CACHE_ENTRIES = 32


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
    preview: np.ndarray | None = None  # float32 (h, w, 3), at most PREVIEW_SIDE px


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


def scale_sizes(height: int, width: int, scales: int) -> list[tuple[int, int]]:
    """Pyramid from coarse to fine, each level twice the previous, none under MIN_SIDE."""
    sizes = []
    for level in reversed(range(scales)):
        f = 2.0**-level
        h, w = max(1, round(height * f)), max(1, round(width * f))
        if min(h, w) >= MIN_SIDE or level == 0:
            sizes.append((h, w))
    return sizes


def split_iterations(total: int, levels: int) -> list[int]:
    """Equal steps per level; the finest level takes the remainder."""
    base = total // levels
    return [base] * (levels - 1) + [total - base * (levels - 1)]


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


class Engine:
    """Holds VGG16 on a device and a cache of style targets; stylize() runs one job."""

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str = "auto",
        *,
        model: VGGFeatures | None = None,
    ) -> None:
        self.device = pick_device(device)
        if model is None:
            model = VGGFeatures.from_weights(weights_mod.load(weights_mod.resolve_path(weights)))
        self.model = model.to(self.device)
        self._style_cache: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()

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
    ) -> Result:
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
        content_out = _resize(content_full, (out_h, out_w))
        luminance = settings.preserve_colors == "luminance"

        generator = (
            torch.Generator().manual_seed(settings.seed) if settings.seed is not None else None
        )
        sizes = scale_sizes(out_h, out_w, settings.scales)
        steps = split_iterations(settings.iterations, len(sizes))
        run = _Run(
            settings, progress, preview_every, cancel, start, content_out if luminance else None
        )
        x = None
        for (h, w), n in zip(sizes, steps, strict=True):
            content_s = _resize(content_full, (h, w))
            style_s = [_resize(s, self._style_size(s, (h, w), settings)) for s in style_full]
            if luminance:
                y_c = color.luminance(content_s)
                style_s = [color.match_luminance(color.luminance(s), y_c) for s in style_s]
                content_s = y_c
            if x is None:
                x = self._init(content_s, settings, init_image, generator, luminance)
            else:
                x = _resize(x, (h, w))
            grams = self._style_targets(style_s, blend, settings)
            x = run.optimize(self.model, x, content_s, grams, n)

        result = run.to_rgb(_resize(x, (out_h, out_w)))
        out = _to_numpy(result)
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

    @staticmethod
    def _style_size(
        style: torch.Tensor, size: tuple[int, int], settings: Settings
    ) -> tuple[int, int]:
        h, w = style.shape[-2:]
        return output_size(h, w, max(MIN_SIDE, round(max(size) * settings.style_scale)))

    def _init(
        self,
        content: torch.Tensor,
        settings: Settings,
        init_image: np.ndarray | None,
        generator: torch.Generator | None,
        luminance: bool,
    ) -> torch.Tensor:
        if settings.init == "content":
            return content.clone()
        if settings.init == "noise":
            noise = torch.rand(content.shape, generator=generator)
            return noise.to(content)
        rgb, _ = images.split_alpha(images.to_float(init_image))
        x = _resize(_to_tensor(rgb, self.device), tuple(content.shape[-2:]))
        return color.luminance(x) if luminance else x

    def _style_targets(
        self, styles: list[torch.Tensor], blend: tuple[float, ...], settings: Settings
    ) -> dict[str, torch.Tensor]:
        """Blended Gram matrices sum_k w_k M_l(S_k), one per style layer."""
        blended: dict[str, torch.Tensor] = {}
        for style, w in zip(styles, blend, strict=True):
            for name, g in self._grams(style, settings.style_layers).items():
                blended[name] = blended.get(name, 0) + w * g
        return blended

    def _grams(self, style: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        digest = hashlib.blake2b(style.cpu().numpy().tobytes(), digest_size=16).digest()
        key = (digest, tuple(style.shape), layers)
        if key in self._style_cache:
            self._style_cache.move_to_end(key)
            return self._style_cache[key]
        with torch.no_grad():
            acts = self.model(_as_rgb(style), set(layers))
            grams = {name: losses.gram(a) for name, a in acts.items()}
        self._style_cache[key] = grams
        if len(self._style_cache) > _STYLE_CACHE_ENTRIES:
            self._style_cache.popitem(last=False)
        return grams

    def style_cache_size(self) -> int:
        return len(self._style_cache)


def _as_rgb(x: torch.Tensor) -> torch.Tensor:
    """VGG sees a luminance image as grey RGB."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class _Run:
    """State of one stylize() call across scales: iteration count, progress, cancel."""

    def __init__(
        self,
        settings: Settings,
        progress: Callable[[Progress], None] | None,
        preview_every: int,
        cancel: CancelToken | None,
        start: float,
        chroma: torch.Tensor | None,
    ) -> None:
        self.settings = settings
        self.progress = progress
        self.preview_every = preview_every
        self.cancel = cancel
        self.start = start
        self.chroma = chroma  # content at output size, for luminance-only transfer
        self.iteration = 0
        self.last_losses: dict[str, float] = {}

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        if self.chroma is None:
            return x
        return color.with_chroma(x, _resize(self.chroma, tuple(x.shape[-2:])))

    def optimize(
        self,
        model: VGGFeatures,
        x: torch.Tensor,
        content: torch.Tensor,
        grams: dict[str, torch.Tensor],
        steps: int,
    ) -> torch.Tensor:
        s = self.settings
        with torch.no_grad():
            content_target = model(_as_rgb(content), {s.content_layer})[s.content_layer]
        content_weight = s.content_weight * losses.content_scale(content_target)
        layer_weights = {
            name: w * losses.style_scale(grams[name])
            for name, w in zip(s.style_layers, s.layer_weights(), strict=True)
        }
        layers = {s.content_layer, *s.style_layers}
        x = x.detach().contiguous().clone().requires_grad_(True)
        if s.optimizer == "lbfgs":
            # One function evaluation per step (no line search), so cancel and progress run
            # every iteration; the optimiser keeps its curvature history across steps.
            opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=50)
        else:
            opt = torch.optim.Adam([x], lr=s.learning_rate)
        terms: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            acts = model(_as_rgb(x), layers)
            terms["content"] = content_weight * losses.content_loss(
                content_target, acts[s.content_layer]
            )
            terms["style"] = s.style_weight * losses.style_loss(grams, acts, layer_weights)
            terms["tv"] = s.tv_weight * losses.tv_loss(x)
            terms["total"] = terms["content"] + terms["style"] + terms["tv"]
            terms["total"].backward()
            return terms["total"]

        for _ in range(steps):
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled
            opt.step(closure)
            with torch.no_grad():
                x.clamp_(0, 1)
            self.iteration += 1
            self._report(x, terms)
        return x.detach()

    def _report(self, x: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        last = self.iteration == self.settings.iterations
        if self.progress is None and not last:
            return  # no host sync unless someone reads the numbers
        self.last_losses = {k: float(v.detach()) for k, v in terms.items()}
        if not all(math.isfinite(v) for v in self.last_losses.values()):
            raise BrushworkError(
                "the optimisation diverged (loss is not finite); lower the weights"
            )
        if self.progress is None:
            return
        preview = None
        if self.preview_every and (self.iteration % self.preview_every == 0 or last):
            side = min(PREVIEW_SIDE, max(x.shape[-2:]))
            preview = _to_numpy(self.to_rgb(_resize(x.detach(), output_size(*x.shape[-2:], side))))
        self.progress(
            Progress(
                iteration=self.iteration,
                total=self.settings.iterations,
                losses=self.last_losses,
                elapsed=time.perf_counter() - self.start,
                preview=preview,
            )
        )
