"""`brushwork batch INPUTS... --style S [S ...] -o OUTDIR`: many images, one or more styles
(blended), through a daemon.

Inputs are files, folders (their images, not recursive) and glob patterns; put them before
--style, which takes every path after it. Every job goes over the socket to the daemon; when
none answers (and no --server was given) the batch runs a daemon on a thread of its own
process for its duration. Outputs are written atomically, and what made each one is kept
beside them (OUTDIR/.brushwork-batch.json: its settings, seed and inputs): running the same
command again skips the outputs made as asked, so it resumes an interrupted batch, and redoes
those made with other settings or inputs; --overwrite redoes them all. Results are reported
in input order. A daemon whose queue is full is waited for.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from brushwork.client import Client, DaemonError, JobEvent, NoDaemon
from brushwork.commands.stylize import (
    add_output_arguments,
    add_settings_arguments,
    check_output_arguments,
    for_content,
    settings_from_args,
)
from brushwork.errors import BadInput, BrushworkError
from brushwork.manifest import Manifest, job_key
from brushwork.protocol import QUEUE_FULL, ErrorReply, ProgressReply, RawImage
from brushwork.remote import add_device_argument, add_server_arguments, connect, style_fit
from brushwork.settings import Settings

if TYPE_CHECKING:
    import numpy as np

RETRY_FIRST, RETRY_MOST = 0.5, 5.0  # seconds between submits while the daemon's queue is full
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".tga"}


@dataclass
class Item:
    index: int  # 1-based, for "[3/10]"
    source: Path
    output: Path
    key: dict = field(default_factory=dict)  # what makes the output (manifest.job_key)
    job: str | None = None
    bit_depth: int = 8
    started: float = 0.0


@dataclass
class Prepared:
    """An item's images as they go to the daemon (made on the files thread)."""

    content: RawImage
    styles: list[RawImage]
    init: RawImage | None
    bit_depth: int
    settings: Settings  # at the content's size (stylize.for_content)


def register(sub: argparse._SubParsersAction) -> None:
    from brushwork.weights import add_weights_argument

    p = sub.add_parser(
        "batch",
        help="stylize many images through the daemon (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument(
        "--style",
        nargs="+",
        required=True,
        type=Path,
        metavar="S",
        help="style image(s), blended; takes every path after it, so put INPUTS first",
    )
    p.add_argument("-o", "--output-dir", required=True, type=Path, metavar="OUTDIR")
    p.add_argument(
        "--format",
        default="png",
        metavar="EXT",
        help="output file type: png (keeps 16 bits and alpha), jpg, tif... (default %(default)s)",
    )
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    add_settings_arguments(p)
    add_output_arguments(p)
    add_server_arguments(p)
    local = p.add_argument_group("daemon started by the batch when none answers")
    add_device_argument(local)
    add_weights_argument(local)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from brushwork import images

    settings = settings_from_args(args, len(args.style))
    check_output_arguments(args)
    for style in args.style:
        if style.is_dir():
            raise BadInput(
                f"--style {style}: is a folder; put the INPUTS before --style, which takes "
                "every path after it"
            )
    # Everything is checked before OUTDIR is made: a typo leaves no empty folder behind.
    items = plan(args.inputs, args.output_dir, images.output_suffix(args.format), args.style)
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise BadInput(f"-o {args.output_dir}: not a folder")
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"-o {args.output_dir}: cannot create the folder ({e.strerror})") from None
    images.check_output_path(items[0].output)
    made = Manifest(args.output_dir)
    init_path = Path(args.init) if settings.init == "image" else None
    for item in items:
        item.key = job_key(
            settings, [item.source, *args.style, init_path], jpeg_quality=args.jpeg_quality,
            size_given=args.size is not None,
        )  # fmt: skip
    redo = [i for i in items if i.output.exists() and made.changed(i.output, i.key)]
    todo = [i for i in items if args.overwrite or not i.output.exists() or i in redo]
    skipped = len(items) - len(todo)
    if skipped:
        print(f"brushwork: {skipped} of {len(items)} outputs exist: skipped", file=sys.stderr)
    if redo and not args.overwrite:
        print(
            f"brushwork: {len(redo)} outputs were made with other settings or inputs: redoing them",
            file=sys.stderr,
        )
    if not todo:
        return 0
    # Each style at the size every job needs (the output's long side is the same for all,
    # unless --size 0 keeps each content's own size).
    fit = style_fit(settings, (settings.size, settings.size)) if settings.size else None
    styles = [images.load(p, fit=fit) for p in args.style]
    init = images.load(args.init) if settings.init == "image" else None

    with _daemon(args) as client:
        batch = Batch(
            client, settings, styles, init, len(items), args.jpeg_quality,
            size_given=args.size is not None, manifest=made,
        )  # fmt: skip
        failures = batch.run(todo)
    done = len(todo) - len(failures)
    print(
        f"brushwork: batch finished: {done} written, {skipped} skipped, {len(failures)} failed",
        file=sys.stderr,
    )
    for _, message in sorted(failures, key=lambda failure: failure[0].index):
        print(f"  FAILED {message}", file=sys.stderr)
    return 1 if failures else 0


