"""`brushwork stylize CONTENT STYLE [STYLE ...] -o OUT`: one image, on the daemon when one
answers (--server, $BRUSHWORK_SERVER, else the default endpoint), else in this process."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from brushwork import remote
from brushwork.errors import BadInput, BrushworkError
from brushwork.images import DEFAULT_JPEG_QUALITY
from brushwork.settings import (
    FINER_LEVELS,
    INITS,
    OPTIMIZERS,
    PRESERVE_COLORS,
    QUALITIES,
    STYLE_LOSSES,
    Settings,
    draw_seed,
)

_DEFAULTS = Settings()
# Settings fields and `strength` (Settings.at_strength), as they appear in its messages
_FIELDS = "|".join([f.name for f in dataclasses.fields(Settings)] + ["strength"])


# The options that set one Settings field of the same name each: flag, type, what it does.
_SETTING_FLAGS = (
    ("--iterations", int, "optimizer steps, split over the scales"),
    ("--style-weight", float, "how strongly the style shows; x10 is a big step"),
    ("--content-weight", float, "how much of the content's structure stays"),
    ("--tv-weight", float, "total variation: smooths pixel noise"),
    ("--style-scale", float, "style image size relative to the output; larger = bigger strokes"),
    ("--scales", int, "coarse-to-fine levels at most, each twice the size of the one before"),
    ("--min-scale", int, "short side of the coarsest level in px; smaller paints the style's "
     "layout over the subject"),
    ("--style-gain", float, "style weight of each finer level over the one before; 1 = the "
     "seed's objective at every level"),
    ("--style-layer-falloff", float, "weight of each style layer over the next deeper one's; "
     "1 = equal, as the seed's objective"),
)  # fmt: skip


def _field(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The stylization options, shared by `stylize` and `batch`."""
    d = _DEFAULTS
    g = parser.add_argument_group("stylization")
    g.add_argument(
        "--size",
        type=int,
        metavar="PX",
        help=f"long side of the output in px; 0 = the content's own size (default: {d.size}, "
        f"or the content's own size when smaller: a small image is never upscaled)",
    )
    g.add_argument(
        "--quality",
        choices=QUALITIES,
        default="normal",
        help="draft: a quick look (one scale, a sixth of the steps), as the GIMP dialog's "
        "preview; high: twice the steps and one more scale (default %(default)s)",
    )
    for flag, kind, text in _SETTING_FLAGS:
        default = getattr(d, _field(flag))
        g.add_argument(flag, type=kind, default=default, help=f"{text} (default %(default)g)")
    g.add_argument(
        "--style-blend",
        type=_floats,
        default=(),
        metavar="W,W,...",
        help="blend weight per style image (default: equal)",
    )
    g.add_argument(
        "--content-layer",
        default=d.content_layer,
        metavar="LAYER",
        help="VGG16 layer of the content term, conv1_1 .. conv5_3 (default %(default)s)",
    )
    g.add_argument(
        "--style-layers",
        type=_names,
        default=d.style_layers,
        metavar="LAYER,...",
        help=f"VGG16 layers of the style term (default {','.join(d.style_layers)})",
    )
    g.add_argument(
        "--finer-levels",
        choices=FINER_LEVELS,
        default=d.finer_levels,
        help="light: above the coarsest level only the style layers no deeper than the content "
        "layer, for half the steps (0.6x the time at 512 px, the same picture); full: every "
        "level runs all its layers and steps, the seed's objective (default %(default)s)",
    )
    g.add_argument(
        "--preserve-colors",
        choices=PRESERVE_COLORS,
        default=d.preserve_colors,
        help="luminance: style luminance only; histogram: recolour the style first "
        "(default %(default)s)",
    )
    g.add_argument(
        "--init",
        default=d.init,
        metavar="{" + ",".join(INITS[:-1]) + ",PATH}",
        help="palette: the content in the style's colours; content; noise; or an image file "
        "(default %(default)s)",
    )
    g.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="default %(default)s"
    )
    g.add_argument(
        "--style-loss",
        choices=STYLE_LOSSES,
        default=d.style_loss,
        help="sw: match the style's whole feature distributions along fixed directions "
        "(sliced Wasserstein); w2: their means and covariances (2-Wasserstein), faster; "
        "gram: the textbook Gram matrices, fastest (default %(default)s)",
    )
    g.add_argument(
        "--strength",
        type=float,
        metavar="S",
        help="0-100, the GIMP filter's Strength: 0 content alone, 100 style alone, 50 (the "
        "default) the weights as given",
    )
    g.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="a variation: each seed paints another picture at the same quality, and the same "
        "seed the same picture again (on the same device); -1 draws a new seed and prints it "
        "(default: none, the one unseeded picture)",
    )
    g.add_argument(
        "--tile",
        type=int,
        default=d.tile,
        metavar="PX",
        help="force tiling with tiles of PX (default: only when needed)",
    )


