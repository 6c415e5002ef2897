#!/usr/bin/env bash
# One entry point that works on a fresh machine: installs what is missing, builds convext._C in
# place (incrementally, with ninja), installs the clone as an editable package (so `import convext`
# works from any folder with this Python), then runs the tests or the benchmark.
#   bash tools/dev.sh test  [pytest args...]
#   bash tools/dev.sh bench [bench args...]      (python -m bench)
#   bash tools/dev.sh build
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
PY=${PYTHON:-python3}
PY=$($PY -c "import sys; print(sys.executable)")  # absolute: the checks below run from /
what=${1:-test}; shift || true

# Install only what is missing, so a machine with its own torch (a CPU build, or 2.11 on a GPU box)
# keeps it. Without one: the default PyPI build (CUDA 13.0, several GB; it compiles csrc/cuda too and
# brings triton). A CPU-only machine installs the CPU build first (README):
#   pip install torch --index-url https://download.pytorch.org/whl/cpu
if ! $PY -c "import torch" 2>/dev/null; then
  echo "[dev.sh] no torch in $($PY -c 'import sys; print(sys.prefix)'): installing torch==2.14.1 (CUDA build; for a CPU-only machine see README)"
  $PY -m pip install -q "torch==2.14.1"
fi
missing=()
for mod in ninja pybind11 pytest numpy matplotlib tqdm triton; do
  $PY -c "import $mod" 2>/dev/null || missing+=("$mod")
done
# the editable install below needs setuptools >= 70.1 (PEP 660 and its own bdist_wheel)
$PY -c "import setuptools, sys; v = tuple(int(p) for p in setuptools.__version__.split('.')[:2]); sys.exit(v < (70, 1))" \
  2>/dev/null || missing+=("setuptools>=70.1,<82")  # <82: what torch 2.11 accepts
if [ ${#missing[@]} -gt 0 ]; then $PY -m pip install -q "${missing[@]}"; fi

if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
# First time (this Python does not import convext from this clone): an editable install, which builds
# convext._C into the clone and makes `import convext` work from any folder. Later: an incremental
# in-place build (ninja recompiles what changed; the editable install picks it up).
here=$(cd / && $PY -c "import os, convext; print(os.path.realpath(os.path.dirname(convext.__file__)))" 2>/dev/null || true)
if [ "$here" != "$ROOT/convext" ]; then
  echo "[dev.sh] pip install --no-build-isolation --no-deps -e .  (builds convext._C: minutes the first time)"
  $PY -m pip install -q --no-build-isolation --no-deps -e . || { echo "build / editable install failed"; exit 1; }
else
  $PY setup.py -q build_ext --inplace 2>&1 | grep -v -E "^(copying|running|creating)" || { echo "build failed"; exit 1; }
fi
(cd / && $PY -c "import convext; print('[convext]', convext.__file__, '; backends:', convext.backends())")

case "$what" in
  build) ;;
  test)  $PY -m pytest tests -q -ra "$@" ;;
  bench) $PY -m bench "$@" ;;
  *) echo "usage: bash tools/dev.sh test|bench|build [args]"; exit 2 ;;
esac
