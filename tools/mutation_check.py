#!/usr/bin/env python3
"""Mutation check: do the tests catch the bugs they claim to? (issue 10)

Plants each bug of MUTANTS below, one at a time, in a scratch copy of the repository (never in
the working tree), rebuilds the extension there when the bug is in C++ (CPU kernels only,
incremental: only the mutated file recompiles), runs only the tests meant to catch it, restores
the file, and prints a table: bug, file, the first test that failed (or SURVIVED).

    python3 tools/mutation_check.py                  # every mutant (first run builds the scratch copy)
    python3 tools/mutation_check.py --list           # the mutants and their test selections
    python3 tools/mutation_check.py --only C1 P1     # some of them
    python3 tools/mutation_check.py --markdown docs/perf/MUTATION.md   # also write the table there

The scratch copy (default /tmp/convext_mutation, --scratch) keeps its build between runs, so a
rerun compiles only what changed in the tree. Each mutant's anchor text must occur exactly once
in its file: when the code moves on, the mutant reports ANCHOR MISSING (a failure of this check,
like a survivor) instead of silently testing nothing. Before mutating, each test selection is run
on the unmutated copy (skip with --no-baseline): a selection that fails there would "catch"
everything. Exit status: 0 when every mutant was caught, 1 otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from typing import List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Mutant:
    key: str
    bug: str
    path: str  # relative to the repository root
    old: str  # anchor: occurs exactly once in the file
    new: str
    tests: Sequence[Sequence[str]]  # pytest argument lists, tried in order until one fails

    @property
    def cpp(self) -> bool:
        return self.path.startswith("csrc/")


def sel(path: str, k: Optional[str] = None) -> List[str]:
    return [path] + (["-k", k] if k else [])


GRID_CPU = sel("tests/test_depthwise_conv2d.py", "test_grid and cpu-cpu")
SUBSETS_SEP_CPU = sel("tests/test_grad_subsets.py", "test_depthwise_separable_conv2d and cpu-cpu")

MUTANTS = [
    # ------------------------------------------------------------------ C++ (CPU build)
    Mutant("C1", "separable backward, bias-only branch (depthwise weight frozen) sums grad_a, not grad_z "
                 "(issue 10 survivor 1)",
           "csrc/depthwise_separable_conv2d.cpp",
           "g_dw_b = grad_z.sum({0, 2, 3});", "g_dw_b = grad_a.sum({0, 2, 3});",
           [SUBSETS_SEP_CPU]),
    Mutant("C2", "separable backward recomputes the intermediate for the input gradient only, not for a "
                 "frozen input with trainable depthwise weights",
           "csrc/depthwise_separable_conv2d.cpp",
           "const bool need_z = need_a || (want_dw_side && dw_act != Act::None);",
           "const bool need_z = need_a || (want_input && dw_act != Act::None);",
           [SUBSETS_SEP_CPU]),
    Mutant("C3", "CPU tap range drops the last valid output column at the right border (off by one)",
           "csrc/cpu/depthwise_conv2d.cpp",
           "t.hi = last < 0 ? 0 : std::min(out, last / stride + 1);",
           "t.hi = last < 0 ? 0 : std::min(out, last / stride);",
           [GRID_CPU]),
    Mutant("C4", "CPU stride-1 grad-input: the transposed geometry takes pad_top for the columns "
                 "(asymmetric padding)",
           "csrc/cpu/depthwise_conv2d.cpp",
           "t.pad_left = p.dilation_w * (p.kernel_w - 1) - p.pad_left;",
           "t.pad_left = p.dilation_w * (p.kernel_w - 1) - p.pad_top;",
           [GRID_CPU]),
    Mutant("C5", "CPU channels_last grad-weight takes its fast path (one input channel per output "
                 "channel) with a depth multiplier",
           "csrc/cpu/depthwise_conv2d_kernel.h",
           "const bool fast = gdirect && xdirect && M == 1;",
           "const bool fast = gdirect && xdirect;",
           [GRID_CPU]),
    Mutant("C6", "CPU channels_last generic path drops the bias",
           "csrc/cpu/depthwise_conv2d_kernel.h",
           "for (int64_t oc = 0; oc < Cy; ++oc) a[oc] = bias ? bias[oc] : acc_t(0);",
           "for (int64_t oc = 0; oc < Cy; ++oc) a[oc] = acc_t(0);",
           [GRID_CPU]),
    Mutant("C7", "CPU channels_last strided grad-input indexes the depth multiplier channel-major "
                 "(stride > 1, M > 1)",
           "csrc/cpu/depthwise_conv2d_kernel.h",
           "for (int64_t m = 0; m < M; ++m) s += wt[c * M + m] * ga[c * M + m];",
           "for (int64_t m = 0; m < M; ++m) s += wt[c * M + m] * ga[m * C + c];",
           [GRID_CPU]),
    # ------------------------------------------------------------------ Python
    Mutant("P1", "BatchNorm folded without eps (issue 10 survivor 2)",
           "convext/convert.py",
           "inv_std = torch.rsqrt(norm.var.double() + norm.eps)", "inv_std = torch.rsqrt(norm.var.double())",
           [sel("tests/test_convert.py", "test_fold_batchnorm_eval")]),
    Mutant("P2", "autocast casts input and weight but not the bias",
           "convext/functional.py",
           "cast = tuple(t.to(dtype) if _autocast_eligible(t, device_type) and t.dtype != dtype else t "
           "for t in tensors)",
           "cast = tuple(t.to(dtype) if _autocast_eligible(t, device_type) and t.dtype != dtype else t "
           "for t in tensors[:2]) + tuple(tensors[2:])",
           [sel("tests/test_autocast_fx.py", "test_autocast_functional and cpu-cpu")]),
    Mutant("P3", "depthwise autograd asks grad-weight for the bias gradient only when the weight needs "
                 "one (bias-only training)",
           "convext/_ops.py",
           "bool(need_bias and bias is not None))", "bool(need_weight and bias is not None))",
           [sel("tests/test_grad_subsets.py", "test_depthwise_conv2d and cpu-cpu")]),
    Mutant("P4", "transposed conv autograd: the weight gradient keyed on the input's needs_input_grad",
           "convext/_ops.py",
           "        if ctx.needs_input_grad[1]:\n            d_weight",
           "        if ctx.needs_input_grad[0]:\n            d_weight",
           [sel("tests/test_grad_subsets.py", "test_depthwise_conv_transpose2d and cpu-cpu")]),
    Mutant("P5", "padding='same' with an even kernel pads the extra row/column before, not after",
           "convext/_geometry.py",
           "pads.append((total // 2, total - total // 2))", "pads.append((total - total // 2, total // 2))",
           [GRID_CPU]),
    Mutant("P6", "causal conv1d left-pads k - 1, forgetting the dilation",
           "convext/functional.py",
           "pads = [(d * (k - 1), 0)]", "pads = [(k - 1, 0)]",
           [sel("tests/test_depthwise_conv1d_transpose2d.py", "cpu-cpu or layers")]),
    Mutant("P7", "transposed conv with a depth multiplier repeats channels blockwise, not interleaved",
           "convext/functional.py",
           "rep.view(n, c, mult, h, wd).copy_(src.unsqueeze(2))", "rep.view(n, mult, c, h, wd).copy_(src.unsqueeze(1))",
           [sel("tests/test_depthwise_conv1d_transpose2d.py", "conv_transpose2d and cpu-cpu")]),
    Mutant("P8", "kernel larger than the padded input let through to the kernels (span check off by one)",
           "convext/_geometry.py",
           "        if span < 1:\n", "        if span < 0:\n",
           [sel("tests/test_errors.py", "kernel-too-big")]),
    Mutant("P9", "DepthwiseSeparableConv2d layer passes its depthwise activation as the pointwise one",
           "convext/nn.py",
           "pointwise_activation=self.pointwise_activation)", "pointwise_activation=self.depthwise_activation)",
           [sel("tests/test_nn.py", "test_torch_compile_fullgraph and cpu-cpu or test_torch_export")]),
    # ------------------------------------------------------------------ Triton (interpreted)
    Mutant("T1", "Triton depthwise interior-tile test off by one: a window ending on the last row counts "
                 "as inside, read unmasked",
           "convext/triton/depthwise_conv2d_forward.py",
           "& ((r0 + BLOCK_H - 1) * S_H + off_h + SPAN_H < LIM_H))",
           "& ((r0 + BLOCK_H - 1) * S_H + off_h + SPAN_H <= LIM_H))",
           [sel("tests/test_triton_interpreted.py", "interior_tiles")]),
    Mutant("T2", "Triton channels_last forward grid counts row tiles with TILE_W (right only when "
                 "TILE_H == TILE_W, as in the first autotune config)",
           "convext/triton/depthwise_conv2d_forward.py",
           "* triton.cdiv(H_out, meta[\"TILE_H\"]) * triton.cdiv(W_out, meta[\"TILE_W\"]),)",
           "* triton.cdiv(H_out, meta[\"TILE_W\"]) * triton.cdiv(W_out, meta[\"TILE_W\"]),)",
           [sel("tests/test_triton_interpreted.py", "depthwise_other_autotune_configs")]),
    Mutant("T3", "Triton separable pointwise-gradient grid without the output-channel tiles (C_out > 16 "
                 "loses channels)",
           "convext/triton/depthwise_separable_conv2d.py",
           "return (triton.cdiv(COUT, meta[\"BLOCK_CO\"]) * nk, n_splits)", "return (nk, n_splits)",
           [sel("tests/test_triton_interpreted.py", "output_channel_tiles")]),
    Mutant("T4", "Triton separable: bf16 GEMM operands not upcast under the interpreter",
           "convext/triton/depthwise_separable_conv2d.py",
           "    if dtype == torch.bfloat16 and _INTERPRET:\n        return _DOT_UPCAST",
           "    if dtype == torch.bfloat16 and _INTERPRET:\n        return _DOT_LOWP",
           [sel("tests/test_triton_interpreted.py", "low_precision")]),
    Mutant("T5", "Triton depthwise forward: per-channel base offset in int32",
           "convext/triton/depthwise_conv2d_forward.py",
           "_nchw_conv_tile(acc, x_ptr + n.to(tl.int64) * sxn + ic.to(tl.int64) * sxc",
           "_nchw_conv_tile(acc, x_ptr + n.to(tl.int64) * sxn + ic * sxc",
           [sel("tests/test_triton_interpreted.py", "offsets_past_2pow31 and not within")]),
    Mutant("T6", "Triton depthwise grad-input: per-image base offset of grad_output in int32",
           "convext/triton/depthwise_conv2d_backward_input.py",
           "go_base = go_ptr + n.to(tl.int64) * sgn + (ic * M).to(tl.int64) * sgc",
           "go_base = go_ptr + n * sgn + (ic * M).to(tl.int64) * sgc",
           [sel("tests/test_triton_interpreted.py", "offsets_past_2pow31 and not within")]),
    Mutant("T7", "Triton separable interior-tile column test off by one",
           "convext/triton/depthwise_separable_conv2d_kernels.py",
           "cols_in = (c_lo * SW - PAD_L >= 0) & (c_hi * SW - PAD_L + (KW - 1) * DW < W)",
           "cols_in = (c_lo * SW - PAD_L >= 0) & (c_hi * SW - PAD_L + (KW - 1) * DW <= W)",
           [sel("tests/test_triton_interpreted.py", "separable_interior_tiles")]),
]


# ---------------------------------------------------------------------------------------------- scratch


def _repo_files() -> List[str]:
    """Tracked and untracked, not ignored, files of the working tree (read-only git query)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                         capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and os.path.isfile(os.path.join(ROOT, f))]


