"""The frames filter's decisions without GIMP (unit-tested): which layers are the frames and
in what order, the range, the temporal strength, which earlier frames each job carries, names.

An animation in GIMP is its stack of layers, one a frame, played bottom layer first (GIMP's
own Filters > Animation and its GIF export read it so). Standard library and the shipped
`brushwork` settings only, like brushwork_logic.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from brushwork.errors import BrushworkError
from brushwork.settings import Temporal

DEFAULT_TEMPORAL_STRENGTH = 50  # Temporal().weight, the method's default
_DEFAULT_WEIGHT = Temporal().weight


@dataclass(frozen=True)
class FrameLayer:
    """A top-level layer as GIMP lists it (top first): its id, name, whether it is a group,
    and where it lies (x, y, width, height)."""

    id: int
    name: str
    is_group: bool = False
    geometry: tuple[int, int, int, int] = (0, 0, 0, 0)


def frames(
    layers: Sequence[FrameLayer], first: int, last: int, canvas: tuple[int, int]
) -> list[FrameLayer]:
    """The frames to stylise, in playing order (the bottom layer first): every top-level
    pixel layer (layer groups, such as the results of an earlier run, are left out), frames
    `first` to `last` (1-based; last 0 = the top layer). Each must cover the `canvas`
    (width, height) exactly: the optical flow compares whole frames."""
    stack = [layer for layer in reversed(layers) if not layer.is_group]
    if not stack:
        raise BrushworkError("the image has no pixel layers to use as frames")
    end = last or len(stack)
    if not 1 <= first <= len(stack):
        raise BrushworkError(
            f"first frame {first}: the image has {len(stack)} frames (layers), numbered from 1"
            " at the bottom"
        )
    if not first <= end <= len(stack):
        raise BrushworkError(
            f"last frame {last}: give {first} to {len(stack)} (or 0 for the top layer)"
        )
    chosen = stack[first - 1 : end]
    for number, layer in enumerate(chosen, first):
        if layer.geometry != (0, 0, *canvas):
            x, y, w, h = layer.geometry
            raise BrushworkError(
                f"frame {number} ({layer.name!r}) is {w}x{h} at ({x}, {y}); every frame must"
                f" cover the {canvas[0]}x{canvas[1]} image (Layer > Layer to Image Size)"
            )
    return chosen


def temporal(strength: int) -> Temporal:
    """The temporal settings of a 0..100 strength: 0 styles each frame on its own, 50 is the
    method's default weight; the weight grows as the square (100: four times the default),
    as holding a frame to the last one matters in orders of magnitude."""
    if not 0 <= strength <= 100:
        raise BrushworkError(f"temporal strength must be 0 to 100, got {strength}")
    return Temporal(weight=_DEFAULT_WEIGHT * (strength / DEFAULT_TEMPORAL_STRENGTH) ** 2)


def earlier(index: int, offsets: Sequence[int]) -> list[int]:
    """The indices of the frames already done that frame `index` (0-based in the run) is held
    to, nearest first: a prefix of the offsets, as PROTOCOL.md asks."""
    return [index - k for k in sorted(offsets) if index - k >= 0]


def group_name(style: str, first: int, last: int) -> str:
    return f"{style} style, frames {first}-{last}"


def frame_name(source: str) -> str:
    """A result frame's layer name: the source's, so that GIMP's frame timings in it such as
    "(100ms)" and "(replace)" carry over."""
    return f"{source} styled"


def progress_text(done: int, count: int, step: str) -> str:
    """'Frame 3 of 12: Scale 2 of 3, step 40 of 67'."""
    return f"Frame {done + 1} of {count}: {step}"
