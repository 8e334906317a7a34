#!/usr/bin/env bash
# Create .venv (once) and install eyas with its test dependencies. Safe to run again: a venv whose install is
# current (the same pyproject.toml, CMakeLists.txt and cpp_bridge/ as at its last install, eyas._rltools importable)
# is kept as it is, since the editable install serves python/ live and its rebuild takes ~45 s.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/eyas-install.sha256
INPUTS=$(cat pyproject.toml CMakeLists.txt cpp_bridge/* scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$INPUTS" ] && .venv/bin/python -c "import eyas._rltools" 2>/dev/null; then
  exit 0
fi
rm -f "$STAMP"
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of PyTorch (an unpinned `torch` can pull a multi-GB CUDA build); eyas itself is
# device-agnostic: on a GPU machine install the CUDA build instead and pass --device cuda.
.venv/bin/python -m pip install -q "torch==2.13.0"
# Builds the rl-tools bridge (eyas._rltools) against the headers of the rltools PyPI package.
.venv/bin/python -m pip install -q -e ".[test]"
echo "$INPUTS" > "$STAMP"
