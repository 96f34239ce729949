"""What the GIMP plug-in decides, without GIMP: argument mapping, geometry, config, autostart.

No GI imports here (standard library and the shipped `brushwork` package only), so every
decision of the plug-in gets plain unit tests outside GIMP; brushwork.py only moves pixels.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brushwork.errors import BrushworkError
from brushwork.protocol import DEFAULT_ENDPOINT
from brushwork.settings import DEFAULT_STRENGTH as DEFAULT_STRENGTH  # the dialog's
from brushwork.settings import QUALITIES as QUALITIES  # the dialog's
from brushwork.settings import SEED_DRAWN_MAX as MAX_SEED  # the dialog's Seed range
from brushwork.settings import Settings, draw_seed

CONFIG_NAME = "brushwork.json"  # written by install/install.sh beside the plug-in
HELLO_TIMEOUT = 2.0  # seconds: a daemon on this machine answers hello in milliseconds
STYLES_DIR = "styles"  # the bundled paintings, beside the plug-in
# The bundled public-domain paintings (README, "Bundled paintings"): value, label, file.
PAINTINGS = (
    ("the-starry-night", "The Starry Night (Van Gogh, 1889)"),
    ("the-scream", "The Scream (Munch, 1893)"),
    ("the-shipwreck-of-the-minotaur", "The Shipwreck of the Minotaur (Turner, c. 1810)"),
    ("composition-vii", "Composition VII (Kandinsky, 1913)"),
    ("the-great-wave", "The Great Wave off Kanagawa (Hokusai, c. 1831)"),
)
DEFAULT_PAINTING = PAINTINGS[0][0]  # what a fresh profile's dialog opens with
PREVIEWS_PER_JOB = 40  # previews the daemon sends over a job; the canvas shows some of them
REPAINT_INTERVAL = 1.5  # seconds between two repaints of the canvas
MAX_PREVIEW_SIDE = 512  # px: the layer is repainted from a preview at most this large
PANE_SIDE = 160  # px: the dialog's preview pane styles the layer at most this large (draft)
PANE_STYLE_SIDE = 512  # px: the style sent with a pane preview (the daemon scales it further)
PANE_DELAY_MS = 400  # the pane refreshes once the user has stopped changing things this long
MAX_VARIATIONS = 16

_DEFAULTS = Settings()


def build_settings(
    *, strength: float, size: int, quality: str, preserve_colors: str, seed: int, tile: int = 0
) -> Settings:
    """The Settings of one run: the plug-in's arguments over the daemon's defaults.

    size 0 keeps the layer's own size; tile 0 lets the daemon decide whether to tile; seed
    < 0 leaves the seed to the daemon (a run from GIMP draws one first: variation_seeds).
    """
    return (
        _DEFAULTS.at_strength(strength)
        .at_quality(quality)
        .replace(
            size=size, preserve_colors=preserve_colors, seed=None if seed < 0 else seed, tile=tile
        )
    )


def pane_settings(*, strength: float, preserve_colors: str, seed: int) -> Settings:
    """The Settings of a preview in the dialog's pane: the draft quality at the pane's size
    (the layer is sent already scaled to at most PANE_SIDE px, so the daemon keeps its size)."""
    draft = build_settings(
        strength=strength, size=0, quality="draft", preserve_colors=preserve_colors, seed=seed
    )
    return draft.replace(size=0)


def pane_scale(width: int, height: int) -> float:
    """The factor that brings a width x height box to the pane (never enlarged)."""
    return min(1.0, PANE_SIDE / max(width, height))


def variation_seeds(seed: int, count: int) -> list[int]:
    """The seeds of `count` variations: seed, seed + 1, ... for a given seed (a favourite can
    be repeated), newly drawn ones for seed < 0 (every run differs)."""
    if not 1 <= count <= MAX_VARIATIONS:
        raise ValueError(f"variations must be between 1 and {MAX_VARIATIONS}, got {count}")
    if seed >= 0:
        return [(seed + i) % (MAX_SEED + 1) for i in range(count)]
    return [draw_seed() for _ in range(count)]


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: x, y of its top-left corner, then its size."""

    x: int
    y: int
    width: int
    height: int

    def moved(self, dx: int, dy: int) -> Box:
        return Box(self.x + dx, self.y + dy, self.width, self.height)


def selection_box(intersect: tuple[bool, int, int, int, int]) -> Box:
    """The part of the layer to send, from Gimp.Drawable.mask_intersect() (layer coordinates).

    GIMP answers the whole layer when nothing is selected, and False when the selection
    misses the layer: nothing to stylize then.
    """
    ok, x, y, width, height = intersect
    if not ok or width <= 0 or height <= 0:
        raise BrushworkError("the selection does not touch the active layer")
    return Box(x, y, width, height)


