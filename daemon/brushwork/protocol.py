"""The Brushwork wire protocol (version 1): one JSON header frame, then raw pixel frames.

Standard library only: the daemon, the CLI and the GIMP plug-in all encode and decode through
this module, and PROTOCOL.md documents exactly what it does.

A message is a ZeroMQ multipart message. Frame 0 is a UTF-8 JSON object with at least
``{"v": 1, "type": "..."}`` plus the fields of that type. If the message carries images, the
header's ``frames`` array describes each following frame in order
(``{"role", "width", "height", "channels", "dtype"}``) and every frame holds exactly
``width * height * channels * itemsize`` bytes: row-major, channels interleaved, little-endian.

Requests go from a DEALER client to the daemon's ROUTER; replies go back the same way. The
message classes below are the whole vocabulary; ``encode`` turns one into frames, and
``decode_request`` / ``decode_reply`` turn frames back into one or raise ``ProtocolError``.
One module, past 600 lines on purpose: the plug-in ships it as a copy (with errors, settings
and client), so the messages and the check of every field stay together in it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from brushwork.errors import BrushworkError, shown
from brushwork.settings import MAX_SIDE, Settings, Temporal

PROTOCOL_VERSION = 1
DEFAULT_PORT = 5580
DEFAULT_ENDPOINT = f"tcp://127.0.0.1:{DEFAULT_PORT}"
MAX_HEADER_BYTES = 1 << 20  # a header is a few hundred bytes; this bounds a hostile one

# Pixel types on the wire and their sizes in bytes (little-endian; f32 is IEEE 754).
DTYPES = {"u8": 1, "u16": 2, "f32": 4}
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
# A submit's lane: "preview" jobs start before every "full" one, and a newer preview of the
# same owner cancels its older ones (PROTOCOL.md, "Lanes").
FULL, PREVIEW = "full", "preview"
LANES = (FULL, PREVIEW)
FINISHED_STATES = ("done", "failed", "cancelled")

# Error codes of `error` replies: the machine-readable half; `message` is the human one.
BAD_REQUEST = "bad_request"  # malformed header or frames, wrong frame size, bad field value
UNSUPPORTED_VERSION = "unsupported_version"
UNKNOWN_TYPE = "unknown_type"
BAD_SETTINGS = "bad_settings"  # Settings.from_dict refused the settings
BAD_INPUT = "bad_input"  # the engine refused the images (e.g. NaN pixels, missing init image)
TOO_LARGE = "too_large"  # an image or the output is over the daemon's pixel limit
QUEUE_FULL = "queue_full"
UNKNOWN_JOB = "unknown_job"
JOB_CONFLICT = "job_conflict"  # a job id reused for a different request, or by another client
NOT_OWNER = "not_owner"  # the job belongs to another client: acting on it needs its token
EXPIRED = "expired"  # a resubmitted job finished long ago and its result is no longer kept
CANCELLED = "cancelled"  # by a cancel request, a vanished client or the daemon stopping
OUT_OF_MEMORY = "out_of_memory"
JOB_FAILED = "job_failed"  # the run itself failed (e.g. the optimisation diverged)
WORKER_LOST = "worker_lost"  # the worker running the job died (a Ray actor or its node)
SHUTTING_DOWN = "shutting_down"
INTERNAL = "internal"  # a daemon bug; the message says what, the log has the traceback
ERROR_CODES = (
    BAD_REQUEST,
    UNSUPPORTED_VERSION,
    UNKNOWN_TYPE,
    BAD_SETTINGS,
    BAD_INPUT,
    TOO_LARGE,
    QUEUE_FULL,
    UNKNOWN_JOB,
    JOB_CONFLICT,
    NOT_OWNER,
    EXPIRED,
    CANCELLED,
    OUT_OF_MEMORY,
    JOB_FAILED,
    WORKER_LOST,
    SHUTTING_DOWN,
    INTERNAL,
)

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# A job's secret: what proves that a request comes from the job's submitter (at least 128 bits
# of base64url; `secrets.token_urlsafe(32)` makes one).
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22,128}")


def new_token() -> str:
    """A fresh job token (256 bits)."""
    return secrets.token_urlsafe(32)


def pixel_counts(pixels: int, limit: int) -> str:
    """'(120,000 px, over the limit of 100,000)': the exact counts, after rounded ones that
    may read alike."""
    return f"({pixels:,} px, over the limit of {limit:,})"


class ProtocolError(BrushworkError):
    """A message that does not follow the protocol; ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RawImage:
    """Pixels as they travel: row-major (height, width, channels), little-endian."""

    width: int
    height: int
    channels: int
    dtype: str  # "u8", "u16" or "f32" (f32 holds values in [0, 1])
    data: bytes | bytearray | memoryview = field(repr=False)

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            _check_int(name, getattr(self, name), 1, MAX_SIDE)
        _check_int("channels", self.channels, 1, 4)
        if self.dtype not in DTYPES:
            raise ProtocolError(
                BAD_REQUEST, f"dtype must be one of {', '.join(DTYPES)}, got {shown(self.dtype)}"
            )
        size = memoryview(self.data).nbytes
        if size != self.nbytes:
            raise ProtocolError(
                BAD_REQUEST,
                f"a {self.width}x{self.height}x{self.channels} {self.dtype} image needs "
                f"{self.nbytes} bytes, the frame has {size}",
            )

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * DTYPES[self.dtype]

    def describe(self) -> dict[str, Any]:
        """The header entry for this image's frame (without its role)."""
        return {
            "width": self.width,
            "height": self.height,
            "channels": self.channels,
            "dtype": self.dtype,
        }


