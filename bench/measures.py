"""Two measures of a stylized picture that no optimiser here minimises: how much of the
content it keeps, and how far it moved toward the style.

Both are computed on the pixels alone, at a fixed reduced size, so that the same look at
256, 512 or 1024 px scores the same:

- **content kept** (at `CONTENT_SIDE` px): the mean of SSIM of the luminance (Wang et al.
  2004) and the correlation of the luminance's gradient magnitudes (Sobel), output against
  content. 1 is the content itself.
- **style match** (output at `STYLE_SIDE` px, the style at the same scale relative to it as
  the stylization used): the mean of two "fraction of the way from the content to the style"
  scores, 1 - d(output, style) / d(content, style): 0 is the content's statistics, 1 the
  style's.
  - colour: the sliced 1-Wasserstein distance between the pixels' CIELAB colours;
  - texture: the distance between hand-made texture descriptors, the log energy and log
    kurtosis of oriented first-derivative-of-Gaussian responses of the luminance, 4
    orientations x 4 octaves, and the log energy of the two opponent colour channels' band
    responses per octave (marginal statistics in the spirit of Portilla & Simoncelli 2000).

Neither touches VGG: the engine and the textbook run minimise Gram or Gaussian statistics of
VGG16 activations, which say nothing directly about pixel colour histograms, oriented
filter-energy spectra or SSIM, so a method cannot score well here by overfitting its own
objective. (docs/quality.md has the argument.)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

CONTENT_SIDE = 128
STYLE_SIDE = 256
OCTAVES = 4
ORIENTATIONS = 4
PROJECTIONS = 64
QUANTILES = 256
EPS = 1e-8


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]


def reduce(rgb: np.ndarray, long_side: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(1, 3, h, w) float32 with the long side at `long_side` (antialiased), aspect kept, or
    at exactly `size`."""
    x = _tensor(rgb)
    if size is None:
        h, w = x.shape[-2:]
        s = long_side / max(h, w)
        size = (max(8, round(h * s)), max(8, round(w * s)))
    return F.interpolate(x, size=size, mode="bicubic", antialias=True).clamp(0, 1)


def luminance(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).contiguous()


def _gaussian(sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    g = _gaussian(sigma)
    r = len(g) // 2
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(x.shape[1], 1, 1, -1), groups=x.shape[1])
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(x.shape[1], 1, -1, 1), groups=x.shape[1])


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of two single-channel images in [0, 1] (Gaussian window, sigma 1.5)."""
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = _blur(a, 1.5), _blur(b, 1.5)
    var_a = _blur(a * a, 1.5) - mu_a**2
    var_b = _blur(b * b, 1.5) - mu_b**2
    cov = _blur(a * b, 1.5) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(s.mean())


def _gradients(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(y, kx.view(1, 1, 3, 3)), F.conv2d(y, kx.T.reshape(1, 1, 3, 3))


def edge_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of the Sobel gradient magnitudes of two luminance images."""
    ma, mb = (torch.hypot(*_gradients(_blur(y, 0.7))).flatten() for y in (a, b))
    ma, mb = ma - ma.mean(), mb - mb.mean()
    return float((ma @ mb) / (ma.norm() * mb.norm() + EPS))


def content_kept(output: np.ndarray, content: np.ndarray) -> dict[str, float]:
    yc = luminance(reduce(content, CONTENT_SIDE))
    yo = luminance(reduce(output, CONTENT_SIDE, size=tuple(yc.shape[-2:])))
    s, e = ssim(yo, yc), edge_correlation(yo, yc)
    return {"ssim": s, "edges": e, "content": 0.5 * (s + e)}


def lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB (1, 3, h, w) in [0, 1] -> CIELAB (D65) pixels as (n, 3)."""
    rgb = x[0].reshape(3, -1).T.double()
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
        dtype=torch.float64,
    )
    xyz = lin @ m.T / torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
    f = torch.where(xyz > 0.008856, xyz ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1
    )


def _directions() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    d = torch.randn(PROJECTIONS, 3, generator=g, dtype=torch.float64)
    return d / d.norm(dim=1, keepdim=True)


def colour_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Sliced 1-Wasserstein distance between the CIELAB colours of two images (in Lab units)."""
    dirs = _directions()
    qa, qb = (_quantiles(lab(x) @ dirs.T) for x in (a, b))
    return float((qa - qb).abs().mean())


def _quantiles(p: torch.Tensor) -> torch.Tensor:
    """QUANTILES evenly spaced order statistics of each column."""
    idx = torch.linspace(0, p.shape[0] - 1, QUANTILES).round().long()
    return p.sort(dim=0).values[idx]


def texture_descriptor(x: torch.Tensor) -> torch.Tensor:
    """Log band energies and log kurtoses of oriented derivative-of-Gaussian responses of the
    luminance per octave, and log band energies of the opponent colour channels."""
    y = luminance(x)
    opp = torch.cat([x[:, 0:1] - x[:, 1:2], 0.5 * (x[:, 0:1] + x[:, 1:2]) - x[:, 2:3]], dim=1)
    feats = []
    for _ in range(OCTAVES):
        gx, gy = _gradients(_blur(y, 1.0))
        for k in range(ORIENTATIONS):
            t = math.pi * k / ORIENTATIONS
            r = math.cos(t) * gx + math.sin(t) * gy
            e2 = r.pow(2).mean()
            feats += [torch.log(e2 + EPS), torch.log(r.pow(4).mean() / (e2 * e2 + EPS) + EPS)]
        for c in range(2):
            cx, cy = _gradients(_blur(opp[:, c : c + 1], 1.0))
            feats.append(torch.log((cx.pow(2) + cy.pow(2)).mean() + EPS))
        y, opp = F.avg_pool2d(y, 2), F.avg_pool2d(opp, 2)
    return torch.stack(feats)


def texture_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((texture_descriptor(a) - texture_descriptor(b)).pow(2).mean().sqrt())


def _toward(d_out: float, d_content: float) -> float:
    """Fraction of the distance from the content to the style that the output covered."""
    return 1.0 - d_out / max(d_content, EPS)


def style_match(
    output: np.ndarray, content: np.ndarray, style: np.ndarray, style_scale: float = 1.0
) -> dict[str, float]:
    c = reduce(content, STYLE_SIDE)
    o = reduce(output, STYLE_SIDE, size=tuple(c.shape[-2:]))
    s = reduce(style, round(STYLE_SIDE * style_scale))
    colour = _toward(colour_distance(o, s), colour_distance(c, s))
    texture = _toward(texture_distance(o, s), texture_distance(c, s))
    return {"colour": colour, "texture": texture, "style": 0.5 * (colour + texture)}


def measure(
    output: np.ndarray, content: np.ndarray, style: np.ndarray, style_scale: float = 1.0
) -> dict[str, float]:
    """content kept and style match of `output` (all float32 HxWx3 in [0, 1])."""
    return {**content_kept(output, content), **style_match(output, content, style, style_scale)}
