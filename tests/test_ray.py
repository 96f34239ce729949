"""`brushwork serve --ray auto`: a real local Ray cluster on loopback, two CPU actors with the
real weights, tiny images. Every Ray instance a test starts has a folder of its own
(RAY_TMPDIR) and a marker in its environment, so the tests can see that none of its
processes is left behind."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushwork import pixels, protocol
from brushwork.client import Client, DaemonError
from brushwork.clip import Clip, Segment, plan
from brushwork.protocol import PreviewReply, ProgressReply, ResultReply
from clip_helpers import CLIP, panned_clip, reader, style, warping_error
from daemon_helpers import (
    ENDLESS,
    TINY,
    cancel_a_running_job,
    kill_a_client_mid_job,
    noise,
    run_at_once,
    start_endless,
    wait_for_state,
)
from fixtures_daemon import Daemon

pytestmark = pytest.mark.weights

MARKER = "BRUSHWORK_TEST_RAY"
RAY_SERVE = ("--device", "cpu", "--ray", "auto", "--workers", "2", "--heartbeat-timeout", "2")
STARTED = 300.0  # seconds for Ray and two actors to start on a busy 2-core machine


@dataclass
class RayDaemon:
    daemon: Daemon
    marker: str  # in the environment of the daemon and of every process it starts
    folder: Path  # RAY_TMPDIR: its Ray instance's sockets and logs

    def processes(self) -> list[int]:
        """The daemon and every process of its Ray instance: the ones that keep the marker
        in their environment, and the ones that retitle themselves (`ray::...`, which
        overwrites it) by the log files they keep open in the instance's folder."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):  # gone meanwhile
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                files = [_link(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
                if f"{MARKER}={self.marker}".encode() in environ or any(
                    f.startswith(f"{self.folder}/") for f in files
                ):
                    found.append(int(entry))
        return found

    def wait_until_gone(self, timeout: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


@contextlib.contextmanager
def ray_daemon_started(start_daemon: Callable[..., Daemon], *args: str) -> Iterator[RayDaemon]:
    """A daemon on two Ray workers; on leaving, its Ray folder is removed (the test stops the
    daemon and checks its processes)."""
    folder = Path(tempfile.mkdtemp(prefix="bw-ray-"))  # short: Ray's socket paths live here
    marker = uuid.uuid4().hex
    try:
        env = {MARKER: marker, "RAY_TMPDIR": str(folder)}
        daemon = start_daemon(*RAY_SERVE, *args, env=env, timeout=STARTED)
        yield RayDaemon(daemon, marker, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def listening_addresses(pids: list[int]) -> list[IPv4Address | IPv6Address]:
    """Local addresses of the TCP sockets these processes listen on."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):  # a process or a descriptor gone meanwhile
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    inodes.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and f"socket:[{inode}]" in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(local.split(":")[0])  # 32-bit words in host order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                addresses.append(ip_address(words))
    return addresses


def is_loopback(address: IPv4Address | IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@pytest.fixture(scope="module")
def ray_daemon(start_daemon: Callable[..., Daemon]) -> Iterator[Daemon]:
    """One daemon on two Ray actors for the tests below (stopped, and checked for leftover
    Ray processes, at the end of the module)."""
    with ray_daemon_started(start_daemon, "--max-pixels", "1000000") as ray:
        yield ray.daemon
        assert ray.daemon.stop() == 0
        assert ray.wait_until_gone() == []


def wait_for_workers(client: Client, check: Callable[[list[dict]], bool], timeout=STARTED):
    deadline = time.monotonic() + timeout
    while not check(workers := client.info().workers):
        assert time.monotonic() < deadline, workers
        time.sleep(0.2)
    return workers


def test_info_lists_two_ray_workers_in_other_processes(ray_daemon):
    with ray_daemon.client() as client:
        hello = client.hello()
        info = client.info()
    assert hello.device == "ray: 2 x cpu"
    assert [w["id"] for w in info.workers] == [0, 1]
    for worker in info.workers:
        assert worker["device"] == "cpu" and worker["state"] in ("idle", "busy")
        assert worker["pid"] != ray_daemon.process.pid
        assert worker["address"] == "127.0.0.1" and worker["threads"] == 1


def test_two_jobs_run_at_once_on_different_workers(ray_daemon):
    first, second = run_at_once(ray_daemon.endpoint, TINY.replace(iterations=40), 2)
    assert {first["worker"], second["worker"]} == {0, 1}
    assert first["started"] < second["finished"] and second["started"] < first["finished"]


def test_positions_count_both_workers(ray_daemon):
    with ray_daemon.client() as client:
        running = [start_endless(client), start_endless(client)]
        queued = [client.submit(noise(), [noise(32, 32)], TINY) for _ in range(2)]
        assert [client.status(j).position for j in running + queued] == [0, 0, 1, 2]
        for job in reversed(queued + running):
            client.cancel(job)
        for job in running:
            wait_for_state(client, job, "cancelled")


def test_a_seeded_job_gives_the_local_paths_pixels_and_events(ray_daemon, start_daemon):
    settings = TINY.replace(init="noise", seed=7, iterations=6, scales=2, min_scale=32, size=96)

    def run(daemon: Daemon) -> tuple[ResultReply, list[ProgressReply], list[PreviewReply]]:
        events: list[ProgressReply | PreviewReply] = []
        with daemon.client() as client:
            result = client.stylize(
                noise(seed=5), [noise(32, 32, seed=6)], settings, on_event=events.append,
                preview_every=2, preview_size=16,
            )  # fmt: skip
        # Everything a progress message holds, but the job id and the times (fraction is
        # elapsed / (elapsed + eta)).
        progress = [
            replace(e, job="", elapsed=0, eta=None, fraction=None)
            for e in events
            if type(e) is ProgressReply
        ]
        return result, progress, [e for e in events if isinstance(e, PreviewReply)]

    on_ray, ray_progress, ray_previews = run(ray_daemon)
    with ray_daemon.client() as client:
        threads = client.info().workers[0]["threads"]
    # The same CPU threads: their number changes the order of float sums, hence the pixels.
    local = start_daemon("--device", "cpu", env={"OMP_NUM_THREADS": str(threads)})
    at_home, home_progress, home_previews = run(local)
    assert local.stop() == 0
    assert bytes(on_ray.image.data) == bytes(at_home.image.data)
    assert on_ray.losses == at_home.losses
    assert ray_progress == home_progress and len(ray_progress) == 5  # 4 + 1 (light) steps
    assert [p.level for p in ray_progress] == [1, 1, 1, 1, 2]  # fields beyond the basics too
    assert [(p.iteration, bytes(p.image.data)) for p in ray_previews] == [
        (p.iteration, bytes(p.image.data)) for p in home_previews
    ]


def test_a_style_goes_to_the_cluster_once(ray_daemon):
    style = noise(32, 32, seed=11)
    sent = re.compile(r"style [0-9a-f]{32} \(32x32\) sent to the Ray cluster")
    before = len(sent.findall(ray_daemon.log_file.read_text()))
    with ray_daemon.client() as client:
        jobs = [client.submit(noise(seed=s), [style], TINY) for s in range(4)]
        for job in jobs:
            assert isinstance(list(client.events(job))[-1], ResultReply)
        ran_on = {j["worker"] for j in client.info().queue if j["id"] in jobs}
    assert len(sent.findall(ray_daemon.log_file.read_text())) == before + 1
    assert ran_on == {0, 1}  # so both actors fetched it from the object store


def test_cancel_reaches_the_running_actor_within_an_iteration(ray_daemon):
    error, late, status = cancel_a_running_job(ray_daemon.endpoint)
    assert error.code == protocol.CANCELLED and "cancelled by request" in error.message
    # An iteration here takes about 20 ms and the daemon looks every 50 ms: a few more.
    assert len(late) <= 10
    assert status.state == "cancelled" and status.iteration < 30


def test_a_killed_clients_job_stops_on_its_actor(ray_daemon):
    took, status, error = kill_a_client_mid_job(ray_daemon.endpoint)
    assert took < 2.0 + 3.0  # heartbeat timeout, a sweep, the actor's iteration, slack
    assert status.iteration < ENDLESS.iterations and "client went away" in error
    with ray_daemon.client() as client:
        wait_for_workers(client, lambda ws: all(w["state"] == "idle" for w in ws), 10)


def test_an_actor_killed_mid_job_fails_its_job_and_is_replaced(ray_daemon):
    with ray_daemon.client() as client:
        job = start_endless(client)
        worker = next(j["worker"] for j in client.info().queue if j["id"] == job)
        pid = client.info().workers[worker]["pid"]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(DaemonError) as e:
            list(client.events(job))
        assert e.value.code == protocol.WORKER_LOST
        assert f"pid {pid}" in str(e.value) and "submit the job again" in str(e.value)
        replaced = wait_for_workers(
            client, lambda ws: ws[worker]["state"] == "idle" and ws[worker]["pid"] != pid
        )
        assert replaced[worker]["device"] == "cpu"
        # Both workers take jobs again, the new one included.
        jobs = [client.submit(noise(), [noise(32, 32)], TINY.replace(iterations=30)) for _ in "ab"]
        ends = [list(client.events(j))[-1] for j in jobs]
        assert all(isinstance(end, ResultReply) for end in ends)
        ran_on = {j["worker"] for j in client.info().queue if j["id"] in jobs}
    assert ray_daemon.process.poll() is None
    assert ran_on == {0, 1}


def test_a_job_for_an_actor_that_died_idle_runs_on_its_replacement(ray_daemon):
    with ray_daemon.client() as client:
        idle = wait_for_workers(client, lambda ws: all(w["state"] == "idle" for w in ws), 30)
        os.kill(idle[0]["pid"], signal.SIGKILL)
        # One job for each worker: the dead one's job must not fail, it never started.
        jobs = [client.submit(noise(), [noise(32, 32)], TINY.replace(iterations=30)) for _ in "ab"]
        ends = [list(client.events(j))[-1] for j in jobs]
        ran_on = {j["worker"] for j in client.info().queue if j["id"] in jobs}
        workers = client.info().workers
    assert all(isinstance(end, ResultReply) for end in ends)
    assert ran_on == {0, 1} and workers[0]["pid"] not in (None, idle[0]["pid"])


def test_batch_keeps_both_workers_busy(ray_daemon, tmp_path):
    rng = np.random.default_rng(0)
    for name in "abcd":
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(
            tmp_path / f"{name}.png"
        )
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "s.png")
    began = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "brushwork", "batch", *(str(tmp_path / f"{n}.png") for n in "abcd"),
         "--style", str(tmp_path / "s.png"), "-o", str(tmp_path / "out"),
         "--server", ray_daemon.endpoint, "--size", "40", "--iterations", "30", "--scales", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "4 written, 0 skipped, 0 failed" in done.stderr
    with ray_daemon.client() as client:  # the batch's jobs are another client's: operator
        jobs = client.info(ray_daemon.operator_token()).queue
        runs = [j for j in jobs if (j["started"] or 0) >= began]
    assert len(runs) == 4 and {j["worker"] for j in runs} == {0, 1}
    overlapping = [
        (a["id"], b["id"])
        for a, b in itertools.combinations(runs, 2)
        if a["started"] < b["finished"] and b["started"] < a["finished"]
    ]
    assert overlapping  # two in flight at once, not one after the other


def test_a_clip_runs_as_two_chunks_at_once_faded_at_the_join(ray_daemon):
    """12 frames, 2 workers: frames 0-5 on one, 4-11 on the other at the same time, 4 and 5
    cross-faded; the join moves less between frames than frames styled alone do."""
    clip, styles = panned_clip(frames=12), [style()]
    chunks = plan([Segment(0, 12)], 2, overlap=2)
    assert [(c.start, c.end, c.fade) for c in chunks] == [(0, 6, 0), (4, 12, 2)]
    out: dict[int, np.ndarray] = {}
    began = time.time()
    with ray_daemon.client() as client:
        Clip(client, reader(clip), out.__setitem__, styles, CLIP).run(chunks)
        runs = [j for j in client.info().queue if (j["started"] or 0) >= began]
        alone = [
            pixels.to_array(
                client.stylize(pixels.from_array(clip[t]), [pixels.from_array(styles[0])], CLIP,
                               output_dtype="f32").image
            )
            for t in (5, 6)
        ]  # fmt: skip
    assert sorted(out) == list(range(12)) and len(runs) == 14  # the faded frames twice
    assert {j["worker"] for j in runs} == {0, 1}
    side_by_side = [
        (a["id"], b["id"])
        for a, b in itertools.combinations(runs, 2)
        if a["worker"] != b["worker"]
        and a["started"] < b["finished"]
        and b["started"] < a["finished"]
    ]
    assert len(side_by_side) >= 4  # the chains ran at once, not one after the other
    at_join = max(warping_error(out[t], out[t - 1]) for t in (4, 5, 6))
    flicker = warping_error(alone[1], alone[0])
    print(f"clip on 2 Ray workers: warping error at the join {at_join:.5f}, alone {flicker:.5f}")
    assert at_join < flicker / 2


def test_shutdown_cancels_stops_the_actors_and_leaves_no_ray_process(start_daemon):
    with ray_daemon_started(start_daemon) as ray:
        daemon = ray.daemon
        processes = ray.processes()
        with daemon.client() as client:
            actors = [w["pid"] for w in client.info().workers]
        assert set(actors) < set(processes)  # found though they retitle themselves
        assert len(processes) >= 5  # the daemon, GCS, raylet, two actors at least
        listening = listening_addresses(processes)
        assert len(listening) >= 3  # the daemon's port, GCS, raylet...
        assert all(is_loopback(a) for a in listening), listening  # nothing beyond loopback
        with daemon.client() as client:
            job = start_endless(client)
            daemon.process.send_signal(signal.SIGTERM)
            with pytest.raises(DaemonError) as e:
                list(client.events(job))
        assert e.value.code == protocol.CANCELLED and "shutting down" in str(e.value)
        assert daemon.stop(timeout=60) == 0
        assert ray.wait_until_gone() == []


def test_without_ray_the_daemon_never_loads_it(daemon):
    maps = Path(f"/proc/{daemon.process.pid}/maps").read_text()
    assert "_raylet" not in maps and "libtorch" in maps


def serve_fails(*args: str, python: tuple[str, ...] = ("-m", "brushwork")) -> str:
    """The one line `brushwork serve ARGS` fails with (exit status 1)."""
    done = subprocess.run(
        [sys.executable, *python, "serve", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_workers_without_ray_is_refused():
    assert serve_fails("--workers", "2") == (
        "brushwork: error: --workers 2: give --ray too, and at least 1 (without Ray the daemon "
        "has one worker)"
    )


def test_ray_without_the_extra_installed_says_how_to_get_it(tmp_path):
    without_ray = (
        "-c",
        "import sys; sys.modules['ray'] = None  # as if `brushwork[ray]` were not installed\n"
        "from brushwork.cli import main; sys.exit(main())",
    )
    assert serve_fails("--ray", "auto", "--log-file", str(tmp_path / "l"), python=without_ray) == (
        'brushwork: error: --ray needs Ray, an optional extra: pip install "brushwork[ray]"'
    )


def test_a_ray_address_where_nothing_listens_is_one_line(tmp_path):
    assert serve_fails("--ray", "127.0.0.1:9", "--log-file", str(tmp_path / "l")) == (
        "brushwork: error: --ray 127.0.0.1:9: nothing answers there (Connection refused); "
        "start the cluster's head with `ray start --head --port 9`"
    )
