#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh) and run the whole test suite: parity_tests/ and tests/, one pytest-xdist worker per
# core (EYAS_TEST_WORKERS to choose; a test file stays in one worker, so its module fixtures are built once).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m pytest -q -n "${EYAS_TEST_WORKERS:-$(nproc)}" --dist loadfile parity_tests tests "$@"
