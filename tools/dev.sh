#!/usr/bin/env bash
# One entry point that works on a fresh machine: installs what is missing, builds convext._C in
# place (incrementally, with ninja), then runs the tests or the benchmark.
#   bash tools/dev.sh test  [pytest args...]
#   bash tools/dev.sh bench [bench args...]      (python -m bench)
#   bash tools/dev.sh build
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
what=${1:-test}; shift || true

# Install only what is missing, so a machine with its own torch (say 2.11 on a GPU box) keeps it.
if ! $PY -c "import torch" 2>/dev/null; then
  $PY -m pip install -q "torch==2.14.1"   # CUDA 13.0 build: compiles csrc/cuda too (brings triton)
fi
missing=()
for mod in ninja pybind11 pytest numpy matplotlib tqdm triton; do
  $PY -c "import $mod" 2>/dev/null || missing+=("$mod")
done
if [ ${#missing[@]} -gt 0 ]; then $PY -m pip install -q "${missing[@]}"; fi

if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
$PY setup.py -q build_ext --inplace 2>&1 | grep -v -E "^(copying|running|creating)" || { echo "build failed"; exit 1; }
$PY -c "import convext; print('[convext] backends:', convext.backends())"

case "$what" in
  build) ;;
  test)  $PY -m pytest tests -q -ra "$@" ;;
  bench) $PY -m bench "$@" ;;
  *) echo "usage: bash tools/dev.sh test|bench|build [args]"; exit 2 ;;
esac