# --- Messages -------------------------------------------------------------------------------
# Every field is a keyword; `ref` (requests) is echoed in the direct reply so a client can
# match replies while job events for the same socket interleave with them.


@dataclass(frozen=True, kw_only=True)
class Message:
    TYPE: ClassVar[str]
    ref: str | None = None


# Requests, client -> daemon.


@dataclass(frozen=True, kw_only=True)
class HelloRequest(Message):
    """Ping; the reply says who answers and its limits."""

    TYPE: ClassVar[str] = "hello"


@dataclass(frozen=True, kw_only=True)
class InfoRequest(Message):
    TYPE: ClassVar[str] = "info"
    token: str | None = None  # the daemon's operator token: every job is listed by name


@dataclass(frozen=True, kw_only=True)
class SubmitRequest(Message):
    """Run one stylization. A resend with the same job id never starts a second run."""

    TYPE: ClassVar[str] = "submit"
    job: str
    token: str | None = None  # the job's secret; None: the daemon makes one (see `accepted`)
    settings: Settings
    content: RawImage
    styles: list[RawImage]
    init: RawImage | None = None  # needed when settings.init == "image"
    preview_every: int = 0  # send a preview every N iterations; 0 = never
    preview_size: int = 256  # long side of previews in px
    output_dtype: str | None = None  # dtype of the result; None = the content's
    lane: str = FULL  # PREVIEW: ahead of every full job, superseding the owner's older ones
    # A frame of a clip (Ruder et al. 2016): the content frames before this one and their
    # stylised results, the nearest first, one per offset of `temporal.offsets` (a prefix of
    # them: a clip's second frame has only the frame before it). The daemon warps the results
    # to this frame along the optical flow and holds the frame to them where the flow can be
    # trusted. None of them: a still image (or a clip's first frame).
    previous: list[RawImage] = field(default_factory=list)
    previous_results: list[RawImage] = field(default_factory=list)
    temporal: Temporal | None = None  # how firmly; None = the defaults

    def __post_init__(self) -> None:
        if self.previous or self.previous_results:
            offsets = (self.temporal or Temporal()).offsets
            _check_previous(self.content, self.previous, self.previous_results, offsets)

    def images(self) -> list[tuple[str, RawImage]]:
        """Every image the job holds, by role: what counts against the daemon's limits."""
        return [
            ("content", self.content),
            *(("style", s) for s in self.styles),
            *([("init", self.init)] if self.init is not None else []),
            *(("previous", i) for i in self.previous),
            *(("previous_result", i) for i in self.previous_results),
        ]


@dataclass(frozen=True, kw_only=True)
class CancelRequest(Message):
    TYPE: ClassVar[str] = "cancel"
    job: str
    token: str | None = None  # needed unless this connection submitted the job


