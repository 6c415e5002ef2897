"""The one benchmark harness of convext.

Every op is benchmarked the same way: for each case (shape, dtype, layout) and mode
(fwd / bwd / fwd+bwd), every provider (torch.nn and each convext backend usable on the
device) is timed and reported as ms, GB/s, % of the device's copy bandwidth measured in the
same run, TFLOP/s and speedup vs torch (plus peak memory where asked).

Timing. One sample is the median time per call of a `torch.utils.benchmark` `blocked_autorange`
(CPU: blocks of calls until a minimum measured duration) or of `triton.testing.do_bench` (CUDA:
CUDA-event timing). The providers of a (case, dtype, layout, mode) are sampled round-robin over
several rounds (CPU: 5, 3 with --quick; CUDA: 1; --rounds), the order rotating each round, so
drift and other processes hit every provider alike. Reported: the median sample, its spread (IQR
of the samples), the speedup over torch as the median of the per-round ratios with its IQR, and
`noisy` where that IQR exceeds NOISY of the speedup: such a row cannot rank the providers.

Sanity check. `convext:torch` runs the very computation of `torch` through convext's Python layer,
so it must read about 1.0x (within SANITY_TOL). When it does not, the machine's timings are not
trustworthy (a busy or throttled CPU) and the run says so in its summary and on the plot.

Rows are printed as a table, appended to bench/results/<op>.csv with the device name, versions and
load, and plotted from that CSV into bench/results/<op>_<device>.png; bench/summary.py closes the
run with per-provider statistics, the sanity check and the performance targets (PASS / MISS).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import math
import os
import re
import statistics
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODES = ("fwd", "bwd", "fwd+bwd")
# Opt-in (--mode; depthwise_conv2d only): the backward with only the input (bwd-input) or only the weight and
# bias (bwd-weight) requiring grad, i.e. the grad-input or the grad-weight kernel alone, each against torch's
# convolution_backward with the same output mask (the timings of the former bench/cuda_selfcheck_*.py).
SINGLE_GRAD_MODES = ("bwd-input", "bwd-weight")
ALL_MODES = MODES + SINGLE_GRAD_MODES
LAYOUTS = ("nchw", "channels_last")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
TORCH_PROVIDER = "torch"  # torch.nn.functional, the baseline of every speedup
LARGE_KERNEL = 9  # kH*kW >= 9*9 taps: compute-bound (judged in TFLOP/s); fewer: memory-bound (% of copy bandwidth)
NOISY = 0.10  # IQR of a row's speedup above this fraction of it: too noisy to rank the providers
SANITY_PROVIDER = "convext:torch"  # the same computation as torch, through convext
SANITY_TOL = 0.10  # ... must read 1.0x within this


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
    """One sample: the median milliseconds per call of fn().

    CUDA: triton.testing.do_bench (CUDA events, L2 flushed between calls). CPU: blocked_autorange,
    which runs blocks of calls until at least min_run_time has been measured (0.1 s, quick 0.05 s)
    and answers the median block time per call.
    """
    if torch.device(device).type == "cuda":
        import triton.testing

        warmup, rep = (10, 40) if quick else (25, 100)
        return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))
    from torch.utils import benchmark

    fn()  # warm-up (first-call allocations, lazy init)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=0.05 if quick else 0.1)
    return m.median * 1e3


def default_rounds(device: str, quick: bool = False) -> int:
    """Interleaved rounds per (case, dtype, layout, mode): several on CPU, one on CUDA (do_bench)."""
    if torch.device(device).type == "cuda":
        return 1
    return 3 if quick else 5


def iqr(values: Sequence[float]) -> float:
    """Interquartile range (NaN for fewer than two values)."""
    vals = [v for v in values if v == v]
    if len(vals) < 2:
        return float("nan")
    q = statistics.quantiles(vals, n=4, method="inclusive")
    return q[2] - q[0]


def sample_stats(samples: Dict[str, Sequence[float]], base: str = TORCH_PROVIDER) -> Dict[str, Dict[str, float]]:
    """Per provider, from its samples (one per round, NaN where a round failed): the median ms and
    its IQR, the speedup over `base` as the median of the per-round ratios and that ratio's IQR, and
    `noisy` (speedup IQR > NOISY of the speedup, or for `base` itself its ms IQR > NOISY of its ms)."""
    out = {}
    ref = samples.get(base, [])
    for name, vals in samples.items():
        good = [v for v in vals if v == v and v > 0]
        ms = statistics.median(good) if good else float("nan")
        ms_iqr = iqr(good)
        ratios = [b / v for b, v in zip(ref, vals) if b == b and v == v and b > 0 and v > 0]
        speedup = statistics.median(ratios) if ratios else float("nan")
        sp_iqr = iqr(ratios)
        if name == base:
            noisy = ms_iqr == ms_iqr and ms_iqr > NOISY * ms
        else:
            noisy = sp_iqr == sp_iqr and sp_iqr > NOISY * speedup
        out[name] = dict(ms=ms, ms_iqr=ms_iqr, speedup_vs_torch=speedup, speedup_iqr=sp_iqr, noisy=bool(noisy),
                         rounds=len(good))
    return out


def sanity_check(rows: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """convext:torch must read 1.0x of torch (within SANITY_TOL) on every row that has both.

    status: "PASS", "FAIL" or "no data"; median / lo / hi of its speedups; bad: the failing rows."""
    vals = [r for r in rows if r["provider"] == SANITY_PROVIDER and _finite(r.get("speedup_vs_torch"))]
    if not vals:
        return dict(status="no data", n=0, median=float("nan"), lo=float("nan"), hi=float("nan"), bad=[])
    sp = [float(r["speedup_vs_torch"]) for r in vals]
    bad = [r for r in vals if abs(float(r["speedup_vs_torch"]) - 1) > SANITY_TOL]
    return dict(status="FAIL" if bad else "PASS", n=len(vals), median=statistics.median(sp), lo=min(sp),
                hi=max(sp), bad=bad)


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def load_average() -> float:
    """1-minute load average (NaN where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return float("nan")


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
    def wants_grad(i, t):  # bwd-input: the first input only; bwd-weight: every other one
        return t.is_floating_point() and (mode not in SINGLE_GRAD_MODES or (i == 0) == (mode == "bwd-input"))
    leaves = [None if t is None else t.detach().requires_grad_(wants_grad(i, t)) for i, t in enumerate(inputs)]
    diff = [t for t in leaves if t is not None and t.requires_grad]
    out = provider.run(leaves, kwargs)
    grad = torch.randn_like(out)
    if mode in ("bwd",) + SINGLE_GRAD_MODES:
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
    from convext._autotune import device_name as _device_name  # the one device-name lookup
    dev = torch.device(device)
    if dev.type == "cuda":
        return _device_name("cuda", dev.index)
    return f"{_device_name('cpu', None)} ({torch.get_num_threads()} threads)"


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
           "speedup_vs_torch", "peak_mem_mb", "copy_bw_gbps", "ms_iqr", "speedup_iqr", "noisy", "rounds", "threads",
           "load"]


