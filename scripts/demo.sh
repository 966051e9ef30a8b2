#!/usr/bin/env bash
# One command: set up everything, then run the main job on the bundled sample
# segment. Headless it writes images of the layers to ./phoenix-demo/previews;
# with a display it also opens napari with the segment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/phoenix demo "$@"
