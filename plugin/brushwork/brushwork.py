#!/usr/bin/env python3
"""Brushwork for GIMP 3: Filters > Artistic > Neural Style Transfer...

Sends the active layer (the selection's box of it) to the Brushwork daemon and puts the
stylized result in a new layer above it, repainted from the daemon's previews while the job
runs; from GIMP's UI a progress window of its own shows where the job is and cancels it.
The daemon is talked to on a thread of its own; every GIMP call stays on the main thread.
Imports only the standard library, GIMP's GI modules and the shipped `brushwork` client
package (pyzmq, imported when the filter runs: a GIMP without pyzmq still lists the filter,
and running it says how to install pyzmq); decisions live in brushwork_logic.py.
"""

import functools
import json
import os
import queue
import sys
import threading
import time
import traceback

# The installer puts the `brushwork` package (and pyzmq when GIMP's Python lacks it) in lib/.
# First on the path: this very file is also named brushwork.py.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "lib"))

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio, GLib, GObject  # noqa: E402

import brushwork_logic as logic  # noqa: E402
from brushwork.errors import BrushworkError  # noqa: E402
from brushwork.protocol import (  # noqa: E402
    CANCELLED,
    OUT_OF_MEMORY,
    PreviewReply,
    ProgressReply,
    RawImage,
)
from brushwork.settings import PRESERVE_COLORS  # noqa: E402

PROCEDURE = "python-fu-brushwork-style"
CLIENT_TIMEOUT = 30.0  # seconds of daemon silence before giving up (it heartbeats every 1 s)
RECORD_ENV = "BRUSHWORK_RECORD_REPAINTS"  # a file to log each canvas repaint in (tests)
PROGRESS_TITLE = "Neural Style Transfer: painting"  # the plug-in's own progress window
PUMP_INTERVAL = 0.05  # seconds: how often the progress window handles its events
_RW = GObject.ParamFlags.READWRITE
# Every argument but style-image, in dialog order (see _dialog).
DIALOG_ARGUMENTS = [
    "painting",
    "style-file",
    "strength",
    "size",
    "tile",
    "quality",
    "preserve-colors",
    "seed",
    "server",
]
_U8 = {Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL}


def _choice(values, labels):
    choice = Gimp.Choice.new()
    for i, value in enumerate(values):
        choice.add(value, i, labels[i], "")
    return choice