def run_benchmark(op: str, cases: Sequence[Case], providers: Sequence[Provider], dtypes: Sequence[str],
                  layouts: Sequence[str], modes: Sequence[str], device: str, quick: bool = False,
                  measure_memory: bool = False, csv_path: Optional[str] = None, plot: bool = True,
                  progress: bool = True, rounds: Optional[int] = None) -> List[Dict[str, object]]:
    """Times every (case, dtype, layout, mode, provider), providers interleaved over `rounds` rounds;
    prints, appends CSV, plots."""
    from tqdm import tqdm

    env = versions()
    dev_name = device_name(device)
    rounds = rounds or default_rounds(device, quick)
    load = load_average()
    threads = torch.get_num_threads()
    copy_bw = copy_bandwidth_gbps(device, quick)
    run_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    timestamp = _dt.datetime.now().isoformat(timespec="seconds")
    cpu = torch.device(device).type == "cpu"
    print(f"[bench] {op} on {dev_name}; torch {env['torch']}, CUDA {env['cuda']}, triton {env['triton']}; "
          f"copy bandwidth {copy_bw:.1f} GB/s (read+write); {rounds} interleaved round{'s' * (rounds > 1)} per row"
          + (f"; load average {load:.1f} on {os.cpu_count()} cores" if cpu else ""))
    if cpu and load == load and load > (os.cpu_count() or 1):
        print(f"[bench] warning: the machine is busy (load {load:.1f} > {os.cpu_count()} cores): expect noisy rows; "
              f"--threads 1 suffers least from it")
    configs = [(c, d, l, m) for c in cases for d in dtypes for l in layouts for m in modes]
    rows: List[Dict[str, object]] = []
    bar = tqdm(total=len(configs) * rounds, disable=None if progress else True, desc=op, unit="round", leave=False)
    for case, dname, layout, mode in configs:
        dtype = DTYPES[dname]
        inputs, kwargs = case.make(dtype, layout, device)
        elem = torch.empty((), dtype=dtype).element_size()
        where = f"{case.name} {dname} {layout} {mode}"
        fns: Dict[str, Callable] = {}
        for prov in providers:
            if prov.supports(case, dtype, layout):
                try:
                    fns[prov.name] = mode_fn(prov, inputs, kwargs, mode, device)
                except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
                    _report_error(tqdm, where, prov.name, e, device)
        samples: Dict[str, List[float]] = {p.name: [] for p in providers}
        names = list(fns)
        for r in range(rounds):
            bar.set_postfix_str(f"{where} round {r + 1}/{rounds}")
            k = r % max(1, len(names))
            for name in names[k:] + names[:k]:
                ms = float("nan")
                if name in fns:
                    try:
                        ms = time_ms(fns[name], device, quick)
                    except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
                        _report_error(tqdm, where, name, e, device)
                        del fns[name]  # failed once: not retried in later rounds
                samples[name].append(ms)
            bar.update(1)
        stats = sample_stats(samples)
        nbytes, flops = case.bytes(mode, elem), case.flops(mode)
        for prov in providers:
            st = stats[prov.name]
            ms = st["ms"]
            peak = float("nan")
            if measure_memory and prov.name in fns:
                with contextlib.suppress(RuntimeError):
                    peak = peak_memory_mb(fns[prov.name], device)
            ok = ms == ms and ms > 0
            gbps = nbytes / (ms * 1e-3) / 1e9 if ok else float("nan")
            rows.append(dict(
                run_id=run_id, timestamp=timestamp, op=op, device=torch.device(device).type,
                device_name=dev_name, **env, case=case.name, geometry=case.desc, dtype=dname, layout=layout,
                mode=mode, provider=prov.name, ms=ms, gbps=gbps,
                pct_copy_bw=100 * gbps / copy_bw if ok else float("nan"),
                tflops=flops / (ms * 1e-3) / 1e12 if ok else float("nan"),
                speedup_vs_torch=st["speedup_vs_torch"], speedup_iqr=st["speedup_iqr"], ms_iqr=st["ms_iqr"],
                noisy=st["noisy"], rounds=st["rounds"], threads=threads, load=load,
                peak_mem_mb=peak, copy_bw_gbps=copy_bw))
        fns.clear()
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


