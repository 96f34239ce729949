"""Where `brushwork serve` listens: each `--bind` endpoint read the way libzmq reads it, then
the listening sockets.

The daemon answers without keys only where no other machine can reach it, so every bind
endpoint is classified before anything is bound:

- ipc://PATH (a file with this user's mode) and inproc:// reach this machine only.
- tcp://HOST:PORT: libzmq binds what follows the last ';' (what precedes it is a source
  address, which a listener ignores), strips [brackets] and a %zone from HOST, takes '*' as
  every interface, then tries HOST as a network interface's name, then as an IPv4 address or
  host name (getaddrinfo: 127.1 and 2130706433 are 127.0.0.1, 0 is 0.0.0.0). The daemon sets
  no ZMQ_IPV6, so IPv6 addresses do not bind at all. Only 127.0.0.0/8 is loopback.

So: numeric addresses are resolved exactly as libzmq resolves them; `localhost` counts as
loopback when every address it resolves to is; an interface name or '*' reaches the network;
any other host name (what it resolves to may change before the bind), a ';', IPv6, ws://,
wss://, udp://, tipc://, vmci://, pgm:// and unknown schemes are refused, each with one line
naming what was typed and what to type instead.

listen() makes a ROUTER with the daemon's per-frame limit and ZMTP heartbeats (limits.py says
why) and binds it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from brushwork.errors import BadInput, BrushworkError, shown

if TYPE_CHECKING:
    from brushwork.limits import Limits

LOOPBACK_EXAMPLE = "tcp://127.0.0.1:5580"


@dataclass(frozen=True)
class Bind:
    endpoint: str  # as typed
    local: bool  # only this machine can connect: no keys needed
    where: str  # what libzmq would listen on, in words, for messages


def classify(endpoint: str) -> Bind:
    """What binding `endpoint` would expose; a BadInput for forms that bind something else
    than they seem to (or nothing)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        raise _refuse(endpoint, "is not an endpoint")
    if scheme in ("ipc", "inproc"):
        if not rest:
            raise _refuse(endpoint, "names no path")
        return Bind(endpoint, True, f"{scheme}://{rest} on this machine")
    if scheme != "tcp":
        problem = f"uses {shown(scheme)}: the daemon listens on tcp:// and ipc:// only"
        raise _refuse(endpoint, problem)
    if ";" in rest:
        bound = rest.rpartition(";")[2]
        raise _refuse(
            endpoint,
            f"would listen on {shown(bound)}, what follows the ';' (what precedes it is a "
            "source address, which a listener ignores)",
        )
    host, colon, port = rest.rpartition(":")
    if not colon or not (port == "*" or (port.isdigit() and int(port) < 65536)):
        raise _refuse(endpoint, "needs a port (tcp://HOST:PORT, or * for any free port)")
    return Bind(endpoint, *_host(endpoint, host))


def _host(endpoint: str, host: str) -> tuple[bool, str]:
    """(local, where) for the host part of a tcp:// endpoint, as libzmq resolves it."""
    if len(host) >= 2 and host[0] == "[" and host[-1] == "]":
        host = host[1:-1]
    host, percent, zone = host.partition("%")
    if percent and not zone:
        raise _refuse(endpoint, "has an empty %zone")
    if host == "*":
        return False, "every network interface (*)"
    if host in {name for _, name in socket.if_nameindex()}:
        return False, f"the address of network interface {host}"
    if ":" in host:
        raise _refuse(endpoint, "is IPv6: the daemon listens on IPv4 only")
    addresses = _resolve(host, numeric=True)
    if addresses is None:  # a host name
        addresses = _resolve(host, numeric=False) if host == "localhost" else None
        if not addresses or not all(a.is_loopback for a in addresses):
            raise _refuse(endpoint, "names a host: what it resolves to may change; bind an address")
        return True, f"{', '.join(map(str, addresses))} ({host}, loopback)"
    [address] = addresses
    if address.is_loopback:
        return True, f"{address} (loopback)"
    if address.is_unspecified:
        return False, f"{address}: every network interface"
    return False, str(address)


def _resolve(host: str, numeric: bool) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses getaddrinfo gives for `host` (the first is what libzmq binds), with
    the flags libzmq passes; None if it gives none."""
    flags = socket.AI_PASSIVE | (socket.AI_NUMERICHOST if numeric else 0)
    try:
        found = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM, 0, flags)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    addresses = [ipaddress.IPv4Address(info[4][0]) for info in found]
    return addresses[:1] if numeric else addresses


def _refuse(endpoint: str, problem: str) -> BadInput:
    return BadInput(
        f"--bind {shown(endpoint)} {problem}; use tcp://ADDRESS:PORT (e.g. {LOOPBACK_EXAMPLE},"
        " this machine only) or ipc://PATH"
    )


def listen(
    context: zmq.Context,
    binds: list[str],
    limits: Limits,
    keys: tuple[bytes, bytes] | None,
    socket_mode: int,
) -> tuple[zmq.Socket, list[str]]:
    """A ROUTER bound to `binds` (read by classify() already), CURVE with `keys`: the socket
    and the endpoints as bound (a port * resolved). ipc:// files get `socket_mode`."""
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 1000)  # flush the last error replies when stopping
    # A frame announced larger is dropped as its size arrives; one that stalls half-sent goes
    # with its connection once a ping has had no whole frame back for stall_timeout.
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes)
    sock.setsockopt(zmq.HEARTBEAT_IVL, round(limits.heartbeat_timeout * 1000))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, round(limits.stall_timeout * 1000))
    if keys is not None:
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = keys
    bound: list[str] = []
    try:
        for endpoint in binds:
            bound.append(_bind(sock, endpoint, socket_mode))
    except BaseException:
        sock.close()
        raise
    return sock, bound


def _bind(sock: zmq.Socket, endpoint: str, socket_mode: int) -> str:
    ipc = endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@")
    # An ipc socket is a file that anyone it lets write may connect to: made 0600 by the
    # umask during bind (never open to others, not even for a moment), then given the mode
    # asked for.
    umask = os.umask(0o177) if ipc else None
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        problem = zmq.strerror(e.errno)
        if e.errno == zmq.EADDRINUSE:
            problem += " (is a daemon already running? try `brushwork info`)"
        raise BrushworkError(f"cannot bind {endpoint}: {problem}") from None
    finally:
        if umask is not None:
            os.umask(umask)
    bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    if ipc:
        os.chmod(bound.removeprefix("ipc://"), socket_mode)
    return bound
