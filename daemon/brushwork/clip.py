"""A clip on a daemon: every frame one job, chained, and cut into chunks that run at once.

A frame's job carries the content frame before it and that frame's stylised result
(PROTOCOL.md, "A clip's frames"); the daemon warps the result along the optical flow and holds
the new frame to it (temporal.stylize_frame), so each job is whole on its own and any worker
can run it. A chain is the frames of a chunk, one job after the other.

On a daemon with several workers (`serve --ray`) the clip is cut into as many chunks as
workers, so every worker runs a chain of its own for the whole clip. A chunk after the first
starts `overlap` frames before its join with no previous result (as a clip's first frame
does), and those frames, which the chunk before computes too, are cross-faded from the earlier
chunk's to the later one's. Why chunks rather than keyframes first, then propagation: chunks
keep every worker busy from the first frame to the last, need nothing of the daemon beyond a
frame's job, and cost `overlap` frames a join (about 5 % of a 2-worker, 150-frame clip), where
keyframes first leave all workers but one idle while the first keyframes run, and still meet
frames propagated from two keyframes at a join. The cross-fade trades a pop at the join for
a few frames of two stylisations blended (bench/video_ray.py measures the warping error there).

Resuming: the caller says which frames are left (segments) and gives the result before each
segment where it has one; a chain that starts after a finished frame continues from it, and
is not cross-faded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from threading import Event

import numpy as np

from brushwork import images, pixels
from brushwork.client import Client, DaemonError, work_done
from brushwork.errors import BrushworkError
from brushwork.protocol import QUEUE_FULL, ErrorReply, ProgressReply, ResultReply
from brushwork.settings import Settings, Temporal

OVERLAP = 4  # frames a chunk after the first starts before its join, cross-faded there
RETRY = 1.0  # seconds before a chain submits again to a daemon whose queue was full


@dataclass(frozen=True)
class Segment:
    """Frames [start, end) to stylise; `before`: the stylised frames before it that exist
    (a resumed clip; uint8, uint16 or float32 arrays), nearest first (start - 1, start - 2,
    ...), which it continues from."""

    start: int
    end: int
    before: Sequence[np.ndarray] = ()


@dataclass(frozen=True)
class Chunk:
    """One chain: frames [start, end); its first `fade` frames are cross-faded with the
    chunk before it, its last `tail` with the chunk after it; `before` as in Segment."""

    start: int
    end: int
    fade: int = 0
    tail: int = 0
    before: Sequence[np.ndarray] = field(default=(), repr=False)


def segments(
    todo: Sequence[int], finished: Callable[[int], np.ndarray | None], reach: int
) -> list[Segment]:
    """The runs of consecutive frames in `todo` (sorted indices), each with the finished
    frames right before it (`finished(i)`: frame i's result, or None), nearest first, at
    most `reach` of them."""
    runs: list[list[int]] = []
    for index in todo:
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    found = []
    for run in runs:
        before = []
        for index in range(run[0] - 1, max(-1, run[0] - 1 - reach), -1):
            result = finished(index)
            if result is None:
                break
            before.append(result)
        found.append(Segment(run[0], run[-1] + 1, before))
    return found


def plan(segments: Sequence[Segment], pieces: int, overlap: int = OVERLAP) -> list[Chunk]:
    """The chains to run: each segment one chunk, the longest cut in two (the later half
    starting `overlap` frames early) until there are `pieces` of them, or none long enough to
    cut (each half keeps at least 2 x overlap + 1 frames of its own, so two fades never meet)."""
    chunks = [Chunk(s.start, s.end, before=s.before) for s in segments if s.end > s.start]
    while len(chunks) < pieces:
        longest = max(chunks, key=lambda c: c.end - (c.start + c.fade), default=None)
        if longest is None:
            break
        own = longest.start + longest.fade  # its first frame not shared with the one before
        join = (own + longest.end + 1) // 2
        if min(join - own, longest.end - join) < 2 * overlap + 1:
            break
        chunks[chunks.index(longest)] = replace(longest, end=join, tail=overlap)
        chunks.append(Chunk(join - overlap, longest.end, overlap, longest.tail))
        chunks.sort(key=lambda c: c.start)
    return chunks


@dataclass
class ClipProgress:
    """Where the clip stands: `done` frames' worth of work (running frames by their share
    done) of `total` (the frames of every chain: the faded ones count twice)."""

    done: float
    total: int
    written: int  # frames written
    elapsed: float  # seconds


@dataclass
class _Chain:
    chunk: Chunk
    frames: Iterator[np.ndarray]
    next: int  # the frame its next job stylises
    # The frames before `next`, nearest first: (content as sent, stylised result).
    history: deque[tuple[np.ndarray, np.ndarray]] = field(default_factory=deque)
    content: np.ndarray | None = None  # of the running job
    job: str | None = None
    share: float = 0.0  # of the running job, done
    retry_at: float = 0.0


class Clip:
    """Runs the chunks of a clip on `client`'s daemon, a job per chain at a time, and writes
    every frame once it is final (a faded one once both of its chains have it): `write(index,
    float32 image)`, on this thread, between two waits on the daemon (keep it well under its
    heartbeat timeout, or hand it to a thread)."""

    def __init__(
        self,
        client: Client,
        frames: Callable[[int], Iterator[np.ndarray]],
        write: Callable[[int, np.ndarray], None],
        styles: Sequence[np.ndarray],
        settings: Settings,
        *,
        temporal: Temporal | None = None,
        progress: Callable[[ClipProgress], None] | None = None,
        cancel: Event | None = None,
    ) -> None:
        from brushwork.remote import fit_inputs

        self.client = client
        self.frames = frames  # the content frames from an index on, in order
        self.write = write
        self.settings = settings
        self.temporal = temporal or Temporal()
        self._kept = max(self.temporal.offsets)  # frames of history a chain keeps
        self.progress = progress
        self.cancel = cancel
        self._fit = lambda image: fit_inputs(image, [], settings)[0]
        _, fitted, _ = fit_inputs(np.zeros((8, 8, 3), np.uint8), styles, settings)
        self.styles = [pixels.from_array(s) for s in fitted]
        self._halves: dict[int, tuple[float, np.ndarray]] = {}  # faded frames, one side done
        self._done = 0
        self._written = 0
        self._running: dict[str, _Chain] = {}

    def run(self, chunks: Sequence[Chunk]) -> None:
        """Every chunk to its end; raises DaemonError on the first frame that fails (the
        frames written so far stay), and cancels what runs if interrupted."""
        self._total = sum(c.end - c.start for c in chunks)
        self._started = time.monotonic()
        chains = [self._chain(c) for c in chunks]
        running = self._running = {}
        try:
            while chains:
                for chain in chains:
                    if chain.job is None and time.monotonic() >= chain.retry_at:
                        self._submit(chain, running)
                if not running:
                    time.sleep(RETRY / 10)
                    continue
                event = self.client.next_event(running, self.cancel)
                chain = running[event.job]
                if isinstance(event, ProgressReply):
                    chain.share = work_done(event)
                    self._report()
                elif isinstance(event, ErrorReply):
                    del running[event.job]
                    raise DaemonError(event.code, f"frame {chain.next + 1}: {event.message}")
                elif isinstance(event, ResultReply):
                    del running[event.job]
                    self._finished(chain, np.array(pixels.to_array(event.image)))
                    if chain.next >= chain.chunk.end:
                        chains.remove(chain)
        except BaseException:
            for job in running:
                self.client.abandon(job)
            raise

    def _chain(self, chunk: Chunk) -> _Chain:
        before = list(chunk.before)[: self._kept]
        frames = self.frames(chunk.start - len(before))
        history = deque(
            (self._fit(next(frames)), images.to_float(result)) for result in reversed(before)
        )
        history.reverse()
        return _Chain(chunk, frames, chunk.start, history)

    def _submit(self, chain: _Chain, running: dict[str, _Chain]) -> None:
        frame = next(chain.frames, None)
        if frame is None:
            raise BrushworkError(f"the clip has no frame {chain.next + 1}: it ended before")
        content = self._fit(frame)
        # Weight 0: frames one by one (what the method is measured against), sent as stills.
        reach = len(chain.history) if self.temporal.weight > 0 else 0
        held = [chain.history[k - 1] for k in self.temporal.offsets if k <= reach]
        try:
            chain.job = self.client.submit(
                pixels.from_array(content),
                self.styles,
                self.settings,
                output_dtype="f32",
                previous=[pixels.from_array(c) for c, _ in held],
                # 8 bits are plenty for a target warped along the flow, at a quarter of f32.
                previous_results=[pixels.from_float(r, "u8") for _, r in held],
                temporal=self.temporal if held else None,
            )
        except DaemonError as e:
            if e.code != QUEUE_FULL:
                raise DaemonError(e.code, f"frame {chain.next + 1}: {e}") from None
            chain.retry_at = time.monotonic() + RETRY
            chain.frames = _pushed_back(content, chain.frames)
            return
        chain.content = content
        running[chain.job] = chain

    def _finished(self, chain: _Chain, image: np.ndarray) -> None:
        index, chunk = chain.next, chain.chunk
        chain.history.appendleft((chain.content, image))
        if len(chain.history) > self._kept:
            chain.history.pop()
        chain.job, chain.share = None, 0.0
        chain.next += 1
        self._done += 1
        faded = index - chunk.start
        if faded < chunk.fade:  # the later chunk's side of a join
            self._fade(index, (faded + 1) / (chunk.fade + 1), image)
        elif index >= chunk.end - chunk.tail:  # the earlier chunk's side
            self._fade(index, 0.0, image)
        else:
            self._emit(index, image)
        self._report()

    def _fade(self, index: int, weight: float, image: np.ndarray) -> None:
        """One side of a faded frame: `weight` is the later chunk's share (0 for the earlier
        chunk's side); written once both sides are in."""
        if index not in self._halves:
            self._halves[index] = (weight, image)
            return
        other_weight, other = self._halves.pop(index)
        later, earlier = (image, other) if weight > 0 else (other, image)
        share = max(weight, other_weight)
        self._emit(index, (1 - share) * earlier + share * later)

    def _emit(self, index: int, image: np.ndarray) -> None:
        self.write(index, image)
        self._written += 1

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(
                ClipProgress(
                    done=self._done + sum(c.share for c in self._running.values()),
                    total=self._total,
                    written=self._written,
                    elapsed=time.monotonic() - self._started,
                )
            )


def _pushed_back(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest
