"""The CLI's way to a daemon: the `--server` options, and an Engine look-alike that runs
`stylize` on a daemon (numpy arrays in and out, the same signature and result as
Engine.stylize for the arguments the CLI uses)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brushwork import pixels
from brushwork.client import (
    ENV_CLIENT_KEY,
    ENV_SERVER,
    ENV_SERVER_KEY,
    Client,
    NoDaemon,
    work_done,
)
from brushwork.errors import BadInput
from brushwork.protocol import DEFAULT_ENDPOINT, PreviewReply, ProgressReply
from brushwork.settings import Settings

if TYPE_CHECKING:
    from brushwork.engine import CancelToken, Progress, Result

PROBE_TIMEOUT = 1.0  # seconds a daemon has to answer before the CLI runs in-process


DEVICES = ("auto", "cuda", "mps", "cpu")  # engine.pick_device's; cuda:N names one GPU


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--device, its name checked as the options are read (a usage error, exit 2)."""
    parser.add_argument(
        "--device",
        default="auto",
        type=_device,
        help=f"{', '.join(DEVICES[:-1])} or {DEVICES[-1]} (default %(default)s)",
    )


def _device(text: str) -> str:
    kind, colon, index = text.partition(":")
    if kind not in DEVICES or (colon and not index.isdigit()):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}: use {', '.join(DEVICES[:-1])} or {DEVICES[-1]}"
        )
    return text


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """--server and --server-key, shared by every command that talks to a daemon."""
    parser.add_argument(
        "--server",
        metavar="ENDPOINT",
        help=f"daemon to use (default ${ENV_SERVER}, else {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--server-key",
        metavar="KEY",
        help=f"the daemon's CURVE public key or its .key file (default ${ENV_SERVER_KEY})",
    )
    parser.add_argument(
        "--client-key",
        metavar="FILE",
        help=f"this client's CURVE .key_secret file, for daemons that authorize clients "
        f"(default ${ENV_CLIENT_KEY})",
    )


