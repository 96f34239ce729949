#!/usr/bin/env bash
# How soon the GIMP dialog's preview pane shows a picture, with a warm daemon: the first
# preview after the dialog opens, and the one after a Strength change (one key). A real
# GIMP 3 (install/gimp_root.sh) on a virtual X display opens the filter's dialog ROUNDS
# times on a 512 px photo; xdotool raises Strength once the pane shows its first preview and
# closes the dialog once it shows the second. The first opening warms the daemon and is not
# counted. Writes bench/results/gimp-preview-cpu-DATE.md (the CPU and the load named).
# Needs root (chroot); about a minute a round on 2 cores.
#
# usage: bench/gimp_preview.sh [ROUNDS]   (default 4; env PORT, DISPLAY_NUMBER)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-4}
ROOT=$(bash "$REPO/install/gimp_root.sh" | tail -n1)
PORT=${PORT:-5593}
DISP=:${DISPLAY_NUMBER:-78}
WORK=$(mktemp -d "$ROOT/tmp/brushwork-bench-XXXX")
IN=/${WORK#"$ROOT"/}
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
in_root() {
    CMD=()
    [ "$ROOT" = / ] || CMD=(chroot "$ROOT")
    CMD+=(env -i HOME="$IN/home" PATH=/usr/bin:/bin LANG=C.UTF-8 DISPLAY="$DISP"
        GIMP3_DIRECTORY="$IN/profile" BRUSHWORK_RECORD="$IN/record.jsonl" "$@")
}
background() {
    in_root "$@"
    (exec "${CMD[@]}" >>"$WORK/background.log" 2>&1) &
    PIDS+=($!)
}
x() { in_root xdotool "$@"; "${CMD[@]}"; }

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
picture.thumbnail((512, 512))
picture.save(sys.argv[2])
PY
printf '(painting "the-starry-night")\n(strength 50)\n(seed 0)\n' \
    >"$WORK/profile/plug-in-settings/GimpProcedureConfigRun-python-fu-brushwork-style.last"
cat >"$WORK/batch.py" <<PY
from gi.repository import Gimp, Gio
image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path("$IN/content.png"))
proc = Gimp.get_pdb().lookup_procedure("python-fu-brushwork-style")
for _ in range($ROUNDS):
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", image.get_layers())
    proc.run(config)
PY

background Xvfb "$DISP" -screen 0 1000x700x24 -nolisten tcp
sleep 2
background timeout 900 gimp-console-3.0 -i --batch-interpreter=python-fu-eval \
    -b "exec(open('$IN/batch.py').read())" --quit
panes() { cat "$WORK/record.jsonl" 2>/dev/null | grep -c '"kind": "pane"' || true; }
until_pane() { until [ "$(panes)" -gt "$1" ]; do sleep 0.1; done; }
for round in $(seq "$ROUNDS"); do
    w=$(x search --sync --name "^Neural Style Transfer$" | head -n1)
    n=$(panes)
    until_pane "$n"
    x windowfocus --sync "$w"
    x key --clearmodifiers alt+t
    x key Up
    until_pane $((n + 1))
    x windowfocus --sync "$w"
    x key Escape
    while x search --name "^Neural Style Transfer$" >/dev/null; do sleep 0.2; done
    echo "bench: round $round of $ROUNDS"
done

DATE=$(date -u +%F)
OUT=$REPO/bench/results/gimp-preview-cpu-$DATE.md
"$REPO/.venv/bin/python" - "$WORK/record.jsonl" "$ROUNDS" "$OUT" <<'PY'
import json, os, platform, statistics, sys
path, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
panes = [r for r in map(json.loads, open(path)) if r["kind"] == "pane"]
pairs = [(panes[2 * i], panes[2 * i + 1]) for i in range(rounds)]
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
            if line.startswith("model name")), platform.processor())
load = open("/proc/loadavg").read().split()[:3]
rows = [f"| {i + 1}{' (warms the daemon)' if i == 0 else ''} | {a['since_open']:.2f} | "
        f"{a['seconds']:.2f} | {b['seconds']:.2f} | {a['width']}x{a['height']} |"
        for i, (a, b) in enumerate(pairs)]
warm = pairs[1:]
med = lambda xs: statistics.median(xs)  # noqa: E731
text = f"""# The GIMP dialog's preview pane, warm daemon, CPU

`bench/gimp_preview.sh {rounds}`: GIMP 3 (gimp-console on Xvfb), a {pairs[0][0]['width']} px
wide pane of a 512 px photo (examples/tubingen.jpg) with The Starry Night, draft quality,
the daemon's preview lane, fp32 on the CPU.

CPU: {cpu}, {os.cpu_count()} cores; load average at the end {' '.join(load)} (the machine
is shared: figures taken under load).

| opening | first preview after the dialog opened (s) | that preview's job (s) | after a Strength change (s) | pane px |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Warm (openings 2-{rounds}), median: the first preview {med([a['since_open'] for a, _ in warm]):.2f} s
after the dialog opened; after a Strength change {med([b['seconds'] for _, b in warm]) + 0.4:.2f} s
after the key (the pane asks 0.4 s after the last change; the job took
{med([b['seconds'] for _, b in warm]):.2f} s).
"""
open(out, "w").write(text)
print(text)
PY
echo "bench: wrote $OUT"
