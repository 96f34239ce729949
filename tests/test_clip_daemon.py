"""A clip's frames on a real daemon on loopback (real weights, a tiny synthetic clip): held
to the frames before them they flicker less than frames styled one by one, and frames that
do not fit are refused in one line while the daemon lives on."""

from __future__ import annotations

import numpy as np
import pytest

from brushwork import cli, images, pixels, protocol
from brushwork.client import DaemonError
from brushwork.clip import Clip, Segment, plan
from brushwork.settings import Temporal
from clip_helpers import CLIP, clip_error, panned_clip, reader, style
from daemon_helpers import header, raw_exchange

pytestmark = pytest.mark.weights


def test_a_clip_on_the_daemon_flickers_less_than_its_frames_styled_alone(daemon):
    clip, styles = panned_clip(), [style()]
    held: dict[int, np.ndarray] = {}
    with daemon.client() as client:
        runner = Clip(client, reader(clip), held.__setitem__, styles, CLIP)
        runner.run(plan([Segment(0, len(clip))], len(client.info().workers)))
        alone = [
            pixels.to_array(
                client.stylize(pixels.from_array(f), [pixels.from_array(styles[0])], CLIP,
                               output_dtype="f32").image
            )
            for f in clip
        ]  # fmt: skip
    assert sorted(held) == list(range(len(clip)))
    temporal = clip_error([held[i] for i in range(len(clip))])
    independent = clip_error(alone)
    print(f"clip over the daemon: warping error {temporal:.5f} held, {independent:.5f} alone")
    assert temporal < independent / 2
    # The first frame has nothing before it: the same picture as a still image.
    assert np.abs(held[0] - alone[0]).max() < 1e-6


def _frame(w: int, h: int, role: str) -> tuple[dict, bytes]:
    return {"role": role, "width": w, "height": h, "channels": 3, "dtype": "u8"}, bytes(w * h * 3)


@pytest.mark.parametrize(
    ("frames", "says"),
    [
        (
            [(40, 30, "content"), (20, 20, "style"), (40, 30, "previous")],
            "1 'previous' and 0 'previous_result' frames",
        ),
        (
            [
                (40, 30, "content"),
                (20, 20, "style"),
                (41, 30, "previous"),
                (40, 30, "previous_result"),
            ],
            "a previous frame is 41x30 and the content 40x30",
        ),
        (
            [
                (40, 30, "content"),
                (20, 20, "style"),
                (40, 30, "previous"),
                (30, 40, "previous_result"),
            ],
            "a previous result is 30x40, not the shape of the 40x30 content",
        ),
    ],
)
def test_frames_that_do_not_fit_are_one_line_and_the_daemon_lives(small_daemon, frames, says):
    described, data = zip(*(_frame(*f) for f in frames), strict=True)
    request = header(type="submit", job="clipattack", ref="r1", settings={"size": 0},
                     frames=list(described))  # fmt: skip
    reply = protocol.decode_reply(raw_exchange(small_daemon.endpoint, [request, *data]))
    assert reply.code == protocol.BAD_REQUEST and reply.ref == "r1"
    assert says in reply.message and "\n" not in reply.message
    with small_daemon.client() as client:
        assert client.hello().protocol == 1


def test_previous_frames_count_against_the_queue_budget(small_daemon):
    """The small daemon holds 4 MiB of frames: a 300x300 frame with three earlier frames and
    their float results is 6.2 MB, refused before it queues, though its content is 0.27 MB."""
    content = pixels.from_array(np.zeros((300, 300, 3), np.uint8))
    result = pixels.from_array(np.zeros((300, 300, 4), np.float32))
    with small_daemon.client() as client:
        with pytest.raises(DaemonError) as e:
            client.submit(
                content, [content], CLIP, previous=[content] * 3, previous_results=[result] * 3,
                temporal=Temporal(),
            )  # fmt: skip
        assert e.value.code == protocol.TOO_LARGE
        assert "this job's images take 5.7 MB" in str(e.value)


def test_brushwork_video_runs_its_frames_on_the_daemon_and_resumes(daemon, tmp_path, capsys):
    folder, out = tmp_path / "clip", tmp_path / "out"
    folder.mkdir()
    for t, frame in enumerate(panned_clip(), 1):
        images.save(folder / f"shot_{t:02d}.png", frame / 255)
    images.save(tmp_path / "style.png", style() / 255)
    command = ["video", folder, "-o", out, "--style", tmp_path / "style.png",
               "--server", daemon.endpoint, "--size", "64", "--iterations", "12",
               "--scales", "1", "--seed", "0"]  # fmt: skip
    assert cli.main([str(a) for a in command]) == 0
    said = capsys.readouterr().err
    assert f"8 frames on the daemon at {daemon.endpoint} (cpu, 1 worker)" in said
    made = sorted(out.glob("frame_*.png"))
    assert [p.name for p in made] == [f"frame_{i:06d}.png" for i in range(1, 9)]
    kept = {p.name: p.read_bytes() for p in made}
    for gone in made[4:6]:
        gone.unlink()
    assert cli.main([str(a) for a in command]) == 0
    said = capsys.readouterr().err
    assert "6 of 8 frames exist: kept" in said and "2 frames on the daemon" in said
    again = {p.name: p.read_bytes() for p in sorted(out.glob("frame_*.png"))}
    assert sorted(again) == sorted(kept)
    assert all(
        again[n] == kept[n] for n in kept if n not in ("frame_000005.png", "frame_000006.png")
    )
    # The redone frames continue from the frames kept: the clip does not jump there.
    frames = [images.to_float(images.load(out / n)) for n in sorted(again)]
    assert clip_error(frames[3:7]) < clip_error(frames[0:4]) * 3
