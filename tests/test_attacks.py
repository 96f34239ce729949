"""Well-formed requests with hostile contents, and half-sent frames, against a real daemon.

One daemon with small limits (`small_daemon`: 100,000 px an image, so frames of 1.6 MB at
most, a queue budget of 4 MiB, a 2 s heartbeat). The raw ZMTP peer and the submits come from
bench/attacks.py, whose full rounds (bench/reliability.py) report the memory figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from brushwork import protocol
from brushwork.client import DaemonError
from brushwork.settings import MAX_STYLES
from daemon_helpers import ENDLESS, TINY, noise, start_endless

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import attacks  # bench/ is not a package: found through sys.path

QUEUE_BYTES = 4 * 2**20


@pytest.mark.weights
def test_hello_and_info_show_the_queue_budget_and_the_frame_limit_within_it(small_daemon):
    with small_daemon.client() as client:
        hello, info = client.hello(), client.info()
    assert hello.max_queue_bytes == QUEUE_BYTES
    assert hello.max_message_bytes == 1_600_000  # an f32 RGBA image of 100,000 px
    assert info.queue_bytes == 0


@pytest.mark.weights
def test_a_job_with_more_style_images_than_the_cap_is_refused(small_daemon):
    with small_daemon.client() as client, pytest.raises(DaemonError) as e:
        client.submit(noise(), [noise(8, 8)] * (MAX_STYLES + 1), TINY)
    assert e.value.code == protocol.TOO_LARGE
    assert str(e.value) == f"a job blends at most {MAX_STYLES} style images; this one has 17"


@pytest.mark.weights
def test_every_frame_of_every_queued_job_counts_against_one_budget(small_daemon):
    style = noise(200, 200)  # 120 KB
    job_bytes = noise().nbytes + MAX_STYLES * style.nbytes
    with small_daemon.client() as client:
        running = start_endless(client)
        queued = []
        while True:
            try:
                queued.append(client.submit(noise(), [style] * MAX_STYLES, ENDLESS))
            except DaemonError as e:
                refusal = e
                break
        held = client.info().queue_bytes
        for job in [*queued, running]:
            client.cancel(job)
        # Within the budget, and full: the next one did not fit, but it will once jobs end.
        assert held <= QUEUE_BYTES < held + job_bytes
        assert len(queued) == (QUEUE_BYTES - noise().nbytes - noise(32, 32).nbytes) // job_bytes
        assert refusal.code == protocol.QUEUE_FULL
        assert str(refusal).startswith("the queue's memory is full (")
        assert str(refusal).endswith("; try again later")
        # One job larger than the whole budget never fits.
        with pytest.raises(DaemonError) as e:
            client.submit(noise(), [noise(300, 300, channels=4)] * MAX_STYLES, TINY)
        assert e.value.code == protocol.TOO_LARGE and "of images a job" in str(e.value)
        assert client.stylize(noise(), [noise(32, 32)], TINY).iterations == TINY.iterations
        assert client.info().queue_bytes == 0  # all given back


@pytest.mark.weights
def test_a_frame_announced_over_the_limit_is_dropped_at_once(small_daemon):
    peer = attacks.RawPeer(small_daemon.endpoint)
    try:
        peer.frame(b'{"v":1,"type":"submit"}', more=True)
        taken = peer.frame(bytes(8 << 20), size=10**9)
        assert peer.closed_within(2.0) is not None
    finally:
        peer.close()
    assert taken < 8 << 20  # it stopped reading


@pytest.mark.weights
def test_a_half_sent_frame_that_stalls_is_dropped_with_its_connection(small_daemon):
    """On main the daemon kept it until the client went away."""
    peer = attacks.RawPeer(small_daemon.endpoint)
    try:
        peer.frame(b'{"v":1,"type":"submit"}', more=True)
        peer.frame(bytes(800_000), size=1_600_000)
        # A ping every 2 s; no whole frame within 2 s of one (1.6 MB at 1 MB/s) and it goes.
        took = peer.closed_within(15.0)
    finally:
        peer.close()
    assert took is not None and took < 8.0
    with small_daemon.client() as client:
        assert client.hello().protocol == 1


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"style_layers": ["conv1_1"] * 80_000}, "style_layers names 80000 layers"),
        (
            {"style_layers": ["conv1_1", "conv2_1", "conv3_1"] * 166, "style_layer_falloff": 8},
            "style_layers names 498 layers",
        ),
        ({"style_layers": ["conv1_1", "conv1_1"]}, "style_layers names conv1_1 2 times"),
        ({"style_layers": ["conv9_9"]}, "style_layers must be one of conv1_1"),
        ({"style_blend": [1.0] * 17}, "style_blend has 17 values"),
    ],
)
@pytest.mark.weights
def test_settings_that_would_stall_a_worker_are_refused_at_once(small_daemon, settings, field):
    frames = attacks.submit_header("hostile", {"size": 48, **settings}, [noise(), noise(32, 32)])
    reply, seconds = attacks.exchange(small_daemon.endpoint, frames)
    assert reply["code"] == protocol.BAD_SETTINGS
    assert reply["message"].startswith(f"bad settings: {field}")
    assert "\n" not in reply["message"] and len(reply["message"]) < 300
    assert seconds < 2.0


@pytest.mark.weights
def test_a_huge_type_is_neither_echoed_nor_logged_whole_and_the_log_keeps_its_head(small_daemon):
    before = small_daemon.log_file.stat().st_size
    message = json.dumps({"v": 1, "type": "x" * 900_000}).encode()
    replies = [attacks.exchange(small_daemon.endpoint, [message])[0] for _ in range(30)]
    assert {r["code"] for r in replies} == {protocol.UNKNOWN_TYPE}
    assert max(len(r["message"]) for r in replies) < 300
    assert "... (900,002 bytes)" in replies[0]["message"]
    log = small_daemon.log_file.read_text()
    assert small_daemon.log_file.stat().st_size - before < 10_000  # at most 10 such lines a minute
    assert max(len(line) for line in log.splitlines()) < 500
    assert "serving on tcp://127.0.0.1" in log


@pytest.mark.weights
def test_exact_pixel_counts_follow_rounded_ones_that_read_alike(small_daemon):
    with small_daemon.client() as client, pytest.raises(DaemonError) as e:
        client.submit(noise(300, 400), [noise(32, 32)], TINY)
    assert str(e.value).endswith(
        "is 0.1 Mpx; the daemon at " + small_daemon.endpoint + " takes at most 0.1 Mpx "
        "(120,000 px, over the limit of 100,000)"
    )


@pytest.mark.weights
def test_info_shows_another_clients_job_by_its_state_and_position_only(small_daemon):
    with small_daemon.client() as owner, small_daemon.client() as other:
        job = start_endless(owner)
        [theirs] = [j for j in other.info().queue if j["state"] == "running"]
        [mine] = [j for j in owner.info().queue if j["id"] == job]
        owner.cancel(job)
    assert theirs == {
        **dict.fromkeys(mine, None),
        "mine": False,
        "state": "running",
        "position": 0,
    }
    assert mine["iteration"] >= 2 and mine["started"] is not None


def test_the_rotated_log_starts_with_the_start_up_line(tmp_path):
    import logging

    from brushwork.commands.serve import _PrivateLog

    handler = _PrivateLog(tmp_path / "d.log", maxBytes=100, backupCount=2)
    record = logging.LogRecord("t", logging.INFO, "", 0, "serving on %s", ("here",), None)
    record.keep = True
    handler.emit(record)
    for n in range(40):
        handler.emit(logging.LogRecord("t", logging.WARNING, "", 0, "bad %d", (n,), None))
    handler.close()
    for name in ("d.log", "d.log.1", "d.log.2"):
        assert (tmp_path / name).read_text().startswith("serving on here\n")


def test_a_bad_server_key_file_is_a_bad_option(tmp_path):
    key = tmp_path / "server.key"
    key.write_text("not a key")
    command = [sys.executable, "-m", "brushwork", "info", "--server", "tcp://127.0.0.1:9"]
    done = subprocess.run(
        [*command, "--server-key", str(key)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"brushwork: error: {key}: not a CURVE public key file")