class Brushwork(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        proc.set_image_types("RGB*, GRAY*")
        proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        proc.set_menu_label("Neural Style Transfer...")
        proc.add_menu_path("<Image>/Filters/Artistic")
        proc.set_documentation(
            "Paint the layer in the style of another image",
            "Neural style transfer (Gatys et al.) run by the Brushwork daemon. The active layer, "
            "or the selection's part of it, is stylized into a new layer above it.",
            name,
        )
        proc.set_attribution("Brushwork", "Brushwork", "2025")
        proc.add_choice_argument(
            "painting", "_Painting", "A bundled public-domain painting as the style",
            _choice(["none", *(v for v, _ in logic.PAINTINGS)],
                    ["None: the style file below", *(label for _, label in logic.PAINTINGS)]),
            "none", _RW,
        )  # fmt: skip
        proc.add_file_argument(
            "style-file", "Style _file", "Image whose style is applied",
            Gimp.FileChooserAction.OPEN, True, None, _RW,
        )  # fmt: skip
        proc.add_image_argument(
            "style-image", "Style _image", "An open image as the style, instead of a file",
            True, _RW,
        )  # fmt: skip
        proc.add_int_argument(
            "strength", "S_trength", "How strongly the style shows (50: the daemon's default)",
            0, 100, logic.DEFAULT_STRENGTH, _RW,
        )  # fmt: skip
        proc.add_int_argument(
            "size", "Si_ze", "Long side in px to stylize at; 0 = the layer's own size",
            0, 16384, 0, _RW,
        )  # fmt: skip
        proc.add_int_argument(
            "tile", "Tile (p_x)", "Force tiling with tiles of this many px; 0 = only when needed",
            0, 16384, 0, _RW,
        )  # fmt: skip
        proc.add_choice_argument(
            "quality", "_Quality", "More iterations and scales take longer",
            _choice(logic.QUALITIES, ("Draft (one scale, few steps)", "Normal", "High (slow)")),
            "normal", _RW,
        )  # fmt: skip
        proc.add_choice_argument(
            "preserve-colors", "_Keep colors", "Keep the layer's own colors",
            _choice(PRESERVE_COLORS, ("No", "Luminance only transfer", "Match style histogram")),
            "none", _RW,
        )  # fmt: skip
        proc.add_int_argument(
            "seed", "Se_ed", "Random seed; -1 = a new one every run", -1, 2**31 - 1, -1, _RW
        )
        proc.add_string_argument(
            "server", "Ser_ver (advanced; empty = this computer)",
            "Another computer's Brushwork server as HOST:PORT; empty = the one on this computer",
            "", _RW,
        )  # fmt: skip
        return proc

    def run(self, procedure, run_mode, image, drawables, config, data):
        cancelled = procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        if run_mode == Gimp.RunMode.INTERACTIVE and not _dialog(procedure, config):
            return cancelled
        try:
            if len(drawables) != 1 or not isinstance(drawables[0], Gimp.Layer):
                raise BrushworkError("select exactly one layer (not a mask or a channel)")
            if drawables[0].is_group():
                raise BrushworkError("the active layer is a layer group; select a pixel layer")
            # From GIMP's UI (the dialog, or Repeat) the run gets our own progress window.
            _stylize(image, drawables[0], config, window=run_mode != Gimp.RunMode.NONINTERACTIVE)
        except _Cancelled:
            return cancelled
        except (BrushworkError, ValueError) as e:
            return _failure(procedure, str(e))
        except GLib.Error as e:
            return _failure(procedure, f"GIMP refused: {e.message}")
        except Exception as e:  # a bug: still one message in GIMP, the traceback on stderr
            traceback.print_exc()
            return _failure(procedure, f"internal error ({type(e).__name__}: {e})")
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def _dialog(procedure, config):
    """Interactive run: GIMP's own dialog for the arguments (it remembers the last values).

    GIMP 3.0's dialog has no widget for image arguments, so an image combo box stands in
    for style-image.
    """
    GimpUi, Gtk = _gimp_ui()
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "Neural Style Transfer")
    dialog.fill(list(DIALOG_ARGUMENTS))
    use_image = Gtk.CheckButton.new_with_mnemonic("Use an open _image as the style instead:")
    images = GimpUi.ImageComboBox.new(None)
    chosen = config.get_property("style-image")
    if chosen is not None and chosen.is_valid():
        images.set_active(chosen.get_id())
        use_image.set_active(True)
    images.set_sensitive(use_image.get_active())
    use_image.connect("toggled", lambda button: images.set_sensitive(button.get_active()))
    row = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
    row.pack_start(use_image, False, False, 0)
    row.pack_start(images, False, False, 0)
    content = dialog.get_content_area()
    content.pack_start(row, False, False, 0)
    # Right below the style file: the two ways of choosing a style belong together.
    style_file = dialog.get_widget("style-file", GObject.TYPE_NONE)
    if style_file is not None and style_file.get_parent() is content:
        content.reorder_child(row, content.child_get_property(style_file, "position") + 1)
    row.show_all()
    ok = dialog.run()
    if ok:
        found, image_id = images.get_active()
        style_image = Gimp.Image.get_by_id(image_id) if found and use_image.get_active() else None
        config.set_property("style-image", style_image)
    dialog.destroy()
    return ok


