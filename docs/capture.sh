#!/usr/bin/env bash
# Remakes the GIMP pictures in a real GIMP 3 (its full window) on a virtual X display:
# docs/images/gimp-dialog.png (the filter's dialog with its preview pane) and
# docs/images/gimp-run.jpg (the canvas repainted from the daemon's previews while a job runs,
# the progress in the image window's status bar).
# GIMP comes from install/gimp_root.sh, the plug-in goes into a throw-away profile through
# install/install.sh, a daemon from .venv listens on loopback. There is no window manager:
# xdotool places the windows and presses OK. Needs root (chroot); takes a few minutes.
#
# usage: docs/capture.sh [OUTDIR]   (default docs/images; env PORT, DISPLAY_NUMBER, REPAINTS,
#        KEEP_LOG: a file to keep GIMP's and Xvfb's output in)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(cd "${1:-$REPO/docs/images}" && pwd)
ROOT=$(bash "$REPO/install/gimp_root.sh" | tail -n1)
PORT=${PORT:-5591}
DISP=:${DISPLAY_NUMBER:-77}
SCREEN=1000x700
REPAINTS=${REPAINTS:-7}  # repaints before the live capture: in the second of 3 scales
WORK=$(mktemp -d "$ROOT/tmp/brushwork-capture-XXXX")
IN=/${WORK#"$ROOT"/}  # the same folder as GIMP sees it
PIDS=()
cleanup() {  # the daemon cancels its job first: give everything 20 s to stop
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null && sleep 0.5 || break; done
        kill -9 "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    [ -z "${KEEP_LOG:-}" ] || cp "$WORK/background.log" "$KEEP_LOG" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
in_root() {  # CMD: the command line that runs "$@" where GIMP is, in a clean environment
    CMD=()
    [ "$ROOT" = / ] || CMD=(chroot "$ROOT")
    CMD+=(env -i HOME="$IN/home" PATH=/usr/bin:/bin LANG=C.UTF-8 DISPLAY="$DISP"
        GIMP3_DIRECTORY="$IN/profile" BRUSHWORK_RECORD="$IN/record.jsonl" "$@")
}
inroot() { in_root "$@"; "${CMD[@]}"; }
background() {  # exec: the remembered pid is the process itself, for cleanup
    in_root "$@"
    (exec "${CMD[@]}" >>"$WORK/background.log" 2>&1) &
    PIDS+=($!)
}
x() { inroot xdotool "$@"; }
shot() { inroot python3 "$IN/shot.py" "$@" >/dev/null; }

mkdir -p "$WORK/home" "$WORK/profile/plug-in-settings"
root_option=()
[ "$ROOT" = / ] || root_option=(--gimp-root "$ROOT")
bash "$REPO/install/install.sh" --plugin-only --gimp-profile "$WORK/profile" \
    --endpoint "tcp://127.0.0.1:$PORT" --venv "$REPO/.venv" "${root_option[@]}" >/dev/null
"$REPO/.venv/bin/brushwork" serve --bind "tcp://127.0.0.1:$PORT" --device cpu \
    --log-file "$WORK/daemon.log" 2>/dev/null &
PIDS+=($!)
"$REPO/.venv/bin/python" - "$REPO/examples/tubingen.jpg" "$WORK/content.png" <<'PY'
import sys
from PIL import Image
picture = Image.open(sys.argv[1]).convert("RGB")
picture.thumbnail((480, 480))
picture.save(sys.argv[2])
PY
# What the dialog remembers from "the last run": a bundled painting, Normal quality.
printf '(painting "the-starry-night")\n(quality "normal")\n(seed 0)\n(strength 60)\n' \
    >"$WORK/profile/plug-in-settings/GimpProcedureConfigRun-python-fu-brushwork-style.last"
cat >"$WORK/shot.py" <<'PY'
# shot.py OUT [XID]: an X window (else the whole screen) as PNG, or JPEG for a .jpg OUT.
import sys
import gi
gi.require_version("Gdk", "3.0")
gi.require_version("GdkX11", "3.0")
from gi.repository import Gdk, GdkX11
window = Gdk.get_default_root_window()
if len(sys.argv) > 2:
    window = GdkX11.X11Window.foreign_new_for_display(Gdk.Display.get_default(), int(sys.argv[2]))
shot = Gdk.pixbuf_get_from_window(window, 0, 0, window.get_width(), window.get_height())
if sys.argv[1].endswith(".jpg"):
    shot.savev(sys.argv[1], "jpeg", ["quality"], ["82"])
else:
    shot.savev(sys.argv[1], "png", [], [])
PY
cat >"$WORK/batch.py" <<PY
# In GIMP: open the picture in a window, then run the filter as the menu would.
from gi.repository import Gimp, Gio
image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path("$IN/content.png"))
Gimp.Display.new(image)
proc = Gimp.get_pdb().lookup_procedure("python-fu-brushwork-style")
config = proc.create_config()
config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
config.set_property("image", image)
config.set_core_object_array("drawables", image.get_layers())
proc.run(config)
PY

background Xvfb "$DISP" -screen 0 "${SCREEN}x24" -nolisten tcp
sleep 2
background gimp-3.0 --no-splash --batch-interpreter=python-fu-eval \
    -b "exec(open('$IN/batch.py').read())"
dialog=$(x search --sync --name "^Neural Style Transfer$" | head -n1)
main=$(x search --name " GIMP$" | head -n1)
x windowsize "$main" 100% 100%
x windowmove "$main" 0 0
x mousemove 980 655  # over the layers: no tooltip, no brush outline or tool text
count() { cat "$WORK/record.jsonl" 2>/dev/null | grep -c "\"kind\": \"$1\"" || true; }
until [ "$(count pane)" -ge 1 ]; do sleep 0.5; done  # the pane shows its preview
sleep 1
shot "$IN/gimp-dialog.png" "$dialog"
x windowfocus --sync "$dialog"
x key --clearmodifiers alt+o
x windowfocus --sync "$main"
x key Tab           # Windows > Hide Docks: the canvas and the status bar fit the screen
x mousemove 700 12  # over the menu bar: no brush outline, no tool text in the status bar
until [ "$(count repaint)" -ge "$REPAINTS" ]; do sleep 0.5; done
sleep 1
shot "$IN/gimp-run.jpg"
cp "$WORK/gimp-dialog.png" "$WORK/gimp-run.jpg" "$OUT/"
echo "capture: wrote $OUT/gimp-dialog.png and $OUT/gimp-run.jpg"
