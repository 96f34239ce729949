"""CURVE key files for a daemon that listens beyond loopback.

Layout of the key folder (default ~/.config/brushwork/keys):
  server.key            the daemon's public key: give it to clients (--server-key)
  server.key_secret     the daemon's secret key: never leaves this machine
  authorized_clients/   optional: public keys (*.key) of the only clients allowed in;
                        when it holds none, any client that has server.key may connect
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from brushwork import xdg
from brushwork.client import monitor_handshakes
from brushwork.errors import BadInput, BrushworkError

SERVER_NAME = "server"
AUTHORIZED_DIR = "authorized_clients"
log = logging.getLogger("brushwork.server")


def default_dir() -> Path:
    return xdg.config_dir() / "keys"


def generate(folder: Path, name: str = SERVER_NAME, force: bool = False) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret into `folder`; returns (public, secret) paths."""
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise BrushworkError(
            f"{secret} already exists; keep it, or replace it with --force "
            "(clients then need the new public key)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    made_public, made_secret = zmq.auth.create_certificates(str(folder), name)
    os.chmod(made_secret, 0o600)
    return Path(made_public), Path(made_secret)


def load_server_keys(folder: Path, why: str) -> tuple[bytes, bytes]:
    """(public, secret) of the daemon, or a BrushworkError saying how to make them (`why`
    they are needed starts it); a BadInput if the file is not a key."""
    secret_file = folder / f"{SERVER_NAME}.key_secret"
    if not secret_file.is_file():
        raise BrushworkError(
            f"{why}, which needs CURVE keys and there are none in {folder}: run `brushwork "
            f"keys generate`, then give clients {folder / (SERVER_NAME + '.key')} (--server-key)"
        )
    try:
        public, secret = zmq.auth.load_certificate(str(secret_file))
    except (OSError, ValueError) as e:
        raise BadInput(f"{secret_file}: not a CURVE key file ({e})") from None
    if not secret:
        raise BadInput(f"{secret_file}: holds no secret key")
    return public, secret


class _AllowList:
    """ZAP's CURVE check: the keys in a folder (None: any key), each refusal logged."""

    def __init__(self, folder: Path, keys: dict[bytes, bool] | None) -> None:
        self.folder = folder
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        if self.keys is None or key in self.keys:
            return True
        log.warning("refused a CURVE client: its key %s is not in %s", key.decode(), self.folder)
        return False


def start_authenticator(context: zmq.Context, folder: Path) -> ThreadAuthenticator:
    """Restrict CURVE clients to authorized_clients/*.key when that folder has keys, else
    admit any. Either way ZAP runs: it stamps every message with the client's public key
    (User-Id), which the daemon binds each job to."""
    allowed = folder / AUTHORIZED_DIR
    keys = zmq.auth.load_certificates(allowed) if any(allowed.glob("*.key")) else None
    if keys is None:
        log.warning(
            "no keys in %s: any client that has the server's public key may connect",
            allowed,
            extra={"keep": True},
        )
    else:
        log.info("CURVE clients limited to the %d keys in %s", len(keys), allowed)
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(allowed, keys))
    return auth


class HandshakeLog:
    """Logs the handshakes a CURVE ROUTER refused: a client without CURVE, with the wrong
    server key, or with a key not admitted. A client retries every few hundred ms, so each
    kind is logged at most once per `every` seconds, with a count."""

    def __init__(
        self, context: zmq.Context, sock: zmq.Socket, endpoints: str, every: float = 30.0
    ) -> None:
        self.events = monitor_handshakes(context, sock)  # the caller polls it, then read()
        self.endpoints = endpoints
        self.every = every
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def read(self) -> None:
        while self.events.poll(0):
            event = recv_monitor_message(self.events)
            kind = _refusal(event["event"], event["value"])
            self._count[kind] = self._count.get(kind, 0) + 1
            now = time.monotonic()
            if now - self._last.get(kind, -self.every) >= self.every:
                count = self._count.pop(kind)
                more = f" ({count} such refusals since the last report)" if count > 1 else ""
                log.warning("refused a handshake on %s: %s%s", self.endpoints, kind, more)
                self._last[kind] = now

    def close(self) -> None:
        self.events.close()


def _refusal(event: int, value: int) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "the client's CURVE key is not authorized"
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:  # the client hung up first
        return "the client dropped the handshake (no CURVE, or another daemon's key)"
    if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "the client does not use CURVE (it needs --server-key)"
    return "the client's server key is not this daemon's"
