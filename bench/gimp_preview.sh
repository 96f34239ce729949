#!/usr/bin/env bash
# How soon the GIMP dialog's preview pane shows a picture, with a warm daemon: the first
# preview after the dialog opens, and the one after a Strength change (one key). A real
# GIMP 3 (install/gimp_session.sh) on a virtual X display opens the filter's dialog ROUNDS
# times on a 512 px photo; xdotool raises Strength once the pane shows its first preview and
# closes the dialog once it shows the second. The first opening warms the daemon and is not
# counted. Writes bench/results/gimp-preview-cpu-DATE.md (the CPU and the load named).
# Needs root (chroot); about a minute a round on 2 cores.
#
# usage: bench/gimp_preview.sh [ROUNDS]   (default 4; env PORT, DISPLAY_NUMBER)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-4}
. "$REPO/install/gimp_session.sh"
gimp_session bench "${PORT:-5593}" "${DISPLAY_NUMBER:-78}"
content_picture "$REPO/examples/tubingen.jpg" 512
last_values '(painting "the-starry-night")' '(strength 50)' '(seed 0)'
filter_batch "$ROUNDS"

virtual_display
background timeout 900 gimp-console-3.0 -i --batch-interpreter=python-fu-eval \
    -b "exec(open('$IN/batch.py').read())" --quit
until_pane() { until [ "$(records pane)" -gt "$1" ]; do sleep 0.1; done; }
for round in $(seq "$ROUNDS"); do
    w=$(x search --sync --name "^Neural Style Transfer$" | head -n1)
    n=$(records pane)
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
