"""The filter's dialog: GIMP's own dialog for the arguments, a preview pane that styles the
layer (or selection) at draft quality as the dialog now says, thumbnails of the bundled
paintings, and a "Keep preview" button that takes the pane's picture as the result.

run() takes the arguments to show and extra widgets, so that another procedure (the frames
filter) reuses the whole dialog with options of its own. The pane's daemon jobs run on a
thread of their own (_PaneWorker); every GIMP and GTK call stays on the main thread.
"""

import os
import threading
import time
from dataclasses import dataclass

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
gi.require_version("GdkPixbuf", "2.0")
from gi.repository import GdkPixbuf, Gimp, GimpUi, GLib, GObject, Gtk  # noqa: E402

import brushwork_gimp as bg  # noqa: E402
import brushwork_logic as logic  # noqa: E402
from brushwork.errors import BrushworkError  # noqa: E402
from brushwork.protocol import CANCELLED, PREVIEW, PreviewReply, RawImage  # noqa: E402

# Every argument of the filter but style-image (a combo of open images stands in for it).
ARGUMENTS = [
    "painting",
    "style-file",
    "strength",
    "size",
    "tile",
    "quality",
    "preserve-colors",
    "seed",
    "variations",
    "server",
]
# A change of these restyles the pane (size, tile and quality are the full run's business).
PANE_ARGUMENTS = ("painting", "style-file", "strength", "preserve-colors", "seed")
KEEP_PREVIEW = 42  # "Keep preview"'s response id (1 is GimpProcedureDialog's Reset)
PANE_BOX = 240  # px: the pane's picture is shown this large at most
THUMBNAIL = 44  # px: the paintings' thumbnails
PANE_UPDATES = 4  # pictures the pane shows while a preview is computed
CLIENT_TIMEOUT = 30.0


@dataclass
class Outcome:
    """What the dialog ended with: "run", "keep-preview" or "cancel"; the seed the pane
    showed (the run's first when Seed is -1); the pane's picture and its style's name."""

    action: str
    seed: int
    preview: RawImage | None = None
    style: str = ""


def run(procedure, config, image, layer, arguments=ARGUMENTS, extra=()):
    """Show the dialog for `layer`; `extra` widgets go below the arguments. The chosen
    values end up in `config` (GIMP remembers them for the next time)."""
    GimpUi.init("brushwork")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "Neural Style Transfer")
    options = dialog.fill_box("brushwork-options", list(arguments))
    use_image, images = _style_image_row(options, dialog, config)
    _painting_thumbnails(options, dialog, config)
    for widget in extra:
        options.pack_start(widget, False, False, 0)
    pane = _Pane(config, layer, use_image, images)
    dialog.add_button("Keep previe_w", KEEP_PREVIEW)
    dialog.set_response_sensitive(KEEP_PREVIEW, False)
    pane.on_picture = lambda: dialog.set_response_sensitive(KEEP_PREVIEW, True)
    responses = []
    dialog.connect("response", lambda _, response: responses.append(response))
    row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
    row.pack_start(pane.widget, False, False, 0)
    row.pack_start(options, True, True, 0)
    dialog.get_content_area().pack_start(row, True, True, 0)
    row.show_all()
    pane.start()
    try:
        ok = dialog.run()
        found, image_id = images.get_active()
        chosen = Gimp.Image.get_by_id(image_id) if found and use_image.get_active() else None
        config.set_property("style-image", chosen)
    finally:
        pane.close()
        dialog.destroy()
    if ok:
        return Outcome("run", pane.seed)
    if KEEP_PREVIEW in responses and pane.picture is not None:
        return Outcome("keep-preview", pane.seed, pane.picture, pane.picture_style)
    return Outcome("cancel", pane.seed)


def _place_after(options, widget, dialog, argument):
    """Put `widget` in the options right below an argument's widget."""
    options.pack_start(widget, False, False, 0)
    anchor = dialog.get_widget(argument, GObject.TYPE_NONE)
    if anchor is not None and anchor.get_parent() is options:
        options.reorder_child(widget, options.child_get_property(anchor, "position") + 1)


def _style_image_row(options, dialog, config):
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
    _place_after(options, row, dialog, "style-file")
    return use_image, images


