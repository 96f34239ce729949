"""What a daemon takes: its limits, and the checks every submit passes before it is queued.

Everything a job holds counts: every image's pixels (`max_pixels`, the styles after resizing
too), the job's estimated peak memory (`max_job_bytes`), the number of style images, and the
bytes of every frame of every queued or running job against one queue budget
(`max_queue_bytes`, which `info` shows with what is held now). libzmq's per-frame limit
(ZMQ_MAXMSGSIZE) is the largest frame these limits let through, so a frame announced larger is
dropped as its size arrives; a frame that stalls half-sent holds at most that much, and only
until `stall_timeout` (ZMTP heartbeats: no whole frame from the peer that long after a ping,
and libzmq closes the connection).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from brushwork import protocol
from brushwork.jobs import job_error
from brushwork.protocol import ErrorReply, SubmitRequest, pixel_counts
from brushwork.settings import MAX_STYLES, Settings

FRAME_BYTES_PER_PIXEL = 16  # f32 RGBA: the widest pixel a frame carries
# The queue's share of this machine's memory by default: 1/32 (750 MB of 24 GB, 250 MB of 8):
# enough for a 32-bit float RGBA layer of 15 Mpx on 8 GB; what it holds waits while a job,
# which may take all of the memory, runs.
QUEUE_MEMORY_SHARE = 32
MIN_QUEUE_BYTES = 256 << 20
# The slowest upload a frame may take: the largest frame at this rate is how long a peer may
# go without completing one before libzmq drops it.
MIN_UPLOAD_RATE = 1e6  # bytes/s

Size = tuple[int, int]
Estimate = Callable[[Size, Sequence[Size], Settings, Size | None], object]


def default_queue_bytes() -> int:
    """The queue budget when none is given: a share of this machine's memory."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(total // QUEUE_MEMORY_SHARE, MIN_QUEUE_BYTES)


@dataclass(frozen=True)
class Limits:
    max_pixels: int  # every image a job holds: inputs, output, styles after resizing
    max_job_bytes: int  # a job's estimated peak memory (budget.estimate_memory)
    max_queue: int = 16
    heartbeat_timeout: float = 5.0
    # Bytes of frames that queued and running jobs may hold together.
    max_queue_bytes: int = field(default_factory=default_queue_bytes)

    @property
    def max_message_bytes(self) -> int:
        """The largest frame any accepted job can have: an f32 RGBA image at the pixel limit,
        within the queue budget (a header frame is at most MAX_HEADER_BYTES)."""
        largest = min(self.max_pixels * FRAME_BYTES_PER_PIXEL, self.max_queue_bytes)
        return max(largest, protocol.MAX_HEADER_BYTES)

    @property
    def stall_timeout(self) -> float:
        """Seconds a peer may go without completing a frame after a ping (ZMTP heartbeat)."""
        return max(self.heartbeat_timeout, self.max_message_bytes / MIN_UPLOAD_RATE)


def job_bytes(request: SubmitRequest) -> int:
    """What the daemon holds for a job until it ends: its frames."""
    return sum(image.nbytes for _, image in request.images())


def refusal(
    request: SubmitRequest, limits: Limits, estimate: Estimate, held: int
) -> ErrorReply | None:
    """Why the job cannot be queued now (`held`: the bytes queued and running jobs hold), or
    None: too_large if it never could, queue_full if it could once the queue has room."""
    problem = _too_large(request, limits, estimate)
    if problem:
        return job_error(request.job, protocol.TOO_LARGE, problem)
    size = job_bytes(request)
    if held + size > limits.max_queue_bytes:
        return job_error(
            request.job,
            protocol.QUEUE_FULL,
            f"the queue's memory is full ({_mb(held)} of {_mb(limits.max_queue_bytes)} held by"
            f" waiting and running jobs, this job needs {_mb(size)}); try again later",
        )
    return None


def _too_large(request: SubmitRequest, limits: Limits, estimate: Estimate) -> str | None:
    """Why the job is too large, or None: every image it will hold (the styles after
    resizing too) within the pixel limit, its frames within the queue budget, and its
    estimated peak within the job budget."""
    if len(request.styles) > MAX_STYLES:
        return f"a job blends at most {MAX_STYLES} style images; this one has {len(request.styles)}"
    limit = limits.max_pixels
    most = f"this daemon takes at most {limit / 1e6:.1f} Mpx"
    for role, image in request.images():
        if image.pixels > limit:
            return (
                f"the {role} image is {image.width}x{image.height} = {image.pixels / 1e6:.1f}"
                f" Mpx; {most} {pixel_counts(image.pixels, limit)}"
            )
    size = job_bytes(request)
    if size > limits.max_queue_bytes:
        return (
            f"this job's images take {_mb(size)}; this daemon holds at most "
            f"{_mb(limits.max_queue_bytes)} of images a job (send 8-bit or smaller images)"
        )
    peak = estimate(
        (request.content.height, request.content.width),
        [(s.height, s.width) for s in request.styles],
        request.settings,
        _start_size(request),
    )
    h, w = peak.output
    if h * w > limit:
        return (
            f"the output would be {w}x{h} = {h * w / 1e6:.1f} Mpx; {most} "
            f"{pixel_counts(h * w, limit)} (lower the size)"
        )
    for style, (sh, sw) in zip(request.styles, peak.styles, strict=True):
        if sh * sw > limit:
            return (
                f"the {style.width}x{style.height} style image would be resized to {sw}x{sh}"
                f" = {sh * sw / 1e6:.1f} Mpx for a {w}x{h} output; {most} "
                f"{pixel_counts(sh * sw, limit)} (lower the size or the style scale)"
            )
    if peak.total > limits.max_job_bytes:
        tiles = f"tiles of {peak.tile} px" if peak.tile < max(h, w) else "no tiles"
        styles = ", ".join(f"{sw}x{sh}" for sh, sw in peak.styles)
        return (
            f"this job would need about {peak.total / 1e9:.1f} GB at its peak (a {w}x{h}"
            f" output, style {styles}, {tiles}); this daemon allows"
            f" {limits.max_job_bytes / 1e9:.1f} GB a job (lower the size)"
        )
    return None


def _start_size(request: SubmitRequest) -> Size | None:
    """The image a job starts from, beside its content: the init, or a clip frame's previous
    result (warped to this frame), which the engine holds as it holds an init."""
    start = request.init or next(iter(request.previous_results), None)
    return (start.height, start.width) if start else None


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"