SOURCE_DIRS = ("convext", "csrc", "tests", "tools", "bench")


def sync(scratch: str) -> None:
    """Copy the working tree into scratch, preserving mtimes; unchanged files are left alone so
    that the scratch build stays incremental. Sources deleted from the tree are deleted there."""
    os.makedirs(scratch, exist_ok=True)
    files = _repo_files()
    keep = set(files)
    for d in SOURCE_DIRS:
        for dirpath, dirnames, names in os.walk(os.path.join(scratch, d)):
            dirnames[:] = [n for n in dirnames if n != "__pycache__"]
            for n in names:
                rel = os.path.relpath(os.path.join(dirpath, n), scratch)
                if rel not in keep and not n.endswith((".so", ".o")):
                    os.remove(os.path.join(scratch, rel))
    for f in files:
        src, dst = os.path.join(ROOT, f), os.path.join(scratch, f)
        try:
            s, d = os.stat(src), os.stat(dst)
            if s.st_size == d.st_size and s.st_mtime_ns == d.st_mtime_ns:
                continue
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)


def _env(scratch: str) -> dict:
    env = dict(os.environ)
    env.update(CONVEXT_SKIP_CUDA="1", MAX_JOBS=env.get("MAX_JOBS", "1"), PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=scratch + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""))
    env.pop("TRITON_INTERPRET", None)  # conftest sets it when no GPU is visible
    return env


