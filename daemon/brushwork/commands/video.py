"""`brushwork video IN -o OUT --style S [S ...]`: a clip stylised frame by frame without
flicker (each frame held to the ones before it by optical flow: docs/video.md), in this
process; with --server (or $BRUSHWORK_SERVER set) on that daemon, a job a frame, and on a
daemon with several workers (serve --ray) a chunk of the clip a worker (docs/cli.md).

IN is a video file or a folder of numbered frames; OUT a folder (PNG frames, frame_000001.png
numbered as IN's frames) or a video file (.mp4, .mkv, .mov, .webm, .gif) at IN's frame rate,
with IN's audio copied where the container takes it. Frames are written as they finish (for
a video file into a hidden folder beside it, encoded at the end and then removed), so running
the same command again goes on where it stopped and redoes nothing finished; changed settings
or styles redo every frame. Ctrl-C keeps the finished frames.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

from brushwork import video_remote
from brushwork.commands.stylize import add_settings_arguments, settings_from_args
from brushwork.errors import BadInput
from brushwork.remote import add_server_arguments

MANIFEST = ".brushwork-video.json"  # in the frames folder: what made its frames


def register(sub: argparse._SubParsersAction) -> None:
    from brushwork.settings import Temporal
    from brushwork.weights import add_weights_argument

    p = sub.add_parser(
        "video",
        help="stylize a video or a folder of frames without flicker (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, metavar="IN", help="video file or folder of frames")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT")
    p.add_argument("--style", nargs="+", required=True, type=Path, metavar="S",
                   help="style image(s), blended")  # fmt: skip
    p.add_argument("--start", type=int, default=1, metavar="N", help="first frame (from 1)")
    p.add_argument("--end", type=int, metavar="N", help="last frame (default: the last)")
    p.add_argument("--fps", type=Fraction, metavar="R",
                   help="frame rate of a video made from a folder (default 24)")  # fmt: skip
    p.add_argument(
        "--temporal-weight", type=float, default=Temporal().weight, metavar="W",
        help="how strongly each frame holds to the ones before it; 0 = frames one by one, "
        "which flickers (default %(default)g)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="redo frames that exist")
    add_settings_arguments(p)
    add_server_arguments(p)  # given (or $BRUSHWORK_SERVER): frames on that daemon
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default %(default)s)")
    add_weights_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from brushwork import images, video
    from brushwork.settings import Temporal

    settings = settings_from_args(args, len(args.style))
    try:
        hold = Temporal(weight=args.temporal_weight)
    except ValueError as e:
        raise BadInput(f"--temporal-weight: {e}") from None
    if args.fps is not None and args.fps <= 0:
        raise BadInput(f"--fps must be above 0, got {args.fps}")
    clip = video.probe(args.input, args.fps)
    end = clip.frames if args.end is None else args.end
    if not 1 <= args.start <= end <= clip.frames:
        raise BadInput(
            f"--start {args.start} --end {end}: {args.input} has frames 1 to {clip.frames}"
        )
    out = args.output
    if video.is_video_file(out):
        frames_dir = out.with_name(f".{out.name}.frames")
    elif out.suffix and not out.is_dir():
        kinds = ", ".join(video.VIDEO_CODECS)
        raise BadInput(f"-o {out}: a folder for PNG frames, or a video file ({kinds})")
    else:
        frames_dir = out
    styles = [images.load(p) for p in args.style]
    key = _key(settings, hold, styles, clip)
    span_key = f"brushwork {key} frames {args.start}-{end}"
    done = video.is_video_file(out) and out.exists() and not args.overwrite
    if done and _comment(out) == span_key:
        print(f"brushwork: {out} is done (same clip, frames and settings)", file=sys.stderr)
        return 0
    _prepare(frames_dir, key, args.overwrite)

    names = [frames_dir / f"frame_{i:06d}.png" for i in range(1, clip.frames + 1)]
    if todo := _to_make(names, args.start, end):
        if video_remote.wanted(args):
            video_remote.run(args, settings, hold, styles, clip, names, todo)
        else:
            ClipRun(args, settings, hold, styles, clip, names).run(args.start, end, todo)
    if video.is_video_file(out):
        left_out = video.encode(
            names[args.start - 1 : end], out, clip.fps, None if clip.is_folder else clip,
            (args.start, end), comment=span_key,
        )  # fmt: skip
        if left_out:
            print(f"brushwork: no audio in {out}: {left_out}", file=sys.stderr)
        shutil.rmtree(frames_dir)
    print(f"brushwork: wrote {out}", file=sys.stderr)
    return 0


class ClipRun:
    """The frames start..end of a clip stylised in order, each held to the finished frames
    before it (temporal.History), finished frames skipped."""

    def __init__(self, args, settings, hold, styles, clip, names) -> None:
        self.args, self.settings, self.hold, self.styles = args, settings, hold, styles
        self.clip, self.names = clip, names

    def run(self, start: int, end: int, todo: list[int]) -> None:
        """`todo`: the frames of start..end to make (_to_make)."""
        from brushwork import images, temporal, video
        from brushwork.report import ProgressDisplay

        engine = _engine(self.args)
        history = temporal.History(self.hold.offsets)
        reach = max(self.hold.offsets)  # frames before a frame that it can be held to
        display = ProgressDisplay(sys.stderr, None if sys.stderr.isatty() else 0)
        began, made = time.monotonic(), 0
        try:
            for i, content in enumerate(video.read(self.clip), 1):
                if i > end:
                    break
                if i < todo[0] - reach:
                    continue
                name = self.names[i - 1]
                if name.exists():  # finished before: the frames after it are held to it
                    history.add(i, content, images.load(name))
                    continue
                if i < start:
                    continue
                display.job(f"[frame {i}, {made + 1} of {len(todo)}] ", made, len(todo))
                previous = history.previous(i) if self.hold.weight > 0 else []
                result = temporal.stylize_frame(
                    engine, content, self.styles, self.settings, previous=previous,
                    temporal=self.hold, progress=display,
                )  # fmt: skip
                bits = 8 if content.dtype == "uint8" else 16
                images.save(name, result.image, bit_depth=bits)
                history.add(i, content, result.image)
                made += 1
                each = (time.monotonic() - began) / made
                left = _duration(each * (len(todo) - made))
                display.write(
                    f"[{made}/{len(todo)}] wrote {name.name} ({result.elapsed:.1f} s); "
                    f"clip: about {left} left"
                )
        except KeyboardInterrupt:
            display.close()
            print(
                f"brushwork: {made} new frames kept in {self.names[0].parent}; the same "
                "command goes on from there",
                file=sys.stderr,
            )
            raise
        finally:
            display.close()


def _to_make(names: list[Path], start: int, end: int) -> list[int]:
    """The frames of start..end (numbers from 1) whose files are not there yet; the others
    are kept (said on stderr), and the frames after them are held to them."""
    todo = [i for i in range(start, end + 1) if not names[i - 1].exists()]
    if len(todo) < end - start + 1:
        kept = end - start + 1 - len(todo)
        print(f"brushwork: {kept} of {end - start + 1} frames exist: kept", file=sys.stderr)
    return todo


def _engine(args: argparse.Namespace):
    from brushwork.engine import Engine

    engine = Engine(weights=args.weights, device=args.device)
    print(f"brushwork: stylizing frames in-process on {engine.device}", file=sys.stderr)
    return engine


def _key(settings, hold, styles, clip) -> str:
    """What a clip's frames depend on: the settings, the temporal term, the style images'
    pixels and the input (its files as they are now, as batch keys its outputs)."""
    from brushwork import video
    from brushwork.manifest import digest, job_key

    files = video.folder_frames(clip.path) if clip.is_folder else [clip.path]
    pixels = [hashlib.blake2b(str(s.shape).encode() + s.tobytes()).hexdigest() for s in styles]
    return digest(job_key(settings, files, temporal=hold.to_dict(), styles=pixels))


def _prepare(folder: Path, key: str, overwrite: bool) -> None:
    """The frames folder, emptied of frames made with other settings (or all, --overwrite)."""
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"-o {folder}: not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / MANIFEST
    made_by = json.loads(manifest.read_text()).get("key") if manifest.exists() else None
    ours = sorted(folder.glob("frame_[0-9][0-9][0-9][0-9][0-9][0-9].png"))
    if ours and made_by is None and not overwrite:
        raise BadInput(
            f"-o {folder}: holds frames this command did not make; --overwrite replaces them"
        )
    if made_by != key or overwrite:
        for f in ours:
            f.unlink()
        if ours:
            print(f"brushwork: settings changed: {len(ours)} old frames redone", file=sys.stderr)
    manifest.write_text(json.dumps({"key": key}))


def _comment(path: Path) -> str | None:
    import av

    try:
        with av.open(str(path)) as container:  # Matroska says COMMENT
            return next((v for k, v in container.metadata.items() if k.lower() == "comment"), None)
    except av.FFmpegError:
        return None


def _duration(seconds: float) -> str:
    from brushwork.client import duration_text

    return duration_text(seconds)
