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
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from brushwork import xdg
from brushwork.errors import BrushworkError

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


def load_server_keys(folder: Path, endpoint: str) -> tuple[bytes, bytes]:
    """(public, secret) of the daemon, or a BrushworkError saying how to make them."""
    secret_file = folder / f"{SERVER_NAME}.key_secret"
    if not secret_file.is_file():
        raise BrushworkError(
            f"binding {endpoint} would expose the daemon beyond this machine, which needs CURVE "
            f"keys and there are none in {folder}: run `brushwork keys generate`, then give "
            f"clients {folder / (SERVER_NAME + '.key')} (--server-key)"
        )
    try:
        public, secret = zmq.auth.load_certificate(str(secret_file))
    except (OSError, ValueError) as e:
        raise BrushworkError(f"{secret_file}: not a CURVE key file ({e})") from None
    if not secret:
        raise BrushworkError(f"{secret_file}: holds no secret key")
    return public, secret


def start_authenticator(context: zmq.Context, folder: Path) -> ThreadAuthenticator:
    """Restrict CURVE clients to authorized_clients/*.key when that folder has keys, else
    admit any. Either way ZAP runs: it stamps every message with the client's public key
    (User-Id), which the daemon binds each job to."""
    allowed = folder / AUTHORIZED_DIR
    auth = ThreadAuthenticator(context)
    auth.start()
    if not any(allowed.glob("*.key")):
        log.warning(
            "no keys in %s: any client that has the server's public key may connect", allowed
        )
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        return auth
    auth.configure_curve(domain="*", location=str(allowed))
    log.info(
        "CURVE clients limited to the %d keys in %s", len(list(allowed.glob("*.key"))), allowed
    )
    return auth
