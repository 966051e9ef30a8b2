#!/usr/bin/env bash
# One command: set up everything, then run the whole test suite headless
# (pytest-xvfb starts a virtual X server for napari's canvas).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 QT_API=pyqt6 NAPARI_PHOENIX_CACHE="${NAPARI_PHOENIX_CACHE:-$PWD/.venv/phoenix-cache}"
exec .venv/bin/python -m pytest "$@"
