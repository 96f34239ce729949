#!/usr/bin/env bash
# Runs every check CI runs: set-up (idempotent), lint, format, the whole test suite.
# Extra arguments go to pytest (e.g. -k engine, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash install/setup.sh --dev --no-demo
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
