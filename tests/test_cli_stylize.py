"""`brushwork stylize` as a user runs it: a subprocess, exit codes, one-line errors."""

import argparse
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from brushwork import images
from brushwork.commands.stylize import add_settings_arguments, settings_from_args
from brushwork.settings import Settings
from fixtures_cli import brushwork
from fixtures_daemon import free_port


@pytest.mark.weights
def test_stylize_writes_the_image(tmp_path, pictures, weights_file):
    out = tmp_path / "out.png"
    r = brushwork(
        "stylize", *map(str, pictures), "-o", str(out), "--size", "48", "--iterations", "3",
        "--scales", "1", "--weights", str(weights_file), "--device", "cpu",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "in-process" in r.stderr
    img = images.load(out)
    assert img.shape == (34, 48, 4)  # long side 48, alpha kept


def _one_line_error(r: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert text in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"garbage"), "not a readable image"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nshort"), "not a readable image"),
    ],
)
def test_bad_content_file(tmp_path, pictures, make, text):
    bad = tmp_path / "bad.png"
    make(bad)
    r = brushwork("stylize", str(bad), str(pictures[1]), "-o", str(tmp_path / "o.png"))
    _one_line_error(r, 2, text)


@pytest.mark.parametrize(
    ("options", "code", "text"),
    [
        (["--size", "-5"], 2, "--size must be between"),
        (["--size", "999999"], 2, "--size must be between"),
        (["--iterations", "0"], 2, "--iterations must be between"),
        (["--style-weight", "nan"], 2, "--style-weight must be between"),
        (["--style-blend", "1,2"], 2, "--style-blend has 2 values for 1 style image"),
        (["--style-blend", "x"], 2, "expected numbers"),
        (["--content-layer", "conv9_9"], 2, "--content-layer must be one of conv1_1, "),
        (["--style-layers", "conv1_1,relu2_1"], 2, "--style-layers must be one of conv1_1, "),
        (["--preserve-colors", "sepia"], 2, "invalid choice"),
        (["--optimizer", "sgd"], 2, "invalid choice"),
        (["--init", "nope.png"], 2, "no such file"),
        (["-o", "out.xyz"], 2, "unknown image format"),
        (["-o", "missing-dir/out.png"], 2, "does not exist"),
        (["-o", "/proc/x.png"], 2, "/proc/x.png: cannot write in /proc ("),
        (["-o", "content.png/x.png"], 2, "content.png is a file, not a folder"),
        (["--device", "tpu"], 2, "unknown device"),
        (["--seed", "-2"], 2, "--seed must be -1 (draw one) or a number >= 0"),
        (["--jpeg-quality", "101"], 2, "--jpeg-quality must be between 1 and 100"),
        (["--server", "localhost"], 2, "'localhost' is not a daemon address: use HOST:PORT"),
    ],
)
def test_bad_options(tmp_path, pictures, options, code, text, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["stylize", *map(str, pictures), "-o", "o.png", *options]
    _one_line_error(brushwork(*args), code, text)
    assert not (tmp_path / "o.png").exists()


def test_unsupported_pixel_layout(tmp_path, pictures):
    odd = tmp_path / "cmyk.tif"
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 4), np.uint8), mode="CMYK").save(odd)
    assert images.load(odd).shape == (4, 4, 3)  # converted, not refused


