"""Tiny images, settings and raw-socket helpers for the daemon tests."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from brushwork import pixels, protocol
from brushwork.client import Client, DaemonError, new_job_id
from brushwork.protocol import (
    ErrorReply,
    Message,
    ProgressReply,
    RawImage,
    ResultReply,
    StatusReply,
)
from brushwork.settings import Settings

# Resizes 40x56 content to 40 px: 4 cheap iterations on 2 CPU cores.
TINY = Settings(size=40, iterations=4, scales=1)
# Runs until something cancels it (about 20 ms an iteration at this size on 2 cores).
ENDLESS = Settings(size=48, iterations=100_000, scales=1)
# A client that prints "running" once its endless job runs; the test then kills it.
_CLIENT_THAT_DIES = """
import sys
sys.path.insert(0, {tests!r})
from daemon_helpers import ENDLESS, noise
from brushwork.client import Client
client = Client({endpoint!r})
job = client.submit(noise(), [noise(32, 32)], ENDLESS, job={job!r}, token={token!r})
for event in client.events(job):
    print("running", flush=True)
"""


def noise(h: int = 40, w: int = 56, channels: int = 3, seed: int = 0) -> RawImage:
    rng = np.random.default_rng(seed)
    return pixels.from_array(rng.integers(0, 256, (h, w, channels), dtype=np.uint8))


def header(**fields) -> bytes:
    return json.dumps({"v": protocol.PROTOCOL_VERSION, **fields}).encode()


def raw_exchange(endpoint: str, frames: list[bytes], timeout_ms: int = 5000) -> list[bytes]:
    """Send frames on a fresh DEALER and return the one reply's frames."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        if not sock.poll(timeout_ms):
            raise AssertionError(f"no reply to {frames[:1]!r}")
        return sock.recv_multipart()
    finally:
        sock.close()


def start_endless(client: Client, **options) -> str:
    """Submit a job that runs until cancelled; return once it has done two iterations."""
    job = client.submit(noise(), [noise(32, 32)], ENDLESS, **options)
    for event in client.events(job):
        if isinstance(event, ProgressReply) and event.iteration >= 2:
            return job
    raise AssertionError("unreachable")


def wait_for_state(client: Client, job: str, state: str, timeout: float = 10.0) -> StatusReply:
    deadline = time.monotonic() + timeout
    while (status := client.status(job)).state != state:
        assert time.monotonic() < deadline, f"job {job} still {status.state}, not {state}"
        time.sleep(0.05)
    return status


def cancel_a_running_job(endpoint: str) -> tuple[ErrorReply, list[Message], StatusReply]:
    """Start an endless job, cancel it from another client (another process of the owner's,
    given the job's token), then check that a new job runs to its end. Returns the owner's
    error, the events it got after the cancel, and the job's status."""
    with Client(endpoint) as owner, Client(endpoint) as other:
        job = start_endless(owner)
        other.cancel(job, owner.token(job))
        late: list[Message] = []
        try:
            for event in owner.events(job):
                late.append(event)
        except DaemonError as e:
            error = ErrorReply(code=e.code, message=str(e), job=e.job)
        else:
            raise AssertionError("a cancelled job ended without an error")
        status = owner.status(job)
        assert owner.stylize(noise(), [noise(32, 32)], TINY).iterations == 4  # worker free
    return error, late, status


def kill_a_client_mid_job(endpoint: str) -> tuple[float, StatusReply, str]:
    """A client process runs an endless job and is killed (what GIMP does to a plug-in whose
    progress bar is cancelled). Returns the seconds until the daemon had cancelled the job,
    its status, and the job's error (sent again to whoever shows its token)."""
    job, token = new_job_id(), protocol.new_token()
    code = _CLIENT_THAT_DIES.format(
        tests=str(Path(__file__).parent), endpoint=endpoint, job=job, token=token
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "running\n"
    proc.kill()
    proc.wait()
    killed = time.monotonic()
    with Client(endpoint) as client:
        client.attach(job, token)  # the token: what the killed client's next run would keep
        status = wait_for_state(client, job, "cancelled", timeout=10)
        took = time.monotonic() - killed
        try:
            list(client.events(job))
        except DaemonError as e:
            error = str(e)
        else:
            raise AssertionError("a cancelled job ended without an error")
    return took, status, error


def run_at_once(
    endpoint: str, settings: Settings, count: int, stagger: float = 0.0
) -> list[dict[str, Any]]:
    """`count` clients, each on a thread, run one job each (the i-th submits i * stagger s
    after the first); every job must succeed. Returns them as `info` lists them (to each its
    own client: only a job's owner sees it by name), in the order they were submitted."""
    jobs = [new_job_id() for _ in range(count)]
    results: dict[str, object] = {}
    runs: dict[str, dict[str, Any]] = {}

    def run(i: int) -> None:
        time.sleep(i * stagger)
        with Client(endpoint) as client:
            try:
                results[jobs[i]] = client.stylize(
                    noise(seed=i), [noise(32, 32)], settings, job=jobs[i]
                )
                runs[jobs[i]] = next(j for j in client.info().queue if j["id"] == jobs[i])
            except BaseException as e:  # reported below, with the others'
                results[jobs[i]] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(results.get(j), ResultReply) for j in jobs), results
    return [runs[j] for j in jobs]