def build(scratch: str) -> subprocess.CompletedProcess:
    # --force: setuptools' own up-to-date test ignores headers; ninja then recompiles only what changed
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--force"], cwd=scratch,
                       env=_env(scratch), capture_output=True, text=True)
    if r.returncode == 0:  # an extension left by an older setup.py (another suffix) must not shadow this one
        pkg = os.path.join(scratch, "convext")
        built = sorted((f for f in os.listdir(pkg) if f.startswith("_C.") and f.endswith(".so")),
                       key=lambda f: os.stat(os.path.join(pkg, f)).st_mtime_ns)
        for f in built[:-1]:
            os.remove(os.path.join(pkg, f))
    return r


def _build_state(scratch: str) -> List[str]:
    """The build outputs that a C++ mutant changes: the object files and the extension."""
    paths = []
    for d in ("build", "convext"):
        for dirpath, _, files in os.walk(os.path.join(scratch, d)):
            for f in files:
                if f.endswith((".o", ".so", ".ninja_log", ".ninja_deps")) or f == "build.ninja":
                    paths.append(os.path.join(dirpath, f))
    return paths


def save_build(scratch: str, store: str) -> None:
    shutil.rmtree(store, ignore_errors=True)
    for p in _build_state(scratch):
        dst = os.path.join(store, os.path.relpath(p, scratch))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(p, dst)


