#!/usr/bin/env bash
# The GPU check (issue 11): everything worth doing on a lent GPU, in ONE call with a hard wall-clock budget,
# most valuable first, so that a run cut short still leaves the most important results:
#   0. install the prebuilt extension (.whl/, from `bash tools/build_wheel.sh` here) in seconds; if it is
#      missing, stale (csrc/ or setup.py changed since it was built) or does not load, build here instead
#      and say so
#   1. versions, device, measured copy bandwidth; FATAL banner if convext.backends("cuda") lacks "cuda"
#   2. correctness against float64 of every CUDA path (fast paths on, off: CONVEXT_DISABLE_FAST_PATHS=1;
#      the opt-in CONVEXT_CUDA_TC=1 tensor-core path and CONVEXT_CUDA_NONFINITE=1 fix-up passes) and every
#      Triton path (depthwise, tensor-core incl.
#      CONVEXT_TRITON_TC=force, the fused separable kernels through backend="triton" and through auto with
#      CONVEXT_AUTO_UNVERIFIED=1), a random sweep sized to the budget; the >= 2^31-element checks; the
#      undilated 5x5/7x7 NCHW forward routing (tools/gpu_check.py: the cases and checkers of
#      tests/cuda_cases.py and of the tests' random sweeps)
#   3. the GPU-marked tests (pytest -m gpu; pytest-xdist workers where importable or carried in .whl/), less
#      tests/test_cuda_sweeps.py: step 2 runs its cases and checkers (sized to the budget, on Triton too)
#   4. the depthwise and separable benchmark suites (Triton kernels compiled beforehand in parallel,
#      niced, while steps 2-3 run), bench/summary.py's targets; then `python -m bench models --quick`
#      if time remains
# Results: --out (default $OUT, else /tmp/convext_gpu_check): summary.json (every step, count, target),
# gpu_check.log (everything), depthwise_conv2d.csv, depthwise_separable_conv2d.csv, models.csv.
#
#   bash tools/gpu_check.sh [--budget SECONDS|Nm] [--out DIR] [--jobs N] [--build]   # on the GPU machine
#   bash tools/gpu_check.sh --dry-run                                                # here, no GPU
#
# On the GPU machine, in one device call: run(command="bash tools/gpu_check.sh", carry=[".whl"],
# timeout_s=600); read the returned table (and summary.json); give the machine back.
# --budget: default 480 s (8 min; dry run 420 s). --build: skip the wheel, build in place. --jobs: parallel
# processes (default 16; dry run 4).
# --dry-run: the same plumbing on this CPU machine: finds the prebuilt wheel (builds it when missing or
# stale), copies the working tree as the device call would, installs the wheel there with a torch 2.11
# venv's python (VENV, default /tmp/convext-v211) and imports it, runs every step with CPU tensors in place
# of the GPU (few, small cases), and checks that summary.json is well formed.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BUDGET=; OUTDIR=${OUT:-}; DRY=0; FORCE_BUILD=0; JOBS=${GPU_CHECK_JOBS:-}
while [ $# -gt 0 ]; do
  case $1 in
    --budget) BUDGET=$2; shift 2 ;;
    --out) OUTDIR=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --build) FORCE_BUILD=1; shift ;;
    -h|--help) sed -n '2,/^set -uo pipefail/{/^set -uo/!p}' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)"; exit 2 ;;
  esac
