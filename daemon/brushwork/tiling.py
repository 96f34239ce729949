"""Images larger than memory allows: overlapping tiles, joined without seams.

Every tile is optimised against the GLOBAL style targets, and with the WHOLE image's
statistics. The style losses compare statistics over positions (moments, or the sliced
loss's marginals), which add up tile by tile (`ImageSums`): a tile's loss sees the image's,
the rest of the image (as it stands) with the positions the tile owns. Matching each tile's
own statistics to the style's asked every tile to hold the style's whole distribution:
Starry Night's moon and stars came back in every tile, the river's too (docs/quality.md).

Tiles run one after another, as block coordinate descent on the whole image: raised-cosine
ramps over the overlaps decide which tile owns (finishes) each pixel, and nothing is averaged
(two tiles grow textures of different phase, which average to mush). Where one tile hands over
to the next, three things left a one-pixel line (bench/seams.py measures it): pixels of later
tiles held fixed as context, whose loss only the tile's last row could answer, so that row was
overdriven; a later tile restarting from pixels an earlier tile had already moved past; and a
later tile's steps stopping dead at the finished pixels. Canvas answers all three (see its
docstring).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from brushwork import losses

_RAMP_FLOOR = 1e-3  # every covered pixel keeps a positive weight, so some tile owns it


@dataclass(frozen=True)
class Tile:
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def area(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)

    def of(self, x: torch.Tensor) -> torch.Tensor:
        """This tile's view of an (N, C, H, W) tensor."""
        return x[..., self.y0 : self.y1, self.x0 : self.x1]


def axis_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Starts of windows of `tile` px covering 0..n, neighbours overlapping >= `overlap` px."""
    if n <= tile:
        return [0]
    count = math.ceil((n - overlap) / (tile - overlap))
    return [round(i * (n - tile) / (count - 1)) for i in range(count)]


def plan(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Overlapping tiles in raster order covering the whole image (one tile when it fits:
    then the overlap does not matter)."""
    if max(height, width) > tile and not 0 <= overlap < tile:
        raise ValueError("overlap must be smaller than the tile")
    return [
        Tile(y, min(y + tile, height), x, min(x + tile, width))
        for y in axis_starts(height, tile, overlap)
        for x in axis_starts(width, tile, overlap)
    ]


# The deepest layer the losses read, conv5_1, sees 132 px of the image (its receptive field):
# an overlap of twice that leaves a pixel near an ownership boundary (the overlap's middle)
# a full field of real neighbours on the other tile's side. Wider only costs time: at tile // 4,
# a 2000 px tile computes 78 % more pixels than it owns; capped, 32 %.
_MAX_OVERLAP = 256


def overlap_for(tile: int) -> int:
    """Overlap between neighbours: wide enough to hide the padded border of VGG's deep layers."""
    return min(max(16, tile // 4), _MAX_OVERLAP)


def _ramp(length: int, ramp: int, start_inside: bool, end_inside: bool) -> torch.Tensor:
    """1 in the middle, a raised cosine over `ramp` px at each end that borders another tile."""
    w = torch.ones(length)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(ramp) + 0.5) / ramp)
        rise = rise.clamp_min(_RAMP_FLOOR)
        if start_inside:
            w[:ramp] = rise
        if end_inside:
            w[length - ramp :] = rise.flip(0)
    return w


def blend_weight(tile: Tile, height: int, width: int, ramp: int) -> torch.Tensor:
    """(1, 1, h, w) weights of one tile; edges on the image border keep weight 1."""
    wy = _ramp(tile.y1 - tile.y0, ramp, tile.y0 > 0, tile.y1 < height)
    wx = _ramp(tile.x1 - tile.x0, ramp, tile.x0 > 0, tile.x1 < width)
    return (wy[:, None] * wx[None, :])[None, None]