def _painting_thumbnails(options, dialog, config):
    """A row of the bundled paintings: a click chooses one (and forgets the style file);
    choosing a style file sets the painting to None, so what the dialog shows is used."""
    row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=2)
    buttons = {}
    group = None
    for value, label in (("none", "None: the style file below"), *logic.PAINTINGS):
        button = Gtk.RadioButton.new_from_widget(group)
        group = group or button
        button.set_mode(False)  # a toggle button showing the picture, no radio dot
        button.set_tooltip_text(label)
        path = logic.painting_path(bg.HERE, value) if value != "none" else None
        if path and os.path.isfile(path):
            thumb = GdkPixbuf.Pixbuf.new_from_file_at_scale(path, THUMBNAIL, THUMBNAIL, True)
            button.set_image(Gtk.Image.new_from_pixbuf(thumb))
        else:
            button.set_label("None")
        button.connect("toggled", _chose_painting, config, value)
        buttons[value] = button
        row.pack_start(button, False, False, 0)

    def synced(*_):
        painting = config.get_property("painting")
        if painting in buttons and not buttons[painting].get_active():
            buttons[painting].set_active(True)
        if painting != "none" and config.get_property("style-file") is not None:
            config.set_property("style-file", None)

    def file_chosen(*_):
        if config.get_property("style-file") is not None:
            config.set_property("painting", "none")

    file_chosen()  # a remembered file wins over the default painting, as in a script
    synced()
    config.connect("notify::painting", synced)
    config.connect("notify::style-file", file_chosen)
    _place_after(options, row, dialog, "painting")


def _chose_painting(button, config, value):
    if button.get_active() and config.get_property("painting") != value:
        config.set_property("painting", value)


class _Pane:
    """The preview pane: the layer (or selection) styled at draft quality, at most
    PANE_SIDE px, refreshed PANE_DELAY_MS after the last change of the painting, Strength,
    Keep colors or Seed; "Before" shows the layer as it is."""

    def __init__(self, config, layer, use_image, images):
        self.config, self.use_image, self.images = config, use_image, images
        self.box = logic.selection_box(layer.mask_intersect())
        scale = logic.pane_scale(self.box.width, self.box.height)
        self.content = bg.read_pixels(layer, self.box, False, alpha=False, scale=scale)
        seed = config.get_property("seed")
        self.seed = seed if seed >= 0 else logic.variation_seeds(-1, 1)[0]
        self.styles = {}  # style source -> (pixels, name), read once per dialog
        self.picture = None  # the last finished preview (RawImage, u8 RGB)
        self.picture_style = ""
        self.on_picture = lambda: None
        self.timer = None
        self.opened = time.monotonic()
        self.asked = None  # when the pending preview was asked for
        self.image = Gtk.Image()
        self.image.set_size_request(PANE_BOX, PANE_BOX)
        self.before = Gtk.ToggleButton.new_with_mnemonic("_Before")
        self.before.set_tooltip_text("Show the layer as it is while pressed")
        self.before.connect("toggled", lambda *_: self._show())
        self.status = Gtk.Label(label="", xalign=0.0)
        self.status.set_line_wrap(True)
        self.status.set_max_width_chars(30)
        self.widget = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6)
        frame = Gtk.Frame()
        frame.add(self.image)
        self.widget.pack_start(frame, False, False, 0)
        self.widget.pack_start(self.before, False, False, 0)
        self.widget.pack_start(self.status, False, False, 0)
        self.shown = self.content
        self.worker = None

    def start(self):
        self._show()
        plugin_config = logic.read_config(os.path.join(bg.HERE, logic.CONFIG_NAME))
        server = (self.config.get_property("server") or "").strip()
        self.worker = _PaneWorker(server or plugin_config.endpoint, plugin_config, self)
        for name in PANE_ARGUMENTS:
            self.config.connect(f"notify::{name}", lambda *_: self.changed())
        self.use_image.connect("toggled", lambda *_: self.changed())
        # GimpIntComboBox.connect is another function: the signal through GObject's
        GObject.Object.connect(self.images, "changed", lambda *_: self.changed())
        self._refresh()  # the first one at once

    def changed(self):
        if self.timer is not None:
            GLib.source_remove(self.timer)
        self.timer = GLib.timeout_add(logic.PANE_DELAY_MS, self._refresh)

    def _source(self):
        if self.use_image.get_active():
            found, image_id = self.images.get_active()
            if found:
                return ("image", image_id)
        return bg.style_source(self.config)

    def _refresh(self):
        self.timer = None
        seed = self.config.get_property("seed")
        if seed >= 0:
            self.seed = seed
        try:
            source = self._source()
            if source not in self.styles:
                self.styles[source] = bg.read_style(source, False, logic.PANE_STYLE_SIDE)
            style, name = self.styles[source]
            settings = logic.pane_settings(
                strength=self.config.get_property("strength"),
                preserve_colors=self.config.get_property("preserve-colors"),
                seed=self.seed,
            )
        except (BrushworkError, ValueError) as e:
            self.say(str(e))
            return False
        self.asked = time.monotonic()
        self.say("Styling the preview ...")
        request = _Request(self.content, style, name, settings)
        self.worker.ask(request)
        return False  # a GLib source that runs once

    def say(self, text):
        self.status.set_text(text)

    def update(self, request, image, final):
        """A picture from the daemon (on the main thread): a step on the way, or the end."""
        self.shown = image
        self._show()
        if not final:
            return
        took = time.monotonic() - self.asked
        self.picture, self.picture_style = image, request.style_name
        self.say(f"Preview (draft, {image.width}x{image.height} px) in {took:.1f} s")
        self.on_picture()
        settings = request.settings
        bg.record(
            "pane",
            seconds=took,
            since_open=time.monotonic() - self.opened,
            style_weight=settings.style_weight,
            content_weight=settings.content_weight,
            seed=settings.seed,
            **_dumped(image),
        )

    def _show(self):
        shown = self.content if self.before.get_active() else self.shown
        self.image.set_from_pixbuf(_pixbuf(shown, PANE_BOX))

    def close(self):
        if self.timer is not None:
            GLib.source_remove(self.timer)
            self.timer = None
        if self.worker is not None:
            self.worker.close()


