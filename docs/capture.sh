#!/usr/bin/env bash
# Remakes the GIMP pictures in a real GIMP 3 (its full window) on a virtual X display:
# docs/images/gimp-dialog.png (the filter's dialog with its preview pane) and
# docs/images/gimp-run.jpg (the canvas repainted from the daemon's previews while a job runs,
# the progress in the image window's status bar).
# install/gimp_session.sh sets the session up: GIMP from install/gimp_root.sh, the plug-in in a
# throw-away profile through install/install.sh, a daemon from .venv on loopback. There is no
# window manager: xdotool places the windows and presses OK. Needs root (chroot); takes a few
# minutes.
#
# usage: docs/capture.sh [OUTDIR]   (default docs/images; env PORT, DISPLAY_NUMBER, REPAINTS,
#        KEEP_LOG: a file to keep GIMP's and Xvfb's output in)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(cd "${1:-$REPO/docs/images}" && pwd)
REPAINTS=${REPAINTS:-7}  # repaints before the live capture: the picture part-way through the job
. "$REPO/install/gimp_session.sh"
gimp_session capture "${PORT:-5591}" "${DISPLAY_NUMBER:-77}"
shot() { inroot python3 "$IN/shot.py" "$@" >/dev/null; }
content_picture "$REPO/examples/tubingen.jpg" 480
# What the dialog remembers from "the last run": a bundled painting, Normal quality.
last_values '(painting "the-starry-night")' '(quality "normal")' '(seed 0)' '(strength 60)'
filter_batch 1 window
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

virtual_display
background gimp-3.0 --no-splash --batch-interpreter=python-fu-eval \
    -b "exec(open('$IN/batch.py').read())"
dialog=$(x search --sync --name "^Neural Style Transfer$" | head -n1)
main=$(x search --name " GIMP$" | head -n1)
x windowsize "$main" 100% 100%
x windowmove "$main" 0 0
x mousemove 980 655  # over the layers: no tooltip, no brush outline or tool text
until [ "$(records pane)" -ge 1 ]; do sleep 0.5; done  # the pane shows its preview
sleep 1
shot "$IN/gimp-dialog.png" "$dialog"
x windowfocus --sync "$dialog"
x key --clearmodifiers alt+o
x windowfocus --sync "$main"
x key Tab           # Windows > Hide Docks: the canvas and the status bar fit the screen
x mousemove 700 12  # over the menu bar: no brush outline, no tool text in the status bar
until [ "$(records repaint)" -ge "$REPAINTS" ]; do sleep 0.5; done
sleep 1
shot "$IN/gimp-run.jpg"
cp "$WORK/gimp-dialog.png" "$WORK/gimp-run.jpg" "$OUT/"
echo "capture: wrote $OUT/gimp-dialog.png and $OUT/gimp-run.jpg"
