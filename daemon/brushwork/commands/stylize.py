"""`brushwork stylize CONTENT STYLE [STYLE ...] -o OUT`: one image, in-process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from brushwork import remote
from brushwork.errors import BrushworkError
from brushwork.settings import INITS, OPTIMIZERS, PRESERVE_COLORS, Settings

_DEFAULTS = Settings()


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The stylization options, shared by `stylize` and `batch`."""
    d = _DEFAULTS
    g = parser.add_argument_group("stylization")
    g.add_argument(
        "--size",
        type=int,
        default=d.size,
        help="long side of the output in px; 0 = content's size (default %(default)s)",
    )
    g.add_argument(
        "--iterations",
        type=int,
        default=d.iterations,
        help="optimizer steps over all scales (default %(default)s)",
    )
    g.add_argument("--style-weight", type=float, default=d.style_weight, help="default %(default)g")
    g.add_argument(
        "--content-weight", type=float, default=d.content_weight, help="default %(default)g"
    )
    g.add_argument(
        "--tv-weight",
        type=float,
        default=d.tv_weight,
        help="total-variation weight (default %(default)g)",
    )
    g.add_argument(
        "--style-blend",
        type=_floats,
        default=(),
        metavar="W,W,...",
        help="blend weight per style image (default: equal)",
    )
    g.add_argument(
        "--style-scale",
        type=float,
        default=d.style_scale,
        help="style image size relative to the output (default %(default)g)",
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
        metavar="{" + ",".join(INITS[:2]) + ",PATH}",
        help="start from the content, noise or an image file (default %(default)s)",
    )
    g.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="default %(default)s"
    )
    g.add_argument(
        "--scales", type=int, default=d.scales, help="coarse-to-fine levels (default %(default)s)"
    )
    g.add_argument(
        "--seed", type=int, default=None, help="makes a run repeatable on the same device"
    )
    g.add_argument(
        "--tile",
        type=int,
        default=d.tile,
        metavar="PX",
        help="force tiling with tiles of PX (default: only when needed)",
    )


def settings_from_args(args: argparse.Namespace, n_styles: int) -> Settings:
    """Settings from the parsed options; a bad value is a one-line BrushworkError."""
    try:
        settings = Settings(
            size=args.size,
            iterations=args.iterations,
            style_weight=args.style_weight,
            content_weight=args.content_weight,
            tv_weight=args.tv_weight,
            style_blend=args.style_blend,
            style_scale=args.style_scale,
            preserve_colors=args.preserve_colors,
            init=args.init if args.init in INITS[:2] else "image",
            optimizer=args.optimizer,
            scales=args.scales,
            seed=args.seed,
            tile=args.tile,
        )
        settings.blend_weights(n_styles)
    except ValueError as e:
        raise BrushworkError(str(e)) from None
    return settings


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None


def register(sub: argparse._SubParsersAction) -> None:
    from brushwork.weights import add_weights_argument

    p = sub.add_parser("stylize", help="stylize one image", description=__doc__)
    p.add_argument("content", type=Path, help="content image")
    p.add_argument("styles", type=Path, nargs="+", metavar="style", help="style image(s)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output image (.png, .jpg...)")
    add_settings_arguments(p)
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default %(default)s)")
    add_weights_argument(p)
    remote.add_server_arguments(p)
    p.epilog = "--device and --weights apply in-process; a daemon uses its own."
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from brushwork import images

    settings = settings_from_args(args, len(args.styles))
    content = images.load(args.content)
    styles = [images.load(p) for p in args.styles]
    init_image = images.load(args.init) if settings.init == "image" else None
    images.check_output_path(args.output)  # fail before a long run, not after it

    engine = remote.connect(args)  # None when no daemon answers; an error if --server did not
    if engine is None:
        from brushwork.engine import Engine

        engine = Engine(weights=args.weights, device=args.device)
        where = f"in-process on {engine.device}"
    else:
        where = f"on the daemon at {engine.endpoint} ({engine.device})"
    print(f"brushwork: stylizing {where}", file=sys.stderr)
    bar = ProgressBar(sys.stderr)
    try:
        result = engine.stylize(content, styles, settings, init_image=init_image, progress=bar)
    except ValueError as e:
        raise BrushworkError(str(e)) from None
    finally:
        bar.close()
    images.save(args.output, result.image, bit_depth=16 if content.dtype != "uint8" else 8)
    terms = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
    print(f"brushwork: wrote {args.output} in {result.elapsed:.1f} s ({terms})", file=sys.stderr)
    return 0


class ProgressBar:
    """A one-line bar on a terminal; nothing on a pipe except the final line."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, p) -> None:
        if not self.tty:
            return
        width = 30
        done = round(width * p.iteration / p.total)
        eta = p.elapsed / p.iteration * (p.total - p.iteration)
        self.stream.write(
            f"\r[{'#' * done}{'.' * (width - done)}] {p.iteration}/{p.total} "
            f"loss {p.losses['total']:.4g}  {p.elapsed:.0f}s, ~{eta:.0f}s left "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
