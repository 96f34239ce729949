"""Daemon protocol numbers: ping round trip, submit -> first iteration, 4096x4096 RGBA transfer.

    .venv/bin/python bench/protocol_bench.py [--server ENDPOINT] [--device cpu]

Without --server it starts `brushwork serve` on a free loopback port (real weights) and stops
it at the end. Prints one table; the transfer rows also run through a bare echo peer (same
protocol module, no engine) to separate the wire from the daemon.

The other bench scripts start their daemons here too (`start_daemon`, `daemons`) and open
their reports with `machine_report` and `machine_line`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import zmq

from brushwork import __version__, pixels, protocol
from brushwork.client import Client, NoDaemon
from brushwork.protocol import PreviewReply, ProgressReply, RawImage
from brushwork.settings import Settings

BIG = 4096


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="use this daemon instead of starting one")
    parser.add_argument("--device", default="auto", help="device of the daemon it starts")
    parser.add_argument("--pings", type=int, default=500)
    args = parser.parse_args()

    daemon = None if args.server else start_daemon(args.device)
    endpoint = args.server or daemon[1]
    rows: list[tuple[str, str]] = []
    try:
        with Client(endpoint, timeout=60) as client:
            hello = client.hello()
            rows.append(("ping (hello) round trip, median / p99", ping(client, args.pings)))
            rows += first_iteration(client)
            name = f"upload {BIG}x{BIG} RGBA u8 (64 MiB) to the daemon, submit -> accepted"
            rows.append((name, upload(client)))
        rows.append((f"echo {BIG}x{BIG} RGBA u8 both ways, protocol only", echo_round_trip()))
    finally:
        if daemon is not None:
            daemon[0].terminate()
            daemon[0].wait(30)
    print(
        f"brushwork {__version__} daemon protocol bench: {endpoint}, device {hello.device}, "
        f"torch {torch.__version__}, pyzmq {zmq.__version__} / libzmq {zmq.zmq_version()}, "
        f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}"
    )
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  result")
    print(f"{'-' * width}  {'-' * 30}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def ping(client: Client, n: int) -> str:
    times = timed(client.hello, n)
    return f"{ms(statistics.median(times))} / {ms(np.percentile(times, 99))}"


def first_iteration(client: Client) -> list[tuple[str, str]]:
    """Submit -> first progress event, model warm; style targets cold (new style) and cached."""
    rows = []
    rng = np.random.default_rng(0)
    for side in (128, 512):
        content = pixels.from_array(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        settings = Settings(size=side, iterations=2, scales=1)
        warm = pixels.from_array(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        client.stylize(content, [warm], settings)  # warm the model and allocator
        for label, style in (("new style", fresh_style(rng, side)), ("cached style", warm)):
            start = time.perf_counter()
            job = client.submit(content, [style], settings)
            seen = [
                time.perf_counter() - start
                for event in client.events(job)
                if isinstance(event, ProgressReply)
            ]
            first, step = seen[0], seen[1] - seen[0]
            rows.append(
                (
                    f"submit -> first iteration, {side} px, {label}",
                    f"{ms(first)} (one iteration {ms(step)})",
                )
            )
    return rows


def fresh_style(rng: np.random.Generator, side: int) -> RawImage:
    return pixels.from_array(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def upload(client: Client) -> str:
    big = pixels.from_array(np.full((BIG, BIG, 4), 128, np.uint8))
    style = pixels.from_array(np.zeros((64, 64, 3), np.uint8))
    settings = Settings(size=64, iterations=1, scales=1)  # the run itself stays negligible
    times = []
    for _ in range(5):
        start = time.perf_counter()
        job = client.submit(big, [style], settings)
        times.append(time.perf_counter() - start)
        list(client.events(job))
    best = min(times)
    return f"{ms(best)} best of 5 ({big.nbytes / best / 2**30:.2f} GiB/s)"


def echo_round_trip() -> str:
    """A PreviewReply of 64 MiB to a peer that decodes it and sends it back, over TCP."""
    context = zmq.Context()
    server = context.socket(zmq.ROUTER)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            if server.poll(100):
                peer, *frames = server.recv_multipart(copy=False)
                request = protocol.decode_reply([f.buffer for f in frames])
                server.send_multipart([peer, *protocol.encode(request)], copy=False)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    client = context.socket(zmq.DEALER)
    client.connect(f"tcp://127.0.0.1:{port}")
    image = pixels.from_array(np.full((BIG, BIG, 4), 7, np.uint8))
    message = PreviewReply(job="bench", iteration=1, image=image)

    def once() -> None:
        client.send_multipart(protocol.encode(message), copy=False)
        protocol.decode_reply(client.recv_multipart(copy=False))

    times = timed(once, 5)
    stop.set()
    thread.join()
    client.close(0)
    server.close(0)
    context.term()
    best = min(times)
    return f"{ms(best)} best of 5 ({2 * image.nbytes / best / 2**30:.2f} GiB/s)"


def timed(fn: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def start_daemon(
    device: str, *options: str, timeout: float = 120.0
) -> tuple[subprocess.Popen, str]:
    """`brushwork serve` on a free loopback port with `options`; (process, endpoint) once it
    answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    command = [sys.executable, "-m", "brushwork", "serve", "--bind", endpoint, "--device", device]
    process = subprocess.Popen([*command, *options], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    with Client(endpoint, timeout=0.5) as probe:
        while True:
            try:
                probe.hello()
                return process, endpoint
            except NoDaemon:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise SystemExit(f"the daemon did not start ({command})") from None


@contextlib.contextmanager
def daemons(
    pools: Iterable[tuple[str, Sequence[str]]], device: str = "cpu", timeout: float = 600.0
) -> Iterator[dict[str, str]]:
    """A daemon for each (name, `serve` options), all up at once; their endpoints by name.
    At the end every one started is terminated, then waited for."""
    started: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for name, options in pools:
            started[name] = start_daemon(device, *options, timeout=timeout)
        yield {name: endpoint for name, (_, endpoint) in started.items()}
    finally:
        for process, _ in started.values():
            process.terminate()
        for process, _ in started.values():
            process.wait(120)


def machine_report(load_before: float, **versions: str | None) -> dict[str, Any]:
    """What a bench report says first: brushwork, date, machine, torch (and `versions`), and
    the load average before (`load_before`) and now: the machine is shared."""
    return {
        "brushwork": __version__,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        **versions,
        "load_average_before_after": [load_before, os.getloadavg()[0]],
    }


def machine_line(report: dict[str, Any], *versions: str) -> str:
    """A machine_report as the line under the Markdown report's title, with `versions`
    (names of its keys) after torch."""
    named = "".join(f", {name} {report[name]}" for name in ("torch", *versions))
    load = report["load_average_before_after"]
    return (
        f"{report['machine']}{named}, brushwork {report['brushwork']}; load average"
        f" {load[0]:.1f} before, {load[1]:.1f} after (a shared machine)."
    )


if __name__ == "__main__":
    sys.exit(main())