def plan(inputs: list[str], out_dir: Path, suffix: str, styles: list[Path]) -> list[Item]:
    """Input files in order (duplicates once) with their outputs; clashing names, and an
    output that would replace an input or a style, are refused."""
    sources: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found = [path]
        else:  # a pattern the shell did not expand (quoted, or on Windows)
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise BadInput(f"{text}: no such file, folder or matching files")
        sources += [p for p in found if p.resolve() not in {s.resolve() for s in sources}]
    if not sources:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise BadInput(f"no input images (folders are searched for {kinds})")
    by_output: dict[Path, Path] = {}
    inputs_at = {p.resolve(): p for p in [*sources, *styles]}
    items = []
    for index, source in enumerate(sources, 1):
        output = out_dir / (source.stem + suffix)
        if output in by_output:
            raise BadInput(f"{by_output[output]} and {source} would both write {output}")
        if output.resolve() in inputs_at:
            raise BadInput(
                f"-o {out_dir}: the output of {source} would replace the input "
                f"{inputs_at[output.resolve()]}; choose another folder or --format"
            )
        by_output[output] = source
        items.append(Item(index, source, output))
    return items


class Batch:
    """Keeps a job on each of the daemon's workers and one more queued (so a worker that
    finishes starts the next at once), writes results as they come, collects failures, and
    reports each image in input order (a later image may finish first).

    Files are read and written on a thread: decoding or encoding a large PNG can take longer
    than the daemon's heartbeat timeout, and the main thread must keep listening meanwhile
    (a silent client's jobs get cancelled).
    """

    def __init__(
        self,
        client: Client,
        settings: Settings,
        styles: list[np.ndarray],
        init: np.ndarray | None,
        total: int,
        jpeg_quality: int,
        size_given: bool = True,
        manifest: Manifest | None = None,
    ) -> None:
        """size_given: every output at settings.size (else stylize.for_content's); manifest:
        where each output made is recorded."""
        from brushwork.report import ProgressDisplay

        self.client = client
        self.settings = settings
        self.styles = styles
        self.init = init
        self.total = total
        self.jpeg_quality = jpeg_quality
        # The bar on a terminal; elsewhere the per-image lines are the progress.
        self.display = ProgressDisplay(sys.stderr, None if sys.stderr.isatty() else 0)
        self.failures: list[tuple[Item, str]] = []
        self.saves: dict[Future, Item] = {}
        self.finished: dict[int, str] = {}  # item index -> its line, until its turn comes
        self.order: deque[int] = deque()  # indices still to report, in input order
        self.shown_job: str | None = None
        self.in_flight = max(1, len(client.info().workers)) + 1
        self.retry_at = 0.0  # while the daemon's queue is full: when to submit again
        self.retry_wait = RETRY_FIRST
        self.size_given = size_given
        self.manifest = manifest

    def run(self, todo: list[Item]) -> list[tuple[Item, str]]:
        self.order.extend(item.index for item in todo)
        self.count = len(todo)
        waiting = deque(todo)
        running: dict[str, Item] = {}
        loads: dict[int, Future] = {}
        with ThreadPoolExecutor(1, thread_name_prefix="brushwork-files") as files:
            self.files = files

            def load(item: Item) -> Future:
                if item.index not in loads:
                    loads[item.index] = files.submit(self._prepare, item.source)
                return loads[item.index]

            try:
                while waiting or running:
                    for item in list(waiting)[: self.in_flight]:  # read ahead
                        load(item)
                    while waiting and len(running) < self.in_flight:
                        if running and not load(waiting[0]).done():
                            break  # listen to the running jobs while it loads
                        if time.monotonic() < self.retry_at:
                            break  # the daemon's queue was full a moment ago
                        item = waiting[0]
                        submitted = self._submit(item, load(item))
                        if submitted is None:
                            break  # queue full: it stays first in line
                        waiting.popleft()
                        del loads[item.index]
                        if submitted:
                            running[item.job] = item
                    if running:
                        self._handle(self.client.next_event(running), running)
                    elif waiting:
                        time.sleep(max(0.0, self.retry_at - time.monotonic()))
                    self._collect_saves(block=False)
            except BaseException:
                for job in running:  # leave nothing running for a batch that is gone; no
                    self.client.abandon(job)  # waiting for replies: the daemon may be gone
                raise
            finally:
                self.display.close()
            self._collect_saves(block=True)
        return self.failures

    def _prepare(self, source: Path) -> Prepared:
        """Read an input and fit it and the styles to the job's sizes (remote.fit_inputs)."""
        from brushwork import images, scales
        from brushwork.remote import fit_inputs

        size = self.settings.size
        content = images.load(source, fit=lambda h, w: scales.output_size(h, w, size))
        settings = for_content(self.settings, self.size_given, *content.shape[:2])
        fitted, styles, init = fit_inputs(content, self.styles, settings, self.init)
        return Prepared(
            _raw(fitted),
            [_raw(s) for s in styles],
            None if init is None else _raw(init),
            8 if content.dtype == "uint8" else 16,
            settings,
        )

    def _submit(self, item: Item, load: Future) -> bool | None:
        """True once the daemon accepted the item's job; False if it failed (listed); None
        if the daemon's queue is full (try again after retry_at)."""
        try:
            prepared = load.result()
            item.bit_depth = prepared.bit_depth
            item.job = self.client.submit(
                prepared.content,
                prepared.styles,
                prepared.settings,
                init=prepared.init,
                output_dtype="f32",
            )
        except NoDaemon:
            raise
        except DaemonError as e:
            if e.code != QUEUE_FULL:
                self._fail(item, str(e))
                return False
            if self.retry_wait == RETRY_FIRST:
                self.display.write("brushwork: the daemon's queue is full: waiting for room")
            self.retry_at = time.monotonic() + self.retry_wait
            self.retry_wait = min(RETRY_MOST, 2 * self.retry_wait)
            return None
        except BrushworkError as e:  # unreadable file, too large, bad input...
            self._fail(item, str(e))
            return False
        self.retry_wait = RETRY_FIRST
        item.started = time.monotonic()
        return True

    def _handle(self, event: JobEvent, running: dict[str, Item]) -> None:
        from brushwork import images, pixels

        item = running[event.job]
        if isinstance(event, ProgressReply):
            if event.job != self.shown_job:
                self.shown_job = event.job
                done = self.count - len(self.order) + len(self.finished)  # images finished
                prefix = f"[{item.index}/{self.total}] {item.source.name}: "
                self.display.job(prefix, done, self.count)
            self.display(event)
            return
        del running[event.job]
        if isinstance(event, ErrorReply):
            self._fail(item, event.message)
        else:
            image = pixels.to_array(event.image)
            save = self.files.submit(
                images.save, item.output, image, bit_depth=item.bit_depth,
                jpeg_quality=self.jpeg_quality,
            )  # fmt: skip
            self.saves[save] = item

    def _collect_saves(self, block: bool) -> None:
        for save in wait(self.saves).done if block else [f for f in self.saves if f.done()]:
            item = self.saves.pop(save)
            try:
                save.result()
            except (BrushworkError, OSError) as e:
                self._fail(item, f"cannot write {item.output}: {e}")
            else:
                self._say(f"wrote {item.output} ({time.monotonic() - item.started:.1f} s)", item)
                self._record(item)

    def _record(self, item: Item) -> None:
        if self.manifest is None:
            return
        try:
            self.manifest.record(item.output, item.key)
        except OSError as e:  # the output is there; a rerun skips it, as without a manifest
            self.display.write(f"brushwork: cannot write {self.manifest.path}: {e.strerror}")
            self.manifest = None

    def _fail(self, item: Item, message: str) -> None:
        if str(item.source) not in message:
            message = f"{item.source}: {message}"
        self.failures.append((item, message))
        self._say(f"FAILED {message}", item)

    def _say(self, text: str, item: Item) -> None:
        """Report an image once every image before it has been reported."""
        self.finished[item.index] = f"[{item.index}/{self.total}] {text}"
        while self.order and self.order[0] in self.finished:
            self.display.write(self.finished.pop(self.order.popleft()))


def _raw(array: np.ndarray) -> RawImage:
    from brushwork import pixels

    return pixels.from_array(array)


@contextlib.contextmanager
def _daemon(args: argparse.Namespace) -> Iterator[Client]:
    """A client of the daemon that answers (an explicit --server that does not is an error,
    NoDaemon); else of one started here, on a thread."""
    remote = connect(args)
    if remote is None:
        with _local_daemon(args) as local:
            yield local
        return
    print(f"brushwork: batch on the daemon at {remote.endpoint} ({remote.device})", file=sys.stderr)
    with remote.client as client:
        yield client


@contextlib.contextmanager
def _local_daemon(args: argparse.Namespace) -> Iterator[Client]:
    from brushwork.server import build

    server, pool = build(["tcp://127.0.0.1:*"], args.device, args.weights)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(pool, stop), daemon=True)
    thread.start()
    print(
        f"brushwork: no daemon answered; running one inside this batch on {pool.device}",
        file=sys.stderr,
    )
    try:
        with Client(server.endpoints[0], timeout=30.0) as client:
            yield client
    finally:
        stop.set()
        thread.join()
        server.close()
        pool.close()
