"""Closing summary of one benchmark run: per (op, mode, convext provider) statistics against torch.nn, the
sanity check (convext:torch must read 1.0x), and the project's performance targets, each stated with the
measured value, the gap to it and PASS / MISS.

    python -m bench.summary bench/results/depthwise_conv2d.csv [more CSVs] [--run-id ID] [--markdown]

Printed at the end of every op's benchmark (harness.main). Memory-bound rows (k*k < 9*9 taps, see
harness.compute_bound) are judged by % of copy bandwidth -- for the separable op, of the fused ideal's
bytes -- and compute-bound rows by TFLOP/s. A gap is the margin to the target: negative = short of it.
"""
from __future__ import annotations

import argparse
import math
import operator
import statistics
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from . import harness
from .harness import ALL_MODES, TORCH_PROVIDER, _fmt

DEPTHWISE, SEPARABLE = "depthwise_conv2d", "depthwise_separable_conv2d"
# FP32 FMA (non-tensor-core) peak in TFLOP/s by a substring of the GPU name, first match wins
FP32_PEAK_TFLOPS = (("NVL", None), ("H100 PCIe", 51.2), ("H100 80GB HBM3", 66.9), ("H100 SXM", 66.9),
                    ("H200", 66.9))
NAN = float("nan")


def fp32_peak_tflops(device_name: str) -> Optional[float]:
    return next((peak for key, peak in FP32_PEAK_TFLOPS if key in device_name), None)


def geomean(vals: Sequence[float]) -> float:
    vals = [v for v in vals if v > 0]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else NAN


def _ok(v) -> bool:
    return v is not None and v == v


def _config(r) -> tuple:
    return r["op"], r["case"], r["dtype"], r["layout"], r["mode"]


def _where(r, mode: bool = True) -> str:
    return " ".join([r["case"], r["dtype"], r["layout"]] + ([r["mode"]] if mode else []))


# --------------------------------------------------------------------------- per-provider statistics


def provider_stats(rows: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """One entry per (op, mode, provider other than torch), in MODES order."""
    groups: Dict[tuple, list] = {}
    for r in rows:
        if r["provider"] != TORCH_PROVIDER:
            groups.setdefault((r["op"], r["mode"], r["provider"]), []).append(r)
    order = {k: i for i, k in enumerate(dict.fromkeys(r["op"] for r in rows))}
    out = []
    for (op, mode, prov), g in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], ALL_MODES.index(kv[0][1]))):
        done = [r for r in g if _ok(r["speedup_vs_torch"])]
        worst = min(done, key=lambda r: r["speedup_vs_torch"], default=None)
        bw = [r["pct_copy_bw"] for r in done if not harness.compute_bound(r["geometry"])]
        tf = [r["tflops"] for r in done if harness.compute_bound(r["geometry"])]
        out.append(dict(op=op, mode=mode, provider=prov,
                        rows=str(len(done)) if len(done) == len(g) else f"{len(done)}/{len(g)}",
                        geomean=geomean([r["speedup_vs_torch"] for r in done]),
                        min=worst["speedup_vs_torch"] if worst else NAN, min_row=_where(worst, False) if worst else "-",
                        slower=sum(r["speedup_vs_torch"] < 1 for r in done),
                        noisy=sum(bool(r.get("noisy")) for r in done),
                        bw_median=statistics.median(bw) if bw else NAN, bw_min=min(bw, default=NAN),
                        tf_median=statistics.median(tf) if tf else NAN, tf_min=min(tf, default=NAN)))
    return out


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    op: str
    backend: str  # the convext backend, e.g. "cuda" (provider "convext:cuda")
    what: str
    mode: Optional[str]  # None: rows of every mode
    agg: str  # "geomean" of the values, or "min" / "max": the worst row
    cmp: str  # ">=", ">", "<=", "<"
    target: float
    unit: str  # "%" (gap in percentage points), "x"
    value: Callable  # (row, peer) -> float; peer(row, provider, column) reads the same config's other provider
    select: Callable = lambda r: True


def _memory_bound(r):
    return not harness.compute_bound(r["geometry"])


def _k13(dtype):
    return lambda r: r["dtype"] == dtype and harness.kernel_taps(r["geometry"]) >= 13 * 13


def _col(name):
    return lambda r, peer: r[name]


def _ratio(a: float, b: float) -> float:
    return a / b if b else NAN


def _peak_pct(r, peer):
    return 100 * _ratio(r["tflops"], fp32_peak_tflops(r["device_name"]))


