"""The job queue between the socket thread and the workers: order and positions."""

from __future__ import annotations

import threading
import time

from brushwork.jobs import Job, JobQueue
from daemon_helpers import TINY


def job(name: str) -> Job:
    return Job(id=name, owner=(0, b"c"), request=None, fingerprint=name, total=TINY.iterations)


def test_positions_count_the_jobs_that_must_end_first_with_one_worker():
    q = JobQueue(limit=8)
    a, b, c = job("a"), job("b"), job("c")
    assert q.put(a) == 0
    assert q.take() is a
    assert [q.put(b), q.put(c)] == [1, 2]
    assert [q.position(x) for x in (a, b, c)] == [0, 1, 2]
    q.done(a)
    assert [q.position(x) for x in (a, b, c)] == [None, 0, 1]


def test_positions_account_for_every_worker():
    q = JobQueue(limit=8, workers=3)
    jobs = [job(str(i)) for i in range(6)]
    assert [q.put(j) for j in jobs] == [0, 0, 0, 1, 2, 3]
    assert [q.take() for _ in range(3)] == jobs[:3]
    assert q.running == jobs[:3]
    assert [q.position(j) for j in jobs] == [0, 0, 0, 1, 2, 3]
    q.done(jobs[1])
    assert [q.position(j) for j in jobs[3:]] == [0, 1, 2]
    assert q.take() is jobs[3]  # the oldest first


def test_take_blocks_until_a_job_comes_and_close_wakes_every_worker():
    q = JobQueue(limit=8, workers=2)
    taken: list[Job | None] = []
    threads = [threading.Thread(target=lambda: taken.append(q.take())) for _ in range(2)]
    for t in threads:
        t.start()
    q.put(first := job("first"))
    deadline = time.monotonic() + 5
    while not q.running and time.monotonic() < deadline:  # one of them takes it
        time.sleep(0.01)
    assert q.close() == []
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert sorted(taken, key=str) == sorted([first, None], key=str)