class Canvas:
    """The full image being built from tiles, on the host.

    Each pixel belongs to the tile whose blend weight is largest there (ties: the earlier
    tile), so the owners split every overlap along the middle of its ramps; a pixel is
    finished once its owner has run. A tile starts from the latest pixels (what earlier tiles
    finished or moved), moves every pixel of its window that is not finished, and writes back
    all it moved (`add`): its own pixels are then final, and later tiles start where it left
    theirs. Its steps fade in from the finished pixels and out towards the window's inner
    edges (`free`). So no pixel next to a tile's own is held at its starting value (that left
    a line: the one row in reach of a held strip was driven to make up for it), a tile picks
    up the texture where the previous one left it, and its steps end smoothly.
    """

    def __init__(self, start: torch.Tensor, tiles: list[Tile], ramp: int) -> None:
        self.pixels = start.detach().float().cpu().clone()
        h, w = self.pixels.shape[-2:]
        best = torch.zeros(h, w)
        self.owner = torch.full((h, w), -1, dtype=torch.int32)
        for i, tile in enumerate(tiles):
            weight = blend_weight(tile, h, w, ramp)[0, 0]
            wins = weight > tile.of(best)
            tile.of(self.owner)[wins] = i
            tile.of(best)[wins] = weight[wins]
        self.fade = max(1, ramp // 2)  # the owner's boundary to the window's edge, at least

    def read(self, tile: Tile) -> torch.Tensor:
        return tile.of(self.pixels).clone()

    def finished(self, tile: Tile, index: int) -> torch.Tensor:
        """(1, 1, h, w) mask over the tile's window: 1 where a tile before `index` owns."""
        return (tile.of(self.owner) < index).float()[None, None]

    def free(self, tile: Tile, index: int) -> torch.Tensor:
        """(1, 1, h, w) step scale of tile `index` over its window: 0 on finished pixels,
        rising as a raised cosine to 1 at `fade` px from them and from the window's inner
        edges (pixels beyond do not move with the tile). Distances are taken along the
        pixel's row and column, which is exact at the straight edges tiles have."""
        finished = self.finished(tile, index)[0, 0].bool()
        h, w = self.owner.shape
        across = _distance(finished, tile.x0 > 0, tile.x1 < w)
        down = _distance(finished.T, tile.y0 > 0, tile.y1 < h).T
        near = torch.minimum(across, down).clamp(max=self.fade + 1) / (self.fade + 1)
        return (0.5 - 0.5 * torch.cos(math.pi * near))[None, None]

    def add(self, tile: Tile, index: int, pixels: torch.Tensor) -> None:
        """Write tile `index`'s result: every pixel of its window not finished before it."""
        tile.of(self.pixels).copy_(self._merged(tile, index, pixels))

    def pasted(self, tile: Tile, index: int, pixels: torch.Tensor) -> torch.Tensor:
        """The whole image with the tile's current pixels in place: what a preview shows."""
        out = self.pixels.clone()
        tile.of(out).copy_(self._merged(tile, index, pixels))
        return out

    def _merged(self, tile: Tile, index: int, pixels: torch.Tensor) -> torch.Tensor:
        finished = self.finished(tile, index).bool().expand_as(pixels)
        return torch.where(finished, tile.of(self.pixels), pixels.detach().float().cpu())

    def image(self) -> torch.Tensor:
        return self.pixels.clone()


def _distance(held: torch.Tensor, before: bool, after: bool) -> torch.Tensor:
    """Pixels from each element of (h, w) bool `held` to the nearest held one in its row (0 on
    held ones); `before` / `after`: the pixels just beyond the row's ends count as held."""
    n = held.shape[-1]
    at = torch.arange(n).expand_as(held)
    far = 2 * n + 1  # beyond any distance in the row
    last = torch.where(held, at, -far).cummax(-1).values.clamp(min=-1 if before else -far)
    next_ = torch.where(held, at, n + far).flip(-1).cummin(-1).values.flip(-1)
    next_ = next_.clamp(max=n if after else n + far)
    return torch.minimum(at - last, next_ - at).float()


def layer_stride(name: str) -> int:
    """Pixels per activation of a VGG16 layer: conv1_x 1, conv2_x 2, ... conv5_x 16."""
    return 2 ** (int(name[4]) - 1)


class ImageSums:
    """An image's activations per layer as `loss` describes them (losses.StyleLoss) and
    their count of positions, kept core by core. The cores partition the image in multiples
    of 16 px, so every layer's pooling grid lines up with the whole image's; each is seen with
    `margin` px of context so its activations are (nearly) those of the whole image, and only
    its own are described. After the pixels inside a window change, `update` computes again
    only the cores whose context reaches it. Each core is moved to `device`, if given: the
    image itself may stay on the host."""

    def __init__(
        self,
        features: Callable[[torch.Tensor, set[str]], dict[str, torch.Tensor]],
        image: torch.Tensor,
        layers: tuple[str, ...],
        tile: int,
        loss: losses.StyleLoss,
        margin: int = 64,
        device: torch.device | None = None,
    ) -> None:
        self.features, self.layers, self.loss, self.device = features, layers, loss, device
        self.margin = margin - margin % 16
        self.cores = cores(*image.shape[-2:], tile)
        self.sums = [self._sums(image, core) for core in self.cores]

    def _sums(self, image: torch.Tensor, core: Tile) -> dict[str, tuple[object, int]]:
        acts = _core_activations(self.features, image, core, self.layers, self.margin, self.device)
        return {n: (self.loss.describe(a), _count(a)) for n, a in acts.items()}

    def update(self, image: torch.Tensor, window: Tile) -> None:
        """`image`'s pixels changed inside `window` only."""
        h, w = image.shape[-2:]
        for k, core in enumerate(self.cores):
            seen = _context(core, h, w, self.margin)
            if (
                seen.y0 < window.y1
                and window.y0 < seen.y1
                and seen.x0 < window.x1
                and window.x0 < seen.x1
            ):
                self.sums[k] = self._sums(image, core)

    def total(self) -> dict[str, tuple[object, int]]:
        """Per layer the whole image described (the cores blended by their counts), and its
        count of positions."""
        return {
            name: _blended(self.loss, [c[name] for c in self.sums if name in c])
            for name in self.layers
        }

    def described(self) -> dict[str, object]:
        """Per layer what `loss` needs of the whole image's activations (its describe()): a
        style image too large for one pass, described tile by tile."""
        return {name: described for name, (described, _) in self.total().items()}


def _blended(loss: losses.StyleLoss, parts: list[tuple[object, int]]) -> tuple[object, int]:
    """Described parts of an image as one: blended by their counts, and the total count."""
    total = sum(n for _, n in parts)
    return loss.blend([(d, n / total) for d, n in parts]), total


def cores(h: int, w: int, tile: int) -> list[Tile]:
    """A partition of an (h, w) image in squares of `tile` px, a multiple of 16, so that every
    layer's pooling grid lines up with the whole image's."""
    tile = max(16, tile - tile % 16)
    return [
        Tile(y, min(y + tile, h), x, min(x + tile, w))
        for y in range(0, h, tile)
        for x in range(0, w, tile)
    ]


def _context(core: Tile, h: int, w: int, margin: int) -> Tile:
    return Tile(
        max(0, core.y0 - margin), min(h, core.y1 + margin),
        max(0, core.x0 - margin), min(w, core.x1 + margin),
    )  # fmt: skip


def _core_activations(
    features: Callable[[torch.Tensor, set[str]], dict[str, torch.Tensor]],
    image: torch.Tensor,
    core: Tile,
    layers: tuple[str, ...],
    margin: int,
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """The activations at `core`'s own positions, seen with `margin` px of context, per layer
    (a core narrower than a layer's stride has none there: left out)."""
    h, w = image.shape[-2:]
    seen = _context(core, h, w, margin)
    with torch.no_grad():
        acts = features(seen.of(image).to(device), set(layers))
    out = {}
    for name in layers:
        s = layer_stride(name)
        a = acts[name]
        top, left = (core.y0 - seen.y0) // s, (core.x0 - seen.x0) // s
        bottom = a.shape[-2] if core.y1 == h else top + (core.y1 - core.y0) // s
        right = a.shape[-1] if core.x1 == w else left + (core.x1 - core.x0) // s
        core_acts = a[..., top:bottom, left:right]
        if _count(core_acts):
            out[name] = core_acts
    return out


def _count(a: torch.Tensor) -> int:
    return a.shape[-2] * a.shape[-1]


def layer_positions(name: str, h: int, w: int) -> int:
    """Positions of a VGG16 layer over an (h, w) image: each pooling floors."""
    s = layer_stride(name)
    return (h // s) * (w // s)


def owned_positions(owned: torch.Tensor, name: str, shape: tuple[int, int]) -> torch.Tensor:
    """Flat indices into a layer's (h, w) activations over a window: the positions whose
    stride cell's centre pixel `owned` (the window's (H, W) bool mask) marks."""
    s = layer_stride(name)
    ys = (torch.arange(shape[0]) * s + s // 2).clamp(max=owned.shape[0] - 1)
    xs = (torch.arange(shape[1]) * s + s // 2).clamp(max=owned.shape[1] - 1)
    return owned[ys][:, xs].flatten().nonzero().flatten()
