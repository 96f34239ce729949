"""The errors users see, with the CLI's exit status of each. Standard library only (shipped
with the plug-in)."""

# Exit statuses of the `brushwork` command (docs/cli.md, "Exit status").
EXIT_FAILED = 1  # a job failed (or a batch had failures), or anything else went wrong
EXIT_BAD_INPUT = 2  # a bad option, a missing or unreadable file, settings the daemon refused
EXIT_NO_DAEMON = 3  # no daemon answered at the endpoint
EXIT_REFUSED = 4  # the daemon refused the job: too large, queue full, shutting down...
EXIT_CANCELLED = 5
EXIT_OUT_OF_MEMORY = 6
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM (128 + 15): the job on a daemon is cancelled first


class BrushworkError(Exception):
    """An error the user can act on: its message is one line, shown without a traceback."""

    exit_code = EXIT_FAILED


class BadInput(BrushworkError):
    """What the user gave cannot be used: an option value, a file, a path."""

    exit_code = EXIT_BAD_INPUT


SHOWN_CHARS = 64  # of a value a message shows (echoed to a client, or logged)


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """`value` as every message shows what it was given: its repr, cut to `limit` characters
    and its length said, so that nothing a client sends is echoed back or logged whole."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text.encode()):,} bytes)"
