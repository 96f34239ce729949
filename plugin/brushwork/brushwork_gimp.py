"""Pixels in and out of GIMP for the plug-in: layers, style images, scaling, the shipped
client; shared by the filter's run (brushwork.py) and its dialog (brushwork_dialog.py).

GIMP's GI modules, the standard library and the shipped `brushwork` package only.
"""

import json
import os
import sys
import time

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio, GLib  # noqa: E402

import brushwork_logic as logic  # noqa: E402
from brushwork.errors import BrushworkError  # noqa: E402
from brushwork.protocol import RawImage  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD_ENV = "BRUSHWORK_RECORD"  # a file to log repaints, progress and pane previews in (tests)
U8 = {Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL}


def record(kind, **fields):
    """One line of what the user would see, for the end-to-end tests (only when asked)."""
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "time": time.time(), **fields}) + "\n")


def client_module():
    """brushwork.client, imported only now: without pyzmq the filter still registers, and
    running it says what is missing and how to install it."""
    try:
        from brushwork import client
    except ImportError as e:
        raise BrushworkError(
            logic.missing_module_message(e, sys.executable, os.path.join(HERE, "lib"))
        ) from None
    return client


def style_source(config):
    """Where the style comes from, as a hashable key: ("image", id), ("file", path) or
    ("painting", value). An open image wins over a file, which wins over a painting."""
    style_image = config.get_property("style-image")
    if style_image is not None:
        return ("image", style_image.get_id())
    style_file = config.get_property("style-file")
    if style_file is not None and style_file.get_path() is not None:
        return ("file", style_file.get_path())
    painting = config.get_property("painting")
    if painting and painting != "none":
        return ("painting", painting)
    raise BrushworkError("choose a painting, a style file or an open style image")


def read_style(source, high_bit_depth, max_side=0):
    """The style's pixels (flattened, no alpha; long side at most max_side when given) and
    its name, from a style_source() key."""
    kind, value = source
    if kind == "image":
        image = Gimp.Image.get_by_id(value)
        if image is None or not image.is_valid():
            raise BrushworkError("the style image was closed")
        return _flattened_pixels(image.duplicate(), high_bit_depth, max_side), image.get_name()
    path = logic.painting_path(HERE, value) if kind == "painting" else value
    if not os.path.isfile(path):
        raise BrushworkError(f"the style file {path} does not exist")
    try:
        loaded = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))
    except GLib.Error as e:
        raise BrushworkError(f"cannot read the style file {path}: {e.message}") from None
    if loaded is None:
        raise BrushworkError(f"cannot read the style file {path}: not an image GIMP can open")
    return _flattened_pixels(loaded, high_bit_depth, max_side), path


def _flattened_pixels(scratch_image, high_bit_depth, max_side=0):
    """Pixels of a throw-away image after flattening it; the image is deleted afterwards."""
    try:
        scratch_image.undo_disable()
        flat = scratch_image.flatten()
        width, height = flat.get_width(), flat.get_height()
        if max_side and max(width, height) > max_side:
            scale = max_side / max(width, height)
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
            scratch_image.scale(width, height)
        box = logic.Box(0, 0, width, height)
        return read_pixels(flat, box, high_bit_depth, alpha=False)
    finally:
        scratch_image.delete()


def read_pixels(drawable, box, high_bit_depth, alpha, scale=1.0):
    """The box of a drawable as wire pixels; scale < 1 reads it smaller (GEGL's mipmaps)."""
    babl, dtype, channels = logic.wire_format(high_bit_depth, alpha)
    width, height = max(1, round(box.width * scale)), max(1, round(box.height * scale))
    rect = Gegl.Rectangle.new(round(box.x * scale), round(box.y * scale), width, height)
    data = drawable.get_buffer().get(rect, scale, babl, Gegl.AbyssPolicy.CLAMP)
    return RawImage(width, height, channels, dtype, bytes(data))


def scaled(raw, width, height, dtype):
    """`raw` scaled to width x height by GIMP (cubic), in `dtype`: a throw-away image does
    it, so nothing lands in the user's undo history."""
    precision = (
        Gimp.Precision.U8_NON_LINEAR if raw.dtype == "u8" else Gimp.Precision.FLOAT_NON_LINEAR
    )
    scratch = Gimp.Image.new_with_precision(
        raw.width, raw.height, Gimp.ImageBaseType.RGB, precision
    )
    try:
        scratch.undo_disable()
        kind = Gimp.ImageType.RGBA_IMAGE if raw.channels == 4 else Gimp.ImageType.RGB_IMAGE
        layer = Gimp.Layer.new(
            scratch, "scaled", raw.width, raw.height, kind, 100.0, Gimp.LayerMode.NORMAL
        )
        scratch.insert_layer(layer, None, 0)
        buffer = layer.get_buffer()
        rect = Gegl.Rectangle.new(0, 0, raw.width, raw.height)
        buffer.set(rect, logic.babl_format(raw.dtype, raw.channels), bytes(raw.data))
        buffer.flush()
        Gimp.context_push()
        Gimp.context_set_interpolation(Gimp.InterpolationType.CUBIC)
        layer.scale(width, height, False)
        Gimp.context_pop()
        rect = Gegl.Rectangle.new(0, 0, width, height)
        fmt = logic.babl_format(dtype, raw.channels)
        data = layer.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.NONE)
        return RawImage(width, height, raw.channels, dtype, bytes(data))
    finally:
        scratch.delete()