@dataclass(frozen=True, kw_only=True)
class StatusRequest(Message):
    TYPE: ClassVar[str] = "status"
    job: str
    token: str | None = None  # needed unless this connection submitted the job


@dataclass(frozen=True, kw_only=True)
class HeartbeatRequest(Message):
    """'I am still here, waiting for these jobs.' Jobs of a silent client get cancelled."""

    TYPE: ClassVar[str] = "heartbeat"
    jobs: list[str] = field(default_factory=list)
    # Job id -> token: proves ownership of jobs submitted on an earlier connection (reconnect).
    tokens: dict[str, str] = field(default_factory=dict)


# Replies, daemon -> client.


@dataclass(frozen=True, kw_only=True)
class HelloReply(Message):
    TYPE: ClassVar[str] = "hello"
    server: str  # daemon version
    protocol: int
    device: str  # torch device, e.g. "cuda:0" or "cpu"
    max_pixels: int  # per image, and for the output
    max_message_bytes: int  # per frame (ZMQ_MAXMSGSIZE): a larger frame drops the connection
    max_queue: int
    heartbeat_timeout: float  # seconds of silence after which a client's jobs are cancelled
    max_job_bytes: int | None = None  # memory one job may need at its peak (the estimate)
    # Bytes of frames queued and running jobs may hold together (None from an older daemon).
    max_queue_bytes: int | None = None


@dataclass(frozen=True, kw_only=True)
class InfoReply(HelloReply):
    TYPE: ClassVar[str] = "info"
    device_name: str
    memory: dict[str, Any]  # {"total": bytes, "free": bytes or null}
    weights: str
    uptime: float
    queue: list[dict[str, Any]]  # job summaries: id, state, position, iteration, total, ...
    workers: list[dict[str, Any]] = field(default_factory=list)  # id, state, job, node, ...
    queue_bytes: int | None = None  # bytes of frames the queued and running jobs hold now


@dataclass(frozen=True, kw_only=True)
class AcceptedReply(Message):
    TYPE: ClassVar[str] = "accepted"
    job: str
    position: int  # jobs ahead of this one, the running one included
    token: str | None = None  # the job's secret: only this client has it


@dataclass(frozen=True, kw_only=True)
class ProgressReply(Message):
    TYPE: ClassVar[str] = "progress"
    job: str
    iteration: int  # 1-based, over all scales
    total: int
    losses: dict[str, float | None]  # content, style, tv, total (weighted)
    elapsed: float  # seconds since the job started running
    eta: float | None = None  # seconds left: timed seconds per pixel x the pixels left
    # Where the run stands (None from a daemon older than these fields):
    level: int | None = None  # 1-based pyramid level (scale), coarse to fine
    levels: int | None = None
    step: int | None = None  # 1-based step within the level
    steps: int | None = None  # steps of the level
    fraction: float | None = None  # share of the job's time done (estimated), never decreasing


@dataclass(frozen=True, kw_only=True)
class PreviewReply(Message):
    TYPE: ClassVar[str] = "preview"
    job: str
    iteration: int
    image: RawImage  # u8 RGB, long side <= the preview_size asked for


@dataclass(frozen=True, kw_only=True)
class ResultReply(Message):
    TYPE: ClassVar[str] = "result"
    job: str
    image: RawImage  # 3 channels, or 4 when the content had alpha
    iterations: int
    losses: dict[str, float | None]
    elapsed: float  # seconds of running
    queued: float  # seconds spent waiting in the queue
    settings: Settings  # the settings used
    device: str


@dataclass(frozen=True, kw_only=True)
class StatusReply(Message):
    TYPE: ClassVar[str] = "status"
    job: str
    state: str  # one of JOB_STATES
    position: int | None = None  # jobs ahead while queued or running; None once finished
    iteration: int
    total: int


@dataclass(frozen=True, kw_only=True)
class ErrorReply(Message):
    TYPE: ClassVar[str] = "error"
    code: str  # one of ERROR_CODES
    message: str  # one line, for people
    job: str | None = None  # the job it concerns, if any


@dataclass(frozen=True, kw_only=True)
class HeartbeatReply(Message):
    TYPE: ClassVar[str] = "heartbeat"
    unknown: list[str] = field(default_factory=list)  # job ids the daemon does not know
    refused: list[str] = field(default_factory=list)  # ids of other clients' jobs (no token)