def _report_error(tqdm, where, provider, e, device):
    if "out of memory" in str(e).lower() and torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    tqdm.write(f"[bench] {where} {provider}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")


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


def _pm(v, spread, spec):
    """'1.23 ±0.04' (half the IQR), or the value alone when there is no spread."""
    if not _finite(v):
        return "-"
    return format(v, spec) + (f" ±{format(spread / 2, spec)}" if _finite(spread) else "")


def print_table(rows: Sequence[Dict[str, object]], with_memory: bool = False) -> None:
    """The run's rows; `~` marks a row too noisy to rank, `!` a failed sanity row (convext:torch != 1.0x)."""
    headers = ["case", "dtype", "layout", "mode", "provider", "ms (±IQR/2)", "GB/s", "%copy", "TFLOP/s",
               "x torch (±IQR/2)", ""]
    if with_memory:
        headers.insert(-1, "peak MB")
    lines = []
    for r in rows:
        flag = "~" if _truthy(r.get("noisy")) else ""
        if r["provider"] == SANITY_PROVIDER and _finite(r["speedup_vs_torch"]) \
                and abs(r["speedup_vs_torch"] - 1) > SANITY_TOL:
            flag += "!"
        line = [r["case"], r["dtype"], r["layout"], r["mode"], r["provider"], _pm(r["ms"], r.get("ms_iqr"), ".4f"),
                _fmt(r["gbps"], ".2f"), _fmt(r["pct_copy_bw"], ".1f"), _fmt(r["tflops"], ".3f"),
                _pm(r["speedup_vs_torch"], r.get("speedup_iqr"), ".2f")]
        if with_memory:
            line.append(_fmt(r["peak_mem_mb"], ".1f"))
        line.append(flag)
        lines.append([str(v) for v in line])
    print("\n".join(format_table(headers, lines, range(5, len(headers) - 1), group=lambda l: l[0])))
    print(f"[bench] ~ : too noisy to rank (IQR of the speedup > {NOISY:.0%} of it); ! : sanity check failed "
          f"({SANITY_PROVIDER} is torch's own computation and must read 1.00x ± {SANITY_TOL:.2f})")