def wire_format(high_bit_depth: bool, alpha: bool) -> tuple[str, str, int]:
    """(babl format, wire dtype, channels) to read a layer in.

    Non-linear ("R'G'B'") because VGG saw sRGB photos; float keeps 16/32-bit images exact.
    """
    channels = 4 if alpha else 3
    dtype = "f32" if high_bit_depth else "u8"
    return babl_format(dtype, channels), dtype, channels


def babl_format(dtype: str, channels: int) -> str:
    """The babl format of wire pixels, to read them from or write them into a GEGL buffer."""
    models = {1: "Y'", 2: "Y'A", 3: "R'G'B'", 4: "R'G'B'A"}
    types = {"u8": "u8", "u16": "u16", "f32": "float"}
    if channels not in models or dtype not in types:
        raise ValueError(f"no babl format for {channels} channels of {dtype}")
    return f"{models[channels]} {types[dtype]}"


def painting_path(plugin_dir: str, painting: str) -> str:
    """The file of a bundled painting."""
    if painting not in dict(PAINTINGS):
        raise ValueError(f"no bundled painting {painting!r}")
    return os.path.join(plugin_dir, STYLES_DIR, f"{painting}.jpg")


def preview_options(iterations: int, width: int, height: int) -> dict[str, int]:
    """What to ask the daemon for: about PREVIEWS_PER_JOB previews, no larger than the box."""
    return {
        "preview_every": max(1, iterations // PREVIEWS_PER_JOB),
        "preview_size": max(16, min(MAX_PREVIEW_SIDE, max(width, height))),
    }


def with_alpha(rgb: bytes, rgba: bytes, itemsize: int) -> bytes:
    """RGB pixels with the alpha of another image of the same size (both interleaved, samples
    of `itemsize` bytes): the canvas shows a preview with the layer's own transparency."""
    out = bytearray(rgba)
    for byte in range(3 * itemsize):  # slice assignment: C speed, no per-pixel Python
        out[byte :: 4 * itemsize] = rgb[byte :: 3 * itemsize]
    return bytes(out)


def missing_module_message(
    error: ImportError, python: str, lib: str, has_pip: bool | None = None, apt: bool | None = None
) -> str:
    """One line: what the plug-in could not import and a command that fixes it on this system.

    A Python with pip gets pip's command into the plug-in's lib folder. Debian's and Ubuntu's
    GIMP runs the system Python, which has no pip: there the distribution's package
    python3-zmq is the fix. has_pip and apt say what this system has (None: look).
    """
    if (error.name or "").split(".")[0] == "zmq":
        if has_pip is None:
            has_pip = importlib.util.find_spec("pip") is not None
        if apt is None:
            apt = shutil.which("apt-get") is not None and python.startswith("/usr/bin/")
        if has_pip:
            fix = shlex.join([python, "-m", "pip", "install", "--target", lib, "pyzmq>=25"])
        elif apt:
            fix = "sudo apt-get install python3-zmq"
        else:  # no pip, no apt: the installer brings a pyzmq built for this Python
            return (
                f"GIMP's Python ({python}) cannot import pyzmq ({error}); run Brushwork's "
                "install/install.sh again, which puts a pyzmq for it beside the plug-in"
            )
        return (
            f"GIMP's Python ({python}) cannot import pyzmq ({error}); install it for GIMP "
            f"with: {fix} (or run Brushwork's install/install.sh again)"
        )
    return (
        f"the plug-in's files are incomplete ({error}); reinstall them with Brushwork's "
        "install/install.sh --plugin-only"
    )


def style_label(path_or_name: str) -> str:
    """A short name for a style: the file name without folder and extension."""
    name = Path(path_or_name.replace("\\", "/")).name
    stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
    return stem or "style"


def layer_name(style: str, seed: int | None = None) -> str:
    """The result layer's name; with the seed, so that a favourite can be repeated."""
    name = f"{style_label(style)} style"
    return name if seed is None else f"{name}, seed {seed}"


def starting_text(seconds: float) -> str:
    """What the progress says while an autostarted daemon loads."""
    return f"Starting the Brushwork daemon (loading VGG16) ... {seconds:.0f} s"


# --- Config ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PluginConfig:
    """What the installer wrote: where the daemon listens and how to start it."""

    path: str = ""  # the file it came from, for messages
    endpoint: str = DEFAULT_ENDPOINT
    daemon_command: tuple[str, ...] = ()  # e.g. (".../venv/bin/brushwork", "serve", "--bind", E)
    autostart: bool = True
    daemon_log: str = ""  # where a started daemon's output goes; empty: default_daemon_log()
    start_timeout: float = 120.0  # seconds to wait for a started daemon's first answer

    @property
    def can_autostart(self) -> bool:
        return self.autostart and bool(self.daemon_command)


_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "endpoint": (str,),
    "daemon_command": (list,),
    "autostart": (bool,),
    "daemon_log": (str,),
    "start_timeout": (int, float),
}


