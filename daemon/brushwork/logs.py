"""The warnings a client can make the daemon log, throttled.

A client that sends a bad request, or names another client's job, gets a warning in the log;
one that sends thousands a second must not rotate the log until the start-up line and the
warnings before its own are gone. So each kind of warning is logged at most `burst` times per
`every` seconds, the rest counted and their number said in the next one logged (and the
values they show are cut by errors.shown where they are made).
"""

from __future__ import annotations

import logging
import time

BURST = 10
EVERY = 60.0


class Throttled:
    def __init__(self, log: logging.Logger, burst: int = BURST, every: float = EVERY) -> None:
        self.log = log
        self.burst = burst
        self.every = every
        self._window: dict[str, tuple[float, int]] = {}  # kind -> (window start, logged)
        self._dropped: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        start, logged = self._window.get(kind, (now, 0))
        if now - start >= self.every:
            start, logged = now, 0
        if logged >= self.burst:
            self._dropped[kind] = self._dropped.get(kind, 0) + 1
            self._window[kind] = (start, logged)
            return
        self._window[kind] = (start, logged + 1)
        dropped = self._dropped.pop(kind, 0)
        if dropped:
            message += f" ({dropped} more of this kind not logged since)"
        self.log.warning(message, *args)
