"""bench/speed.py's dry run at tiny sizes (the real figures are in bench/results/speed-*.md):
the floor pass, the job in a fresh process and the drafts on a real daemon on loopback, with
real weights, and a report that says them in floor passes. About 12 s on a 2-core CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]

pytestmark = pytest.mark.weights


def test_speed_dry_run_reports_every_row_in_floor_passes(weights_file: Path, tmp_path: Path):
    env = {**os.environ, "BRUSHWORK_WEIGHTS": str(weights_file), "PYTHONPATH": str(REPO / "daemon")}
    command = [sys.executable, str(REPO / "bench" / "speed.py"), "--tiny", "--out", str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (report,) = tmp_path.glob("speed-cpu-*.json")
    figures = json.loads(report.read_text())
    job, drafts = figures["jobs"]["64"], figures["drafts"]
    assert figures["deepest"] == "conv4_3" and figures["cpu"]
    assert len(job["floor"]["cpu"]) == 3 and all(t > 0 for t in job["floor"]["wall"])
    # A tiny job may stay under the high-water mark its process had already reached.
    assert job["seconds"] > 0 and job["peak_rss_mb"] >= job["rss_before_job_mb"] > 0
    assert len(job["levels"]) == 1  # 64 px: one level
    assert all(v == v for v in job["losses"].values())  # finite, not NaN
    assert drafts["new style"] > 0 and drafts["cached style cpu"] > 0
    text = (tmp_path / report.name.replace(".json", ".md")).read_text()
    assert "64 px job" in text and "48 px draft, cached style" in text
