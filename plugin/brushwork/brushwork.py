#!/usr/bin/env python3
"""Brushwork for GIMP 3: Filters > Artistic > Neural Style Transfer...

Sends the active layer (the selection's box of it) to the Brushwork daemon and puts the
stylized result in a new layer above it, repainted from the daemon's previews while the job
runs; the progress goes to GIMP's own (the image window's bar, text and Cancel). The dialog,
with its preview pane, lives in brushwork_dialog.py; pixels in and out of GIMP in
brushwork_gimp.py; decisions in brushwork_logic.py. The daemon is talked to on a thread of
its own; every GIMP call stays on the main thread. Imports only the standard library,
GIMP's GI modules and the shipped `brushwork` client package (pyzmq, imported when the
filter runs: a GIMP without pyzmq still lists the filter, and running it says how to
install pyzmq).
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
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

import brushwork_frames  # noqa: E402
import brushwork_gimp as bg  # noqa: E402
import brushwork_logic as logic  # noqa: E402
from brushwork.errors import BrushworkError  # noqa: E402
from brushwork.protocol import OUT_OF_MEMORY, PreviewReply, ProgressReply, RawImage  # noqa: E402
from brushwork.settings import PRESERVE_COLORS  # noqa: E402

PROCEDURE = "python-fu-brushwork-style"
CLIENT_TIMEOUT = 30.0  # seconds of daemon silence before giving up (it heartbeats every 1 s)
SETTINGS_PARASITE = "brushwork-settings"  # on each result layer: what made it (JSON)
_RW = GObject.ParamFlags.READWRITE


def _choice(values, labels):
    choice = Gimp.Choice.new()
    for i, value in enumerate(values):
        choice.add(value, i, labels[i], "")
    return choice


def add_arguments(proc):
    """The filter's arguments (the dialog shows them in this order, but style-image): another
    procedure reusing the dialog adds these, then its own."""
    proc.add_choice_argument(
        "painting", "_Painting", "A bundled public-domain painting as the style",
        _choice(["none", *(v for v, _ in logic.PAINTINGS)],
                ["None: the style file below", *(label for _, label in logic.PAINTINGS)]),
        logic.DEFAULT_PAINTING, _RW,
    )  # fmt: skip
    proc.add_file_argument(
        "style-file", "Style _file", "Image whose style is applied (wins over the painting)",
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
        "seed", "Se_ed", "-1 = a new variation every run; the seed used is in the layer's name",
        -1, logic.MAX_SEED, -1, _RW,
    )  # fmt: skip
    proc.add_int_argument(
        "variations", "Variatio_ns", "How many seeds to run, each into a layer of its own",
        1, logic.MAX_VARIATIONS, 1, _RW,
    )  # fmt: skip
    proc.add_string_argument(
        "server", "Ser_ver (advanced; empty = this computer)",
        "Another computer's Brushwork server as HOST:PORT; empty = the one on this computer",
        "", _RW,
    )  # fmt: skip


class Brushwork(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE, brushwork_frames.PROCEDURE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        if name == brushwork_frames.PROCEDURE:  # Filters > Animation: every layer a frame
            return brushwork_frames.create_procedure(self, sys.modules[__name__])
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
        add_arguments(proc)
        return proc

    def run(self, procedure, run_mode, image, drawables, config, data):
        cancelled = procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        try:
            layer = _one_layer(drawables)
            first_seed = None
            if run_mode == Gimp.RunMode.INTERACTIVE:
                import brushwork_dialog  # GTK: only runs from GIMP's UI load it

                outcome = brushwork_dialog.run(procedure, config, image, layer)
                if outcome.action == "cancel":
                    return cancelled
                if outcome.action == "keep-preview":
                    _keep_preview(image, layer, config, outcome)
                    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
                first_seed = outcome.seed
            _stylize(image, layer, config, first_seed)
        except (BrushworkError, ValueError) as e:
            return _failure(procedure, str(e))
        except GLib.Error as e:
            return _failure(procedure, f"GIMP refused: {e.message}")
        except Exception as e:  # a bug: still one message in GIMP, the traceback on stderr
            traceback.print_exc()
            return _failure(procedure, f"internal error ({type(e).__name__}: {e})")
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def _one_layer(drawables):
    if len(drawables) != 1 or not isinstance(drawables[0], Gimp.Layer):
        raise BrushworkError("select exactly one layer (not a mask or a channel)")
    if drawables[0].is_group():
        raise BrushworkError("the active layer is a layer group; select a pixel layer")
    return drawables[0]


def _failure(procedure, message):
    """One clear message: GIMP shows it in interactive runs and returns it to callers."""
    text = f"Neural style transfer: {message}"
    error = GLib.Error.new_literal(Gimp.PlugIn.error_quark(), text, 0)
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, error)


def _settings(config, seed):
    return logic.build_settings(
        strength=config.get_property("strength"),
        size=config.get_property("size"),
        tile=config.get_property("tile"),
        quality=config.get_property("quality"),
        preserve_colors=config.get_property("preserve-colors"),
        seed=seed,
    )


def _stylize(image, layer, config, first_seed=None):
    """Runs the filter: one job per variation, each into a layer of its own (its own Undo),
    one after the other. first_seed: the seed the dialog's preview showed (Seed -1)."""
    client_module = bg.client_module()
    seed = config.get_property("seed")
    seeds = logic.variation_seeds(seed, config.get_property("variations"))
    if seed < 0 and first_seed is not None:
        seeds[0] = first_seed
    for s in seeds:
        _settings(config, s)  # every bad value is refused before any work
    progress = _Progress()
    try:
        high_bit_depth = image.get_precision() not in bg.U8
        style, style_name = bg.read_style(bg.style_source(config), high_bit_depth)
        box = logic.selection_box(layer.mask_intersect())
        content = bg.read_pixels(layer, box, high_bit_depth, layer.has_alpha())
        plugin_config = logic.read_config(os.path.join(_HERE, logic.CONFIG_NAME))
        # An interactive run gives None for an empty string argument.
        endpoint = (config.get_property("server") or "").strip() or plugin_config.endpoint
        for number, s in enumerate(seeds, 1):
            settings = _settings(config, s)
            prefix = f"Variation {number} of {len(seeds)}: " if len(seeds) > 1 else ""
            live = _LiveLayer(image, layer, box, content, logic.layer_name(style_name, s))
            live.parasite = json.dumps({"style": style_name, **settings.to_dict()})
            previews = logic.preview_options(settings.iterations, box.width, box.height)
            job = functools.partial(
                _run_job, client_module, endpoint, plugin_config, content, style, settings
            )
            _one_variation(client_module, job, live, progress, prefix, previews)
    finally:
        progress.end()


