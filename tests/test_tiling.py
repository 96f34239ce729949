"""Tiling past memory: tiles cover the image, global style targets, and no visible seams."""

import numpy as np
import pytest
import torch

from brushwork import losses, optimize, tiling
from brushwork.engine import Engine
from brushwork.settings import Settings
from engine_helpers import content_image, random_engine, style_image

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
    for i, tile in enumerate(tiles):
        canvas.add(tile, i, torch.full((1, 3, tile.y1 - tile.y0, tile.x1 - tile.x0), float(i)))
    # Each tile writes every pixel it has not seen finished; its owner writes last.
    assert torch.equal(canvas.image()[0, 0].int(), canvas.owner)
    # Owners change in the middle of each overlap, away from the tiles' padded borders.
    first_edge = int((canvas.owner[0] != 0).int().argmax())
    assert tiles[1].x0 + 4 <= first_edge <= tiles[0].x1 - 4


def test_a_tile_moves_all_but_the_finished_pixels_its_steps_fading_in_and_out():
    h, w = 90, 150
    tiles = tiling.plan(h, w, 64, 16)
    canvas = tiling.Canvas(torch.zeros(1, 3, h, w), tiles, ramp=16)
    i, tile = 4, tiles[4]  # tiles 0-3 finished above and to the left; the image's bottom edge
    assert (tile.y0, tile.x0) > (0, 0) and tile.x1 < w and tile.y1 == h
    free = canvas.free(tile, i)[0, 0]
    finished = canvas.finished(tile, i)[0, 0].bool()
    assert finished.any() and free[finished].eq(0).all()
    assert free[~finished].gt(0).all()  # the later tiles' pixels move too
    # Along the bottom row: from 0 on the finished pixels a smooth rise to 1 over `fade` px,
    # and a smooth fall towards the window's inner right edge, beyond which nothing moves.
    row, first = free[-1], int((~finished[-1]).int().argmax())
    rise, fall = row[first : first + canvas.fade + 1], row[-canvas.fade :]
    assert rise[0] < 0.05 and rise[-1] == 1 and (rise.diff() > 0).all()
    assert fall[-1] < 0.05 and (fall.diff() < 0).all()
    # The image's own edge holds nothing back: the bottom row moves like the rows above it.
    assert torch.equal(free[-1], free[-canvas.fade])
    # What the tile writes back: everything but the finished pixels.
    canvas.add(tile, i, torch.ones(1, 3, tile.y1 - tile.y0, tile.x1 - tile.x0))
    window = tile.of(canvas.image())[0, 0]
    assert window[finished].eq(0).all() and window[~finished].eq(1).all()


