#!/usr/bin/env bash
# Sets Brushwork up in ./.venv, fetches the VGG16 weights and stylizes the bundled sample.
#   bash install/setup.sh            everything, ending with out/demo.png
#   bash install/setup.sh --dev      also the test tools (pytest, hypothesis, ruff)
#   bash install/setup.sh --no-demo  skip the sample stylization
# Both set-ups include the video extra (PyAV and OpenCV, for `brushwork video`).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="offline,video"
demo=1
for arg in "$@"; do
  case "$arg" in
    --dev) extras="offline,video,dev" ;;
    --no-demo) demo=0 ;;
    *) echo "setup.sh: unknown option $arg (use --dev, --no-demo)" >&2; exit 2 ;;
  esac
done

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# Quiet pip, but keep its errors; -c pins the torch pair we test with.
.venv/bin/python -m pip install -q --disable-pip-version-check -c install/constraints.txt \
  -e ".[$extras]" 2> >(grep -v "^WARNING: Location" >&2)
.venv/bin/brushwork weights fetch

if [ "$demo" = 1 ]; then
  mkdir -p out
  .venv/bin/brushwork stylize examples/tubingen.jpg examples/starry_night.jpg \
    -o out/demo.png --size 256
  echo "setup.sh: done; the stylized sample is out/demo.png"
fi
