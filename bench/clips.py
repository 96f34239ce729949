"""Synthetic clips whose exact optical flow is known: a photo seen by a camera that pans and
zooms by known amounts each frame, with a textured disc crossing it in front.

Frame t shows the photo point A_t(p) = c_t + (p - o) / (base * zoom^t) at pixel p (o the
frame's centre, c_t = c_0 + t * pan the camera's aim in photo px), except inside the disc,
which sits at q_t = q_0 + t * velocity and carries its texture with it. So the exact flow from
frame t to frame t-1 is A_{t-1}^-1(A_t(p)) - p on the background and -velocity on the disc;
a pixel of frame t is visible in frame t-1 where that lands inside the frame and, for the
background, outside the disc as it was in frame t-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass
class Clip:
    frames: list[np.ndarray]  # float32 (H, W, 3) in [0, 1]
    flows: list[torch.Tensor | None]  # exact flow t -> t-1, (1, 2, H, W); None for frame 0
    visible: list[torch.Tensor | None]  # (1, 1, H, W): 1 where frame t's pixel is in t-1


def _load(path: str, long_side: int) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    scale = long_side / max(image.size)
    image = image.resize([round(s * scale) for s in image.size], Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None]


def _sample(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """image at (1, 2, H, W) px positions (x, y), bilinear."""
    h, w = image.shape[-2:]
    scale = torch.tensor([2 / (w - 1), 2 / (h - 1)]).view(1, 2, 1, 1)
    grid = (points * scale - 1).permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def make_clip(
    photo: str,
    sprite: str,
    frames: int = 8,
    side: int = 256,
    pan: tuple[float, float] = (3.0, 1.0),
    zoom: float = 1.01,
    velocity: tuple[float, float] = (-12.0, 0.0),
    radius: float = 0.18,
) -> Clip:
    """`frames` frames, side x 3/4 side px; pan and the disc's velocity in px a frame at 256 px
    (scaled with the side), zoom a frame's magnification, the disc's radius as a share of the
    width. The disc enters at the right and crosses leftward."""
    h, w = round(side * 3 / 4), side
    source = _load(photo, round(side * 1.6))  # room for the pan and the zoom out of the frame
    texture = _load(sprite, round(2 * radius * w) + 2)
    r = radius * w
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    p = torch.stack([xs, ys])[None]
    o = torch.tensor([(w - 1) / 2, (h - 1) / 2]).view(1, 2, 1, 1)
    c0 = torch.tensor([(source.shape[-1] - 1) / 2, (source.shape[-2] - 1) / 2]).view(1, 2, 1, 1)
    aim = torch.tensor(pan).view(1, 2, 1, 1) * side / 256
    v = torch.tensor(velocity).view(1, 2, 1, 1) * side / 256
    q0 = torch.tensor([0.85 * w if velocity[0] < 0 else 0.15 * w, 0.45 * h]).view(1, 2, 1, 1)
    t_centre = torch.tensor([(texture.shape[-1] - 1) / 2, (texture.shape[-2] - 1) / 2]).view(
        1, 2, 1, 1
    )

    def photo_at(t: int, at: torch.Tensor) -> torch.Tensor:  # A_t
        return c0 + t * aim + (at - o) / zoom**t

    def frame_at(t: int, point: torch.Tensor) -> torch.Tensor:  # A_t^-1
        return o + (point - c0 - t * aim) * zoom**t

    def disc(t: int, at: torch.Tensor) -> torch.Tensor:
        return ((at - (q0 + t * v)).pow(2).sum(1, keepdim=True) <= r * r).float()

    clip = Clip([], [], [])
    for t in range(frames):
        background = _sample(source, photo_at(t, p))
        sprite_px = _sample(texture, p - (q0 + t * v) + t_centre)
        inside = disc(t, p)
        frame = inside * sprite_px + (1 - inside) * background
        clip.frames.append(frame[0].permute(1, 2, 0).numpy().clip(0, 1))
        if t == 0:
            clip.flows.append(None)
            clip.visible.append(None)
            continue
        before = frame_at(t - 1, photo_at(t, p))
        flow = inside * (-v).expand_as(p) + (1 - inside) * (before - p)
        lands = flow + p
        in_frame = (
            (lands[:, :1] >= 0)
            & (lands[:, :1] <= w - 1)
            & (lands[:, 1:] >= 0)
            & (lands[:, 1:] <= h - 1)
        )
        hidden = (1 - inside) * disc(t - 1, lands)  # background that the disc covered in t-1
        # one pixel off the disc's rim each way: those pixels mix the disc and the background
        rim = (disc(t, p) != _grown(inside)) | (_grown(inside) != _grown(_grown(inside)))
        visible = in_frame.float() * (1 - hidden) * (~rim).float()
        clip.flows.append(flow)
        clip.visible.append(visible)
    return clip


def _grown(mask: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(mask, 3, stride=1, padding=1)
