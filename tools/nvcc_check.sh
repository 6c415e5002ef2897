#!/usr/bin/env bash
# Compile one CUDA source of convext for sm_90 the way setup.py does, without linking,
# to check it builds and to read the register/spill report: tools/nvcc_check.sh csrc/cuda/X.cu
set -euo pipefail
src=$1; shift || true
py=${PYTHON:-python3}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
inc=$($py - <<'PY'
import glob, os, sysconfig
from torch.utils import cpp_extension
dirs = cpp_extension.include_paths(device_type="cuda") if "device_type" in cpp_extension.include_paths.__code__.co_varnames else cpp_extension.include_paths(cuda=True)
p = sysconfig.get_paths()["purelib"]
dirs += glob.glob(os.path.join(p, "nvidia", "cu*", "include"))
print(" ".join("-I" + d for d in dirs))
PY
)
abi=$($py -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
out=/tmp/nvcc_check/$(basename "$src").o
mkdir -p /tmp/nvcc_check
${CUDA_HOME:-/usr/local/cuda}/bin/nvcc -c "$src" -o "$out" -Icsrc $inc -std=c++20 \
  -D_GLIBCXX_USE_CXX11_ABI=$abi -DTORCH_EXTENSION_NAME=_C \
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
  -gencode=arch=compute_90,code=sm_90 -O3 -DNDEBUG -lineinfo --expt-relaxed-constexpr --use_fast_math \
  -Xptxas=-v,-warn-spills --compiler-options '-fPIC' "$@"
echo "compiled $src -> $out"
