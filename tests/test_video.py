"""`brushwork video` in-process on tiny clips: real weights, real video files (PyAV)."""

from fractions import Fraction
from itertools import pairwise
from types import SimpleNamespace

import av
import numpy as np
import pytest

from brushwork import cli, images, temporal, video
from engine_helpers import style_image
from test_flow import texture

PAN = 3  # px a frame: frame t(x) = frame t-1(x + PAN)
FAST = ["--size", "64", "--iterations", "12", "--scales", "1", "--device", "cpu"]


def pan_frames(n: int = 8, w: int = 64, h: int = 48) -> list[np.ndarray]:
    big = texture(h + 16, w + PAN * n + 16)
    return [big[8 : 8 + h, 8 + PAN * t : 8 + PAN * t + w] for t in range(n)]


def write_video(path, frames, fps=12, audio=True) -> None:
    """An H.264 file (and AAC audio, a 440 Hz tone) of `frames`."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        a = c.add_stream("aac", rate=16000) if audio else None
        for f in frames:
            c.mux(v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        c.mux(v.encode())
        if a is not None:
            t = np.arange(16000 * len(frames) // fps) / 16000
            tone = av.AudioFrame.from_ndarray(
                (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp",
                layout="mono",
            )  # fmt: skip
            tone.sample_rate = 16000
            c.mux(a.encode(tone))
            c.mux(a.encode())


@pytest.fixture
def clip(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for t, f in enumerate(pan_frames(), 1):
        images.save(folder / f"shot_{t}.png", f / 255)
    style = tmp_path / "style.png"
    images.save(style, style_image() / 255)
    return folder, style


def run(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["video", *map(str, args)])
    return code, capsys.readouterr().err


def warping_error(frames: list[np.ndarray]) -> float:
    f = [images.to_float(x)[..., :3] for x in frames]
    return float(np.mean([((b[:, :-PAN] - a[:, PAN:]) ** 2).mean() for a, b in pairwise(f)]))


@pytest.mark.weights
def test_a_held_clip_flickers_less_than_frames_one_by_one(clip, tmp_path, capsys, weights_file):
    folder, style = clip
    w = ["--weights", weights_file]
    assert run(capsys, folder, "-o", tmp_path / "held", "--style", style, *FAST, *w)[0] == 0
    code, err = run(
        capsys, folder, "-o", tmp_path / "alone", "--style", style, *FAST, *w,
        "--temporal-weight", "0",
    )  # fmt: skip
    assert code == 0, err
    assert "[8/8] wrote frame_000008.png" in err and "left" in err
    held = [images.load(p) for p in sorted((tmp_path / "held").glob("frame_*.png"))]
    alone = [images.load(p) for p in sorted((tmp_path / "alone").glob("frame_*.png"))]
    assert len(held) == len(alone) == 8
    assert warping_error(held) < warping_error(alone) / 2


@pytest.mark.weights
def test_a_video_file_in_and_out_keeps_its_rate_and_audio(tmp_path, capsys, weights_file):
    src, style = tmp_path / "in.mp4", tmp_path / "style.png"
    write_video(src, pan_frames(8))
    images.save(style, style_image() / 255)
    out = tmp_path / "out.mp4"
    fast = [*FAST, "--iterations", "2", "--weights", weights_file]
    code, err = run(capsys, src, "-o", out, "--style", style, "--start", "3", "--end", "6", *fast)
    assert code == 0, err
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == Fraction(12)
        assert len(list(c.decode(video=0))) == 4
        (audio,) = c.streams.audio
        assert audio.codec_context.name == "aac"
    assert not (tmp_path / ".out.mp4.frames").exists()
    code, err = run(capsys, src, "-o", out, "--style", style, "--start", "3", "--end", "6", *fast)
    assert code == 0 and "is done" in err  # a rerun redoes nothing
    webm = tmp_path / "out.webm"
    code, err = run(capsys, src, "-o", webm, "--style", style, "--end", "2", *fast)
    assert code == 0 and "no audio in" in err and "aac audio cannot go in a .webm" in err
    with av.open(str(webm)) as c:
        assert not c.streams.audio and len(list(c.decode(video=0))) == 2


@pytest.fixture
def recorded(monkeypatch):
    """stylize_frame recorded, not run (the frame passed through): frame number -> the
    offsets of the frames it was held to; control["stop_at"]: Ctrl-C on that call."""
    seen: dict[int, list[int]] = {}
    control = {"stop_at": None}

    def record(engine, content, styles, settings, previous, **k):
        seen[len(seen) + 1] = [p.offset for p in previous]
        if len(seen) == control["stop_at"]:
            raise KeyboardInterrupt
        return SimpleNamespace(image=content / 255, elapsed=0.0)

    monkeypatch.setattr(temporal, "stylize_frame", record)
    monkeypatch.setattr("brushwork.commands.video._engine", lambda args: None)
    return seen, control


def test_ctrl_c_keeps_the_finished_frames_and_a_rerun_goes_on(clip, tmp_path, capsys, recorded):
    folder, style = clip
    seen, control = recorded
    out = tmp_path / "out"
    control["stop_at"] = 4
    code, err = run(capsys, folder, "-o", out, "--style", style)
    assert code == 130 and "3 new frames kept" in err
    assert len(list(out.glob("frame_*.png"))) == 3
    kept = (out / "frame_000003.png").stat().st_mtime_ns
    seen.clear()
    control["stop_at"] = None
    code, err = run(capsys, folder, "-o", out, "--style", style)
    assert code == 0 and "3 of 8 frames exist: kept" in err, err
    assert (out / "frame_000003.png").stat().st_mtime_ns == kept
    assert len(seen) == 5 and len(list(out.glob("frame_*.png"))) == 8
    assert seen[1] == [1, 2]  # frame 4, held to the frames 3 and 2 the first run made
    seen.clear()
    code, err = run(capsys, folder, "-o", out, "--style", style, "--style-weight", "9")
    assert code == 0 and "settings changed: 8 old frames redone" in err and len(seen) == 8


def test_a_resumed_frame_is_held_to_the_finished_ones(clip, tmp_path, capsys, recorded):
    """The frames on disk stand in for the ones this run did not make."""
    folder, style = clip
    seen, _ = recorded
    out = tmp_path / "out"
    assert run(capsys, folder, "-o", out, "--style", style, "--end", "5")[0] == 0
    seen.clear()
    assert run(capsys, folder, "-o", out, "--style", style, "--start", "6")[0] == 0
    assert seen == {1: [1, 2, 4], 2: [1, 2, 4], 3: [1, 2, 4]}


@pytest.mark.parametrize(
    ("options", "text"),
    [
        (["--start", "0"], "has frames 1 to 8"),
        (["--end", "9"], "has frames 1 to 8"),
        (["--temporal-weight", "-1"], "--temporal-weight"),
        (["-o", "out.txt"], "a folder for PNG frames, or a video file"),
    ],
)
def test_bad_options_are_one_line(clip, tmp_path, capsys, monkeypatch, options, text):
    folder, style = clip
    monkeypatch.chdir(tmp_path)
    code, err = run(capsys, folder, "-o", "out", "--style", style, *options)
    assert code == 2 and text in err and len(err.strip().splitlines()) == 1, err


def test_an_unreadable_video_is_one_line(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 100)
    code, err = run(capsys, bad, "-o", tmp_path / "out", "--style", bad)
    assert code == 2 and "not a video file FFmpeg can read" in err, err


def test_folder_frames_go_by_their_numbers(tmp_path):
    for name in ("f_10.png", "f_2.png", "f_1.png", "notes.txt", "cover.png"):
        (tmp_path / name).touch()
    assert [p.name for p in video.folder_frames(tmp_path)] == ["f_1.png", "f_2.png", "f_10.png"]