def _one_variation(client_module, job, live, progress, prefix, previews):
    def shown(event):  # on the main thread
        live.on_event(event)
        if isinstance(event, ProgressReply):
            text = client_module.progress_text(event) + client_module.eta_text(event)
            progress.show(prefix + text, client_module.work_done(event))

    try:
        result = _in_background(lambda post: job(post, shown, progress, previews), progress.stopped)
        live.finish(result.image)
    except client_module.DaemonError as e:
        live.remove()
        if e.code == OUT_OF_MEMORY:
            raise BrushworkError(f"{e} (try a smaller size or a lower quality)") from None
        raise
    except BaseException:
        live.remove()
        raise


def _run_job(client_module, endpoint, plugin_config, content, style, settings, post, shown,
             progress, previews):  # fmt: skip
    """On the client's thread: no GIMP calls here, post() them."""
    with client_module.Client(endpoint, timeout=CLIENT_TIMEOUT) as client:
        post(functools.partial(progress.show, f"Connecting to the daemon at {endpoint}"))
        logic.ensure_daemon(
            endpoint, plugin_config, lambda t: client.hello(timeout=t), client_module.NoDaemon,
            on_wait=lambda s: post(functools.partial(progress.show, logic.starting_text(s))),
        )  # fmt: skip
        post(functools.partial(progress.show, "Waiting for the daemon"))
        return client.stylize(
            content, [style], settings, cancel=progress.stopped,
            on_event=lambda event: post(functools.partial(shown, event)), **previews,
        )  # fmt: skip


