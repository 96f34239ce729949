"""Per-OS folders: XDG on Linux (a relative $XDG_* is ignored, as the spec demands),
~/Library on macOS, %LOCALAPPDATA% on Windows. platformdirs knows each OS's rules."""

from __future__ import annotations

import re
from pathlib import Path

import platformdirs

APP = "brushwork"


def cache_dir() -> Path:
    """The weights live here (~/.cache/brushwork, ~/Library/Caches/brushwork)."""
    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


def state_dir() -> Path:
    """Logs (~/.local/state/brushwork, ~/Library/Application Support/brushwork)."""
    return Path(platformdirs.user_state_dir(APP, appauthor=False))


def operator_token_file(endpoint: str, state: Path | None = None) -> Path:
    """Where a daemon bound to `endpoint` keeps its operator token (0600): whoever can read
    it (the user running the daemon) may list and cancel every job on it."""
    name = re.sub(r"[^A-Za-z0-9.-]", "_", endpoint)
    return (state or state_dir()) / "operators" / f"{name}.token"


def config_dir() -> Path:
    """CURVE keys (~/.config/brushwork, ~/Library/Application Support/brushwork)."""
    return Path(platformdirs.user_config_dir(APP, appauthor=False))