def _truthy(v) -> bool:
    return v is True or (isinstance(v, str) and v.strip().lower() in ("true", "1")) or (isinstance(v, (int, float)) and v == 1)


def append_csv(rows: Sequence[Dict[str, object]], path: str) -> None:
    """Appends rows; a file written with other columns (an older harness) is rewritten with the union first."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    columns = list(COLUMNS)
    old_rows: Optional[List[Dict[str, str]]] = None
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if header != columns:
                old_rows = list(reader)
                columns = columns + [c for c in header if c not in columns]
    new = not os.path.isfile(path) or os.path.getsize(path) == 0 or old_rows is not None
    with open(path, "w" if old_rows is not None else "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in old_rows or []:
            w.writerow(r)
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


NUMERIC_COLUMNS = ("ms", "gbps", "pct_copy_bw", "tflops", "speedup_vs_torch", "peak_mem_mb", "copy_bw_gbps", "ms_iqr",
                   "speedup_iqr", "rounds", "threads", "load")


def read_run(path: str, run_id: Optional[str] = None) -> List[Dict[str, object]]:
    """The rows of one run in a results CSV (default: its last run), numbers as floats (NaN where empty or
    absent, as in files of older harnesses), `noisy` as a bool."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    run_id = run_id or (rows[-1]["run_id"] if rows else None)
    rows = [r for r in rows if r["run_id"] == run_id]
    for r in rows:
        r.update({k: float(r.get(k) or "nan") for k in NUMERIC_COLUMNS})
        r["noisy"] = _truthy(r.get("noisy"))
    return rows


def _grid(n: int):
    """(rows, cols) for n panels: one row up to 3, 2x2 for 4, else 3 or 4 columns, whichever leaves fewer
    cells empty (ties: 3). The empty cells are removed from the figure."""
    if n <= 3:
        return 1, max(1, n)
    if n == 4:
        return 2, 2
    cols = min((3, 4), key=lambda c: (math.ceil(n / c) * c - n, c))
    return math.ceil(n / cols), cols


