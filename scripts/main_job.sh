#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh) and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
CHECKPOINT=$(.venv/bin/python -c "import importlib.resources as r; print(r.files('foundation_policy') / 'blob' / 'checkpoint.h5')")
.venv/bin/eyas parity "$CHECKPOINT"