def settings_from_args(args: argparse.Namespace, n_styles: int) -> Settings:
    """Settings from the parsed options; a bad value is a one-line BadInput naming the flag."""
    seed = args.seed
    if seed is not None and seed < -1:
        raise BadInput(f"--seed must be -1 (draw one) or a number >= 0, got {seed}")
    same = {_field(flag): getattr(args, _field(flag)) for flag, _, _ in _SETTING_FLAGS}
    d = _DEFAULTS
    try:
        settings = Settings(
            **same,
            size=d.size if args.size is None else args.size,
            style_blend=args.style_blend,
            content_layer=args.content_layer,
            style_layers=args.style_layers,
            finer_levels=args.finer_levels,
            preserve_colors=args.preserve_colors,
            init=args.init if args.init in INITS[:-1] else "image",
            optimizer=args.optimizer,
            style_loss=args.style_loss,
            seed=draw_seed() if seed == -1 else seed,
            tile=args.tile,
        )
        settings.blend_weights(n_styles)
        if args.strength is not None:
            settings = settings.at_strength(args.strength)
        settings = settings.at_quality(args.quality)
    except ValueError as e:
        raise BadInput(as_flags(str(e))) from None
    if seed == -1:
        seed = settings.seed
        print(f"brushwork: seed {seed} (--seed {seed} repeats it)", file=sys.stderr)
    return settings


def for_content(settings: Settings, size_given: bool, height: int, width: int) -> Settings:
    """The settings for a content of height x width: without --size, never larger than it."""
    if size_given or not settings.size:
        return settings
    return settings.replace(size=min(settings.size, max(height, width)))


def refuse_overwriting(output: Path, inputs: list[Path | None], flag: str = "-o") -> None:
    """An output that is one of the inputs would replace it: refused before any work."""
    for path in inputs:
        if path is not None and (
            output.resolve() == path.resolve() or (output.exists() and output.samefile(path))
        ):
            raise BadInput(f"{flag} {output}: is an input; writing it would replace it")


def as_flags(message: str) -> str:
    """A Settings message in the words the user typed: style_weight -> --style-weight."""
    return re.sub(rf"\b({_FIELDS})\b", lambda m: "--" + m[1].replace("_", "-"), message)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(","))


def register(sub: argparse._SubParsersAction) -> None:
    from brushwork.weights import add_weights_argument

    p = sub.add_parser(
        "stylize", help="stylize one image (on the daemon if one answers)", description=__doc__
    )
    p.add_argument("content", type=Path, help="content image")
    p.add_argument("styles", type=Path, nargs="+", metavar="style", help="style image(s)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output image: .png and .tif keep 16 bits, .jpg, .webp...",
    )
    add_settings_arguments(p)
    add_output_arguments(p)
    p.add_argument(
        "--save-every",
        type=int,
        default=0,
        metavar="N",
        help="also write the image every N steps, named OUT_<step> (8-bit; default: never)",
    )
    p.add_argument(
        "--print-every",
        type=int,
        metavar="N",
        help="a plain progress line every N steps instead of the bar (0 = none; default: a "
        "bar on a terminal, a line every 10 steps otherwise)",
    )
    remote.add_device_argument(p)
    add_weights_argument(p)
    remote.add_server_arguments(p)
    p.epilog = (
        "--device and --weights apply in-process; a daemon uses its own. On a daemon the "
        "job id and its token are printed: `brushwork cancel ID --token TOKEN` stops it from "
        "another shell."
    )
    p.set_defaults(run=run)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """File options shared by `stylize` and `batch`."""
    parser.add_argument(
        "--jpeg-quality",
        type=int,
        default=DEFAULT_JPEG_QUALITY,
        metavar="Q",
        help="quality of .jpg outputs, 1-100 (default %(default)s, no chroma subsampling)",
    )