def plot_csv(path: str, run_id: Optional[str] = None) -> Optional[str]:
    """One figure of the run: speedup over torch per case (log scale, bars = convext providers, error bars =
    IQR of the speedup, hatched = too noisy to rank), one panel per (mode, dtype, layout) that has data.

    The legend sits above the panels, the notes (sanity check, copy bandwidth, versions) below them; a
    failed sanity check is written in red and marks the offending convext:torch bars with "!".
    Plots the rows of `run_id` (default: the last run in the file).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    rows = read_run(path, run_id)
    data = [r for r in rows if r["provider"] != TORCH_PROVIDER and _finite(r["speedup_vs_torch"])
            and r["speedup_vs_torch"] > 0]
    if not data:
        return None
    panels = sorted({(r["mode"], r["dtype"], r["layout"]) for r in data},
                    key=lambda p: (ALL_MODES.index(p[0]) if p[0] in ALL_MODES else 9, p[1],
                                   LAYOUTS.index(p[2]) if p[2] in LAYOUTS else 9))
    providers = list(dict.fromkeys(r["provider"] for r in data))
    cases = list(dict.fromkeys(r["case"] for r in rows))
    colors = {p: plt.get_cmap("tab10")(i % 10) for i, p in enumerate(providers)}
    nrows, ncols = _grid(len(panels))
    width_in = max(7.0, min(20.0, ncols * (1.2 + 0.55 * len(cases) * max(1, len(providers)) ** 0.5)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width_in, 3.3 * nrows + 1.6), squeeze=False, sharey=True)
    vals_all = [r["speedup_vs_torch"] for r in data]
    lo, hi = min(vals_all + [1.0]) / 1.5, max(vals_all + [1.0]) * 1.5
    sanity = sanity_check(rows)
    bad = {(r["case"], r["mode"], r["dtype"], r["layout"]) for r in sanity["bad"]}
    width = 0.8 / len(providers)
    for ax, (mode, dtype, layout) in zip(axes.flat, panels):
        panel_cases = [c for c in cases if any(r["case"] == c and (r["mode"], r["dtype"], r["layout"])
                                               == (mode, dtype, layout) for r in data)]
        for i, prov in enumerate(providers):
            for j, c in enumerate(panel_cases):
                r = next((r for r in data if (r["case"], r["mode"], r["dtype"], r["layout"], r["provider"])
                          == (c, mode, dtype, layout, prov)), None)
                if r is None:
                    continue
                x = j + (i - (len(providers) - 1) / 2) * width
                v, spread = r["speedup_vs_torch"], r["speedup_iqr"]
                err = [[v - max(v - spread / 2, lo)], [spread / 2]] if _finite(spread) else None
                ax.bar(x, v, width, color=colors[prov], hatch="///" if r["noisy"] else None, edgecolor="white",
                       yerr=err, capsize=2, error_kw=dict(lw=0.8))
                if prov == SANITY_PROVIDER and (c, mode, dtype, layout) in bad:
                    top = min(hi / 1.25, (v + spread / 2 if _finite(spread) else v) * 1.05)
                    ax.text(x, top, "!", color="red", ha="center", va="bottom", fontsize=12, fontweight="bold")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        ticks = [t for t in (0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64) if lo <= t <= hi]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_yticklabels([f"{t:g}x" for t in ticks])
        ax.set_xticks(range(len(panel_cases)))
        ax.set_xticklabels(panel_cases, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{mode}, {dtype}, {layout}", fontsize=9)
        ax.grid(axis="y", lw=0.3, alpha=0.5)
    for ax in list(axes.flat)[len(panels):]:
        fig.delaxes(ax)  # no empty panels
    for ax in axes[:, 0]:
        ax.set_ylabel("speedup over torch.nn")
    r0 = rows[0]
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[p]) for p in providers]
    labels = list(providers)
    if any(r["noisy"] for r in data):
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="gray", hatch="///"))
        labels.append(f"too noisy to rank (IQR > {NOISY:.0%})")
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 1.0 - 0.5 / fig.get_figheight()),
               ncol=min(len(labels), 5), fontsize=8, frameon=False)
    # title, legend and notes are figure texts in margins kept free of panels (tight_layout's rect below)
    fig.text(0.5, 1.0 - 0.06 / fig.get_figheight(), f"{r0['op']} on {r0['device_name']}\nspeedup over torch.nn: "
             f"median of interleaved rounds, error bars: IQR", ha="center", va="top", fontsize=9)
    if sanity["status"] == "FAIL":
        note = (f"SANITY CHECK FAILED: {SANITY_PROVIDER} (torch's own computation) read {sanity['lo']:.2f}x to "
                f"{sanity['hi']:.2f}x of torch, expected 1.00x ± {SANITY_TOL:.2f} (marked !): do not trust this run")
        color = "red"
    elif sanity["status"] == "PASS":
        note = (f"sanity check passed: {SANITY_PROVIDER} read {sanity['lo']:.2f}x to {sanity['hi']:.2f}x of torch "
                f"(expected 1.00x ± {SANITY_TOL:.2f})")
        color = "black"
    else:
        note, color = f"no sanity check ({SANITY_PROVIDER} not in this run)", "black"
    load = r0.get("load", float("nan"))
    meta = (f"torch {r0['torch']}, CUDA {r0['cuda']}, triton {r0['triton']}; copy bandwidth "
            f"{r0['copy_bw_gbps']:.0f} GB/s" + (f"; load {load:.1f}" if _finite(load) else "")
            + f"; run {r0['run_id']}")
    note = textwrap.fill(note, width=int(fig.get_figwidth() * 13))  # about 13 characters per inch at 8 pt
    fig.text(0.5, 0.32 / fig.get_figheight(), note, ha="center", va="bottom", fontsize=8, color=color)
    fig.text(0.5, 0.1 / fig.get_figheight(), meta, ha="center", va="bottom", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, (0.45 + 0.15 * note.count("\n") + 0.25) / fig.get_figheight(), 1,
                           1 - 0.75 / fig.get_figheight()))
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
    p.add_argument("--mode", type=_csv_list, default=None,
                   help=f"comma list of {list(MODES)} (default), or {list(SINGLE_GRAD_MODES)} (depthwise_conv2d only)")
    p.add_argument("--shapes", type=_csv_list, default=None, help="comma list of case names to run")
    p.add_argument("--providers", type=_csv_list, default=None,
                   help="comma list, e.g. torch,convext:cuda (default: torch + every convext backend)")
    p.add_argument("--csv", default=None, help="CSV to append to (default: bench/results/<op>.csv)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--markdown", action="store_true", help="print the closing summary as markdown tables")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds of samples per row (default: CPU 5, --quick 3; CUDA 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads; default: torch's)")
    return p


def validate(args) -> None:
    for name, allowed in (("dtype", DTYPES), ("layout", LAYOUTS), ("mode", ALL_MODES)):
        for v in getattr(args, name) or []:
            if v not in allowed:
                raise SystemExit(f"--{name}: {v!r} is not one of {list(allowed)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU visible")
    for name in ("rounds", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise SystemExit(f"--{name}: must be >= 1, got {v}")


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
           "convext_providers", "default_device", "to_layout", "DTYPES", "LAYOUTS", "MODES", "SINGLE_GRAD_MODES",
           "ALL_MODES", "wall_clock",
           "compute_bound", "kernel_taps", "read_run", "format_table", "sample_stats", "sanity_check", "iqr",
           "default_rounds", "NOISY", "SANITY_PROVIDER", "SANITY_TOL"]


def main(op_name, description, cases_for, providers_for, *, measure_memory, argv=None, quick=None, modes=MODES):
    """The command line shared by every op's benchmark (bench/<op>.py); `modes`: those the op's cases support."""
    p = make_parser(description)
    args = p.parse_args(argv)
    unsupported = [m for m in args.mode or [] if m in ALL_MODES and m not in modes]
    if unsupported:
        raise SystemExit(f"--mode: {unsupported} not supported by {op_name} (supported: {list(modes)})")
    if quick is not None:
        args.quick = args.quick or quick
    validate(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    on_gpu = device == "cuda"
    dtypes = args.dtype or (["bf16"] if on_gpu and args.quick else ["fp32", "bf16"] if on_gpu else ["fp32"])
    layouts = args.layout or (["channels_last"] if args.quick and on_gpu else list(LAYOUTS))
    modes = args.mode or (["fwd", "fwd+bwd"] if args.quick else list(MODES))
    cases = select_cases(cases_for(device, args.quick and not args.shapes), args.shapes)
    rows = run_benchmark(op_name, cases, providers_for(device, args.providers), dtypes, layouts, modes, device,
                         quick=args.quick, measure_memory=measure_memory, csv_path=args.csv,
                         plot=not args.no_plot, progress=not args.no_progress, rounds=args.rounds)
    from . import summary  # imports this module

    summary.print_summary(rows, markdown=args.markdown)
    return rows