def test_a_step_scale_of_zero_holds_pixels_bit_for_bit():
    """A tile's optimiser moves v, with the pixels x = x0 + free * v: a step of v moves each
    pixel by its scale, not at all where the scale is 0, and the bounds keep x in [0, 1]."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 8, 12, generator=gen)
    free = torch.ones(1, 1, 8, 12)
    free[..., :4] = 0
    free[..., 4:8] = 0.25
    pixels = optimize._Scaled(x0, free)
    assert torch.equal(pixels.pixels(), x0)
    with torch.no_grad():
        pixels.leaf += 0.4 * torch.randn(x0.shape, generator=gen)
        moved = pixels.pixels()
        assert torch.equal(moved[..., :4], x0[..., :4])
        assert torch.allclose(moved - x0, free * pixels.leaf)
        pixels.leaf += 100 * torch.randn(x0.shape, generator=gen)
        pixels.clamp_()
        clamped = pixels.pixels()
    assert torch.equal(clamped[..., :4], x0[..., :4])
    assert clamped.min() >= 0 and clamped.max() <= 1
    assert (clamped[..., 4:] == 0).any() and (clamped[..., 4:] == 1).any()


def test_a_style_described_by_tiles_is_described_as_a_whole(engine):
    """A style image too large for one pass: its moments summed over tiles are the whole
    image's, and its marginals (the sliced loss) the whole image's quantiles."""
    image = torch.rand(1, 3, 96, 144, generator=torch.Generator().manual_seed(0))
    acts = engine.features(image, set(STYLE_LAYERS))
    w2, sliced = losses.STYLE_LOSSES["w2"], losses.STYLE_LOSSES["sw"]
    moments = tiling.ImageSums(engine.features, image, STYLE_LAYERS, 32, w2, margin=64).described()
    tiled = tiling.ImageSums(
        engine.features, image, STYLE_LAYERS, 32, sliced, margin=64
    ).described()
    for name in STYLE_LAYERS:
        whole = w2.describe(acts[name])
        for t, w in ((moments[name].mean, whole.mean), (moments[name].second, whole.second)):
            assert torch.allclose(t, w, rtol=1e-3, atol=1e-5 * w.abs().max())
        t, w = tiled[name].values, sliced.describe(acts[name]).values
        assert t.shape == w.shape
        assert (t - w).abs().max() < 0.01 * (w[:, -1] - w[:, 0]).max()


def test_image_sums_after_a_change_in_one_window_are_computed_afresh(engine):
    """Only the cores whose context reaches the changed window are computed again, and the
    totals are those of the changed image computed from scratch."""
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 96, 224, generator=g)
    w2 = losses.STYLE_LOSSES["w2"]
    sums = tiling.ImageSums(engine.features, image, STYLE_LAYERS, 32, w2, margin=32)
    before = list(sums.sums)
    window = tiling.Tile(0, 40, 0, 40)
    window.of(image).copy_(torch.rand(1, 3, 40, 40, generator=g))
    sums.update(image, window)
    fresh = tiling.ImageSums(engine.features, image, STYLE_LAYERS, 32, w2, margin=32)
    for name in STYLE_LAYERS:
        (got, n), (want, fresh_n) = sums.total()[name], fresh.total()[name]
        assert n == fresh_n
        assert torch.allclose(got.second, want.second, rtol=1e-5)
    kept = [c is b for c, b in zip(sums.sums, before, strict=True)]
    assert any(kept) and not all(kept)  # cores far from the window were not recomputed


def test_layer_positions_count_what_vgg_and_the_cores_hold(engine):
    """A tile's share of the content term is its positions over the whole image's, counted
    without running the content layer over the image: every pooling floors, and the cores
    (a 16 px grid, the last row and column short) hold exactly that many."""
    layers = ("conv1_2", "conv2_2", "conv3_3", "conv4_2", "conv5_1")
    image = torch.rand(1, 3, 99, 141, generator=torch.Generator().manual_seed(2))
    acts = engine.features(image, set(layers))
    sums = tiling.ImageSums(engine.features, image, layers, 48, losses.STYLE_LOSSES["w2"])
    for name in layers:
        n = tiling.layer_positions(name, 99, 141)
        assert n == acts[name].shape[-2] * acts[name].shape[-1] == sums.total()[name][1]


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


def _line_ratios(image: np.ndarray, axis: int) -> np.ndarray:
    """Mean |step| across each line between rows (axis 0) or columns (axis 1), over the
    image's median line."""
    step = np.abs(np.diff(image, axis=axis)).mean(axis=(1 - axis, 2))
    return step / np.median(step)


@pytest.mark.weights
def test_tiles_hand_over_without_a_line(weights_file):
    """Where one tile's pixels meet the next's, the step across the line is the untiled
    image's there, one line at a time (bench/seams.py measures real jobs). Real weights: the
    line came from VGG's actual filters (a random VGG's texture hid it). With tiles that held
    the next tiles' pixels still, the handover lines stood at 2.0-2.7x the median line here,
    above every other line (at most 2.0x), the untiled run's at 1.0-1.1x; now 0.8-1.2x."""
    engine = Engine(weights=weights_file, device="cpu", precision="fp32")
    h, w, tile = 96, 128, 64
    out = {
        t: engine.stylize(
            content_image(h, w), [style_image(64, 64)],
            Settings(size=0, iterations=20, scales=1, seed=0, tile=t),
        ).image
        for t in (tile, 0)
    }  # fmt: skip
    tiles = tiling.plan(h, w, tile, tiling.overlap_for(tile))
    owner = tiling.Canvas(torch.zeros(1, 1, h, w), tiles, tiling.overlap_for(tile)).owner.numpy()
    for axis in (0, 1):
        tiled, whole = _line_ratios(out[tile], axis), _line_ratios(out[0], axis)
        handover = np.flatnonzero((np.diff(owner, axis=axis) != 0).any(axis=1 - axis))
        rest = np.delete(tiled, handover)[2:-2]  # VGG's padding marks the image's own edges
        assert handover.size
        for k in handover:
            assert tiled[k] < rest.max(), (axis, k, tiled[k], rest.max())
            assert tiled[k] < whole[k] + 0.5, (axis, k, tiled[k], whole[k])


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


