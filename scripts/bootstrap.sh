#!/usr/bin/env bash
# Create .venv (once) and install eyas with its test dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of PyTorch (an unpinned `torch` can pull a multi-GB CUDA build); eyas itself is
# device-agnostic: on a GPU machine install the CUDA build instead and pass --device cuda.
.venv/bin/python -m pip install -q "torch==2.13.0"
# Builds the rl-tools bridge (eyas._rltools) against the headers of the rltools PyPI package.
.venv/bin/python -m pip install -q -e ".[test]"
