"""The frames filter (Filters > Animation > Neural Style Transfer (frames)) in a real GIMP 3
against the suite's real daemon: a 3-layer animation of a panned painting, styled frame by
frame into a new layer group; a second run stopped by a daemon cancel in its second frame
keeps the first. One GIMP session runs both, in the suite's GIMP profile (tests/fixtures_gimp.py,
shared with test_gimp_e2e.py)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

from brushwork import pixels
from brushwork.settings import Settings
from clip_helpers import panned_clip, style
from fixtures_gimp import dumped_pixels
from plugin_helpers import plugin_module

pytestmark = pytest.mark.gimp

logic = plugin_module("brushwork_logic")

SIZE = 48  # px: the animation's frames
FRAMES = 3
# Only the stopped run (of this module's) takes this many steps a frame: long enough to be
# cancelled in its second frame.
STOPPED_STEPS = Settings().at_quality("normal").iterations

# What the session in GIMP does for each case (fixtures_gimp.BATCH_HEAD before it).
BATCH = r"""
def run_case(case):
    image = Gimp.Image.new(SPEC["size"], SPEC["size"], Gimp.ImageBaseType.RGB)
    for path in SPEC["frames"]:  # each above the one before: frame 1 at the bottom
        layer = Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image,
                                     Gio.File.new_for_path(path))
        image.insert_layer(layer, None, 0)
    proc = Gimp.get_pdb().lookup_procedure("python-fu-brushwork-frames")
    assert proc is not None, "the frames filter is not registered"
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [image.get_layers()[0]])
    cfg.set_property("style-file", Gio.File.new_for_path(SPEC["style"]))
    for key, value in case["args"].items():
        cfg.set_property(key, value)
    result = proc.run(cfg)
    ended = time.time()
    status = result.index(0)
    top = image.get_layers()
    report = {
        "status": status.value_nick,
        "message": result.index(1) if status != Gimp.PDBStatusType.SUCCESS else None,
        "ended": ended,
        "layers": [layer.get_name() for layer in top],
        "sources": [dump(layer, f"{case['name']}-source-{i}")
                    for i, layer in enumerate(reversed([l for l in top if not l.is_group()]))],
        "frames": [],
    }
    groups = [layer for layer in top if layer.is_group()]
    if groups:
        report["group"] = groups[0].get_name()
        children = list(reversed(groups[0].get_children()))  # the first frame at the bottom
        report["frames"] = [dump(c, f"{case['name']}-frame-{i}") for i, c in enumerate(children)]
    image.delete()
    return report
"""


@pytest.fixture(scope="module")
def frames_session(gimp, daemon) -> dict:
    """Both runs in one GIMP session: the report by case, pixels loaded, and for the first run
    what the plug-in recorded (repaints, progress) while it ran."""
    folder = gimp.work / "frames"  # this module's files, apart from the other GIMP tests'
    out = folder / "out"
    out.mkdir(parents=True)
    try:
        paths = []
        for t, frame in enumerate(panned_clip(FRAMES, SIZE), 1):
            path = folder / f"frame-{t}.png"
            Image.fromarray(frame).save(path)
            paths.append(gimp.inside(path))
        Image.fromarray(style()).save(folder / "style.png")
        spec = {
            "out": gimp.inside(out),
            "size": SIZE,
            "frames": paths,
            "style": gimp.inside(folder / "style.png"),
            "cases": [
                {"name": "frames", "args": {"quality": "draft", "seed": 0}},
                {"name": "stopped", "args": {"quality": "normal", "seed": 0}},
            ],
        }
        done = threading.Event()
        canceller = threading.Thread(target=_cancel_second_frame, args=(daemon, done))
        canceller.start()
        began = time.time()
        try:
            report = gimp.run_cases("frames", BATCH, spec)
        finally:
            done.set()
            canceller.join()
        record = gimp.out / "record.jsonl"  # what the user saw: repaints, progress
        seen = [json.loads(line) for line in record.read_text().splitlines()]
        ended = report["frames"]["ended"]  # the other GIMP tests' records are not the run's
        report["frames"]["seen"] = [r for r in seen if began <= r["time"] < ended]
        for case in (report["frames"], report["stopped"]):
            for key in ("sources", "frames"):
                case[key] = [dumped_pixels(out, info)["rgba"] for info in case[key]]
        yield report
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _cancel_second_frame(daemon, done: threading.Event) -> None:
    """Cancel the stopped run's second frame once it has done 5 steps, as `brushwork cancel`
    run by the daemon's user would (the operator token); jobs of earlier tests do not count."""
    operator = daemon.operator_token()
    began, seen = time.time(), set()
    with daemon.client() as client:
        while not done.is_set():
            for job in client.info(operator).queue:
                if job["total"] == STOPPED_STEPS and job["submitted"] >= began:
                    seen.add(job["id"])
                    if len(seen) == 2 and job["state"] == "running" and job["iteration"] >= 5:
                        client.cancel(job["id"], operator)
                        return
            time.sleep(0.1)


def test_every_layer_is_styled_as_a_frame_into_a_new_group(frames_session, daemon):
    case = frames_session["frames"]
    assert case["status"] == "success", case["message"]
    group = f"{logic.style_label('style.png')} style, frames 1-3"
    assert case["layers"][0] == group and len(case["layers"]) == 4
    assert len(case["frames"]) == FRAMES
    for source, frame in zip(case["sources"], case["frames"], strict=True):
        assert np.isfinite(frame).all() and np.abs(frame[..., :3] - source[..., :3]).mean() > 0.05
    # The second frame is the daemon's own result for it, held to the first frame's result:
    # the same job straight on the daemon gives the layer's pixels.
    # Each frame's layer was repainted from the daemon's previews while its job ran, and
    # GIMP's progress named the frame.
    repainted = {r["layer"] for r in case["seen"] if r["kind"] == "repaint"}
    assert repainted == {f"frame-{t}.png styled" for t in range(1, FRAMES + 1)}
    shown = [r["text"] for r in case["seen"] if r["kind"] == "progress"]
    assert {t.split(":")[0] for t in shown if t.startswith("Frame ")} == {
        f"Frame {t} of {FRAMES}" for t in range(1, FRAMES + 1)
    }
    u8 = [np.round(f * 255).astype(np.uint8) for f in (*case["sources"], *case["frames"])]
    sources, results = u8[:FRAMES], u8[FRAMES:]
    settings = logic.build_settings(
        strength=logic.DEFAULT_STRENGTH, size=0, quality="draft", preserve_colors="none", seed=0
    )
    with daemon.client() as client:
        direct = client.stylize(
            pixels.from_array(sources[1]), [pixels.from_array(style())], settings,
            previous=[pixels.from_array(sources[0])],
            previous_results=[pixels.from_array(results[0])],
        )  # fmt: skip
    assert np.abs(pixels.to_array(direct.image).astype(int) - results[1]).max() <= 1


def test_a_run_stopped_in_its_second_frame_keeps_the_first(frames_session):
    case = frames_session["stopped"]
    assert case["status"] == "execution-error"
    assert "cancelled" in case["message"] and "\n" not in case["message"]
    assert len(case["frames"]) == 1  # the first frame done; the others gone
    assert np.abs(case["frames"][0][..., :3] - case["sources"][0][..., :3]).mean() > 0.05
