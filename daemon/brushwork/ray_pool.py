"""Ray actors as the daemon's workers: `brushwork serve --ray ADDRESS|auto [--workers N]`.

Imported only for --ray: a daemon without it never imports Ray.

Each worker is an actor holding a warm Engine, on one GPU (`num_gpus=1`) or, where the
cluster has none, on its share of the CPUs. A job is one call of the actor's `run`, a
streaming generator: progress, previews and the outcome come back while the job runs, as the
protocol's own messages, so whatever fields they carry reach the client unchanged. The daemon
cancels a running job through the actor's `cancel`, which runs beside `run` (a concurrency
group of its own) and sets the flag the engine checks before every iteration.

Style images go to the cluster once (`ray.put`, keyed by a hash of their pixels) and each
actor keeps the ones it has fetched, so a batch in one style moves only its contents; the
actor's Engine then reuses the style's statistics from job to job.

An actor that dies (its process or its node is gone) fails the job it was running with
`worker_lost`, and a new actor takes its place; a job whose actor died before it started
runs on the replacement instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import ray
import ray.exceptions
import ray.util
import torch

from brushwork import protocol
from brushwork.budget import device_memory
from brushwork.engine import Engine
from brushwork.errors import BrushworkError
from brushwork.jobs import Cancel, Job, job_error
from brushwork.pool import Outcome, Pool
from brushwork.protocol import ErrorReply, Message, RawImage, ResultReply, SubmitRequest
from brushwork.weights import resolve_path
from brushwork.worker import one_line, run_job

log = logging.getLogger("brushwork.server")

START_TIMEOUT = 300.0  # seconds for the workers to start and load the model
_POLL = 0.05  # seconds between looks at a running job's cancel flag
_STYLES_KEPT = 16  # style images the daemon keeps in the cluster's object store
_ACTOR_STYLES_KEPT = 8  # style images each actor keeps in its memory
_STARTED = "started"  # an actor's first item of a job: it has the job in hand


def _pack(image: RawImage) -> tuple[int, int, int, str, np.ndarray]:
    # As an array, Ray moves the pixels through its object store without pickling them.
    return image.width, image.height, image.channels, image.dtype, np.frombuffer(image.data, "u1")


def _unpack(fields: tuple[int, int, int, str, np.ndarray]) -> RawImage:
    width, height, channels, dtype, data = fields
    return RawImage(width, height, channels, dtype, data.data)


def _register_serializer() -> None:
    """RawImage holds a memoryview, which pickle refuses: every process that sends one (the
    daemon its contents and styles, the actors their previews and results) registers this."""
    ray.util.register_serializer(RawImage, serializer=_pack, deserializer=_unpack)


@ray.remote(concurrency_groups={"control": 1})
class EngineActor:
    """One warm Engine: `run` runs a job, `cancel` stops it."""

    def __init__(self, weights: str | None, device: str) -> None:
        _register_serializer()
        path = resolve_path(weights)
        self.engine = Engine(weights=path, device=device)
        self.weights = str(path)
        self._styles: OrderedDict[str, RawImage] = OrderedDict()
        self._cancels: dict[str, Cancel] = {}

    def describe(self) -> dict[str, Any]:
        device = self.engine.device
        return {
            "node": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "device": str(device),
            "device_name": (
                torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
            ),
            "memory": device_memory(device)[0],
            "threads": torch.get_num_threads(),
            "weights": self.weights,
        }

    def run(
        self, request: SubmitRequest, styles: list[tuple[str, Any]], queued: float
    ) -> Iterator[Message | str]:
        """Yield _STARTED, then the job's events as they happen, then its outcome."""
        cancel = self._cancels[request.job] = Cancel()
        try:
            yield _STARTED
            request = replace(request, styles=[self._style(key, ref) for key, ref in styles])
            # The engine reports through a callback; a thread turns that into this stream.
            events: queue.SimpleQueue[Message] = queue.SimpleQueue()
            threading.Thread(
                target=lambda: events.put(
                    run_job(self.engine, request, events.put, cancel, queued)
                ),
                daemon=True,
            ).start()
            while not isinstance(event := events.get(), ResultReply | ErrorReply):
                yield event
            yield event
        finally:
            del self._cancels[request.job]

    @ray.method(concurrency_group="control")
    def cancel(self, job: str, reason: str) -> None:
        if job in self._cancels:
            self._cancels[job].set(reason)

    def _style(self, key: str, ref: Any) -> RawImage:
        if key not in self._styles:
            self._styles[key] = ray.get(ref)
            if len(self._styles) > _ACTOR_STYLES_KEPT:
                self._styles.popitem(last=False)
        self._styles.move_to_end(key)
        return self._styles[key]


