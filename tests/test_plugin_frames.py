"""The frames filter's decisions, without GIMP (plugin/brushwork/brushwork_frames_logic.py)."""

from __future__ import annotations

import pytest

from brushwork.errors import BrushworkError
from brushwork.settings import Temporal
from plugin_helpers import plugin_module

logic = plugin_module("brushwork_frames_logic")
Layer = logic.FrameLayer

CANVAS = (64, 48)
WHOLE = (0, 0, *CANVAS)
# As GIMP lists them: the top layer first. An earlier run's result group sits on top.
STACK = [
    Layer(9, "result", True, WHOLE),
    *(Layer(n, f"Frame {n} (100ms)", False, WHOLE) for n in (4, 3, 2, 1)),
]


def test_frames_play_bottom_first_and_groups_are_not_frames():
    assert [f.id for f in logic.frames(STACK, 1, 0, CANVAS)] == [1, 2, 3, 4]


def test_a_range_is_counted_from_the_bottom():
    assert [f.id for f in logic.frames(STACK, 2, 3, CANVAS)] == [2, 3]
    assert [f.id for f in logic.frames(STACK, 4, 0, CANVAS)] == [4]


@pytest.mark.parametrize(
    ("first", "last", "says"),
    [
        (5, 0, "first frame 5: the image has 4 frames (layers), numbered from 1 at the bottom"),
        (3, 2, "last frame 2: give 3 to 4 (or 0 for the top layer)"),
        (1, 7, "last frame 7: give 1 to 4"),
    ],
)
def test_a_range_beyond_the_frames_is_one_line(first, last, says):
    with pytest.raises(BrushworkError, match=says.replace("(", r"\(").replace(")", r"\)")):
        logic.frames(STACK, first, last, CANVAS)


def test_an_image_of_groups_only_has_no_frames():
    with pytest.raises(BrushworkError, match="no pixel layers"):
        logic.frames([Layer(1, "g", is_group=True)], 1, 0, CANVAS)


def test_a_frame_that_does_not_cover_the_image_is_named_with_the_fix():
    moved = [*STACK[:2], Layer(3, "Frame 3", False, (5, 2, 40, 30)), *STACK[3:]]
    with pytest.raises(BrushworkError) as e:
        logic.frames(moved, 1, 0, CANVAS)
    assert str(e.value) == (
        "frame 3 ('Frame 3') is 40x30 at (5, 2); every frame must cover the 64x48 image"
        " (Layer > Layer to Image Size)"
    )
    assert [f.id for f in logic.frames(moved, 1, 2, CANVAS)] == [1, 2]


def test_temporal_strength_50_is_the_default_and_0_styles_frames_alone():
    assert logic.temporal(50) == Temporal()
    assert logic.temporal(0).weight == 0
    assert logic.temporal(100).weight == 4 * Temporal().weight
    with pytest.raises(BrushworkError):
        logic.temporal(101)


def test_each_frame_carries_the_frames_done_at_the_offsets_nearest_first():
    assert logic.earlier(0, (1, 2, 4)) == []
    assert logic.earlier(2, (1, 2, 4)) == [1, 0]
    assert logic.earlier(6, (1, 2, 4)) == [5, 4, 2]


def test_names_keep_gimps_frame_timings():
    assert "(100ms)" in logic.frame_name("Frame 3 (100ms)")
    assert logic.group_name("the-scream", 1, 12) == "the-scream style, frames 1-12"
    assert logic.progress_text(2, 12, "Step 4 of 9") == "Frame 3 of 12: Step 4 of 9"
