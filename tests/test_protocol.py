"""The wire format: every message round-trips, every malformed one is a ProtocolError."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brushwork import pixels, protocol
from brushwork.protocol import (
    AcceptedReply,
    CancelRequest,
    ErrorReply,
    HeartbeatReply,
    HeartbeatRequest,
    HelloReply,
    HelloRequest,
    InfoReply,
    InfoRequest,
    PreviewReply,
    ProgressReply,
    ProtocolError,
    RawImage,
    ResultReply,
    StatusReply,
    StatusRequest,
    SubmitRequest,
)
from daemon_helpers import TINY, header, noise

LIMITS = {
    "server": "0.1.0",
    "protocol": 1,
    "device": "cpu",
    "max_pixels": 10**6,
    "max_message_bytes": 16 * 10**6,
    "max_queue": 4,
    "heartbeat_timeout": 5.0,
}
REQUESTS = [
    HelloRequest(ref="r1"),
    InfoRequest(),
    SubmitRequest(
        ref="r2", job="job-1", settings=TINY, content=noise(4, 5, 4), styles=[noise(3, 3)]
    ),
    SubmitRequest(
        job="job.2",
        settings=TINY.replace(init="image"),
        content=pixels.from_array(np.zeros((2, 3, 1), np.uint16)),
        styles=[noise(2, 2), noise(3, 2, 1)],
        init=pixels.from_array(np.zeros((2, 3, 3), np.float32)),
        preview_every=5,
        preview_size=64,
        output_dtype="f32",
    ),
    CancelRequest(job="a"),
    StatusRequest(ref="x", job="b:c"),
    HeartbeatRequest(),
    HeartbeatRequest(jobs=["a", "b"]),
]
REPLIES = [
    HelloReply(ref="r1", **LIMITS),
    InfoReply(
        **LIMITS,
        device_name="cpu",
        memory={"total": 8, "free": None},
        weights="/w.pth",
        uptime=1.5,
        queue=[{"id": "a", "state": "queued"}],
        workers=[{"id": 0, "state": "idle", "job": None}],
    ),
    AcceptedReply(ref="r", job="j", position=2),
    ProgressReply(job="j", iteration=3, total=10, losses={"total": 1.5, "tv": None}, elapsed=0.2),
    ProgressReply(job="j", iteration=3, total=10, losses={}, elapsed=0.2, eta=0.5),
    PreviewReply(job="j", iteration=5, image=noise(8, 6)),
    ResultReply(
        job="j",
        image=noise(4, 4, 4),
        iterations=4,
        losses={"total": 2.0},
        elapsed=1.0,
        queued=0.0,
        settings=TINY,
        device="cpu",
    ),
    StatusReply(job="j", state="running", position=0, iteration=1, total=4),
    StatusReply(job="j", state="done", iteration=4, total=4),
    ErrorReply(code=protocol.QUEUE_FULL, message="full", job="j"),
    ErrorReply(ref="q", code="some_future_code", message="hm"),
    HeartbeatReply(unknown=["gone"]),
]


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: m.TYPE)
def test_requests_round_trip(message):
    assert protocol.decode_request(protocol.encode(message)) == message


@pytest.mark.parametrize("message", REPLIES, ids=lambda m: m.TYPE)
def test_replies_round_trip(message):
    assert protocol.decode_reply(protocol.encode(message)) == message


def test_every_message_type_is_covered_here():
    assert {m.TYPE for m in REQUESTS} == set(protocol.REQUESTS)
    assert {m.TYPE for m in REPLIES} == set(protocol.REPLIES)


def test_header_is_plain_json_and_frames_are_raw_little_endian():
    image = pixels.from_array(np.array([[[1, 258]]], np.uint16))
    frames = protocol.encode(PreviewReply(job="j", iteration=1, image=image))
    head = json.loads(frames[0])
    assert head == {
        "v": 1,
        "type": "preview",
        "job": "j",
        "iteration": 1,
        "frames": [{"role": "image", "width": 1, "height": 1, "channels": 2, "dtype": "u16"}],
    }
    assert bytes(frames[1]) == struct.pack("<HH", 1, 258)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"width": 2, "height": 2, "channels": 3, "dtype": "u8", "data": b"\0" * 11}, "12 bytes"),
        ({"width": 0, "height": 2, "channels": 3, "dtype": "u8", "data": b""}, "width"),
        ({"width": 1, "height": 1, "channels": 5, "dtype": "u8", "data": b"\0" * 5}, "channels"),
        ({"width": 1, "height": 1, "channels": 1, "dtype": "f64", "data": b"\0" * 8}, "dtype"),
        ({"width": True, "height": 1, "channels": 1, "dtype": "u8", "data": b"\0"}, "width"),
    ],
)
def test_raw_image_checks_its_size(kwargs, fragment):
    with pytest.raises(ProtocolError, match=fragment) as e:
        RawImage(**kwargs)
    assert e.value.code == protocol.BAD_REQUEST


_DESCRIPTIONS = [
    {"role": "content", "width": 2, "height": 1, "channels": 3, "dtype": "u8"},
    {"role": "style", "width": 1, "height": 1, "channels": 3, "dtype": "u8"},
]

_MASK = {**_DESCRIPTIONS[1], "role": "mask"}


def _submit_frames(**change) -> list[bytes]:
    fields = {"type": "submit", "job": "j", "settings": TINY.to_dict(), "frames": _DESCRIPTIONS}
    fields.update(change)
    return [header(**fields), b"\0" * 6, b"\0" * 3]


@pytest.mark.parametrize(
    ("frames", "code", "fragment"),
    [
        ([], protocol.BAD_REQUEST, "empty"),
        ([b"\xff\xfe"], protocol.BAD_REQUEST, "UTF-8 JSON"),
        ([b"[1, 2]"], protocol.BAD_REQUEST, "JSON object"),
        ([b'{"v": 1, "type": "hello", "x": NaN}'], protocol.BAD_REQUEST, "JSON"),
        ([b'{"type": "hello"}'], protocol.UNSUPPORTED_VERSION, "version None"),
        ([b'{"v": 2, "type": "hello"}'], protocol.UNSUPPORTED_VERSION, "version 2"),
        ([header(type="dance")], protocol.UNKNOWN_TYPE, "'dance'"),
        ([header(type="result")], protocol.UNKNOWN_TYPE, "'result'"),  # a reply, not a request
        ([header(type="cancel")], protocol.BAD_REQUEST, "'job'"),
        ([header(type="cancel", job="a b")], protocol.BAD_REQUEST, "job must be"),
        ([header(type="cancel", job="x" * 65)], protocol.BAD_REQUEST, "job must be"),
        ([header(type="heartbeat", jobs="abc")], protocol.BAD_REQUEST, "jobs"),
        ([header(type="hello"), b"extra"], protocol.BAD_REQUEST, "describes 0 pixel frames"),
        (_submit_frames()[:2], protocol.BAD_REQUEST, "describes 2"),
        ([*_submit_frames()[:1], b"\0" * 5, b"\0" * 3], protocol.BAD_REQUEST, "needs 6 bytes"),
        (
            _submit_frames(frames=[{"role": "content"}, {"role": "style"}]),
            protocol.BAD_REQUEST,
            "width",
        ),
        (_submit_frames(frames="no"), protocol.BAD_REQUEST, "'frames' must be a list"),
        (_submit_frames(settings={"size": -1}), protocol.BAD_SETTINGS, "size"),
        (_submit_frames(settings={"colour": 1}), protocol.BAD_SETTINGS, "unknown setting"),
        (_submit_frames(settings=[1]), protocol.BAD_SETTINGS, "JSON object"),
        (_submit_frames(preview_every=-1), protocol.BAD_REQUEST, "preview_every"),
        (_submit_frames(output_dtype="u32"), protocol.BAD_REQUEST, "output_dtype"),
        (
            _submit_frames(
                frames=[
                    {"role": "style", "width": 2, "height": 1, "channels": 3, "dtype": "u8"},
                    {"role": "style", "width": 1, "height": 1, "channels": 3, "dtype": "u8"},
                ]
            ),
            protocol.BAD_REQUEST,
            "no 'content' image",
        ),
        (
            _submit_frames(
                frames=[{"role": "content", "width": 2, "height": 1, "channels": 3, "dtype": "u8"}]
            )[:2],
            protocol.BAD_REQUEST,
            "no 'style' image",
        ),
        (
            [
                *_submit_frames(frames=[*_DESCRIPTIONS, {**_DESCRIPTIONS[1], "role": "mask"}]),
                b"\0" * 3,
            ],
            protocol.BAD_REQUEST,
            "'mask'",
        ),
        ([b" " * (protocol.MAX_HEADER_BYTES + 1)], protocol.BAD_REQUEST, "over"),
    ],
)
def test_malformed_requests_are_protocol_errors(frames, code, fragment):
    with pytest.raises(ProtocolError, match=fragment) as e:
        protocol.decode_request(frames)
    assert e.value.code == code
    assert "\n" not in str(e.value)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    assert protocol.decode_request([header(type="hello", later_field=[1, 2])]) == HelloRequest()


def test_peek_finds_ref_and_job_of_a_bad_request():
    frame = header(type="cancel", ref="r7", job="j9", nonsense=True)
    assert protocol.peek_ref_and_job(frame) == ("r7", "j9")
    assert protocol.peek_ref_and_job(b"junk") == (None, None)
    assert protocol.peek_ref_and_job(header(ref=["x"], job="bad id")) == (None, None)


def test_encode_refuses_nan():
    with pytest.raises(ValueError, match="progress"):
        protocol.encode(
            ProgressReply(job="j", iteration=1, total=1, losses={"t": 1}, elapsed=float("nan"))
        )


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_field_names = st.sampled_from(
    [f.name for cls in protocol.REQUESTS.values() for f in dataclasses.fields(cls)]
    + ["v", "type", "frames", "role", "width", "height", "channels", "dtype"]
)
_headers = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 2, "1", None]),
        "type": st.sampled_from([*protocol.REQUESTS, "x"]),
    },
    optional={"frames": st.lists(st.dictionaries(_field_names, _json, max_size=6), max_size=3)},
).flatmap(
    lambda h: st.dictionaries(_field_names, _json, max_size=6).map(lambda extra: {**extra, **h})
)


@settings(max_examples=300, deadline=None)
@given(
    head=_headers | _json.map(lambda x: {"v": 1, "type": "submit", "settings": x}),
    frames=st.lists(st.binary(max_size=64), max_size=3),
)
def test_fuzzed_requests_decode_or_raise_protocol_error(head, frames):
    try:
        message = protocol.decode_request([json.dumps(head).encode(), *frames])
    except ProtocolError as e:
        assert e.code in protocol.ERROR_CODES
        assert "\n" not in str(e)
    else:
        assert protocol.decode_request(protocol.encode(message)) == message


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.binary(max_size=200), max_size=4))
def test_random_bytes_never_escape_as_other_exceptions(frames):
    with contextlib.suppress(ProtocolError):
        protocol.decode_request(frames)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_pixels_round_trip(dtype, channels):
    array = (np.arange(6 * 5 * channels) % 200).reshape(6, 5, channels).astype(dtype)
    image = pixels.from_array(array)
    assert (image.width, image.height, image.channels) == (5, 6, channels)
    back = pixels.to_array(
        protocol.decode_reply(
            protocol.encode(PreviewReply(job="j", iteration=1, image=image))
        ).image
    )
    np.testing.assert_array_equal(back, array)


def test_pixels_from_float_rounds_and_clips():
    image = np.array([[[0.0, 0.5, 1.2, -0.1]]], np.float32)
    assert pixels.to_array(pixels.from_float(image, "u8")).tolist() == [[[0, 128, 255, 0]]]
    assert pixels.to_array(pixels.from_float(image, "u16")).tolist() == [[[0, 32768, 65535, 0]]]
    assert pixels.to_array(pixels.from_float(image, "f32")).tolist() == [[[0.0, 0.5, 1.0, 0.0]]]
    with pytest.raises(ValueError, match="int64"):
        pixels.from_array(np.zeros((2, 2), np.int64))