@functools.cache
def _gimp_ui():
    """GimpUi and Gtk, initialised once: only runs from GIMP's UI load them."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init("brushwork")
    return GimpUi, Gtk


def _failure(procedure, message):
    """One clear message: GIMP shows it in interactive runs and returns it to callers."""
    text = f"Neural style transfer: {message}"
    error = GLib.Error.new_literal(Gimp.PlugIn.error_quark(), text, 0)
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, error)


def _client_module():
    """brushwork.client, imported only now: without pyzmq the filter still registers, and
    running it says what is missing and how to install it."""
    try:
        from brushwork import client
    except ImportError as e:
        raise BrushworkError(
            logic.missing_module_message(e, sys.executable, os.path.join(_HERE, "lib"))
        ) from None
    return client


class _Cancelled(Exception):
    """The user pressed Cancel in the progress window."""


def _stylize(image, layer, config, window):
    client_module = _client_module()
    settings = logic.build_settings(
        strength=config.get_property("strength"),
        size=config.get_property("size"),
        tile=config.get_property("tile"),
        quality=config.get_property("quality"),
        preserve_colors=config.get_property("preserve-colors"),
        seed=config.get_property("seed"),
    )
    progress = _Progress(window)
    try:
        high_bit_depth = image.get_precision() not in _U8
        style, style_name = _read_style(config, high_bit_depth)
        box = logic.selection_box(layer.mask_intersect())
        content = _read_pixels(layer, box, high_bit_depth, layer.has_alpha())
        plugin_config = logic.read_config(os.path.join(_HERE, logic.CONFIG_NAME))
        # An interactive run gives None for an empty string argument.
        endpoint = (config.get_property("server") or "").strip() or plugin_config.endpoint
        live = _LiveLayer(image, layer, box, content, logic.layer_name(style_name))
        previews = logic.preview_options(settings.iterations, box.width, box.height)

        def shown(event):  # on the main thread
            live.on_event(event)
            if isinstance(event, ProgressReply):
                text = client_module.progress_text(event) + client_module.eta_text(event)
                progress.show(text, client_module.work_done(event))

        def work(post):  # on the client's thread: no GIMP calls here, post() them
            with client_module.Client(endpoint, timeout=CLIENT_TIMEOUT) as client:
                post(functools.partial(progress.show, f"Connecting to the daemon at {endpoint}"))
                ping = lambda t: client.hello(timeout=t)  # noqa: E731
                logic.ensure_daemon(endpoint, plugin_config, ping, client_module.NoDaemon)
                post(functools.partial(progress.show, "Waiting for the daemon"))
                return client.stylize(
                    content, [style], settings, cancel=progress.cancelled,
                    on_event=lambda event: post(functools.partial(shown, event)), **previews,
                )  # fmt: skip

        try:
            result = _in_background(work, progress)
            if progress.cancelled.is_set():  # pressed as the result came in: still cancelled
                raise _Cancelled
            live.finish(result.image)
        except client_module.DaemonError as e:
            live.remove()
            if e.code == CANCELLED and progress.cancelled.is_set():
                raise _Cancelled from None
            if e.code == OUT_OF_MEMORY:
                raise BrushworkError(f"{e} (try a smaller size or a lower quality)") from None
            raise
        except BaseException:
            live.remove()
            raise
    finally:
        progress.end()


def _in_background(work, progress):
    """work(post) on a thread of its own, so that the progress window stays live while it
    waits on the daemon; post(fn) has fn run here, on the main thread, where every GIMP call
    must happen. Returns what work returned, or raises what it raised."""
    calls = queue.Queue()
    outcome = []

    def target():
        try:
            outcome.append((True, work(calls.put)))
        except BaseException as e:
            outcome.append((False, e))
        calls.put(None)

    thread = threading.Thread(target=target, name="brushwork-client", daemon=True)
    thread.start()
    failure = None
    while True:
        progress.pump()
        try:
            call = calls.get(timeout=PUMP_INTERVAL)
        except queue.Empty:
            continue
        if call is None:
            break
        if failure is None:
            try:
                call()
            except BaseException as e:  # e.g. the image was closed: stop the job, say why
                failure = e
                progress.cancelled.set()
    thread.join()
    if failure is not None:
        raise failure
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class _Progress:
    """Where a run's progress shows, and how the user stops it.

    From GIMP's UI, the plug-in's own window with a bar and a Cancel button, as GIMP's own
    spyro-plus plug-in does. GIMP's progress bar in the image window has a Cancel too, but
    GIMP answers it by killing the plug-in 10 ms after asking it to quit
    (app/plug-in/gimpplugin.c), so the half-painted layer would stay; a plug-in that never
    calls Gimp.progress_init never gets that bar, and our Cancel cancels the job, removes the
    layer and returns CANCEL. Scripts (non-interactive runs) get GIMP's progress.
    """

    def __init__(self, window):
        self.cancelled = threading.Event()  # read by the client's thread
        self.dialog = None
        if not window:
            Gimp.progress_init("Neural style transfer")
            return
        GimpUi, Gtk = _gimp_ui()
        self.dialog = GimpUi.Dialog(title=PROGRESS_TITLE, role="brushwork-progress")
        self.dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
        self.dialog.connect("response", lambda *_: self.cancel())  # Cancel, Escape, close
        self.bar = Gtk.ProgressBar(show_text=True)
        self.bar.set_size_request(420, -1)
        area = self.dialog.get_content_area()
        area.set_border_width(12)
        area.pack_start(self.bar, False, False, 0)
        GimpUi.window_set_transient(self.dialog)
        self.dialog.show_all()
        self.show("Starting")

    def show(self, text, fraction=None):
        if self.dialog is None:
            Gimp.progress_set_text(text)
            if fraction is not None:
                Gimp.progress_update(fraction)
            return
        if not self.cancelled.is_set():
            self.bar.set_text(text)
        if fraction is not None:
            self.bar.set_fraction(fraction)
        self.pump()

    def cancel(self):
        self.cancelled.set()
        self.dialog.set_response_sensitive(_gimp_ui()[1].ResponseType.CANCEL, False)
        self.bar.set_text("Cancelling")

    def pump(self):
        """Let the window draw itself and notice Cancel."""
        if self.dialog is not None:
            Gtk = _gimp_ui()[1]
            while Gtk.events_pending():
                Gtk.main_iteration_do(False)

    def end(self):
        if self.dialog is None:
            Gimp.progress_end()
            return
        self.dialog.destroy()
        self.pump()


def _read_style(config, high_bit_depth):
    """The style's pixels (flattened, no alpha) and its name: an open image wins over a
    bundled painting, which wins over a file."""
    style_image = config.get_property("style-image")
    if style_image is not None:
        return _flattened_pixels(style_image.duplicate(), high_bit_depth), style_image.get_name()
    painting = config.get_property("painting")
    if painting and painting != "none":
        style_file = Gio.File.new_for_path(logic.painting_path(_HERE, painting))
    else:
        style_file = config.get_property("style-file")
    if style_file is None or style_file.get_path() is None:
        raise BrushworkError("choose a painting, a style file or an open style image")
    path = style_file.get_path()
    if not os.path.isfile(path):
        raise BrushworkError(f"the style file {path} does not exist")
    try:
        loaded = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, style_file)
    except GLib.Error as e:
        raise BrushworkError(f"cannot read the style file {path}: {e.message}") from None
    if loaded is None:
        raise BrushworkError(f"cannot read the style file {path}: not an image GIMP can open")
    return _flattened_pixels(loaded, high_bit_depth), path


def _flattened_pixels(scratch_image, high_bit_depth):
    """Pixels of a throw-away image after flattening it; the image is deleted afterwards."""
    try:
        flat = scratch_image.flatten()
        box = logic.Box(0, 0, flat.get_width(), flat.get_height())
        return _read_pixels(flat, box, high_bit_depth, alpha=False)
    finally:
        scratch_image.delete()


def _read_pixels(drawable, box, high_bit_depth, alpha):
    babl, dtype, channels = logic.wire_format(high_bit_depth, alpha)
    rect = Gegl.Rectangle.new(box.x, box.y, box.width, box.height)
    data = drawable.get_buffer().get(rect, 1.0, babl, Gegl.AbyssPolicy.NONE)
    return RawImage(box.width, box.height, channels, dtype, bytes(data))


class _LiveLayer:
    """The result layer, there from the first progress event on: right above the source,
    over the selection's box (masked by the selection), repainted from the daemon's previews
    every REPAINT_INTERVAL s, and finally given the result. Everything happens in one undo
    group: one Undo removes the result. A failed or cancelled job removes the layer again.
    """

    def __init__(self, image, source, box, content, name):
        self.image, self.source, self.box, self.content, self.name = (
            image, source, box, content, name
        )  # fmt: skip
        self.layer = None
        self.grouped = False  # an undo group is open
        self.last_repaint = 0.0
        self.record = os.environ.get(RECORD_ENV)

    def on_event(self, event):
        if self.layer is None:
            self._create()
        elif not self.layer.is_valid():
            raise BrushworkError(
                "the layer being painted was deleted (or its image closed), so the job was stopped"
            )
        if (
            isinstance(event, PreviewReply)
            and time.monotonic() - self.last_repaint >= logic.REPAINT_INTERVAL
        ):
            self._repaint(event)

    def _create(self):
        image, box = self.image, self.box
        kind = (
            Gimp.ImageType.GRAYA_IMAGE
            if image.get_base_type() == Gimp.ImageBaseType.GRAY
            else Gimp.ImageType.RGBA_IMAGE
        )
        image.undo_group_start()
        self.grouped = True
        self.layer = Gimp.Layer.new(
            image, self.name, box.width, box.height, kind, 100.0, Gimp.LayerMode.NORMAL
        )
        image.insert_layer(
            self.layer, self.source.get_parent(), image.get_item_position(self.source)
        )
        _, off_x, off_y = self.source.get_offsets()
        placed = box.moved(off_x, off_y)
        self.layer.set_offsets(placed.x, placed.y)
        if not Gimp.Selection.is_empty(image):
            self.layer.add_mask(self.layer.create_mask(Gimp.AddMaskType.SELECTION))
        self._write(self.content)  # what the optimisation starts from

    def _repaint(self, event):
        box, content = self.box, self.content
        rgb = _scaled(event.image, box.width, box.height, content.dtype)
        data = rgb.data
        if content.channels == 4:
            data = logic.with_alpha(rgb.data, content.data, 1 if content.dtype == "u8" else 4)
        self._write(RawImage(box.width, box.height, content.channels, content.dtype, data))
        self.last_repaint = time.monotonic()
        if self.record:
            with open(self.record, "a", encoding="utf-8") as f:
                record = {"job": event.job, "iteration": event.iteration, "layer": self.name}
                f.write(json.dumps(record) + "\n")

    def finish(self, result):
        """The daemon's result replaces the preview (scaled back to the box if needed)."""
        if self.layer is None:
            self._create()
        if (result.width, result.height) != (self.box.width, self.box.height):
            result = _scaled(result, self.box.width, self.box.height, result.dtype)
        self._write(result)
        self._close()

    def remove(self):
        """Take the layer away again, unless the user already did (or closed the image)."""
        if self.layer is not None and self.layer.is_valid():
            self.image.remove_layer(self.layer)
            Gimp.displays_flush()
        self.layer = None
        self._close()

    def _close(self):
        if self.grouped:
            self.grouped = False
            if self.image.is_valid():
                self.image.undo_group_end()

    def _write(self, raw):
        buffer = self.layer.get_buffer()
        rect = Gegl.Rectangle.new(0, 0, raw.width, raw.height)
        buffer.set(rect, logic.babl_format(raw.dtype, raw.channels), bytes(raw.data))
        buffer.flush()
        self.layer.update(0, 0, raw.width, raw.height)
        Gimp.displays_flush()


def _scaled(raw, width, height, dtype):
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


Gimp.main(Brushwork.__gtype__, sys.argv)