def _in_background(work, stopped):
    """work(post) on a thread of its own; post(fn) has fn run here, on the main thread, where
    every GIMP call must happen. Returns what work returned, or raises what it raised. A
    posted call that fails (e.g. the image was closed) sets `stopped`, which stops the job."""
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
    while (call := calls.get()) is not None:
        if failure is None:
            try:
                call()
            except BaseException as e:
                failure = e
                stopped.set()
    thread.join()
    if failure is not None:
        raise failure
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class _Progress:
    """GIMP's own progress: in the image window's status bar from the UI, the caller's for a
    script. Its Cancel is GIMP's: GIMP ends the plug-in at once (app/plug-in/gimpplugin.c
    kills it 10 ms after asking it to quit), so nothing of ours runs then. The daemon notices
    the vanished client and stops the job within seconds; the result layer keeps the last
    preview it was repainted with (what you saw), as one Undo step of its own.
    """

    def __init__(self):
        self.stopped = threading.Event()  # set when a GIMP call fails: the job is stopped
        Gimp.progress_init("Neural style transfer")

    def show(self, text, fraction=None):
        # progress_init, not set_text: GIMP ends the plug-in's progress when a core operation
        # that reports progress (the scaling of a preview to the layer) ends; init starts it
        # again or, when it runs, sets its text.
        Gimp.progress_init(text)
        if fraction is not None:
            Gimp.progress_update(fraction)
        bg.record("progress", text=text, fraction=fraction)

    def end(self):
        Gimp.progress_end()


class _LiveLayer:
    """The result layer, there from the first progress event on: right above the source,
    over the selection's box (masked by the selection), repainted from the daemon's previews
    every REPAINT_INTERVAL s, and finally given the result.

    Its creation is one undo group, closed at once (a group left open while GIMP's Cancel
    ends the plug-in would warn); repaints write its pixels without undo steps. So one Undo
    removes the result, whether the job ended or was cancelled; a job that fails removes it.
    """

    def __init__(self, image, source, box, content, name):
        self.image, self.source, self.box, self.content, self.name = (
            image, source, box, content, name
        )  # fmt: skip
        self.parasite = None  # JSON text attached to the layer: the settings that made it
        self.layer = None
        self.last_repaint = 0.0

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
            self.paint(event.image)
            self.last_repaint = time.monotonic()
            bg.record("repaint", job=event.job, iteration=event.iteration, layer=self.name)

    def _create(self):
        image, box = self.image, self.box
        kind = (
            Gimp.ImageType.GRAYA_IMAGE
            if image.get_base_type() == Gimp.ImageBaseType.GRAY
            else Gimp.ImageType.RGBA_IMAGE
        )
        image.undo_group_start()
        try:
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
            if self.parasite:
                data = self.parasite.encode()
                parasite = Gimp.Parasite.new(SETTINGS_PARASITE, Gimp.PARASITE_PERSISTENT, data)
                self.layer.attach_parasite(parasite)
        finally:
            image.undo_group_end()
        self._write(self.content)  # what the optimisation starts from

    def paint(self, image):
        """Show a (preview) image, scaled to the box, with the layer's own transparency."""
        if self.layer is None:
            self._create()
        box, content = self.box, self.content
        rgb = bg.scaled(image, box.width, box.height, content.dtype)
        data = rgb.data
        if content.channels == 4:
            data = logic.with_alpha(rgb.data, content.data, 1 if content.dtype == "u8" else 4)
        self._write(RawImage(box.width, box.height, content.channels, content.dtype, data))

    def finish(self, result):
        """The daemon's result replaces the preview (scaled back to the box if needed)."""
        if self.layer is None:
            self._create()
        if (result.width, result.height) != (self.box.width, self.box.height):
            result = bg.scaled(result, self.box.width, self.box.height, result.dtype)
        self._write(result)

    def remove(self):
        """Take the layer away again, unless the user already did (or closed the image)."""
        if self.layer is not None and self.layer.is_valid():
            self.image.remove_layer(self.layer)
            Gimp.displays_flush()
        self.layer = None

    def _write(self, raw):
        buffer = self.layer.get_buffer()
        rect = Gegl.Rectangle.new(0, 0, raw.width, raw.height)
        buffer.set(rect, logic.babl_format(raw.dtype, raw.channels), bytes(raw.data))
        buffer.flush()
        self.layer.update(0, 0, raw.width, raw.height)
        Gimp.displays_flush()


def _keep_preview(image, layer, config, outcome):
    """The dialog's "Keep preview": its pane's picture, scaled to the layer, as the result."""
    high_bit_depth = image.get_precision() not in bg.U8
    box = logic.selection_box(layer.mask_intersect())
    content = bg.read_pixels(layer, box, high_bit_depth, layer.has_alpha())
    settings = logic.pane_settings(
        strength=config.get_property("strength"),
        preserve_colors=config.get_property("preserve-colors"),
        seed=outcome.seed,
    )
    live = _LiveLayer(image, layer, box, content, logic.layer_name(outcome.style, outcome.seed))
    live.parasite = json.dumps({"style": outcome.style, "preview": True, **settings.to_dict()})
    live.paint(outcome.preview)


Gimp.main(Brushwork.__gtype__, sys.argv)
