"""Brushwork for GIMP 3: Filters > Animation > Neural Style Transfer (frames)...

An animation in GIMP is its stack of layers, played bottom layer first. This filter styles
each of them as a frame of a clip: every frame's job carries the frames before it and their
results (PROTOCOL.md, "A clip's frames"), and the daemon holds the new frame to them along the
optical flow, so the strokes stay put from frame to frame instead of flickering.

The results go into a new layer group above the frames, a layer a frame (the first at the
bottom, as the sources). The group and its layers (empty until their frame starts) are made
in one undo group, closed at once; the frames' pixels are written without undo steps, so one
Undo removes the whole result and nothing is left open when GIMP's Cancel ends the plug-in
(frames done stay, the frame under way keeps its last preview). The frame under way is
repainted from the daemon's previews. The dialog is the still filter's, plus frame options.

GI, the standard library and the shipped `brushwork` client only. brushwork.py, which GIMP
runs, registers the procedure and hands its own module in as `main` (its settings, progress,
live layer and background runner): this module cannot import it by name, which is the
shipped package's.
"""

import functools
import os
import traceback

from gi.repository import Gimp, GLib, GObject  # brushwork.py has required the versions

import brushwork_frames_logic as frames_logic
import brushwork_gimp as bg
import brushwork_logic as logic
from brushwork.errors import BrushworkError

PROCEDURE = "python-fu-brushwork-frames"
MENU_LABEL = "Neural Style Transfer (frames)..."
MENU_PATH = "<Image>/Filters/Animation"
# The arguments this filter adds to the still filter's, shown below them in the dialog.
ARGUMENTS = ["temporal-strength", "first-frame", "last-frame"]
_RW = GObject.ParamFlags.READWRITE


def create_procedure(plugin, main):
    """The frames filter's procedure: the still filter's arguments (main.add_arguments), then
    the frame options."""
    proc = Gimp.ImageProcedure.new(
        plugin, PROCEDURE, Gimp.PDBProcType.PLUGIN, functools.partial(run, main), None
    )
    proc.set_image_types("RGB*, GRAY*")
    proc.set_sensitivity_mask(
        Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES
    )
    proc.set_menu_label(MENU_LABEL)
    proc.add_menu_path(MENU_PATH)
    proc.set_documentation(
        "Paint every layer, as the frames of an animation, in the style of another image",
        "Neural style transfer run by the Brushwork daemon on each layer as a frame (the bottom"
        " layer first), each held to the frames before it along the optical flow so that the"
        " strokes do not flicker. The results go into a new layer group.",
        PROCEDURE,
    )
    proc.set_attribution("Brushwork", "Brushwork", "2025")
    main.add_arguments(proc)
    add_arguments(proc)
    return proc


def run(main, procedure, run_mode, image, drawables, config, data):
    """The procedure's run: the still filter's dialog with the frame options, then the
    frames; every failure one message (main._failure)."""
    cancelled = procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    try:
        seed = None
        if run_mode == Gimp.RunMode.INTERACTIVE:
            import brushwork_dialog  # GTK: only runs from GIMP's UI load it

            preview = drawables[0] if drawables else image.get_layers()[-1]
            arguments = [*brushwork_dialog.ARGUMENTS, *ARGUMENTS]
            outcome = brushwork_dialog.run(procedure, config, image, preview, arguments)
            if outcome.action == "cancel":
                return cancelled
            seed = outcome.seed  # "Keep preview" has no meaning for frames: it runs them
        stylize_frames(main, image, config, seed)
    except (BrushworkError, ValueError) as e:
        return main._failure(procedure, str(e))
    except GLib.Error as e:
        return main._failure(procedure, f"GIMP refused: {e.message}")
    except Exception as e:  # a bug: still one message in GIMP, the traceback on stderr
        traceback.print_exc()
        return main._failure(procedure, f"internal error ({type(e).__name__}: {e})")
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def add_arguments(proc):
    """The frame options, after the still filter's arguments."""
    proc.add_int_argument(
        "temporal-strength", "Te_mporal strength",
        "How firmly each frame holds to the frames before it (0: each frame on its own;"
        " 50: the default)",
        0, 100, frames_logic.DEFAULT_TEMPORAL_STRENGTH, _RW,
    )  # fmt: skip
    proc.add_int_argument(
        "first-frame", "_First frame", "The first frame to style (1 = the bottom layer)",
        1, 1_000_000, 1, _RW,
    )  # fmt: skip
    proc.add_int_argument(
        "last-frame", "_Last frame", "The last frame to style (0 = the top layer)",
        0, 1_000_000, 0, _RW,
    )  # fmt: skip


