"""The real VGG16 weights for tests marked `weights` (a pytest plugin loaded by conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from brushwork.weights import WeightsError, load, resolve_path


@pytest.fixture(scope="session")
def weights_file() -> Path:
    """The verified weights file, found like the CLI finds it; missing or bad fails the test.

    Never a skip: a suite that silently skips its real-weights tests would pass untested.
    """
    path = resolve_path()
    try:
        load(path)
    except WeightsError as e:  # its one line names the fix (`brushwork weights fetch ...`)
        problem = str(e)
    else:
        return path
    pytest.fail(problem, pytrace=False)  # outside `except`: no chained traceback noise
