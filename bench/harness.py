"""The one benchmark harness of convext.

Every op is benchmarked the same way: for each case (shape, dtype, layout) and mode
(fwd / bwd / fwd+bwd), every provider (torch.nn and each convext backend usable on the
device) is timed -- `triton.testing.do_bench` median on CUDA, torch.utils.benchmark median
on CPU -- and reported as ms, GB/s, % of the device's copy bandwidth measured in the same
run, TFLOP/s and speedup vs torch (plus peak memory where asked). Rows are printed as a
table, appended to bench/results/<op>.csv with the device name and versions, and plotted
from that CSV into bench/results/<op>_<device>.png; bench/summary.py closes the run with per-provider
statistics and the project's performance targets (PASS / MISS).
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import os
import platform
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODES = ("fwd", "bwd", "fwd+bwd")
LAYOUTS = ("nchw", "channels_last")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
TORCH_PROVIDER = "torch"  # torch.nn.functional, the baseline of every speedup
LARGE_KERNEL = 9  # kH*kW >= 9*9 taps: compute-bound (judged in TFLOP/s); fewer: memory-bound (% of copy bandwidth)


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One benchmarked problem: `make(dtype, layout, device)` returns (inputs, kwargs)."""
    name: str
    desc: str  # human-readable geometry, e.g. "64x144x56x56 k3 s1 d1"
    make: Callable
    flops: Callable[[str], float]  # mode -> floating-point operations
    bytes: Callable[[str, int], float]  # (mode, element size) -> bytes moved by an ideal kernel
    extra: Dict[str, object] = field(default_factory=dict)


def kernel_taps(geometry: str) -> int:
    """kH*kW of a case, read from its geometry ("... k3 ...", "... k1x11 ...")."""
    m = re.search(r"\bk(\d+)(?:x(\d+))?\b", geometry)
    if m is None:
        raise ValueError(f"no kernel size (k<n> or k<h>x<w>) in geometry {geometry!r}")
    return int(m.group(1)) * int(m.group(2) or m.group(1))


def compute_bound(geometry: str) -> bool:
    """Whether a case is judged by TFLOP/s (large kernels) rather than by bytes moved."""
    return kernel_taps(geometry) >= LARGE_KERNEL ** 2


@dataclass
class Provider:
    """`run(inputs, kwargs)` -> output tensor (differentiable for the bwd modes)."""
    name: str
    run: Callable
    supports: Callable[[Case, torch.dtype, str], bool] = lambda case, dtype, layout: True


# --------------------------------------------------------------------------- timing


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: str, quick: bool = False) -> float:
    """Median milliseconds of fn()."""
    if torch.device(device).type == "cuda":
        import triton.testing

        warmup, rep = (10, 40) if quick else (25, 100)
        return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))
    from torch.utils import benchmark

    fn()  # warm-up (first-call allocations, lazy init)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=0.1 if quick else 0.5)
    return m.median * 1e3


