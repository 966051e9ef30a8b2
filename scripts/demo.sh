#!/usr/bin/env bash
# One command: set up everything, then run the main job on the bundled sample
# segment: images of the layers, a short training of the demo network on its
# labels and an ink prediction with it, all under ./phoenix-demo; with a
# display it also opens napari with the segment and the prediction.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/phoenix demo "$@"
