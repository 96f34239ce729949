"""`brushwork info` and `brushwork cancel` against a real daemon."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from brushwork import cli, server
from brushwork.client import Client, DaemonError
from brushwork.protocol import DEFAULT_ENDPOINT, JOB_STATES
from daemon_helpers import ENDLESS, noise
from fixtures_cli import brushwork

pytestmark = pytest.mark.weights


def while_running(client: Client, job: str, *args: str) -> subprocess.CompletedProcess:
    """Run `brushwork ARGS` while `job` runs, this client iterating its events meanwhile: a
    client that stops listening (heartbeats) for 2 s loses its job on the shared daemon."""
    command = [sys.executable, "-m", "brushwork", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with contextlib.suppress(DaemonError):  # the command may end the job: that is its test
        for _ in client.events(job):
            if process.poll() is not None:
                break
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_info_json_lists_version_device_and_queue(daemon):
    with daemon.client() as client:
        job = client.submit(noise(), [noise(32, 32)], ENDLESS)
        done = while_running(client, job, "info", "--server", daemon.endpoint, "--json")
        client.cancel(job)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["version"] == "0.1.0" and info["device"] == "cpu"
    assert info["limits"]["max_pixels"] == 10**6
    # Another process's view: the running job is listed, but neither its id nor its token.
    assert {"id": None, "mine": False, "state": "running"} in [
        {k: j[k] for k in ("id", "mine", "state")} for j in info["queue"]
    ]
    assert job not in done.stdout and client.token(job) not in done.stdout
    assert {j["state"] for j in info["queue"]} <= set(JOB_STATES)
    [worker] = info["workers"]  # a daemon without --ray: one worker, in its own process
    assert {"id": 0, "state": "busy", "job": None, "device": "cpu"}.items() <= worker.items()
    assert worker["pid"] == daemon.process.pid and worker["jobs_done"] >= 0

    text = brushwork("info", "--server", daemon.endpoint)
    assert text.returncode == 0
    assert text.stdout.startswith(f"brushwork daemon 0.1.0 at {daemon.endpoint} (protocol 1)")
    worker_line = rf"\nworkers  1\n  0   (idle|busy) .* pid {daemon.process.pid}, cpu"
    assert re.search(worker_line, text.stdout), text.stdout


def test_cancel_command_stops_a_running_job(daemon):
    with daemon.client() as client:
        job = client.submit(noise(), [noise(32, 32)], ENDLESS)
        token = client.token(job)
        refused = brushwork("cancel", job, "--server", daemon.endpoint)
        assert refused.returncode == 4
        assert refused.stderr == (
            f"brushwork: error: job {job!r} belongs to another client; acting on it needs the "
            "token its submitter received\n"
        )
        done = while_running(
            client, job, "cancel", job, "--token", token, "--server", daemon.endpoint
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == f"brushwork: job {job} cancelled"
        status = client.status(job)
        assert status.state == "cancelled" and status.iteration < ENDLESS.iterations
        error = next(j["error"] for j in client.info().queue if j["id"] == job)
        assert "cancelled by request" in error
    again = brushwork("cancel", job, "--token", token, "--server", daemon.endpoint)
    assert again.stderr.strip() == f"brushwork: job {job} had already ended (cancelled)"


def test_cancel_of_an_unknown_job_is_a_one_line_error(daemon):
    done = brushwork("cancel", "no-such-job", "--server", daemon.endpoint)
    assert done.returncode == 4
    assert done.stderr == "brushwork: error: no job 'no-such-job'\n"


def test_info_without_a_daemon_is_a_one_line_error():
    done = brushwork("info", "--server", "tcp://127.0.0.1:9")
    assert done.returncode == 3
    message = "no daemon at tcp://127.0.0.1:9 (no answer in 3 s; start one with `brushwork serve`)"
    assert done.stderr == f"brushwork: error: {message}\n"
    as_json = brushwork("info", "--server", "127.0.0.1:9", "--json")
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout) == {"error": {"code": "no_daemon", "message": message}}


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


PLUGIN_SIDE = """
import sys
sys.modules["numpy"] = sys.modules["torch"] = sys.modules["PIL"] = None  # must not be needed
sys.path.insert(0, {folder!r})
import brushwork.client
from brushwork.client import Client
from brushwork.protocol import RawImage
assert brushwork.client.__file__.startswith({folder!r}), brushwork.client.__file__
from brushwork.settings import Settings
content = RawImage(width=56, height=40, channels=4, dtype="f32", data=bytes(56 * 40 * 16))
style = RawImage(width=32, height=32, channels=3, dtype="u8", data=bytes(range(256)) * 12)
with Client({endpoint!r}) as client:
    result = client.stylize(content, [style], Settings(size=40, iterations=2, scales=1))
print(result.image, len(result.image.data))
"""


def test_the_plugins_copies_of_the_client_work_without_numpy_or_torch(daemon, tmp_path):
    package = tmp_path / "brushwork"
    package.mkdir()
    source = Path(__file__).parents[1] / "daemon" / "brushwork"
    for name in ("__init__", "errors", "settings", "protocol", "client"):
        (package / f"{name}.py").write_text((source / f"{name}.py").read_text())
    code = PLUGIN_SIDE.format(folder=str(tmp_path), endpoint=daemon.endpoint)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "RawImage(width=40, height=29, channels=4, dtype='f32') 18560\n"


def test_serve_help_gives_the_pixel_limit_the_daemon_applies(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"memory / {server.BYTES_PER_PIXEL} B" in text
    assert f"at most {server.MAX_PIXELS_CAP / 1e6:.0f} Mpx" in text
