"""XDG base directories (state for logs, config for keys); a relative value is ignored."""

from __future__ import annotations

import os
from pathlib import Path


def base_dir(variable: str, fallback: str) -> Path:
    """$variable if it is absolute (as the XDG spec demands), else ~/fallback."""
    value = os.environ.get(variable, "")
    return Path(value) if os.path.isabs(value) else Path.home() / fallback


def state_dir() -> Path:
    return base_dir("XDG_STATE_HOME", ".local/state") / "brushwork"


def config_dir() -> Path:
    return base_dir("XDG_CONFIG_HOME", ".config") / "brushwork"
