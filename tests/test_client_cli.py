"""`brushwork info` and `brushwork cancel` against a real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brushwork.protocol import DEFAULT_ENDPOINT, JOB_STATES, ProgressReply
from daemon_helpers import ENDLESS, noise

pytestmark = pytest.mark.weights


def brushwork(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "brushwork", *args], capture_output=True, text=True, timeout=120
    )


def test_info_json_lists_version_device_and_queue(daemon):
    with daemon.client() as client:
        job = client.submit(noise(), [noise(32, 32)], ENDLESS)
        next(e for e in client.events(job) if isinstance(e, ProgressReply))
        done = brushwork("info", "--server", daemon.endpoint, "--json")
        client.cancel(job)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["version"] == "0.1.0" and info["device"] == "cpu"
    assert info["limits"]["max_pixels"] == 10**6
    assert {"id": job, "state": "running"}.items() <= next(
        j for j in info["queue"] if j["id"] == job
    ).items()
    assert {j["state"] for j in info["queue"]} <= set(JOB_STATES)

    text = brushwork("info", "--server", daemon.endpoint)
    assert text.returncode == 0
    assert text.stdout.startswith(f"brushwork daemon 0.1.0 at {daemon.endpoint} (protocol 1)")


def test_cancel_command_stops_a_running_job(daemon):
    with daemon.client() as client:
        job = client.submit(noise(), [noise(32, 32)], ENDLESS)
        next(e for e in client.events(job) if isinstance(e, ProgressReply))
        started = time.monotonic()
        done = brushwork("cancel", job, "--server", daemon.endpoint)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == f"brushwork: job {job} cancelled"
        assert time.monotonic() - started < 10
        assert client.status(job).state == "cancelled"
        again = brushwork("cancel", job, "--server", daemon.endpoint)
        assert again.stderr.strip() == f"brushwork: job {job} had already ended (cancelled)"


def test_cancel_of_an_unknown_job_is_a_one_line_error(daemon):
    done = brushwork("cancel", "no-such-job", "--server", daemon.endpoint)
    assert done.returncode == 1
    assert done.stderr == "brushwork: error: no job 'no-such-job'\n"


def test_info_without_a_daemon_is_a_one_line_error():
    done = brushwork("info", "--server", "tcp://127.0.0.1:9")
    assert done.returncode == 1
    assert done.stderr == (
        "brushwork: error: no daemon at tcp://127.0.0.1:9 (no answer in 3 s; "
        "start one with `brushwork serve`)\n"
    )


def test_the_minimal_client_in_protocol_md_works(daemon):
    text = (Path(__file__).parents[1] / "PROTOCOL.md").read_text()
    section = text[text.index("## A minimal client") :]
    start = section.index("```python\n") + len("```python\n")
    code = section[start : section.index("\n```\n", start)]
    code = code.replace(DEFAULT_ENDPOINT, daemon.endpoint)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "1 / 4",
        "2 / 4",
        "3 / 4",
        "4 / 4",
        f"result 48 x 36 {48 * 36 * 3} bytes",
    ]
