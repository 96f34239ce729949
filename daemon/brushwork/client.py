"""The one Brushwork client: talks to `brushwork serve` over ZeroMQ (pyzmq + standard library).

The CLI and the GIMP plug-in both use this module; it imports only the standard library, zmq
and its siblings ``errors``, ``settings`` and ``protocol`` (the plug-in ships copies of them).
One ``Client`` per thread: ZeroMQ sockets are not thread-safe. Past 600 lines on purpose: the
plug-in ships this file as a copy, so the connection, CURVE, autostart and every request stay
in the one module it carries.

Example::

    from brushwork.client import Client, NoDaemon
    from brushwork.protocol import PreviewReply, ProgressReply, RawImage
    from brushwork.settings import Settings

    content = RawImage(width=640, height=480, channels=4, dtype="u8", data=rgba_bytes)
    style = RawImage(width=512, height=512, channels=3, dtype="u8", data=rgb_bytes)
    try:
        with Client("tcp://127.0.0.1:5580", timeout=5.0) as client:
            print("daemon on", client.hello().device)
            job = client.submit(content, [style], Settings(size=0, iterations=200),
                                preview_every=50)
            for event in client.events(job):  # heartbeats go out while you iterate
                if isinstance(event, ProgressReply):
                    print(f"{event.iteration}/{event.total}, ~{event.eta or 0:.0f} s left")
                elif isinstance(event, PreviewReply):
                    show(event.image)  # u8 RGB, long side <= preview_size
            result = event  # the last event is the ResultReply
            pixels = bytes(result.image.data)  # 640x480x4 u8, like the content
    except NoDaemon as e:     # nobody answered within the timeout: start `brushwork serve`
        ...
    except DaemonError as e:  # the daemon refused or the job failed: e.code, str(e) (one line)
        ...

``client.stylize(content, styles, settings, on_event=callback)`` does submit + wait in one call
and cancels the job if the caller is interrupted. Stopping to iterate ``events`` (or killing
the process) stops the heartbeats, and the daemon cancels the job within a few seconds.

One module, past 600 lines on purpose: the plug-in ships it as a copy, so all of the client
(requests, waiting, heartbeats, what a silent or refusing daemon means) is in it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from threading import Event
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from brushwork import protocol
from brushwork.errors import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_NO_DAEMON,
    EXIT_OUT_OF_MEMORY,
    EXIT_REFUSED,
    BadInput,
    BrushworkError,
)
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
    PreviewReply,
    ProgressReply,
    RawImage,
    ResultReply,
    StatusReply,
    StatusRequest,
    SubmitRequest,
)
from brushwork.settings import Settings

ENV_SERVER = "BRUSHWORK_SERVER"
ENV_SERVER_KEY = "BRUSHWORK_SERVER_KEY"
ENV_CLIENT_KEY = "BRUSHWORK_CLIENT_KEY"
HEARTBEAT_INTERVAL = 1.0  # seconds between heartbeats while waiting on jobs
DEFAULT_TIMEOUT = 10.0
_UPLOAD_RATE = 10e6  # bytes/s assumed for a submit's frames when waiting for `accepted`

JobEvent = ProgressReply | PreviewReply | ResultReply | ErrorReply


class NoDaemon(BrushworkError):
    """Nothing answered at the endpoint within the timeout (or it stopped answering)."""

    exit_code = EXIT_NO_DAEMON


class HandshakeFailed(BrushworkError):
    """A daemon answered but the connection's security handshake failed (CURVE keys)."""

    exit_code = EXIT_REFUSED


