"""Colour preservation: luminance-only transfer and style colour matching."""

import numpy as np
import pytest
import torch

from brushwork import color
from brushwork.settings import Settings
from engine_helpers import content_image, random_engine, style_image


def test_yiq_round_trip():
    rgb = torch.rand(1, 3, 8, 9)
    assert torch.allclose(color.yiq_to_rgb(color.rgb_to_yiq(rgb)), rgb, atol=1e-5)


def test_with_chroma_keeps_the_sources_chroma():
    content = 0.3 + 0.4 * torch.rand(1, 3, 6, 6)
    y = color.luminance(content) + 0.1 * (torch.rand(1, 1, 6, 6) - 0.5)  # stays in gamut
    out = color.with_chroma(y, content)
    yiq = color.rgb_to_yiq(out)
    assert torch.allclose(yiq[:, 1:], color.rgb_to_yiq(content)[:, 1:], atol=1e-3)
    assert torch.allclose(yiq[:, :1], y, atol=1e-3)


def test_match_histogram_moves_style_colours_to_the_contents():
    torch.manual_seed(0)
    content = (0.5 + 0.1 * torch.randn(1, 3, 32, 32)).clamp(0, 1)
    style = (0.2 + 0.05 * torch.randn(1, 3, 32, 32)).clamp(0, 1)
    style[:, 0] += 0.4  # a red style
    out = color.match_histogram(style, content)
    mean = lambda t: t.flatten(2)[0].mean(1)  # noqa: E731
    assert torch.allclose(mean(out), mean(content), atol=0.02)
    cov = lambda t: torch.cov(t.flatten(2)[0])  # noqa: E731
    assert torch.allclose(cov(out), cov(content), atol=2e-3)


def test_palette_blends_the_pixels_of_several_images():
    a, b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8) * 0.5
    mean, cov = color.palette([a, b], (0.5, 0.5))
    both = torch.cat([a, b], dim=3).flatten(2)[0].double()
    assert torch.allclose(mean[:, 0], both.mean(1))
    assert torch.allclose(cov, torch.cov(both, correction=0))


def test_match_luminance_takes_the_contents_statistics():
    y_s, y_c = torch.rand(1, 1, 20, 20) * 0.3, 0.4 + torch.rand(1, 1, 20, 20) * 0.5
    out = color.match_luminance(y_s, y_c)
    assert out.mean().item() == pytest.approx(y_c.mean().item(), abs=1e-5)
    assert out.std().item() == pytest.approx(y_c.std().item(), abs=1e-5)


def test_luminance_transfer_keeps_the_contents_chroma():
    content = content_image()
    settings = Settings(size=0, iterations=6, scales=1, preserve_colors="luminance")
    out = random_engine().stylize(content, [style_image()], settings).image
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]  # noqa: E731
    iq_out = color.rgb_to_yiq(to_t(out))[:, 1:]
    iq_content = color.rgb_to_yiq(to_t(content.astype(np.float32) / 255))[:, 1:]
    # The luminance changed (style applied) but chroma is the content's, up to RGB clipping.
    assert (iq_out - iq_content).abs().mean() < 5e-3
    y_out = color.rgb_to_yiq(to_t(out))[:, 0]
    y_content = color.rgb_to_yiq(to_t(content.astype(np.float32) / 255))[:, 0]
    assert (y_out - y_content).abs().mean() > 1e-3
