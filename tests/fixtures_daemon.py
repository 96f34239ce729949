"""Real daemons for tests (a pytest plugin loaded by conftest.py).

`start_daemon(*serve_args)` starts `python -m brushwork serve` as a subprocess on a free
loopback port with the real weights, waits until it answers hello and returns a `Daemon`;
every daemon still running at the end of the session gets SIGTERM. `daemon` is one shared
instance for tests that do not need a daemon of their own (they must not stop it).

    def test_something(start_daemon):
        d = start_daemon("--max-queue", "1")
        with d.client() as client:
            ...
        assert d.stop() == 0
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from brushwork import xdg
from brushwork.client import Client, NoDaemon

START_TIMEOUT = 120.0  # python + torch import + weights load, on a slow CI machine


@dataclass
class Daemon:
    endpoint: str  # where clients connect
    process: subprocess.Popen
    log_file: Path  # the daemon's own log (--log-file)
    output_file: Path  # its stderr
    client_options: dict[str, Any] = field(default_factory=dict)  # e.g. CURVE keys

    def client(self, timeout: float = 10.0, **options: Any) -> Client:
        return Client(self.endpoint, timeout=timeout, **{**self.client_options, **options})

    def output(self) -> str:
        return self.output_file.read_text(errors="replace")

    def state(self) -> Path:
        """The daemon's state folder ($XDG_STATE_HOME/brushwork): its operator tokens."""
        return self.log_file.parent / "brushwork"

    def operator_token(self) -> str:
        """What lets the user running the daemon list and cancel every job on it."""
        return xdg.operator_token_file(self.endpoint, self.state()).read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig`, wait for the exit, return the exit status (fails the test on a hang)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"daemon did not exit {timeout:g} s after signal {sig}:\n{self.output()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(weights: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "brushwork", "serve", "--weights", str(weights), *args]


@pytest.fixture(scope="session")
def start_daemon(
    weights_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Daemon]]:
    """Factory: start_daemon(*extra_serve_args, ...) -> a Daemon that answers hello.

    host: the loopback address to bind (default 127.0.0.1; clients connect to 127.0.0.1;
        with `--curve` a loopback daemon takes CURVE clients only); env: extra environment;
        memory_limit: RLIMIT_AS in bytes; client_options: Client keyword arguments
        (server_key, client_key); timeout: seconds it may take to answer.
    """
    started: list[Daemon] = []

    def start(
        *args: str,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        memory_limit: int | None = None,
        client_options: dict[str, Any] | None = None,
        timeout: float = START_TIMEOUT,
    ) -> Daemon:
        folder = tmp_path_factory.mktemp("daemon")
        port = free_port()
        log_file, output_file = folder / "daemon.log", folder / "stderr.txt"
        command = serve_command(
            weights_file, "--bind", f"tcp://{host}:{port}", "--log-file", str(log_file), *args
        )
        with open(output_file, "wb") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "XDG_STATE_HOME": str(folder), **(env or {})},
                preexec_fn=None if memory_limit is None else lambda: _limit_memory(memory_limit),
            )
        endpoint = f"tcp://127.0.0.1:{port}"
        daemon = Daemon(endpoint, process, log_file, output_file, client_options or {})
        started.append(daemon)
        wait_until_answering(daemon, timeout)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.stop()


def _limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def wait_until_answering(daemon: Daemon, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    with daemon.client(timeout=0.5) as client:
        while time.monotonic() < deadline:
            if daemon.process.poll() is not None:
                pytest.fail(f"daemon exited with {daemon.process.returncode}:\n{daemon.output()}")
            try:
                client.hello()
                return
            except NoDaemon:
                continue
    daemon.process.kill()
    pytest.fail(f"daemon did not answer within {timeout:g} s:\n{daemon.output()}")


@pytest.fixture(scope="session")
def small_daemon(start_daemon: Callable[..., Daemon]) -> Daemon:
    """A shared CPU daemon for attacks: 100,000 px an image (so frames of 1.6 MB at most), a
    queue budget of 4 MiB, heartbeat timeout 2 s, 8 queued jobs at most. Tests using it must
    not stop it, and must leave nothing queued or running."""
    return start_daemon(
        "--device", "cpu", "--max-pixels", "100000", "--max-queue-memory", "4M",
        "--heartbeat-timeout", "2", "--max-queue", "8",
    )  # fmt: skip


@pytest.fixture(scope="session")
def daemon(start_daemon: Callable[..., Daemon]) -> Daemon:
    """A shared CPU daemon: heartbeat timeout 2 s, 4 queued jobs at most, 1 Mpx per image.

    Tests using it must not stop it, and must keep their clients listening (heartbeats)
    while their jobs run.
    """
    return start_daemon(
        "--device", "cpu", "--heartbeat-timeout", "2", "--max-queue", "4", "--max-pixels", "1000000"
    )
