"""Attacks on the daemon: the rounds of bench/reliability.py that the fuzzing cannot make.

Well-formed requests with hostile contents (a hundred style frames, a queue filled with them,
a style layer named 80,000 times, a 900 KB `type`), bind endpoints that are not what they
seem, frames announced larger than the daemon takes or left half-sent (a raw ZMTP peer: a
ZeroMQ socket never stops mid-frame), and a 391 KB PNG of 134 Mpx for a 64 px job. Each round
reports what the daemon answered and its memory before, at its peak and after. The tests
(tests/test_attacks.py, tests/test_reliability.py) run them small.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import zmq

from brushwork import pixels, protocol
from brushwork.client import DaemonError
from brushwork.endpoints import classify
from brushwork.errors import BadInput
from brushwork.settings import MAX_STYLES, VGG16_LAYERS, Settings

TINY = Settings(size=40, iterations=3, scales=1)
ENDLESS = Settings(size=48, iterations=100_000, scales=1)


# --- Memory of a process ----------------------------------------------------------------------


def _status(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) * 1024


@contextmanager
def rss_during(pid: int, figures: dict):
    """Adds the process's RSS before, at its peak during the block (VmHWM, reset first) and
    after it to `figures`, in MB."""
    figures["rss_before_mb"] = round(_status(pid, "VmRSS") / 1e6)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the RSS now
    try:
        yield
    finally:
        figures["rss_peak_mb"] = round(_status(pid, "VmHWM") / 1e6)
        figures["rss_after_mb"] = round(_status(pid, "VmRSS") / 1e6)


# --- A raw ZMTP 3.0 peer ----------------------------------------------------------------------


class RawPeer:
    """A DEALER spoken by hand (NULL mechanism), which can announce a frame and stop."""

    def __init__(self, endpoint: str) -> None:
        host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(
            b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\0") + bytes(32)
        )
        self._read(64)  # the daemon's greeting
        ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
        self.sock.sendall(bytes([0x04, len(ready)]) + ready)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        return data

    def frame(self, data: bytes, more: bool = False, size: int | None = None) -> int:
        """Send a frame announced as `size` bytes (default: its own) holding `data`, as far as
        the daemon reads it; returns the bytes it took."""
        size = len(data) if size is None else size
        more_flag = 1 if more else 0
        head = bytes([more_flag, size]) if size < 256 else bytes([more_flag | 2])
        try:
            self.sock.sendall(head + (b"" if size < 256 else struct.pack(">Q", size)))
            sent = 0
            for start in range(0, len(data), 1 << 20):
                self.sock.sendall(data[start : start + (1 << 20)])
                sent = start + len(data[start : start + (1 << 20)])
            return sent
        except OSError:  # the daemon closed the connection
            return -1

    def closed_within(self, seconds: float) -> float | None:
        """Seconds until the daemon closed the connection (None: not within `seconds`)."""
        start = time.monotonic()
        self.sock.settimeout(0.05)
        while time.monotonic() - start < seconds:
            try:
                if self.sock.recv(65536) == b"":
                    return time.monotonic() - start
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - start
        return None

    def close(self) -> None:
        self.sock.close()


def submit_header(job: str, settings: dict, frames: list[protocol.RawImage]) -> list[bytes]:
    """A submit's frames, with settings as given (Settings would refuse hostile ones here)."""
    header = {
        "v": 1,
        "type": "submit",
        "job": job,
        "settings": settings,
        "frames": [
            {"role": "style" if i else "content", **f.describe()} for i, f in enumerate(frames)
        ],
    }
    return [json.dumps(header).encode(), *(bytes(f.data) for f in frames)]


def noise(h: int, w: int, channels: int = 3, dtype: str = "u8", seed: int = 0):
    rng = np.random.default_rng(seed)
    array = rng.random((h, w, channels), dtype=np.float32)
    return pixels.from_float(array, dtype)


