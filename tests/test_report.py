"""The CLI's progress display (report.py): on a terminal, a bar by work done with the time
left, for one image and for a batch."""

from __future__ import annotations

import io

import pytest

from brushwork import report
from brushwork.protocol import ProgressReply


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def progress(step: int, level: int, fraction: float, elapsed: float) -> ProgressReply:
    """Step `step` of 5 in level `level` of 2; 10 steps in all."""
    iteration = (level - 1) * 5 + step
    return ProgressReply(
        job="j", iteration=iteration, total=10, losses={"total": 2.5}, elapsed=elapsed,
        eta=elapsed * (1 - fraction) / fraction, level=level, levels=2, step=step, steps=5,
        fraction=fraction,
    )  # fmt: skip


def test_the_bar_moves_by_work_done_and_says_where_the_job_is():
    display = report.ProgressDisplay(Terminal())
    # The end of the coarse level: half of the steps, a fifth of the work.
    display(progress(5, 1, 0.2, elapsed=4.0))
    assert display.bar.n == 200
    assert display.bar.desc == (
        "Scale 1 of 2, step 5 of 5: 20% of the job's time, loss 2.5, 4 s, about 16 s left"
    )
    display(progress(5, 2, 1.0, elapsed=20.0))
    assert display.bar.n == 1000
    display.close()


def test_a_batch_bar_gives_each_image_its_share_and_the_batch_its_time_left(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(report.time, "monotonic", lambda: clock[0])
    display = report.ProgressDisplay(Terminal())
    display.job("[1/2] a.png: ", 0, 2)
    clock[0] += 10
    display(progress(3, 2, 0.5, elapsed=9.0))
    assert display.bar.n == 250  # half of the first of two images
    assert display.bar.desc.startswith("[1/2] a.png: Scale 2 of 2, step 3 of 5: 50% of the job's")
    assert display.bar.desc.endswith("about 9 s left; batch: about 30 s left")
    display.job("[2/2] b.png: ", 1, 2)
    clock[0] += 20
    display(progress(3, 2, 0.5, elapsed=9.0))
    assert display.bar.n == 750
    assert display.bar.desc.endswith("; batch: about 10 s left")
    display.close()


@pytest.mark.parametrize(("every", "lines"), [(None, 1), (4, 3), (0, 0)])
def test_off_a_terminal_plain_lines_every_n_steps(every, lines):
    stream = io.StringIO()
    display = report.ProgressDisplay(stream, every)
    for step in range(1, 6):
        display(progress(step, 1, step / 25, elapsed=float(step)))
    for step in range(1, 6):
        display(progress(step, 2, 0.2 + step * 0.16, elapsed=5.0 + 4 * step))
    assert display.bar is None
    assert len(stream.getvalue().splitlines()) == lines
