"""The clone stays light: contact sheets and per-run pictures go to out/, not into git
(bench/results keeps tables and at most one small JPEG a report; docs/ keeps its pictures)."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 1_000_000  # bytes


def tracked_files() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    return [name for name in listing.decode().split("\0") if name]


def test_no_tracked_file_over_1_mb_outside_docs():
    paths = {name: REPO / name for name in tracked_files()}
    sizes = {name: path.stat().st_size for name, path in paths.items() if path.is_file()}
    assert "README.md" in sizes  # the listing is this repository's
    large = {
        name: size for name, size in sizes.items() if size > LIMIT and not name.startswith("docs/")
    }
    assert not large, f"tracked files over 1 MB outside docs/ (bytes; put them in out/): {large}"
