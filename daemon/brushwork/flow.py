"""Optical flow between content frames, warping by it, and where a warp can be trusted: what
the temporal term of Ruder, Dosovitskiy and Brox 2016 ("Artistic style transfer for videos")
holds frame t to.

Flows are (1, 2, H, W) tensors, (x, y) displacements in px at the image's own size. The flow
from frame a to frame b, f, says where each pixel p of a is in b: a(p) ~ b(p + f(p)); so b
warped by f, b(p + f(p)), looks like a. DIS (Kroeger et al. 2016, OpenCV) computes it on the
CPU: classical, no learned weights, ~30 ms a 512 px pair (docs/video.md); OpenCV is imported
only when a flow is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from brushwork.images import to_float
from brushwork.scales import Size, resize, to_tensor

# Forward-backward consistency (Sundaram et al. 2010, as Ruder et al. use it): the flow t -> s
# and the flow s -> t at the point it lands on should cancel, within 1 % of their squared
# lengths plus half a pixel squared.
CONSISTENCY_RELATIVE = 0.01
CONSISTENCY_PX2 = 0.5
# Motion boundaries: where the flow's squared gradient exceeds 1 % of its squared length plus
# 0.002, neighbours move apart and the warp smears one object over another.
BOUNDARY_RELATIVE = 0.01
BOUNDARY_ABSOLUTE = 0.002
# DIS fits one motion to each 8 px patch, so across a motion boundary it spreads one side's
# motion over the other for about a patch. Each pixel then takes, of the flows within REACH
# px of it (every STEP px), the one that best carries its PATCH x PATCH neighbourhood onto
# the target frame: a photometric vote that puts the boundary back where the images have it
# (PatchMatch's propagation, Barnes et al. 2009, among neighbours only). On bench/clips.py's
# clip at 128 px it halved the end-point error (0.16 to 0.09 px) and the pixels the mask must
# free near a moving object (7.6 % to 4.4 % of those visible): docs/video.md.
SHARPEN_REACH = 8
SHARPEN_STEP = 4
SHARPEN_PATCH = 5


def dis_flow(source: np.ndarray, target: np.ndarray) -> torch.Tensor:
    """The flow from `source` to `target` (float or uint8 (H, W, 3) images of one size), by
    OpenCV's DIS at its "medium" preset down to full resolution (the preset stops at half,
    and its 0.43 px error was 0.18 px at full: docs/video.md), then sharpened at motion
    boundaries (sharpened), as a (1, 2, H, W) float32 CPU tensor."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    flow = dis.calc(_grey8(source), _grey8(target), None)
    flow = torch.from_numpy(flow).permute(2, 0, 1)[None].contiguous()
    cpu = torch.device("cpu")
    return sharpened(
        flow, to_tensor(to_float(source)[..., :3], cpu), to_tensor(to_float(target)[..., :3], cpu)
    )


