"""The daemon as a real subprocess on loopback, with the real weights and tiny images."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brushwork import pixels, protocol
from brushwork.client import (
    HEARTBEAT_INTERVAL,
    Client,
    DaemonError,
    HandshakeFailed,
    NoDaemon,
    new_job_id,
)
from brushwork.protocol import ErrorReply, PreviewReply, ProgressReply, ResultReply
from daemon_helpers import (
    ENDLESS,
    TINY,
    cancel_a_running_job,
    header,
    kill_a_client_mid_job,
    noise,
    raw_exchange,
    run_at_once,
    start_endless,
    wait_for_state,
)
from fixtures_daemon import free_port, serve_command

pytestmark = pytest.mark.weights


def test_hello_and_info_describe_the_daemon(daemon):
    with daemon.client() as client:
        hello = client.hello()
        info = client.info()
    assert hello.protocol == protocol.PROTOCOL_VERSION
    assert hello.device == "cpu"
    assert (hello.max_pixels, hello.max_queue, hello.heartbeat_timeout) == (10**6, 4, 2.0)
    assert info.weights.endswith(".pth")
    assert info.memory["total"] > 0
    assert all({"id", "state"} <= set(job) for job in info.queue)


def test_a_job_returns_its_result_in_the_content_dtype_with_alpha_and_previews(daemon):
    rng = np.random.default_rng(3)
    content = pixels.from_array(rng.integers(0, 65536, (40, 56, 4), dtype=np.uint16))
    events = []
    with daemon.client() as client:
        job = client.submit(content, [noise(32, 32)], TINY, preview_every=2, preview_size=16)
        events = list(client.events(job))
    progress = [e.iteration for e in events if isinstance(e, ProgressReply)]
    previews = [e for e in events if isinstance(e, PreviewReply)]
    result = events[-1]
    assert progress == [1, 2, 3, 4]
    assert [p.iteration for p in previews] == [2, 4]
    assert all(p.image.dtype == "u8" and p.image.channels == 3 for p in previews)
    assert all(max(p.image.width, p.image.height) <= 16 for p in previews)
    assert isinstance(result, ResultReply)
    assert (result.image.width, result.image.height) == (40, 29)
    assert (result.image.channels, result.image.dtype) == (4, "u16")
    assert result.settings == TINY and result.iterations == 4
    assert set(result.losses) == {"content", "style", "tv", "total"}
    alpha = pixels.to_array(result.image)[..., 3]
    assert alpha.std() > 1000  # the random alpha came through, resized, not flattened


def test_concurrent_clients_are_served_one_at_a_time_in_order(daemon):
    runs = run_at_once(daemon.endpoint, TINY, 3, stagger=0.2)
    spans = sorted((r["started"], r["finished"], r["id"]) for r in runs)
    assert [s[2] for s in spans] == [r["id"] for r in runs]  # first come, first served
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert start >= end  # never two at once


def test_cancel_stops_a_running_job_within_an_iteration(daemon):
    error, late, status = cancel_a_running_job(daemon.endpoint)
    assert error.code == protocol.CANCELLED and "cancelled by request" in error.message
    assert len(late) <= 2  # the iteration under way, and one racing the cancel
    assert status.state == "cancelled" and status.iteration < 10


def test_cancel_of_a_queued_job_answers_its_owner_at_once(daemon):
    with daemon.client() as first, daemon.client() as second:
        running = start_endless(first)
        queued = second.submit(noise(), [noise(32, 32)], TINY)
        assert second.status(queued).position == 1
        assert first.cancel(queued, second.token(queued)).state == "cancelled"
        with pytest.raises(DaemonError, match="cancelled"):
            list(second.events(queued))
        first.cancel(running)
        wait_for_state(first, running, "cancelled")


def test_a_set_cancel_event_gives_up_on_a_silent_queued_job_and_cancels_it(daemon):
    """What the plug-in's Cancel button does: the daemon says nothing about a queued job,
    yet stylize() notices the event within a heartbeat interval and cancels the job."""
    with daemon.client() as first, daemon.client() as second:
        running = start_endless(first)
        cancel = threading.Event()
        job = new_job_id()
        timer = threading.Timer(0.5, cancel.set)
        timer.start()
        started = time.monotonic()
        with pytest.raises(DaemonError, match="cancelled") as e:
            second.stylize(noise(), [noise(32, 32)], TINY, cancel=cancel, job=job)
        took = time.monotonic() - started
        assert e.value.job is None  # given up here, not ended by the daemon
        assert took < 0.5 + HEARTBEAT_INTERVAL + 1.0
        status = wait_for_state(second, job, "cancelled")
        assert status.iteration == 0
        # Set before the submit: nothing is sent.
        with pytest.raises(DaemonError, match="cancelled"):
            second.stylize(noise(), [noise(32, 32)], TINY, cancel=cancel, job=job + "-2")
        with pytest.raises(DaemonError) as unknown:
            second.status(job + "-2")
        assert unknown.value.code == protocol.UNKNOWN_JOB
        first.cancel(running)
        wait_for_state(first, running, "cancelled")


def test_a_killed_clients_job_is_cancelled_within_seconds(daemon):
    took, status, error = kill_a_client_mid_job(daemon.endpoint)
    # Heartbeat timeout 2 s, then a sweep (every 0.5 s) and one iteration; slack for CI.
    assert took < 2.0 + 3.0
    assert status.iteration < ENDLESS.iterations
    assert "client went away" in error
    assert "went away" in daemon.log_file.read_text()


def test_resubmitting_a_job_id_never_runs_it_twice(daemon):
    with daemon.client() as first, daemon.client() as second:
        job = start_endless(first)
        again = second.submit(noise(), [noise(32, 32)], ENDLESS, job=job, token=first.token(job))
        assert again == job
        assert [j["id"] for j in second.info().queue].count(job) == 1
        events = second.events(job)  # the events follow whoever resubmitted
        assert isinstance(next(events), ProgressReply)
        second.cancel(job)
        wait_for_state(second, job, "cancelled")

        done = first.stylize(noise(seed=7), [noise(32, 32)], TINY)
        token = first.token(done.job)
        second.submit(noise(seed=7), [noise(32, 32)], TINY, job=done.job, token=token)
        replay = list(second.events(done.job))
        assert len(replay) == 1 and bytes(replay[0].image.data) == bytes(done.image.data)
        with pytest.raises(DaemonError) as e:
            second.submit(noise(), [noise(32, 32)], TINY.replace(iterations=5), job=done.job)
        assert e.value.code == protocol.JOB_CONFLICT


def test_two_clients_waiting_on_one_job_both_get_its_end(daemon):
    settings = TINY.replace(iterations=30)
    ends: dict[str, object] = {}
    with daemon.client() as first, daemon.client() as second:
        job = first.submit(noise(seed=9), [noise(32, 32)], settings)
        second.submit(noise(seed=9), [noise(32, 32)], settings, job=job, token=first.token(job))

        def wait(name: str, client: Client) -> None:
            ends[name] = list(client.events(job))[-1]

        threads = [threading.Thread(target=wait, args=p) for p in ((1, first), (2, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert {type(e) for e in ends.values()} == {ResultReply}
    assert bytes(ends[1].image.data) == bytes(ends[2].image.data)


def test_limits_are_refused_with_clear_errors(daemon):
    big = noise(1000, 1001)
    with daemon.client() as client:
        with pytest.raises(DaemonError, match=r"1\.0 Mpx; the daemon .* takes at most 1\.0 Mpx"):
            client.submit(big, [noise(32, 32)], TINY)  # refused before sending
        with pytest.raises(DaemonError, match="output would be 2000x1429") as e:
            client.submit(noise(), [noise(32, 32)], TINY.replace(size=2000))
        assert e.value.code == protocol.TOO_LARGE

        jobs = [start_endless(client)]
        jobs += [client.submit(noise(), [noise(32, 32)], ENDLESS) for _ in range(4)]
        with pytest.raises(DaemonError, match=r"queue is full \(4 jobs waiting\)") as e:
            client.submit(noise(), [noise(32, 32)], TINY)
        assert e.value.code == protocol.QUEUE_FULL
        for job in reversed(jobs):
            client.cancel(job)
        wait_for_state(client, jobs[0], "cancelled")
    # Past the client's own check: the daemon refuses it too.
    request = protocol.SubmitRequest(job="big", settings=TINY, content=big, styles=[noise(8, 8)])
    reply = protocol.decode_reply(raw_exchange(daemon.endpoint, protocol.encode(request)))
    assert isinstance(reply, ErrorReply) and reply.code == protocol.TOO_LARGE


BAD_MESSAGES = [
    ([b"\x00\xff garbage"], protocol.BAD_REQUEST),
    ([b'{"v": 99, "type": "hello"}'], protocol.UNSUPPORTED_VERSION),
    ([header(type="launch")], protocol.UNKNOWN_TYPE),
    ([header(type="status", job="nope")], protocol.UNKNOWN_JOB),
    ([header(type="cancel", job=" ")], protocol.BAD_REQUEST),
    ([header(type="submit", job="s", settings={"size": "big"})], protocol.BAD_SETTINGS),
    (
        [
            header(
                type="submit",
                job="s",
                settings=TINY.to_dict(),
                frames=[
                    {"role": "content", "width": 8, "height": 8, "channels": 3, "dtype": "u8"},
                    {"role": "style", "width": 8, "height": 8, "channels": 3, "dtype": "u8"},
                ],
            ),
            b"\0" * 191,
            b"\0" * 192,
        ],
        protocol.BAD_REQUEST,
    ),
]


@pytest.mark.parametrize(("frames", "code"), BAD_MESSAGES)
def test_malformed_messages_get_an_error_and_the_daemon_keeps_serving(daemon, frames, code):
    reply = protocol.decode_reply(raw_exchange(daemon.endpoint, frames))
    assert isinstance(reply, ErrorReply)
    assert reply.code == code
    assert reply.message and "\n" not in reply.message
    with daemon.client() as client:
        assert client.hello().protocol == 1


def test_a_job_the_engine_refuses_fails_alone(daemon):
    with daemon.client() as client:
        with pytest.raises(DaemonError) as e:
            client.stylize(noise(), [noise(32, 32)], TINY.replace(init="image"))
        assert e.value.code == protocol.BAD_INPUT and "init image" in str(e.value)
        assert client.stylize(noise(), [noise(32, 32)], TINY).iterations == 4


def test_non_zmtp_bytes_on_the_port_do_not_hurt(daemon):
    port = int(daemon.endpoint.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 64)
    with daemon.client() as client:
        assert client.hello().protocol == 1


_frames = st.lists(st.binary(max_size=48), max_size=3)
_fields = st.dictionaries(
    st.sampled_from(["job", "jobs", "ref", "settings", "frames", "preview_every", "output_dtype"]),
    st.none() | st.integers() | st.text(max_size=70) | st.lists(st.text(max_size=5), max_size=3),
    max_size=4,
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from([*protocol.REQUESTS, "result", "", "x" * 100]),
    version=st.sampled_from([1, 1, 1, 0, "1"]),
    fields=_fields,
    frames=_frames,
    junk=st.none() | st.binary(max_size=64),
)
def test_fuzzed_messages_never_take_the_daemon_down(daemon, kind, version, fields, frames, junk):
    head = junk if junk is not None else json.dumps({**fields, "v": version, "type": kind}).encode()
    reply = protocol.decode_reply(raw_exchange(daemon.endpoint, [head, *frames]))
    assert reply.TYPE in protocol.REPLIES  # an answer of the protocol, usually an error
    assert daemon.process.poll() is None


def test_the_daemon_still_answers_after_the_fuzzing(daemon):
    with daemon.client() as client:
        assert client.stylize(noise(), [noise(32, 32)], TINY).iterations == 4


def test_out_of_memory_fails_that_job_and_the_daemon_lives(start_daemon):
    # 6 GiB of address space: the daemon (about 4 GiB mapped) loads, a 2048 px job cannot.
    d = start_daemon("--device", "cpu", memory_limit=6 * 2**30)
    with d.client(timeout=30) as client:
        with pytest.raises(DaemonError) as e:
            client.stylize(noise(), [noise(32, 32)], TINY.replace(size=2048))
        assert e.value.code == protocol.OUT_OF_MEMORY
        assert str(e.value).startswith("out of memory on cpu for a 2048x1463 output")
        assert client.stylize(noise(), [noise(32, 32)], TINY).iterations == 4
    assert d.stop() == 0


def test_sigterm_answers_queued_clients_cancels_the_running_job_and_exits_0(start_daemon):
    d = start_daemon("--device", "cpu")
    with d.client() as first, d.client() as second:
        running = start_endless(first)
        queued = second.submit(noise(), [noise(32, 32)], TINY)
        d.process.send_signal(signal.SIGTERM)
        with pytest.raises(DaemonError) as e:
            list(second.events(queued))
        assert e.value.code == protocol.SHUTTING_DOWN
        with pytest.raises(DaemonError) as e:
            list(first.events(running))
        assert e.value.code == protocol.CANCELLED and "shutting down" in str(e.value)
    assert d.stop(timeout=15) == 0
    with Client(d.endpoint, timeout=0.5) as client, pytest.raises(NoDaemon):
        client.hello()


def test_binding_beyond_loopback_without_keys_is_refused(weights_file, tmp_path):
    endpoint = f"tcp://0.0.0.0:{free_port()}"
    log = str(tmp_path / "daemon.log")
    command = serve_command(
        weights_file, "--bind", endpoint, "--keys", str(tmp_path), "--log-file", log
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("brushwork: error: binding tcp://0.0.0.0:")
    assert "`brushwork keys generate`" in lines[-1]


def test_curve_daemon_only_lets_authorized_clients_in(start_daemon, tmp_path):
    keys = tmp_path / "keys"
    brushwork = [sys.executable, "-m", "brushwork", "keys", "generate", "--dir", str(keys)]
    subprocess.run(brushwork, check=True, capture_output=True)
    subprocess.run([*brushwork, "--client", "laptop"], check=True, capture_output=True)
    allowed = {
        "server_key": keys / "server.key",
        "client_key": keys / "clients" / "laptop.key_secret",
    }
    d = start_daemon("--device", "cpu", "--keys", str(keys), "--curve", client_options=allowed)
    with d.client() as client:
        assert client.stylize(noise(), [noise(32, 32)], TINY).iterations == 4
    # Each refusal says what is wrong, not "no daemon": no key, a key not admitted, the
    # wrong server key.
    strangers = [
        ({}, "requires CURVE: give its public key (its server.key) with --server-key"),
        ({"server_key": keys / "server.key"}, "refused this client's CURVE key: it admits only"),
        (
            {"server_key": zmq.curve_keypair()[0].decode(), "client_key": allowed["client_key"]},
            "did not complete the CURVE handshake: is --server-key this daemon's public key?",
        ),
    ]
    for options, message in strangers:
        with Client(d.endpoint, timeout=1.0, **options) as stranger:
            with pytest.raises(HandshakeFailed) as e:
                stranger.hello()
            assert str(e.value).startswith(f"the daemon at {d.endpoint} {message}")
    log = d.log_file.read_text()
    assert "refused a CURVE client: its key" in log  # the key not admitted, by name
    # Which side gives up first varies, and one kind is logged once per 30 s: at least the
    # refused key and one of the other two.
    where = f"refused a handshake on {d.endpoint}: the client"
    refusals = {line.split(where, 1)[1] for line in log.splitlines() if where in line}
    assert "'s CURVE key is not authorized" in refusals and len(refusals) >= 2, refusals
    assert d.stop() == 0


def test_a_second_daemon_on_a_busy_port_says_so(daemon, weights_file, tmp_path):
    done = subprocess.run(
        serve_command(weights_file, "--bind", daemon.endpoint, "--log-file", str(tmp_path / "l")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"brushwork: error: cannot bind {daemon.endpoint}: Address already in use "
        "(is a daemon already running? try `brushwork info`)"
    )


@pytest.mark.parametrize(("shape", "size"), [((1, 1), 0), ((16, 16), 16), ((1, 1500), 0)])
def test_degenerate_images_come_back_stylized_at_their_size(daemon, shape, size):
    settings = TINY.replace(size=size, style_scale=0.25)  # a 1500x1500 style is over 1 Mpx
    with daemon.client() as client:
        result = client.stylize(noise(*shape), [noise(32, 32)], settings)
    assert (result.image.height, result.image.width) == shape


def test_every_image_a_job_holds_counts_against_the_limits(start_daemon):
    d = start_daemon("--device", "cpu", "--max-pixels", "4000000", "--max-job-memory", "320M")
    with d.client(timeout=30) as client:
        assert client.hello().max_job_bytes == 320 * 2**20
        # Small inputs whose style the engine would blow up to the output's long side.
        for content, resized in [(noise(32, 3000), "3000x3000 = 9.0"), (noise(1, 65536), "65536")]:
            with pytest.raises(DaemonError) as e:
                client.submit(content, [noise(32, 32)], TINY.replace(size=0))
            assert e.value.code == protocol.TOO_LARGE
            assert f"the 32x32 style image would be resized to {resized}" in str(e.value)
        # Within the pixel limit, over the memory budget: refused with the numbers.
        with pytest.raises(DaemonError) as e:
            client.submit(noise(), [noise(32, 32)], TINY.replace(size=1500))
        assert e.value.code == protocol.TOO_LARGE
        assert re.fullmatch(
            r"this job would need about 0\.\d GB at its peak \(a 1500x1071 output, style "
            r"1500x1500, tiles of \d+ px\); this daemon allows 0\.3 GB a job \(lower the size\)",
            str(e.value),
        ), str(e.value)
        # A job that fits the budget only in tiles runs in tiles (more steps than iterations).
        result = client.stylize(noise(), [noise(32, 32)], TINY.replace(size=600))
        assert (result.image.width, result.image.height) == (600, 429)
        assert result.iterations > TINY.iterations
    assert d.stop() == 0


def test_ipc_sockets_are_this_users_only_unless_asked(tmp_path):
    from brushwork.server import Limits, Server

    old = os.umask(0o022)
    try:
        for mode in (None, 0o660):
            path = tmp_path / f"{mode}.sock"
            options = {} if mode is None else {"socket_mode": mode}
            server = Server([f"ipc://{path}"], Limits(10**6, 10**9), **options)
            try:
                assert stat.S_IMODE(path.stat().st_mode) == (mode or 0o600)
            finally:
                server.close()
    finally:
        os.umask(old)


def test_the_daemons_log_is_not_world_readable(daemon, tmp_path):
    from brushwork.commands.serve import _PrivateLog

    assert stat.S_IMODE(daemon.log_file.stat().st_mode) == 0o600
    log = tmp_path / "rotating.log"
    handler = _PrivateLog(log, maxBytes=64, backupCount=1)  # rotation makes a new file
    try:
        for n in range(10):
            handler.emit(logging.LogRecord("t", logging.INFO, "", 0, "line %d", (n,), None))
    finally:
        handler.close()
    assert [stat.S_IMODE(p.stat().st_mode) for p in sorted(tmp_path.iterdir())] == [0o600] * 2
