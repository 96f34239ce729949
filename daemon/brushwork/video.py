"""Clips in and out: a video file (PyAV, with the FFmpeg inside its wheel) or a folder of
numbered frames; out as a folder of PNG frames or a video file at the input's frame rate, the
input's audio copied (remuxed, not re-encoded) where the output's container takes its codec.

Frames are numbered from 1 in the order they play. Folder frames are the images in it,
sorted by the last number in their names (frame_2 before frame_10).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from brushwork.errors import BadInput

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".tga"}
# Output video containers and the codec each gets: H.264 plays everywhere; WebM needs VP9.
VIDEO_CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9",
                ".gif": "gif"}  # fmt: skip
DEFAULT_FPS = Fraction(24)  # a folder of frames has no rate of its own
CRF = "18"  # x264 and VP9 quality: visually lossless for painted frames


@dataclass(frozen=True)
class Clip:
    """What a clip is: where it is, its frame count and rate, and whether it has audio."""

    path: Path
    frames: int
    fps: Fraction
    audio: bool

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


def probe(path: Path, fps: Fraction | None = None) -> Clip:
    """The clip at `path` (a video file or a folder of frames); `fps` overrides its rate."""
    if path.is_dir():
        n = len(folder_frames(path))
        if not n:
            raise BadInput(f"{path}: no frames (images named with numbers) in the folder")
        return Clip(path, n, fps or DEFAULT_FPS, audio=False)
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder")
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadInput(f"{path}: has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
            # the demuxer's packet count: exact where the header's count is missing or wrong
            n = sum(1 for packet in container.demux(stream) if packet.size)
            audio = bool(container.streams.audio)
    except av.FFmpegError as e:
        raise BadInput(f"{path}: not a video file FFmpeg can read ({e.strerror})") from None
    if not n:
        raise BadInput(f"{path}: the video stream has no frames")
    return Clip(path, n, fps or Fraction(rate), audio)


def folder_frames(folder: Path) -> list[Path]:
    """The images in `folder` whose names hold a number, in the order of that number."""
    numbered = []
    for p in folder.iterdir():
        digits = re.findall(r"\d+", p.stem)
        if p.suffix.lower() in IMAGE_SUFFIXES and digits and not p.name.startswith("."):
            numbered.append((int(digits[-1]), p.name, p))
    return [p for _, _, p in sorted(numbered)]


def read(clip: Clip) -> Iterator[np.ndarray]:
    """The clip's frames in order: uint8 or uint16 (H, W, 3|4) arrays."""
    if clip.is_folder:
        from brushwork import images

        for path in folder_frames(clip.path):
            yield images.load(path)
        return
    import av

    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_CODECS


def encode(
    frames: list[Path],
    out: Path,
    fps: Fraction,
    audio_from: Clip | None = None,
    span: tuple[int, int] | None = None,
    comment: str = "",
) -> str | None:
    """Write the frame images as a video at `fps`, with the audio of `audio_from` between
    frames span = (first, last) (1-based) copied when the container takes it. Written
    beside `out` and moved over it at the end. Returns why the audio was left out, or None."""
    import av

    from brushwork import images

    codec = VIDEO_CODECS[out.suffix.lower()]
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    left_out = None
    try:
        with av.open(str(tmp), "w") as container:
            if comment and codec != "gif":
                container.metadata["comment"] = comment
            first = _u8(images.load(frames[0]))
            h, w = first.shape[:2]
            stream = container.add_stream(codec, rate=fps)
            if codec == "gif":
                stream.pix_fmt = "rgb8"
            else:  # 4:2:0 needs even sides: the last row or column goes
                h, w = h - h % 2, w - w % 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": CRF}
            stream.width, stream.height = w, h
            audio = None
            if audio_from is not None and audio_from.audio:
                audio, left_out = _audio_stream(container, audio_from, out)
            for path in frames:
                rgb = _u8(images.load(path))[:h, :w, :3]
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
            if audio is not None:
                span = span or (1, len(frames))
                _copy_audio(container, audio, audio_from, (span[0] - 1) / fps, span[1] / fps)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return left_out


def _u8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    from brushwork.images import to_float
    from brushwork.pixels import quantize

    return quantize(to_float(image), "u8")


def _audio_stream(container, source: Clip, out: Path):
    """An output stream copying the source's first audio stream, or why there is none."""
    import av

    with av.open(str(source.path)) as src:
        template = src.streams.audio[0]
        try:
            return container.add_stream_from_template(template), None
        except (av.FFmpegError, ValueError):
            name = template.codec_context.name
            return None, f"its {name} audio cannot go in a {out.suffix} file"


def _copy_audio(container, stream, source: Clip, start: float, end: float) -> None:
    """The source's audio packets from `start` to `end` seconds, moved to start at 0."""
    import av

    with av.open(str(source.path)) as src:
        audio = src.streams.audio[0]
        tb = audio.time_base
        offset = round(start / tb) if tb else 0
        for packet in src.demux(audio):
            if packet.pts is None or not packet.size:
                continue
            t = float(packet.pts * tb)
            if t < start or t >= end:
                continue
            packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
            packet.stream = stream
            container.mux(packet)