@dataclass
class _Slot:
    """A worker's actor, and what it said about itself once it had started."""

    actor: Any
    ready: Any  # the ObjectRef of its describe()
    info: dict[str, Any] | None = None


class _Lost(Exception):
    """The actor is gone; `started`: it had taken the job."""

    def __init__(self, started: bool, error: BaseException) -> None:
        super().__init__(_cause(error))
        self.started = started


class RayPool(Pool):
    """Workers as Ray actors, on the cluster at `address`, or on a private local one that
    listens on loopback only ("auto")."""

    def __init__(
        self,
        address: str,
        workers: int | None = None,
        device: str = "auto",
        weights: str | os.PathLike[str] | None = None,
    ) -> None:
        self._slots: list[_Slot] = []
        if address != "auto":
            _check_reachable(address)
        try:
            ray.init(
                address="local" if address == "auto" else address,
                include_dashboard=False,
                configure_logging=False,
                namespace="brushwork",
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BrushworkError(
                f"cannot reach a Ray cluster at {address}: {one_line(e)} (is `ray start` running"
                " there? A cluster with token authentication needs RAY_AUTH_MODE=token and its"
                " RAY_AUTH_TOKEN here too)"
            ) from None
        try:
            resources = ray.cluster_resources()
            gpu = _wants_gpu(device, resources.get("GPU", 0), address)
            size = workers or (int(resources.get("GPU", 0)) if gpu else len(ray.nodes()))
            super().__init__(size)
            cpus = 1 if gpu else max(1, int(resources.get("CPU", 1)) // size)
            self._options = {"num_gpus": int(gpu), "num_cpus": cpus}
            # Ray shows an actor only its own GPU, as cuda:0.
            self._device = "cuda" if gpu else ("cpu" if device == "auto" else device)
            self._weights = None if weights is None else str(weights)
            self._slots = [self._spawn() for _ in range(size)]
            self._wait_for_workers(address, resources)
        except BaseException:
            self.close()
            raise
        _register_serializer()
        self._style_refs: OrderedDict[str, Any] = OrderedDict()
        self._styles_lock = threading.Lock()
        infos = [s.info for s in self._slots]
        kinds = "/".join(sorted({i["device"].split(":")[0] for i in infos}))
        self.device = f"ray: {size} x {kinds}"
        self.device_name = ", ".join(sorted({i["device_name"] for i in infos}))
        self.weights = ", ".join(sorted({i["weights"] for i in infos}))

    def _spawn(self) -> _Slot:
        actor = EngineActor.options(**self._options).remote(self._weights, self._device)
        return _Slot(actor, actor.describe.remote())

    def _wait_for_workers(self, address: str, resources: dict[str, float]) -> None:
        refs = [s.ready for s in self._slots]
        needs = f"each needs {self._options['num_cpus']} CPU, {self._options['num_gpus']} GPU"
        have = ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))
        log.info("starting %d Ray workers (%s; the cluster has %s)", len(refs), needs, have)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=START_TIMEOUT)
        if len(ready) < len(refs):
            raise BrushworkError(
                f"only {len(ready)} of {len(refs)} Ray workers started within {START_TIMEOUT:g} s"
                f" ({needs}; the cluster at {address} has {have}); lower --workers"
            )
        for slot in self._slots:
            try:
                self._started(slot)
            except ray.exceptions.RayError as e:
                raise BrushworkError(f"a Ray worker could not start: {_cause(e)}") from None
        log.info("Ray workers ready: %s", "; ".join(_who(s) for s in self._slots))

    @staticmethod
    def _started(slot: _Slot) -> None:
        """Wait for the actor to start; note what it said about itself, and its node's
        address in the cluster."""
        info = ray.get(slot.ready)
        nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        slot.info = {**info, "address": nodes.get(info["node_id"])}

    def memory(self) -> tuple[int, int | None]:
        """The smallest worker's: its GPU's memory, or its node's RAM shared by the CPU
        workers there."""
        infos = [s.info for s in self._slots if s.info is not None]
        on_cpu = [i["node"] for i in infos if not i["device"].startswith("cuda")]
        return min(i["memory"] // max(1, on_cpu.count(i["node"])) for i in infos), None

    def _describe(self, worker: int) -> dict[str, Any]:
        slot = self._slots[worker]
        if slot.info is None:  # a replacement
            if not ray.wait([slot.ready], timeout=0)[0]:
                return {"state": "starting"}
            try:
                self._started(slot)
            except ray.exceptions.RayError:  # it died starting; the next job tries another
                return {"state": "lost"}
        return {k: slot.info.get(k) for k in ("node", "address", "pid", "device", "threads")}

    def close(self) -> None:
        """Kill the actors and leave the cluster; one started here stops, every process."""
        for slot in self._slots:
            _kill(slot.actor)
        ray.shutdown()

    # --- Running a job (on the worker's thread) ------------------------------------------

    def _run(
        self,
        worker: int,
        job: Job,
        emit: Callable[[Message], None],
        interlude: Callable[[], None] | None = None,
    ) -> Outcome:
        """Previews jump the queue here but do not pause a running job (preempts is False):
        the job runs in the actor, which would need the preview's frames first."""
        request = job.request
        assert request is not None
        styles = [self._style_ref(s) for s in request.styles]
        queued = (job.started or job.submitted) - job.submitted
        bare = replace(request, styles=[])  # the styles go by reference
        for attempt in (1, 2):
            slot = self._slots[worker]
            try:
                return self._stream(slot, job, bare, styles, queued, emit)
            except _Lost as e:
                log.warning(
                    "Ray worker %d (%s) is gone: %s; starting another", worker, _who(slot), e
                )
                _kill(slot.actor)
                self._slots[worker] = self._spawn()
                if e.started or attempt == 2:  # a job the actor never took runs on the next
                    return job_error(
                        job.id,
                        protocol.WORKER_LOST,
                        f"job {job.id} failed: its worker ({_who(slot)}) died; the daemon is "
                        "starting a new one: submit the job again",
                    )
        raise AssertionError("unreachable")

    def _stream(
        self,
        slot: _Slot,
        job: Job,
        request: SubmitRequest,
        styles: list[tuple[str, Any]],
        queued: float,
        emit: Callable[[Message], None],
    ) -> Outcome:
        """The job on `slot`'s actor: its events to `emit` as they come, its cancel to the
        actor within _POLL seconds; returns the outcome, or raises _Lost."""
        started = cancel_sent = False
        try:
            if slot.info is None:
                self._started(slot)
            stream = slot.actor.run.remote(request, styles, queued)
            while True:
                if started and not cancel_sent and job.cancel.is_set():
                    slot.actor.cancel.remote(job.id, job.cancel.reason)
                    cancel_sent = True
                if not ray.wait([stream], timeout=_POLL)[0]:
                    continue
                event = ray.get(next(stream))
                if event == _STARTED:
                    started = True
                elif isinstance(event, ResultReply | ErrorReply):
                    return event
                else:
                    emit(event)
        except ray.exceptions.RayTaskError as e:  # raised by our code on the actor: a bug
            log.error("job %s failed on Ray worker %s: %s", job.id, _who(slot), e)
            return job_error(job.id, protocol.INTERNAL, f"job {job.id} failed: {_cause(e)}")
        except ray.exceptions.RayError as e:  # the actor, its process or its node is gone
            raise _Lost(started, e) from None
        except StopIteration:
            log.error("job %s: Ray worker %s ended the job without an outcome", job.id, _who(slot))
            return job_error(job.id, protocol.INTERNAL, f"job {job.id} ended without an outcome")

    def _style_ref(self, image: RawImage) -> tuple[str, Any]:
        """A style image's key and object ref; it goes into the cluster the first time."""
        digest = hashlib.blake2b(image.data, digest_size=16)
        digest.update(repr(image.describe()).encode())
        key = digest.hexdigest()
        with self._styles_lock:
            if key not in self._style_refs:
                self._style_refs[key] = ray.put(image)
                log.info("style %s (%dx%d) sent to the Ray cluster", key, image.width, image.height)
                if len(self._style_refs) > _STYLES_KEPT:
                    self._style_refs.popitem(last=False)
            self._style_refs.move_to_end(key)
            return key, self._style_refs[key]


def _check_reachable(address: str) -> None:
    """Ray retries an address where nothing listens for minutes: one look first."""
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit():
        return  # not HOST:PORT: Ray says what it makes of it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise BrushworkError(
            f"--ray {address}: nothing answers there ({e.strerror or e}); start the cluster's "
            f"head with `ray start --head --port {port}`"
        ) from None


def _wants_gpu(device: str, gpus: float, address: str) -> bool:
    if device.startswith("cuda"):
        if gpus < 1:
            raise BrushworkError(f"--device {device}: the Ray cluster at {address} has no GPU")
        return True
    return device == "auto" and gpus >= 1


def _who(slot: _Slot) -> str:
    info = slot.info or {}
    return f"{info.get('node', '?')} pid {info.get('pid', '?')}, {info.get('device', '?')}"


def _cause(error: BaseException) -> str:
    """One line: the error inside a Ray error when it carries one."""
    cause = getattr(error, "cause", None)
    return one_line(cause if isinstance(cause, BaseException) else error)


def _kill(actor: Any) -> None:
    with contextlib.suppress(ray.exceptions.RayError, ValueError):  # dead already, Ray down
        ray.kill(actor, no_restart=True)
