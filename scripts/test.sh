#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh) and run the whole test suite: parity_tests/ and tests/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m pytest -q parity_tests tests "$@"
