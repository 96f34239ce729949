"""Small synthetic images and a random-weight engine for fast unit tests."""

import numpy as np

from brushwork.engine import Engine
from brushwork.vgg import VGGFeatures, random_state_dict


def random_engine(precision: str = "auto") -> Engine:
    return Engine(
        model=VGGFeatures(random_state_dict(), "caffe"), device="cpu", precision=precision
    )


def content_image(h: int = 40, w: int = 56, channels: int = 3) -> np.ndarray:
    """A smooth colour gradient with a bright disc: uint8 (h, w, channels)."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    disc = ((y - 0.3) ** 2 + (x - 0.5) ** 2 < 0.04).astype(float)
    rgb = np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.4 * disc], axis=2)
    img = (rgb * 255).round().astype(np.uint8)
    if channels == 4:
        alpha = (np.arange(w)[None, :] * 255 // (w - 1)).repeat(h, 0).astype(np.uint8)
        img = np.concatenate([img, alpha[..., None]], axis=2)
    return img


def style_image(h: int = 48, w: int = 48, seed: int = 0) -> np.ndarray:
    """Saturated diagonal stripes with noise: a texture unlike the content."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    stripes = ((x + y) // 4 % 2).astype(float)
    rgb = np.stack([stripes, 1 - stripes, 0.5 * stripes], axis=2) * 0.8
    rgb += rng.uniform(0, 0.2, rgb.shape)
    return (rgb * 255).round().astype(np.uint8)
