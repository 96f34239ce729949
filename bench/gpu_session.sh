#!/usr/bin/env bash
# The whole GPU check in one go at today's defaults (the sliced loss, torch's sort on the
# device, no host sync inside a step), under 8 minutes on an H100, everything under $OUT:
#   session.log        what ran, nvidia-smi, versions, kernels per iteration, each step's output
#   speed-cuda-DATE.md/.json  bench/speed.py: the floor pass, the 512 and 2048 px jobs at the
#                      defaults and the 160 px draft on a warm daemon, in floor passes (the
#                      same table as on CPUs)
#   gpu_check.json     bench/gpu_check.py: fast path on, no per-step syncs, bf16 vs fp32 loss,
#                      512 and 2048 px at the defaults with previews, GPU memory, tiling,
#                      torch.compile
#   tiled-2048.jpg     the forced-tiling result, to look at the blend bands
#   graph_probe.txt    bench/probes/gpu_graph_probe.py: eager vs one CUDA graph per level
# Run from the repo root with the weights at .cache/vgg16-features.pth (see bench/README.md).
#   OUT=/tmp/gpu bash bench/gpu_session.sh                 # on a GPU machine
#   OUT=/tmp/dry bash bench/gpu_session.sh --device cpu    # the dry run: tiny sizes, no GPU
set -u
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE=${2:?--device needs cuda or cpu}; fi
OUT=${OUT:-/tmp/brushwork-gpu}
mkdir -p "$OUT"
[ -f "$PWD/.cache/vgg16-features.pth" ] && export BRUSHWORK_WEIGHTS=${BRUSHWORK_WEIGHTS:-$PWD/.cache/vgg16-features.pth}
export PYTHONPATH=$PWD/daemon:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
TINY=()
SCALE=1  # the CPU's dry run may share a loaded machine: its steps get longer limits
[ "$DEVICE" = cpu ] && TINY=(--tiny) && SCALE=5
# brushwork.images imports pypng; a carried copy of its one file serves where it is missing.
if ! $PY -c "import png" 2>/dev/null; then
    for d in .venv/lib/python3*/site-packages; do
        [ -f "$d/png.py" ] && export PYTHONPATH=$PYTHONPATH:$PWD/$d
    done
fi
exec > >(tee "$OUT/session.log") 2>&1
date -u
status=0
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c "import torch, png; print('torch', torch.__version__, torch.cuda.get_device_name(0))" \
        || { echo "no torch+CUDA or no pypng: carry .venv/lib/python3.11/site-packages/png.py"; exit 1; }
fi
$PY -c "from brushwork import weights; print('weights', weights.resolve_path())" || exit 1

echo "== kernels per iteration of the code measured here (bench/launch_count.py, CPU)"
timeout $((60 * SCALE)) $PY bench/launch_count.py || status=1

echo "== floor passes (bench/speed.py)"
SIDES=()
[ "$DEVICE" = cuda ] && SIDES=(--job-sides 512,2048 --previews 5)
timeout $((120 * SCALE)) $PY bench/speed.py --device "$DEVICE" "${TINY[@]}" "${SIDES[@]}" --out "$OUT" \
    || status=1

echo "== engine check (bench/gpu_check.py)"
timeout $((150 * SCALE)) $PY bench/gpu_check.py "$OUT/gpu_check.json" --device "$DEVICE" "${TINY[@]}" \
    || status=1

if [ "$DEVICE" = cuda ]; then
    echo "== whole-iteration CUDA graphs against eager, 512 px (bench/probes/gpu_graph_probe.py)"
    timeout 120 $PY bench/probes/gpu_graph_probe.py | tee "$OUT/graph_probe.txt"
fi
ls -l "$OUT"
date -u
echo "session exit $status"
exit $status
