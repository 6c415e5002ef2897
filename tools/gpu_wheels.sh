#!/usr/bin/env bash
# Fetch (here, where pip has a mirror) the pure-Python wheels the GPU machine lacks, into .whl/
# (ignored by git); name .whl in the device call's `carry` and tools/gpu_session.sh installs them.
#   pytest-xdist: runs the GPU tests on several workers (the Triton ones compile a kernel per
#   geometry, about 1-2 s each, which a single worker cannot finish within one call).
set -euo pipefail
cd "$(dirname "$0")/.."
ex=$(git rev-parse --git-path info/exclude); mkdir -p "$(dirname "$ex")"; grep -qx "/.whl/" "$ex" 2>/dev/null || echo "/.whl/" >> "$ex"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  pytest-xdist==3.8.0 execnet==2.1.1
ls -la .whl