REQUESTS: dict[str, type[Message]] = {
    c.TYPE: c
    for c in (
        HelloRequest,
        InfoRequest,
        SubmitRequest,
        CancelRequest,
        StatusRequest,
        HeartbeatRequest,
    )
}
REPLIES: dict[str, type[Message]] = {
    c.TYPE: c
    for c in (
        HelloReply,
        InfoReply,
        AcceptedReply,
        ProgressReply,
        PreviewReply,
        ResultReply,
        StatusReply,
        ErrorReply,
        HeartbeatReply,
    )
}

# Image-valued fields: field name -> (role in the header's `frames`, is it a list).
_IMAGE_FIELDS = {
    "content": ("content", False),
    "styles": ("style", True),
    "init": ("init", False),
    "image": ("image", False),
    "previous": ("previous", True),
    "previous_results": ("previous_result", True),
}


# --- Encoding -------------------------------------------------------------------------------


def encode(message: Message) -> list[bytes | bytearray | memoryview]:
    """The frames of one message: the JSON header, then the pixel frames (not copied)."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": message.TYPE}
    descriptions: list[dict[str, Any]] = []
    frames: list[bytes | bytearray | memoryview] = []
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if f.name in _IMAGE_FIELDS:
            role, _ = _IMAGE_FIELDS[f.name]
            for image in value if isinstance(value, list) else [value]:
                if image is not None:
                    descriptions.append({"role": role, **image.describe()})
                    frames.append(image.data)
        elif value is not None:
            header[f.name] = value.to_dict() if isinstance(value, Settings | Temporal) else value
    if descriptions:
        header["frames"] = descriptions
    return [_dump(header), *frames]


def _dump(header: dict[str, Any]) -> bytes:
    try:
        return json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as e:  # NaN or infinity in a float field: a caller's bug
        raise ValueError(f"cannot encode {header.get('type')!r} message: {e}") from None


# --- Decoding -------------------------------------------------------------------------------


def decode_request(frames: Sequence[bytes | bytearray | memoryview]) -> Message:
    """A request from its frames (routing identity already removed), or ProtocolError."""
    return _decode(frames, REQUESTS)


def decode_reply(frames: Sequence[bytes | bytearray | memoryview]) -> Message:
    """A reply from its frames, or ProtocolError."""
    return _decode(frames, REPLIES)


def peek_ref_and_job(frame: bytes | bytearray | memoryview) -> tuple[str | None, str | None]:
    """`ref` and `job` of a header that failed to decode, if they are readable: an error reply
    can then still be matched by the client that sent it."""
    try:
        header = _parse_header(frame)
    except ProtocolError:
        return None, None
    ref, job = header.get("ref"), header.get("job")
    return (
        ref if isinstance(ref, str) and _ID.fullmatch(ref) else None,
        job if isinstance(job, str) and _ID.fullmatch(job) else None,
    )


def _decode(frames: Sequence[bytes | bytearray | memoryview], types: dict[str, type[Message]]):
    if not frames:
        raise ProtocolError(BAD_REQUEST, "empty message")
    header = _parse_header(frames[0])
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            UNSUPPORTED_VERSION,
            f"protocol version {shown(version)} is not supported (this side speaks "
            f"{PROTOCOL_VERSION})",
        )
    name = header.get("type")
    cls = types.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ProtocolError(
            UNKNOWN_TYPE, f"unknown message type {shown(name)} (known: {', '.join(types)})"
        )
    images = _images(header.get("frames", []), frames[1:])
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name in _IMAGE_FIELDS:
            value = _take_images(f.name, images, required)
            if value is not None:
                kwargs[f.name] = value
        elif header.get(f.name) is not None:
            kwargs[f.name] = _check_field(f.name, header[f.name])
        elif required:
            raise ProtocolError(BAD_REQUEST, f"{name!r} message lacks the field {f.name!r}")
    if images:
        raise ProtocolError(
            BAD_REQUEST, f"{name!r} message takes no {shown(next(iter(images)))} image frames"
        )
    return cls(**kwargs)


def _parse_header(frame: bytes | bytearray | memoryview) -> dict[str, Any]:
    raw = bytes(frame)
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(BAD_REQUEST, f"header frame over {MAX_HEADER_BYTES} bytes")
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(BAD_REQUEST, f"header frame is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise ProtocolError(BAD_REQUEST, "header frame must be a JSON object")
    return header


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _images(
    descriptions: Any, frames: Sequence[bytes | bytearray | memoryview]
) -> dict[str, list[RawImage]]:
    """Pixel frames grouped by role, each checked against its description."""
    if not isinstance(descriptions, list):
        raise ProtocolError(BAD_REQUEST, "'frames' must be a list")
    if len(descriptions) != len(frames):
        raise ProtocolError(
            BAD_REQUEST,
            f"header describes {len(descriptions)} pixel frames, the message has {len(frames)}",
        )
    roles: dict[str, list[RawImage]] = {}
    for i, (d, data) in enumerate(zip(descriptions, frames, strict=True)):
        if not isinstance(d, dict) or not isinstance(d.get("role"), str):
            raise ProtocolError(BAD_REQUEST, f"frames[{i}] must be an object with a 'role'")
        try:
            image = RawImage(
                d.get("width"), d.get("height"), d.get("channels"), d.get("dtype"), data
            )
        except ProtocolError as e:
            raise ProtocolError(BAD_REQUEST, f"frames[{i}] ({shown(d['role'])}): {e}") from None
        roles.setdefault(d["role"], []).append(image)
    return roles


def _take_images(
    name: str, images: dict[str, list[RawImage]], required: bool
) -> RawImage | list[RawImage] | None:
    role, many = _IMAGE_FIELDS[name]
    found = images.pop(role, [])
    if required and not found:
        raise ProtocolError(BAD_REQUEST, f"no {role!r} image frame")
    if many:
        return found
    if len(found) > 1:
        raise ProtocolError(BAD_REQUEST, f"{len(found)} {role!r} image frames, expected one")
    return found[0] if found else None


# --- Field checks: one per field name, the same meaning in every message --------------------


def _check_previous(
    content: RawImage,
    previous: list[RawImage],
    results: list[RawImage],
    offsets: tuple[int, ...],
) -> None:
    """A clip's frame: a result for every previous frame, at most one per temporal offset;
    the previous frames at the content's size, their results of its shape (the output size
    of a job at any size: the daemon resizes them)."""
    if len(previous) != len(results):
        raise ProtocolError(
            BAD_REQUEST,
            f"{len(previous)} 'previous' and {len(results)} 'previous_result' frames: each"
            " earlier content frame goes with its stylised result",
        )
    if len(previous) > len(offsets):
        raise ProtocolError(
            BAD_REQUEST,
            f"{len(previous)} previous frames for {len(offsets)} temporal offsets"
            f" {list(offsets)}: send at most one a offset",
        )
    size = lambda i: f"{i.width}x{i.height}"  # noqa: E731
    for frame, result in zip(previous, results, strict=True):
        if (frame.width, frame.height) != (content.width, content.height):
            raise ProtocolError(
                BAD_REQUEST,
                f"a previous frame is {size(frame)} and the content {size(content)}: a clip's"
                " frames must all have one size",
            )
        # Within a pixel's rounding of the content's aspect, as any output size of it is.
        if abs(result.width * content.height - result.height * content.width) > max(
            content.width, content.height
        ):
            raise ProtocolError(
                BAD_REQUEST,
                f"a previous result is {size(result)}, not the shape of the {size(content)}"
                " content: send the result its frame's job returned",
            )


def _check_int(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ProtocolError(BAD_REQUEST, f"{name} must be an integer in {lo}..{hi}, got {shown(v)}")
    return v


def _check_float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < math.inf:
        raise ProtocolError(BAD_REQUEST, f"{name} must be a number >= 0, got {shown(v)}")
    return float(v)


def _check_fraction(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise ProtocolError(BAD_REQUEST, f"{name} must be a number in [0, 1], got {shown(v)}")
    return float(v)


def _check_str(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ProtocolError(BAD_REQUEST, f"{name} must be a string, got {shown(v)}")
    return v


def _check_id(name: str, v: Any) -> str:
    if not isinstance(v, str) or not _ID.fullmatch(v):
        raise ProtocolError(
            BAD_REQUEST, f"{name} must be 1-64 characters of A-Z a-z 0-9 _ . : -, got {shown(v)}"
        )
    return v


def _check_ids(name: str, v: Any) -> list[str]:
    if not isinstance(v, list) or len(v) > 1024:
        raise ProtocolError(BAD_REQUEST, f"{name} must be a list of job ids")
    return [_check_id(name, x) for x in v]


def _check_token(name: str, v: Any) -> str:
    if not isinstance(v, str) or not _TOKEN.fullmatch(v):  # a secret: never echoed back
        raise ProtocolError(BAD_REQUEST, f"{name} must be 22-128 characters of A-Z a-z 0-9 _ -")
    return v


def _check_tokens(name: str, v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or len(v) > 1024:
        raise ProtocolError(BAD_REQUEST, f"{name} must be an object of job id -> token")
    return {_check_id(name, k): _check_token(name, t) for k, t in v.items()}


def _check_choice(choices: Sequence[str]) -> Callable[[str, Any], str]:
    def check(name: str, v: Any) -> str:
        if v not in choices:
            raise ProtocolError(
                BAD_REQUEST, f"{name} must be one of {', '.join(choices)}, got {shown(v)}"
            )
        return v

    return check


def _check_losses(name: str, v: Any) -> dict[str, float | None]:
    if not isinstance(v, dict):
        raise ProtocolError(BAD_REQUEST, f"{name} must be an object of numbers")
    return {
        _check_str(name, k): None if x is None else _check_any_float(name, x) for k, x in v.items()
    }


def _check_any_float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ProtocolError(BAD_REQUEST, f"{name} must hold numbers, got {shown(v)}")
    return float(v)


def _check_object(name: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProtocolError(BAD_REQUEST, f"{name} must be an object")
    return v


def _check_objects(name: str, v: Any) -> list[dict[str, Any]]:
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise ProtocolError(BAD_REQUEST, f"{name} must be a list of objects")
    return v


def _check_settings(name: str, v: Any) -> Settings:
    try:
        return Settings.from_dict(v)
    except (ValueError, TypeError) as e:
        raise ProtocolError(BAD_SETTINGS, f"bad settings: {e}") from None


def _check_temporal(name: str, v: Any) -> Temporal:
    try:
        return Temporal.from_dict(v)
    except (ValueError, TypeError) as e:
        raise ProtocolError(BAD_SETTINGS, f"bad temporal settings: {e}") from None


def _count(name: str, v: Any) -> int:
    return _check_int(name, v, 0, 2**53)


_FIELD_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "ref": _check_id,
    "job": _check_id,
    "jobs": _check_ids,
    "unknown": _check_ids,
    "refused": _check_ids,
    "token": _check_token,
    "tokens": _check_tokens,
    "settings": _check_settings,
    "preview_every": lambda n, v: _check_int(n, v, 0, 100_000),
    "preview_size": lambda n, v: _check_int(n, v, 16, 4096),
    "output_dtype": _check_choice(tuple(DTYPES)),
    "lane": _check_choice(LANES),
    "temporal": _check_temporal,
    "server": _check_str,
    "protocol": _count,
    "device": _check_str,
    "device_name": _check_str,
    "weights": _check_str,
    "max_pixels": _count,
    "max_message_bytes": _count,
    "max_job_bytes": _count,
    "max_queue": _count,
    "max_queue_bytes": _count,
    "queue_bytes": _count,
    "heartbeat_timeout": _check_float,
    "memory": _check_object,
    "uptime": _check_float,
    "queue": _check_objects,
    "workers": _check_objects,
    "position": _count,
    "iteration": _count,
    "iterations": _count,
    "total": _count,
    "losses": _check_losses,
    "elapsed": _check_float,
    "eta": _check_float,
    "level": _count,
    "levels": _count,
    "step": _count,
    "steps": _count,
    "fraction": _check_fraction,
    "queued": _check_float,
    "state": _check_choice(JOB_STATES),
    "code": _check_str,  # not limited to ERROR_CODES: a newer daemon may add codes
    "message": _check_str,
}


def _check_field(name: str, value: Any) -> Any:
    return _FIELD_CHECKS[name](name, value)
