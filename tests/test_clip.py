"""A clip cut into chunks for several workers (clip.plan), and a clip's frame on the wire
(previous frames checked by the protocol). The real runs are in test_clip_daemon.py and
test_ray.py."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from brushwork import pixels, protocol, worker
from brushwork.clip import Chunk, Segment, plan, segments
from brushwork.jobs import Cancel
from brushwork.protocol import ProtocolError, SubmitRequest
from brushwork.settings import Settings, Temporal


def test_one_worker_runs_the_clip_as_one_chain():
    assert plan([Segment(0, 40)], 1, overlap=4) == [Chunk(0, 40)]


def test_two_workers_cut_it_at_the_middle_with_the_later_half_starting_early():
    assert plan([Segment(0, 40)], 2, overlap=4) == [
        Chunk(0, 20, fade=0, tail=4),
        Chunk(16, 40, fade=4, tail=0),
    ]


def test_every_frame_is_run_once_or_in_one_fade_of_two_chains():
    chunks = plan([Segment(0, 100)], 4, overlap=3)
    assert len(chunks) == 4
    runs = np.zeros(100, int)
    for chunk in chunks:
        runs[chunk.start : chunk.end] += 1
    faded = [f for c in chunks for f in range(c.start, c.start + c.fade)]
    assert sorted(faded) == [int(f) for f in np.flatnonzero(runs == 2)]
    assert set(runs) == {1, 2}
    tails = [f for c in chunks for f in range(c.end - c.tail, c.end)]
    assert sorted(tails) == sorted(faded)


def test_a_short_clip_is_not_cut_into_chunks_it_cannot_fade():
    assert plan([Segment(0, 17)], 2, overlap=4) == [Chunk(0, 17)]  # halves of 8 < 2 x 4 + 1
    assert len(plan([Segment(0, 18)], 2, overlap=4)) == 2


def test_a_resumed_segment_keeps_its_earlier_results_and_the_later_half_has_none():
    before = [np.zeros((4, 4, 3), np.float32)]
    first, second = plan([Segment(30, 70, before)], 2, overlap=4)
    assert (first.start, first.before) == (30, before)
    assert (second.start, second.fade, second.before) == (46, 4, ())


def test_segments_left_by_an_interrupted_run_each_get_a_chain():
    chunks = plan([Segment(10, 20), Segment(50, 60)], 2, overlap=4)
    assert [(c.start, c.end, c.fade) for c in chunks] == [(10, 20, 0), (50, 60, 0)]


def test_the_frames_left_make_segments_that_continue_from_the_frames_finished():
    finished = {i: np.full((2, 2, 3), i, np.float32) for i in (0, 1, 2, 3, 6, 9)}
    found = segments([4, 5, 7, 8, 10], finished.get, reach=3)
    assert [(s.start, s.end) for s in found] == [(4, 6), (7, 9), (10, 11)]
    assert [[int(b[0, 0, 0]) for b in s.before] for s in found] == [[3, 2, 1], [6], [9]]
    assert segments([0, 1], finished.get, reach=4)[0].before == []


def _frame(width=8, height=6, channels=3) -> protocol.RawImage:
    return pixels.from_array(np.zeros((height, width, channels), np.uint8))


def _submit(**frame) -> SubmitRequest:
    return SubmitRequest(job="j", settings=Settings(), content=_frame(), styles=[_frame()], **frame)


def test_a_frame_goes_on_the_wire_and_back_with_its_previous_frames():
    sent = _submit(
        previous=[_frame(), _frame()],
        previous_results=[_frame(16, 12, 4), _frame(16, 12)],
        temporal=Temporal(weight=30.0),
    )
    back = protocol.decode_request(protocol.encode(sent))
    assert [role for role, _ in back.images()] == [
        "content", "style", "previous", "previous", "previous_result", "previous_result"
    ]  # fmt: skip
    assert back.temporal == Temporal(weight=30.0, offsets=(1, 2, 4))
    assert back.previous_results[0].channels == 4


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ({"previous": [_frame()]}, "1 'previous' and 0 'previous_result' frames"),
        ({"previous_results": [_frame()]}, "0 'previous' and 1 'previous_result' frames"),
        (
            {"previous": [_frame(10, 6)], "previous_results": [_frame()]},
            "a previous frame is 10x6 and the content 8x6",
        ),
        (
            {"previous": [_frame()], "previous_results": [_frame(8, 8)]},
            "a previous result is 8x8, not the shape of the 8x6 content",
        ),
        (
            {
                "previous": [_frame()] * 2,
                "previous_results": [_frame()] * 2,
                "temporal": Temporal(offsets=(1,)),
            },
            "2 previous frames for 1 temporal offsets [1]",
        ),
    ],
)
def test_previous_frames_that_do_not_fit_are_one_bad_request(frame, says):
    with pytest.raises(ProtocolError) as e:
        _submit(**frame)
    assert e.value.code == protocol.BAD_REQUEST and says in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_temporal_settings_are_refused_naming_the_field():
    header = protocol.encode(_submit())
    fields = json.loads(header[0])
    fields["temporal"] = {"weight": -1}
    with pytest.raises(ProtocolError) as e:
        protocol.decode_request([json.dumps(fields).encode(), *header[1:]])
    assert e.value.code == protocol.BAD_SETTINGS and "temporal weight" in str(e.value)


def test_a_daemon_without_opencv_fails_a_frame_in_one_line_that_says_how_to_fix_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if the video extra were not installed
    frame = _submit(previous=[_frame()], previous_results=[_frame()])
    outcome = worker.run_job(None, frame, lambda event: None, Cancel())  # never reaches it
    assert outcome.code == protocol.JOB_FAILED
    assert outcome.message == (
        "this daemon cannot style a clip's frames: cv2 is missing (install the video extra"
        ' where the daemon runs: pip install "brushwork[video]")'
    )
