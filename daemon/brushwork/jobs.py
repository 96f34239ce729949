"""Jobs and the queue between the daemon's socket thread and its workers.

Only the socket thread creates jobs and moves them to a finished state; the workers take
queued jobs (queued -> running). The queue's lock makes "cancel a queued job" and
"start it" mutually exclusive, so a job is never both cancelled and run.

Two lanes (protocol.LANES): a queued preview starts before every queued full job, and on a
pool whose workers can pause a full job (Pool.preempts) a running one yields to it at its next
step (take_preview). A newer preview of one owner supersedes its older ones (superseded).

A job belongs to the client that submitted it (`Job.owned_by`): its own connection, or any
connection that shows the job's secret token, and with CURVE only from the submitter's key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from brushwork.protocol import FULL, PREVIEW, ErrorReply, ResultReply, SubmitRequest, new_token

Peer = tuple[int, bytes]  # (index of the ROUTER socket, routing id of the client)


class Cancel:
    """A job's cancel flag and why it was set; the engine checks is_set() every iteration."""

    def __init__(self) -> None:
        self.reason = ""
        self._event = threading.Event()

    def set(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class Caller:
    """Who sent a request: its connection, and its CURVE public key (Z85, from ZAP's User-Id;
    None on loopback and ipc sockets, which have no CURVE)."""

    peer: Peer
    key: str | None = None


@dataclass(eq=False)
class Job:
    id: str
    owner: Peer  # where events go; moves to a connection that proves ownership (a reconnect)
    request: SubmitRequest | None  # dropped when the job ends, to free its pixels
    fingerprint: str
    total: int
    token: str = field(default_factory=new_token, repr=False)  # the submitter's secret
    key: str | None = None  # the submitter's CURVE key: a job submitted with one stays with it
    lane: str = FULL  # protocol.LANES
    state: str = "queued"
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    iteration: int = 0
    losses: dict[str, float | None] = field(default_factory=dict)
    cancel: Cancel = field(default_factory=Cancel)
    worker: int | None = None  # the pool's worker that ran it
    outcome: ResultReply | ErrorReply | None = None  # results are dropped after a while

    def owned_by(self, caller: Caller, token: str | None) -> bool:
        """May `caller` act on this job (take its events, cancel it, see its id)? Its own
        connection may; another needs the token. Either way, a job submitted with a CURVE
        key only answers to that key."""
        if self.key is not None and caller.key != self.key:
            return False
        if caller.peer == self.owner:
            return True
        return token is not None and hmac.compare_digest(token.encode(), self.token.encode())

    def summary(self, position: int | None, mine: bool) -> dict:
        """The job as `info` lists it. Another client's job shows how busy the daemon is (its
        state and position) and nothing of what it does or when: no id, progress, times,
        worker or message (the operator token sees every job as its own)."""
        shown = {
            "id": self.id,
            "iteration": self.iteration,
            "total": self.total,
            "submitted": self.submitted,
            "started": self.started,
            "finished": self.finished,
            "worker": self.worker,
            "lane": self.lane,
            "error": self.outcome.message if isinstance(self.outcome, ErrorReply) else None,
        }
        if not mine:
            shown = dict.fromkeys(shown)
        return {**shown, "mine": mine, "state": self.state, "position": position}


def fingerprint(request: SubmitRequest) -> str:
    """What makes two submits the same request (pixels by shape only: hashing 64 MiB on the
    socket thread would stall every client; a reused id with other pixels of the same shape
    is a client bug this cannot catch)."""
    key = {
        "settings": request.settings.to_dict(),
        "preview": [request.preview_every, request.preview_size],
        "output_dtype": request.output_dtype,
        "lane": request.lane,
        "images": [[role, i.describe()] for role, i in request.images()],
        "temporal": request.temporal and request.temporal.to_dict(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def job_error(job: str, code: str, message: str) -> ErrorReply:
    """An error reply about one job."""
    return ErrorReply(code=code, message=message, job=job)


class QueueFull(Exception):
    pass


class JobQueue:
    """Queued jobs in two lanes, previews first, each first in first out, plus the running
    ones; blocking take() for the workers.

    `workers` is how many jobs run at once: a job's position counts the jobs that must end
    before it starts. `preempts`: the workers pause a running full job for a preview.
    """

    def __init__(self, limit: int, workers: int = 1, preempts: bool = False) -> None:
        self.limit = limit
        self.workers = workers
        self.preempts = preempts
        self._lanes: dict[str, deque[Job]] = {PREVIEW: deque(), FULL: deque()}
        self._running: list[Job] = []
        self._closed = False
        self._cond = threading.Condition()

    def put(self, job: Job) -> int:
        """Queue a job; returns its position."""
        with self._cond:
            if len(self) >= self.limit:
                raise QueueFull
            self._lanes[job.lane].append(job)
            self._cond.notify()
            return self._position(job)

    def take(self) -> Job | None:
        """The next job, now marked running; None once the queue is closed."""
        with self._cond:
            while not len(self) and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            return self._start(self._lanes[PREVIEW] or self._lanes[FULL])

    def take_preview(self, fits: Callable[[Job], bool]) -> Job | None:
        """The next queued preview, now marked running, or None at once (also when it does
        not `fit` beside the paused job: it waits for the worker then, still first in line).
        A worker running a full job asks between its steps."""
        with self._cond:
            lane = self._lanes[PREVIEW]
            ready = lane and not self._closed and fits(lane[0])
            return self._start(lane) if ready else None

    def _start(self, lane: deque[Job]) -> Job:
        job = lane.popleft()
        self._running.append(job)
        job.state, job.started = "running", time.time()
        return job

    def superseded(self, new: Job, caller: Caller, token: str | None) -> list[Job]:
        """The previews a new preview replaces: the queued and running previews `caller` owns
        (its connection, or the new submit's token, which a client may reuse for all its
        previews), so nobody's preview ever cancels another client's."""
        with self._cond:
            jobs = [*self._lanes[PREVIEW], *self._running]
        return [
            j
            for j in jobs
            if j is not new
            and j.lane == PREVIEW
            and j.state in ("queued", "running")
            and j.owned_by(caller, token)
        ]

    def done(self, job: Job) -> None:
        """A worker finished `job` (its outcome is on the way to the socket thread)."""
        with self._cond:
            if job in self._running:
                self._running.remove(job)

    def remove(self, job: Job) -> bool:
        """Take a queued job out; False if it is not queued (running or finished)."""
        with self._cond:
            lane = self._lanes[job.lane]
            if job in lane:
                lane.remove(job)
                return True
            return False

    def position(self, job: Job) -> int | None:
        """Jobs that must end before `job` starts (0: running, or next); None once finished."""
        with self._cond:
            if job in self._running:
                return 0
            if job in self._lanes[job.lane]:
                return self._position(job)
            return None

    def _position(self, job: Job) -> int:
        index = self._lanes[job.lane].index(job)
        if job.lane == PREVIEW:
            if self.preempts:  # the running full jobs pause for it, not the running previews
                return index + sum(j.lane == PREVIEW for j in self._running)
        else:
            index += len(self._lanes[PREVIEW])
        # The job at `index` starts when index + 1 jobs have left the workers' hands: the
        # ones queued before it, and one more once every worker is busy.
        return max(0, index + len(self._running) - self.workers + 1)

    def close(self) -> list[Job]:
        """Stop handing out jobs; returns the ones still queued (never to run)."""
        with self._cond:
            self._closed = True
            left = [*self._lanes[PREVIEW], *self._lanes[FULL]]
            for lane in self._lanes.values():
                lane.clear()
            self._cond.notify_all()
            return left

    @property
    def running(self) -> list[Job]:
        with self._cond:
            return list(self._running)

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())
