"""Files for the command-line tests (a pytest plugin loaded by conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from brushwork import images
from engine_helpers import content_image, style_image


@pytest.fixture
def pictures(tmp_path: Path) -> tuple[Path, Path]:
    """A 40x56 RGBA content.png and a 48x48 style.png in tmp_path."""
    c, s = tmp_path / "content.png", tmp_path / "style.png"
    images.save(c, content_image(channels=4) / 255)
    images.save(s, style_image() / 255)
    return c, s