done
[ -n "$BUDGET" ] || BUDGET=$([ $DRY = 1 ] && echo 420 || echo 480)
[ -n "$JOBS" ] || JOBS=$([ $DRY = 1 ] && echo 4 || echo 16)
case $BUDGET in *m) BUDGET=$(( ${BUDGET%m} * 60 )) ;; esac
[ -n "$OUTDIR" ] || OUTDIR=/tmp/convext_gpu_check$([ $DRY = 1 ] && echo _dry)
mkdir -p "$OUTDIR"; OUTDIR=$(cd "$OUTDIR" && pwd)
rm -f "$OUTDIR"/summary.json "$OUTDIR"/gpu_check.log "$OUTDIR"/*.csv
WORK=$(mktemp -d /tmp/convext_gpu_check_work.XXXXXX)   # scratch, outside --out (only 8 files come back)
LOG=$OUTDIR/gpu_check.log
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
export GPU_CHECK_OUT=$OUTDIR PYTHONUNBUFFERED=1
say() { echo "[gpu_check $(date +%T)] $*"; }

# ---------------------------------------------------------------- where it runs, with which python
if [ $DRY = 1 ]; then
  VENV=${VENV:-/tmp/convext-v211}
  RUN=${GPU_CHECK_DRY_TREE:-/tmp/convext-gpu-check-dryrun-$(echo "$REPO" | md5sum | cut -c1-8)}
  say "dry run: copying the working tree to $RUN as a device call would"
  python3 tools/gpu_check.py sync-tree "$REPO" "$RUN" || exit 1
  want=$(cd "$RUN" && python3 tools/gpu_check.py source-hash)
  have=$(python3 -c "import json; print(json.load(open('.whl/convext-wheel.json'))['source_hash'])" 2>/dev/null || true)
  rm -rf "$RUN/.whl"; mkdir -p "$RUN/.whl" .whl
  cp .whl/*.whl "$RUN/.whl/" 2>/dev/null
  if ls .whl/convext-*.whl >/dev/null 2>&1 && [ "$want" = "$have" ]; then
    cp .whl/convext-wheel.json "$RUN/.whl/"
    say "dry run: found the prebuilt wheel $(ls .whl/convext-*.whl) for this tree (carried as .whl/)"
  else
    say "dry run: no prebuilt wheel for this tree (.whl/convext-*.whl missing or stale): building it (tools/build_wheel.sh)"
    rm -f "$RUN"/.whl/convext-*
    (cd "$RUN" && VENV=$VENV bash tools/build_wheel.sh) || { say "dry run: building the wheel FAILED"; exit 1; }
    rm -f .whl/convext-*; cp "$RUN"/.whl/convext-* .whl/   # for the GPU call too (its JSON says what it was built from)
  fi
  PY=$VENV/bin/python
  # what the GPU machine's image has and a fresh torch venv lacks
  $PY -c "import pytest, tqdm, numpy" 2>/dev/null || $PY -m pip install -q pytest tqdm numpy
  cd "$RUN"
  STUB=(--stub)
else
  PY=${PYTHON:-python3}
  RUN=$REPO
  STUB=()
fi
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$RUN/.triton_cache}
T0=$(date +%s); END=$((T0 + BUDGET)); RESERVE=12
left() { echo $(( END - $(date +%s) )); }
python3 - "$OUTDIR" "$BUDGET" "$DRY" <<'EOF'
import sys, time
sys.path.insert(0, "tools")
import gpu_check as g
out, budget, dry = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
g.save_summary(out, {"schema": g.SCHEMA, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "budget_s": budget,
                     "dry_run": dry, "steps": []})
EOF
say "budget ${BUDGET}s, out $OUTDIR, tree $RUN, python $PY$([ $DRY = 1 ] && echo ' (DRY RUN: CPU stub)')"

rec_step() {  # name status seconds rc note
  python3 tools/gpu_check.py record steps "{\"name\": \"$1\", \"status\": \"$2\", \"seconds\": $3, \"rc\": \"$4\", \"note\": \"$5\"}" || true
}
# step NAME CAP COMMAND...: runs COMMAND with a timeout of STEP_T = min(CAP, time left - RESERVE) and
# records it; a shell function as COMMAND applies STEP_T to its own commands (timeout runs no functions)
step() {
  local name=$1 cap=$2; shift 2
  local l=$(( $(left) - RESERVE ))
  local t=$(( cap < l ? cap : l ))
  if [ "$t" -lt 5 ]; then say "=== $name: SKIPPED (no time left)"; rec_step "$name" SKIPPED 0 - "no time left"; return 99; fi
  say "=== $name (${t}s of $(left)s left)"
  local s=$(date +%s) rc
  STEP_T=$t
  if [ "$(type -t "$1")" = function ]; then "$@"; rc=$?; else timeout -k 10 "$t" "$@"; rc=$?; fi
  local d=$(( $(date +%s) - s )) st=FAIL
  [ $rc = 0 ] && st=PASS
  { [ $rc = 124 ] || [ $rc = 137 ]; } && st=TIMEOUT
  rec_step "$name" $st $d $rc "${STEP_NOTE:-}"; STEP_NOTE=
  return $rc
}

# ---------------------------------------------------------------- 0. the extension: prebuilt wheel or build here
install_wheel() {  # -> 0 when the prebuilt wheel is in place and works here
  local whl; whl=$(ls .whl/convext-*.whl 2>/dev/null | head -1)
  [ -n "$whl" ] || { WHY="no prebuilt wheel in .whl/ (carry .whl; bash tools/build_wheel.sh builds it)"; return 1; }
  local want have
  want=$(python3 tools/gpu_check.py source-hash)
  have=$(python3 -c "import json; print(json.load(open('.whl/convext-wheel.json'))['source_hash'])" 2>/dev/null)
  [ "$want" = "$have" ] || { WHY="$whl is stale: csrc/ or setup.py changed since it was built"; return 1; }
  rm -rf "$WORK/site"
  $PY -m pip install -q --no-deps --no-index --no-compile --target "$WORK/site" "$whl" \
    || { WHY="pip refused $whl on this python"; return 1; }
  rm -f convext/_C*.so
  cp "$WORK"/site/convext/_C*.so convext/ || { WHY="no extension in $whl"; return 1; }
  local check='import torch, torch.nn.functional as F, convext, convext._ext as e
assert e.compiled_available(), e.COMPILED_ERROR
assert e.compiled_has_kernel("CUDA"), "the extension has no CUDA kernels"
if torch.cuda.is_available():
    x, w = torch.randn(2, 8, 16, 16, device="cuda"), torch.randn(8, 1, 3, 3, device="cuda")
    y = convext.depthwise_conv2d(x, w, padding=1, backend="cuda")
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1, groups=8))
print("[install] convext", convext.__file__, "loads; backends cuda:", convext.backends("cuda"), "cpu:", convext.backends("cpu"))'
  if ! $PY -c "$check" > "$WORK/load.log" 2>&1; then
    WHY="$whl does not load or run here: $(tail -1 "$WORK/load.log")"; rm -f convext/_C*.so; return 1
  fi
  cat "$WORK/load.log"
  WHY="$(basename "$whl") ($(python3 -c "import json; d=json.load(open('.whl/convext-wheel.json')); print('built against torch %s, %s MiB, cubins %s' % (d.get('torch'), d.get('mib'), d.get('cubin_archs')))"))"
  return 0
}
install() {
  local s=$(date +%s) method detail
  if [ $FORCE_BUILD = 0 ] && install_wheel; then
    method=wheel; detail="prebuilt $WHY"
    say "extension: prebuilt wheel installed in $(( $(date +%s) - s )) s: $WHY"
  else
    [ $FORCE_BUILD = 1 ] && WHY="--build"
    say "!!! FALLBACK: building the extension HERE ($WHY) -- this costs minutes of the budget"
    rm -f convext/_C*.so
    local l=$(( $(left) - 120 )); [ $l -gt 60 ] || l=60
    MAX_JOBS=${MAX_JOBS:-$JOBS} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} \
      timeout -k 10 $l $PY setup.py build_ext --inplace > "$WORK/build.log" 2>&1
    local rc=$?
    cat "$WORK/build.log" >> "$LOG"
    grep -E "^\[convext\]" "$WORK/build.log"
    [ $rc = 0 ] || { say "!!! BUILD FAILED (rc $rc)"; tail -30 "$WORK/build.log"; }
    method=build; detail="built here in $(( $(date +%s) - s )) s (rc $rc) because: $WHY"
  fi
  python3 - "$method" "$detail" <<'EOF'
import json, os, sys
sys.path.insert(0, "tools")
import gpu_check as g
info = {}
try:
    info = json.load(open(".whl/convext-wheel.json"))
except (OSError, ValueError):
    pass
g.record(os.environ["GPU_CHECK_OUT"], "install", {"method": sys.argv[1], "detail": sys.argv[2], "wheel": info})
EOF
  [ $method = wheel ] || [ $rc = 0 ]
}
s0=$(date +%s); install; rc=$?
rec_step install $([ $rc = 0 ] && echo PASS || echo FAIL) $(( $(date +%s) - s0 )) $rc ""

# ---------------------------------------------------------------- 1. versions, device, copy bandwidth
step env 60 $PY tools/gpu_check.py env --out "$OUTDIR" "${STUB[@]}"
[ $? = 3 ] && FATAL=1 || FATAL=0

# ---------------------------------------------------------------- Triton warm-up, in the background (niced)
BENCH_MIN=$(( BUDGET / 4 ))
WARM_UNTIL=$(( END - RESERVE - BENCH_MIN + 30 ))
$PY tools/gpu_check.py warm --out "$OUTDIR" --deadline $WARM_UNTIL --jobs $JOBS "${STUB[@]}" > "$WORK/warm.log" 2>&1 &
WARM_PID=$!

# ---------------------------------------------------------------- 2. correctness against float64
CORR=$(( BUDGET * 30 / 100 ))
step correctness $(( CORR + 20 )) $PY tools/gpu_check.py correctness --out "$OUTDIR" --seconds $CORR --jobs $(( JOBS + 2 )) \
  --log "$LOG" "${STUB[@]}"

# ---------------------------------------------------------------- 3. the GPU-marked tests
tests() {
  [ $FATAL = 1 ] && say "!!! the CUDA backend is MISSING: every cuda-backend test below fails or is void"
  local xd=()
  if ! $PY -c "import xdist" 2>/dev/null && ls .whl/pytest_xdist-*.whl .whl/execnet-*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-deps --no-index --no-compile --target "$WORK/xdist" .whl/pytest_xdist-*.whl .whl/execnet-*.whl \
      && export PYTHONPATH=$WORK/xdist${PYTHONPATH:+:$PYTHONPATH}
  fi
  if $PY -c "import xdist" 2>/dev/null; then
    local n=$(( JOBS * 3 / 4 )); [ $DRY = 1 ] && n=2; xd=(-n $n); fi
  local to=(); $PY -c "import pytest_timeout" 2>/dev/null && to=(--timeout 240)
  say "pytest -m gpu (less tests/test_cuda_sweeps.py: step 2) ${xd[*]} ${to[*]}"
  # step 2 ran the >= 2^31 test and the sweeps of tests/test_cuda_sweeps.py (tests/cuda_cases.py) already
  CONVEXT_TRITON_AUTOTUNE=0 timeout -k 10 $(( STEP_T - 10 )) $PY -m pytest tests -m gpu -k "not more_than_2pow31" \
    --ignore=tests/test_cuda_sweeps.py -v -rfE -p no:cacheprovider "${xd[@]}" "${to[@]}" > "$WORK/pytest.log" 2>&1
  local rc=$?
  { echo "----- pytest -m gpu (rc $rc) -----"; cat "$WORK/pytest.log"; } >> "$LOG"
  $PY tools/gpu_check.py tests-report --out "$OUTDIR" --pytest-log "$WORK/pytest.log" "${STUB[@]}" > "$WORK/tests_report.log" 2>&1
  cat "$WORK/tests_report.log"
  { [ $rc = 0 ] || [ $rc = 5 ]; } && [ $FATAL = 0 ]
}
TESTS=$(( BUDGET * 25 / 100 ))
step tests $TESTS tests

# ---------------------------------------------------------------- 4. benchmarks (after the warm-up) and targets
bench() {
  local until=$(( WARM_UNTIL < END - RESERVE - 40 ? WARM_UNTIL : END - RESERVE - 40 ))
  say "waiting up to $(( until - $(date +%s) ))s for the Triton warm-up"
  while kill -0 $WARM_PID 2>/dev/null && [ $(date +%s) -lt $until ]; do sleep 1; done
  kill $WARM_PID 2>/dev/null; wait $WARM_PID 2>/dev/null
  cat "$WORK/warm.log"
  local q=(); [ $BUDGET -lt 900 ] && q=(--quick)
  local stop=$(( END - RESERVE - 25 ))   # no new (case, mode) group after this; bench-report and the end follow
  [ $(( stop - $(date +%s) )) -ge 5 ] || { say "bench: no time left"; return 99; }
  timeout -k 10 $(( stop - $(date +%s) + 20 )) $PY tools/gpu_check.py bench --out "$OUTDIR" --deadline $stop "${q[@]}" "${STUB[@]}"
}
step bench $(( $(left) - 10 )) bench
RESERVE=2 step bench-report 30 $PY tools/gpu_check.py bench-report --out "$OUTDIR"
models() {
  rm -f bench/results/models.csv
  local a=(--quick); [ $DRY = 1 ] && a=(--quick --device cpu --models mobilenet_v2 --rounds 1)
  timeout -k 10 $STEP_T $PY -m bench models "${a[@]}"; local rc=$?
  cp bench/results/models.csv "$OUTDIR/" 2>/dev/null
  return $rc
}
if [ $(( $(left) - RESERVE )) -gt 45 ]; then step models $(left) models
else say "=== models: SKIPPED (no time left)"; rec_step models SKIPPED 0 - "no time left"; fi
kill $WARM_PID 2>/dev/null

# ---------------------------------------------------------------- the end: validated summary, table, exit status
$PY tools/gpu_check.py finish --out "$OUTDIR" "${STUB[@]}"
rc=$?
say "done in $(( $(date +%s) - T0 )) s of ${BUDGET} s; results in $OUTDIR: $(ls "$OUTDIR" | tr '\n' ' ')"
rm -rf "$WORK"
exec >&- 2>&-; wait $TEE_PID 2>/dev/null   # the log is complete before the call returns
exit $rc
