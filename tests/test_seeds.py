"""Seeds: the seed picks what is free to vary at equal quality (the sliced loss's directions
and a small start jitter); an unset seed is the one picture every unseeded job has made."""

import numpy as np
import pytest
import torch

from brushwork import losses
from brushwork.settings import SEED_DRAWN_MAX, Settings, draw_seed
from engine_helpers import content_image, random_engine, style_image

FAST = Settings(size=48, iterations=8, scales=1)


@pytest.fixture(scope="module")
def engine():
    return random_engine()


def run(engine, settings):
    return engine.stylize(content_image(), [style_image()], settings)


def test_seeded_directions_are_other_rotations_and_the_unseeded_one_stays():
    n = 64
    g = torch.Generator().manual_seed(n)  # the rotation unseeded jobs have always used
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    assert torch.equal(losses.directions(n), (q * r.diagonal().sign()).float())
    seeded = [losses.directions(n, seed) for seed in (0, 1, n)]
    for d in seeded:
        assert torch.allclose(d.T @ d, torch.eye(n), atol=1e-5)
        assert not torch.allclose(d, losses.directions(n), atol=1e-3)
    assert not torch.allclose(seeded[0], seeded[1], atol=1e-3)
    assert torch.equal(losses.directions(n, 1), seeded[1])


def test_the_seed_picks_a_sliced_loss_of_its_own():
    assert losses.named("sw") is losses.STYLE_LOSSES["sw"]
    assert losses.named("gram", 5) is losses.STYLE_LOSSES["gram"]
    seeded = losses.named("sw", 5)
    assert seeded.seed == 5 and seeded.describes != losses.named("sw").describes


def test_the_same_seed_repeats_exactly_and_another_paints_another_picture_at_equal_loss(engine):
    """Two seeds end near the same objective (their spread at full size is what the harness
    measures: docs/quality.md, "Seeds"), and neither is the unseeded picture."""
    a, b, c, unseeded = (run(engine, FAST.replace(seed=s)) for s in (11, 11, 12, None))
    assert np.array_equal(a.image, b.image)
    for other in (c, unseeded):
        assert np.abs(a.image - other.image).mean() > 0.005
    totals = [r.losses["total"] for r in (a, c, unseeded)]
    assert max(totals) < 1.5 * min(totals)


def test_the_seed_varies_the_start_under_every_style_loss(engine):
    """The Gram loss has no directions: the jitter alone makes its seeds differ."""
    a, c = (run(engine, FAST.replace(style_loss="gram", seed=s)).image for s in (11, 12))
    assert np.abs(a - c).mean() > 0.005


def test_unseeded_runs_repeat_exactly(engine):
    assert np.array_equal(run(engine, FAST).image, run(engine, FAST).image)


def test_a_seeded_loss_describes_targets_and_rests_on_the_seeds_directions():
    """A tile's rest (the image described less the tile's projections) is the marginals of
    the positions left, on the seed's directions, as the style's target is."""
    loss = losses.named("sw", 3)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 3, 8, 50, dtype=torch.float64, generator=g).exp()  # skewed
    flat = a.flatten(2)
    part, others = flat[..., :120, None], flat[..., 120:, None]
    rest = loss.rest(loss.describe(a), 400, part)
    assert torch.allclose(rest.marginals.values, loss.describe(others).values, atol=1e-4)
    unseeded = losses.named("sw").describe(others).values
    assert not torch.allclose(rest.marginals.values, unseeded, atol=1e-2)
    assert torch.equal(loss.target(loss.describe(a)).directions, losses.directions(3, 3).double())


def test_draw_seed_gives_fresh_seeds_a_32_bit_field_holds():
    seeds = {draw_seed() for _ in range(20)}
    assert len(seeds) > 15
    assert all(0 <= s <= SEED_DRAWN_MAX for s in seeds)
    Settings(seed=max(seeds))  # a valid setting
