"""The `brushwork` command: discovers the subcommands in brushwork.commands and runs one."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from brushwork import __version__, commands
from brushwork.errors import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_DAEMON,
    EXIT_OUT_OF_MEMORY,
    EXIT_REFUSED,
    EXIT_TERMINATED,
    BrushworkError,
)

EPILOG = f"""exit status: 0 done; {EXIT_FAILED} a job failed (or a batch had failures); \
{EXIT_BAD_INPUT} bad option, file or settings; {EXIT_NO_DAEMON} no daemon answered; \
{EXIT_REFUSED} the daemon refused the job (too large, queue full, stopping); \
{EXIT_CANCELLED} cancelled; {EXIT_OUT_OF_MEMORY} out of memory; {EXIT_INTERRUPTED} Ctrl-C; \
{EXIT_TERMINATED} SIGTERM"""


class _Parser(argparse.ArgumentParser):
    """Bad options are one line on stderr (exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        if self.prog.endswith(" batch") and "required: INPUT" in message:
            message += "; put the INPUTS before --style, which takes every path after it"
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="brushwork",
        description="Neural style transfer: CLI, daemon and batch jobs.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"brushwork {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"brushwork.commands.{info.name}").register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM (kill, a closing terminal's session manager, a CI timeout): unwinds like
    Ctrl-C, so a job on a daemon is cancelled instead of running on for nobody."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # `serve` sets its own: it stops cleanly
    try:
        return args.run(args)
    except BrushworkError as e:
        print(f"brushwork: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("brushwork: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("brushwork: terminated", file=sys.stderr)
        return EXIT_TERMINATED


if __name__ == "__main__":
    sys.exit(main())