def read_config(path: str | os.PathLike[str]) -> PluginConfig:
    """The plug-in's config; a missing file gives the defaults (daemon on the default port,
    nothing to autostart). A broken file is an error naming it, never silently ignored."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return PluginConfig(path=path)
    except (OSError, ValueError) as e:
        raise BrushworkError(f"cannot read the plug-in config {path}: {e}") from None
    if not isinstance(data, dict):
        raise BrushworkError(f"the plug-in config {path} must hold a JSON object")
    values: dict[str, Any] = {}
    for key, value in data.items():
        types = _CONFIG_TYPES.get(key)
        if types is None:
            raise BrushworkError(f"the plug-in config {path} has an unknown key {key!r}")
        if not isinstance(value, types) or (bool in types) != isinstance(value, bool):
            raise BrushworkError(f"the plug-in config {path} has a bad value for {key!r}")
        values[key] = value
    command = values.get("daemon_command", [])
    if not all(isinstance(word, str) and word for word in command):
        raise BrushworkError(f"daemon_command in {path} must be a list of non-empty strings")
    values["daemon_command"] = tuple(command)
    return PluginConfig(path=path, **values)


def default_daemon_log() -> str:
    """Where an autostarted daemon's output goes when the config names no file."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        state = os.environ.get("XDG_STATE_HOME", "")
        base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return str(base / "brushwork" / "daemon-autostart.log")


# --- Autostart -------------------------------------------------------------------------------

Ping = Callable[[float], object]  # asks the daemon hello within a timeout; raises NoDaemon


def ensure_daemon(
    endpoint: str,
    config: PluginConfig,
    ping: Ping,
    no_daemon: type[Exception],
    on_wait: Callable[[float], object] | None = None,
) -> subprocess.Popen[bytes] | None:
    """Make sure a daemon answers at `endpoint`; start the configured one if it is allowed to.

    Returns the started process (None when one was already there). The started daemon runs
    in its own session, so it outlives the plug-in and serves the next call too. While it
    starts, on_wait(seconds waited) is called about once a second.
    """
    try:
        ping(HELLO_TIMEOUT)
        return None
    except no_daemon as e:
        if endpoint != config.endpoint:
            raise BrushworkError(
                f"{e} (autostart only starts the daemon at {config.endpoint})"
            ) from None
        if not config.can_autostart:
            where = config.path or CONFIG_NAME
            raise BrushworkError(f"{e}; autostart is off in {where}") from None
    log = config.daemon_log or default_daemon_log()
    process = start_daemon(config.daemon_command, log)
    wait_for_daemon(process, ping, no_daemon, config.start_timeout, log, on_wait)
    return process


def start_daemon(command: tuple[str, ...], log_path: str) -> subprocess.Popen[bytes]:
    """Spawn the daemon detached from the plug-in, its output appended to `log_path`."""
    try:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                **_detached(),
            )
    except OSError as e:
        raise BrushworkError(
            f"could not start the daemon ({shlex.join(command)}): {e.strerror or e}"
        ) from None


def _detached() -> dict[str, Any]:
    """Popen options that keep the daemon alive after the plug-in (GIMP kills its group)."""
    if sys.platform == "win32":
        flags = (
            subprocess.DETACHED_PROCESS
            | subprocess.CREATE_NEW_PROCESS_GROUP
            | subprocess.CREATE_NO_WINDOW
        )
        return {"creationflags": flags}
    return {"start_new_session": True}


def wait_for_daemon(
    process: subprocess.Popen[bytes],
    ping: Ping,
    no_daemon: type[Exception],
    timeout: float,
    log_path: str,
    on_wait: Callable[[float], object] | None = None,
) -> None:
    """Poll hello until the started daemon answers; fail early if it exits, stop it if it
    never answers. Messages give the seconds really waited."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if on_wait is not None:
            on_wait(time.monotonic() - started)
        code = process.poll()
        if code is not None:
            raise BrushworkError(
                f"the daemon exited with status {code} {time.monotonic() - started:.1f} s "
                f"after it was started: {last_line(log_path)} (log: {log_path})"
            )
        left = deadline - time.monotonic()
        if left <= 0:
            # A daemon that hangs while starting would hold the port against the next try.
            process.terminate()
            raise BrushworkError(
                f"the daemon started with `{shlex.join(process.args)}` (pid {process.pid}) did "
                f"not answer in {time.monotonic() - started:.1f} s (start_timeout), so it was "
                f"stopped (log: {log_path})"
            )
        try:
            ping(min(1.0, left))
            return
        except no_daemon:
            continue


def last_line(path: str) -> str:
    """The last non-empty line of a log file: usually the daemon's one-line error."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    return next((line.strip() for line in reversed(lines) if line.strip()), "(empty log)")
