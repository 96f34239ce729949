"""remote.RemoteEngine: Engine.stylize's contract, run by a real daemon (the CLI's hook)."""

from __future__ import annotations

import argparse
import threading

import numpy as np
import pytest

from brushwork import protocol, remote
from brushwork.client import DaemonError, NoDaemon
from daemon_helpers import ENDLESS, TINY, wait_for_state

pytestmark = pytest.mark.weights


def args(server: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    remote.add_server_arguments(parser)
    return parser.parse_args(["--server", server] if server else [])


def test_remote_engine_returns_what_the_engine_returns(daemon):
    rng = np.random.default_rng(5)
    content = rng.integers(0, 65536, (40, 56, 4), dtype=np.uint16)
    style = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    engine = remote.connect(args(daemon.endpoint))
    assert engine is not None and engine.device == "cpu"
    seen = []
    result = engine.stylize(content, [style], TINY, progress=seen.append)
    engine.close()
    assert [p.iteration for p in seen] == [1, 2, 3, 4]
    assert all(p.total == 4 and "total" in p.losses and p.elapsed > 0 for p in seen)
    assert result.image.dtype == np.float32 and result.image.shape == (29, 40, 4)
    assert result.image.min() >= 0 and result.image.max() <= 1
    assert result.image.flags.writeable
    assert result.iterations == 4 and result.settings == TINY and result.device == "cpu"


def test_a_set_cancel_token_cancels_the_remote_job(daemon):
    engine = remote.connect(args(daemon.endpoint))
    cancel = threading.Event()
    job = "remote-cancel-" + str(id(cancel))  # the caller may choose the job id

    def progress(p) -> None:
        if p.iteration == 2:
            cancel.set()

    image = np.zeros((40, 56, 3), np.uint8)
    with pytest.raises(DaemonError) as e:
        engine.stylize(image, [image], ENDLESS, progress=progress, cancel=cancel, job=job)
    assert e.value.code == protocol.CANCELLED
    with daemon.client() as client:
        client.attach(job, engine.client.token(job))
        wait_for_state(client, job, "cancelled")
    engine.close()


def test_no_daemon_means_in_process_unless_a_server_was_named(monkeypatch):
    monkeypatch.setenv("BRUSHWORK_SERVER", "tcp://127.0.0.1:9")
    assert remote.connect(args(None)) is None
    with pytest.raises(NoDaemon, match=r"^no daemon at tcp://127\.0\.0\.1:9 "):
        remote.connect(args("tcp://127.0.0.1:9"))