class DaemonError(BrushworkError):
    """The daemon refused a request or a job failed: ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str, job: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.job = job

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return _EXIT_CODES.get(self.code, EXIT_REFUSED)


# The CLI's exit status per error code; every other code is a refusal.
_EXIT_CODES = {
    protocol.BAD_SETTINGS: EXIT_BAD_INPUT,
    protocol.BAD_INPUT: EXIT_BAD_INPUT,
    protocol.CANCELLED: EXIT_CANCELLED,
    protocol.OUT_OF_MEMORY: EXIT_OUT_OF_MEMORY,
    protocol.JOB_FAILED: EXIT_FAILED,
    protocol.WORKER_LOST: EXIT_FAILED,
    protocol.INTERNAL: EXIT_FAILED,
}


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The endpoint given, else $BRUSHWORK_SERVER, else the default tcp://127.0.0.1:5580.

    HOST:PORT without a scheme means tcp://HOST:PORT; anything else without one is an error.
    """
    endpoint = (endpoint or os.environ.get(ENV_SERVER) or protocol.DEFAULT_ENDPOINT).strip()
    scheme, _, _ = endpoint.partition("://")
    if scheme in ("tcp", "ipc") and "://" in endpoint:
        return endpoint
    host, _, port = endpoint.rpartition(":")
    if "://" not in endpoint and host and port.isdigit() and 0 < int(port) < 65536:
        return f"tcp://{host}:{port}"
    said = f"the daemon speaks no {scheme}://; " if "://" in endpoint else ""
    raise BadInput(
        f"{endpoint!r} is not a daemon address: {said}use HOST:PORT, tcp://HOST:PORT or ipc://PATH"
    )


def progress_text(event: ProgressReply) -> str:
    """What a run is doing, for people: "Scale 2 of 3, step 40 of 67"."""
    if event.level is None or event.steps is None:  # a daemon older than these fields
        return f"Step {event.iteration} of {event.total}"
    where = f"Scale {event.level} of {event.levels}, " if event.levels and event.levels > 1 else ""
    return f"{where}step {event.step} of {event.steps}".capitalize()


def eta_text(event: ProgressReply) -> str:
    """The estimate as ", about 30 s left", or nothing before there is one."""
    return f", about {duration_text(event.eta)} left" if event.eta is not None else ""


def work_done(event: ProgressReply) -> float:
    """Share of the job done (0..1), by its estimated time; a daemon older than `fraction`
    gives only the step count."""
    return event.fraction if event.fraction is not None else event.iteration / max(1, event.total)


