"""Optical flow, warping, the reliability mask and the temporal term (flow.py, losses.py)."""

import numpy as np
import pytest
import torch

from brushwork import flow, losses


def texture(h: int = 96, w: int = 96, seed: int = 0) -> np.ndarray:
    """Smooth random blobs with fine detail: something DIS can lock on to, uint8 RGB."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    t = torch.from_numpy(coarse).permute(2, 0, 1)[None]
    smooth = torch.nn.functional.interpolate(t, size=(h + 16, w + 16), mode="bicubic")
    image = smooth[0].permute(1, 2, 0).numpy() + rng.uniform(-0.1, 0.1, (h + 16, w + 16, 3))
    return (image.clip(0, 1) * 255).astype(np.uint8)


def const_flow(dx: float, dy: float, h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.tensor([dx, dy], dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, h, w).clone()


def test_dis_recovers_a_known_shift():
    big = texture()
    frame_t1 = big[8:-8, 8:-8]  # frame t-1
    frame_t = big[8 + 2 : big.shape[0] - 8 + 2, 8 - 3 : big.shape[1] - 8 - 3]  # content moved
    f = flow.dis_flow(frame_t, frame_t1)  # t -> t-1: frame_t(p) = frame_t1(p + (-3, 2))
    interior = f[0, :, 16:-16, 16:-16]
    assert interior[0].median().item() == pytest.approx(-3, abs=0.25)
    assert interior[1].median().item() == pytest.approx(2, abs=0.25)


def test_warp_by_the_flow_brings_the_frame_back():
    image = torch.rand(1, 3, 20, 24)
    shifted = flow.warp(image, const_flow(2, -1, 20, 24))  # shifted(p) = image(p + (2, -1))
    assert torch.allclose(shifted[..., 1:, :-2], image[..., :-1, 2:], atol=1e-5)


def test_reliability_trusts_a_consistent_pan_and_drops_what_leaves_the_frame():
    c = flow.reliability(const_flow(3, 0), const_flow(-3, 0))
    assert c[..., :, :-3].min() == 1  # lands inside frame t-1, and the flows cancel
    assert c[..., :, -3:].max() == 0  # lands outside: nothing to hold to


def test_reliability_zeroes_disocclusions_and_motion_boundaries():
    """A square moves 6 px right over a still background: behind it, the background it
    uncovered was hidden in frame t-1 (the flows do not cancel there), and its edges are
    motion boundaries."""
    h = w = 40
    back = torch.zeros(1, 2, h, w)  # t -> t-1
    fwd = torch.zeros(1, 2, h, w)  # t-1 -> t
    back[0, 0, 10:20, 16:26] = -6  # the square at t (x 16..25) was at x 10..19
    fwd[0, 0, 10:20, 10:20] = 6
    c = flow.reliability(back, fwd)
    assert c[0, 0, 14, 12:14].max() == 0  # uncovered: x 10..15 were the square at t-1
    assert c[0, 0, 14, 18:24].min() == 1  # the square's inside: consistent
    assert c[0, 0, 14, 25:27].max() == 0  # its right edge: a motion boundary
    assert c[0, 0, 30:, :].min() == 1  # the still background


def test_combined_holds_each_pixel_to_the_nearest_frame_that_saw_it():
    near, far = torch.full((1, 3, 4, 4), 0.2), torch.full((1, 3, 4, 4), 0.8)
    c_near = torch.ones(1, 1, 4, 4)
    c_near[..., :2] = 0  # hidden in the frame before, seen in the one before that
    target, mask = flow.combined([(near, c_near), (far, torch.ones(1, 1, 4, 4))])
    assert torch.allclose(target[..., 2:], near[..., 2:])
    assert torch.allclose(target[..., :2], far[..., :2])
    assert mask.min() == 1


def test_temporal_loss_reads_like_the_equation():
    x, target = torch.rand(1, 3, 6, 5), torch.rand(1, 3, 6, 5)
    mask = (torch.rand(1, 1, 6, 5) > 0.5).float()
    d = x.numel()
    held = 7.0 * (mask * (x - target) ** 2).sum() / d
    free = 1 - mask
    smooth = ((x[..., 1:, :] - x[..., :-1, :]) ** 2 * free[..., 1:, :]).sum() + (
        (x[..., 1:] - x[..., :-1]) ** 2 * free[..., 1:]
    ).sum()
    expected = held + losses.FREED_SMOOTHNESS * smooth / d
    assert losses.temporal_loss(x, target, mask, 7.0).item() == pytest.approx(expected.item())
    # every pixel held: the Ruder term alone; none held: only the free pixels' smoothness
    ones = torch.ones_like(mask)
    alone = 7.0 * ((x - target) ** 2).sum() / d
    assert losses.temporal_loss(x, target, ones, 7.0).item() == pytest.approx(alone.item())
    flat = torch.full_like(x, 0.5)
    assert losses.temporal_loss(flat, target, torch.zeros_like(mask), 7.0).item() == 0


def test_dis_flow_keeps_a_moving_square_s_edge_sharp(monkeypatch):
    """A textured square moves 6 px right over a still textured background: DIS alone blends
    the two motions near the square's edge; sharpened, the square's edge moves with it."""
    background, square = texture(80, 80, seed=1), texture(80, 80, seed=2)  # 96 px
    frame_t1, frame_t = background.copy(), background.copy()
    frame_t1[30:60, 30:60] = square[30:60, 30:60]
    frame_t[30:60, 36:66] = square[30:60, 30:60]
    exact = torch.zeros(1, 2, 96, 96)  # t -> t-1
    exact[0, 0, 30:60, 36:66] = -6
    square_t = torch.zeros(1, 1, 96, 96)
    square_t[..., 30:60, 36:66] = 1

    def grown(m: torch.Tensor, px: int) -> torch.Tensor:
        return torch.nn.functional.max_pool2d(m, 2 * px + 1, stride=1, padding=px)

    # 1 to 4 px inside the square's edge at t (beside it, the background the square uncovered
    # was hidden in frame t-1: no flow is right there)
    band = (grown(1 - square_t, 4) - grown(1 - square_t, 1)).bool()

    def band_error(f: torch.Tensor) -> float:
        return (f - exact).pow(2).sum(1, keepdim=True).sqrt()[band].mean().item()

    sharp = band_error(flow.dis_flow(frame_t, frame_t1))
    monkeypatch.setattr(flow, "SHARPEN_REACH", 0)  # no candidates: DIS's own flow
    raw = band_error(flow.dis_flow(frame_t, frame_t1))
    assert sharp < 0.5 * raw, (sharp, raw)
