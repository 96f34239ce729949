"""`brushwork serve`: ROUTER sockets, a job queue, and a pool of workers that run the jobs.

Threads: the socket thread (the caller of Server.serve) owns the ROUTER sockets and the job
table, and answers every request at once. The pool's worker threads take jobs from the queue
and run them (pool.py; the server does not know on what); their events (progress, previews,
outcomes) come back through a queue, with a byte on a socket pair to wake the socket thread's
poller (ZeroMQ sockets are not thread-safe, so only the socket thread touches the ROUTERs).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
import os
import queue
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import zmq

from brushwork import __version__, curve, endpoints, limits, protocol
from brushwork.errors import BrushworkError, shown
from brushwork.jobs import Caller, Job, JobQueue, Peer, QueueFull, fingerprint, job_error
from brushwork.limits import Limits
from brushwork.logs import Throttled
from brushwork.pool import LocalPool, Pool
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
    Message,
    ProgressReply,
    ResultReply,
    StatusReply,
    SubmitRequest,
    new_token,
)
from brushwork.worker import one_line

log = logging.getLogger("brushwork.server")

# Memory a job needs per output pixel beyond the engine's tile budget (sets the pixel limit).
# The engine tiles whatever does not fit, so only whole-image buffers grow with the image: a
# CPU job held to a 1 GB tile budget peaked at 1.62, 1.95 and 2.27 GB RSS at 0.79, 3.15 and
# 7.08 Mpx, about 100 B/px (bench/tiled_memory.py); 256 leaves room for the wire frames.
BYTES_PER_PIXEL = 256
MAX_PIXELS_CAP = 1 << 28
HISTORY = 100  # finished jobs listed by `info`
RESULTS_KEPT = 4  # finished results kept for resubmits after a lost connection
SOCKET_MODE = 0o600  # ipc:// sockets: only this user may connect (--socket-mode to share)
SHUTDOWN_GRACE = 15.0  # seconds to wait for the running jobs to notice their cancel
_POLL_MS = 100
_SWEEP_EVERY = 0.5


def default_max_pixels(memory: int) -> int:
    """The pixel limit for a job with `memory` bytes of device memory."""
    return min(memory // BYTES_PER_PIXEL, MAX_PIXELS_CAP)


def create_pool(
    device: str = "auto",
    weights: str | os.PathLike[str] | None = None,
    ray: str | None = None,
    workers: int | None = None,
) -> Pool:
    """The pool `brushwork serve` asked for: Ray actors on the cluster at `ray` ("auto": a
    local one), `workers` of them (default: one per GPU, else one per node), else one
    Engine in this process. Ray is imported only here, only when asked for."""
    if ray is None:
        return LocalPool(device, weights)
    if ray == "auto":
        # Ray's own switch for a one-machine cluster, read when Ray is imported (here, and in
        # every Ray process, which inherit it): every Ray process binds loopback only.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        from brushwork.ray_pool import RayPool
    except ModuleNotFoundError as e:
        if e.name != "ray":
            raise
        raise BrushworkError(
            '--ray needs Ray, an optional extra: pip install "brushwork[ray]"'
        ) from None

    return RayPool(ray, workers, device, weights)


def build(
    binds: list[str],
    device: str = "auto",
    weights: str | os.PathLike[str] | None = None,
    *,
    max_pixels: int | None = None,
    max_job_bytes: int | None = None,
    max_queue: int = 16,
    max_queue_bytes: int | None = None,
    heartbeat_timeout: float = 5.0,
    keys_dir: Path | None = None,
    curve_everywhere: bool = False,
    ray: str | None = None,
    workers: int | None = None,
    socket_mode: int = SOCKET_MODE,
) -> tuple[Server, Pool]:
    """Make the pool, bind (failing fast on a busy port or missing keys), then load the model.
    The endpoints are read first (endpoints.classify), before anything starts. A Ray pool
    starts its actors before the bind: the pixel limit comes from their memory, and a
    ZeroMQ listener takes its frame limit when it binds. `ray`, `workers`: see create_pool.
    max_job_bytes defaults to the device's memory: its tile budget then covers the rest;
    max_queue_bytes to limits.default_queue_bytes()."""
    for endpoint in binds:
        endpoints.classify(endpoint)
    pool = create_pool(device, weights, ray, workers)
    try:
        total = pool.memory()[0]
        limits = Limits(
            max_pixels=max_pixels or default_max_pixels(total),
            max_job_bytes=max_job_bytes or total,
            max_queue=max_queue,
            heartbeat_timeout=heartbeat_timeout,
            **({"max_queue_bytes": max_queue_bytes} if max_queue_bytes else {}),
        )
        pool.memory_limit = limits.max_job_bytes
        server = Server(
            binds,
            limits,
            keys_dir=keys_dir,
            socket_mode=socket_mode,
            curve_everywhere=curve_everywhere,
        )
    except BaseException:
        pool.close()
        raise
    try:
        pool.load()
    except BaseException:
        server.close()
        pool.close()
        raise
    return server, pool


class Server:
    """Binds at construction (so a busy port fails before the model loads); serve() runs.
    Endpoints beyond this machine (endpoints.classify) get CURVE; with `curve_everywhere`,
    every endpoint does (where local users are not trusted)."""

    def __init__(
        self,
        binds: list[str],
        limits: Limits,
        *,
        keys_dir: Path | None = None,
        socket_mode: int = SOCKET_MODE,
        curve_everywhere: bool = False,
    ) -> None:
        self.limits = limits
        self.socket_mode = socket_mode
        # Whoever shows it may list and cancel every job (`serve` leaves it in a 0600 file
        # for the user who runs the daemon); it takes no job's events.
        self.operator_token = new_token()
        self.context = zmq.Context()
        self.sockets: list[zmq.Socket] = []
        self.endpoints: list[str] = []
        self.jobs: dict[str, Job] = {}
        self.queue = JobQueue(limits.max_queue)
        self._events: queue.SimpleQueue[tuple[Job, Message]] = queue.SimpleQueue()
        # The workers write a byte here after queueing an event; it wakes the poller.
        self._wake, self._waker = socket.socketpair()
        self._waker.setblocking(False)
        self._last_seen: dict[Peer, float] = {}
        self._stopping = False
        self._started = time.time()
        self._pool: Pool | None = None
        self._auth = None
        self._curve_sockets: set[int] = set()  # indices in self.sockets of the CURVE ROUTERs
        self._handshakes: list[curve.HandshakeLog] = []  # refused handshakes, logged
        self._refusals = Throttled(log)  # what a client can make the daemon log
        classified = [endpoints.classify(e) for e in binds]
        local = [b.endpoint for b in classified if b.local and not curve_everywhere]
        remote = [b for b in classified if not b.local or curve_everywhere]
        try:
            if remote:
                folder = keys_dir or curve.default_dir()
                keys = curve.load_server_keys(folder, _why_curve(remote[0]))
                self._auth = curve.start_authenticator(self.context, folder)
                self._bind([b.endpoint for b in remote], keys)
            if local:
                self._bind(local, None)
        except BaseException:
            self.close()
            raise

    def _bind(self, binds: list[str], keys: tuple[bytes, bytes] | None) -> None:
        sock, bound = endpoints.listen(self.context, binds, self.limits, keys, self.socket_mode)
        if keys is not None:
            self._curve_sockets.add(len(self.sockets))
            self._handshakes.append(curve.HandshakeLog(self.context, sock, ", ".join(bound)))
        self.sockets.append(sock)
        self.endpoints += bound

    def close(self) -> None:
        for handshakes in self._handshakes:
            handshakes.close()
        for sock in self.sockets:
            sock.close()
        if self._auth is not None:
            self._auth.stop()
        self.context.term()
        self._wake.close()
        self._waker.close()  # a stuck worker's late event then finds it closed: no harm

    # --- The socket thread ------------------------------------------------------------------

    def serve(self, pool: Pool, stop: threading.Event) -> None:
        """Answer requests and run jobs on `pool` until `stop` is set, then shut down
        cleanly: queued jobs get an error, running ones are cancelled, the sockets close."""
        self._pool = pool
        self.queue.workers, self.queue.preempts = pool.size, pool.preempts
        pool.start(self.queue, self._emit)
        poller = zmq.Poller()
        for sock in self.sockets:
            poller.register(sock, zmq.POLLIN)
        poller.register(self._wake, zmq.POLLIN)
        for handshakes in self._handshakes:
            poller.register(handshakes.events, zmq.POLLIN)
        log.info(
            "serving on %s (device %s, max %d px, %.1f GB a job, queue %d jobs and %.1f GB,"
            " frames of %.1f MB, heartbeat timeout %g s)",
            ", ".join(self.endpoints),
            pool.device,
            self.limits.max_pixels,
            self.limits.max_job_bytes / 1e9,
            self.limits.max_queue,
            self.limits.max_queue_bytes / 1e9,
            self.limits.max_message_bytes / 1e6,
            self.limits.heartbeat_timeout,
            extra={"keep": True},  # written again at the top of every rotated log file
        )
        last_sweep = 0.0
        deadline = math.inf
        while pool.alive() and time.monotonic() < deadline:
            if stop.is_set() and not self._stopping:
                self._begin_shutdown()
                deadline = time.monotonic() + SHUTDOWN_GRACE
            ready = dict(poller.poll(_POLL_MS))
            for index, sock in enumerate(self.sockets):
                if sock in ready:
                    self._drain(index, sock)
            for handshakes in self._handshakes:
                if handshakes.events in ready:
                    handshakes.read()
            if self._wake.fileno() in ready:
                with contextlib.suppress(BlockingIOError):
                    while self._wake.recv(4096, socket.MSG_DONTWAIT):
                        pass
            self._forward_events()
            if time.monotonic() - last_sweep >= _SWEEP_EVERY:
                self._sweep()
                last_sweep = time.monotonic()
        self._forward_events()
        if pool.alive():
            log.warning("a running job did not stop within %g s; exiting anyway", SHUTDOWN_GRACE)
        log.info("stopped")

    def _emit(self, job: Job, event: Message) -> None:
        """Called by the pool's worker threads."""
        self._events.put((job, event))
        with contextlib.suppress(OSError):  # full: a wake-up is pending already; closed: exit
            self._waker.send(b"\0")

    def _drain(self, index: int, sock: zmq.Socket) -> None:
        for _ in range(100):  # then let the other sockets and the worker's events have a turn
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            peer = (index, frames[0].bytes)
            key = _user_id(frames[1]) if index in self._curve_sockets and len(frames) > 1 else None
            self._last_seen[peer] = time.monotonic()
            self._handle(Caller(peer, key), [f.buffer for f in frames[1:]])

    def _handle(self, caller: Caller, frames: list[memoryview]) -> None:
        """Answer one request. Nothing a client sends may raise out of here."""
        peer = caller.peer
        try:
            request = protocol.decode_request(frames)
        except protocol.ProtocolError as e:
            ref, job = protocol.peek_ref_and_job(frames[0]) if frames else (None, None)
            self._refusals.warning("bad request", "bad request from %s: %s", _who(peer), e)
            self._send(peer, ErrorReply(ref=ref, code=e.code, message=str(e), job=job))
            return
        try:
            reply = self._dispatch(caller, request)
        except Exception as e:
            log.exception("error handling %s", request.TYPE)
            reply = ErrorReply(code=protocol.INTERNAL, message=f"daemon error: {one_line(e)}")
        if reply is not None:
            self._send(peer, _with_ref(reply, request.ref))

    def _dispatch(self, caller: Caller, request: Message) -> Message | None:
        """Every request that names a job is checked here against the job's owner (jobs.py),
        before anything runs, so whatever runs the jobs inherits the rule."""
        if isinstance(request, HelloRequest):
            return self._hello(HelloReply)
        if isinstance(request, InfoRequest):
            return self._info(caller, self._operator(request.token))
        if isinstance(request, SubmitRequest):
            return self._submit(caller, request)
        if isinstance(request, HeartbeatRequest):
            return self._heartbeat(caller, request)
        job = self.jobs.get(request.job)
        if job is None:
            return ErrorReply(
                code=protocol.UNKNOWN_JOB, message=f"no job {request.job!r}", job=request.job
            )
        if not (job.owned_by(caller, request.token) or self._operator(request.token)):
            who = _who(caller)
            self._refusals.warning(
                "not owner", "%s refused: %s is not job %s's owner", request.TYPE, who, job.id
            )
            return job_error(
                job.id,
                protocol.NOT_OWNER,
                f"job {job.id!r} belongs to another client; acting on it needs the token its "
                "submitter received",
            )
        if isinstance(request, CancelRequest):
            self._cancel(job, "cancelled by request")
        return self._status(job)

    def _heartbeat(self, caller: Caller, request: HeartbeatRequest) -> HeartbeatReply:
        """A client naming a job waits for it. A job it owns but submitted on an earlier
        connection (it proves that with the token) comes back to it: the job's events go here
        from now on, and if the job ended meanwhile, the outcome is sent again."""
        unknown, refused = [], []
        for job_id in request.jobs:
            job = self.jobs.get(job_id)
            if job is None:
                unknown.append(job_id)
            elif not job.owned_by(caller, request.tokens.get(job_id)):
                refused.append(job_id)
            elif job.owner != caller.peer:
                log.info("job %s taken back by %s", job.id, _who(caller))
                job.owner = caller.peer
                if job.state in protocol.FINISHED_STATES:
                    self._send(caller.peer, job.outcome or _expired(job))
        if refused:
            self._refusals.warning(
                "heartbeat",
                "heartbeat from %s named %d other clients' jobs: %s",
                _who(caller),
                len(refused),
                shown(refused),
            )
        return HeartbeatReply(unknown=unknown, refused=refused)

    def _hello(self, cls: type[HelloReply], **extra) -> HelloReply:
        return cls(
            server=__version__,
            protocol=protocol.PROTOCOL_VERSION,
            device=self._pool.device,
            max_pixels=self.limits.max_pixels,
            max_message_bytes=self.limits.max_message_bytes,
            max_job_bytes=self.limits.max_job_bytes,
            max_queue=self.limits.max_queue,
            max_queue_bytes=self.limits.max_queue_bytes,
            heartbeat_timeout=self.limits.heartbeat_timeout,
            **extra,
        )

    def _operator(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(
            token.encode(), self.operator_token.encode()
        )

    def _info(self, caller: Caller, operator: bool) -> InfoReply:
        """Every job and worker, but only the asker's jobs by name (all for the operator)."""
        total, free = self._pool.memory()
        mine = {j.id for j in self.jobs.values() if operator or j.owned_by(caller, None)}
        return self._hello(
            InfoReply,
            device_name=self._pool.device_name,
            memory={"total": total, "free": free},
            weights=self._pool.weights,
            uptime=time.time() - self._started,
            queue=[
                j.summary(self.queue.position(j), mine=j.id in mine) for j in self.jobs.values()
            ],
            workers=[
                {**w, "job": w["job"] if w["job"] in mine else None} for w in self._pool.workers()
            ],
            queue_bytes=self._held_bytes(),
        )

    def _held_bytes(self) -> int:
        """The frames the queued and running jobs hold (the queue budget's use)."""
        return sum(limits.job_bytes(j.request) for j in self.jobs.values() if j.request)

    def _status(self, job: Job) -> StatusReply:
        return StatusReply(
            job=job.id,
            state=job.state,
            position=self.queue.position(job),
            iteration=job.iteration,
            total=job.total,
        )

    def _submit(self, caller: Caller, request: SubmitRequest) -> Message:
        known = self.jobs.get(request.job)
        if known is not None:
            return self._resubmit(caller, known, request)
        if self._stopping:
            return job_error(request.job, protocol.SHUTTING_DOWN, "the daemon is shutting down")
        refusal = limits.refusal(request, self.limits, self._pool.estimate, self._held_bytes())
        if refusal:
            return refusal
        job = Job(
            id=request.job,
            owner=caller.peer,
            request=request,
            fingerprint=fingerprint(request),
            total=request.settings.iterations,
            token=request.token or new_token(),
            key=caller.key,
            lane=request.lane,
        )
        try:
            position = self.queue.put(job)
        except QueueFull:
            return job_error(
                job.id,
                protocol.QUEUE_FULL,
                f"the queue is full ({self.limits.max_queue} jobs waiting); try again later",
            )
        for old in self.queue.superseded(job, caller, request.token):
            self._cancel(old, "superseded by a newer preview")
        self.jobs[job.id] = job
        log.info(
            "job %s queued at %d in the %s lane: %dx%d, %d styles, %d iterations",
            job.id,
            position,
            job.lane,
            request.content.width,
            request.content.height,
            len(request.styles),
            job.total,
        )
        return AcceptedReply(job=job.id, position=position, token=job.token)

    def _resubmit(self, caller: Caller, job: Job, request: SubmitRequest) -> Message | None:
        """The same job id again (a retry whose `accepted` was lost): never a second run. Only
        the owner may do it (its connection, or its token); the job's events go here then.
        Anyone else learns only that the id is taken, not whether the request matched."""
        owner = job.owned_by(caller, request.token)
        if not owner:
            self._refusals.warning(
                "not owner", "resubmit of job %s refused: %s is not its owner", job.id, _who(caller)
            )
        if not owner or fingerprint(request) != job.fingerprint:
            return job_error(
                job.id, protocol.JOB_CONFLICT, f"job id {job.id!r} is taken; use a new id"
            )
        job.owner = caller.peer
        if job.state in protocol.FINISHED_STATES and job.outcome is None:
            return _expired(job)
        position = self.queue.position(job) or 0
        self._send(
            caller.peer,
            AcceptedReply(ref=request.ref, job=job.id, position=position, token=job.token),
        )
        if job.outcome is not None:
            self._send(caller.peer, job.outcome)
        return None

    def _cancel(self, job: Job, reason: str) -> None:
        if job.state in protocol.FINISHED_STATES:
            return
        if self.queue.remove(job):
            log.info("job %s %s while queued", job.id, reason)
            self._finish(job, job_error(job.id, protocol.CANCELLED, f"job {job.id} {reason}"))
        elif not job.cancel.is_set():
            log.info("job %s %s while running: stopping it", job.id, reason)
            job.cancel.set(reason)  # the worker sees it before the next iteration

    def _finish(self, job: Job, outcome: ResultReply | ErrorReply) -> None:
        job.state = (
            "done"
            if isinstance(outcome, ResultReply)
            else ("cancelled" if outcome.code == protocol.CANCELLED else "failed")
        )
        job.finished = job.finished or time.time()
        job.outcome = outcome
        job.request = None
        self._send(job.owner, outcome)
        finished = [j for j in self.jobs.values() if j.state in protocol.FINISHED_STATES]
        for old in finished[:-HISTORY]:
            del self.jobs[old.id]
        results = [j for j in finished if isinstance(j.outcome, ResultReply)]
        for old in results[:-RESULTS_KEPT]:
            old.outcome = None

    def _forward_events(self) -> None:
        while True:
            try:
                job, event = self._events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, ResultReply | ErrorReply):
                log.info(
                    "job %s %s after %d iterations",
                    job.id,
                    "done" if isinstance(event, ResultReply) else f"ended: {event.message}",
                    job.iteration,
                )
                self._finish(job, event)
            elif not job.cancel.is_set():
                if isinstance(event, ProgressReply):
                    job.iteration, job.losses = event.iteration, event.losses
                self._send(job.owner, event)

    def _sweep(self) -> None:
        """Cancel the jobs of clients that stopped heartbeating; forget old peers."""
        now = time.monotonic()
        timeout = self.limits.heartbeat_timeout
        active = [j for j in self.jobs.values() if j.state in ("queued", "running")]
        for job in active:
            silent = now - self._last_seen.get(job.owner, now)
            if silent > timeout:
                self._cancel(job, f"cancelled: its client went away (silent for {silent:.1f} s)")
        owners = {j.owner for j in active}
        for peer, seen in list(self._last_seen.items()):
            if peer not in owners and now - seen > max(60.0, timeout):
                del self._last_seen[peer]

    def _begin_shutdown(self) -> None:
        log.info("stopping: no new jobs; cancelling the queue and the running jobs")
        self._stopping = True
        for job in self.queue.close():
            self._finish(
                job,
                job_error(
                    job.id,
                    protocol.SHUTTING_DOWN,
                    f"the daemon is shutting down; job {job.id} never ran",
                ),
            )
        for running in self.queue.running:
            self._cancel(running, "cancelled: the daemon is shutting down")

    def _send(self, peer: Peer, message: Message) -> None:
        try:
            frames = protocol.encode(message)
            self.sockets[peer[0]].send_multipart([peer[1], *frames], copy=False)
        except (zmq.ZMQError, ValueError) as e:  # never let one reply take the daemon down
            log.error("could not send %s to %s: %s", message.TYPE, _who(peer), e)


def _why_curve(bind: endpoints.Bind) -> str:
    if bind.local:
        return f"--curve (here on {bind.endpoint})"
    return (
        f"binding {bind.endpoint} would expose the daemon beyond this machine (libzmq would"
        f" listen on {bind.where}; bind {endpoints.LOOPBACK_EXAMPLE} for this machine only)"
    )


def _expired(job: Job) -> ErrorReply:
    return job_error(
        job.id, protocol.EXPIRED, f"job {job.id} ended ({job.state}); its result is no longer kept"
    )


def _with_ref(reply: Message, ref: str | None) -> Message:
    return replace(reply, ref=ref)


def _who(who: Peer | Caller) -> str:
    if isinstance(who, Caller):
        return _who(who.peer) + (f" (key {who.key})" if who.key else "")
    return f"client {who[1].hex()}"


def _user_id(frame: zmq.Frame) -> str | None:
    """The CURVE public key (Z85) that ZAP authenticated for this message's connection."""
    try:
        return frame.get("User-Id") or None
    except zmq.ZMQError:  # no ZAP handler answered for this connection
        return None
