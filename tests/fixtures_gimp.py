"""A real GIMP 3 for tests (a pytest plugin loaded by conftest.py).

`gimp_root` is the root GIMP 3 runs in, from install/gimp_root.sh (the host's own on Debian
13, else a trixie chroot). `gimp` is one throw-away profile inside it with the plug-in
installed by install/install.sh --plugin-only against the suite's `daemon` (which GIMP in
the chroot reaches through the shared network), shared by every GIMP test module: each
module's files go into its work folder, and `GimpSession.run_cases` runs a module's cases
in one GIMP session (GIMP starts in seconds, not milliseconds) and returns their reports.

Under CI (CI=true) a GIMP 3 that cannot be set up fails these tests; elsewhere they skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
GIMP_TIMEOUT = 600  # seconds for a whole session: cold start + every case

# A batch in GIMP: SPEC (the test's JSON) and dump() come before a module's code, which
# defines run_case(case) -> its report; after it every case runs, the reports written by name.
BATCH_HEAD = r"""
import json, os, time
import gi
gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio

SPEC = json.load(open(__SPEC__))
OUT = SPEC["out"]
FLOAT = "R'G'B'A float"


def dump(drawable, name, fmt=FLOAT):
    w, h = drawable.get_width(), drawable.get_height()
    rect = Gegl.Rectangle.new(0, 0, w, h)
    data = drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.NONE)
    with open(f"{OUT}/{name}.raw", "wb") as f:
        f.write(bytes(data))
    _, x, y = drawable.get_offsets()
    info = {"file": f"{name}.raw", "width": w, "height": h, "x": x, "y": y,
            "name": drawable.get_name(), "bpp": drawable.get_bpp(), "mask": None}
    if isinstance(drawable, Gimp.Layer) and drawable.get_mask() is not None:
        info["mask"] = dump(drawable.get_mask(), name + "-mask", "Y float")
    return info

"""
BATCH_TAIL = r"""

reports = {case["name"]: run_case(case) for case in SPEC["cases"]}
with open(SPEC["report"], "w") as f:
    json.dump(reports, f, indent=1)
"""


def _unavailable(message: str):
    if IN_CI:
        pytest.fail(f"GIMP 3 end-to-end test cannot run under CI: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def gimp_root() -> Path:
    """The root GIMP 3 runs in ("/" for the host's own GIMP)."""
    if os.geteuid() != 0 and shutil.which("gimp-console-3.0") is None:
        _unavailable("no gimp-console-3.0 here and building the chroot needs root")
    try:
        built = subprocess.run(
            ["bash", str(REPO / "install" / "gimp_root.sh")],
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.TimeoutExpired:
        _unavailable("install/gimp_root.sh took more than 15 minutes")
    if built.returncode != 0:
        _unavailable(f"install/gimp_root.sh failed: {built.stderr.strip()[-2000:]}")
    return Path(built.stdout.strip().splitlines()[-1])


class GimpSession:
    """A folder GIMP can see (inside its root), and a way to run a Python batch there."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="brushwork-e2e-", dir=root / "tmp"))
        self.profile = self.work / "profile"
        self.plugin = self.profile / "plug-ins" / "brushwork"
        self.out = self.work / "out"
        for folder in (self.profile / "plug-in-settings", self.out, self.work / "home"):
            folder.mkdir(parents=True)
        self.logs: dict[str, str] = {}  # GIMP's output of each session, by tag

    def inside(self, path: Path) -> str:
        """The path GIMP sees for a file of ours."""
        return "/" + str(path.relative_to(self.root)).lstrip("/")

    def command(self, *words: str, display: str = "") -> list[str]:
        """`words` run inside the root with a clean environment (and an X display if given)."""
        env = [
            "env",
            "-i",
            f"HOME={self.inside(self.work / 'home')}",
            "PATH=/usr/bin:/bin",
            "LANG=C.UTF-8",
            f"GIMP3_DIRECTORY={self.inside(self.profile)}",
            f"BRUSHWORK_RECORD={self.inside(self.out / 'record.jsonl')}",
            *([f"DISPLAY={display}"] if display else []),
        ]
        chroot = [] if self.root == Path("/") else ["chroot", str(self.root)]
        return [*chroot, *env, *words]

    def batch(
        self, script: Path, display: str = "", timeout: int = GIMP_TIMEOUT
    ) -> subprocess.CompletedProcess:
        gimp = self.command(
            "timeout",
            str(timeout),
            "gimp-console-3.0",
            "-i",
            "--batch-interpreter=python-fu-eval",
            "-b",
            f"exec(open({self.inside(script)!r}).read())",
            "--quit",
            display=display,
        )
        return subprocess.run(gimp, capture_output=True, text=True, timeout=timeout + 30)

    def run_cases(
        self, tag: str, code: str, spec: dict, display: str = "", timeout: int = GIMP_TIMEOUT
    ) -> dict:
        """One GIMP session running `code` (its run_case, see BATCH_HEAD) on spec["cases"]:
        their reports by case name. Dumps go to spec["out"] (as GIMP sees it; our `out`
        unless given); GIMP's output is kept in logs[tag]."""
        report_file = self.out / f"report-{tag}.json"
        spec = {"out": self.inside(self.out), **spec, "report": self.inside(report_file)}
        spec_file = self.work / f"spec-{tag}.json"
        spec_file.write_text(json.dumps(spec))
        script = self.work / f"batch-{tag}.py"
        batch = BATCH_HEAD + code + BATCH_TAIL
        script.write_text(batch.replace("__SPEC__", repr(self.inside(spec_file))))
        started = time.monotonic()
        done = self.batch(script, display, timeout)
        print(f"gimp: whole GIMP session ({tag}) {time.monotonic() - started:.1f} s")
        self.logs[tag] = done.stdout + done.stderr
        if done.returncode != 0 or not report_file.exists():
            pytest.fail(
                f"GIMP batch failed (exit {done.returncode}):\n{done.stdout[-4000:]}"
                f"{done.stderr[-4000:]}",
                pytrace=False,
            )
        return json.loads(report_file.read_text())


@pytest.fixture(scope="session")
def gimp(gimp_root, daemon) -> Iterator[GimpSession]:
    """A throw-away profile with the plug-in installed by install.sh, for every GIMP test."""
    gimp = GimpSession(gimp_root)
    try:
        install_plugin(gimp, daemon.endpoint)
        yield gimp
    finally:
        shutil.rmtree(gimp.work, ignore_errors=True)


def install_plugin(gimp: GimpSession, endpoint: str) -> None:
    install = [
        "bash",
        str(REPO / "install" / "install.sh"),
        "--plugin-only",
        "--gimp-profile",
        str(gimp.profile),
        "--endpoint",
        endpoint,
        "--venv",
        sys.prefix,
    ]
    if gimp.root != Path("/"):
        install += ["--gimp-root", str(gimp.root)]
    installed = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, f"install.sh failed:\n{installed.stdout}{installed.stderr}"
    assert (gimp.plugin / "brushwork.py").stat().st_mode & 0o111, "plug-in is not executable"


def dumped_pixels(out: Path, info: dict) -> dict[str, np.ndarray]:
    """A drawable a batch dumped into `out` (R'G'B'A float, its mask Y float): the arrays."""
    shape = (info["height"], info["width"])
    arrays = {"rgba": np.fromfile(out / info["file"], "<f4").reshape(*shape, 4)}
    if info["mask"]:
        arrays["mask"] = np.fromfile(out / info["mask"]["file"], "<f4").reshape(shape)
    return arrays
