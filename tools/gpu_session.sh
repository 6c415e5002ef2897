#!/usr/bin/env bash
# The GPU entry point is tools/gpu_check.sh: one budgeted call (prebuilt wheel, correctness, GPU tests,
# benchmarks, summary.json). This script stays for single steps by hand when a lease has time left over.
# Logs go to $OUT (or /tmp/convext_out). Usage: bash tools/gpu_session.sh [steps...]
#   build       python setup.py build_ext --inplace (the CUDA kernels for sm_90)
#   selfcheck   bench/cuda_selfcheck_*.py: CUDA fwd / grad-input / grad-weight vs float64 + timings
#   selfchecktc both self-checks (80 random cases each) with the opt-in CUDA tensor-core path (CONVEXT_CUDA_TC=1)
#   testcuda    GPU tests without the Triton ones        testtriton  the Triton GPU tests
#   test        both                                     testall     every test (CPU ones too)
#   warm        (warmdw, warmsep: one suite) compiles the Triton kernels of both bench suites in parallel processes (their
#               autotune timings are thrown away), so the serial bench that follows only loads
#               kernels from the cache and times them
#   benchdw     full depthwise suite (torch, cuda, triton; fwd, bwd, fwd+bwd) + summary
#   benchsep    full separable suite + summary           bench  both, --quick
#   benchfull   benchdw + benchsep
# Default: build selfcheck test bench. Carry .whl (tools/gpu_wheels.sh) for pytest-xdist: the
# tests then run on 8 workers. Kernels compiled by Triton stay in .triton_cache/ between warm calls.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/convext_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16} \
  TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/.triton_cache}
# helper wheels (pytest-xdist, execnet); not convext's own prebuilt wheel, which gpu_check.sh installs
helpers=$(ls .whl/*.whl 2>/dev/null | grep -v '/convext-')
if [ -n "$helpers" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $helpers \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
XDIST=(); python3 -c "import xdist" 2>/dev/null && XDIST=(-n 8)
steps=${*:-build selfcheck test bench}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

gpu_tests() {  # $1: log name, $2: -k expression, $3: timeout
  CONVEXT_TRITON_AUTOTUNE=0 timeout "$3" python3 -m pytest tests -q -ra -m gpu -k "$2" -p no:cacheprovider "${XDIST[@]}" \
    > "$OUT/$1.log" 2>&1; echo "rc=$?"; grep -E "passed|failed|FAILED|Error" "$OUT/$1.log" | tail -30
}
bench_op() {  # $1: bench module, $2: timeout, rest: bench args
  local mod=$1 t=$2; shift 2
  timeout "$t" python3 -m "bench.$mod" --no-progress "$@" > "$OUT/bench_$mod$*.log" 2>&1; echo "rc=$?"
  tail -90 "$OUT/bench_$mod$*.log"; cp bench/results/*.csv bench/results/*.png "$OUT/" 2>/dev/null
}
warm() {  # $@: bench modules; one process per (suite, shape), 8 at a time; Triton provider, every mode
  for mod in "$@"; do
    python3 -c "from bench.$mod import GPU_SUITE; print('\n'.join(GPU_SUITE))" | sed "s/^/$mod /"
  done | xargs -P 8 -L 1 sh -c 'timeout 500 python3 -m "bench.$0" --shapes "$1" --providers convext:triton \
      --csv /dev/null --no-plot --no-progress > /dev/null 2>&1 || echo "warm $0 $1: rc=$?"'
}

for step in $steps; do
  echo "=== $step ($(date +%T))"
  case $step in
    build) (time python3 setup.py -q build_ext --inplace) > "$OUT/build.log" 2>&1; rc=$?; tail -5 "$OUT/build.log"; [ $rc = 0 ] || { echo BUILD FAILED; tail -60 "$OUT/build.log"; exit 1; } ;;
    selfcheck) for f in bench/cuda_selfcheck_*.py; do echo "--- $f"; timeout 240 python3 "$f" > "$OUT/$(basename $f .py).log" 2>&1; echo "rc=$?"; grep -E "FAIL|Error|error|SUMMARY|summary|PASS.*total" "$OUT/$(basename $f .py).log" | head -40; done ;;
    selfchecktc) for f in "cuda_selfcheck_fwd_bwd_input.py --cases 80" "cuda_selfcheck_bwd_weight.py --random 80"; do
        log="$OUT/tc_$(echo $f | cut -d' ' -f1 | sed 's/.py$//').log"; echo "--- $f (CONVEXT_CUDA_TC=1)"
        CONVEXT_CUDA_TC=1 timeout 200 python3 bench/$f > "$log" 2>&1; echo "rc=$?"
        grep -E "FAIL|Error|error|SUMMARY|summary|PASS.*total|, 13, |, 31, " "$log" | head -30; done ;;
    testcuda) gpu_tests test_gpu_cuda "not triton" 420 ;;
    testtriton) gpu_tests test_gpu_triton "triton" 500 ;;
    test) gpu_tests test_gpu "" 540 ;;
    testall) timeout 540 python3 -m pytest tests -q -ra -p no:cacheprovider "${XDIST[@]}" > "$OUT/test_all.log" 2>&1; echo "rc=$?"; grep -E "passed|failed|FAILED" "$OUT/test_all.log" | tail -30 ;;
    warm) (time warm depthwise_conv2d depthwise_separable_conv2d) 2>&1 | tail -20 ;;
    warmdw) (time warm depthwise_conv2d) 2>&1 | tail -20 ;;
    warmsep) (time warm depthwise_separable_conv2d) 2>&1 | tail -20 ;;
    bench) timeout 300 python3 -m bench --quick --no-progress > "$OUT/bench_quick.log" 2>&1; echo "rc=$?"; tail -60 "$OUT/bench_quick.log"; cp bench/results/*.csv bench/results/*.png "$OUT/" 2>/dev/null ;;
    benchdw) bench_op depthwise_conv2d 560 ;;
    benchsep) bench_op depthwise_separable_conv2d 560 ;;
    benchfull) bench_op depthwise_conv2d 400; bench_op depthwise_separable_conv2d 400 ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
