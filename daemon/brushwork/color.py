"""Colour preservation (Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer").

Both ways work on (1, 3, H, W) RGB tensors in [0, 1]:
- luminance: transfer style on the Y channel of YIQ only and keep the content's I and Q;
- histogram: recolour the style image so its colour mean and covariance match the content's.
The same affine recolouring, the other way round, gives the "palette" start: the content in
the style's colours, so the optimisation spends its steps on texture, not on repainting.
"""

from __future__ import annotations

import torch

from brushwork.losses import sqrtm

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


def palette(
    images: list[torch.Tensor], weights: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour mean (3, 1) and covariance (3, 3) of the pixels of `images` blended by
    `weights` (summing to 1), returned in float64: first and second moments mix linearly.
    Reduced in the images' own dtype, so a large style image is never copied."""
    mean = torch.zeros(3, 1, dtype=torch.float64, device=images[0].device)
    second = torch.zeros(3, 3, dtype=torch.float64, device=images[0].device)
    for image, w in zip(images, weights, strict=True):
        x = image.flatten(2)[0]
        mean += w * x.mean(1, keepdim=True, dtype=torch.float64)
        second += w * (x @ x.T).double() / x.shape[1]
    return mean, second - mean @ mean.T


def recolor(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Affine recolouring x' = A (x - mu_x) + mean with A = cov^1/2 Sigma_x^-1/2: x's colours
    get the given mean and covariance, its pattern of light and shade stays."""
    mu_x, cov_x = palette([x], (1.0,))
    eye = 1e-5 * torch.eye(3, dtype=cov.dtype, device=cov.device)
    a = sqrtm(cov + eye) @ torch.linalg.inv(sqrtm(cov_x + eye))
    out = a @ (x.flatten(2)[0].double() - mu_x) + mean
    return out.reshape(x.shape).to(x.dtype).clamp(0, 1)


def match_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style recoloured to the content's colour mean and covariance."""
    return recolor(style, *palette([content], (1.0,)))
