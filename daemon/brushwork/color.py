"""Colour preservation (Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer").

Both ways work on (1, 3, H, W) RGB tensors in [0, 1]:
- luminance: transfer style on the Y channel of YIQ only and keep the content's I and Q;
- histogram: recolour the style image so its colour mean and covariance match the content's.
"""

from __future__ import annotations

import torch

_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ]
)


def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(x), x)


def rgb_to_yiq(rgb: torch.Tensor) -> torch.Tensor:
    return _apply(_RGB_TO_YIQ, rgb)


def yiq_to_rgb(yiq: torch.Tensor) -> torch.Tensor:
    return _apply(torch.linalg.inv(_RGB_TO_YIQ), yiq)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Y of YIQ, (N, 1, H, W)."""
    return rgb_to_yiq(rgb)[:, :1]


def match_luminance(y_style: torch.Tensor, y_content: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luminance to the content's mean and deviation, so the
    optimisation transfers texture rather than overall brightness."""
    std_s = y_style.std().clamp_min(1e-6)
    return (y_style - y_style.mean()) * (y_content.std() / std_s) + y_content.mean()


def with_chroma(y: torch.Tensor, chroma_source: torch.Tensor) -> torch.Tensor:
    """RGB from luminance `y` and the I, Q channels of `chroma_source` (same size)."""
    iq = rgb_to_yiq(chroma_source)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp(0, 1)


def match_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Affine recolouring x' = A (x - mu_s) + mu_c with A = Sigma_c^1/2 Sigma_s^-1/2."""
    s = style.flatten(2)[0].double()  # (3, N)
    c = content.flatten(2)[0].double()
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    eye = 1e-5 * torch.eye(3, dtype=s.dtype, device=s.device)
    a = _sqrtm(torch.cov(c) + eye) @ torch.linalg.inv(_sqrtm(torch.cov(s) + eye))
    out = a @ (s - mu_s) + mu_c
    return out.reshape(style.shape).to(style.dtype).clamp(0, 1)


def _sqrtm(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive definite matrix."""
    vals, vecs = torch.linalg.eigh(m)
    return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
