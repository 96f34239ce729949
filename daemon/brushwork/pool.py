"""Where the daemon's jobs run: a pool of workers behind one small interface.

server.py gives the pool the job queue and an `emit` callback and never learns what runs the
jobs: one Engine in this process (`LocalPool`), or Ray actors on a cluster (`ray_pool.py`,
which server.create_pool imports only for `serve --ray`). Every worker has a thread that
takes jobs from the queue (previews first, then in arrival order), runs each to its outcome
and emits its events, so N workers run N jobs at once. `emit` is called on those threads; it
must be thread-safe.

A pool that `preempts` pauses a running full job for a preview: between two of the full
job's steps (its progress report) the worker runs every queued preview to its end on the
same engine, then the full job goes on. The paused run's tensors stay where they are and
nothing it reads changes, so its picture is the one it makes alone (tests/test_lanes.py);
only its elapsed time counts the interlude.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from brushwork import protocol
from brushwork.budget import MEMORY_FRACTION, MemoryEstimate, device_memory, estimate_memory
from brushwork.engine import Engine, pick_device
from brushwork.jobs import Job, JobQueue, job_error
from brushwork.protocol import ErrorReply, Message, ResultReply
from brushwork.scales import Size, output_size
from brushwork.settings import Settings
from brushwork.weights import resolve_path
from brushwork.worker import one_line, run_job

log = logging.getLogger("brushwork.server")
# The largest preview (output pixels) a running job pauses for; a larger one waits for the
# worker, first in line: the paused job's memory stays held while a preview runs.
PAUSE_FOR_PIXELS = 512 * 512

Emit = Callable[[Job, Message], None]
Outcome = ResultReply | ErrorReply


class Pool:
    """The workers: a thread each, taking jobs from the queue. Subclasses say how a worker
    runs a job (`_run`) and what `hello` and `info` report about them."""

    device: str  # what `hello` reports: "cpu", "cuda:0", ...
    device_name: str
    weights: str  # path of the weights, shown by `info`
    preempts = False  # a running full job pauses for a queued preview (the module's doc)

    def __init__(self, size: int) -> None:
        self.size = size
        self._threads: list[threading.Thread] = []
        self._running: list[Job | None] = [None] * size
        self._done = [0] * size
        self.memory_limit: float = math.inf  # bytes one job may use (the daemon's budget)

    def memory(self) -> tuple[int, int | None]:
        """(total, free) bytes of the memory one job can use; free None where unknown."""
        raise NotImplementedError

    def estimate(
        self, content: Size, styles: Sequence[Size], settings: Settings, init: Size | None = None
    ) -> MemoryEstimate:
        """Peak memory of one job on a worker (the engine's estimate), checked against the
        daemon's budget before a job is accepted."""
        dtype, budget = self._estimate_basis()
        return estimate_memory(content, styles, settings, dtype, budget, init)

    def _estimate_basis(self) -> tuple[torch.dtype, float]:
        """(compute dtype, tile budget in bytes) of a worker's engine now. Here fp32 passes
        (bf16 needs less) and the memory a worker has now; a pool that knows its engine says
        exactly."""
        total, free = self.memory()
        return torch.float32, MEMORY_FRACTION * min(
            total if free is None else free, self.memory_limit
        )

    def load(self) -> None:
        """Get the workers ready (load the model); called once the daemon has bound."""

    def close(self) -> None:
        """Release the workers (after the queue closed and the threads ended, or gave up)."""

    def _run(
        self,
        worker: int,
        job: Job,
        emit: Callable[[Message], None],
        interlude: Callable[[], None] | None = None,
    ) -> Outcome:
        """Run `job` to its outcome; a pool that preempts calls `interlude` between steps."""
        raise NotImplementedError

    def _describe(self, worker: int) -> dict[str, Any]:
        """Where `worker` runs: node, pid, device, threads; only a state of its own
        ("starting", "lost") while it is not ready."""
        raise NotImplementedError

    def workers(self) -> list[dict[str, Any]]:
        """What `info` lists about each worker."""
        listed = []
        for worker, (job, done) in enumerate(zip(self._running, self._done, strict=True)):
            listed.append(
                {
                    "id": worker,
                    "state": "idle" if job is None else "busy",
                    "job": None if job is None else job.id,
                    "jobs_done": done,
                    **self._describe(worker),
                }
            )
        return listed

    def start(self, jobs: JobQueue, emit: Emit) -> None:
        """Start taking jobs; the threads end once `jobs` is closed and their job is done."""
        for worker in range(self.size):
            thread = threading.Thread(
                target=self._work,
                args=(worker, jobs, emit),
                name=f"brushwork-worker-{worker}",
                daemon=True,  # a job stuck past the shutdown grace must not hold the exit
            )
            self._threads.append(thread)
            thread.start()

    def alive(self) -> bool:
        """True while any worker thread runs."""
        return any(t.is_alive() for t in self._threads)

    def _work(self, worker: int, jobs: JobQueue, emit: Emit) -> None:
        while (job := jobs.take()) is not None:
            self._serve(worker, job, jobs, emit)

    def _serve(self, worker: int, job: Job, jobs: JobQueue, emit: Emit) -> None:
        paused = self._running[worker]  # the full job a preview interrupts, if any
        self._running[worker], job.worker = job, worker
        log.info("job %s running on worker %d", job.id, worker)
        interlude = None
        if self.preempts and job.lane == protocol.FULL:
            interlude = lambda: self._interlude(worker, job, jobs, emit)  # noqa: E731
        try:
            outcome = self._run(worker, job, lambda e: emit(job, e), interlude)
        except Exception as e:  # a bug here must not end the worker (nor, the last, serve)
            log.exception("job %s failed on worker %d", job.id, worker)
            message = f"job {job.id} failed: {one_line(e)}"
            outcome = job_error(job.id, protocol.INTERNAL, message)
        job.finished = time.time()  # here, not on the socket thread: before the next starts
        self._running[worker] = paused
        self._done[worker] += 1
        emit(job, outcome)
        jobs.done(job)

    def _interlude(self, worker: int, paused: Job, jobs: JobQueue, emit: Emit) -> None:
        """Between two steps of the full job `paused`: run the queued previews."""
        while (preview := jobs.take_preview(_fits_beside)) is not None:
            log.info("job %s pauses for preview %s", paused.id, preview.id)
            self._serve(worker, preview, jobs, emit)


def _fits_beside(job: Job) -> bool:
    """A preview small enough to run while a paused job holds its memory: its output at most
    PAUSE_FOR_PIXELS."""
    request = job.request
    if request is None:
        return False
    h, w = output_size(request.content.height, request.content.width, request.settings.size)
    return h * w <= PAUSE_FOR_PIXELS


class LocalPool(Pool):
    """One worker: an Engine on this machine's device, run on one thread; a preview pauses
    the running full job (the module's doc)."""

    preempts = True

    def __init__(self, device: str = "auto", weights: str | os.PathLike[str] | None = None):
        super().__init__(1)
        self._device = pick_device(device)
        self._weights = weights
        self._engine: Engine | None = None
        self.device = str(self._device)
        self.device_name = (
            torch.cuda.get_device_name(self._device)
            if self._device.type == "cuda"
            else self._device.type
        )
        self.weights = ""

    def memory(self) -> tuple[int, int | None]:
        return device_memory(self._device)

    def load(self) -> None:
        path = resolve_path(self._weights)
        log.info("loading VGG16 from %s on %s", path, self._device)
        self._engine = Engine(
            weights=path, device=str(self._device), memory_limit=self.memory_limit
        )
        self.weights = str(path)

    def _estimate_basis(self) -> tuple[torch.dtype, float]:
        if self._engine is None:
            return super()._estimate_basis()
        return self._engine.compute_dtype, self._engine.tile_budget()

    def _describe(self, worker: int) -> dict[str, Any]:
        return {
            "node": socket.gethostname(),
            "pid": os.getpid(),
            "device": self.device,
            "threads": torch.get_num_threads(),
        }

    def _run(
        self,
        worker: int,
        job: Job,
        emit: Callable[[Message], None],
        interlude: Callable[[], None] | None = None,
    ) -> Outcome:
        assert self._engine is not None and job.request is not None, "load() first"
        queued = (job.started or job.submitted) - job.submitted
        return run_job(self._engine, job.request, emit, job.cancel, queued, interlude)
