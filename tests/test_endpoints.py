"""`serve --bind`: every endpoint form libzmq takes, read before anything is bound.

Nothing here binds beyond loopback: the forms are classified without binding, and the
daemons started bind loopback forms, or a TEST-NET address (192.0.2.1) no machine has.
"""

from __future__ import annotations

import subprocess

import pytest

from brushwork.endpoints import classify
from brushwork.errors import BadInput
from fixtures_daemon import free_port, serve_command

LOOPBACK = [
    "tcp://127.0.0.1:5580",
    "tcp://127.1:5580",  # inet_aton's short form: 127.0.0.1
    "tcp://2130706433:5580",  # 127.0.0.1 as one number
    "tcp://0x7f.1:5580",
    "tcp://[127.0.0.1]:5580",
    "tcp://127.0.0.1%1:5580",  # a zone, which IPv4 ignores
    "tcp://127.0.0.1:*",
    "tcp://localhost:5580",
    "ipc:///tmp/brushwork.sock",
    "ipc://@brushwork",
    "inproc://brushwork",
]
NETWORK = {
    "tcp://*:5580": "every network interface (*)",
    "tcp://0.0.0.0:5580": "0.0.0.0: every network interface",
    "tcp://0:5580": "0.0.0.0: every network interface",  # inet_aton: 0 is 0.0.0.0
    "tcp://lo:5580": "the address of network interface lo",  # a name: its address may change
    "tcp://192.0.2.1:5580": "192.0.2.1",
}
REFUSED = {
    "tcp://127.0.0.1:5580;0.0.0.0:5580": "would listen on '0.0.0.0:5580', what follows the ';'",
    "tcp://0.0.0.0:5580;127.0.0.1:5580": "would listen on '127.0.0.1:5580', what follows the ';'",
    "tcp://[::]:5580": "is IPv6",
    "tcp://::1:5580": "is IPv6",
    "tcp://[::1]:5580": "is IPv6",
    "tcp://example.com:5580": "names a host",
    "tcp://127.0.0.1": "needs a port",
    "tcp://127.0.0.1:port": "needs a port",
    "ws://127.0.0.1:5580": "uses 'ws'",
    "wss://127.0.0.1:5580": "uses 'wss'",
    "udp://127.0.0.1:5580": "uses 'udp'",
    "tipc://{1234,1}": "uses 'tipc'",
    "vmci://1:5580": "uses 'vmci'",
    "pgm://eth0;239.192.1.1:5580": "uses 'pgm'",
    "TCP://127.0.0.1:5580": "uses 'TCP'",  # libzmq's schemes are lower case
    "127.0.0.1:5580": "is not an endpoint",
    "ipc://": "names no path",
}


@pytest.mark.parametrize("endpoint", LOOPBACK)
def test_loopback_forms_are_served_without_keys(endpoint):
    assert classify(endpoint).local


@pytest.mark.parametrize(("endpoint", "where"), NETWORK.items())
def test_forms_that_reach_the_network_need_keys_and_say_where(endpoint, where):
    bind = classify(endpoint)
    assert not bind.local and bind.where == where


@pytest.mark.parametrize(("endpoint", "problem"), REFUSED.items())
def test_ambiguous_and_unsupported_forms_are_refused_with_the_fix(endpoint, problem):
    with pytest.raises(BadInput) as e:
        classify(endpoint)
    message = str(e.value)
    assert message.startswith(f"--bind {endpoint!r} {problem}")
    assert "use tcp://ADDRESS:PORT (e.g. tcp://127.0.0.1:5580" in message
    assert "\n" not in message


def test_a_long_endpoint_is_not_repeated_whole():
    with pytest.raises(BadInput) as e:
        classify("ws://" + "x" * 10_000)
    assert len(str(e.value)) < 400 and "(10,007 bytes)" in str(e.value)


@pytest.mark.weights
def test_serve_refuses_a_source_part_before_binding_anything(weights_file, tmp_path):
    """The issue's attack, with an address no machine has after the ';': the daemon on main
    bound it (or failed to: 'Cannot assign requested address'); now it refuses the form."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port};192.0.2.1:{port}"
    command = serve_command(weights_file, "--bind", endpoint, "--log-file", str(tmp_path / "l"))
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == (
        f"brushwork: error: --bind '{endpoint}' would listen on '192.0.2.1:{port}', what follows"
        " the ';' (what precedes it is a source address, which a listener ignores); use"
        " tcp://ADDRESS:PORT (e.g. tcp://127.0.0.1:5580, this machine only) or ipc://PATH"
    )


@pytest.mark.weights
def test_a_loopback_form_libzmq_reads_as_127_0_0_1_serves_without_keys(start_daemon):
    d = start_daemon("--device", "cpu", host="127.1")  # refused as "beyond loopback" on main
    with d.client() as client:
        assert client.hello().protocol == 1
    assert f"serving on tcp://127.0.0.1:{d.endpoint.rsplit(':', 1)[1]}" in d.log_file.read_text()
    assert d.stop() == 0


@pytest.mark.weights
def test_without_keys_a_network_form_names_what_would_be_exposed(weights_file, tmp_path):
    command = serve_command(
        weights_file, "--bind", f"tcp://0:{free_port()}", "--keys", str(tmp_path),
        "--log-file", str(tmp_path / "l"),
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert "(libzmq would listen on 0.0.0.0: every network interface; bind" in line
    assert "tcp://127.0.0.1:5580 for this machine only)" in line
