"""`brushwork serve`: the daemon. Loads VGG16 once and runs jobs sent over ZeroMQ."""

from __future__ import annotations

import argparse
import contextlib
import logging
import logging.handlers
import os
import signal
import sys
import threading
from pathlib import Path

from brushwork import curve, endpoints, xdg
from brushwork.protocol import DEFAULT_ENDPOINT


def register(sub: argparse._SubParsersAction) -> None:
    from brushwork.remote import add_device_argument
    from brushwork.weights import add_weights_argument

    p = sub.add_parser(
        "serve",
        help="run the daemon that the plug-in, `batch` and `stylize --server` talk to",
        description=__doc__,
    )
    p.add_argument(
        "--bind",
        action="append",
        metavar="ENDPOINT",
        help=f"where to listen, repeatable: tcp://ADDRESS:PORT or ipc://PATH (default "
        f"{DEFAULT_ENDPOINT}); anything beyond loopback needs CURVE keys",
    )
    add_device_argument(p)
    add_weights_argument(p)
    p.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="largest image a job may hold, in pixels: inputs, output, styles after resizing "
        "(default: the device's memory / 256 B, at most 268 Mpx)",
    )
    p.add_argument(
        "--max-job-memory",
        type=_bytes,
        metavar="SIZE",
        help="refuse jobs whose estimated peak memory is larger, e.g. 4G or 512M; jobs tile "
        "to fit within it (default: the device's memory)",
    )
    p.add_argument(
        "--max-queue", type=int, default=16, metavar="N", help="jobs waiting (default %(default)s)"
    )
    p.add_argument(
        "--max-queue-memory",
        type=_bytes,
        metavar="SIZE",
        help="bytes of images the waiting and running jobs may hold together, e.g. 2G; also "
        "the largest frame taken (default: 1/32 of this machine's memory, at least 256M)",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="cancel the jobs of a client silent this long (default %(default)g s)",
    )
    p.add_argument(
        "--keys",
        type=Path,
        metavar="DIR",
        help=f"CURVE key folder from `brushwork keys generate` (default {curve.default_dir()})",
    )
    p.add_argument(
        "--curve",
        action="store_true",
        help="CURVE on every endpoint, loopback and ipc too (where local users are not trusted)",
    )
    scale = p.add_argument_group("scaling out (needs `pip install 'brushwork[ray]'`)")
    scale.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the jobs on Ray actors: `auto` starts a private Ray instance on this machine "
        "(loopback only), an address (host:6379) joins a running cluster",
    )
    scale.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="Ray actors, one job each at a time (default: one per GPU of the cluster, else "
        "one per node)",
    )
    p.add_argument(
        "--socket-mode",
        type=_mode,
        default=0o600,
        metavar="MODE",
        help="permissions of ipc:// sockets, octal: 600 lets only this user connect, 660 its "
        "group too (default 600)",
    )
    p.add_argument(
        "--log-file",
        type=Path,
        metavar="PATH",
        help=f"log file, besides stderr (default {xdg.state_dir() / 'daemon.log'})",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from brushwork.errors import BrushworkError
    from brushwork.server import build

    if args.max_queue < 1 or args.heartbeat_timeout <= 0:
        raise BrushworkError("--max-queue must be at least 1 and --heartbeat-timeout above 0")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise BrushworkError("--max-pixels must be at least 1")
    if args.workers is not None and (args.ray is None or args.workers < 1):
        raise BrushworkError(
            f"--workers {args.workers}: give --ray too, and at least 1 (without Ray the daemon "
            "has one worker)"
        )
    binds = args.bind or [DEFAULT_ENDPOINT]
    for endpoint in binds:  # a bad one is the only line said: before the log starts
        endpoints.classify(endpoint)
    log_file = _configure_logging(args.log_file or xdg.state_dir() / "daemon.log")
    logging.getLogger("brushwork.server").info("log file %s", log_file, extra={"keep": True})
    stop = threading.Event()
    _stop_on_signals(stop)
    server, pool = build(
        binds,
        args.device,
        args.weights,
        max_pixels=args.max_pixels,
        max_job_bytes=args.max_job_memory,
        max_queue=args.max_queue,
        max_queue_bytes=args.max_queue_memory,
        heartbeat_timeout=args.heartbeat_timeout,
        keys_dir=args.keys,
        curve_everywhere=args.curve,
        ray=args.ray,
        workers=args.workers,
        socket_mode=args.socket_mode,
    )
    _stop_on_signals(stop)  # again: ray.init installs a SIGTERM handler that kills the process
    tokens = _leave_operator_token(server.operator_token, server.endpoints)
    try:
        server.serve(pool, stop)
    finally:
        for path in tokens:
            path.unlink(missing_ok=True)
        server.close()
        pool.close()
    return 0


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())  # serve() notices within 0.1 s


def _leave_operator_token(token: str, endpoints: list[str]) -> list[Path]:
    """The operator token in a 0600 file per endpoint: `brushwork info` and `brushwork cancel`
    run by this user find it there and may list and cancel every job."""
    paths = [xdg.operator_token_file(e) for e in endpoints]
    for path in paths:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
    return paths


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _bytes(text: str) -> int:
    """'4G', '512M', '1.5G' or a number of bytes."""
    number, unit = text.strip().rstrip("iBb"), ""
    if number[-1:].upper() in _UNITS:
        number, unit = number[:-1], number[-1].upper()
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 4G or 512M, got {text!r}"
        ) from None
    if not 2**20 <= value < 2**60:
        raise argparse.ArgumentTypeError(f"{text!r} is not a sensible memory size (1M or more)")
    return int(value)


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"expected an octal mode such as 600 or 660, got {text!r}")
    return mode


class _PrivateLog(logging.handlers.RotatingFileHandler):
    """The log names jobs, clients' keys and addresses: 0600, the files rotation makes too.
    Lines logged with extra={"keep": True} (the start-up lines, the CURVE warning) are written
    again at the top of every new file: rotation never loses what the daemon is."""

    KEPT = 8

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._kept: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "keep", False):
            self._kept = [*self._kept, record][-self.KEPT :]
        super().emit(record)

    def doRollover(self) -> None:
        super().doRollover()
        if self.stream is None:
            self.stream = self._open()
        for record in self._kept:
            self.stream.write(self.format(record) + self.terminator)

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with contextlib.suppress(OSError):  # a log an older version made 0644
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def _configure_logging(path: Path) -> Path:
    log = logging.getLogger("brushwork")
    log.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s brushwork[%(process)d] %(levelname)s %(message)s")
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(fmt)
    log.addHandler(stderr)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handler = _PrivateLog(path, maxBytes=1 << 20, backupCount=3)
    except OSError as e:
        log.warning("no log file: %s", e)
        return path
    handler.setFormatter(fmt)
    log.addHandler(handler)
    return path
