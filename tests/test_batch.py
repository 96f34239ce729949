"""`brushwork batch`: through a real daemon, resumable, failures listed, atomic outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushwork import images

pytestmark = pytest.mark.weights

FAST = ["--size", "40", "--iterations", "3", "--scales", "1"]


def brushwork(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "brushwork", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(
            folder / f"{name}.png"
        )
    rgba = rng.integers(0, 256, (30, 44, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "c.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "style.jpg")
    (folder / "notes.txt").write_text("not an image, and not picked from a folder")
    return tmp_path


def test_batch_stylizes_folders_and_globs_then_resumes(daemon, inputs):
    out = inputs / "out"
    args = [str(inputs / "in"), str(inputs / "c*.png"), "--style", str(inputs / "style.jpg")]
    args += ["-o", str(out), "--server", daemon.endpoint, *FAST]
    first = brushwork("batch", *args)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert f"batch on the daemon at {daemon.endpoint}" in first.stderr
    assert "3 written, 0 skipped, 0 failed" in first.stderr
    c = images.load(out / "c.png")
    assert c.shape == (27, 40, 4)  # long side 40, alpha kept

    # Interrupted after two: the rerun does only what is missing.
    (out / "b.png").unlink()
    before = (out / "a.png").stat().st_mtime_ns
    second = brushwork("batch", *args)
    assert second.returncode == 0, second.stderr
    assert "2 of 3 outputs exist: skipped" in second.stderr
    assert "1 written, 2 skipped, 0 failed" in second.stderr
    assert (out / "a.png").stat().st_mtime_ns == before
    assert (out / "b.png").exists()

    third = brushwork("batch", *args, "--overwrite")
    assert "3 written, 0 skipped, 0 failed" in third.stderr
    assert (out / "a.png").stat().st_mtime_ns != before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_batch_lists_failures_and_exits_1_but_writes_the_rest(daemon, inputs):
    (inputs / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.fromarray(np.zeros((1200, 1000, 3), np.uint8)).save(inputs / "in" / "huge.png")
    out = inputs / "out"
    done = brushwork(
        "batch", str(inputs / "in"), "--style", str(inputs / "style.jpg"), "-o", str(out),
        "--server", daemon.endpoint, *FAST,
    )  # fmt: skip
    assert done.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    # Reported in input order, whatever finished first.
    reported = [line.split("] ")[0] for line in done.stderr.splitlines() if line.startswith("[")]
    assert reported == ["[1/4", "[2/4", "[3/4", "[4/4"]
    summary = done.stderr[done.stderr.index("batch finished") :].splitlines()
    assert summary[0] == "batch finished: 2 written, 0 skipped, 2 failed"
    assert summary[1].startswith(f"  FAILED {inputs / 'in' / 'broken.png'}: not a readable image")
    assert summary[2].startswith(f"  FAILED {inputs / 'in' / 'huge.png'}: a 1000x1200 image is")


def test_batch_refuses_two_inputs_writing_the_same_output(inputs):
    Image.open(inputs / "c.png").save(inputs / "in" / "c.png")
    done = brushwork(
        "batch", str(inputs / "in"), str(inputs / "c.png"), "--style", str(inputs / "style.jpg"),
        "-o", str(inputs / "out"),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().endswith(f"would both write {inputs / 'out' / 'c.png'}")
    assert not (inputs / "out").exists()  # checked before OUTDIR was made


def test_batch_checks_inputs_before_making_outdir(inputs):
    nothing = brushwork(
        "batch", str(inputs / "nomatch*.png"), "--style", str(inputs / "style.jpg"), "-o",
        str(inputs / "out"),
    )  # fmt: skip
    assert nothing.returncode == 2
    assert nothing.stderr.strip().endswith("no such file, folder or matching files")
    swallowed = brushwork(
        "batch", "--style", str(inputs / "style.jpg"), str(inputs / "in"), "-o",
        str(inputs / "out"),
    )  # fmt: skip
    assert swallowed.returncode == 2, swallowed.stderr
    assert "put the INPUTS before --style" in swallowed.stderr
    assert not (inputs / "out").exists()


def test_batch_without_a_daemon_runs_one_in_process(inputs, weights_file, tmp_path):
    out = inputs / "out"
    nobody = "tcp://127.0.0.1:9"  # discard port: nothing answers there
    env = {**os.environ, "BRUSHWORK_SERVER": nobody}
    done = brushwork(
        "batch", str(inputs / "in" / "a.png"), "--style", str(inputs / "style.jpg"), "-o",
        str(out), "--weights", str(weights_file), *FAST, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no daemon answered; running one inside this batch on cpu" in done.stderr
    assert (out / "a.png").exists()


def test_batch_with_an_explicit_server_that_is_down_fails(inputs):
    done = brushwork(
        "batch", str(inputs / "in"), "--style", str(inputs / "style.jpg"), "-o",
        str(inputs / "out"), "--server", "tcp://127.0.0.1:9",
    )  # fmt: skip
    assert done.returncode == 3
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("brushwork: error: no daemon at tcp://127.0.0.1:9")
    )
