"""The plug-in in a real GIMP 3 against a real daemon, driven by gimp-console (issue 4, part 3).

GIMP 3 and the plug-in in its throw-away profile, against the suite's real daemon, are the
suite's `gimp` (tests/fixtures_gimp.py). One GIMP session runs every case (GIMP starts in
seconds, not milliseconds) and writes a report plus raw pixel dumps; the tests below check
them with numpy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushwork import pixels
from brushwork.settings import Settings
from fixtures_gimp import GIMP_TIMEOUT, REPO, GimpSession, dumped_pixels
from plugin_helpers import plugin_module

pytestmark = pytest.mark.gimp

logic = plugin_module("brushwork_logic")
DIALOG_TIMEOUT = 240  # the same for the dialogs' session: a dialog left open ends it
CONTENT_SIZE = (96, 64)  # width, height
ELLIPSE = (20, 10, 48, 40)  # x, y, width, height of the selection case
DEAD_ENDPOINT = "tcp://127.0.0.1:9"  # discard port: nothing answers there
# Where GIMP keeps a procedure's last used values (GimpProcedureConfigRun's type name).
LAST_VALUES = "GimpProcedureConfigRun-python-fu-brushwork-style.last"


def _content() -> np.ndarray:
    """RGBA u8: soft shapes on a gradient, alpha falling from opaque to half on the right."""
    w, h = CONTENT_SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgba = np.empty((h, w, 4), np.float32)
    rgba[..., 0] = 0.3 + 0.4 * x / w
    rgba[..., 1] = 0.5 + 0.3 * y / h
    rgba[..., 2] = 0.4
    disc = (x - 30) ** 2 + (y - 30) ** 2 < 15**2
    rgba[disc, :3] = (0.9, 0.85, 0.8)
    rgba[..., 3] = np.clip(1.0 - np.maximum(x - w / 2, 0) / w, 0.5, 1.0)
    return np.round(rgba * 255).astype(np.uint8)


def _style() -> np.ndarray:
    """RGB u8: saturated diagonal stripes with noise, nothing like the content."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    band = ((x + y) // 6) % 3
    palette = np.array([[220, 30, 30], [250, 210, 20], [20, 40, 200]], np.int16)
    rgb = palette[band] + rng.integers(-25, 26, (64, 64, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


# What the session in GIMP does for each case (after fixtures_gimp.BATCH_HEAD); the report
# carries the rest to the tests.
BATCH = r"""
def load(path):
    return Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))


def records():
    path = SPEC["record"]
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def parasite(layer):
    found = layer.get_parasite("brushwork-settings")
    return json.loads(bytes(found.get_data()).decode()) if found is not None else None


def run_case(case):
    if case.get("config") is not None:
        with open(SPEC["config"], "w") as f:
            json.dump(case["config"], f)
    if case.get("new_image"):
        w, h = case["new_image"]
        image = Gimp.Image.new(w, h, Gimp.ImageBaseType.RGB)
        fresh = Gimp.Layer.new(image, "big", w, h, Gimp.ImageType.RGB_IMAGE, 100.0,
                               Gimp.LayerMode.NORMAL)
        image.insert_layer(fresh, None, 0)
    else:
        image = load(case["content"])
    if case.get("u16"):
        image.convert_precision(Gimp.Precision.U16_NON_LINEAR)
    source = image.get_layers()[0]
    before = dump(source, case["name"] + "-before")
    if case.get("ellipse"):
        image.select_ellipse(Gimp.ChannelOps.REPLACE, *case["ellipse"])
    if case.get("last_values") is not None:  # what the dialog showed the last time
        with open(SPEC["last_values"], "w") as f:
            f.write(case["last_values"])
    proc = Gimp.get_pdb().lookup_procedure("python-fu-brushwork-style")
    assert proc is not None, "the filter is not registered"
    cfg = proc.create_config()
    interactive = case.get("interactive", False)
    cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE if interactive else
                     Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [source])
    style_images = []
    for key, value in case["args"].items():
        if key == "style-file":
            value = Gio.File.new_for_path(value)
        elif key == "style-image":
            value = load(value)
            # A batch-loaded image has no file ("[Untitled]"): name it as if saved as XCF.
            assert value.set_file(Gio.File.new_for_path(SPEC["out"] + "/style.xcf"))
            style_images.append(value)
        cfg.set_property(key, value)
    seen = len(records())
    started = time.monotonic()
    result = proc.run(cfg)
    seconds = time.monotonic() - started
    ended = time.time()  # the wall clock, shared with the test's helpers
    status = result.index(0)
    message = result.index(1) if result.length() > 1 else None
    layers = image.get_layers()
    report = {
        "status": status.value_nick,
        "message": message if status != Gimp.PDBStatusType.SUCCESS else None,
        "seconds": seconds,
        "ended": ended,
        "layers": [layer.get_name() for layer in layers],
        "source_position": image.get_item_position(source),
        "before": before,
        "after": dump(source, case["name"] + "-after"),
        "new": dump(layers[0], case["name"] + "-new") if len(layers) > 1 else None,
        "precision": image.get_precision().value_nick,
        "records": records()[seen:],
        "parasites": [parasite(layer) for layer in layers],
    }
    if interactive:
        with open(SPEC["last_values"]) as f:
            report["last_values"] = f.read()
    for style in style_images:
        style.delete()
    image.delete()
    return report
"""


@pytest.fixture(scope="module")
def e2e_pictures(gimp) -> None:
    """This module's test images in the shared GIMP's work folder."""
    Image.fromarray(_content(), "RGBA").save(gimp.work / "content.png")
    Image.fromarray(_style(), "RGB").save(gimp.work / "style.png")
    (gimp.work / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")


@pytest.fixture(scope="module")
def session(gimp, e2e_pictures, daemon) -> dict:
    """Every non-interactive case in one GIMP session: the report, by case name."""
    content, style = gimp.inside(gimp.work / "content.png"), gimp.inside(gimp.work / "style.png")
    shutil.copy(gimp.work / "style.png", gimp.work / "stopped.png")  # names its layer
    stopped = gimp.inside(gimp.work / "stopped.png")
    quick = {"quality": "draft", "seed": 0}
    autostart_off = {"endpoint": DEAD_ENDPOINT, "daemon_command": [], "autostart": False}
    cannot_start = {
        "endpoint": DEAD_ENDPOINT,
        "daemon_command": ["/nonexistent/brushwork", "serve", "--bind", DEAD_ENDPOINT],
    }
    installed_config = (gimp.plugin / "brushwork.json").read_text()
    cases = [
        # size 64 < the layer's 96 px: stylized smaller, scaled back by GIMP.
        {"name": "layer", "content": content, "args": {"style-file": style, "size": 64, **quick}},
        {
            "name": "selection",
            "content": content,
            "ellipse": list(ELLIPSE),
            "args": {"style-file": style, **quick},
        },
        {"name": "u16", "content": content, "u16": True, "args": {"style-image": style, **quick}},
        # The default quality: long enough for several repaints.
        {"name": "live", "content": content, "args": {"style-file": style, "seed": 0}},
        {"name": "painting", "content": content, "args": {"painting": "the-scream", **quick}},
        # GIMP's Cancel ends the plug-in (tests/_kill_when_repainted does as GIMP does).
        {"name": "stopped", "content": content, "args": {"style-file": stopped, "seed": 0}},
        # Seed -1 twice: two variations; then three seeds into three layers.
        *(
            {
                "name": name,
                "content": content,
                "args": {"style-file": style, "size": 48, "quality": "draft", "seed": -1},
            }
            for name in ("seed_a", "seed_b")
        ),
        {
            "name": "variations",
            "content": content,
            "args": {
                "style-file": style,
                "size": 48,
                "quality": "draft",
                "seed": 7,
                "variations": 3,
            },
        },
        # Cancelled from outside (tests/_cancel_when_running) once it has started.
        {"name": "cancelled", "content": content, "args": {"style-file": style, "quality": "high"}},
        {
            "name": "too_large",
            "new_image": [1100, 1000],  # 1.1 Mpx; the suite's daemon takes 1 Mpx
            "args": {"style-file": style, **quick},
        },
        {
            "name": "unreadable_style",
            "content": content,
            "args": {"style-file": gimp.inside(gimp.work / "broken.png"), **quick},
        },
        {
            "name": "autostart_off",
            "config": autostart_off,
            "content": content,
            "args": {"style-file": style, **quick},
        },
        {
            "name": "cannot_start",
            "config": cannot_start,
            "content": content,
            "args": {"style-file": style, **quick},
        },
    ]
    done = threading.Event()
    canceller = threading.Thread(target=_cancel_when_running, args=(daemon, HIGH_STEPS, done))
    killed: list[float] = []
    killer = threading.Thread(
        target=_kill_when_repainted, args=(gimp, "stopped style", done, killed)
    )
    canceller.start()
    killer.start()
    try:
        report = _run_cases(gimp, "batch", cases)
    finally:  # the dialog session wants the installer's config back
        done.set()
        canceller.join()
        killer.join()
        (gimp.plugin / "brushwork.json").write_text(installed_config)
    stopped = report["stopped"]
    stopped["killed"] = killed
    if stopped["repaints"]:  # the daemon is to notice the vanished plug-in and stop the job
        stopped["job"] = _job_when_ended(daemon, stopped["repaints"][-1]["job"])
    return report


def _kill_when_repainted(gimp, layer: str, done: threading.Event, killed: list) -> None:
    """GIMP's Cancel, as GIMP does it (app/plug-in/gimpplugin.c): the plug-in is killed
    (SIGKILL, 10 ms after asking it to quit), here once `layer` has shown a preview."""
    record = gimp.out / "record.jsonl"
    plugin = gimp.inside(gimp.plugin / "brushwork.py").encode()
    while not done.is_set():
        lines = record.read_text().splitlines() if record.exists() else []
        if any('"repaint"' in line and layer in line for line in lines):
            for pid in _processes_running(plugin):
                os.kill(pid, signal.SIGKILL)
                killed.append(time.time())
            return
        time.sleep(0.05)


def _processes_running(path: bytes) -> list[int]:
    """Pids of the processes whose command line names `path` (our GIMP's plug-in)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and path in (proc / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _job_when_ended(daemon, job: str, wait: float = 15) -> dict:
    """A job of the plug-in's as the daemon's operator sees it, once it has ended (or not)."""
    deadline = time.monotonic() + wait
    with daemon.client() as client:
        while True:
            found = [j for j in client.info(daemon.operator_token()).queue if j["id"] == job]
            if not found or found[0]["state"] not in ("queued", "running"):
                return found[0] if found else {"id": job, "state": "gone"}
            if time.monotonic() > deadline:
                return found[0]
            time.sleep(0.2)


# Only the "cancelled" case runs this many.
HIGH_STEPS = Settings().at_quality("high").iterations


def _cancel_when_running(daemon, total: int, done: threading.Event) -> None:
    """Cancel the job of `total` steps once it has done 10, as `brushwork cancel` run by the
    daemon's user would (the plug-in's job is not ours: the operator token lets us)."""
    operator = daemon.operator_token()
    with daemon.client() as client:
        while not done.is_set():
            for job in client.info(operator).queue:
                if job["total"] == total and job["state"] == "running" and job["iteration"] >= 10:
                    client.cancel(job["id"], operator)
                    return
            time.sleep(0.2)


def _run_cases(
    gimp: GimpSession, tag: str, cases: list[dict], display: str = "", timeout: int = GIMP_TIMEOUT
) -> dict:
    """One GIMP session running `cases`; its report by case name, pixels loaded."""
    spec = {
        "config": gimp.inside(gimp.plugin / "brushwork.json"),
        "last_values": gimp.inside(gimp.profile / "plug-in-settings" / LAST_VALUES),
        "record": gimp.inside(gimp.out / "record.jsonl"),
        "cases": cases,
    }
    report = gimp.run_cases(tag, BATCH, spec, display, timeout)
    for name, case in report.items():
        print(f"gimp e2e: {name}: {case['status']} in {case['seconds']:.2f} s")
    for case in report.values():
        for kind in ("repaint", "progress", "pane"):
            case[kind + "s"] = [r for r in case["records"] if r["kind"] == kind]
        for pane in case["panes"]:  # the file as this side sees it
            pane["file"] = str(gimp.root / pane["file"].lstrip("/"))
        dumps = [key for key in ("before", "after", "new") if case[key]]
        case["pixels"] = {key: dumped_pixels(gimp.out, case[key]) for key in dumps}
    return report


@pytest.fixture(scope="module")
def dialog_session(gimp, e2e_pictures, daemon) -> dict:
    """The interactive runs: GIMP's dialog on a virtual X display, driven by xdotool. The
    first waits for the preview pane, raises Strength by a key, waits for the pane again and
    presses OK; the second waits for the pane and presses Keep preview.

    Each dialog opens with the values GIMP remembered from the last run (seeded here as a
    last-values file, as a previous OK would have left it).
    """
    style = f'(style-file "file://{gimp.inside(gimp.work / "style.png")}")\n'
    content = gimp.inside(gimp.work / "content.png")
    cases = [
        {
            "name": "dialog",
            "content": content,
            "interactive": True,
            "last_values": f'{style}(strength 80)\n(quality "draft")\n(seed 0)\n',
            "args": {},
        },
        {
            "name": "keep_preview",
            "content": content,
            "interactive": True,
            "last_values": f'{style}(quality "high")\n(seed 0)\n',
            "args": {},
        },
    ]
    record = gimp.inside(gimp.out / "record.jsonl")
    with VirtualDisplay(gimp) as display:
        presser = subprocess.Popen(
            gimp.command("timeout", "300", "sh", "-c", PRESS.replace("RECORD", record),
                         display=display),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        try:
            report = _run_cases(gimp, "dialog", cases, display, DIALOG_TIMEOUT)
        finally:
            presser.kill()
            pressed = presser.communicate()[0]
            print(f"gimp e2e: the dialogs' keys: {pressed}")
    assert pressed.count("dialog closed") == 2, f"a dialog was not closed: {pressed}"
    assert "changed Strength" in pressed, f"Strength was not changed: {pressed}"
    return report


# No window manager here: each window is focused by hand. The first dialog: once the pane
# shows a preview (a "pane" line more in RECORD), Strength is raised by a key (its mnemonic,
# then Up) until the pane shows another one; then OK (Alt+O). The second: Keep preview
# (Alt+W; Alt+R is Reset) once the pane shows one.
PRESS = """
panes() { cat RECORD 2>/dev/null | grep -c '"kind": "pane"' || true; }  # grep -c: 0 fails
until_pane() {  # $1: the count to pass; $2: tenths of a second to wait
    for i in $(seq "$2"); do [ "$(panes)" -gt "$1" ] && return 0; sleep 0.1; done; return 1
}
dialog() { w=$(xdotool search --sync --name "^Neural Style Transfer$" | head -n1); }
press() {  # a key sent while the window maps can be lost: press again until the dialog goes
    for try in 1 2 3 4 5; do
        xdotool windowfocus --sync "$w" && sleep 0.5 && xdotool key --clearmodifiers "$1" &&
        echo "pressed $1 (try $try)"
        for i in $(seq 50); do
            xdotool search --name "^Neural Style Transfer$" >/dev/null || {
                echo "dialog closed"; return 0; }
            sleep 0.2
        done
    done
    return 1
}
dialog && echo "dialog $w" && n=$(panes) && until_pane "$n" 600 && n=$(panes) &&
echo "pane shown" && for try in 1 2 3; do
    xdotool windowfocus --sync "$w" && sleep 0.3 && xdotool key --clearmodifiers alt+t &&
    sleep 0.3 && xdotool key Up && echo "changed Strength (try $try)" &&
    until_pane "$n" 300 && break
done && press alt+o &&
dialog && n=$(panes) && until_pane "$n" 600 && press alt+w
"""


class VirtualDisplay:
    """An Xvfb server inside GIMP's root, for the one interactive run."""

    def __init__(self, gimp: GimpSession) -> None:
        self.gimp = gimp
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> str:
        sockets = self.gimp.root / "tmp" / ".X11-unix"
        number = next(n for n in range(90, 200) if not (sockets / f"X{n}").exists())
        self.process = subprocess.Popen(
            self.gimp.command(
                "Xvfb", f":{number}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not (sockets / f"X{number}").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"Xvfb did not start: {self.process.communicate()[1][-2000:]}")
            time.sleep(0.1)
        return f":{number}"

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _assert_stylized(result: np.ndarray, source: np.ndarray) -> None:
    """RGB changed a lot, towards the style's colours, and is a picture (not flat, no NaN)."""
    assert np.isfinite(result).all()
    assert np.abs(result[..., :3] - source[..., :3]).mean() > 0.05
    assert result[..., :3].std() > 0.05
    style_mean = _style().reshape(-1, 3).mean(0) / 255
    distance = lambda a: np.linalg.norm(a[..., :3].reshape(-1, 3).mean(0) - style_mean)  # noqa: E731
    assert distance(result) < distance(source)


def _assert_source_untouched(case: dict) -> None:
    px = case["pixels"]
    assert np.array_equal(px["before"]["rgba"], px["after"]["rgba"])
    assert {k: case["before"][k] for k in ("x", "y", "width", "height", "name")} == {
        k: case["after"][k] for k in ("x", "y", "width", "height", "name")
    }


def test_whole_layer_gives_a_new_stylized_layer_above_the_untouched_source(session):
    case = session["layer"]
    assert case["status"] == "success", case["message"]
    assert case["layers"] == ["style style, seed 0", "Background"]  # the seed, to repeat it
    assert case["source_position"] == 1  # the new layer went in right above it
    new = case["new"]
    assert (new["x"], new["y"], new["width"], new["height"]) == (0, 0, *CONTENT_SIZE)
    assert new["mask"] is None  # no selection, no mask
    _assert_source_untouched(case)
    result, source = case["pixels"]["new"]["rgba"], case["pixels"]["before"]["rgba"]
    _assert_stylized(result, source)
    # Alpha kept: the daemon passes it through; only GIMP's scaling back from 64 px blurs it.
    assert np.abs(result[..., 3] - source[..., 3]).max() < 0.05


def test_selection_sends_its_box_and_masks_the_result(session):
    case = session["selection"]
    assert case["status"] == "success", case["message"]
    x, y, w, h = ELLIPSE
    new = case["new"]
    assert (new["x"], new["y"], new["width"], new["height"]) == (x, y, w, h)
    _assert_source_untouched(case)
    result = case["pixels"]["new"]["rgba"]
    box = case["pixels"]["before"]["rgba"][y : y + h, x : x + w]
    _assert_stylized(result, box)
    assert np.array_equal(result[..., 3], box[..., 3])  # same size: alpha exactly kept
    mask = case["pixels"]["new"]["mask"]
    assert mask[h // 2, w // 2] == 1.0 and mask[0, 0] == 0.0 and mask[-1, -1] == 0.0


def test_high_bit_depth_comes_back_at_the_image_precision(session):
    case = session["u16"]
    assert case["status"] == "success", case["message"]
    assert case["precision"] == "u16-non-linear"
    assert case["new"]["bpp"] == 8  # RGBA, 2 bytes per channel
    assert case["layers"][0] == "style style, seed 0"  # named after the open style image
    _assert_source_untouched(case)
    result = case["pixels"]["new"]["rgba"]
    _assert_stylized(result, case["pixels"]["before"]["rgba"])
    # Float on the wire: most values fall between the 256 levels an 8-bit path would give.
    off_grid = np.abs(result[..., :3] * 255 - np.round(result[..., :3] * 255)) > 0.02
    assert off_grid.mean() > 0.5


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("too_large", "takes at most 1.0 Mpx"),
        ("unreadable_style", "cannot read the style file"),
        ("autostart_off", f"no daemon at {DEAD_ENDPOINT}"),
        ("autostart_off", "autostart is off in"),
        ("cannot_start", "could not start the daemon (/nonexistent/brushwork serve"),
    ],
)
def test_failures_are_one_clear_message_and_change_nothing(session, name, expected):
    case = session[name]
    assert case["status"] == "execution-error"
    assert case["message"].startswith("Neural style transfer: ")
    assert expected in case["message"] and "\n" not in case["message"]
    assert case["new"] is None and len(case["layers"]) == 1
    _assert_source_untouched(case)


def test_dialog_opens_with_the_last_values_and_ok_runs_the_filter(dialog_session):
    case = dialog_session["dialog"]
    assert case["status"] == "success", case["message"]
    assert case["layers"] == ["style style, seed 0", "Background"]  # the remembered style file
    _assert_source_untouched(case)
    _assert_stylized(case["pixels"]["new"]["rgba"], case["pixels"]["before"]["rgba"])
    # GIMP wrote the values of this OK back, all of them: the next dialog opens with them.
    saved = case["last_values"]
    for line in ('(quality "draft")', "(seed 0)", "(size 0)", "(variations 1)", "style.png"):
        assert line in saved
    assert "(strength 8" in saved and "(strength 80)" not in saved  # raised in the dialog
    # Its progress went to GIMP's, not to a window of its own.
    assert case["progresss"] and case["progresss"][-1]["fraction"] == pytest.approx(1, abs=0.02)


def _pane_picture(record: dict) -> np.ndarray:
    return np.fromfile(record["file"], np.uint8).reshape(record["height"], record["width"], 3)


def test_the_preview_pane_styles_the_layer_and_follows_strength(dialog_session):
    """The pane shows the layer styled at draft quality on opening, and again after a
    Strength change (the user's key), each a stylized picture of the layer at <= 160 px."""
    panes = dialog_session["dialog"]["panes"]
    assert len(panes) >= 2, panes
    first, changed = panes[0], panes[-1]
    print(
        f"gimp e2e: pane: first preview {first['since_open']:.2f} s after the dialog opened "
        f"(the preview itself {first['seconds']:.2f} s); after the Strength change "
        f"{changed['seconds']:.2f} s"
    )
    assert changed["style_weight"] > first["style_weight"]  # Strength went up
    assert first["seed"] == changed["seed"] == 0
    w, h = CONTENT_SIZE
    for pane in (first, changed):
        assert (pane["width"], pane["height"]) == (w, h)  # under 160 px: the layer's own size
        picture = _pane_picture(pane).astype(np.float32) / 255
        _assert_stylized(picture, _content()[..., :3].astype(np.float32) / 255)


def test_keep_preview_makes_the_panes_picture_the_result(dialog_session):
    """The dialog's second button keeps what the pane shows: no job, the pane's picture
    (the same size here) is the new layer, named and marked with its seed."""
    case = dialog_session["keep_preview"]
    assert case["status"] == "success", case["message"]
    assert case["layers"] == ["style style, seed 0", "Background"]
    assert case["parasites"][0]["preview"] is True and case["parasites"][0]["seed"] == 0
    _assert_source_untouched(case)
    result = case["pixels"]["new"]["rgba"]
    _assert_stylized(result, case["pixels"]["before"]["rgba"])
    pane = _pane_picture(case["panes"][-1]).astype(np.float32) / 255
    assert np.abs(result[..., :3] - pane).mean() < 0.02
    assert not case["repaints"] and not case["progresss"]  # no job ran for it


def test_the_canvas_is_repainted_during_the_job_and_ends_with_the_daemons_result(session, daemon):
    case = session["live"]
    assert case["status"] == "success", case["message"]
    assert case["layers"] == ["style style, seed 0", "Background"]
    _assert_source_untouched(case)
    repaints = [r["iteration"] for r in case["repaints"]]
    print(f"gimp e2e: live: {len(repaints)} repaints in {case['seconds']:.1f} s at {repaints}")
    assert repaints == sorted(set(repaints))
    during = [r for r in repaints if r < Settings().at_quality("normal").iterations]
    assert len(during) >= 2  # repainted while the job ran, not only at its end
    # The same job straight on the daemon: the layer holds exactly its result.
    settings = logic.build_settings(
        strength=logic.DEFAULT_STRENGTH, size=0, quality="normal", preserve_colors="none", seed=0
    )
    with daemon.client() as client:
        direct = client.stylize(
            pixels.from_array(_content()), [pixels.from_array(_style())], settings
        )
    expected = pixels.to_array(direct.image)
    layer = np.round(case["pixels"]["new"]["rgba"] * 255)
    assert np.abs(layer - expected).max() <= 1


def test_a_bundled_painting_needs_no_file(session):
    case = session["painting"]
    assert case["status"] == "success", case["message"]
    assert case["layers"] == ["the-scream style, seed 0", "Background"]
    _assert_source_untouched(case)


def test_a_cancelled_job_leaves_the_image_as_it_was(session):
    case = session["cancelled"]
    assert case["status"] == "execution-error"
    assert "cancelled" in case["message"] and "\n" not in case["message"]
    assert case["new"] is None and case["layers"] == ["Background"]
    _assert_source_untouched(case)


def test_installer_finds_the_profile_inside_the_gimp_root(gimp_root):
    """install.sh --gimp-root without --gimp-profile: the profile of a user of the root."""
    if gimp_root == Path("/"):
        pytest.skip("GIMP runs on this host: there is no root to look inside")
    home = Path(tempfile.mkdtemp(prefix="brushwork-e2e-", dir=gimp_root / "home"))
    profile = home / ".config" / "GIMP" / "3.0"
    profile.mkdir(parents=True)
    try:
        started = time.monotonic()
        installed = subprocess.run(
            ["bash", str(REPO / "install" / "install.sh"), "--plugin-only", "--gimp-root",
             str(gimp_root), "--venv", sys.prefix],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        print(f"gimp e2e: install.sh --gimp-root {time.monotonic() - started:.1f} s")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        assert f"plug-in -> {profile}/plug-ins/brushwork" in installed.stdout
        assert (profile / "plug-ins" / "brushwork" / "brushwork_dialog.py").is_file()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_without_pyzmq_the_filter_is_listed_and_says_how_to_install_it(
    gimp_root, gimp, e2e_pictures
):
    """A fresh profile (GIMP queries the plug-in anew) whose plug-in has no zmq beside it, in
    a GIMP whose Python has none either: the filter is there and its one message names the
    fix."""
    bare = GimpSession(gimp_root)
    try:
        shutil.copytree(
            gimp.plugin, bare.plugin, ignore=shutil.ignore_patterns("zmq", "pyzmq*", "*.libs")
        )
        shutil.copy(gimp.work / "content.png", bare.work / "content.png")
        case = {
            "name": "nozmq",
            "content": bare.inside(bare.work / "content.png"),
            "args": {"painting": "the-great-wave", "quality": "draft"},
        }
        report = _run_cases(bare, "nozmq", [case])["nozmq"]
    finally:
        shutil.rmtree(bare.work, ignore_errors=True)
    assert report["status"] == "execution-error"
    message = report["message"]
    assert message.startswith("Neural style transfer: GIMP's Python (/usr/bin/python3")
    # Debian's GIMP runs the system Python, which has no pip: the distribution's package.
    assert "cannot import pyzmq" in message and "sudo apt-get install python3-zmq" in message
    assert "install/install.sh again" in message and "\n" not in message
    assert report["layers"] == ["Background"]


def test_progress_goes_to_gimps_progress(session):
    """Text and fraction through Gimp.progress_set_text/update (the image window's status
    bar, or the caller's progress): connecting, then each step with the time left."""
    progress = session["live"]["progresss"]
    texts = [p["text"] for p in progress]
    assert texts[0].startswith("Connecting to the daemon at tcp://127.0.0.1:")
    steps = [p for p in progress if p["fraction"] is not None]
    assert len(steps) >= 10 and all("step " in p["text"].lower() for p in steps)
    fractions = [p["fraction"] for p in steps]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1, abs=0.02)


def test_gimps_cancel_keeps_what_you_saw_and_stops_the_job(gimp, session):
    """GIMP's Cancel ends the plug-in at once: the layer stays as last repainted (one Undo
    removes it, no undo group left open), and the daemon stops the job of the vanished
    client."""
    case = session["stopped"]
    assert case["killed"], "the plug-in was never repainted, so never killed"
    assert case["status"] != "success"
    assert case["layers"] == ["stopped style, seed 0", "Background"]
    _assert_source_untouched(case)
    _assert_stylized(case["pixels"]["new"]["rgba"], case["pixels"]["before"]["rgba"])
    assert "inconsistent state" not in gimp.logs["batch"]  # no undo group was left open
    assert case["job"]["state"] == "cancelled", case["job"]


def test_two_seed_minus_one_runs_differ_and_name_their_seeds(session):
    a, b = session["seed_a"], session["seed_b"]
    seeds = []
    for case in (a, b):
        assert case["status"] == "success", case["message"]
        name = case["layers"][0]
        assert name.startswith("style style, seed ")
        seed = int(name.rsplit(" ", 1)[1])
        assert case["parasites"][0]["seed"] == seed  # kept with the layer, in XCF too
        seeds.append(seed)
    assert seeds[0] != seeds[1]
    first, second = a["pixels"]["new"]["rgba"], b["pixels"]["new"]["rgba"]
    print(f"gimp e2e: seeds {seeds}: mean difference {np.abs(first - second).mean():.4f}")
    assert np.abs(first - second).mean() > 0.01


def test_variations_make_a_layer_per_seed(session):
    case = session["variations"]
    assert case["status"] == "success", case["message"]
    assert case["layers"] == [
        "style style, seed 7",
        "style style, seed 8",
        "style style, seed 9",
        "Background",
    ]
    assert [p["seed"] for p in case["parasites"][:3]] == [7, 8, 9]
    assert case["parasites"][3] is None  # the source is left alone
    assert any(p["text"].startswith("Variation 3 of 3: ") for p in case["progresss"])