def copy_bandwidth_gbps(device: str, quick: bool = False) -> float:
    """Device-to-device copy bandwidth, bytes read + written, measured now."""
    dev = torch.device(device)
    nbytes = (1 << 30) if dev.type == "cuda" else (64 << 20)
    if dev.type == "cuda":
        nbytes = min(nbytes, torch.cuda.mem_get_info()[0] // 4)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=dev).fill_(1.0)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, quick)
    del src, dst
    return 2 * nbytes / (ms * 1e-3) / 1e9


def mode_fn(provider: Provider, inputs: Sequence[Optional[torch.Tensor]], kwargs, mode: str, device: str):
    """A zero-argument callable running `mode` once (inputs prepared outside the timing)."""
    if mode == "fwd":
        with torch.no_grad():
            provider.run(inputs, kwargs)  # compile / autotune outside the timed region

        def fwd():
            with torch.no_grad():
                return provider.run(inputs, kwargs)
        return fwd
    leaves = [None if t is None else t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    diff = [t for t in leaves if t is not None and t.requires_grad]
    out = provider.run(leaves, kwargs)
    grad = torch.randn_like(out)
    if mode == "bwd":
        def bwd():
            return torch.autograd.grad(out, diff, grad, retain_graph=True)
        bwd()
        return bwd

    def fwd_bwd():
        o = provider.run(leaves, kwargs)
        return torch.autograd.grad(o, diff, grad)
    fwd_bwd()
    return fwd_bwd


def peak_memory_mb(fn, device: str) -> float:
    """Peak extra memory of one call of fn (CUDA only; NaN elsewhere)."""
    if torch.device(device).type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del result
    return peak / 2**20


def to_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


# --------------------------------------------------------------------------- environment


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def versions() -> Dict[str, str]:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "-"
    try:
        import convext
        convext_version = getattr(convext, "__version__", "?")
    except ImportError:
        convext_version = "-"
    return {"torch": torch.__version__, "cuda": torch.version.cuda or "-", "triton": triton_version,
            "convext": convext_version}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def convext_providers(device: str, run_for_backend: Callable[[str], Callable],
                      include: Optional[Sequence[str]] = None) -> List[Provider]:
    """One provider per convext backend usable on `device`.

    The interpreted Triton backend (CPU tensors) is far too slow to benchmark and excluded
    unless named in `include`.
    """
    import convext

    names = list(convext.backends(device))
    if torch.device(device).type == "cpu" and (include is None or "triton" not in include):
        names = [n for n in names if n != "triton"]
    if include is not None:
        names = [n for n in names if n in include or f"convext:{n}" in include]
    return [Provider(f"convext:{n}", run_for_backend(n)) for n in names]


# --------------------------------------------------------------------------- running


COLUMNS = ["run_id", "timestamp", "op", "device", "device_name", "torch", "cuda", "triton", "convext",
           "case", "geometry", "dtype", "layout", "mode", "provider", "ms", "gbps", "pct_copy_bw", "tflops",
           "speedup_vs_torch", "peak_mem_mb", "copy_bw_gbps"]


def run_benchmark(op: str, cases: Sequence[Case], providers: Sequence[Provider], dtypes: Sequence[str],
                  layouts: Sequence[str], modes: Sequence[str], device: str, quick: bool = False,
                  measure_memory: bool = False, csv_path: Optional[str] = None, plot: bool = True,
                  progress: bool = True) -> List[Dict[str, object]]:
    """Times every (case, dtype, layout, mode, provider); prints, appends CSV, plots."""
    from tqdm import tqdm

    env = versions()
    dev_name = device_name(device)
    copy_bw = copy_bandwidth_gbps(device, quick)
    run_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    timestamp = _dt.datetime.now().isoformat(timespec="seconds")
    print(f"[bench] {op} on {dev_name}; torch {env['torch']}, CUDA {env['cuda']}, triton {env['triton']}; "
          f"copy bandwidth {copy_bw:.1f} GB/s (read+write)")
    configs = [(c, d, l, m) for c in cases for d in dtypes for l in layouts for m in modes]
    rows: List[Dict[str, object]] = []
    bar = tqdm(total=len(configs) * len(providers), disable=None if progress else True, desc=op, unit="run", leave=False)
    for case, dname, layout, mode in configs:
        dtype = DTYPES[dname]
        inputs, kwargs = case.make(dtype, layout, device)
        elem = torch.empty((), dtype=dtype).element_size()
        group: List[Dict[str, object]] = []
        for prov in providers:
            bar.set_postfix_str(f"{case.name} {dname} {layout} {mode} {prov.name}")
            ms = peak = float("nan")
            if prov.supports(case, dtype, layout):
                try:
                    fn = mode_fn(prov, inputs, kwargs, mode, device)
                    ms = time_ms(fn, device, quick)
                    if measure_memory:
                        peak = peak_memory_mb(fn, device)
                    del fn
                except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
                    if "out of memory" in str(e).lower() and torch.device(device).type == "cuda":
                        torch.cuda.empty_cache()
                    tqdm.write(f"[bench] {case.name} {dname} {layout} {mode} {prov.name}: "
                               f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
            bar.update(1)
            nbytes, flops = case.bytes(mode, elem), case.flops(mode)
            ok = ms == ms and ms > 0
            gbps = nbytes / (ms * 1e-3) / 1e9 if ok else float("nan")
            group.append(dict(
                run_id=run_id, timestamp=timestamp, op=op, device=torch.device(device).type,
                device_name=dev_name, **env, case=case.name, geometry=case.desc, dtype=dname, layout=layout,
                mode=mode, provider=prov.name, ms=ms, gbps=gbps,
                pct_copy_bw=100 * gbps / copy_bw if ok else float("nan"),
                tflops=flops / (ms * 1e-3) / 1e12 if ok else float("nan"),
                peak_mem_mb=peak, copy_bw_gbps=copy_bw))
        base = next((r["ms"] for r in group if r["provider"] == TORCH_PROVIDER), float("nan"))
        for r in group:
            r["speedup_vs_torch"] = base / r["ms"] if (base == base and r["ms"] == r["ms"]) else float("nan")
        rows += group
        del inputs
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    bar.close()
    print_table(rows, measure_memory)
    csv_path = csv_path or os.path.join(RESULTS_DIR, f"{op}.csv")
    append_csv(rows, csv_path)
    print(f"[bench] appended {len(rows)} rows to {os.path.relpath(csv_path)}")
    if plot:
        png = plot_csv(csv_path, run_id)
        if png:
            print(f"[bench] plot: {os.path.relpath(png)}")
    return rows


def _fmt(v, spec):
    return "-" if (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_table(headers: Sequence[str], lines: Sequence[Sequence[str]], numeric: Sequence[int],
                 markdown: bool = False, group: Optional[Callable] = None) -> List[str]:
    """Aligned text (columns `numeric` right-aligned, a blank line where `group(line)` changes) or markdown."""
    num = set(numeric)
    if markdown:
        return ["| " + " | ".join(headers) + " |",
                "|" + "|".join("---:" if i in num else "---" for i in range(len(headers))) + "|"] + \
               ["| " + " | ".join(l) + " |" for l in lines]
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(headers)]

    def fmt_line(vals):
        return "  ".join(v.rjust(w) if i in num else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths))).rstrip()
    out = [fmt_line(headers), "  ".join("-" * w for w in widths)]
    for i, l in enumerate(lines):
        if group is not None and i and group(l) != group(lines[i - 1]):
            out.append("")
        out.append(fmt_line(l))
    return out


def print_table(rows: Sequence[Dict[str, object]], with_memory: bool = False) -> None:
    headers = ["case", "dtype", "layout", "mode", "provider", "ms", "GB/s", "%copy", "TFLOP/s", "x torch"]
    if with_memory:
        headers.append("peak MB")
    lines = []
    for r in rows:
        line = [r["case"], r["dtype"], r["layout"], r["mode"], r["provider"], _fmt(r["ms"], ".4f"),
                _fmt(r["gbps"], ".2f"), _fmt(r["pct_copy_bw"], ".1f"), _fmt(r["tflops"], ".3f"),
                _fmt(r["speedup_vs_torch"], ".2f")]
        if with_memory:
            line.append(_fmt(r["peak_mem_mb"], ".1f"))
        lines.append([str(v) for v in line])
    print("\n".join(format_table(headers, lines, range(5, len(headers)), group=lambda l: l[0])))


def append_csv(rows: Sequence[Dict[str, object]], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


NUMERIC_COLUMNS = ("ms", "gbps", "pct_copy_bw", "tflops", "speedup_vs_torch", "peak_mem_mb", "copy_bw_gbps")


def read_run(path: str, run_id: Optional[str] = None) -> List[Dict[str, object]]:
    """The rows of one run in a results CSV (default: its last run), numbers as floats (NaN where empty)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    run_id = run_id or (rows[-1]["run_id"] if rows else None)
    rows = [r for r in rows if r["run_id"] == run_id]
    for r in rows:
        r.update({k: float(r[k] or "nan") for k in NUMERIC_COLUMNS})
    return rows


def plot_csv(path: str, run_id: Optional[str] = None) -> Optional[str]:
    """Bar chart of GB/s per case and provider, one panel per (mode, dtype, layout), read from the CSV.

    Plots the rows of `run_id` (default: the last run in the file).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_run(path, run_id)
    if not rows:
        return None
    panels = sorted({(r["mode"], r["dtype"], r["layout"]) for r in rows}, key=lambda p: (MODES.index(p[0])
                    if p[0] in MODES else 9, p[1], p[2]))
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    cases = list(dict.fromkeys(r["case"] for r in rows))
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(9, 0.9 * len(cases) * ncols + 2), 3.6 * nrows + 0.6),
                             squeeze=False)
    width = 0.8 / max(1, len(providers))
    copy_bw = rows[0]["copy_bw_gbps"]
    for ax, (mode, dtype, layout) in zip(axes.flat, panels):
        top = 0.0
        for i, prov in enumerate(providers):
            vals = []
            for c in cases:
                v = [r for r in rows if (r["case"], r["mode"], r["dtype"], r["layout"], r["provider"])
                     == (c, mode, dtype, layout, prov)]
                vals.append(v[0]["gbps"] if v and v[0]["gbps"] == v[0]["gbps"] else 0.0)
            ax.bar([j + (i - (len(providers) - 1) / 2) * width for j in range(len(cases))], vals, width,
                   label=prov)
            top = max([top] + vals)
        if copy_bw <= 3 * top or top == 0:
            ax.axhline(copy_bw, color="k", lw=0.8, ls="--")
        else:  # far off-scale: say it instead of squashing the bars
            ax.set_ylim(0, 1.15 * top)
            ax.text(0.99, 0.97, f"copy bandwidth {copy_bw:.0f} GB/s (off scale)", transform=ax.transAxes,
                    ha="right", va="top", fontsize=7)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("GB/s")
        ax.set_title(f"{mode} {dtype} {layout}", fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    r0 = rows[0]
    fig.suptitle(f"{r0['op']} on {r0['device_name']}\n(torch {r0['torch']}, CUDA {r0['cuda']}, "
                 f"triton {r0['triton']}; dashed line: measured copy bandwidth)", fontsize=9)
    fig.tight_layout()
    out = os.path.splitext(path)[0] + f"_{r0['device']}.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- CLI


def _csv_list(s: str) -> List[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def make_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a small subset (< 1 minute on a GPU)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--dtype", type=_csv_list, default=None, help=f"comma list of {list(DTYPES)}")
    p.add_argument("--layout", type=_csv_list, default=None, help=f"comma list of {list(LAYOUTS)}")
    p.add_argument("--mode", type=_csv_list, default=None, help=f"comma list of {list(MODES)}")
    p.add_argument("--shapes", type=_csv_list, default=None, help="comma list of case names to run")
    p.add_argument("--providers", type=_csv_list, default=None,
                   help="comma list, e.g. torch,convext:cuda (default: torch + every convext backend)")
    p.add_argument("--csv", default=None, help="CSV to append to (default: bench/results/<op>.csv)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--markdown", action="store_true", help="print the closing summary as markdown tables")
    return p


def validate(args) -> None:
    for name, allowed in (("dtype", DTYPES), ("layout", LAYOUTS), ("mode", MODES)):
        for v in getattr(args, name) or []:
            if v not in allowed:
                raise SystemExit(f"--{name}: {v!r} is not one of {list(allowed)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU visible")


def select_cases(cases: Sequence[Case], names: Optional[Sequence[str]]) -> List[Case]:
    if not names:
        return list(cases)
    known = {c.name for c in cases}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--shapes: unknown {unknown}; known: {sorted(known)}")
    return [c for c in cases if c.name in names]


def filter_providers(providers: Sequence[Provider], names: Optional[Sequence[str]]) -> List[Provider]:
    if not names:
        return list(providers)
    out = [p for p in providers if p.name in names or p.name.split(":")[-1] in names]
    if not out:
        raise SystemExit(f"--providers: none of {names} available; have {[p.name for p in providers]}")
    return out


def wall_clock(fn, *a, **kw):
    """(result, seconds) of one call; used to report how long a suite took."""
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0


__all__ = ["Case", "Provider", "run_benchmark", "make_parser", "validate", "select_cases", "filter_providers",
           "convext_providers", "default_device", "to_layout", "DTYPES", "LAYOUTS", "MODES", "wall_clock",
           "compute_bound", "kernel_taps", "read_run", "format_table"]


def main(op_name, description, cases_for, providers_for, *, measure_memory, argv=None, quick=None):
    """The command line shared by every op's benchmark (bench/<op>.py)."""
    p = make_parser(description)
    args = p.parse_args(argv)
    if quick is not None:
        args.quick = args.quick or quick
    validate(args)
    device = args.device or default_device()
    on_gpu = device == "cuda"
    dtypes = args.dtype or (["bf16"] if on_gpu and args.quick else ["fp32", "bf16"] if on_gpu else ["fp32"])
    layouts = args.layout or (["channels_last"] if args.quick and on_gpu else list(LAYOUTS))
    modes = args.mode or (["fwd", "fwd+bwd"] if args.quick else list(MODES))
    cases = select_cases(cases_for(device, args.quick and not args.shapes), args.shapes)
    rows = run_benchmark(op_name, cases, providers_for(device, args.providers), dtypes, layouts, modes, device,
                         quick=args.quick, measure_memory=measure_memory, csv_path=args.csv,
                         plot=not args.no_plot, progress=not args.no_progress)
    from . import summary  # imports this module

    summary.print_summary(rows, markdown=args.markdown)
    return rows