_speedup, _pct = _col("speedup_vs_torch"), _col("pct_copy_bw")
TARGETS = [
    Target(DEPTHWISE, "cuda", "fwd % of copy BW, every memory-bound row", "fwd", "min", ">=", 80, "%", _pct,
           _memory_bound),
    Target(DEPTHWISE, "cuda", "fwd+bwd % of copy BW, every memory-bound row", "fwd+bwd", "min", ">=", 60, "%",
           _pct, _memory_bound),
    Target(DEPTHWISE, "cuda", "fwd geomean speedup vs torch", "fwd", "geomean", ">=", 3, "x", _speedup),
    Target(DEPTHWISE, "cuda", "fwd+bwd geomean speedup vs torch", "fwd+bwd", "geomean", ">=", 4, "x", _speedup),
    Target(DEPTHWISE, "cuda", "k>=13 fp32 % of FP32 FMA peak, every row", None, "min", ">=", 50, "%",
           _peak_pct, _k13("fp32")),
    Target(DEPTHWISE, "cuda", "k>=13 bf16 speedup vs torch, every row", None, "min", ">", 1, "x", _speedup,
           _k13("bf16")),
    Target(DEPTHWISE, "cuda", "speedup vs torch, every row and mode", None, "min", ">=", 1, "x", _speedup),
    Target(DEPTHWISE, "triton", "time / convext:cuda time, every row", None, "max", "<=", 1.25, "x",
           lambda r, peer: _ratio(r["ms"], peer(r, "convext:cuda", "ms"))),
    Target(SEPARABLE, "triton", "fwd geomean speedup vs torch", "fwd", "geomean", ">=", 2, "x", _speedup),
    Target(SEPARABLE, "triton", "fwd+bwd geomean speedup vs torch", "fwd+bwd", "geomean", ">=", 2, "x",
           _speedup),
    Target(SEPARABLE, "triton", "% of fused-bytes roofline, every memory-bound row", None, "min", ">=", 60, "%",
           _pct, _memory_bound),
    Target(SEPARABLE, "triton", "fwd+bwd peak memory / torch's, every row", "fwd+bwd", "max", "<", 1, "x",
           lambda r, peer: _ratio(r["peak_mem_mb"], peer(r, TORCH_PROVIDER, "peak_mem_mb"))),
]
_CMP = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def check(rows: Sequence[Dict[str, object]], t: Target) -> Dict[str, object]:
    """status ("PASS", "MISS", "no data", "unknown peak"), measured value, gap (>= 0: met) and worst row."""
    index = {_config(r) + (r["provider"],): r for r in rows}

    def peer(r, provider, column):
        return index.get(_config(r) + (provider,), {}).get(column, NAN)
    sel = [r for r in rows if (r["op"], r["provider"]) == (t.op, f"convext:{t.backend}")
           and t.mode in (None, r["mode"]) and t.select(r)]
    vals = [(v, r) for v, r in ((t.value(r, peer), r) for r in sel) if _ok(v)]
    out = dict(status="no data", value=NAN, gap=NAN, where="-")
    if t.value is _peak_pct and sel and fp32_peak_tflops(sel[0]["device_name"]) is None:
        worst = min((r for r in sel if _ok(r["tflops"])), key=lambda r: r["tflops"], default=None)
        where = f"{_where(worst)}: {worst['tflops']:.2f} TFLOP/s" if worst else "-"
        return dict(out, status="unknown peak", where=where)
    if not vals:
        return out
    if t.agg == "geomean":
        value, where = geomean([v for v, _ in vals]), f"over {len(vals)} rows"
    else:
        value, r = (min if t.agg == "min" else max)(vals, key=lambda vr: vr[0])
        where = _where(r)
    gap = value - t.target if t.cmp.startswith(">") else t.target - value
    return dict(status="PASS" if _CMP[t.cmp](value, t.target) else "MISS", value=value, gap=gap, where=where)


# --------------------------------------------------------------------------- printing


def _num(v: float, unit: str, gap: bool = False) -> str:
    if not _ok(v):
        return "-"
    spec = ("+" if gap else "") + (".1f" if unit == "%" else ".2f")
    return format(v, spec) + (" pp" if gap and unit == "%" else unit)


