"""Images larger than memory allows: overlapping tiles, joined without seams.

Every tile is optimised against the GLOBAL style targets. The Gram matrices are normalised by
the layer's size (losses.gram), so a tile's Gram estimates the same statistics as the whole
image's, and the style targets themselves can be summed tile by tile (`tiled_grams`).

Seams come from three places: a tile's border sees the convolution's zero padding; two tiles
that start from the same blurry image grow textures of different phase, which average to mush
in a blend band; and pixels optimised by two tiles get twice the steps, so the band's texture is
stronger than the rest. Canvas answers all three (see its docstring): raised-cosine ramps over
the overlap decide which tile owns each pixel, a tile optimises only its own pixels with its
neighbours' as context, and nothing is averaged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

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
    tile), so the owners split every overlap along the middle of its ramps. A tile optimises
    its own pixels only; the rest of its window is context: the final pixels of the tiles
    before it, the starting pixels of the tiles after it. Every pixel thus gets the same number
    of steps, and a tile's texture grows against its finished neighbours' (the style, content
    and TV terms all see across the boundary), so it continues theirs instead of being
    averaged with a texture of another phase.
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

    def read(self, tile: Tile) -> torch.Tensor:
        return tile.of(self.pixels).clone()

    def owned(self, tile: Tile, index: int) -> torch.Tensor:
        """(1, 1, h, w) mask: 1 on the pixels of the tile's window that tile `index` owns."""
        return (tile.of(self.owner) == index).float()[None, None]

    def add(self, tile: Tile, index: int, pixels: torch.Tensor) -> None:
        mine = self.owned(tile, index).bool().expand_as(pixels)
        tile.of(self.pixels)[mine] = pixels.detach().float().cpu()[mine]

    def pasted(self, tile: Tile, index: int, pixels: torch.Tensor) -> torch.Tensor:
        """The whole image with the tile's current pixels in place: what a preview shows."""
        out = self.pixels.clone()
        mine = self.owned(tile, index).bool().expand_as(pixels)
        tile.of(out)[mine] = pixels.detach().float().cpu()[mine]
        return out

    def image(self) -> torch.Tensor:
        return self.pixels.clone()


def layer_stride(name: str) -> int:
    """Pixels per activation of a VGG16 layer: conv1_x 1, conv2_x 2, ... conv5_x 16."""
    return 2 ** (int(name[4]) - 1)


def tiled_grams(
    features: Callable[[torch.Tensor, set[str]], dict[str, torch.Tensor]],
    image: torch.Tensor,
    layers: tuple[str, ...],
    tile: int,
    margin: int = 64,
) -> dict[str, torch.Tensor]:
    """Gram matrices of the whole `image` (as losses.gram), summed over tiles.

    Each tile is seen with `margin` px of context so its core's activations are (nearly) those
    of the whole image; only the core's activations are summed. Cores are multiples of 16 px,
    so every layer's pooling grid lines up with the whole image's.
    """
    tile = max(16, tile - tile % 16)
    margin -= margin % 16
    h, w = image.shape[-2:]
    sums: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(layers, 0)
    cores = [
        Tile(y, min(y + tile, h), x, min(x + tile, w))
        for y in range(0, h, tile)
        for x in range(0, w, tile)
    ]  # a partition: every pixel counted once
    for core in cores:
        y0, x0 = max(0, core.y0 - margin), max(0, core.x0 - margin)
        y1, x1 = min(h, core.y1 + margin), min(w, core.x1 + margin)
        with torch.no_grad():
            acts = features(image[..., y0:y1, x0:x1], set(layers))
        for name in layers:
            s = layer_stride(name)
            a = acts[name]
            top, left = (core.y0 - y0) // s, (core.x0 - x0) // s
            bottom = a.shape[-2] if core.y1 == h else top + (core.y1 - core.y0) // s
            right = a.shape[-1] if core.x1 == w else left + (core.x1 - core.x0) // s
            f = a[0, :, top:bottom, left:right].reshape(a.shape[1], -1).float()
            sums[name] = sums.get(name, 0) + f @ f.T
            counts[name] += f.shape[1]
    return {name: sums[name] / (sums[name].shape[0] * counts[name]) for name in layers}
