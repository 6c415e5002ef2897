#!/usr/bin/env bash
# Fetch (here, where pip works) pure-Python wheels for the GPU machine into .whl/ (ignored by git), beside
# convext's own prebuilt wheel (tools/build_wheel.sh); name .whl in the device call's `carry`.
#   pytest-xdist + execnet: run the GPU tests on several workers (the Triton ones compile a kernel per
#   geometry, about 1-2 s each). The H200 image already has both (KINDS.md), so tools/gpu_check.sh
#   installs these only where `import xdist` fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ex=$(git rev-parse --git-path info/exclude); mkdir -p "$(dirname "$ex")"; grep -qx "/.whl/" "$ex" 2>/dev/null || echo "/.whl/" >> "$ex"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  pytest-xdist==3.8.0 execnet==2.1.1
ls -la .whl
