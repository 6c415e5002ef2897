#!/usr/bin/env python3
"""Per-kernel ptxas report (registers, spill stores+loads, stack frame, static smem, barriers) from
nvcc `-Xptxas=-v` logs, compared with another set of logs or with the "after" column of
docs/perf/REFACTOR_PTXAS.md.

  tools/ptxas_compare.py AFTER_DIR [--before BEFORE_DIR] [--doc docs/perf/REFACTOR_PTXAS.md]

A *_DIR holds one <translation unit>.log per file (tools/cuda_tu_times.sh writes them; any
`nvcc -Xptxas=-v ... > X.log 2>&1` does). Kernels are keyed by the demangled name with the
namespaces stripped, as in REFACTOR_PTXAS.md. Exits 1 on any difference.
"""
import argparse
import glob
import os
import re
import subprocess
import sys


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def strip_ns(name):
    for ns in ("convext::cuda::(anonymous namespace)::", "convext::cuda::", "convext::(anonymous namespace)::",
               "convext::"):
        name = name.replace(ns, "")
    return name


def parse_logs(d):
    """{kernel: (regs, spill_st, spill_ld, stack, smem, barriers, file)}"""
    raw = {}
    for log in sorted(glob.glob(os.path.join(d, "*.log"))):
        tu = os.path.basename(log)[:-4]
        cur = None
        for line in open(log, errors="replace"):
            m = re.search(r"Compiling entry function '([^']+)'", line)
            if m:
                cur = m.group(1)
                raw[cur] = {"file": tu}
                continue
            if cur is None:
                continue
            m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if m:
                raw[cur].update(stack=int(m.group(1)), st=int(m.group(2)), ld=int(m.group(3)))
                continue
            m = re.search(r"Used (\d+) registers, used (\d+) barriers", line)
            if m:
                sm = re.search(r"(\d+) bytes smem", line)
                raw[cur].update(regs=int(m.group(1)), bar=int(m.group(2)), smem=int(sm.group(1)) if sm else 0)
    names = list(raw)
    out = {}
    for mangled, dem in zip(names, demangle(names)):
        r = raw[mangled]
        out[strip_ns(dem)] = (r["regs"], r["st"], r["ld"], r["stack"], r["smem"], r["bar"], r["file"])
    return out


def fmt(v):
    return f"{v[0]} / {v[1]}+{v[2]} / {v[3]} / {v[4]} / {v[5]}"


def parse_doc(path):
    """The 'after' column of REFACTOR_PTXAS.md's kernel table: {kernel: 'regs / st+ld / stack / smem / bar'}."""
    out = {}
    for line in open(path):
        m = re.match(r"\| `([^`]+)` \| [^|]+ \| ([^|]+) \| [^|]+ \| ([^|]+) \|", line)
        if m:
            out[m.group(1)] = (m.group(3).strip(), m.group(2).strip())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("after")
    ap.add_argument("--before")
    ap.add_argument("--doc")
    ap.add_argument("--table", action="store_true", help="print a markdown table of the after logs")
    args = ap.parse_args()
    after = parse_logs(args.after)
    bad = 0
    print(f"{args.after}: {len(after)} kernels")
    if args.doc:
        doc = parse_doc(args.doc)
        missing = [k for k in doc if k not in after]
        diff = [k for k in doc if k in after and fmt(after[k]) != doc[k][0]]
        moved = sorted({(doc[k][1], after[k][6]) for k in doc if k in after and doc[k][1] != after[k][6]})
        print(f"doc {args.doc}: {len(doc)} kernels; {len(doc) - len(missing)} found, {len(missing)} missing, "
              f"{len(diff)} differ; file moves: {moved or 'none'}")
        for k in missing:
            print("  missing:", k)
        for k in diff:
            print(f"  differs: {k}: doc {doc[k][0]}, now {fmt(after[k])}")
        bad += len(missing) + len(diff)
    if args.before:
        before = parse_logs(args.before)
        only_b = sorted(set(before) - set(after))
        only_a = sorted(set(after) - set(before))
        diff = [k for k in before if k in after and before[k][:6] != after[k][:6]]
        moved = sorted({(before[k][6], after[k][6]) for k in before if k in after and before[k][6] != after[k][6]})
        print(f"before {args.before}: {len(before)} kernels; only before {len(only_b)}, only after {len(only_a)}, "
              f"{len(diff)} differ; file moves: {moved or 'none'}")
        for k in only_b:
            print("  only before:", k)
        for k in only_a:
            print("  only after:", k)
        for k in diff:
            print(f"  differs: {k}: before {fmt(before[k])}, after {fmt(after[k])}")
        bad += len(only_b) + len(only_a) + len(diff)
    if args.table:
        for k in sorted(after):
            print(f"| `{k}` | {after[k][6]} | {fmt(after[k])} |")
    print("RESULT:", "identical" if bad == 0 else f"{bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
