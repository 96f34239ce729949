"""One stylize() run's optimisation: the steps at each pyramid level, tile by tile where a
level is tiled, with progress, previews and the cancel token between steps.

Each step is one evaluation of J(G) = a*Jc + b*Js + c*TV (+ the temporal term, for a video
frame) and one optimiser step (L-BFGS without line search), tensor ops only: the host syncs
only when someone reads the numbers.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from brushwork import color, losses, tiling
from brushwork.errors import BrushworkError
from brushwork.lbfgs import HISTORY, LBFGS
from brushwork.scales import output_size, resize, to_numpy
from brushwork.settings import Settings

# Tiles share the whole image's statistics, so in a level's first round over the tiles each
# tile sees a rest not yet worked at this level and overdoes its strokes to make up for it; a
# second round lets the tiles correct each other. The level's steps are split between the
# rounds in these parts: the first round gets a third, so there is less to overdo (evened
# halves left Brad Pitt's first tile visibly busier; docs/quality.md, "Tiles").
TILE_ROUND_PARTS = (1, 2)
# L-BFGS steps in pixel units (pixels live in [0, 1]). torch's first step (an L1 length of 1
# over the whole image) moves no pixel by more than a few 1e-4 at 256 px, under the rounding
# of bf16 activations, so the first curvature pair was noise and the second step could land
# anywhere, 30 px values once (docs/quality.md). The first step moves the pixel with the
# largest gradient by LBFGS_FIRST_STEP, and no step moves any pixel by more than LBFGS_MAX_STEP.
LBFGS_FIRST_STEP = 0.01
LBFGS_MAX_STEP = 0.1


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
    fraction: float  # share of the job done, by time (see Run.estimate); never decreases
    eta: float | None = None  # seconds left; None until a step has been timed
    preview: np.ndarray | None = None  # float32 (h, w, 3), long side at most preview_side


def round_steps(steps: int) -> list[int]:
    """A tiled level's steps per round over its tiles, split as TILE_ROUND_PARTS (rounds
    left with no step dropped)."""
    total = sum(TILE_ROUND_PARTS)
    ends = [steps * sum(TILE_ROUND_PARTS[:k]) // total for k in range(len(TILE_ROUND_PARTS) + 1)]
    return [b - a for a, b in itertools.pairwise(ends) if b > a]


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


class Run:
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
        # The temporal term at this level: (target, mask, weight); None for a still image.
        self.held: tuple[torch.Tensor, torch.Tensor, float] | None = None

    def begin_level(self, level: int, settings: Settings) -> None:
        """Start pyramid level `level`, run with `settings` (Settings.at_level)."""
        self.level, self.step, self.mark = level, 0, None
        self.settings = settings

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
        return color.with_chroma(x, resize(self.chroma, tuple(x.shape[-2:])).to(x))

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
        tile: tiling.Tile | None = None,
    ) -> torch.Tensor:
        """`steps` optimiser steps on x; `preview` maps x to the image a preview shows;
        `free` (tiles) scales each pixel's steps, 0 holding it fixed (_Scaled);
        `content_density` normalises the content term as for the whole image (tiles);
        `part` (tiles): both terms on the positions x owns, as parts of the whole image's;
        `tile`: where x lies in the level (the temporal term's window of `held`)."""
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
        temporal = None
        if self.held is not None:
            target, mask, weight = self.held
            elements = target.numel()  # the level's: a tile's term is its share
            if tile is not None:
                target, mask = tile.of(target), tile.of(mask)
            temporal = (target, mask, weight, elements)
        v = _Scaled(x, free) if free is not None else _Pixels(x)
        # L-BFGS: one function evaluation per step (no line search), so cancel and progress run
        # every iteration; the curvature history lives for one scale (or tile), whose `steps`
        # push steps - 1 pairs: no more are kept (at 512 px 50 pairs held 236 MB).
        history = min(HISTORY, max(1, steps - 1))
        opt = (
            LBFGS(v.leaf, history, first_step=LBFGS_FIRST_STEP, max_step=LBFGS_MAX_STEP)
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
            if temporal is not None:
                terms["temporal"] = losses.temporal_loss(x, *temporal)
            terms["total"] = sum(terms.values())
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
        loss = losses.named(self.settings.style_loss, self.settings.seed)
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
                    part=self._part(canvas, tile, i, window, image.total()), tile=tile,
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
        loss = losses.named(s.style_loss, s.seed)
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
            small = resize(x.detach(), output_size(*x.shape[-2:], side))
            preview = to_numpy(self.to_rgb(small))
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