def fit_inputs(
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    settings: Settings,
    init: np.ndarray | None = None,
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
    """The images no larger than the job needs, for sending to a daemon: content and init at
    the output size, each style at the size the finest level resizes it to (the engine's
    own sizes; float32 where resized, alpha kept). A 24 Mpx photo sent for a 512 px result
    would be refused as too large, and cost its upload for nothing."""
    from brushwork import images, scales

    out = scales.output_size(*content.shape[:2], settings.size)
    finest = scales.pyramid(*out, settings)[-1]

    def fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if size[0] * size[1] >= image.shape[0] * image.shape[1]:
            return image
        return scales.resized(images.to_float(image), size)

    fitted_styles = [fit(s, scales.style_size(s.shape[:2], finest, settings)) for s in styles]
    return fit(content, out), fitted_styles, None if init is None else fit(init, out)


def load_inputs(
    content: Path, styles: Sequence[Path], settings: Settings, init: Path | None = None
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
    """A job's image files read, each large one at the size the job needs (images.load's
    `fit`: the content and init at the output size, the styles at the finest level's)."""
    roles = [(content, "the content"), *((p, "a style") for p in styles), (init, "--init")]
    for path, role in roles:
        if path is not None and path.is_dir():
            raise BadInput(f"{path}: is a folder; {role} is one image file (batch takes folders)")
    from brushwork import images, scales

    fitted = images.load(content, fit=lambda h, w: scales.output_size(h, w, settings.size))
    out = scales.output_size(*fitted.shape[:2], settings.size)
    return (
        fitted,
        [images.load(path, fit=style_fit(settings, out)) for path in styles],
        None if init is None else images.load(init, fit=lambda h, w: out),
    )


def style_fit(settings: Settings, out: tuple[int, int]) -> Callable[[int, int], tuple[int, int]]:
    """A style image's (H, W) -> its size at the finest level of an `out` output."""
    from brushwork import scales

    finest = scales.pyramid(*out, settings)[-1]
    return lambda h, w: scales.style_size((h, w), finest, settings)


def operator_token(endpoint: str) -> str | None:
    """The operator token a daemon at `endpoint` left for the user running it, if this user
    can read it (xdg.operator_token_file)."""
    from brushwork import xdg

    try:
        return xdg.operator_token_file(endpoint).read_text().strip() or None
    except OSError:
        return None


def client_from_args(args: argparse.Namespace, timeout: float = 10.0) -> Client:
    return Client(
        args.server, timeout=timeout, server_key=args.server_key, client_key=args.client_key
    )


def connect(args: argparse.Namespace) -> RemoteEngine | None:
    """A RemoteEngine if a daemon answers within PROBE_TIMEOUT, else None; an explicit
    --server that does not answer is an error (NoDaemon), not a fallback."""
    client = client_from_args(args, timeout=PROBE_TIMEOUT)
    try:
        device = client.hello().device
    except NoDaemon:
        client.close()
        if args.server:
            raise
        return None
    client.timeout = 10.0  # it answered: from now on, silence means it went away
    return RemoteEngine(client, device)


class RemoteEngine:
    """Runs Engine.stylize on a daemon. `device` is the daemon's, as text."""

    def __init__(self, client: Client, device: str) -> None:
        self.client = client
        self.endpoint = client.endpoint
        self.device = device

    def stylize(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        settings: Settings,
        *,
        init_image: np.ndarray | None = None,
        progress: Callable[[Progress], None] | None = None,
        preview_every: int = 0,
        preview_side: int = 256,
        cancel: CancelToken | None = None,
        job: str | None = None,
        token: str | None = None,
    ) -> Result:
        """Like Engine.stylize: float32 (H, W, 3|4) result; progress gets engine Progress
        objects (a preview comes as a second one for the same iteration); a set `cancel`
        cancels the job (DaemonError code "cancelled"), and so does an exception such as
        Ctrl-C. `job`, `token`: the job id to submit under and its secret (default: new
        ones; Client.token(job) tells it)."""
        from brushwork.engine import Result

        content, styles, init_image = fit_inputs(content, styles, settings, init_image)
        result = self.client.stylize(
            pixels.from_array(content),
            [pixels.from_array(s) for s in styles],
            settings,
            init=pixels.from_array(init_image) if init_image is not None else None,
            output_dtype="f32",  # the same float image as in-process; the caller quantizes
            on_event=self._progress(progress),
            cancel=cancel,
            preview_every=preview_every,
            preview_size=preview_side,
            job=job,
            token=token,
        )
        return Result(
            image=np.array(pixels.to_array(result.image)),  # own the memory: writable
            losses={k: v for k, v in result.losses.items() if v is not None},
            iterations=result.iterations,
            elapsed=result.elapsed,
            settings=result.settings,
            device=result.device,
        )

    def _progress(self, progress: Callable[[Progress], None] | None) -> Callable[[object], None]:
        last: list[ProgressReply] = []  # the latest progress, which a preview belongs to

        def on_event(event: object) -> None:
            if progress is None:
                return
            if isinstance(event, ProgressReply):
                last[:] = [event]
                progress(_as_progress(event))
            elif isinstance(event, PreviewReply) and last:
                image = pixels.to_array(event.image).astype(np.float32) / 255
                progress(_as_progress(last[0], image))

        return on_event

    def close(self) -> None:
        self.client.close()


def _as_progress(event: ProgressReply, preview: np.ndarray | None = None) -> Progress:
    """The engine's Progress from the daemon's message (fields an older daemon lacks are
    filled in from the step count)."""
    from brushwork.engine import Progress

    return Progress(
        iteration=event.iteration,
        total=event.total,
        losses={k: v for k, v in event.losses.items() if v is not None},
        elapsed=event.elapsed,
        level=event.level or 1,
        levels=event.levels or 1,
        step=event.step or event.iteration,
        steps=event.steps or event.total,
        fraction=work_done(event),
        eta=event.eta,
        preview=preview,
    )
