"""Progress as people read it: a bar that moves by estimated time (not by step count) on a
terminal, plain lines every N steps elsewhere (a log, a pipe). `stylize` and `batch` use it;
it takes the engine's Progress and the daemon's ProgressReply alike."""

from __future__ import annotations

import time
from typing import IO

from tqdm import tqdm

from brushwork.client import duration_text, eta_text, progress_text, work_done
from brushwork.protocol import ProgressReply

DEFAULT_PRINT_EVERY = 10  # steps between plain lines when not on a terminal
_TICKS = 1000  # the bar's resolution


def summary(p: ProgressReply) -> str:
    """ "Scale 2 of 3, step 40 of 67: 31% of the job's time, loss 12.5, 20 s, about 44 s
    left". The share is of the time (the bar's), not of the steps: the first step of a job
    also describes the style, and a finer level's steps take longer, so the two differ and
    the line says which it is. (`p` may also be the engine's Progress: the same fields.)"""
    loss = p.losses.get("total")
    loss_text = f", loss {loss:.4g}" if loss is not None else ""
    return (
        f"{progress_text(p)}: {work_done(p):.0%} of the job's time{loss_text}, "
        f"{duration_text(p.elapsed)}"
        f"{eta_text(p)}"
    )


class ProgressDisplay:
    """Call it with each progress event. print_every: None = a bar on a terminal and a line
    every DEFAULT_PRINT_EVERY steps elsewhere; N > 0 = a line every N steps (no bar); 0 =
    nothing. For a batch, job() places each job's share in one overall bar."""

    def __init__(self, stream: IO[str], print_every: int | None = None) -> None:
        self.stream = stream
        tty = stream.isatty()
        self.every = (0 if tty else DEFAULT_PRINT_EVERY) if print_every is None else print_every
        self.bar = (
            tqdm(
                total=_TICKS,
                file=stream,
                bar_format="{percentage:3.0f}%|{bar}| {desc}",
                dynamic_ncols=True,
                leave=False,
            )
            if tty and print_every is None
            else None
        )
        self.prefix, self.base, self.share = "", 0.0, 1.0
        self.batch_start: float | None = None  # a batch of several jobs began then
        self._printed = 0  # print_every intervals already printed
        self._last = 0  # the last iteration shown: a preview repeats its progress

    def job(self, prefix: str, done: int, count: int) -> None:
        """The next events belong to a job after `done` of `count`; lines start with prefix."""
        self.prefix, self.base, self.share = prefix, done / count, 1 / count
        if count > 1 and self.batch_start is None:
            self.batch_start = time.monotonic()
        self._printed = self._last = 0

    def __call__(self, p: ProgressReply) -> None:
        if p.iteration == self._last:
            return
        self._last = p.iteration
        if self.bar is not None:
            done = self.base + self.share * work_done(p)
            self.bar.set_description_str(
                self.prefix + summary(p) + self._batch_left(done), refresh=False
            )
            self.bar.update(round(_TICKS * done) - self.bar.n)
        elif self.every and (p.iteration // self.every > self._printed or p.iteration == p.total):
            self._printed = p.iteration // self.every
            self.write(f"{self.prefix}{summary(p)}")

    def _batch_left(self, done: float) -> str:
        """The whole batch's time left, from its share done (images of equal cost)."""
        if self.batch_start is None or done <= 0:
            return ""
        elapsed = time.monotonic() - self.batch_start
        return f"; batch: about {duration_text(elapsed * (1 - done) / done)} left"

    def write(self, text: str) -> None:
        """A message that does not tear the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
