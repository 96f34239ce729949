"""The daemon against careless and hostile clients, with figures.

    PYTHONPATH=daemon .venv/bin/python bench/reliability.py [--quick] [--only NAME ...]

Each scenario starts its own `brushwork serve` (CPU, real weights, loopback only) and stops
it, and reports the daemon's memory before, at its peak and after (the attacks are in
attacks.py):

  fuzz      100,000 fuzzed and malformed messages: every one answered, 0 crashes
  crowd     8 `brushwork batch` processes x 20 images at once against a queue of 4: all written,
            0 lost, 0 run twice, the full queue waited out
  soak      200 jobs, a new style and a rotating size each: the daemon's RSS levels off
  kill      the daemon SIGKILLed mid-batch, a new one started, the batch rerun: every finished
            output kept byte for byte, no partial file
  hijack    another client (and, with CURVE, another key holding the token) heartbeats,
            resubmits, cancels and asks after a running job: 0 events leaked, the owner's job done
  memory    the engine's memory estimate against peak RSS; jobs the old pixel check let through
  binds     every endpoint form libzmq takes, as `serve --bind` reads it; the ';' form refused
  hostile   well-formed submits with hostile contents: 100 style frames each, a queue filled to
            its budget, a layer named 80,000 times, 500 layers; a 900 KB `type`; frames
            announced at 1 GB, or half-sent and stalled (a raw ZMTP peer); time to cancel
  bigimage  `stylize --size 64` of a 391 KB PNG of 11580x11580 px: in-process, through the
            daemon, as a batch (peak RSS of each)

Prints one table per scenario and writes bench/results/reliability-<date>.{md,json}. --quick
runs every scenario small (the CI test, tests/test_reliability.py, runs these functions so).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import attacks
from brushwork import __version__, manifest, pixels, protocol
from brushwork.client import Client, DaemonError, NoDaemon
from brushwork.protocol import ProgressReply, ResultReply
from brushwork.settings import Settings

REPO = Path(__file__).resolve().parent.parent
TINY = Settings(size=40, iterations=3, scales=1)
SLOW = Settings(size=48, iterations=60, scales=1)
BATCH_OPTIONS = ["--size", "40", "--iterations", "3", "--scales", "1"]


# --- A daemon of its own ----------------------------------------------------------------------


@dataclass
class Daemon:
    """A `brushwork serve` subprocess: where it listens, its log, and how to read its RSS."""

    process: subprocess.Popen
    endpoint: str
    log_file: Path  # rotates at 1 MB: a fuzz run fills it many times over
    output_file: Path  # stderr: every log line
    client_options: dict

    def client(self, timeout: float = 30.0, **options) -> Client:
        return Client(self.endpoint, timeout=timeout, **{**self.client_options, **options})

    def rss(self) -> int:
        """Resident memory of the daemon now, in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(
    folder: Path, *args: str, host: str = "127.0.0.1", client_options: dict | None = None
) -> Daemon:
    """`brushwork serve` on a free port (CPU), once it answers hello."""
    port = free_port()
    log = folder / f"daemon-{port}.log"
    command = [
        sys.executable, "-m", "brushwork", "serve", "--device", "cpu", "--bind",
        f"tcp://{host}:{port}", "--log-file", str(log), *args,
    ]  # fmt: skip
    env = {**os.environ, "XDG_STATE_HOME": str(folder)}
    output = folder / f"daemon-{port}.out"
    with open(output, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    daemon = Daemon(process, f"tcp://127.0.0.1:{port}", log, output, client_options or {})
    deadline = time.monotonic() + 180
    try:
        with daemon.client(timeout=0.5) as client:
            while daemon.alive() and time.monotonic() < deadline:
                with contextlib.suppress(NoDaemon):
                    client.hello()
                    return daemon
        raise RuntimeError(f"daemon did not start: {command}")
    except BaseException:
        daemon.stop()
        raise


@contextlib.contextmanager
def running(folder: Path, *args: str, **options) -> Iterator[Daemon]:
    daemon = start_daemon(folder, *args, **options)
    try:
        yield daemon
    finally:
        daemon.stop()


def noise(h: int, w: int, seed: int) -> protocol.RawImage:
    rng = np.random.default_rng(seed)
    return pixels.from_array(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


# --- crowd ------------------------------------------------------------------------------------


def write_inputs(folder: Path, count: int, seed: int) -> None:
    from brushwork import images

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        images.save(folder / f"img{i:03d}.png", rng.random((40, 56, 3), dtype=np.float32))


def batch_command(inputs: Path, style: Path, out: Path, endpoint: str) -> list[str]:
    return [
        sys.executable, "-m", "brushwork", "batch", str(inputs), "--style", str(style), "-o",
        str(out), "--server", endpoint, *BATCH_OPTIONS,
    ]  # fmt: skip


def crowd(daemon: Daemon, folder: Path, clients: int, jobs: int) -> dict:
    """`clients` batch processes of `jobs` images each at once. Every output must be written;
    the daemon's log must show each job queued and run exactly once."""
    from brushwork import images

    style = folder / "style.png"
    images.save(style, np.random.default_rng(99).random((32, 32, 3), dtype=np.float32))
    runs = []
    for c in range(clients):
        write_inputs(folder / f"in{c}", jobs, seed=c)
        log = open(folder / f"batch{c}.txt", "w")  # noqa: SIM115 - closed below
        command = batch_command(folder / f"in{c}", style, folder / f"out{c}", daemon.endpoint)
        runs.append((subprocess.Popen(command, stderr=log), log))
    start = time.perf_counter()
    codes = []
    for process, log in runs:
        codes.append(process.wait(1800))
        log.close()
    elapsed = time.perf_counter() - start
    written = sum(len(list((folder / f"out{c}").glob("*.png"))) for c in range(clients))
    texts = [(folder / f"batch{c}.txt").read_text() for c in range(clients)]
    daemon_log = daemon.log_file.read_text()
    queued = re.findall(r"job (\S+) queued at", daemon_log)
    started = re.findall(r"job (\S+) running", daemon_log)
    return {
        "clients": clients,
        "jobs": clients * jobs,
        "batches_exit_0": sum(code == 0 for code in codes),
        "outputs_written": written,
        "lost": clients * jobs - written,
        "jobs_accepted": len(queued),
        "jobs_run_twice": sum(n > 1 for n in Counter(started).values()),
        "queue_full_waits": sum(t.count("queue is full: waiting") for t in texts),
        "seconds": round(elapsed, 1),
    }


# --- soak -------------------------------------------------------------------------------------


def soak(daemon: Daemon, jobs: int) -> dict:
    """`jobs` jobs one after another, each with a style never seen before and one of four
    sizes: the style cache fills to its bound, then the RSS must level off."""
    sizes = [40, 48, 56, 64]
    samples = []
    with daemon.client() as client:
        for i in range(jobs):
            settings = TINY.replace(size=sizes[i % 4])
            result = client.stylize(
                noise(48, 64, seed=i), [noise(48, 48, seed=10_000 + i)], settings
            )
            assert isinstance(result, ResultReply)
            samples.append(daemon.rss())
    half = samples[len(samples) // 2 :]
    return {
        "jobs": jobs,
        "rss_first_mb": round(samples[0] / 1e6),
        "rss_at_quarters_mb": [
            round(samples[len(samples) * q // 4 - 1] / 1e6) for q in (1, 2, 3, 4)
        ],
        "rss_max_mb": round(max(samples) / 1e6),
        "rss_growth_second_half_mb": round((max(half) - min(half)) / 1e6),
    }


# --- kill -------------------------------------------------------------------------------------


def _hidden(out: Path) -> list[str]:
    """A batch's half-written files (hidden temporaries); its manifest is no such file."""
    return [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != manifest.NAME]


def kill_and_resume(
    daemon: Daemon, start_another: Callable[[], Daemon], folder: Path, count: int
) -> dict:
    """A batch of `count` images; the daemon is SIGKILLed once a third are written; a new
    daemon is started and the same batch run again."""
    from brushwork import images

    inputs, out = folder / "kill-in", folder / "kill-out"
    write_inputs(inputs, count, seed=7)
    style = folder / "kill-style.png"
    images.save(style, np.random.default_rng(98).random((32, 32, 3), dtype=np.float32))
    command = batch_command(inputs, style, out, daemon.endpoint)
    with open(folder / "kill-batch.txt", "w") as log:
        first = subprocess.Popen(command, stderr=log)
        deadline = time.monotonic() + 600
        while len(list(out.glob("*.png"))) < max(1, count // 3):
            if time.monotonic() > deadline or first.poll() is not None:
                raise RuntimeError((folder / "kill-batch.txt").read_text())
            time.sleep(0.05)
        daemon.process.kill()
        daemon.process.wait()
        killed = time.perf_counter()
        first_exit = first.wait(120)
        exit_seconds = time.perf_counter() - killed
    finished = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    partial = _hidden(out)
    second_daemon = start_another()
    try:
        command[command.index("--server") + 1] = second_daemon.endpoint
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    finally:
        second_daemon.stop()
    kept = sum((out / name).read_bytes() == data for name, data in finished.items())
    readable = sum(images.load(p).shape == (29, 40, 3) for p in out.glob("*.png"))
    return {
        "images": count,
        "written_before_the_kill": len(finished),
        "first_batch_exit": first_exit,
        "first_batch_seconds_to_exit_after_the_kill": round(exit_seconds, 1),
        "first_batch_said": (folder / "kill-batch.txt").read_text().strip().splitlines()[-1],
        "partial_files_after_the_kill": len(partial),
        "rerun_exit": rerun.returncode,
        "rerun_skipped": int(re.search(r"(\d+) skipped", rerun.stderr).group(1)),
        "finished_outputs_kept_byte_identical": kept,
        "outputs_complete_after_rerun": readable,
        "temp_files_left": len(_hidden(out)),
    }


# --- hijack -----------------------------------------------------------------------------------


def hijack(daemon: Daemon, attempts: int, owner: dict, thief: dict, give_token: bool) -> dict:
    """While an owner's job runs, a thief tries `attempts` times each: a heartbeat naming it
    (with a forged token, or the real one if `give_token`), a resubmit of the same request, a
    cancel, a status and an info. Any event of the job the thief receives is a leak."""
    leaks = refused = 0
    with daemon.client(**owner) as victim:
        job = victim.submit(noise(40, 56, seed=1), [noise(32, 32, seed=2)], SLOW)
        token = victim.token(job)
        events: list = []
        listener = threading.Thread(target=lambda: events.extend(victim.events(job)))
        listener.start()
        with daemon.client(timeout=5.0, **thief) as stranger:
            proof = token if give_token else protocol.new_token()
            for _ in range(attempts):
                tries: list[Callable[[], object]] = [
                    lambda: stranger.cancel(job, proof),
                    lambda: stranger.status(job, proof),
                    lambda: stranger.submit(
                        noise(40, 56, seed=1), [noise(32, 32, seed=2)], SLOW, job=job, token=proof
                    ),
                ]
                for attempt in tries:
                    try:
                        attempt()
                    except DaemonError as e:
                        refused += e.code in (protocol.NOT_OWNER, protocol.JOB_CONFLICT)
                    else:
                        leaks += 1
                stranger.attach(job, proof)  # heartbeats naming the job, with the "proof"
                event = stranger.next_event((job,))
                if isinstance(event, protocol.ErrorReply) and event.code == protocol.NOT_OWNER:
                    refused += 1
                else:
                    leaks += 1
                if job in json.dumps(stranger.info().queue):
                    leaks += 1
                else:
                    refused += 1
        listener.join(600)
    return {
        "attempts": attempts * 5,
        "refused": refused,
        "leaked": leaks,
        "owner_got_its_result": bool(events) and isinstance(events[-1], ResultReply),
        "owner_progress_events": sum(isinstance(e, ProgressReply) for e in events),
    }


def hijack_curve(folder: Path, attempts: int) -> dict:
    """hijack() on a CURVE daemon: the thief is another authorised key that holds the token."""
    keys = folder / "keys"
    make = [sys.executable, "-m", "brushwork", "keys", "generate", "--dir", str(keys)]
    subprocess.run(make, check=True, capture_output=True)
    for name in ("owner", "thief"):
        subprocess.run([*make, "--client", name], check=True, capture_output=True)
    owner = {"client_key": keys / "clients" / "owner.key_secret"}
    thief = {"client_key": keys / "clients" / "thief.key_secret"}
    options = {"server_key": keys / "server.key", **owner}
    with running(folder, "--keys", str(keys), "--curve", client_options=options) as daemon:
        return hijack(daemon, attempts, owner, thief, give_token=True)


# --- memory -----------------------------------------------------------------------------------

MEMORY_JOBS = [  # content (h, w), style (h, w), size, scales, budget (bytes)
    ((32, 3000), (64, 64), 0, 1, 1.5e9),
    ((768, 1024), (512, 512), 0, 1, 1.5e9),
    ((768, 1024), (512, 512), 2048, 1, 1.5e9),
    ((384, 512), (256, 256), 1024, 3, 100e9),
]


def measure_one(content, style, size, scales, budget) -> dict:
    """In this (fresh) process: the estimate and the peak RSS growth of one job."""
    from brushwork.engine import Engine

    engine = Engine(device="cpu", memory_limit=budget)
    rng = np.random.default_rng(0)
    warm = rng.integers(0, 256, (40, 56, 3), np.uint8)
    engine.stylize(warm, [warm[:32, :32]], Settings(size=40, iterations=2, scales=1))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    settings = Settings(size=size, iterations=2 * scales, scales=scales)
    estimate = engine.estimate(content, [style], settings)
    engine.stylize(
        rng.integers(0, 256, (*content, 3), np.uint8),
        [rng.integers(0, 256, (*style, 3), np.uint8)],
        settings,
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    h, w = estimate.output
    return {
        "job": f"{content[1]}x{content[0]}, style {style[1]}x{style[0]}, size {size}, "
        f"{scales} scales, budget {budget / 1e9:g} GB",
        "output": f"{w}x{h}",
        "styles": ", ".join(f"{sw}x{sh}" for sh, sw in estimate.styles),
        "tile": estimate.tile,
        "estimate_mb": round(estimate.total / 1e6),
        "measured_mb": round((peak - base) / 1e6),
    }


def memory(folder: Path, jobs: list = MEMORY_JOBS) -> dict:
    """The estimate against peak RSS, one fresh process a job; then the issue's two jobs on a
    daemon with --max-pixels 100000: refused up front, the daemon's RSS unchanged."""
    rows = []
    for job in jobs:
        done = subprocess.run(
            [sys.executable, __file__, "--measure", json.dumps(job)],
            capture_output=True, text=True, timeout=1800, check=True,
        )  # fmt: skip
        rows.append(json.loads(done.stdout.splitlines()[-1]))
    refusals = []
    with running(folder, "--max-pixels", "100000") as daemon, daemon.client() as client:
        before = daemon.rss()
        for content in ((32, 3000), (1, 65536)):
            try:
                client.submit(
                    noise(*content, seed=3), [noise(64, 64, seed=4)], TINY.replace(size=0)
                )
                refusals.append(f"{content[1]}x{content[0]}: ACCEPTED")
            except DaemonError as e:
                refusals.append(f"{content[1]}x{content[0]}: {e.code}: {e}")
        growth = daemon.rss() - before
    return {"estimates": rows, "refusals": refusals, "daemon_rss_growth_mb": round(growth / 1e6)}


# --- main -------------------------------------------------------------------------------------

FULL = {"fuzz": 100_000, "clients": 8, "jobs": 20, "soak": 200, "kill": 12, "hijack": 20}
FULL.update(queue=20, echo=100, side=11580)
QUICK = {"fuzz": 2_000, "clients": 3, "jobs": 3, "soak": 12, "kill": 6, "hijack": 2}
QUICK.update(queue=4, echo=5, side=4200)
# The estimate rows take minutes (a fresh process and a large job each): only in a full run.
# The hostile round's daemon: the pixel limit, and a queue budget of its own.
HOSTILE = ("--max-pixels", "100000", "--max-queue-memory", "256M")


def run_all(folder: Path, sizes: dict, only: list[str]) -> dict:
    results: dict = {}

    def measured(name: str, daemon: Daemon, run: Callable[[], dict]) -> None:
        figures: dict = {}
        with attacks.rss_during(daemon.process.pid, figures):
            results[name] = run()
        results[name].update(figures)

    if "fuzz" in only:
        with running(folder, "--max-pixels", "1000000") as daemon:
            measured("fuzz", daemon, lambda: attacks.fuzz(daemon, sizes["fuzz"]))
    if "crowd" in only:
        with running(folder, "--max-queue", "4") as daemon:
            run = lambda: crowd(daemon, folder, sizes["clients"], sizes["jobs"])  # noqa: E731
            measured("crowd", daemon, run)
    if "soak" in only:
        with running(folder) as daemon:
            measured("soak", daemon, lambda: soak(daemon, sizes["soak"]))
    if "kill" in only:
        daemon = start_daemon(folder)
        try:
            results["kill"] = kill_and_resume(
                daemon, lambda: start_daemon(folder), folder, sizes["kill"]
            )
        finally:
            daemon.stop()
    if "hijack" in only:
        with running(folder, "--heartbeat-timeout", "3") as daemon:
            run = lambda: hijack(daemon, sizes["hijack"], {}, {}, give_token=False)  # noqa: E731
            measured("hijack", daemon, run)
        results["hijack_curve"] = hijack_curve(folder, sizes["hijack"])
    if "memory" in only:
        results["memory"] = memory(folder, MEMORY_JOBS if sizes is FULL else [])
    if "binds" in only:
        results["binds"] = attacks.bind_forms()
    if "hostile" in only:
        with running(folder, *HOSTILE) as daemon:
            results["queue"] = attacks.queue_memory(daemon, sizes["queue"])
            results["frames"] = attacks.half_sent(daemon)
            results["settings"] = attacks.hostile_settings(daemon)
            results["echo"] = attacks.echoed(daemon, sizes["echo"])
        with running(folder) as daemon:  # this machine's default limits
            results["frames_default_limits"] = attacks.half_sent(daemon, stall=False)
    if "bigimage" in only:
        with running(folder) as daemon:
            results["bigimage"] = attacks.big_image(daemon, folder, side=sizes["side"])
    return results


def cpu() -> str:
    """The CPU's model name and the flags that matter to the engine (lscpu's words)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", text)
    flags = set(re.search(r"flags\s*:\s*(.+)", text).group(1).split()) if text else set()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    has = [f for f in wanted if f in flags] or ["none of avx2, avx512_bf16, amx"]
    return f"{model.group(1).strip() if model else 'unknown CPU'} ({', '.join(has)})"


def markdown(results: dict, header: str) -> str:
    lines = [f"# Reliability, {header}", ""]
    for name, figures in results.items():
        lines += [f"## {name}", "", "| measure | value |", "| --- | --- |"]
        for key, value in figures.items():
            if key == "estimates":
                continue
            if key == "forms":  # bind forms: one row each
                lines += [f"| `{form}` | {said} |" for form, said in value.items()]
                continue
            lines.append(f"| {key.replace('_', ' ')} | {value} |")
        if "estimates" in figures:
            lines += ["", "| job | output | styles | tile | estimate MB | measured MB |"]
            lines.append("| --- | --- | --- | --- | --- | --- |")
            for row in figures["estimates"]:
                lines.append("| " + " | ".join(str(v) for v in row.values()) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    if sys.argv[1:2] == ["--measure"]:
        print(json.dumps(measure_one(*json.loads(sys.argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every scenario, small")
    names = ["fuzz", "crowd", "soak", "kill", "hijack", "memory", "binds", "hostile", "bigimage"]
    parser.add_argument("--only", nargs="+", choices=names, default=names)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    stem = args.out / f"reliability-cpu-{time.strftime('%Y-%m-%d')}"
    results = {}
    if not args.quick and args.only != names and stem.with_suffix(".json").exists():
        results = json.loads(stem.with_suffix(".json").read_text())  # rerun some: keep the rest
    with tempfile.TemporaryDirectory(prefix="brushwork-reliability-") as tmp:
        results.update(run_all(Path(tmp), sizes, args.only))
    header = (
        f"brushwork {__version__}, {cpu()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}" + (" (quick)" if args.quick else "")
    )
    text = markdown(results, header)
    print(text)
    if not args.quick:
        stem.with_suffix(".md").write_text(text + "\n")
        stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