def stylize_frames(main, image, config, seed=None):
    """Style the chosen frames into a new layer group; raises BrushworkError (or the
    client's DaemonError) with the frames done kept. `seed`: the one the dialog's pane
    showed, for Seed -1 (else a new one; every frame takes the same)."""
    client_module = bg.client_module()
    chosen = config.get_property("seed")
    if chosen < 0:  # one seed for every frame: the pane's, else a new one
        chosen = seed if seed is not None else logic.variation_seeds(chosen, 1)[0]
    settings = main._settings(config, chosen)
    temporal = frames_logic.temporal(config.get_property("temporal-strength"))
    first = config.get_property("first-frame")
    layers = [_frame_layer_of(layer) for layer in image.get_layers()]
    frames = frames_logic.frames(
        layers, first, config.get_property("last-frame"), (image.get_width(), image.get_height())
    )
    sources = [Gimp.Layer.get_by_id(f.id) for f in frames]
    progress = main._Progress()
    try:
        high_bit_depth = image.get_precision() not in bg.U8
        style, style_name = bg.read_style(bg.style_source(config), high_bit_depth)
        box = logic.Box(0, 0, image.get_width(), image.get_height())
        contents = [bg.read_pixels(layer, box, high_bit_depth, alpha=True) for layer in sources]
        plugin_config = logic.read_config(os.path.join(main._HERE, logic.CONFIG_NAME))
        endpoint = (config.get_property("server") or "").strip() or plugin_config.endpoint
        name = frames_logic.group_name(
            logic.style_label(style_name), first, first + len(sources) - 1
        )
        group, live = _result_layers(main, image, name, sources, contents, box)
        previews = logic.preview_options(settings.iterations, box.width, box.height)

        def shown(index, event):  # on the main thread, as every posted call
            live[index].on_event(event)
            if isinstance(event, client_module.ProgressReply):
                step = client_module.progress_text(event) + client_module.eta_text(event)
                done = (index + client_module.work_done(event)) / len(sources)
                progress.show(frames_logic.progress_text(index, len(sources), step), done)

        def work(post):  # on the client's thread: no GIMP calls here, post() them
            results = []
            say = lambda text: post(functools.partial(progress.show, text))  # noqa: E731
            with client_module.Client(endpoint, timeout=main.CLIENT_TIMEOUT) as client:
                say(f"Connecting to the daemon at {endpoint}")
                logic.ensure_daemon(
                    endpoint, plugin_config, lambda t: client.hello(timeout=t),
                    client_module.NoDaemon, on_wait=lambda s: say(logic.starting_text(s)),
                )  # fmt: skip
                for index, content in enumerate(contents):
                    held = frames_logic.earlier(index, temporal.offsets)
                    result = client.stylize(
                        content, [style], settings, cancel=progress.stopped,
                        on_event=lambda event, i=index: post(functools.partial(shown, i, event)),
                        previous=[contents[i] for i in held],
                        previous_results=[results[i] for i in held],
                        temporal=temporal, **previews,
                    )  # fmt: skip
                    results.append(result.image)
                    post(functools.partial(live[index].finish, result.image))
            return results

        try:
            main._in_background(work, progress.stopped)
        except BaseException:
            _remove_unfinished(image, group, live)
            raise
    finally:
        progress.end()


def _frame_layer_of(layer):
    _, x, y = layer.get_offsets()
    geometry = (x, y, layer.get_width(), layer.get_height())
    return frames_logic.FrameLayer(layer.get_id(), layer.get_name(), layer.is_group(), geometry)


def _result_layers(main, image, name, sources, contents, box):
    """The group at the top of the image and a live layer a frame in it (empty until its
    frame starts), made as one undo step."""
    grey = image.get_base_type() == Gimp.ImageBaseType.GRAY
    kind = Gimp.ImageType.GRAYA_IMAGE if grey else Gimp.ImageType.RGBA_IMAGE
    image.undo_group_start()
    try:
        group = Gimp.GroupLayer.new(image, name)
        image.insert_layer(group, None, 0)
        live, frame_layer = [], _frame_layer_class(main)
        for source, content in zip(sources, contents, strict=True):
            layer = Gimp.Layer.new(
                image, frames_logic.frame_name(source.get_name()), box.width, box.height, kind,
                100.0, Gimp.LayerMode.NORMAL,
            )  # fmt: skip
            image.insert_layer(layer, group, 0)  # above the frames before: the first lowest
            live.append(frame_layer(image, source, box, content, layer.get_name()))
            live[-1].layer = layer
    finally:
        image.undo_group_end()
    Gimp.displays_flush()
    return group, live


def _frame_layer_class(main):
    """The still filter's live layer, over a layer made beforehand in the group; `done` once
    its frame's result is in."""

    class FrameLayer(main._LiveLayer):
        done = False

        def finish(self, result):
            super().finish(result)
            self.done = True

    return FrameLayer


def _remove_unfinished(image, group, live):
    """A run that failed or was stopped: the frames done stay, the others go (the whole
    group when none is done), as one more undo step."""
    if not image.is_valid() or not group.is_valid():
        return
    done = any(f.done for f in live)
    left = [f.layer for f in live if not f.done and f.layer.is_valid()] if done else [group]
    image.undo_group_start()
    try:
        for layer in left:
            image.remove_layer(layer)
    finally:
        image.undo_group_end()
    Gimp.displays_flush()