def exchange(endpoint: str, frames: list[bytes], timeout: float = 30.0) -> tuple[dict, float]:
    """One request on a fresh DEALER: the reply's header, and the seconds it took."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        start = time.perf_counter()
        sock.send_multipart(frames)
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError("no reply")
        reply = sock.recv_multipart()
        return json.loads(reply[0]), time.perf_counter() - start
    finally:
        sock.close()


# --- Fuzz --------------------------------------------------------------------------------------


def fuzzed_message(rng: random.Random) -> list[bytes]:
    """One malformed or hostile request: junk bytes, broken JSON, wrong types and versions,
    unknown types, frame counts and sizes that lie, oversized headers, ids and tokens out of
    range. Never a well-formed submit: that would run a job."""
    kind = rng.randrange(10)
    types = [*protocol.REQUESTS, "result", "", "x" * 200]
    values = [None, 0, -1, 2**70, 1.5, float("nan"), "", "x" * 300, [], {}, [1, "a"], True]

    def value() -> object:
        v = rng.choice(values)
        return "NaN" if isinstance(v, float) and v != v else v

    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 200))]
    if kind == 1:
        return [b'{"v": 1, "type": "hello"' + rng.randbytes(rng.randrange(1, 20))]
    if kind == 2:  # valid JSON of the wrong shape
        return [json.dumps(rng.choice([[], 1, "x", None, [{"v": 1}]])).encode()]
    header: dict = {"v": rng.choice([1, 1, 1, 0, 2, "1", None]), "type": rng.choice(types)}
    fields = ["job", "jobs", "ref", "token", "tokens", "settings", "frames", "preview_every"]
    for name in rng.sample(fields, rng.randrange(4)):
        header[name] = value()
    if kind == 3:  # a submit whose frames lie about their size
        header.update(type="submit", job=f"f{rng.randrange(10**6)}", settings={"size": 16})
        frames = [
            {"role": r, "width": 4, "height": 4, "channels": 3, "dtype": "u8"}
            for r in ("content", "style")
        ]
        header["frames"] = frames
        return [json.dumps(header).encode(), bytes(48), bytes(rng.randrange(47))]
    if kind == 4:  # a header describing frames that are not there
        header["frames"] = [{"role": "content", "width": 65536, "height": 65536}]
    if kind == 5:
        header["settings"] = {rng.choice(["size", "iterations", "tile", "bogus"]): value()}
        header.update(type="submit", job="s1")
    if kind == 6:  # ids, lists and token maps out of range
        header.update(type="heartbeat", jobs=["a" * 65] * rng.randrange(3))
        header["tokens"] = {"j": "short"} if rng.random() < 0.5 else ["not", "a", "map"]
    if kind == 7:
        header.update(type=rng.choice(["cancel", "status"]), job=rng.choice(["x", "", "a b"]))
        header["token"] = rng.choice(["A" * 43, "short", 7])
    if kind == 8:  # a header of about 1 MiB: at the limit or just over it
        header["pad"] = "p" * (protocol.MAX_HEADER_BYTES - rng.randrange(-64, 64))
    text = json.dumps(header)
    extra = [rng.randbytes(rng.randrange(64)) for _ in range(rng.randrange(3))]
    return [text.encode(), *extra]


def fuzz(daemon, count: int, seed: int = 0) -> dict:
    """`count` fuzzed messages from 4 connections, 64 in flight each; every one must get
    exactly one reply, and the daemon must answer `info` after."""
    rng = random.Random(seed)
    context = zmq.Context.instance()
    sockets = []
    for _ in range(4):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(daemon.endpoint)
        sockets.append(sock)
    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    codes: Counter[str] = Counter()
    in_flight = dict.fromkeys(sockets, 0)
    sent = received = 0
    start = time.perf_counter()
    try:
        while received < sent or sent < count:
            for sock in sockets:
                while sent < count and in_flight[sock] < 64:
                    sock.send_multipart(fuzzed_message(rng))
                    in_flight[sock] += 1
                    sent += 1
            ready = dict(poller.poll(5000))
            if not ready:
                break  # 5 s without a reply: some message went unanswered
            for sock in ready:
                while sock.poll(0):
                    reply = protocol.decode_reply(sock.recv_multipart())
                    codes[getattr(reply, "code", reply.TYPE)] += 1
                    in_flight[sock] -= 1
                    received += 1
    finally:
        for sock in sockets:
            sock.close()
    elapsed = time.perf_counter() - start
    with daemon.client() as client:
        answers = client.info().protocol == protocol.PROTOCOL_VERSION
    return {
        "messages": sent,
        "replies": received,
        "replies_by_code": dict(codes.most_common()),
        "seconds": round(elapsed, 1),
        "messages_per_s": round(sent / elapsed),
        "daemon_alive": daemon.alive(),
        "answers_info_after": answers,
        "tracebacks_in_log": daemon.output_file.read_text().count("Traceback"),
        "errors_in_log": daemon.output_file.read_text().count(" ERROR "),
    }


# --- Rounds -----------------------------------------------------------------------------------

BIND_FORMS = [
    "tcp://127.0.0.1:5580", "tcp://127.1:5580", "tcp://2130706433:5580", "tcp://0x7f.1:5580",
    "tcp://[127.0.0.1]:5580", "tcp://127.0.0.1%1:5580", "tcp://localhost:5580",
    "tcp://127.0.0.1:*", "ipc:///tmp/brushwork.sock", "ipc://@brushwork", "inproc://brushwork",
    "tcp://*:5580", "tcp://0.0.0.0:5580", "tcp://0:5580", "tcp://lo:5580",
    "tcp://127.0.0.1:5580;0.0.0.0:5580", "tcp://0.0.0.0:5580;127.0.0.1:5580",
    "tcp://[::]:5580", "tcp://::1:5580", "tcp://[::1]:5580", "tcp://example.com:5580",
    "tcp://127.0.0.1", "ws://127.0.0.1:5580", "wss://127.0.0.1:5580", "udp://127.0.0.1:5580",
    "tipc://{1234,1}", "vmci://1:5580", "pgm://eth0;239.192.1.1:5580", "foo://x",
    "127.0.0.1:5580",
]  # fmt: skip


def bind_forms(weights: Path | None = None) -> dict:
    """Every form libzmq takes, read as the daemon reads it before binding: loopback (served
    without keys), network (needs keys) or refused; then `brushwork serve` itself given the
    issue's ';' form with an address no machine has (192.0.2.1, TEST-NET: nothing could be
    exposed), which must be refused before any bind."""
    forms = {}
    for form in BIND_FORMS:
        try:
            bind = classify(form)
            forms[form] = "loopback" if bind.local else f"needs keys: {bind.where}"
        except BadInput as e:
            forms[form] = f"refused: {e}"
    hostile = "tcp://127.0.0.1:5599;192.0.2.1:5599"
    command = [sys.executable, "-m", "brushwork", "serve", "--bind", hostile]
    command += ["--weights", str(weights)] if weights else []
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return {
        "forms_tried": len(forms),
        "loopback": sum(v == "loopback" for v in forms.values()),
        "need_keys": sum(v.startswith("needs keys") for v in forms.values()),
        "refused": sum(v.startswith("refused") for v in forms.values()),
        "forms": forms,
        "serve_semicolon_exit": done.returncode,
        "serve_semicolon_seconds": round(time.perf_counter() - start, 1),
        "serve_semicolon_said": done.stderr.strip().splitlines()[-1],
    }


def _running_job(client) -> tuple[str, float]:
    job = client.submit(noise(40, 56), [noise(32, 32, seed=1)], ENDLESS)
    for event in client.events(job):
        if getattr(event, "iteration", 0) >= 2:
            return job, time.perf_counter()
    raise AssertionError("unreachable")


def queue_memory(daemon, jobs: int = 20, issue_jobs: int = 6) -> dict:
    """With a job running: `issue_jobs` submits of 100 style frames of an f32 RGBA image at the
    pixel limit (the issue's), then `jobs` submits of MAX_STYLES such frames, until the queue's
    budget refuses them; then everything cancelled."""
    figures: dict = {}
    with daemon.client(timeout=60) as client:
        limits = client.hello()
        side = int((limits.max_pixels // 1.6) ** 0.5)  # a frame near the pixel limit
        style = noise(side, int(side * 1.6), channels=4, dtype="f32", seed=2)
        codes: dict[str, int] = {}
        accepted = []
        with rss_during(daemon.process.pid, figures):
            running, _ = _running_job(client)
            for count, n in ((issue_jobs, 100), (jobs, MAX_STYLES)):
                for _ in range(count):
                    try:
                        accepted.append(client.submit(noise(40, 56), [style] * n, TINY))
                        codes["accepted"] = codes.get("accepted", 0) + 1
                    except DaemonError as e:
                        codes[e.code] = codes.get(e.code, 0) + 1
                        figures.setdefault(f"refusal_{e.code}", str(e))
            info = client.info()
            for job in accepted:
                client.cancel(job)
            start = time.perf_counter()
            client.cancel(running)
            try:
                list(client.events(running))
            except DaemonError:
                figures["seconds_to_cancel_running"] = round(time.perf_counter() - start, 2)
        figures.update(
            frame_mb=round(style.nbytes / 1e6, 2),
            submits=issue_jobs + jobs,
            replies=codes,
            max_queue_mb=round(limits.max_queue_bytes / 1e6),
            held_mb_when_full=round(info.queue_bytes / 1e6),
        )
    return figures


def half_sent(
    daemon,
    connections: int = 4,
    announced: int = 10**9,
    wait: float = 30.0,
    stall: bool = True,
    frames: int = 50,
) -> dict:
    """`connections` raw peers each announce an `announced`-byte frame and send 100 MB of it;
    then (if `stall`) as many announce a frame at the limit, send half of it and stall; then
    one sends `frames` whole frames at the limit of a message it never ends, and stops."""
    with daemon.client() as client:
        limit = client.hello().max_message_bytes
    figures: dict = {"frame_limit_mb": round(limit / 1e6, 1), "announced_mb": announced / 1e6}
    big: dict = {}
    with rss_during(daemon.process.pid, big):
        peers = [RawPeer(daemon.endpoint) for _ in range(connections)]
        for peer in peers:
            peer.frame(b'{"v":1,"type":"submit"}', more=True)
        taken = [peer.frame(bytes(100 << 20), size=announced) for peer in peers]
        closed = [peer.closed_within(5.0) for peer in peers]
        for peer in peers:
            peer.close()
    figures["oversized"] = {
        **big,
        "dropped": sum(c is not None for c in closed),
        "bytes_taken_before_drop": max(taken),
    }
    if not stall:
        return figures
    stalled: dict = {}
    with rss_during(daemon.process.pid, stalled):
        peers = [RawPeer(daemon.endpoint) for _ in range(connections)]
        for peer in peers:
            peer.frame(b'{"v":1,"type":"submit"}', more=True)
            peer.frame(bytes(limit // 2), size=limit)
        time.sleep(0.5)
        held = _status(daemon.process.pid, "VmRSS")
        closed = [peer.closed_within(wait) for peer in peers]
        time.sleep(0.5)
        for peer in peers:
            peer.close()
    figures["stalled_half_sent"] = {
        **stalled,
        "rss_while_stalled_mb": round(held / 1e6),
        "dropped": sum(c is not None for c in closed),
        "seconds_to_drop": max((round(c, 1) for c in closed if c is not None), default=None),
    }
    unending: dict = {}
    with rss_during(daemon.process.pid, unending):
        peer = RawPeer(daemon.endpoint)
        peer.frame(b'{"v":1,"type":"submit"}', more=True)
        for _ in range(frames):  # each whole, so each within the limit: libzmq keeps them
            peer.frame(bytes(limit), more=True)
        time.sleep(0.5)
        held = _status(daemon.process.pid, "VmRSS")
        closed = peer.closed_within(wait)
        time.sleep(0.5)
        peer.close()
    figures["unending_message"] = {
        **unending,
        "mb_sent": round(frames * limit / 1e6),
        "rss_while_sending_mb": round(held / 1e6),
        "dropped_once_it_stopped": closed is not None,
        "seconds_to_drop": None if closed is None else round(closed, 1),
    }
    return figures


def hostile_settings(daemon) -> dict:
    """Well-formed submits whose settings would stall a worker: one layer 80,000 times, 500
    layers with falloff 8; then the most a job may name (13 layers, falloff 8) runs and is
    cancelled."""
    figures: dict = {}
    images = [noise(40, 56), noise(32, 32, seed=1)]
    cases = {
        "one_layer_80000_times": {"size": 48, "style_layers": ["conv1_1"] * 80_000},
        "500_layers_falloff_8": {
            "size": 48,
            "style_layers": ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"] * 100,
            "style_layer_falloff": 8,
        },
    }
    with rss_during(daemon.process.pid, figures):
        for name, settings in cases.items():
            reply, seconds = exchange(daemon.endpoint, submit_header(name, settings, images))
            figures[name] = {
                "reply": reply.get("code", reply["type"]),
                "ms": round(seconds * 1000, 1),
                "message": reply.get("message"),
            }
        every = ENDLESS.replace(style_layers=VGG16_LAYERS, style_layer_falloff=8)
        with daemon.client() as client:
            job = client.submit(images[0], images[1:], every)
            for event in client.events(job):
                if getattr(event, "iteration", 0) >= 2:
                    break
            start = time.perf_counter()
            client.cancel(job)
            with suppress(DaemonError):
                list(client.events(job))
            figures["13_layers_seconds_to_cancel"] = round(time.perf_counter() - start, 2)
            figures["worker_free_after"] = client.stylize(images[0], images[1:], TINY).iterations
    return figures


def echoed(daemon, requests: int = 100, size: int = 900_000) -> dict:
    """`requests` messages whose `type` is `size` bytes: what comes back, what the log keeps."""
    log = daemon.log_file
    before = log.stat().st_size
    figures: dict = {}
    longest = 0
    with rss_during(daemon.process.pid, figures):
        for _ in range(requests):
            reply, _ = exchange(
                daemon.endpoint, [json.dumps({"v": 1, "type": "x" * size}).encode()]
            )
            longest = max(longest, len(reply["message"]))
    text = log.read_text()
    figures.update(
        requests=requests,
        type_bytes=size,
        longest_reply_message=longest,
        log_bytes_added=log.stat().st_size - before,
        warnings_logged=text.count("bad request from"),
        startup_line_in_log="serving on" in text,
    )
    return figures


def write_big_png(path: Path, side: int = 11580) -> None:
    """A PNG of side x side px that compresses to a few hundred KB (the issue's 391 KB)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), (200, 120, 40))
    ImageDraw.Draw(img).ellipse((side // 4, side // 4, 3 * side // 4, 3 * side // 4), (20, 40, 200))
    img.save(path)


def peak_of(command: list[str], env: dict | None = None) -> dict:
    """Run a command; its exit status, wall time, peak RSS (its own, from wait4) and the
    last line it said."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    _, status, usage = os.wait4(process.pid, 0)
    said = process.stderr.read().strip().splitlines()
    process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit": process.returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(usage.ru_maxrss * 1024 / 1e6),
        "said": said[-1] if said else "",
    }


def big_image(daemon, folder: Path, weights: Path | None = None, side: int = 11580) -> dict:
    """`stylize --size 64` of a side x side PNG in-process, through the daemon and as a
    batch; the daemon's memory too."""
    from brushwork import images

    big, style = folder / "big.png", folder / "style.png"
    write_big_png(big, side)
    images.save(style, np.random.default_rng(3).random((64, 64, 3), dtype=np.float32))
    settings = ["--size", "64", "--iterations", "2", "--scales", "1"]
    brushwork = [sys.executable, "-m", "brushwork"]
    local = ["--weights", str(weights)] if weights else []
    nowhere = {"BRUSHWORK_SERVER": "tcp://127.0.0.1:1"}  # no daemon there: in-process
    figures: dict = {"file": f"{side}x{side} PNG, {big.stat().st_size / 1e3:.0f} KB"}
    out = folder / "out.png"
    stylize = [*brushwork, "stylize", str(big), str(style), "-o", str(out), *settings]
    figures["in_process"] = peak_of([*stylize, *local], nowhere)
    daemon_figures: dict = {}
    with rss_during(daemon.process.pid, daemon_figures):
        figures["through_daemon"] = peak_of([*stylize, "--server", daemon.endpoint])
        batch = [*brushwork, "batch", str(big), "--style", str(style), "-o", str(folder / "b")]
        figures["batch"] = peak_of([*batch, *settings, "--server", daemon.endpoint])
    figures["daemon"] = daemon_figures
    figures["output"] = "x".join(map(str, images.load(out).shape[1::-1]))
    return figures
