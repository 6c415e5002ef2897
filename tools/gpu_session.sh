#!/usr/bin/env bash
# Everything a lent GPU machine should do in one call: build, self-checks, tests, benchmark.
# Logs go to $OUT (or /tmp/convext_out). Usage: bash tools/gpu_session.sh [steps...]
#   steps: build selfcheck test bench benchfull (default: build selfcheck test bench)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/convext_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
steps=${*:-build selfcheck test bench}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
for step in $steps; do
  echo "=== $step ($(date +%T))"
  case $step in
    build) (time python3 setup.py -q build_ext --inplace) > "$OUT/build.log" 2>&1; rc=$?; tail -5 "$OUT/build.log"; [ $rc = 0 ] || { echo BUILD FAILED; tail -60 "$OUT/build.log"; exit 1; } ;;
    selfcheck) for f in bench/cuda_selfcheck_*.py; do echo "--- $f"; timeout 240 python3 "$f" > "$OUT/$(basename $f .py).log" 2>&1; echo "rc=$?"; grep -E "FAIL|Error|error|SUMMARY|summary|PASS.*total" "$OUT/$(basename $f .py).log" | head -40; done ;;
    test) CONVEXT_TRITON_AUTOTUNE=0 timeout 420 python3 -m pytest tests -q -ra -m gpu -p no:cacheprovider > "$OUT/test_gpu.log" 2>&1; echo "rc=$?"; grep -E "passed|failed|FAILED|Error" "$OUT/test_gpu.log" | tail -30 ;;
    testall) timeout 540 python3 -m pytest tests -q -ra -p no:cacheprovider > "$OUT/test_all.log" 2>&1; echo "rc=$?"; grep -E "passed|failed|FAILED" "$OUT/test_all.log" | tail -30 ;;
    bench) timeout 300 python3 -m bench --quick > "$OUT/bench_quick.log" 2>&1; echo "rc=$?"; tail -60 "$OUT/bench_quick.log"; cp bench/results/*.csv bench/results/*.png "$OUT/" 2>/dev/null ;;
    benchfull) timeout 540 python3 -m bench > "$OUT/bench_full.log" 2>&1; echo "rc=$?"; tail -80 "$OUT/bench_full.log"; cp bench/results/*.csv bench/results/*.png "$OUT/" 2>/dev/null ;;
  esac
done
