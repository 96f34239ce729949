"""`brushwork batch`: through a real daemon, resumable, failures listed, atomic outputs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushwork import images, manifest
from fixtures_cli import brushwork

pytestmark = pytest.mark.weights

FAST = ["--size", "40", "--iterations", "3", "--scales", "1"]


def batch_folder(inputs: Path, *extra: str) -> subprocess.CompletedProcess:
    """`brushwork batch` of the folder inputs/in, styled by inputs/style.jpg, into inputs/out."""
    style, out = str(inputs / "style.jpg"), str(inputs / "out")
    return brushwork("batch", str(inputs / "in"), "--style", style, "-o", out, *extra)


def outputs(out: Path) -> list[str]:
    """The images in an output folder (not its manifest)."""
    return sorted(p.name for p in out.iterdir() if p.name != manifest.NAME)


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
    assert outputs(out) == ["a.png", "b.png", "c.png"] and (out / manifest.NAME).exists()
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
    temporary = [p for p in out.iterdir() if p.name.startswith(".") and p.name != manifest.NAME]
    assert not temporary


def test_batch_lists_failures_and_exits_1_but_writes_the_rest(daemon, inputs):
    # Three refused in a row before anything runs (it once crashed with a KeyError), and an
    # input over the daemon's 1 Mpx limit that the job needs at 40 px only (now fitted).
    for name in ("broken1", "broken2", "broken3"):
        (inputs / "in" / f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.fromarray(np.zeros((1200, 1000, 3), np.uint8)).save(inputs / "in" / "huge.png")
    out = inputs / "out"
    done = batch_folder(inputs, "--server", daemon.endpoint, *FAST)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert outputs(out) == ["a.png", "b.png", "huge.png"]
    assert images.load(out / "huge.png").shape == (40, 33, 3)
    # Reported in input order, whatever finished first.
    reported = [line.split("] ")[0] for line in done.stderr.splitlines() if line.startswith("[")]
    assert reported == [f"[{n}/6" for n in range(1, 7)]
    summary = done.stderr[done.stderr.index("batch finished") :].splitlines()
    assert summary[0] == "batch finished: 3 written, 0 skipped, 3 failed"
    for line, name in zip(summary[1:], ("broken1", "broken2", "broken3"), strict=True):
        assert line.startswith(f"  FAILED {inputs / 'in' / name}.png: not a readable image")


def test_batch_refuses_a_format_that_is_a_path(inputs):
    done = batch_folder(inputs, "--format", "../evil")
    assert done.returncode == 2
    assert done.stderr == (
        "brushwork: error: --format '../evil': not an image format (use png, jpg, tif, webp...)\n"
    )
    assert not (inputs / "out").exists() and not list(inputs.glob("*evil*"))


def test_batch_waits_for_room_when_the_daemons_queue_is_full(daemon, inputs):
    from daemon_helpers import ENDLESS, noise

    out = inputs / "out"
    with daemon.client() as blocker:
        # One running and four queued: the shared daemon's queue (4) is full.
        jobs = [blocker.submit(noise(), [noise(32, 32)], ENDLESS) for _ in range(5)]
        log = inputs / "batch.txt"
        with open(log, "w") as stderr:
            batch = subprocess.Popen(
                [
                    sys.executable, "-m", "brushwork", "batch", str(inputs / "in"), "--style",
                    str(inputs / "style.jpg"), "-o", str(out), "--server", daemon.endpoint,
                    *FAST,
                ],
                stderr=stderr,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while "queue is full: waiting for room" not in log.read_text():
            assert time.monotonic() < deadline and batch.poll() is None, log.read_text()
            blocker.hello()  # any request keeps the blocker's jobs alive
            time.sleep(0.2)
        for job in reversed(jobs):
            blocker.cancel(job)
    assert batch.wait(120) == 0, log.read_text()
    assert "2 written, 0 skipped, 0 failed" in log.read_text()
    assert outputs(out) == ["a.png", "b.png"]


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
    env = {"BRUSHWORK_SERVER": nobody}
    done = brushwork(
        "batch", str(inputs / "in" / "a.png"), "--style", str(inputs / "style.jpg"), "-o",
        str(out), "--weights", str(weights_file), *FAST, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no daemon answered; running one inside this batch on cpu" in done.stderr
    assert (out / "a.png").exists()


def test_batch_with_an_explicit_server_that_is_down_fails(inputs):
    done = batch_folder(inputs, "--server", "tcp://127.0.0.1:9")
    assert done.returncode == 3
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("brushwork: error: no daemon at tcp://127.0.0.1:9")
    )