def restore_build(scratch: str, store: str) -> None:
    for dirpath, _, files in os.walk(store):
        for f in files:
            src = os.path.join(dirpath, f)
            shutil.copy2(src, os.path.join(scratch, os.path.relpath(src, store)))


# ---------------------------------------------------------------------------------------------- tests

_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)
_STARTED = re.compile(r"^(tests/\S+::\S+) ", re.M)


def run_tests(scratch: str, args: Sequence[str], timeout: int) -> tuple:
    """(passed, first failing test or crash description, seconds)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-v", "-rfE", "-p", "no:cacheprovider", "--no-header",
           "-W", "ignore::UserWarning", *args]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=scratch, env=_env(scratch), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        started = _STARTED.findall(out)
        return False, f"timeout after {timeout}s" + (f" in {started[-1]}" if started else ""), time.time() - t0
    out = r.stdout + r.stderr
    secs = time.time() - t0
    if r.returncode == 0:
        return True, "", secs
    if r.returncode == 5:
        return False, "NO TESTS SELECTED", secs
    failed = _FAILED.findall(out)
    if failed:
        return False, failed[0], secs
    started = _STARTED.findall(out)
    where = started[-1] if started else " ".join(args)
    return False, f"{where} (crashed, rc={r.returncode})", secs


# ---------------------------------------------------------------------------------------------- main


def apply(scratch: str, m: Mutant) -> Optional[tuple]:
    path = os.path.join(scratch, m.path)
    with open(path) as f:
        text = f.read()
    if text.count(m.old) != 1:
        return None
    st = os.stat(path)
    with open(path, "w") as f:
        f.write(text.replace(m.old, m.new))
    return text, st


def restore(scratch: str, m: Mutant, saved: tuple) -> None:
    text, st = saved
    path = os.path.join(scratch, m.path)
    with open(path, "w") as f:
        f.write(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as before: the saved objects stay up to date


def markdown(rows, command: str, elapsed: float) -> str:
    lines = [
        "# Mutation check",
        "",
        "Do the tests catch the bugs they claim to? Each row is one small, realistic bug planted alone in a",
        "scratch copy of the repository (`/tmp/convext_mutation`; the C++ ones rebuilt there, CPU kernels",
        "only, incrementally), and the test that caught it: the first failing test of the narrow selection",
        "meant to catch it (`--list` shows the selections). Every selection first passes on the unmutated",
        "copy. C1 and P1 are the two bugs that survived the whole suite before issue 10 (the separable",
        "backward's bias-only branch; BatchNorm folded without eps); the others are the kinds of bug each",
        "part of the suite claims to catch: CPU kernel geometry and layouts, the autograd glue for partial",
        "gradients, padding and argument checks, autocast, the layers, and the Triton paths the",
        "interpreter reaches (interior tiles, other autotune configs, several output-channel tiles, bf16,",
        "64-bit offsets). A crash (rc=-11: a segfault from an int32 offset) counts as caught. The CUDA",
        "kernels are not mutated here (no GPU). Rerun with:",
        "",
        "```bash",
        command,
        "```",
        "",
        "| id | bug | file | caught by |",
        "|---|---|---|---|",
    ]
    for m, result in rows:
        lines.append(f"| {m.key} | {m.bug} | `{m.path}` | {result} |")
    caught = sum(1 for _, r in rows if not r.startswith(("SURVIVED", "ANCHOR", "BUILD")))
    lines += ["", f"{caught} of {len(rows)} caught; {elapsed / 60:.1f} min on this machine.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scratch", default="/tmp/convext_mutation")
    ap.add_argument("--only", nargs="*", help="mutant ids (C1 P1 ...)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-baseline", action="store_true", help="skip running the selections unmutated first")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    ap.add_argument("--markdown", help="also write the table (markdown) to this file")
    args = ap.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.only or m.key in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.key}  {m.path}: {m.bug}\n      tests: {[' '.join(t) for t in m.tests]}")
        return 0
    scratch = os.path.abspath(args.scratch)
    if os.path.realpath(scratch).startswith(os.path.realpath(ROOT)):
        raise SystemExit("the scratch copy must be outside the repository")
    t_start = time.time()
    print(f"[mutation] syncing {ROOT} -> {scratch}", flush=True)
    sync(scratch)
    print("[mutation] building the scratch copy (CPU kernels, incremental)", flush=True)
    r = build(scratch)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
        raise SystemExit("the unmutated scratch copy does not build")
    store = os.path.join(scratch, ".mutation_baseline_build")
    save_build(scratch, store)

    if not args.no_baseline:
        seen = []
        for m in mutants:
            for t in m.tests:
                if list(t) not in seen:
                    seen.append(list(t))
        for t in seen:
            ok, why, secs = run_tests(scratch, t, args.timeout)
            print(f"[baseline] {'ok  ' if ok else 'FAIL'} {secs:5.0f}s  {' '.join(t)}  {why}", flush=True)
            if not ok:
                raise SystemExit(f"a test selection fails without any mutation: {' '.join(t)}: {why}")

    rows = []
    for m in mutants:
        saved = apply(scratch, m)
        if saved is None:
            rows.append((m, "ANCHOR MISSING (the code changed: update the mutant)"))
            print(f"[{m.key}] ANCHOR MISSING in {m.path}", flush=True)
            continue
        try:
            result = None
            if m.cpp:
                t0 = time.time()
                r = build(scratch)
                print(f"[{m.key}] rebuilt in {time.time() - t0:.0f}s (rc={r.returncode})", flush=True)
                if r.returncode != 0:
                    result = "BUILD FAILED (not a test catch: make the mutant compile)"
            if result is None:
                result = "SURVIVED"
                for t in m.tests:
                    ok, why, secs = run_tests(scratch, t, args.timeout)
                    print(f"[{m.key}] {secs:5.0f}s  {' '.join(t)}: {'passed' if ok else why}", flush=True)
                    if not ok:
                        result = f"`{why}`"
                        break
            rows.append((m, result))
        finally:
            restore(scratch, m, saved)
            if m.cpp:
                restore_build(scratch, store)

    elapsed = time.time() - t_start
    width = max(len(m.bug) for m, _ in rows) if rows else 0
    print()
    print(f"{'id':3}  {'bug':{min(width, 70)}}  {'file':45}  caught by")
    for m, result in rows:
        print(f"{m.key:3}  {m.bug[:70]:{min(width, 70)}}  {m.path:45}  {result}")
    survivors = [m.key for m, r in rows if r.startswith(("SURVIVED", "ANCHOR", "BUILD"))]
    print(f"\n{len(rows) - len(survivors)} of {len(rows)} caught in {elapsed / 60:.1f} min"
          + (f"; NOT CAUGHT: {survivors}" if survivors else ""))
    if args.markdown:
        cmd = "python3 tools/mutation_check.py" + (f" --only {' '.join(args.only)}" if args.only else "")
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, cmd, elapsed))
        print(f"[mutation] table written to {args.markdown}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
