"""The quality harness's summary (bench/quality.py): the textbook comparison it reads off
the rows, with the style match's colour and texture halves apart."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import quality  # bench/ is not a package: found through sys.path


def row(method: str, param: float, content: float, colour: float, texture: float) -> dict:
    return {"pair": "p", "size": 256, "method": method, "param": param, "content": content,
            "colour": colour, "texture": texture, "style": (colour + texture) / 2}  # fmt: skip


ROWS = [
    row("brushwork", 30, 0.9, 0.5, 0.2),
    row("brushwork", 50, 0.8, 0.8, 0.4),
    row("brushwork", 70, 0.6, 0.9, 0.8),
    row("textbook", 10, 0.7, 0.6, 0.7),
]


def test_the_sweep_is_read_at_the_textbook_content_kept():
    at = quality._sweep_at(ROWS, "p", 256, 0.7)  # halfway between strengths 50 and 70
    assert at == pytest.approx({"style": 0.725, "colour": 0.85, "texture": 0.6})
    assert quality._sweep_at(ROWS, "p", 256, 0.95) is None  # beyond the sweep: no guess
    assert quality._sweep_at(ROWS, "p", 512, 0.7) is None


def test_summary_shows_the_halves_apart():
    text = quality.summary(ROWS)
    # Strength 50 against the textbook: more content and style match, but less texture.
    assert "| p | 256 | +0.100 | -0.050 | +0.200 | -0.300 | no |" in text
    assert "| p | 256 | +0.075 | +0.250 | -0.100 |" in text


def test_strength_steps_are_per_ten_points_whatever_the_sweep_spacing():
    text = quality.summary([row("brushwork", 0, 1.0, 0.2, 0.1), *ROWS])
    # 0-30: (0.1, 0.2) over 30 points; 30-50: (0.1, 0.25) over 20; 50-70: (0.2, 0.25) over 20
    assert "| pair (256 px) | 0-30 | 30-50 | 50-70 |" in text
    assert "| p | 0.075 | 0.135 | 0.160 |" in text