def duration_text(seconds: float) -> str:
    """12 s, 3 min 20 s, 1 h 5 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def new_job_id() -> str:
    return uuid.uuid4().hex


class Client:
    """A DEALER connection to one daemon. Blocking calls; every wait is bounded by `timeout`."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        server_key: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        """Connect (lazily: nothing is checked until the first request).

        endpoint: e.g. "tcp://127.0.0.1:5580" or "ipc:///run/user/1000/brushwork.sock";
            None -> resolve_endpoint().
        timeout: seconds to wait for any answer before raising NoDaemon.
        server_key: the daemon's CURVE public key (40-char Z85 text, or its .key file from
            `brushwork keys generate`); None -> $BRUSHWORK_SERVER_KEY, else plain TCP.
        client_key: this client's CURVE secret key file (`brushwork keys generate --client`),
            needed when the daemon authorizes clients; None -> $BRUSHWORK_CLIENT_KEY, else a
            fresh key pair.
        """
        self.endpoint = resolve_endpoint(endpoint)
        self.timeout = timeout
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 500)  # let a last cancel leave on close
        server_key = server_key or os.environ.get(ENV_SERVER_KEY) or None
        self._curve = server_key is not None
        if self._curve:
            client_key = client_key or os.environ.get(ENV_CLIENT_KEY) or None
            _set_curve_client(self._socket, server_key, client_key)
        # A refused handshake looks like silence, and so does a daemon that died: the
        # monitor says what happened (_read_monitor).
        self._handshakes = monitor_handshakes(self._context, self._socket, _CLIENT_EVENTS)
        self._failures: list[tuple[int, int]] = []  # failed handshakes: (event, value)
        self._dropped = self._gone = False
        try:
            self._socket.connect(self.endpoint)
        except zmq.ZMQError as e:
            self.close()
            raise BrushworkError(f"cannot connect to {self.endpoint}: {e.strerror}") from None
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        # Events of this client's unfinished jobs, read while waiting for something else;
        # events of other jobs (e.g. a duplicate result) are dropped.
        self._events: dict[str, deque[JobEvent]] = {}
        self._tokens: dict[str, str] = {}  # job id -> its secret: proof that the job is ours
        self._limits: HelloReply | None = None
        self._heard_once = False
        self._last_heard = time.monotonic()
        self._last_sent = 0.0

    # --- Requests ---------------------------------------------------------------------------

    def hello(self, timeout: float | None = None) -> HelloReply:
        """Ping: the daemon's version, device and limits. Raises NoDaemon."""
        reply = self._request(HelloRequest(ref=_ref()), timeout)
        assert isinstance(reply, HelloReply)
        self._limits = reply
        return reply

    def info(self, token: str | None = None) -> InfoReply:
        """Version, device, memory, weights and the job queue (other clients' jobs unnamed,
        unless `token` is the daemon's operator token)."""
        reply = self._request(InfoRequest(ref=_ref(), token=token))
        assert isinstance(reply, InfoReply)
        return reply

    def token(self, job: str) -> str | None:
        """The secret of a job this client submitted: whoever has it may cancel the job or
        take its events (e.g. `brushwork cancel JOB --token TOKEN` from another shell)."""
        return self._tokens.get(job)

    def status(self, job: str, token: str | None = None) -> StatusReply:
        """A job's state. Only for its owner: this client if it submitted the job, else
        whoever gives its token (or the daemon's operator token)."""
        reply = self._request(StatusRequest(ref=_ref(), job=job, token=token or self.token(job)))
        assert isinstance(reply, StatusReply)
        return reply

    def cancel(self, job: str, token: str | None = None) -> StatusReply:
        """Cancel a job of ours (or one whose token we were given). The reply is its state
        right after: queued jobs are cancelled at once, a running one within one iteration."""
        reply = self._request(CancelRequest(ref=_ref(), job=job, token=token or self.token(job)))
        assert isinstance(reply, StatusReply)
        return reply

    def abandon(self, job: str) -> None:
        """Cancel a job of ours without waiting for the reply: for a caller that is leaving
        (the daemon may be gone)."""
        self._send(CancelRequest(job=job, token=self.token(job)))

    def submit(
        self,
        content: RawImage,
        styles: Sequence[RawImage],
        settings: Settings,
        *,
        init: RawImage | None = None,
        job: str | None = None,
        preview_every: int = 0,
        preview_size: int = 256,
        output_dtype: str | None = None,
        token: str | None = None,
        lane: str = protocol.FULL,
        **frame: Any,
    ) -> str:
        """Queue a stylization; returns its job id once the daemon accepted it.

        `frame`: a clip's frame: previous, previous_results, temporal (PROTOCOL.md).
        Resubmitting with the same `job` id (e.g. after a timeout) never starts a second run;
        from another client it needs the job's `token` (see token()). Images over the
        daemon's limits are refused here, before sending them. `lane` PREVIEW: the job starts
        before every full one and cancels this client's older previews (PROTOCOL.md).
        """
        job = job or new_job_id()
        # Chosen here, not by the daemon, so that a retry whose `accepted` was lost still
        # proves the job is ours.
        token = token or self._tokens.get(job) or protocol.new_token()
        request = SubmitRequest(
            ref=_ref(),
            job=job,
            token=token,
            settings=settings,
            content=content,
            styles=list(styles),
            init=init,
            preview_every=preview_every,
            preview_size=preview_size,
            output_dtype=output_dtype,
            lane=lane,
            **frame,
        )
        images = [image for _, image in request.images()]
        self._check_limits(images)
        size = sum(image.nbytes for image in images)
        self._events.setdefault(job, deque())  # from now on this job's events are kept
        try:
            reply = self._request(request, self.timeout + size / _UPLOAD_RATE)
        except BaseException:
            self._events.pop(job, None)
            raise
        assert isinstance(reply, AcceptedReply)
        self._tokens[job] = reply.token or token
        return job

    def attach(self, job: str, token: str) -> None:
        """Wait here for a job submitted by another connection (an earlier process, a lost
        connection): with its token, the daemon sends the job's events to this client from
        the next heartbeat on (events() sends them), its outcome too if it has ended."""
        self._tokens[job] = token
        self._last_sent = 0.0  # heartbeat at once

    # --- Waiting on jobs --------------------------------------------------------------------

    def next_event(self, jobs: Collection[str], cancel: Event | None = None) -> JobEvent:
        """The next event of any of `jobs` (errors returned, not raised). Sends heartbeats.

        A set `cancel` (anything with is_set(), checked at least every HEARTBEAT_INTERVAL s
        even while the daemon sends nothing) raises DaemonError "cancelled" without a job:
        the caller has given up and cancels (stylize() does). For clients that run several
        jobs at once (batch); most callers want events().
        """
        for job in jobs:
            if self._events.get(job):
                return self._ended(self._events[job].popleft())
        since = time.monotonic()
        while True:
            if cancel is not None and cancel.is_set():
                raise DaemonError(protocol.CANCELLED, "cancelled")
            self._heartbeat(jobs, since)
            message = self._receive(min(HEARTBEAT_INTERVAL, self.timeout))
            if message is None or message.ref is not None:  # a late reply to a timed-out call
                continue
            if isinstance(message, HeartbeatReply):
                lost = (  # jobs the daemon does not know, or will not give this client
                    (
                        protocol.UNKNOWN_JOB,
                        message.unknown,
                        "no longer knows job {} (was it restarted?)",
                    ),
                    (
                        protocol.NOT_OWNER,
                        message.refused,
                        "says job {} belongs to another client (this one lacks its token)",
                    ),
                )
                for code, named, says in lost:
                    for job in set(named) & set(jobs):
                        text = f"the daemon at {self.endpoint} {says.format(job)}"
                        return self._ended(ErrorReply(code=code, message=text, job=job))
                continue
            job = getattr(message, "job", None)
            if job in jobs:
                return self._ended(message)
            if job in self._events:  # another job of ours: keep it for later
                self._events[job].append(message)

    def events(
        self, job: str, cancel: Event | None = None
    ) -> Iterator[ProgressReply | PreviewReply | ResultReply]:
        """Progress and previews of `job`, ending with its ResultReply.

        Raises DaemonError when the job fails or is cancelled (code "cancelled"), and when
        `cancel` is set (see next_event).
        """
        while True:
            event = self.next_event((job,), cancel)
            if isinstance(event, ErrorReply):
                raise DaemonError(event.code, event.message, job)
            yield event
            if isinstance(event, ResultReply):
                return

    def wait(
        self,
        job: str,
        on_event: Callable[[ProgressReply | PreviewReply], None] | None = None,
        cancel: Event | None = None,
    ) -> ResultReply:
        """Block until `job` ends; its progress and previews go to `on_event`."""
        for event in self.events(job, cancel):
            if isinstance(event, ResultReply):
                return event
            if on_event is not None:
                on_event(event)
        raise AssertionError("events() ends with a result or raises")

    def stylize(
        self,
        content: RawImage,
        styles: Sequence[RawImage],
        settings: Settings,
        *,
        on_event: Callable[[ProgressReply | PreviewReply], None] | None = None,
        cancel: Event | None = None,
        **submit_options,
    ) -> ResultReply:
        """submit() + wait(). An exception while waiting (Ctrl-C, one raised by `on_event`, a
        lost daemon, a set `cancel`) cancels the job; a DaemonError about the job itself means
        it has ended. A `cancel` set before the submit submits nothing."""
        if cancel is not None and cancel.is_set():
            raise DaemonError(protocol.CANCELLED, "cancelled")
        job = self.submit(content, styles, settings, **submit_options)
        try:
            return self.wait(job, on_event, cancel)
        except BaseException as e:
            if not (isinstance(e, DaemonError) and e.job == job):
                self.abandon(job)
            raise

    # --- Lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        if not self._socket.closed:
            self._socket.disable_monitor()
        self._handshakes.close()
        self._socket.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Internals --------------------------------------------------------------------------

    def _ended(self, event: JobEvent) -> JobEvent:
        """Stop keeping events of a job that has ended (a late duplicate gets dropped)."""
        if isinstance(event, ResultReply | ErrorReply):
            self._events.pop(event.job, None)
        return event

    def _check_limits(self, images: list[RawImage]) -> None:
        limits = self._limits or self.hello()
        for image in images:
            if image.pixels > limits.max_pixels:
                raise DaemonError(
                    protocol.TOO_LARGE,
                    f"a {image.width}x{image.height} image is {image.pixels / 1e6:.1f} Mpx; the "
                    f"daemon at {self.endpoint} takes at most {limits.max_pixels / 1e6:.1f} Mpx "
                    + protocol.pixel_counts(image.pixels, limits.max_pixels),
                )
            if image.nbytes > limits.max_message_bytes:
                raise DaemonError(
                    protocol.TOO_LARGE,
                    f"a {image.width}x{image.height}x{image.channels} {image.dtype} image is "
                    f"{image.nbytes / 2**20:.0f} MiB; the daemon at {self.endpoint} takes "
                    f"frames of at most {limits.max_message_bytes / 2**20:.0f} MiB",
                )

    def _request(self, request: Message, timeout: float | None = None) -> Message:
        """Send and wait for the reply carrying the same ref; error replies are raised."""
        self._send(request)
        waited = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + waited
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._went_away():
                raise self._no_answer(waited)
            message = self._receive(min(left, HEARTBEAT_INTERVAL))
            if message is None:
                continue
            if message.ref == request.ref:
                break
            job = getattr(message, "job", None)
            if message.ref is None and job in self._events:  # a job event: keep it
                self._events[job].append(message)
        if isinstance(message, ErrorReply):
            raise DaemonError(message.code, message.message, message.job)
        return message

    def _send(self, message: Message) -> None:
        self._socket.send_multipart(protocol.encode(message), copy=False)
        self._last_sent = time.monotonic()

    def _heartbeat(self, jobs: Collection[str], since: float) -> None:
        """Send one if due; raise NoDaemon after `timeout` s of silence (the daemon answers
        every heartbeat, so silence means it is gone or wedged)."""
        now = time.monotonic()
        if now - self._last_sent >= HEARTBEAT_INTERVAL:
            # The tokens let the daemon give our jobs back to us after a reconnect.
            tokens = {j: self._tokens[j] for j in jobs if j in self._tokens}
            self._send(HeartbeatRequest(jobs=sorted(jobs), tokens=tokens))
        if now - max(self._last_heard, since) > self.timeout or self._went_away():
            raise self._no_answer(self.timeout)

    def _receive(self, timeout: float) -> Message | None:
        """One decoded message, or None if none came within `timeout` seconds."""
        if not self._poller.poll(max(0, int(timeout * 1000))):
            return None
        frames = self._socket.recv_multipart()
        self._heard_once = True
        self._last_heard = time.monotonic()
        try:
            return protocol.decode_reply(frames)
        except protocol.ProtocolError as e:
            raise BrushworkError(f"the daemon at {self.endpoint} sent a bad reply: {e}") from None

    def _no_answer(self, waited: float) -> BrushworkError:
        """Why nothing answered in the `waited` seconds (the time really waited, not the
        client's default timeout)."""
        refused = self._refused_handshake()
        if refused is not None:
            return HandshakeFailed(f"the daemon at {self.endpoint} {refused}")
        if self._gone:
            return NoDaemon(
                f"the daemon at {self.endpoint} went away (its connection closed and nothing "
                "listens there now)"
            )
        if self._heard_once:
            return NoDaemon(
                f"the daemon at {self.endpoint} stopped answering (nothing for {waited:g} s)"
            )
        return NoDaemon(
            f"no daemon at {self.endpoint} (no answer in {waited:g} s; "
            "start one with `brushwork serve`)"
        )

    def _read_monitor(self) -> None:
        """Take in what the monitor saw: failed handshakes, and whether the connection to a
        daemon that answered closed and a reconnect found nothing listening (it died)."""
        while self._handshakes.poll(0):
            event = recv_monitor_message(self._handshakes)
            kind = event["event"]
            if kind & HANDSHAKE_FAILURES:
                self._failures.append((kind, event["value"]))
            elif kind == zmq.EVENT_DISCONNECTED:
                self._dropped = self._heard_once
            elif kind == zmq.EVENT_CONNECT_RETRIED:
                self._gone = self._dropped
            else:  # connected again
                self._dropped = self._gone = False

    def _went_away(self) -> bool:
        self._read_monitor()
        return self._gone

    def _refused_handshake(self) -> str | None:
        """Why the handshakes with the daemon failed, if they did: the most telling reason
        among the attempts (a refused key or a mismatch says more than a dropped one)."""
        self._read_monitor()
        if not self._failures:
            return None
        return _refusal(*min(self._failures, key=lambda f: _handshake_detail(*f)), self._curve)


