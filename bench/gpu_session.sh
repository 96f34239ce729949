#!/usr/bin/env bash
# The whole GPU check in one go, about 8 minutes on an H100, everything written under $OUT:
#   session.log      what ran, nvidia-smi, versions, kernels per iteration, each step's output
#   gpu_check.json   bench/gpu_check.py: fast path on, no per-iteration syncs, bf16 vs fp32
#                    loss, 512 px / 500 iterations timing, GPU memory, tiling, torch.compile
#   tiled-2048.jpg   the forced-tiling result, to look at the blend bands
#   graph_probe.txt  bench/probes/gpu_graph_probe.py: eager vs one CUDA graph per level, time and loss
#   cuda-DATE.json/.md   bench/run.py table: Brushwork bf16 and fp32 vs the naive baseline
#   images.tgz       the 512 and 1024 px results of each program
# Run from the repo root with the weights at .cache/vgg16-features.pth (see bench/README.md).
set -u
OUT=${OUT:-/tmp/brushwork-gpu}
mkdir -p "$OUT"
export BRUSHWORK_WEIGHTS=${BRUSHWORK_WEIGHTS:-$PWD/.cache/vgg16-features.pth}
export PYTHONPATH=$PWD/daemon:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
# brushwork.images imports pypng; a carried copy of its one file serves where it is missing.
if ! $PY -c "import png" 2>/dev/null; then
    for d in .venv/lib/python3*/site-packages; do
        [ -f "$d/png.py" ] && export PYTHONPATH=$PYTHONPATH:$PWD/$d
    done
fi
exec > >(tee "$OUT/session.log") 2>&1
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, png; print('torch', torch.__version__, torch.cuda.get_device_name(0))" \
    || { echo "no torch+CUDA or no pypng: carry .venv/lib/python3.11/site-packages/png.py"; exit 1; }
ls -l "$BRUSHWORK_WEIGHTS" || exit 1

echo "== kernels per iteration of the code measured here (bench/launch_count.py, CPU)"
timeout 60 $PY bench/launch_count.py

echo "== engine check (bench/gpu_check.py)"
timeout 150 $PY bench/gpu_check.py "$OUT/gpu_check.json"
echo "gpu_check exit $?"

echo "== whole-iteration CUDA graphs against eager, 512 px x 500 iterations (bench/probes/gpu_graph_probe.py)"
timeout 120 $PY bench/probes/gpu_graph_probe.py | tee "$OUT/graph_probe.txt"

echo "== benchmark (bench/run.py)"
timeout 330 $PY bench/run.py --device cuda --sizes 512,1024,2048,4096 --caps 10,20,30,45 \
    --fp32-too --out "$OUT" --images /tmp/brushwork-images
echo "bench exit $?"
(cd /tmp/brushwork-images 2>/dev/null && tar czf "$OUT/images.tgz" ./*-512.png ./*-1024.png)
ls -l "$OUT"
date -u