def check_output_arguments(args: argparse.Namespace) -> None:
    if not 1 <= args.jpeg_quality <= 100:
        raise BadInput(f"--jpeg-quality must be between 1 and 100, got {args.jpeg_quality}")


def run(args: argparse.Namespace) -> int:
    from brushwork import images
    from brushwork.client import new_job_id, resolve_endpoint
    from brushwork.protocol import new_token
    from brushwork.report import ProgressDisplay

    # Every option and path checked before any work (and before torch is imported).
    settings = settings_from_args(args, len(args.styles))
    check_output_arguments(args)
    if args.save_every < 0 or (args.print_every or 0) < 0:
        raise BadInput("--save-every and --print-every must be 0 or more")
    resolve_endpoint(args.server)
    init_path = Path(args.init) if settings.init == "image" else None
    refuse_overwriting(args.output, [args.content, *args.styles, init_path])
    content, styles, init_image = remote.load_inputs(args.content, args.styles, settings, init_path)
    settings = for_content(settings, args.size is not None, *content.shape[:2])
    images.check_output_path(args.output)  # fail before a long run, not after it

    engine = remote.connect(args)  # None when no daemon answers; an error if --server did not
    job = {}
    if engine is None:
        from brushwork.engine import Engine, pick_device

        try:
            pick_device(args.device)
        except BrushworkError as e:  # not on this machine: an option that cannot be used
            raise BadInput(f"--device {args.device}: {e}") from None
        engine = Engine(weights=args.weights, device=args.device)
        where = f"in-process on {engine.device}"
    else:
        job = {"job": new_job_id(), "token": new_token()}  # the token: proof the job is ours
        where = (
            f"on the daemon at {engine.endpoint} ({engine.device}) as job {job['job']} "
            f"(`brushwork cancel {job['job']} --token {job['token']}` stops it)"
        )
    print(f"brushwork: stylizing {where}", file=sys.stderr)
    from brushwork.scales import output_size

    display = ProgressDisplay(sys.stderr, args.print_every)
    height, width = output_size(content.shape[0], content.shape[1], settings.size)
    saver = _Intermediates(args.output, (height, width), settings.iterations, display)

    def progress(p) -> None:
        display(p)
        if p.preview is not None and p.iteration < p.total:
            saver.save(p.iteration, p.preview)

    try:
        result = engine.stylize(
            content, styles, settings, init_image=init_image, progress=progress,
            preview_every=args.save_every, preview_side=min(max(height, width), 4096), **job,
        )  # fmt: skip
    except ValueError as e:
        raise BadInput(str(e)) from None
    finally:
        display.close()
    bits = 16 if content.dtype != "uint8" else 8
    images.save(args.output, result.image, bit_depth=bits, jpeg_quality=args.jpeg_quality)
    terms = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
    if settings.seed is not None:
        terms += f"; seed {settings.seed}"
    print(f"brushwork: wrote {args.output} in {result.elapsed:.1f} s ({terms})", file=sys.stderr)
    return 0


class _Intermediates:
    """--save-every: the image so far, at the output's size, as OUT_<step>.<ext>."""

    def __init__(self, output: Path, size: tuple[int, int], total: int, display) -> None:
        self.output, self.size, self.digits, self.display = output, size, len(str(total)), display

    def path(self, iteration: int) -> Path:
        return self.output.with_name(
            f"{self.output.stem}_{iteration:0{self.digits}d}{self.output.suffix}"
        )

    def save(self, iteration: int, preview) -> None:
        import numpy as np
        from PIL import Image

        from brushwork import images
        from brushwork.pixels import quantize

        picture = Image.fromarray(quantize(preview, "u8"))  # coarse scales are smaller
        picture = picture.resize(self.size[::-1], Image.Resampling.BICUBIC)
        path = self.path(iteration)
        images.save(path, np.asarray(picture, np.float32) / 255)
        self.display.write(f"brushwork: wrote {path}")