@dataclass
class _Request:
    content: RawImage
    style: RawImage
    style_name: str
    settings: object


class _PaneWorker:
    """The pane's daemon jobs, on a thread of their own, in the daemon's preview lane (they
    start before any full job): the newest request wins, and asking again (or closing: the
    real run is next) cancels the job in flight on the daemon."""

    def __init__(self, endpoint, plugin_config, pane):
        self.endpoint, self.plugin_config, self.pane = endpoint, plugin_config, pane
        self.lock = threading.Lock()
        self.pending = None
        self.cancel = threading.Event()
        self.wake = threading.Event()
        self.closing = False
        self.thread = threading.Thread(target=self._loop, name="brushwork-pane", daemon=True)
        self.thread.start()

    def ask(self, request):
        with self.lock:
            self.pending = request
            self.cancel.set()
        self.wake.set()

    def close(self):
        self.closing = True
        self.cancel.set()
        self.wake.set()
        self.thread.join(timeout=3)

    def _post(self, fn, *args):
        def once():
            if not self.closing:
                fn(*args)
            return False

        GLib.idle_add(once)

    def _loop(self):
        try:
            client_module = bg.client_module()
            with client_module.Client(self.endpoint, timeout=CLIENT_TIMEOUT) as client:
                self._serve(client_module, client)
        except BrushworkError as e:
            self._post(self.pane.say, str(e))

    def _serve(self, client_module, client):
        ready = False
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.closing:
                return
            with self.lock:
                request, self.pending = self.pending, None
                self.cancel = cancel = threading.Event()
            if request is None:
                continue
            try:
                if not ready:
                    logic.ensure_daemon(
                        self.endpoint, self.plugin_config, lambda t: client.hello(timeout=t),
                        client_module.NoDaemon,
                        on_wait=lambda s: self._post(self.pane.say, logic.starting_text(s)),
                    )  # fmt: skip
                    ready = True
                every = max(1, request.settings.iterations // PANE_UPDATES)

                def on_event(event, request=request):
                    if isinstance(event, PreviewReply):
                        self._post(self.pane.update, request, event.image, False)

                result = client.stylize(
                    request.content, [request.style], request.settings, cancel=cancel,
                    on_event=on_event, preview_every=every, preview_size=logic.PANE_SIDE,
                    output_dtype="u8", lane=PREVIEW,
                )  # fmt: skip
                self._post(self.pane.update, request, result.image, True)
            except client_module.DaemonError as e:
                if e.code != CANCELLED:
                    self._post(self.pane.say, str(e))
            except BrushworkError as e:
                self._post(self.pane.say, str(e))


def _pixbuf(raw, side):
    """An RGB u8 RawImage as a pixbuf no larger than side x side (bilinear)."""
    data = GLib.Bytes.new(bytes(raw.data))
    pixbuf = GdkPixbuf.Pixbuf.new_from_bytes(
        data, GdkPixbuf.Colorspace.RGB, False, 8, raw.width, raw.height, raw.width * 3
    )
    scale = side / max(raw.width, raw.height)
    width, height = max(1, round(raw.width * scale)), max(1, round(raw.height * scale))
    return pixbuf.scale_simple(width, height, GdkPixbuf.InterpType.BILINEAR)


def _dumped(raw):
    """For the tests' record: the pane's picture as a raw file beside the record."""
    path = os.environ.get(bg.RECORD_ENV)
    if not path:
        return {}
    name = f"{path}.pane-{time.monotonic_ns()}.raw"
    with open(name, "wb") as f:
        f.write(bytes(raw.data))
    return {"file": name, "width": raw.width, "height": raw.height}
