"""A job belongs to the client that submitted it: another client, on loopback or with its own
CURVE key, can neither take its events, resubmit it, cancel it nor learn its id."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from brushwork import protocol, xdg
from brushwork.client import Client, DaemonError
from brushwork.protocol import ProgressReply, ResultReply
from daemon_helpers import ENDLESS, TINY, header, noise, raw_exchange
from fixtures_daemon import Daemon

pytestmark = pytest.mark.weights

SLOW = TINY.replace(iterations=40)  # long enough for an attacker to try while it runs


def first_progress(client: Client, job: str) -> None:
    for event in client.events(job):
        if isinstance(event, ProgressReply):
            return


class Waiting(threading.Thread):
    """The owner keeps listening (and heartbeating) on a thread while the test attacks; its
    own client stays on that thread (one socket, one thread)."""

    def __init__(self, daemon: Daemon, settings=SLOW, **client_options) -> None:
        super().__init__(daemon=True)
        self.client = daemon.client(**client_options)
        self.job = self.client.submit(noise(seed=4), [noise(32, 32)], settings)
        self.token = self.client.token(self.job)
        first_progress(self.client, self.job)
        self.events: list = []
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.events.extend(self.client.events(self.job))
        except BaseException as e:
            self.error = e
        finally:
            self.client.close()

    def outcome(self):
        self.join(60)
        assert not self.is_alive()
        return self.error or self.events[-1]


def listen(sock: zmq.Socket, seconds: float) -> list[dict]:
    """Every message a raw DEALER receives for `seconds` (headers only)."""
    got, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000)):
            got.append(json.loads(sock.recv_multipart()[0]))
    return got


@pytest.fixture
def attacker(daemon: Daemon) -> Iterator[zmq.Socket]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.endpoint)
    yield sock
    sock.close()


def test_a_heartbeat_naming_another_clients_job_gets_nothing(daemon, attacker):
    owner = Waiting(daemon)
    attacker.send(header(type="heartbeat", ref="hb1", jobs=[owner.job]))
    got = listen(attacker, 1.5)
    assert [m["type"] for m in got] == ["heartbeat"]
    assert got[0]["refused"] == [owner.job] and got[0]["unknown"] == []
    # A forged token is no better.
    attacker.send(header(type="heartbeat", jobs=[owner.job], tokens={owner.job: "A" * 43}))
    assert [m["type"] for m in listen(attacker, 1.0)] == ["heartbeat"]
    result = owner.outcome()  # the owner still gets every event and the result
    assert isinstance(result, ResultReply) and result.iterations == SLOW.iterations


def test_a_resubmit_of_another_clients_job_is_refused_and_leaks_nothing(daemon):
    owner = Waiting(daemon)
    with daemon.client() as thief:
        for token in (None, "B" * 43):  # the same id, shapes and settings: not enough
            with pytest.raises(DaemonError) as e:
                thief.submit(noise(seed=4), [noise(32, 32)], SLOW, job=owner.job, token=token)
            assert e.value.code == protocol.JOB_CONFLICT
            assert str(e.value) == f"job id {owner.job!r} is taken; use a new id"
        assert isinstance(owner.outcome(), ResultReply)
        # After the end too: the result is not handed out again to a stranger.
        with pytest.raises(DaemonError) as e:
            thief.submit(noise(seed=4), [noise(32, 32)], SLOW, job=owner.job)
        assert e.value.code == protocol.JOB_CONFLICT
        assert not thief._socket.poll(500)  # and nothing else came


def test_cancel_and_status_of_another_clients_job_need_its_token(daemon):
    owner = Waiting(daemon, ENDLESS)
    with daemon.client() as other:
        for ask in (other.cancel, other.status):
            with pytest.raises(DaemonError) as e:
                ask(owner.job)
            assert e.value.code == protocol.NOT_OWNER
        with pytest.raises(DaemonError) as e:
            other.cancel(owner.job, "C" * 43)
        assert e.value.code == protocol.NOT_OWNER
        assert other.status(owner.job, owner.token).state == "running"  # untouched
        assert other.cancel(owner.job, owner.token).job == owner.job  # the token is the proof
    error = owner.outcome()
    assert isinstance(error, DaemonError) and error.code == protocol.CANCELLED
    assert "is not job" in daemon.log_file.read_text()  # refusals are logged


def test_info_names_only_the_askers_jobs(daemon):
    with daemon.client() as owner, daemon.client() as other:
        job = owner.submit(noise(), [noise(32, 32)], ENDLESS)
        first_progress(owner, job)
        mine, theirs = owner.info(), other.info()
        owner.cancel(job)
    assert [j["mine"] for j in mine.queue if j["id"] == job] == [True]
    assert [w["job"] for w in mine.workers] == [job]  # the worker running it, named
    assert job not in str(theirs) and owner.token(job) not in str(theirs)
    theirs = theirs.queue
    assert any(j["state"] == "running" and j["id"] is None and not j["mine"] for j in theirs)


def test_a_reconnected_owner_takes_its_job_back_with_the_token(daemon):
    with daemon.client() as first:
        job = first.submit(noise(seed=5), [noise(32, 32)], SLOW)
        first_progress(first, job)
        token = first.token(job)
    # The first connection is gone (a crash, a new process); the job runs on meanwhile.
    with daemon.client() as second:
        second.attach(job, token)
        events = list(second.events(job))
    assert isinstance(events[-1], ResultReply) and events[-1].job == job


def test_tokens_are_checked_on_the_wire(daemon):
    for bad in ("short", "x" * 129, "bad token with spaces!!!", 42):
        reply = protocol.decode_reply(
            raw_exchange(daemon.endpoint, [header(type="cancel", job="j1", token=bad)])
        )
        assert reply.code == protocol.BAD_REQUEST and "22-128 characters" in reply.message
        assert str(bad) not in reply.message  # a secret is never echoed


@pytest.fixture(scope="module")
def curve_daemon(start_daemon, tmp_path_factory) -> tuple[Daemon, Path]:
    keys = tmp_path_factory.mktemp("keys")
    brushwork = [sys.executable, "-m", "brushwork", "keys", "generate", "--dir", str(keys)]
    subprocess.run(brushwork, check=True, capture_output=True)
    for name in ("alice", "mallory"):
        subprocess.run([*brushwork, "--client", name], check=True, capture_output=True)
    options = {
        "server_key": keys / "server.key",
        "client_key": keys / "clients" / "alice.key_secret",
    }
    d = start_daemon(
        "--device", "cpu", "--keys", str(keys), "--heartbeat-timeout", "3",
        "--curve", client_options=options,
    )  # fmt: skip
    return d, keys


def test_with_curve_a_job_stays_with_its_submitters_key(curve_daemon):
    d, keys = curve_daemon
    alice = {"client_key": keys / "clients" / "alice.key_secret"}
    mallory = {"client_key": keys / "clients" / "mallory.key_secret"}
    with d.client(**alice) as owner:
        job = owner.submit(noise(seed=6), [noise(32, 32)], SLOW)
        first_progress(owner, job)
        token = owner.token(job)
        # Another authorised client, even holding the token, is not the owner.
        with d.client(**mallory) as thief:
            with pytest.raises(DaemonError) as e:
                thief.cancel(job, token)
            assert e.value.code == protocol.NOT_OWNER
            thief.attach(job, token)
            with pytest.raises(DaemonError) as e:
                list(thief.events(job))
            assert e.value.code == protocol.NOT_OWNER
            assert job not in str(thief.info().queue)
        assert owner.status(job).state in ("running", "done")
    # Alice again, from a new connection with her key and the token: hers (the job ran on
    # meanwhile: its outcome comes again if it has ended).
    with d.client(**alice) as again:
        again.attach(job, token)
        result = again.wait(job)
    assert result.iterations == SLOW.iterations


def test_the_user_running_the_daemon_may_list_and_cancel_any_job(daemon):
    """`serve` leaves an operator token in a 0600 file in its state folder: `brushwork info`
    and `brushwork cancel` run by that user (same state folder) see and cancel every job."""
    token_file = xdg.operator_token_file(daemon.endpoint, daemon.state())
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    owner = Waiting(daemon, ENDLESS)
    as_operator = {**os.environ, "XDG_STATE_HOME": str(daemon.state().parent)}

    def brushwork(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "brushwork", *args, "--server", daemon.endpoint]
        return subprocess.run(command, capture_output=True, text=True, env=as_operator)

    listed = json.loads(brushwork("info", "--json").stdout)["queue"]
    assert {"id": owner.job, "mine": True} in [{k: j[k] for k in ("id", "mine")} for j in listed]
    done = brushwork("cancel", owner.job)
    assert done.returncode == 0 and done.stderr == f"brushwork: job {owner.job} cancelled\n"
    error = owner.outcome()
    assert isinstance(error, DaemonError) and error.code == protocol.CANCELLED
    with daemon.client() as other:  # the token takes no job's events
        other.attach(owner.job, daemon.operator_token())
        with pytest.raises(DaemonError) as e:
            list(other.events(owner.job))
        assert e.value.code == protocol.NOT_OWNER
