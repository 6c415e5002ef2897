#!/usr/bin/env bash
# Builds the prebuilt extension that tools/gpu_check.sh installs on the GPU machine (issue 11): a wheel of
# convext compiled HERE against torch 2.11.0+cu130 (the GPU machine's torch), CUDA kernels for sm_90 only
# (H100/H200), for Python's stable ABI (py_limited_api: an abi3 wheel, so it loads on the GPU machine's
# Python 3.12 although it is built with this machine's 3.11). One command:
#
#   bash tools/build_wheel.sh      # first build about 25 minutes on 2 cores (MAX_JOBS=1), then incremental
#
# Writes .whl/convext-0.1.0-cp310-abi3-linux_x86_64.whl and .whl/convext-wheel.json (the hash of csrc/ +
# setup.py it was built from, torch, checks); .whl/ is ignored by git and travels to the GPU machine when a
# device call names it in `carry`. The build runs in a snapshot of the working tree (WHEEL_SRC, default
# /tmp/convext-wheelsrc; only files whose content changed are rewritten, so its build/ folder stays an
# incremental ninja build): the working tree's own in-place build is never touched.
# Environment: VENV (default /tmp/convext-v211, shared with tools/version_matrix.sh; created, with torch
# $TORCH_VERSION, when missing), TORCH_VERSION (2.11.0), TORCH_CUDA_ARCH_LIST (9.0), MAX_JOBS (1),
# CUDA_HOME (/usr/local/cuda), WHEEL_SRC.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-/tmp/convext-v211}
TORCH_VERSION=${TORCH_VERSION:-2.11.0}
SRC=${WHEEL_SRC:-/tmp/convext-wheelsrc}
OUTDIR=$ROOT/.whl
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-1} CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
unset CONVEXT_SKIP_CUDA
t0=$(date +%s)

[ -x "$CUDA_HOME/bin/nvcc" ] || { echo "[wheel] no nvcc in CUDA_HOME=$CUDA_HOME: cannot build the CUDA kernels"; exit 1; }
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY=$VENV/bin/python
if ! $PY -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "[wheel] installing torch==$TORCH_VERSION into $VENV"
  $PY -m pip install -q "torch==$TORCH_VERSION"
fi
# setuptools: new enough to own bdist_wheel (70.1), below what torch 2.11 accepts (82)
$PY -c "import setuptools, wheel, ninja, sys; v = tuple(int(x) for x in setuptools.__version__.split('.')[:2]); sys.exit(0 if (70, 1) <= v < (82, 0) else 1)" 2>/dev/null \
  || $PY -m pip install -q "setuptools>=70.1,<82" wheel ninja
$PY -c "import torch; assert (torch.version.cuda or '').startswith('13'), 'torch %s is not a CUDA 13 build' % torch.__version__; print('[wheel] torch', torch.__version__, 'CUDA', torch.version.cuda, '| nvcc', '$CUDA_HOME')"

# one build at a time in $SRC (two checkouts building at once would overwrite each other's snapshot)
exec 9>"$SRC.lock"
flock -w 3600 9 || { echo "[wheel] $SRC is locked by another build"; exit 1; }
python3 tools/gpu_check.py sync-tree "$ROOT" "$SRC"
mkdir -p "$OUTDIR"
log=$SRC.build.log
echo "[wheel] building in $SRC (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS), log $log"
rm -rf "$SRC/dist"
if ! (cd "$SRC" && PATH=$VENV/bin:$PATH $PY setup.py bdist_wheel -d dist) > "$log" 2>&1; then
  tail -40 "$log"; echo "[wheel] BUILD FAILED (log $log)"; exit 1
fi
grep -E "^\[convext\]" "$log" || true
whl=$(ls "$SRC"/dist/convext-*.whl)
rm -f "$OUTDIR"/convext-*.whl "$OUTDIR"/convext-wheel.json
cp "$whl" "$OUTDIR/"
(cd "$SRC" && python3 tools/gpu_check.py wheel-info "$OUTDIR/$(basename "$whl")" --json "$OUTDIR/convext-wheel.json")
$PY - "$OUTDIR/convext-wheel.json" <<'EOF'
import json, sys, torch
p = sys.argv[1]
info = json.load(open(p))
info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, python_built_with=sys.version.split()[0])
json.dump(info, open(p, "w"), indent=1)
EOF
total=$(du -cb "$OUTDIR"/*.whl | tail -1 | cut -f1)
echo "[wheel] $OUTDIR/$(basename "$whl"): $(du -h "$OUTDIR/$(basename "$whl")" | cut -f1); everything in .whl/: $((total / 1048576)) MiB (limit 64 MiB a device call)"
echo "[wheel] done in $(( $(date +%s) - t0 )) s"
[ "$total" -lt $((64 * 1048576)) ] || { echo "[wheel] .whl/ is over 64 MiB"; exit 1; }
