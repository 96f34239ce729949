"""The command line as an artist tries things with it (issue 30.6): quality, a size that never
upscales, inputs never overwritten, usage errors in one line with exit 2, a batch that redoes
what its settings changed."""

from __future__ import annotations

import argparse
import json

import pytest
from PIL import Image

from brushwork import images, manifest
from brushwork.cli import build_parser
from brushwork.commands.stylize import settings_from_args
from brushwork.settings import Settings
from test_cli_stylize import _one_line_error, brushwork

FAST = ["--iterations", "2", "--scales", "1"]


def parsed(*options: str) -> argparse.Namespace:
    return build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png", *options])


def test_quality_gives_the_dialogs_settings():
    for quality in ("draft", "normal", "high"):
        settings = settings_from_args(parsed("--quality", quality), 1)
        assert settings == Settings().at_quality(quality)
    strong = settings_from_args(parsed("--quality", "draft", "--strength", "80"), 1)
    assert strong == Settings().at_strength(80).at_quality("draft")


def test_help_says_the_default_size_never_upscales():
    r = brushwork("stylize", "--help")
    assert "never upscaled" in " ".join(r.stdout.split())


@pytest.mark.weights
def test_a_small_image_keeps_its_size_unless_a_size_is_given(tmp_path, pictures, daemon):
    out = tmp_path / "o.png"
    r = brushwork(
        "stylize", *map(str, pictures), "-o", str(out), *FAST, "--server", daemon.endpoint
    )
    assert r.returncode == 0, r.stderr
    assert images.load(out).shape[:2] == (40, 56)  # the content's own size, not 512
    r = brushwork(
        "stylize", *map(str, pictures), "-o", str(out), *FAST, "--size", "64",
        "--server", daemon.endpoint,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert images.load(out).shape[:2] == (46, 64)


@pytest.mark.parametrize("which", [0, 1])
def test_an_output_naming_an_input_is_refused_before_any_work(tmp_path, pictures, which):
    before = pictures[which].read_bytes()
    r = brushwork("stylize", *map(str, pictures), "-o", str(pictures[which]))
    _one_line_error(r, 2, f"-o {pictures[which]}: is an input")
    assert pictures[which].read_bytes() == before


@pytest.mark.parametrize(
    ("options", "text"),
    [
        (["--device", "tpu"], "unknown device 'tpu': use auto, cuda, mps or cpu"),
        (["--server", "http://localhost:5580"], "the daemon speaks no http://; use HOST:PORT"),
        (["--quality", "best"], "invalid choice: 'best'"),
    ],
)
def test_usage_errors_exit_2_in_one_line(tmp_path, pictures, options, text):
    r = brushwork("stylize", *map(str, pictures), "-o", str(tmp_path / "o.png"), *options)
    _one_line_error(r, 2, text)


def test_a_folder_given_for_an_image_says_so(tmp_path, pictures):
    r = brushwork("stylize", str(tmp_path), str(pictures[1]), "-o", str(tmp_path / "o.png"))
    _one_line_error(r, 2, f"{tmp_path}: is a folder; the content is one image file")


def test_batch_that_cannot_make_its_folder_says_so_in_one_line(tmp_path, pictures):
    under_a_file = pictures[0] / "out"
    r = brushwork("batch", str(pictures[0]), "--style", str(pictures[1]), "-o", str(under_a_file))
    _one_line_error(r, 2, f"-o {under_a_file}: cannot create the folder (Not a directory)")


def test_batch_refuses_to_write_over_its_inputs(tmp_path, pictures):
    before = pictures[0].read_bytes()
    r = brushwork("batch", str(pictures[0]), "--style", str(pictures[1]), "-o", str(tmp_path))
    _one_line_error(r, 2, f"would replace the input {pictures[0]}")
    assert pictures[0].read_bytes() == before


@pytest.mark.weights
def test_batch_rerun_redoes_what_changed_and_names_each_seed(tmp_path, pictures, daemon):
    out = tmp_path / "out"
    second = tmp_path / "second.png"
    Image.open(pictures[0]).save(second)
    args = [str(pictures[0]), str(second), "--style", str(pictures[1]), "-o", str(out)]
    args += [*FAST, "--size", "32", "--server", daemon.endpoint]

    def run(*extra: str) -> str:
        r = brushwork("batch", *args, *extra)
        assert r.returncode == 0, r.stderr
        return r.stderr

    run("--seed", "7")
    made = json.loads((out / manifest.NAME).read_text())
    assert {entry["seed"] for entry in made.values()} == {7}
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert "2 of 2 outputs exist: skipped" in run("--seed", "7")
    changed = run("--seed", "8")
    assert "2 outputs were made with other settings or inputs: redoing them" in changed
    assert "2 written, 0 skipped" in changed
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in out.glob("*.png"))
    assert {e["seed"] for e in json.loads((out / manifest.NAME).read_text()).values()} == {8}