def test_stylize_goes_through_a_daemon_when_one_answers(tmp_path, pictures, daemon):
    out = tmp_path / "out.png"
    r = brushwork(
        "stylize", *map(str, pictures), "-o", str(out), "--size", "40", "--iterations", "2",
        "--scales", "1", "--server", daemon.endpoint,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"on the daemon at {daemon.endpoint}" in r.stderr
    assert images.load(out).shape == (29, 40, 4)


def test_stylize_with_a_silent_server_is_one_line(tmp_path, pictures):
    port = free_port()
    r = brushwork(
        "stylize", *map(str, pictures), "-o", str(tmp_path / "o.png"),
        "--server", f"tcp://127.0.0.1:{port}",
    )  # fmt: skip
    _one_line_error(r, 3, f"no daemon at tcp://127.0.0.1:{port}")


def test_stylize_on_a_daemon_by_host_and_port_names_its_job_and_saves_steps(
    tmp_path, pictures, daemon
):
    out = tmp_path / "out.jpg"
    host_port = daemon.endpoint.removeprefix("tcp://")
    r = brushwork(
        "stylize", *map(str, pictures), "-o", str(out), "--size", "40", "--iterations", "4",
        "--scales", "1", "--server", host_port, "--save-every", "2", "--print-every", "1",
        "--seed", "-1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    job = re.search(
        r"as job ([0-9a-f]{32}) \(`brushwork cancel \1 --token [\w-]{43}` stops it\)", r.stderr
    )
    assert job, r.stderr
    seed = re.search(r"brushwork: seed (\d+) \(--seed \1 repeats it\)", r.stderr)
    assert seed and f"; seed {seed[1]})" in r.stderr.splitlines()[-1], r.stderr
    assert [line.split(":")[0] for line in r.stderr.splitlines() if "Step" in line] == [
        f"Step {i} of 4" for i in range(1, 5)
    ]
    # Step 2 is saved; step 4 is the output itself. Intermediates have the output's size.
    assert sorted(p.name for p in tmp_path.glob("out_*")) == ["out_2.jpg"]
    assert images.load(tmp_path / "out_2.jpg").shape == images.load(out).shape == (29, 40, 3)


def test_stylize_on_a_pipe_prints_a_line_every_10_steps(tmp_path, pictures, daemon):
    r = brushwork(
        "stylize", *map(str, pictures), "-o", str(tmp_path / "o.png"), "--size", "96",
        "--iterations", "30", "--scales", "2", "--min-scale", "32", "--server", daemon.endpoint,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if " of " in line and "%" in line]
    assert [line.split(":")[0] for line in lines] == [
        "Scale 1 of 2, step 10 of 20",
        "Scale 1 of 2, step 20 of 20",
        "Scale 2 of 2, step 5 of 5",  # a light finer level: half its 10
    ]
    assert lines[-1].split(": ")[1].startswith("100%")


def test_a_refused_job_has_its_exit_code(tmp_path, pictures, daemon):
    big = brushwork(
        "stylize", *map(str, pictures), "-o", str(tmp_path / "o.png"), "--size", "2000",
        "--server", daemon.endpoint,
    )  # fmt: skip
    _one_line_error_last(big, 4, "this daemon takes at most 1.0 Mpx")


def _one_line_error_last(r: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert r.returncode == code, r.stderr
    assert text in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr


@pytest.mark.parametrize("role", ["content", "style"])
def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, pictures, role):
    from test_images import png_header_only

    bomb = tmp_path / "bomb.png"
    png_header_only(bomb, 20000, 20000)
    content, style = (bomb, pictures[1]) if role == "content" else (pictures[0], bomb)
    r = brushwork("stylize", str(content), str(style), "-o", str(tmp_path / "o.png"))
    _one_line_error(r, 2, f"{bomb}: 20000x20000 = 400.0 Mpx is over the limit of 134.2 Mpx")


def test_large_files_are_fitted_before_they_go_to_the_daemon(tmp_path, daemon):
    # Both over the shared daemon's 1 Mpx limit; the job needs 40 px.
    rng = np.random.default_rng(2)
    big_content, big_style = tmp_path / "c.png", tmp_path / "s.jpg"
    images.save(big_content, rng.random((1000, 1200, 3), dtype=np.float32))
    images.save(big_style, rng.random((1100, 1000, 3), dtype=np.float32))
    out = tmp_path / "out.png"
    r = brushwork(
        "stylize", str(big_content), str(big_style), "-o", str(out), "--size", "40",
        "--iterations", "2", "--scales", "1", "--server", daemon.endpoint,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert images.load(out).shape == (33, 40, 3)


def test_sigterm_on_a_client_cancels_its_job_on_the_daemon(tmp_path, pictures, daemon):
    def count(pattern: str) -> int:
        return len(re.findall(pattern, daemon.log_file.read_text()))

    started, cancelled = count(r"job \S+ running"), count("cancelled by request while running")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "brushwork", "stylize", *map(str, pictures), "-o",
            str(tmp_path / "o.png"), "--size", "48", "--iterations", "100000", "--scales", "1",
            "--server", daemon.endpoint,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while count(r"job \S+ running") == started:  # the shared daemon runs one test's jobs at a time
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    time.sleep(1.0)  # some iterations in
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=30)[1]
    signalled = time.monotonic()
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "brushwork: terminated"
    # Cancelled by the client's own request, before the 2 s heartbeat timeout could.
    while count("cancelled by request while running") == cancelled:
        assert time.monotonic() - signalled < 1.5, daemon.log_file.read_text()[-2000:]
        time.sleep(0.05)
    assert not (tmp_path / "o.png").exists()


def test_layer_options_reach_the_settings():
    """--content-layer and --style-layers set the fields; the defaults are the Settings'."""
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    args = parser.parse_args(["--content-layer", "conv4_2", "--style-layers", "conv1_1, conv5_1"])
    settings = settings_from_args(args, n_styles=1)
    assert settings.content_layer == "conv4_2"
    assert settings.style_layers == ("conv1_1", "conv5_1")
    assert settings_from_args(parser.parse_args([]), n_styles=1) == Settings()
