#!/usr/bin/env bash
# Compiles every Triton kernel of convext for sm_90 under each supported triton version (no GPU
# needed): the depthwise and separable kernels through tools/sass_report.py, the tensor-core ones
# through tools/tc_compile_check.py. Each version is pip-installed into /tmp/triton-<v> and put
# first on PYTHONPATH (torch stays the installed one). Usage: bash tools/triton_versions.sh [v ...]
set -uo pipefail
cd "$(dirname "$0")/.."
versions=${*:-3.6.0 3.9.0}
rc=0
for v in $versions; do
  dir=/tmp/triton-$v
  if [ ! -d "$dir/triton" ]; then
    python3 -m pip download -q --no-deps "triton==$v" -d "$dir.whl" && \
      python3 -m pip install -q --no-deps --target "$dir" "$dir.whl"/triton-*.whl || { echo "triton $v: install failed"; rc=1; continue; }
  fi
  for cmd in "tools/sass_report.py" "tools/sass_report.py --sep" "tools/tc_compile_check.py"; do
    if PYTHONPATH="$dir:$PWD" python3 $cmd > "/tmp/triton-$v-$(echo $cmd | tr ' /' '__').log" 2>&1; then
      echo "triton $v: $cmd ok"
    else
      echo "triton $v: $cmd FAILED"; tail -5 "/tmp/triton-$v-$(echo $cmd | tr ' /' '__').log"; rc=1
    fi
  done
done
exit $rc
