#!/usr/bin/env bash
# CPU time (user+sys) and wall time of each CUDA translation unit's nvcc compile, with the exact
# command of the ninja build (so it needs one configured CUDA build: build/temp*/build.ninja, written
# by `CONVEXT_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 python3 setup.py build_ext --inplace`; the build
# may be interrupted once that file exists). -Xptxas=-v is appended, so each TU's ptxas report is
# kept beside its time.
#
#   tools/cuda_tu_times.sh [SRC_ROOT] [OUT_DIR] [JOBS]
#
# SRC_ROOT: a tree with csrc/ (default: this checkout; a copy measures another version with the
# same flags). Writes OUT_DIR/times.tsv (file, user s, sys s, user+sys s, wall s, max RSS KiB) and
# OUT_DIR/<file>.log (nvcc output incl. ptxas). JOBS: files compiled at once (default 1).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src=$(cd "${1:-$here}" && pwd)
out=${2:-/tmp/cuda_tu_times}
jobs=${3:-1}
ninja_file=${NINJA_FILE:-$(ls "$here"/build/temp*/build.ninja | head -1)}  # NINJA_FILE: a saved copy
mkdir -p "$out"
: > "$out/times.tsv"
# one nvcc command of the build, as a template: the checkout's csrc -> SRC_ROOT's, objects -> OUT_DIR
tmpl=$(ninja -f "$ninja_file" -t commands | awk '/\/bin\/nvcc/ && /csrc\/cuda\// && !n++')  # reads all: no SIGPIPE
export src out tmpl here
one() {
  f=$1; b=$(basename "$f" .cu)
  cmd=$(printf '%s' "$tmpl" | sed -E "s#-MD -MF [^ ]+##; s#-c [^ ]+\\.cu#-c $src/csrc/cuda/$b.cu#; s#-o [^ ]+\\.o#-o $out/$b.o#; s#-I$here/csrc#-I$src/csrc#")
  /usr/bin/time -f "%U %S %e %M" -o "$out/$b.time" bash -c "$cmd -Xptxas=-v" > "$out/$b.log" 2>&1
  read -r u s e m < "$out/$b.time"
  printf '%s\t%s\t%s\t%.2f\t%s\t%s\n' "$b.cu" "$u" "$s" "$(echo "$u + $s" | bc)" "$e" "$m" >> "$out/times.tsv"
}
export -f one
ls "$src"/csrc/cuda/*.cu | xargs -P "$jobs" -I{} bash -c 'one {}'
sort -o "$out/times.tsv" "$out/times.tsv"
awk -F'\t' '{u+=$4; w+=$5} END {printf "total\t\t\t%.1f\t%.1f\n", u, w}' "$out/times.tsv" >> "$out/times.tsv"
column -t -s $'\t' "$out/times.tsv"
