"""Files for the command-line tests, and the command run as a user runs it (a pytest plugin
loaded by conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
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


def brushwork(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`brushwork ARGS` in a process of its own, `env` added to this one's environment."""
    return subprocess.run(
        [sys.executable, "-m", "brushwork", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
