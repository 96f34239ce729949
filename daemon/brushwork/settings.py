"""The knobs of one stylization, validated in one place.

Standard library only: the protocol, the client and the GIMP plug-in use it without torch.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any

from brushwork.errors import shown

# VGG16 conv layers in torchvision's `vgg16().features` order; the engine maps names to indices.
VGG16_LAYERS = (
    "conv1_1", "conv1_2",
    "conv2_1", "conv2_2",
    "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3",
    "conv5_1", "conv5_2", "conv5_3",
)  # fmt: skip

PRESERVE_COLORS = ("none", "luminance", "histogram")
INITS = ("palette", "content", "noise", "image")  # "image": an init image comes along
OPTIMIZERS = ("lbfgs", "adam")
STYLE_LOSSES = ("gram", "w2", "sw")  # losses.STYLE_LOSSES; "gram" is the seed's
QUALITIES = ("draft", "normal", "high")  # Settings.at_quality: the dialog's and --quality
FINER_LEVELS = ("light", "full")  # Settings.at_level
MAX_SIDE = 65536
# Seeds drawn for a new variation (draw_seed) fit the 32-bit fields of GIMP and most UIs.
SEED_DRAWN_MAX = 2**31 - 1
# Style images one job may blend: every one is held by the daemon while the job waits.
MAX_STYLES = 16
DEFAULT_STRENGTH = 50  # Settings.at_strength: the settings as they are
# Strength's two powers from 50 up (Settings.at_strength): the style match saturates near 100,
# so the style weight rises as a square root and the content weight falls faster: from 50 to
# 100 each 10 points move the harness measures alike within 1.4x on the median pair
# (docs/quality.md, "The Strength scale").
STYLE_POWER = 0.5
CONTENT_POWER = 1.5
# Below 50, the style-to-content ratio at 0, 10, ..., 50 as a share of the defaults' ratio.
# The palette and the first strokes arrive over two decades of the ratio (0.003 to 0.3): these
# ratios give each 10 points the same move of the harness measures on the median pair at 256
# px, where the powers above put all of that arrival between 0 and 10 (docs/quality.md).
LOW_RATIOS = (0.0, 0.015, 0.042, 0.09, 0.24, 1.0)


@dataclass(frozen=True)
class Settings:
    """One stylization. Every field has a default chosen by looking at results (see README)."""

    size: int = 512  # long side of the output in px; 0 keeps the content's own size
    # The textbook's 100 steps: at 256 px 200 gave the same picture by eye, with less content
    # kept on every harness pair and less style match on seven of eight (docs/quality.md).
    # Split over the pyramid's levels 2:1 a level; a "light" finer level runs half its share.
    iterations: int = 100
    content_weight: float = 1.0
    # Where Strength 50 sits: where the default beats the textbook run on the most harness
    # pairs at 256 and 512 px with the textbook's strokes (docs/quality.md).
    style_weight: float = 5.0
    tv_weight: float = 0.0  # as the textbook: 1, 3 and 10 measured no better (docs/quality.md)
    # The textbook's layers (Gatys et al. on VGG16): content at conv3_3, style at the end of
    # each of the first four blocks, weighed alike. conv5_1, which sees whole objects, painted
    # the style's motifs (moons, swirls) into the subject unless weighed down, and then the
    # strokes were weaker than the textbook's (docs/quality.md).
    content_layer: str = "conv3_3"
    style_layers: tuple[str, ...] = ("conv1_2", "conv2_2", "conv3_3", "conv4_3")
    style_layer_weights: tuple[float, ...] = ()  # empty: style_layer_falloff decides
    # Each style layer's weight over the next deeper one's, when style_layer_weights is empty
    # (1 weighs them alike, as the seed's objective).
    style_layer_falloff: float = 1.0
    # The sliced Wasserstein distance: the only loss whose Strength 50 beats the textbook run
    # on all 8 harness pairs at 256 px, with fewer of the style's motifs over the subject
    # (docs/quality.md). "w2": Gaussian statistics, 1.4x faster; "gram": the seed's Grams.
    style_loss: str = "sw"
    style_blend: tuple[float, ...] = ()  # one weight per style image; empty: equal
    style_scale: float = 1.0  # style image's long side relative to the output's
    preserve_colors: str = "none"
    # "palette": the content in the style images' colours (docs/quality.md: more style at the
    # same content kept); "content" is the textbook start; "image" needs an init image.
    init: str = "palette"
    optimizer: str = "lbfgs"
    learning_rate: float = 0.02  # Adam only; pixels live in [0, 1]
    scales: int = 3  # coarse-to-fine pyramid levels at most, each twice the previous size
    # Short side of the coarsest level, px: wider than the deepest style layer's receptive
    # field (conv4_3: 92 px; conv5_1, when chosen: 132 px), which would otherwise see the whole
    # picture at once and paint the style's composition over the subject (docs/quality.md).
    # No wider, so that a 16:9 picture's 512 px job starts from its 256 px look, as a 4:3
    # one's does.
    min_scale: int = 133
    # Style weight of each level over the next coarser one's. At a finer level the content
    # layer pulls back edges the upscaled image lacks; with equal weights (1, the seed's
    # objective at every level) each octave ended nearer the content, a 1024 px job with a
    # fifth less style than a 256 px one. Under the sliced loss 1.2 keeps one look across
    # 256-1024 px on all 8 harness pairs (within 8.2 %); W2's was 1.6 (docs/quality.md).
    style_gain: float = 1.2
    # "light": above the coarsest level, no style layer deeper than the content layer and half
    # the level's share of the steps (at_level, scales.level_steps): the deep layers'
    # strokes are placed at the coarsest level, where conv4_3 sees 184 px of a 512 px output,
    # and a finer level then refines them at a third less VGG work a step. The harness's 8
    # pairs at 512 px kept both measures within 0.007 in 0.6x the time (docs/quality.md).
    # "full": every level runs the settings' layers and its whole share (the seed's objective).
    finer_levels: str = "light"
    # Picks the sliced loss's directions and a small start jitter: what is free to vary at
    # equal quality, so two seeds give two pictures and one seed the same picture again.
    # None: the one unseeded picture (no jitter, the default directions).
    seed: int | None = None
    tile: int = 0  # force tiling with this tile size in px; 0 = only when it would not fit

    def __post_init__(self) -> None:
        # Normalise list-like values coming from JSON so equal settings compare equal.
        for name in ("style_layers", "style_layer_weights", "style_blend"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError with a one-line message naming the bad field."""
        _int_range("size", self.size, 0, MAX_SIDE)
        _int_range("iterations", self.iterations, 1, 100_000)
        _int_range("scales", self.scales, 1, 8)
        _int_range("min_scale", self.min_scale, 32, MAX_SIDE)
        _int_range("tile", self.tile, 0, MAX_SIDE)
        if self.tile and self.tile < 64:
            raise ValueError("tile must be 0 (automatic) or at least 64 px")
        _float_range("style_gain", self.style_gain, 0.25, 8.0)
        _float_range("style_layer_falloff", self.style_layer_falloff, 0.25, 8.0)
        for name in ("content_weight", "style_weight", "tv_weight"):
            _float_range(name, getattr(self, name), 0.0, 1e12)
        _float_range("learning_rate", self.learning_rate, 1e-6, 10.0)
        _float_range("style_scale", self.style_scale, 0.05, 8.0)
        if self.content_weight == 0 and self.style_weight == 0:
            raise ValueError("content_weight and style_weight cannot both be 0")
        _choice("content_layer", self.content_layer, VGG16_LAYERS)
        if not self.style_layers:
            raise ValueError("style_layers needs at least one layer")
        if len(self.style_layers) > len(VGG16_LAYERS):  # before looking at each: one line, fast
            raise ValueError(
                f"style_layers names {len(self.style_layers)} layers; VGG16 has "
                f"{len(VGG16_LAYERS)} (each may be named once)"
            )
        for layer in self.style_layers:
            _choice("style_layers", layer, VGG16_LAYERS)
        repeated = [(n, layer) for layer, n in Counter(self.style_layers).items() if n > 1]
        if repeated:
            n, layer = repeated[0]
            raise ValueError(f"style_layers names {layer} {n} times; name each layer once")
        if self.style_layer_weights and len(self.style_layer_weights) != len(self.style_layers):
            raise ValueError(
                f"style_layer_weights has {len(self.style_layer_weights)} values "
                f"for {len(self.style_layers)} style layers"
            )
        if len(self.style_blend) > MAX_STYLES:
            raise ValueError(
                f"style_blend has {len(self.style_blend)} values; a job blends at most "
                f"{MAX_STYLES} style images"
            )
        for name in ("style_layer_weights", "style_blend"):
            values = getattr(self, name)
            for v in values:
                _float_range(name, v, 0.0, 1e12)
            if values and sum(values) <= 0:
                raise ValueError(f"{name} must have a positive sum")
        _choice("preserve_colors", self.preserve_colors, PRESERVE_COLORS)
        _choice("init", self.init, INITS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("style_loss", self.style_loss, STYLE_LOSSES)
        if self.seed is not None:
            _int_range("seed", self.seed, 0, 2**63 - 1)
        _choice("finer_levels", self.finer_levels, FINER_LEVELS)
        if not all(math.isfinite(w) and w >= 0 for w in self.layer_weights()):
            raise ValueError("style_layer_weights and style_layer_falloff give no finite weights")

    def layer_weights(self) -> tuple[float, ...]:
        """Style layer weights lambda_l, normalised to sum to 1: style_layer_weights, else
        style_layer_falloff^(n - 1 - l) for the n layers, the first (finest) the heaviest."""
        n = len(self.style_layers)
        w = self.style_layer_weights or tuple(
            self.style_layer_falloff ** (n - 1 - i) for i in range(n)
        )
        return tuple(x / sum(w) for x in w)

    def at_level(self, level: int) -> Settings:
        """The settings pyramid level `level` (0: the coarsest) runs. With finer_levels "light",
        a finer level keeps only the style layers no deeper than the content layer, their
        weights lambda_l in the same ratios and the style weight whole (the harness kept its
        style match nearer with the whole weight than with the kept layers' share of it);
        where none is that shallow, all are kept."""
        if level == 0 or self.finer_levels == "full":
            return self
        depth = VGG16_LAYERS.index(self.content_layer)
        kept = [
            (name, w)
            for name, w in zip(self.style_layers, self.layer_weights(), strict=True)
            if VGG16_LAYERS.index(name) <= depth
        ]
        if not kept or len(kept) == len(self.style_layers):
            return self
        names, weights = zip(*kept, strict=True)
        return self.replace(style_layers=names, style_layer_weights=weights)

    def blend_weights(self, n_styles: int) -> tuple[float, ...]:
        """Blend weight per style image, normalised to sum to 1."""
        w = self.style_blend or (1.0,) * n_styles
        if len(w) != n_styles:
            values = f"{len(w)} value{'s' if len(w) != 1 else ''}"
            images = f"{n_styles} style image{'s' if n_styles != 1 else ''}"
            raise ValueError(f"style_blend has {values} for {images}")
        return tuple(x / sum(w) for x in w)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("style_layers", "style_layer_weights", "style_blend"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        """Build from JSON-like data; unknown keys and wrong types are a ValueError."""
        if not isinstance(d, dict):
            raise ValueError("settings must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown setting {shown(unknown[0])}")
        return cls(**d)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def at_quality(self, quality: str) -> Settings:
        """These settings at a quality: "normal" keeps them; "draft" is a short full run (one
        scale, a sixth of the steps); "high" has twice the steps and one more scale."""
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
        if quality == "draft":
            return self.replace(iterations=max(1, self.iterations // 6), scales=1)
        if quality == "high":
            return self.replace(iterations=self.iterations * 2, scales=min(self.scales + 1, 8))
        return self

    def at_strength(self, strength: float) -> Settings:
        """These settings at a Strength of 0-100 (the GIMP dialog's; 50 keeps them as they are).

        With t = strength / 100 the content weight becomes a (2 (1 - t))^q (q = CONTENT_POWER);
        from 50 up the style weight becomes b (2 t)^p (p = STYLE_POWER), 100 the style alone.
        Below 50 the style-to-content ratio follows LOW_RATIOS: geometric between its points
        from 10 up, linear from 0 (the content alone) to 10.
        """
        if not 0 <= strength <= 100:
            raise ValueError(f"strength must be between 0 and 100, got {strength}")
        t = strength / 100
        content = (2 * (1 - t)) ** CONTENT_POWER
        style = (2 * t) ** STYLE_POWER if t >= 0.5 else content * _low_ratio(strength)
        return self.replace(
            content_weight=self.content_weight * content,
            style_weight=self.style_weight * style,
        )


def draw_seed() -> int:
    """A new seed, for a new variation (`--seed -1`, the dialog's Seed -1)."""
    return secrets.randbelow(SEED_DRAWN_MAX + 1)


def _low_ratio(strength: float) -> float:
    """LOW_RATIOS at a strength under 50."""
    i = int(strength // 10)
    f = strength / 10 - i
    lo, hi = LOW_RATIOS[i], LOW_RATIOS[i + 1]
    return lo + f * (hi - lo) if lo == 0 else lo * (hi / lo) ** f


def _int_range(name: str, v: Any, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an integer, got {shown(v)}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {v}")


def _float_range(name: str, v: Any, lo: float, hi: float) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{name} must be a number, got {shown(v)}")
    if not lo <= v <= hi:  # also rejects NaN
        raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {shown(v)}")


def _choice(name: str, v: Any, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {shown(v)}")


@dataclass(frozen=True)
class Temporal:
    """How a video frame is held to the frames before it (temporal.stylize_frame; Ruder et al.
    2016). Apart from Settings: a still image has none of it."""

    # Of the temporal term, beside content 1 and style 5: on two synthetic clips at 256 px,
    # 8 frames, 100 flickered 7.6x and 6.8x less than frames styled alone, 30 6.0x and 4.7x,
    # with content kept 4.6 % and 1.4 % below the frames alone (30: 2.8 %, 0.7 %); over 24
    # frames of a steady zoom the held frames drift, 18 % less content by the end (30: 10 %):
    # docs/video.md.
    weight: float = 100.0
    # The earlier frames each frame is held to, as offsets back: 1 is the frame before; the
    # long-term ones (2, 4) hold a pixel hidden in the frame before to where it was last seen.
    offsets: tuple[int, ...] = (1, 2, 4)

    def __post_init__(self) -> None:
        if not isinstance(self.offsets, list | tuple):
            raise ValueError(f"temporal offsets must be a list, got {shown(self.offsets)}")
        object.__setattr__(self, "offsets", tuple(self.offsets))
        _float_range("temporal weight", self.weight, 0.0, 1e12)
        if not self.offsets or len(self.offsets) > 8:
            raise ValueError(f"temporal offsets must be 1 to 8 frames, got {len(self.offsets)}")
        for k in self.offsets:
            _int_range("temporal offsets", k, 1, 1000)
        if list(self.offsets) != sorted(set(self.offsets)):
            raise ValueError("temporal offsets must increase, each named once")

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "offsets": list(self.offsets)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Temporal:
        if not isinstance(d, dict):
            raise ValueError("temporal settings must be a JSON object")
        unknown = sorted(set(d) - {"weight", "offsets"})
        if unknown:
            raise ValueError(f"unknown temporal setting {shown(unknown[0])}")
        return cls(**d)
