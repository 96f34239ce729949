"""What made each output of a batch: a small JSON file beside the outputs, so that a rerun
skips the outputs made as asked and redoes those made with other settings or inputs.

An output with no entry (written before manifests, or by hand) counts as done, as it always
has: only an entry that says otherwise sends it back to work.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from brushwork.settings import Settings

NAME = ".brushwork-batch.json"


def job_key(settings: Settings, files: list[Path | None], **options: Any) -> dict[str, Any]:
    """What an output depends on: the settings, each input file as it is now (path, size,
    modification time) and other options (e.g. the JPEG quality)."""

    def stamp(path: Path | None) -> list | None:
        if path is None:
            return None
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]

    return {"settings": settings.to_dict(), "files": [stamp(p) for p in files], **options}


def digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


class Manifest:
    """The manifest of one output folder: output file name -> what made it."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / NAME
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            entries = {}
        self.entries: dict[str, dict] = entries if isinstance(entries, dict) else {}

    def changed(self, output: Path, key: dict[str, Any]) -> bool:
        """True if `output` was made by something other than `key` says."""
        entry = self.entries.get(output.name)
        return isinstance(entry, dict) and entry.get("digest") != digest(key)

    def record(self, output: Path, key: dict[str, Any]) -> None:
        """`output` was just made as `key` says (written at once, atomically)."""
        self.entries[output.name] = {
            "digest": digest(key),
            "seed": key["settings"]["seed"],
            "settings": key["settings"],
        }
        fd, tmp = tempfile.mkstemp(prefix=NAME, dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.entries, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
