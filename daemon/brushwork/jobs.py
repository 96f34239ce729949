"""Jobs and the queue between the daemon's socket thread and its worker thread.

Only the socket thread creates jobs and moves them to a finished state; the worker thread
takes queued jobs (queued -> running). The queue's lock makes "cancel a queued job" and
"start it" mutually exclusive, so a job is never both cancelled and run.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from brushwork.protocol import ErrorReply, ResultReply, SubmitRequest

Peer = tuple[int, bytes]  # (index of the ROUTER socket, routing id of the client)


@dataclass(eq=False)
class Job:
    id: str
    owner: Peer  # where events go; moves to whoever heartbeats or resubmits this id
    request: SubmitRequest | None  # dropped when the job ends, to free its pixels
    fingerprint: str
    total: int
    state: str = "queued"
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    iteration: int = 0
    losses: dict[str, float | None] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = ""
    outcome: ResultReply | ErrorReply | None = None  # results are dropped after a while

    def summary(self, position: int | None) -> dict:
        """The job as `info` lists it."""
        return {
            "id": self.id,
            "state": self.state,
            "position": position,
            "iteration": self.iteration,
            "total": self.total,
            "submitted": self.submitted,
            "started": self.started,
            "finished": self.finished,
            "error": self.outcome.message if isinstance(self.outcome, ErrorReply) else None,
        }


def fingerprint(request: SubmitRequest) -> str:
    """What makes two submits the same request (pixels by shape only: hashing 64 MiB on the
    socket thread would stall every client; a reused id with other pixels of the same shape
    is a client bug this cannot catch)."""
    images = [request.content, *request.styles, *([request.init] if request.init else [])]
    key = {
        "settings": request.settings.to_dict(),
        "preview": [request.preview_every, request.preview_size],
        "output_dtype": request.output_dtype,
        "images": [i.describe() for i in images],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def job_error(job: str, code: str, message: str) -> ErrorReply:
    """An error reply about one job."""
    return ErrorReply(code=code, message=message, job=job)


class QueueFull(Exception):
    pass


class JobQueue:
    """FIFO of queued jobs plus the one running; blocking take() for the worker."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._queued: deque[Job] = deque()
        self._running: Job | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, job: Job) -> int:
        """Queue a job; returns its position (jobs ahead of it, the running one included)."""
        with self._cond:
            if len(self._queued) >= self.limit:
                raise QueueFull
            self._queued.append(job)
            self._cond.notify()
            return len(self._queued) - 1 + (self._running is not None)

    def take(self) -> Job | None:
        """The next job, now marked running; None once the queue is closed."""
        with self._cond:
            while not self._queued and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            job = self._running = self._queued.popleft()
            job.state, job.started = "running", time.time()
            return job

    def done(self, job: Job) -> None:
        """The worker finished `job` (its outcome is on the way to the socket thread)."""
        with self._cond:
            if self._running is job:
                self._running = None

    def remove(self, job: Job) -> bool:
        """Take a queued job out; False if it is not queued (running or finished)."""
        with self._cond:
            if job in self._queued:
                self._queued.remove(job)
                return True
            return False

    def position(self, job: Job) -> int | None:
        with self._cond:
            ahead = int(self._running is not None)
            if job is self._running:
                return 0
            if job in self._queued:
                return self._queued.index(job) + ahead
            return None

    def close(self) -> list[Job]:
        """Stop handing out jobs; returns the ones still queued (never to run)."""
        with self._cond:
            self._closed = True
            left, self._queued = list(self._queued), deque()
            self._cond.notify_all()
            return left

    @property
    def running(self) -> Job | None:
        return self._running

    def __len__(self) -> int:
        return len(self._queued)
