"""bench/gpu_session.sh's dry run on the CPU (`--device cpu`: tiny sizes), so that the one
command a lent GPU runs is known to work before a GPU is lent: the kernel count, the floor
passes and the engine check each run and write their reports. About 40 s on a 2-core CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]

pytestmark = pytest.mark.weights


def test_gpu_session_dry_run_on_the_cpu(weights_file: Path, tmp_path: Path):
    env = {**os.environ, "OUT": str(tmp_path), "BRUSHWORK_WEIGHTS": str(weights_file),
           "PYTHON": sys.executable}  # fmt: skip
    command = ["bash", "bench/gpu_session.sh", "--device", "cpu"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    log = (tmp_path / "session.log").read_text()
    assert done.returncode == 0, log[-3000:]
    assert "session exit 0" in log
    check = json.loads((tmp_path / "gpu_check.json").read_text())
    assert all(check["checks"].values()) and check["s_small_default"] > 0
    assert check["host_syncs_30_60_steps"] == "n/a (CUDA only)"
    (speed,) = tmp_path.glob("speed-cpu-*.json")
    assert json.loads(speed.read_text())["jobs"]["64"]["seconds"] > 0
    assert (tmp_path / "tiled-96.jpg").stat().st_size > 0