def sanity_line(rows: Sequence[Dict[str, object]]) -> str:
    """The sanity check in words: convext:torch runs torch's own computation, so it must read 1.0x."""
    c = harness.sanity_check(rows)
    want = f"{harness.SANITY_PROVIDER} / torch (the same computation) should read 1.00x ± {harness.SANITY_TOL:.2f}"
    if c["status"] == "no data":
        return f"Sanity check: no data ({harness.SANITY_PROVIDER} not in this run); {want}."
    head = (f"Sanity check: {c['status']}: {want}; measured median {c['median']:.2f}x, range {c['lo']:.2f}x to "
            f"{c['hi']:.2f}x over {c['n']} rows.")
    if c["status"] == "PASS":
        return head
    worst = sorted(c["bad"], key=lambda r: -abs(r["speedup_vs_torch"] - 1))[:3]
    where = "; ".join(f"{_where(r)}: {r['speedup_vs_torch']:.2f}x" for r in worst)
    load = rows[0].get("load", NAN)
    busy = f" (load average {load:.1f} during the run)" if _ok(load) else ""
    return (f"{head} Off on {len(c['bad'])} rows ({where}): this machine's timings cannot be trusted{busy}; "
            f"rerun on a quiet machine (on CPU, --threads 1 suffers least from other processes).")


def summarize(rows: Sequence[Dict[str, object]], markdown: bool = False) -> str:
    """The summary of one run's rows (from run_benchmark or harness.read_run) as text or markdown."""
    if not rows:
        return "[bench] summary: no rows"
    ops = list(dict.fromkeys(r["op"] for r in rows))
    title = (f"summary of run {', '.join(dict.fromkeys(r['run_id'] for r in rows))}: {', '.join(ops)} on "
             f"{', '.join(dict.fromkeys(r['device_name'] for r in rows))}")
    out = [f"**{title}**" if markdown else f"[bench] {title}", ""]
    lines = [[s["op"], s["mode"], s["provider"], s["rows"], _fmt(s["geomean"], ".2f"), _fmt(s["min"], ".2f"),
              s["min_row"], str(s["slower"]), str(s["noisy"]), _fmt(s["bw_median"], ".1f"), _fmt(s["bw_min"], ".1f"),
              _fmt(s["tf_median"], ".2f"), _fmt(s["tf_min"], ".2f")] for s in provider_stats(rows)]
    out += harness.format_table(["op", "mode", "provider", "rows", "geomean x", "min x", "min row", "slower", "noisy",
                                 "%copy med", "%copy min", "TFLOP/s med", "TFLOP/s min"], lines,
                                {3, 4, 5, 7, 8, 9, 10, 11, 12}, markdown, group=lambda l: l[0])
    k = harness.LARGE_KERNEL
    noisy = sum(1 for r in rows if r.get("noisy"))
    out += ["", f"%copy: memory-bound rows (kH*kW < {k}*{k}); TFLOP/s: compute-bound rows (kH*kW >= {k}*{k}); "
            f"noisy: rows whose speedup IQR exceeds {harness.NOISY:.0%} of it, too noisy to rank "
            f"({noisy} of {len(rows)} rows).", "", sanity_line(rows), "",
            "Targets (gap: margin to the target, negative = short of it):", ""]
    lines = []
    providers = {(r["op"], r["provider"]) for r in rows}
    for key in dict.fromkeys((t.op, t.backend) for t in TARGETS if t.op in ops):
        op, backend = key
        if (op, f"convext:{backend}") not in providers:
            lines.append(["no data", op, f"convext:{backend}", "(provider not in this run)"] + ["-"] * 4)
            continue
        for t in TARGETS:
            if (t.op, t.backend) == key:
                c = check(rows, t)
                lines.append([c["status"], op, f"convext:{backend}", t.what, f"{t.cmp} {t.target:g}{t.unit}",
                              _num(c["value"], t.unit), _num(c["gap"], t.unit, gap=True), c["where"]])
    out += harness.format_table(["status", "op", "provider", "check", "target", "measured", "gap", "worst row"],
                                lines, (4, 5, 6), markdown)
    return "\n".join(out)


def print_summary(rows: Sequence[Dict[str, object]], markdown: bool = False) -> None:
    print(summarize(rows, markdown))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", nargs="+", help="results CSV(s) written by the benchmarks")
    p.add_argument("--run-id", default=None, help="the run to summarize (default: the last run of each CSV)")
    p.add_argument("--markdown", action="store_true", help="markdown tables, for notes")
    args = p.parse_args(argv)
    rows = [r for path in args.csv for r in harness.read_run(path, args.run_id)]
    if not rows:
        raise SystemExit(f"no rows{f' of run {args.run_id}' if args.run_id else ''} in {args.csv}")
    print_summary(rows, args.markdown)


if __name__ == "__main__":
    main()