def _ref() -> str:
    return uuid.uuid4().hex[:16]


# The handshake failures a socket monitor reports, on both sides of a connection.
HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


# What a client watches besides: its connection closing, reconnects refused or made.
_CLIENT_EVENTS = (
    HANDSHAKE_FAILURES
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
)


def monitor_handshakes(
    context: zmq.Context, sock: zmq.Socket, events: int = HANDSHAKE_FAILURES
) -> zmq.Socket:
    """A PAIR socket that receives `sock`'s failed handshakes (recv_monitor_message), and the
    other `events` asked for. Its own inproc address: pyzmq's default one is per file
    descriptor, which a new socket reuses."""
    address = f"inproc://brushwork-monitor-{uuid.uuid4().hex}"
    sock.monitor(address, events)
    events = context.socket(zmq.PAIR)
    events.setsockopt(zmq.LINGER, 0)
    events.connect(address)
    return events


def _handshake_detail(event: int, value: int) -> int:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return 0
    return 1 if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH else 2


def _refusal(event: int, value: int, curve: bool) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (
            "refused this client's CURVE key: it admits only the keys in its authorized_clients"
            " folder (`brushwork keys generate --client NAME` there makes one; give its"
            " .key_secret with --client-key)"
        )
    if not curve:
        # Without CURVE here, a handshake fails only against a CURVE daemon, whichever way the
        # failure is reported (a mechanism mismatch, or the daemon closing first).
        return "requires CURVE: give its public key (its server.key) with --server-key"
    if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "does not use CURVE: drop --server-key (and $BRUSHWORK_SERVER_KEY)"
    return "did not complete the CURVE handshake: is --server-key this daemon's public key?"


def _set_curve_client(
    socket: zmq.Socket,
    server_key: str | os.PathLike[str],
    client_key: str | os.PathLike[str] | None,
) -> None:
    import zmq.auth

    if not zmq.has("curve"):
        raise BrushworkError("this libzmq has no CURVE support; cannot use a server key")
    text = str(server_key)
    if len(text) == 40 and not Path(text).exists():
        public = text.encode()
    else:
        try:
            public, _ = zmq.auth.load_certificate(text)
        except (OSError, ValueError) as e:
            raise BadInput(f"{text}: not a CURVE public key file ({e})") from None
    if client_key is None:
        client_public, client_secret = zmq.curve_keypair()
    else:
        try:
            client_public, client_secret = zmq.auth.load_certificate(str(client_key))
        except (OSError, ValueError) as e:
            raise BadInput(f"{client_key}: not a CURVE key file ({e})") from None
        if client_secret is None:
            raise BadInput(f"{client_key}: holds no secret key (use the .key_secret file)")
    socket.curve_serverkey = public
    socket.curve_publickey = client_public
    socket.curve_secretkey = client_secret