def sharpened(flow: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`flow` (source -> target) where each pixel's motion is the one, of those within
    SHARPEN_REACH px, under which its SHARPEN_PATCH-wide neighbourhood of `source` best
    matches `target` (mean absolute difference); `source`, `target` (1, C, H, W)."""
    reach, h, w = SHARPEN_REACH, *flow.shape[-2:]
    padded = F.pad(flow, (reach,) * 4, mode="replicate")
    best, best_cost = flow, _patch_cost(flow, source, target)
    for dy in range(-reach, reach + 1, SHARPEN_STEP):
        for dx in range(-reach, reach + 1, SHARPEN_STEP):
            if dx == dy == 0:
                continue
            candidate = padded[..., reach + dy : reach + dy + h, reach + dx : reach + dx + w]
            cost = _patch_cost(candidate, source, target)
            better = cost < best_cost
            best_cost = torch.where(better, cost, best_cost)
            best = torch.where(better, candidate, best)
    return best.contiguous()


def _patch_cost(flow: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    error = (warp(target, flow) - source).abs().mean(1, keepdim=True)
    k = SHARPEN_PATCH
    return F.avg_pool2d(error, k, stride=1, padding=k // 2, count_include_pad=False)


def _grey8(image: np.ndarray) -> np.ndarray:
    rgb = image[..., :3].astype(np.float32)
    if image.dtype != np.uint8:
        rgb = rgb * 255
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32) if rgb.shape[-1] == 3 else rgb[..., 0]
    return np.ascontiguousarray(grey.clip(0, 255).round().astype(np.uint8))


def _grid(flow: torch.Tensor) -> torch.Tensor:
    """p + f(p) for every pixel p, as (1, 2, H, W) px."""
    h, w = flow.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=flow.dtype, device=flow.device),
        torch.arange(w, dtype=flow.dtype, device=flow.device),
        indexing="ij",
    )
    return torch.stack([xs, ys])[None] + flow


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """image(p + flow(p)), bilinear, the border repeated outside: `image` (1, C, H, W) seen
    from the frame the flow starts in."""
    h, w = image.shape[-2:]
    at = _grid(flow.to(image))
    # grid_sample's coordinates: -1 and 1 are the centres of the first and last pixels
    scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=image.device)
    grid = (at * scale.view(1, 2, 1, 1).to(at) - 1).permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def reliability(flow: torch.Tensor, back: torch.Tensor) -> torch.Tensor:
    """c(p) in {0, 1} (1, 1, H, W): 1 where the flow t -> s (`flow`) can be trusted at p.

    0 where p + flow(p) leaves the frame; where the flow s -> t (`back`) at p + flow(p) does not
    bring p back (|flow + back~|^2 > 0.01 (|flow|^2 + |back~|^2) + 0.5, back~ = back warped by
    flow): p was hidden in s (disoccluded) or the flow is wrong there; and on motion boundaries
    (|grad flow|^2 > 0.01 |flow|^2 + 0.002).
    """
    h, w = flow.shape[-2:]
    at = _grid(flow)
    inside = (at[:, :1] >= 0) & (at[:, :1] <= w - 1) & (at[:, 1:] >= 0) & (at[:, 1:] <= h - 1)
    returned = warp(back.to(flow), flow)
    length2 = _norm2(flow)
    error2 = _norm2(flow + returned)
    consistent = error2 <= CONSISTENCY_RELATIVE * (length2 + _norm2(returned)) + CONSISTENCY_PX2
    gy, gx = torch.gradient(flow, dim=(-2, -1))  # central differences
    gradient2 = _norm2(gx) + _norm2(gy)
    smooth = gradient2 <= BOUNDARY_RELATIVE * length2 + BOUNDARY_ABSOLUTE
    return (inside & consistent & smooth).to(flow.dtype)


def _norm2(v: torch.Tensor) -> torch.Tensor:
    return v.pow(2).sum(1, keepdim=True)


@dataclass(frozen=True)
class Guide:
    """What a frame is held to, at the output's size: `target` (1, 3, H, W) the earlier
    stylised frames warped to this one, `mask` (1, 1, H, W) in [0, 1] how much each pixel is
    held (0: free, disoccluded), `weight` the temporal term's weight (losses.temporal_loss).
    The engine starts each pyramid level from the target where the mask is 1."""

    target: torch.Tensor
    mask: torch.Tensor
    weight: float

    def at(self, size: Size) -> tuple[torch.Tensor, torch.Tensor]:
        """(target, mask) at a pyramid level's size."""
        mask = self.mask
        if tuple(mask.shape[-2:]) != size:  # averaged down: a pixel half free is held half
            mode = "area" if mask.shape[-1] > size[1] else "bilinear"
            mask = F.interpolate(mask, size=size, mode=mode)
        return resize(self.target, size), mask


def combined(
    warped: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One (target, mask) from the earlier frames' (warped result, reliability), nearest frame
    first: Ruder et al.'s long-term weights c_j - sum_{k<j} c_k (floored at 0) hold each pixel
    to the nearest frame where it was seen. sum_j m_j (x - w_j)^2 is sum_j m_j times
    (x - the m-weighted mean of the w_j)^2 plus a constant, so one term does it."""
    seen = torch.zeros_like(warped[0][1])
    total = torch.zeros_like(warped[0][0])
    for image, c in warped:
        m = (c - seen).clamp(min=0)
        total = total + m * image
        seen = seen + m
    return total / seen.clamp(min=1e-6), seen.clamp(max=1)
