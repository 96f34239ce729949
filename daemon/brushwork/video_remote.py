"""`brushwork video --server ENDPOINT`: the clip's frames run on a daemon (clip.Clip), a job a
frame carrying the frames before it; on a daemon with several workers (`serve --ray`) the
clip runs as a chunk a worker, cross-faded at the joins. The frames folder, the resume and the
encoding are the in-process command's (commands/video.py): this module only replaces its
loop over the frames."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from brushwork.settings import Settings, Temporal
    from brushwork.video import Clip as Source


def wanted(args: argparse.Namespace) -> bool:
    """Run on a daemon: --server given, or $BRUSHWORK_SERVER set (else in this process)."""
    import os

    from brushwork.client import ENV_SERVER

    return bool(args.server or os.environ.get(ENV_SERVER))


def run(
    args: argparse.Namespace,
    settings: Settings,
    hold: Temporal,
    styles: Sequence[np.ndarray],
    source: Source,
    names: Sequence[Path],
    todo: Sequence[int],
) -> None:
    """The frames `todo` (numbers from 1) of `source` into `names` (one PNG a frame),
    continued from those that exist."""
    from brushwork import images, video
    from brushwork.client import duration_text
    from brushwork.clip import Clip, ClipProgress, plan, segments
    from brushwork.remote import client_from_args

    todo = [i - 1 for i in todo]  # indices from 0, as Clip counts
    bits = 8 if next(iter(video.read(source))).dtype.name == "uint8" else 16

    def finished(index: int) -> np.ndarray | None:
        return images.load(names[index]) if index >= 0 and names[index].exists() else None

    def frames(index: int) -> Iterator[np.ndarray]:
        if source.is_folder:
            return (images.load(path) for path in video.folder_frames(source.path)[index:])
        return itertools.islice(video.read(source), index, None)  # decoded from the start

    written = 0

    def write(index: int, image: np.ndarray) -> None:
        nonlocal written
        images.save(names[index], image, bit_depth=bits)
        written += 1
        print(f"[{written}/{len(todo)}] wrote {names[index].name}{left}", file=sys.stderr)

    left = ""

    def progress(p: ClipProgress) -> None:
        nonlocal left
        if p.done > 0:
            left = f"; clip: about {duration_text(p.elapsed / p.done * (p.total - p.done))} left"

    with client_from_args(args) as client:
        hello = client.hello()
        workers = len(client.info().workers)
        print(
            f"brushwork: {len(todo)} frames on the daemon at {client.endpoint} ({hello.device},"
            f" {workers} worker{'s' if workers > 1 else ''})",
            file=sys.stderr,
        )
        chunks = plan(segments(todo, finished, max(hold.offsets)), workers)
        runner = Clip(client, frames, write, styles, settings, temporal=hold, progress=progress)
        try:
            runner.run(chunks)
        except KeyboardInterrupt:
            print(
                f"brushwork: {written} new frames kept in {names[0].parent}; the same command"
                " goes on from there",
                file=sys.stderr,
            )
            raise
