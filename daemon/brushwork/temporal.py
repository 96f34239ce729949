"""Video frames stylised without flicker (Ruder, Dosovitskiy and Brox 2016): each frame starts
from the frames before it, warped to it by optical flow, and a temporal term holds it there
wherever the flow can be trusted. The one implementation the CLI, the daemon and GIMP use.

    stylize_frame(engine, content, styles, settings, *, previous=(), temporal=Temporal(),
                  init_image=None, progress=None, preview_every=0, cancel=None,
                  progress_every=1, preview_side=256) -> engine.Result

- `content`: frame t, an array as Engine.stylize takes it (H x W x C, uint8/uint16/float).
- `previous`: the frames before it as Previous(content, result, offset): frame t - offset's
  content as given (the clip's size) and its stylised frame (Result.image, any size: it is
  resized to this frame's output size). Empty for the first frame of a clip, which is then
  stylised as a still image. Which frames to keep: previous_indices(t, temporal.offsets).
- Computed here, not by the caller (clients stay light): for each previous frame, DIS flow
  at the output's size on the CPU, frame t -> t - k and back (flow.dis_flow, sharpened at
  motion boundaries); its result warped to frame t (flow.warp) and where that can be
  trusted (flow.reliability: forward-backward consistency, motion boundaries); the nearest
  frame that saw a pixel holds it (flow.combined). The frame starts from that target where
  it is reliable and from the settings' init (palette, content...) where it is not
  (disocclusions), at every pyramid level, and J gains losses.temporal_loss:
  temporal.weight toward the target where it is reliable, smoothness where it is not.
- The other arguments are Engine.stylize's; so are the Result, the progress reports (whose
  losses add "temporal" when there is a previous frame), Cancelled and the errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from brushwork import images
from brushwork.engine import Engine, Result
from brushwork.flow import Guide, combined, dis_flow, reliability, warp
from brushwork.scales import Size, output_size, resized, to_tensor
from brushwork.settings import Settings, Temporal

TEMPORAL = Temporal()  # the defaults


@dataclass(frozen=True)
class Previous:
    """An earlier frame: its content, its stylised result, and how many frames back it is."""

    content: np.ndarray
    result: np.ndarray
    offset: int = 1


def previous_indices(index: int, offsets: Sequence[int], first: int = 0) -> list[int]:
    """The frames frame `index` is held to (nearest first), none before `first`."""
    return [index - k for k in sorted(offsets) if index - k >= first]


class History:
    """The frames a clip's next frames are held to: add() each frame as it is done (or found
    done, on a resumed run), previous() the ones frame `index` needs; older ones are let go."""

    def __init__(self, offsets: Sequence[int] = TEMPORAL.offsets, first: int = 0) -> None:
        self.offsets, self.first = tuple(offsets), first
        self.frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, index: int, content: np.ndarray, result: np.ndarray) -> None:
        self.frames[index] = (content, result)
        for old in [i for i in self.frames if i <= index - max(self.offsets)]:
            del self.frames[old]

    def previous(self, index: int) -> list[Previous]:
        return [
            Previous(*self.frames[i], offset=index - i)
            for i in previous_indices(index, self.offsets, self.first)
            if i in self.frames
        ]


def stylize_frame(
    engine: Engine,
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    settings: Settings,
    *,
    previous: Sequence[Previous] = (),
    temporal: Temporal = TEMPORAL,
    **options: Any,
) -> Result:
    """Frame t stylised and held to the `previous` frames (see the module's docstring);
    `options` go to Engine.stylize."""
    guide = None
    if previous:
        size = output_size(content.shape[0], content.shape[1], settings.size)
        guide = make_guide(content, previous, size, temporal.weight, engine.device)
    return engine.stylize(content, styles, settings, guide=guide, **options)


def make_guide(
    content: np.ndarray,
    previous: Sequence[Previous],
    size: Size,
    weight: float,
    device: torch.device,
) -> Guide:
    """The earlier results warped to `content` at `size` (H, W), and how far each pixel is
    held to them."""
    here = _rgb_at(content, size)
    warped = []
    for p in sorted(previous, key=lambda p: p.offset):
        there = _rgb_at(p.content, size)
        flow = dis_flow(here, there).to(device)  # t -> t - k: where each pixel was
        back = dis_flow(there, here).to(device)
        result = to_tensor(_rgb_at(p.result, size), device)
        warped.append((warp(result, flow), reliability(flow, back)))
    target, mask = combined(warped)
    return Guide(target, mask, weight)


def _rgb_at(image: np.ndarray, size: Size) -> np.ndarray:
    """Float RGB (H, W, 3) at `size`; alpha dropped, grey made RGB."""
    return resized(images.split_alpha(images.to_float(image))[0], size)
