"""Tiny images, settings and raw-socket helpers for the daemon tests."""

from __future__ import annotations

import json
import time

import numpy as np
import zmq

from brushwork import pixels, protocol
from brushwork.client import Client
from brushwork.protocol import RawImage, StatusReply
from brushwork.settings import Settings

# Resizes 40x56 content to 40 px: 4 cheap iterations on 2 CPU cores.
TINY = Settings(size=40, iterations=4, scales=1)
# Runs until something cancels it (about 20 ms an iteration at this size on 2 cores).
ENDLESS = Settings(size=48, iterations=100_000, scales=1)


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


def wait_for_state(client: Client, job: str, state: str, timeout: float = 10.0) -> StatusReply:
    deadline = time.monotonic() + timeout
    while (status := client.status(job)).state != state:
        assert time.monotonic() < deadline, f"job {job} still {status.state}, not {state}"
        time.sleep(0.05)
    return status