def test_each_tile_is_scored_on_the_whole_image_statistics(engine, monkeypatch):
    """A tile's style term sees the image's moments: the positions the tile owns plus the rest
    of the image (losses.Rest), counted over the whole image. Matched on its own, every tile
    was asked to hold the style's whole distribution: Starry Night's moon came back in each
    tile, the river's too (docs/quality.md, "Tiled against untiled")."""
    h, w, tile = 96, 160, 64
    seen = []
    style_loss = losses.style_loss

    def spy(kind, targets, acts, weights, rests=None):
        seen.append(({n: acts[n].shape[-2] * acts[n].shape[-1] for n in weights}, rests))
        return style_loss(kind, targets, acts, weights, rests)

    monkeypatch.setattr(losses, "style_loss", spy)
    settings = Settings(size=0, iterations=1, scales=1, tile=tile)
    engine.stylize(_textured(h, w), [style_image(64, 64)], settings)
    assert len(seen) == len(tiling.plan(h, w, tile, tiling.overlap_for(tile))) > 2
    whole = engine.features(torch.zeros(1, 3, h, w), set(settings.style_layers))
    for name in settings.style_layers:
        count = whole[name].shape[-2] * whole[name].shape[-1]
        owned = [sizes[name] for sizes, _ in seen]
        assert [r[name].count for _, r in seen] == [count] * len(seen)  # the image's positions
        assert all(0 < n < count for n in owned)  # a part of them each...
        assert abs(sum(owned) - count) <= 0.1 * count  # ...which together cover the image


def test_tiles_under_the_sliced_loss_rank_among_the_whole_image(engine, monkeypatch):
    """Under the sliced loss each tile's style term sees the marginals of the rest of the
    image (losses.SlicedRest), kept core by core as the tiles move it."""
    rests = []
    sliced = losses.SlicedLoss.__call__

    def spy(self, target, a_g, weight, rest=None):
        rests.append(rest)
        return sliced(self, target, a_g, weight, rest)

    monkeypatch.setattr(losses.SlicedLoss, "__call__", spy)
    settings = Settings(size=0, iterations=1, scales=1, tile=64, style_loss="sw")
    engine.stylize(_textured(96, 160), [style_image(64, 64)], settings)
    tiles = len(tiling.plan(96, 160, 64, tiling.overlap_for(64)))
    assert len(rests) == tiles * len(settings.style_layers)
    assert all(isinstance(r, losses.SlicedRest) for r in rests)


def test_a_tiled_level_runs_two_rounds_over_its_tiles_the_first_with_a_third_of_the_steps(
    engine, monkeypatch
):
    """The first round's tiles see a rest not yet worked at this level and overdo their
    strokes to make up for it; they get a third of the steps, the second round the rest."""
    assert [optimize.round_steps(n) for n in (60, 3, 2, 1)] == [[20, 40], [1, 2], [2], [1]]
    assert all(sum(optimize.round_steps(n)) == n for n in range(200))
    calls = []
    original = optimize.Run.optimize

    def spy(self, x, content, targets, steps, *args, **kwargs):
        calls.append(steps)
        return original(self, x, content, targets, steps, *args, **kwargs)

    monkeypatch.setattr(optimize.Run, "optimize", spy)
    settings = Settings(size=0, iterations=6, scales=1, tile=64)
    result = engine.stylize(_textured(96, 160), [style_image(64, 64)], settings)
    tiles = len(tiling.plan(96, 160, 64, tiling.overlap_for(64)))
    assert calls == [2] * tiles + [4] * tiles
    assert result.iterations == 6 * tiles
