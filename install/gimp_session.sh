# shellcheck shell=bash
# A throw-away GIMP session for the scripts that drive a real GIMP 3 with the plug-in on a
# virtual X display (bench/gimp_preview.sh, docs/capture.sh). Sourced, not run. It lives
# here beside gimp_root.sh and install.sh, which it calls: bench/ and docs/ both reach down
# to install/, never into each other.
#
#   REPO=$(cd "$(dirname "$0")/.." && pwd)
#   . "$REPO/install/gimp_session.sh"
#   gimp_session NAME PORT DISPLAY_NUMBER
#
# gimp_session: GIMP's root from install/gimp_root.sh (ROOT); a work folder inside it (WORK
# as we see it, IN as GIMP sees it) holding a fresh profile with the plug-in in it (install.sh
# --plugin-only, the daemon at tcp://127.0.0.1:PORT); a CPU daemon from .venv listening
# there. Every process started through it is stopped at exit (20 s to end its work, then
# killed) and the folder removed; KEEP_LOG: a file to keep GIMP's and Xvfb's output in.
# Then, in GIMP's root with a clean environment on display :DISPLAY_NUMBER: `inroot CMD`
# runs, `background CMD` starts (its output into the log), `x ARGS` is xdotool.

gimp_session() {
    ROOT=$(bash "$REPO/install/gimp_root.sh" | tail -n1)
    DISP=:$3
    WORK=$(mktemp -d "$ROOT/tmp/brushwork-$1-XXXX")
    IN=/${WORK#"$ROOT"/} # the same folder as GIMP sees it
    PIDS=()
    trap _gimp_session_end EXIT
    mkdir -p "$WORK/home" "$WORK/profile/plug-in-settings"
    local root_option=()
    [ "$ROOT" = / ] || root_option=(--gimp-root "$ROOT")
    bash "$REPO/install/install.sh" --plugin-only --gimp-profile "$WORK/profile" \
        --endpoint "tcp://127.0.0.1:$2" --venv "$REPO/.venv" "${root_option[@]}" >/dev/null
    "$REPO/.venv/bin/brushwork" serve --bind "tcp://127.0.0.1:$2" --device cpu \
        --log-file "$WORK/daemon.log" 2>/dev/null &
    PIDS+=($!)
}

_gimp_session_end() { # the daemon cancels its job first: give everything 20 s to stop
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

in_root() { # CMD: the command line that runs "$@" where GIMP is, in a clean environment
    CMD=()
    [ "$ROOT" = / ] || CMD=(chroot "$ROOT")
    CMD+=(env -i HOME="$IN/home" PATH=/usr/bin:/bin LANG=C.UTF-8 DISPLAY="$DISP"
        GIMP3_DIRECTORY="$IN/profile" BRUSHWORK_RECORD="$IN/record.jsonl" "$@")
}
inroot() { in_root "$@"; "${CMD[@]}"; }
background() { # exec: the remembered pid is the process itself, for the end
    in_root "$@"
    (exec "${CMD[@]}" >>"$WORK/background.log" 2>&1) &
    PIDS+=($!)
}
x() { inroot xdotool "$@"; }

# The virtual display, 1000x700 px, once it has had time to come up.
virtual_display() {
    background Xvfb "$DISP" -screen 0 1000x700x24 -nolisten tcp
    sleep 2
}

# WORK/content.png: PICTURE fitted into SIDE x SIDE px, RGB.
content_picture() {
    "$REPO/.venv/bin/python" - "$1" "$WORK/content.png" "$2" <<'PY'
import sys
from PIL import Image
picture = Image.open(sys.argv[1]).convert("RGB")
picture.thumbnail((int(sys.argv[3]), int(sys.argv[3])))
picture.save(sys.argv[2])
PY
}

# What the filter's dialog remembers from "the last run": one (name value) a line.
last_values() {
    printf '%s\n' "$@" \
        >"$WORK/profile/plug-in-settings/GimpProcedureConfigRun-python-fu-brushwork-style.last"
}

# WORK/batch.py, for GIMP's python-fu-eval: open content.png (in an image window if the second
# word is "window") and run the filter as the menu would (its dialog) ROUNDS times.
filter_batch() { # ROUNDS [window]
    local window=False
    [ "${2:-}" != window ] || window=True
    cat >"$WORK/batch.py" <<PY
from gi.repository import Gimp, Gio
image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path("$IN/content.png"))
if $window:
    Gimp.Display.new(image)
proc = Gimp.get_pdb().lookup_procedure("python-fu-brushwork-style")
for _ in range($1):
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", image.get_layers())
    proc.run(config)
PY
}

# How many lines of KIND the plug-in has recorded (BRUSHWORK_RECORD): "pane", "repaint"...
records() { cat "$WORK/record.jsonl" 2>/dev/null | grep -c "\"kind\": \"$1\"" || true; }
