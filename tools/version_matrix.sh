#!/usr/bin/env bash
# Runs the test suite (CPU kernels, Triton under TRITON_INTERPRET=1) under the oldest supported
# versions, the GPU box's: torch 2.11.0 + triton 3.6.0, in a venv at /tmp/convext-v211 (about
# 30 minutes on 2 cores; CI itself runs torch 2.14.1 and its triton). With --cuda it also
# compiles csrc/cuda against torch 2.11's headers (CONVEXT_FORCE_CUDA=1, sm_90, a few minutes).
# The tree is cloned from HEAD into /tmp/convext-v211-src, so commit first.
#   bash tools/version_matrix.sh [--cuda] [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=0
if [ "${1:-}" = "--cuda" ]; then cuda=1; shift; fi
venv=/tmp/convext-v211 src=/tmp/convext-v211-src
if [ ! -x $venv/bin/python ]; then
  python3 -m venv $venv
  $venv/bin/pip install -q "torch==2.11.0" "triton==3.6.0" ninja pybind11 pytest numpy matplotlib tqdm
fi
$venv/bin/python -c "import torch, triton, numpy; print('[matrix] torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)"
rm -rf $src && git clone -q "$PWD" $src && cd $src
if [ $cuda = 1 ]; then
  CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} CONVEXT_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 \
    $venv/bin/python setup.py -q build_ext --inplace > /tmp/convext-v211-cuda-build.log 2>&1 \
    || { echo "[matrix] CUDA build against torch 2.11 FAILED (/tmp/convext-v211-cuda-build.log)"; exit 1; }
  echo "[matrix] CUDA sources compile against torch 2.11"
  rm -rf build convext/_C*.so
fi
CONVEXT_SKIP_CUDA=1 PYTHON=$venv/bin/python bash tools/dev.sh test -p no:cacheprovider "$@"
