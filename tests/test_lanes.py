"""The preview lane: previews start before every full job, a running full job pauses for
them at a step and then makes the picture it makes alone, and a newer preview cancels only
its own client's older ones."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from brushwork import protocol
from brushwork.client import Client, DaemonError
from brushwork.jobs import Caller, Job, JobQueue
from brushwork.protocol import PREVIEW, ProgressReply, ResultReply
from daemon_helpers import TINY, noise

A, B = Caller((0, b"a")), Caller((0, b"b"))


def job(name: str, lane: str = protocol.FULL, owner: Caller = A) -> Job:
    return Job(id=name, owner=owner.peer, request=None, fingerprint=name, total=4, lane=lane)


def test_previews_start_first_and_a_preempting_queue_counts_only_previews_ahead():
    q = JobQueue(limit=8, preempts=True)
    full, f2, p1, p2 = job("full"), job("f2"), job("p1", PREVIEW), job("p2", PREVIEW)
    assert q.put(full) == 0 and q.take() is full
    assert [q.put(f2), q.put(p1), q.put(p2)] == [1, 0, 1]
    assert q.position(f2) == 3  # after both previews and the running job
    assert (
        q.take_preview(lambda j: True) is p1 and q.position(p2) == 1
    )  # behind the running preview
    q.done(p1)
    assert q.take_preview(lambda j: True) is p2 and q.take_preview(lambda j: True) is None
    q.done(p2)
    q.done(full)
    assert q.take() is f2
    p3 = job("p3", PREVIEW)
    q.put(p3)
    assert q.take_preview(lambda j: False) is None and q.position(p3) == 0  # too large to pause


def test_without_preemption_previews_jump_the_queue_but_wait_for_the_running_job():
    q = JobQueue(limit=8)
    full, f2, p1 = job("full"), job("f2"), job("p1", PREVIEW)
    q.put(full)
    q.take()
    q.put(f2)
    assert q.put(p1) == 1 and q.position(f2) == 2
    q.done(full)
    assert q.take() is p1


def test_a_new_preview_supersedes_only_its_owners_previews():
    q = JobQueue(limit=8, preempts=True)
    mine, theirs, full = job("mine", PREVIEW), job("theirs", PREVIEW, owner=B), job("full")
    for j in (mine, theirs, full):
        q.put(j)
    new = job("new", PREVIEW)
    q.put(new)
    assert q.superseded(new, A, None) == [mine]
    # The same token from another connection proves the same owner.
    assert q.superseded(new, Caller((1, b"z")), mine.token) == [mine]
    assert q.superseded(new, Caller((1, b"z")), None) == []


# --- On a real daemon -------------------------------------------------------------------------

FULL_JOB = TINY.replace(size=64, iterations=60, seed=5)
PREVIEW_JOB = TINY.replace(size=32, iterations=2)


class Seen:
    """Every job event a client receives (a wrapper around its socket reads)."""

    def __init__(self, client: Client) -> None:
        self.jobs: set[str] = set()
        receive = client._receive

        def recording(timeout: float):
            message = receive(timeout)
            if getattr(message, "job", None):
                self.jobs.add(message.job)
            return message

        client._receive = recording


@pytest.mark.weights
def test_a_preview_runs_inside_a_full_job_which_still_makes_its_own_picture(daemon):
    content, style = noise(48, 64, seed=1), noise(32, 32, seed=2)
    with daemon.client() as artist, daemon.client() as other:
        seen_artist, seen_other = Seen(artist), Seen(other)
        full = artist.submit(content, [style], FULL_JOB)
        for event in artist.events(full):  # running
            if isinstance(event, ProgressReply):
                break
        outcome: dict[str, ResultReply] = {}
        waiter = threading.Thread(target=lambda: outcome.setdefault("full", artist.wait(full)))
        # Another client's preview, then two of its own: the newer supersedes the older.
        first = other.submit(noise(seed=3), [style], PREVIEW_JOB, lane=PREVIEW)
        second = other.submit(noise(seed=4), [style], PREVIEW_JOB, lane=PREVIEW)
        waiter.start()
        with pytest.raises(DaemonError, match="superseded by a newer preview") as cancelled:
            other.wait(first)
        assert cancelled.value.code == protocol.CANCELLED
        preview = other.wait(second)
        assert "full" not in outcome
        assert any(j["state"] == "running" for j in other.info().queue)  # the full job
        waiter.join(120)
        result = outcome["full"]
        assert preview.image.width == 32 and result.iterations == FULL_JOB.iterations
        assert f"job {full} pauses for preview {second}" in daemon.log_file.read_text()
        # The same job alone, on an idle daemon: the same picture to the bit.
        alone = artist.stylize(content, [style], FULL_JOB)
        assert bytes(alone.image.data) == bytes(result.image.data)
    assert seen_artist.jobs == {full, alone.job}
    assert seen_other.jobs == {first, second}


@pytest.mark.weights
def test_the_preview_bench_runs_small(weights_file):
    """bench/preview.py --dry-run: its own daemon, tiny sizes, the table printed."""
    bench = Path(__file__).resolve().parents[1] / "bench" / "preview.py"
    r = subprocess.run(
        [sys.executable, str(bench), "--dry-run"], capture_output=True, text=True,
        timeout=600, env={**os.environ, "BRUSHWORK_WEIGHTS": str(weights_file)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| idle daemon |" in r.stdout and "| while a 64 px job runs |" in r.stdout
