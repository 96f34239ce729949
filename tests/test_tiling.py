"""Tiling past memory: tiles cover the image, global style targets, and no visible seams."""

import numpy as np
import pytest
import torch

from brushwork import losses, tiling
from brushwork.settings import Settings
from engine_helpers import random_engine, style_image

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


@pytest.fixture(scope="module")
def engine():
    # fp32: the seam statistics measure the blend; bf16's rounding adds its own noise to
    # 8 iterations (the bf16 path would be taken only on CPUs that have it).
    return random_engine("fp32")


@pytest.mark.parametrize(("h", "w", "tile", "overlap"), [(100, 230, 64, 16), (64, 64, 64, 16)])
def test_plan_covers_the_image_with_overlapping_tiles(h, w, tile, overlap):
    tiles = tiling.plan(h, w, tile, overlap)
    covered = torch.zeros(h, w)
    for t in tiles:
        assert t.y1 - t.y0 <= tile and t.x1 - t.x0 <= tile
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert covered.min() >= 1
    starts = sorted({t.x0 for t in tiles})
    ends = sorted({t.x1 for t in tiles})
    assert all(e - s >= overlap for s, e in zip(starts[1:], ends[:-1], strict=False))


def test_every_pixel_has_one_owner_split_along_the_overlap():
    h, w = 90, 150
    tiles = tiling.plan(h, w, 64, 16)
    canvas = tiling.Canvas(torch.zeros(1, 3, h, w), tiles, ramp=16)
    assert canvas.owner.min() >= 0
    everywhere = tiling.Tile(0, h, 0, w)
    for i, tile in enumerate(tiles):
        canvas.add(tile, i, torch.full((1, 3, tile.y1 - tile.y0, tile.x1 - tile.x0), float(i)))
    assert torch.equal(canvas.image()[0, 0].int(), canvas.owner)
    # Owners change in the middle of each overlap, away from the tiles' padded borders.
    row = canvas.owned(everywhere, 0)[0, 0, 0]
    first_edge = int(row.argmin())
    assert tiles[1].x0 + 4 <= first_edge <= tiles[0].x1 - 4


def test_tiled_grams_equal_the_whole_image_grams(engine):
    image = torch.rand(1, 3, 96, 144, generator=torch.Generator().manual_seed(0))
    whole = {n: losses.gram(a) for n, a in engine.features(image, set(STYLE_LAYERS)).items()}
    tiled = tiling.tiled_grams(engine.features, image, STYLE_LAYERS, tile=32, margin=64)
    for name in STYLE_LAYERS:
        assert torch.allclose(tiled[name], whole[name], rtol=1e-3, atol=1e-5 * whole[name].max())


def _textured(h: int, w: int) -> np.ndarray:
    """Smooth colour ramps under fine noise: gradients everywhere, no structure at tile edges."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([0.3 + 0.4 * x, 0.3 + 0.4 * y, 0.5 + 0.2 * np.sin(6 * x)], axis=2)
    rgb += rng.normal(0, 0.05, rgb.shape)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def test_tiled_result_has_no_seams(engine):
    h, w, tile = 112, 176, 64
    settings = Settings(size=0, iterations=8, scales=1, seed=0, tile=tile, style_weight=30)
    seen = []
    result = engine.stylize(_textured(h, w), [style_image(64, 64)], settings, progress=seen.append)
    tiles = tiling.plan(h, w, tile, tiling.overlap_for(tile))
    assert len(tiles) > 4
    assert seen[-1].total == result.iterations == 8 * len(tiles)

    grey = result.image.mean(axis=2)
    dx = np.abs(np.diff(grey, axis=1))  # dx[:, j] is the step from column j to j + 1
    in_band = np.zeros(w - 1, bool)
    starts, ends = sorted({t.x0 for t in tiles})[1:], sorted({t.x1 for t in tiles})[:-1]
    for a, b in zip(starts, ends, strict=True):
        in_band[a : b - 1] = True  # columns where two tiles overlap
    band, interior = dx[:, in_band], dx[:, ~in_band]
    assert band.size and interior.size
    # The blend neither smooths (averaging unrelated textures) nor sharpens the picture...
    assert 0.8 < band.mean() / interior.mean() < 1.25
    assert 0.8 < band.std() / interior.std() < 1.25
    # ...and no column where a tile begins or ends, or one tile's pixels meet the next's,
    # shows a step.
    owner = tiling.Canvas(torch.zeros(1, 1, h, w), tiles, ramp=tiling.overlap_for(tile)).owner
    handovers = set(np.flatnonzero((owner[:, 1:] != owner[:, :-1]).any(0).numpy()) + 1)
    edges = {t.x0 for t in tiles} - {0} | {t.x1 for t in tiles} - {w} | handovers
    for edge in edges:
        assert dx[:, edge - 1].mean() < 1.5 * interior.mean(), edge


def test_engine_tiles_by_itself_when_memory_is_short(engine, monkeypatch):
    settings = Settings(size=0, iterations=3, scales=1)
    assert engine.tile_side(settings, 150, 200) == 200  # fits: one tile
    monkeypatch.setattr(engine, "memory_fraction", 1e-5)
    side = engine.tile_side(settings, 150, 200)
    assert side % 64 == 0 and side < 200
    out = engine.stylize(_textured(150, 200), [style_image()], settings)
    assert out.image.shape == (150, 200, 3)
    assert out.iterations == 3 * len(tiling.plan(150, 200, side, tiling.overlap_for(side)))


def test_tiles_weigh_content_as_the_whole_image_does(engine, monkeypatch):
    """Every tile normalises its content term by the whole level's energy per activation
    element. With each tile's own energy, a tile of flat sky got a far larger content weight
    than a busy one, so less style, and the texture stepped where the two met."""
    h, w = 64, 160
    busy = np.full((h, w, 3), 128, np.uint8)
    busy[:, 80:] = np.random.default_rng(2).integers(0, 256, (h, w - 80, 3))
    per_element = []
    content_scale = losses.content_scale

    def spy(a_c, density=None):
        scale = content_scale(a_c, density)
        per_element.append(scale * a_c.numel())
        return scale

    monkeypatch.setattr(losses, "content_scale", spy)
    settings = Settings(size=0, iterations=1, scales=1, tile=96)
    engine.stylize(busy, [style_image(64, 64)], settings)
    assert len(per_element) == len(tiling.plan(h, w, 96, tiling.overlap_for(96))) == 2
    assert per_element[0] == pytest.approx(per_element[1], rel=1e-6)
    own = [content_scale(a) * a.numel() for a in _tile_content_features(engine, busy, 96)]
    assert own[0] > 1.5 * own[1]  # the case the shared energy is for: tiles differ a lot


def _tile_content_features(engine, image: np.ndarray, tile: int) -> list[torch.Tensor]:
    x = torch.from_numpy(image / np.float32(255)).permute(2, 0, 1)[None].float()
    tiles = tiling.plan(*image.shape[:2], tile, tiling.overlap_for(tile))
    layer = Settings().content_layer
    with torch.no_grad():
        return [engine.features(t.of(x), {layer})[layer] for t in tiles]
