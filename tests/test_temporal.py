"""temporal.stylize_frame on a random-weight VGG16 and tiny frames (fast; no real weights)."""

import numpy as np
import pytest

from brushwork import temporal
from brushwork.settings import Settings, Temporal
from engine_helpers import random_engine, style_image
from test_flow import texture

# Noise starts with a different seed per frame: independent frames share nothing, so all the
# agreement between two frames is the temporal term's.
FAST = Settings(size=0, iterations=4, scales=1, init="noise", style_loss="gram")


@pytest.fixture(scope="module")
def engine():
    return random_engine("fp32")


def pan(shift: int = 3, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Two frames of a texture panned `shift` px left (the content moves right)."""
    big = texture(size + 16, size + 16)
    return big[8:-8, 8:-8], big[8:-8, 8 - shift : -8 - shift]


def warping_error(frame: np.ndarray, before: np.ndarray, shift: int) -> float:
    """Mean squared difference between a frame and the frame before it moved by the exact
    flow, over pixels seen in both (a margin off the borders)."""
    return float(((frame[6:-6, 6 + shift : -6] - before[6:-6, 6 : -6 - shift]) ** 2).mean())


def test_a_frame_held_to_the_one_before_flickers_far_less(engine):
    first, second = pan()
    style = [style_image()]
    a = temporal.stylize_frame(engine, first, style, FAST.replace(seed=1)).image
    alone = engine.stylize(second, style, FAST.replace(seed=2)).image
    held = temporal.stylize_frame(
        engine, second, style, FAST.replace(seed=2),
        previous=[temporal.Previous(first, a)], temporal=Temporal(weight=100, offsets=(1,)),
    )  # fmt: skip
    assert "temporal" in held.losses
    assert warping_error(held.image, a, 3) < warping_error(alone, a, 3) / 5


def test_disoccluded_pixels_start_free(engine):
    """A pan brings new pixels in at the left edge: nothing holds them, they start from the
    settings' init like a still image's."""
    first, second = pan(shift=6)
    guide = temporal.make_guide(
        second, [temporal.Previous(first, np.zeros_like(first))], (48, 48), 1.0, engine.device
    )
    assert guide.mask[0, 0, 8:-8, :4].max() == 0
    assert guide.mask[0, 0, 8:-8, 12:-8].mean() > 0.95


def test_the_first_frame_is_a_still_image(engine):
    first, _ = pan()
    style = [style_image()]
    a = temporal.stylize_frame(engine, first, style, FAST.replace(seed=1))
    b = engine.stylize(first, style, FAST.replace(seed=1))
    assert np.array_equal(a.image, b.image) and "temporal" not in a.losses


def test_previous_indices_are_the_offsets_back_within_the_clip():
    assert temporal.previous_indices(5, (1, 2, 4)) == [4, 3, 1]
    assert temporal.previous_indices(1, (1, 2, 4)) == [0]
    assert temporal.previous_indices(3, (4, 1), first=2) == [2]


def test_luminance_only_frames_are_held_too(engine):
    first, second = pan()
    style = [style_image()]
    settings = FAST.replace(preserve_colors="luminance", seed=1)
    a = temporal.stylize_frame(engine, first, style, settings).image
    held = temporal.stylize_frame(
        engine, second, style, settings.replace(seed=2), previous=[temporal.Previous(first, a)]
    )
    assert held.image.shape == a.shape and "temporal" in held.losses


def test_temporal_settings_are_checked():
    with pytest.raises(ValueError, match="offsets must increase"):
        Temporal(offsets=(2, 1))
    with pytest.raises(ValueError, match="temporal weight"):
        Temporal(weight=-1)
    with pytest.raises(ValueError, match="unknown temporal setting"):
        Temporal.from_dict({"wieght": 3})
    assert Temporal.from_dict(Temporal(offsets=(1, 3)).to_dict()) == Temporal(offsets=(1, 3))


def test_history_keeps_the_frames_the_next_ones_need():
    history = temporal.History((1, 2, 4), first=3)
    frame = np.zeros((2, 2, 3), np.float32)
    for i in range(3, 10):
        history.add(i, frame, frame + i)
    assert [(p.offset, p.result[0, 0, 0]) for p in history.previous(10)] == [(1, 9), (2, 8), (4, 6)]
    assert sorted(history.frames) == [6, 7, 8, 9]
    resumed = temporal.History((1, 2, 4), first=3)
    resumed.add(3, frame, frame)
    assert [p.offset for p in resumed.previous(4)] == [1]  # nothing before the first frame
