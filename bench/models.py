"""End-to-end model benchmark: torch.nn vs convext.convert on real models, inference and a training step.

    python -m bench models [--quick] [--models mobilenet_v2,...] [--formats fp32,channels_last,bf16]
                           [--modes eval,train] [--compile] [--rounds N] [--batch B] [--size S] [--device D]
                           [--processes P]

Models (random weights; a model whose package is missing is skipped with a note): torchvision
mobilenet_v2, mnasnet1_0, mobilenet_v3_large, efficientnet_b0, convnext_tiny,
deeplabv3_mobilenet_v3_large, and timm convnext_tiny with output_stride=8.

Variants: `torch` (the model as built), `convert` (convext.convert), `convert+fold`
(convert(fold_batchnorm=True), inference only), and with --compile `torch.compile` of `torch` and of
`convert`. Modes: `eval` (no_grad forward) and `train` (forward, loss, backward, SGD step). Formats:
`fp32` (NCHW), `channels_last` (fp32), `bf16` (autocast on the device, where it supports bf16).

Timing: every variant of a (model, mode, format) is timed in the same process, round-robin, `--rounds`
times (the order rotates each round, so drift and noise hit every variant alike). One sample is the
median time per call of a torch.utils.benchmark blocked_autorange (CPU) or triton.testing.do_bench
(CUDA). Reported: images/s from the median sample, the spread (IQR of the samples, as % of the
median), the speedup over `torch` as the median of the per-round ratios with its IQR, and peak memory
(CUDA). A row whose spread is too wide to rank (IQR of the ratio > 10%) is flagged `noisy`.
With `--processes P` the whole run is repeated in P fresh processes, one after the other, and each
row pools the P x rounds samples and per-round ratios: its spread then includes what changes from one
process to the next (allocations, the machine's state), which on a shared machine can exceed the
spread inside one process.
Rows go to bench/results/models.csv (with the device and versions) and a plot to
bench/results/models_<device>.png.
"""
from __future__ import annotations

import argparse
import copy
import csv
import datetime as _dt
import os
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from . import harness

MODELS = ("mobilenet_v2", "mnasnet1_0", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny",
          "deeplabv3_mobilenet_v3_large", "timm_convnext_tiny_os8")
QUICK_MODELS = ("mobilenet_v2", "mobilenet_v3_large", "convnext_tiny")
FORMATS = ("fp32", "channels_last", "bf16")
MODES = ("eval", "train")
NOISY = 0.10  # IQR of the speedup above this fraction: the row cannot rank the variants


def build_model(name: str) -> nn.Module:
    """The model with random weights, or raises ImportError naming the missing package."""
    torch.manual_seed(0)
    if name.startswith("timm_"):
        import timm
        if name == "timm_convnext_tiny_os8":
            return timm.create_model("convnext_tiny", pretrained=False, output_stride=8)
        return timm.create_model(name[len("timm_"):], pretrained=False)
    import torchvision
    if name == "deeplabv3_mobilenet_v3_large":
        return torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None)
    return getattr(torchvision.models, name)()


def _output(y):
    return y["out"] if isinstance(y, dict) else y


def _supports_bf16(device: str) -> bool:
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return True  # CPU autocast runs bf16 everywhere (slowly without AVX512-BF16/AMX)


def make_step(model: nn.Module, x: torch.Tensor, mode: str, fmt: str, device: str) -> Callable[[], object]:
    """A zero-argument callable running one inference or one training step."""
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=fmt == "bf16")
    if mode == "eval":
        def infer():
            with torch.no_grad(), autocast:
                return _output(model(x))
        return infer
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = _output(model(x)).float().square().mean()
        loss.backward()
        opt.step()
        return loss
    return train_step


def variants(model: nn.Module, mode: str, compile_too: bool, convert) -> Dict[str, nn.Module]:
    """The models to compare for one mode (each its own copy: train steps update weights)."""
    model = copy.deepcopy(model).train(mode == "train")
    out = {"torch": model, "convert": convert(model)}
    if mode == "eval":
        out["convert+fold"] = convert(model, fold_batchnorm=True)
    if compile_too:
        out["compile(torch)"] = torch.compile(copy.deepcopy(model))
        out["compile(convert)"] = torch.compile(convert(model))
    return out


def _timed(fn, device: str, quick: bool) -> float:
    """Seconds per call: one sample."""
    return harness.time_ms(fn, device, quick) * 1e-3


def peak_memory_mb(fn, device: str) -> float:
    return harness.peak_memory_mb(fn, device)


def _iqr(values: List[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


def run_case(name, model, mode, fmt, args, device) -> List[dict]:
    import convext

    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    model = model.to(device)
    if fmt == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    models = variants(model, mode, args.compile, convext.convert)
    steps = {v: make_step(m, x, mode, fmt, device) for v, m in models.items()}
    for fn in steps.values():  # warm-up: compile, autotune, first-call allocations
        fn()
        fn()
    names = list(steps)
    samples: Dict[str, List[float]] = {v: [] for v in names}
    ratios: Dict[str, List[float]] = {v: [] for v in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        this_round = {v: _timed(steps[v], device, args.quick) for v in order}
        for v in names:
            samples[v].append(this_round[v])
            ratios[v].append(this_round["torch"] / this_round[v])
    rows = []
    for v in names:
        med = statistics.median(samples[v])
        speed = statistics.median(ratios[v])
        rows.append(dict(model=name, mode=mode, format=fmt, variant=v, batch=args.batch, size=args.size,
                         ms=med * 1e3, images_per_s=args.batch / med,
                         spread_pct=100 * _iqr(samples[v]) / med, speedup=speed,
                         speedup_iqr=_iqr(ratios[v]), noisy=_iqr(ratios[v]) > NOISY * speed,
                         peak_mb=peak_memory_mb(steps[v], device), rounds=args.rounds, processes=1,
                         _samples=samples[v], _ratios=ratios[v]))
    return rows


def merge(runs: List[List[dict]]) -> List[dict]:
    """Rows of several processes (each a list of run_case rows, with their raw `_samples` and `_ratios`)
    as one row per (model, mode, format, variant): medians and IQRs over the pooled samples and ratios,
    peak memory the largest, `processes` how many runs had the row."""
    pooled: Dict[tuple, dict] = {}
    for rows in runs:
        for r in rows:
            k = (r["model"], r["mode"], r["format"], r["variant"])
            p = pooled.setdefault(k, dict(r, _samples=[], _ratios=[], processes=0, rounds=0, peak_mb=float("nan")))
            p["_samples"] = p["_samples"] + list(r["_samples"])
            p["_ratios"] = p["_ratios"] + list(r["_ratios"])
            p["processes"] += 1
            p["rounds"] += r["rounds"]
            if r["peak_mb"] == r["peak_mb"]:
                p["peak_mb"] = r["peak_mb"] if p["peak_mb"] != p["peak_mb"] else max(p["peak_mb"], r["peak_mb"])
    out = []
    for p in pooled.values():
        med, speed = statistics.median(p["_samples"]), statistics.median(p["_ratios"])
        out.append(dict(p, ms=med * 1e3, images_per_s=p["batch"] / med, spread_pct=100 * _iqr(p["_samples"]) / med,
                        speedup=speed, speedup_iqr=_iqr(p["_ratios"]),
                        noisy=_iqr(p["_ratios"]) > NOISY * speed))
    return out


def print_rows(rows: List[dict]):
    print(f"{'model':30s} {'mode':5s} {'format':13s} {'variant':17s} {'ms':>9s} {'img/s':>8s} "
          f"{'spread':>7s} {'speedup':>16s} {'peak MB':>8s}")
    for r in rows:
        flag = "  noisy" if r["noisy"] else ""
        print(f"{r['model']:30s} {r['mode']:5s} {r['format']:13s} {r['variant']:17s} {r['ms']:9.2f} "
              f"{r['images_per_s']:8.1f} {r['spread_pct']:6.1f}% {r['speedup']:7.2f}x ±{r['speedup_iqr'] / 2:5.2f} "
              f"{r['peak_mb']:8.1f}{flag}")


def write_csv(rows: List[dict], device: str) -> str:
    os.makedirs(harness.RESULTS_DIR, exist_ok=True)
    path = os.path.join(harness.RESULTS_DIR, "models.csv")
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    meta = dict(time=stamp, device=harness.device_name(device), threads=torch.get_num_threads(),
                **harness.versions())
    fields = list(meta) + [k for k in rows[0] if not k.startswith("_")]
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({**meta, **{k: v for k, v in r.items() if not k.startswith("_")}})
    return path


def plot(rows: List[dict], device: str) -> Optional[str]:
    """Speedup over torch per model, one panel per (mode, format) that has data; error bars = IQR."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [(m, f) for m in MODES for f in FORMATS if any(r["mode"] == m and r["format"] == f for r in rows)]
    if not panels:
        return None
    variants_seen = [v for v in dict.fromkeys(r["variant"] for r in rows) if v != "torch"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (mode, fmt) in zip(axes[0], panels):
        sub = [r for r in rows if r["mode"] == mode and r["format"] == fmt]
        models = list(dict.fromkeys(r["model"] for r in sub))
        width = 0.8 / max(1, len(variants_seen))
        for i, v in enumerate(variants_seen):
            pts = [(j, r) for j, m in enumerate(models) for r in sub if r["model"] == m and r["variant"] == v]
            if not pts:
                continue
            ax.bar([j + i * width for j, _ in pts], [r["speedup"] for _, r in pts], width,
                   yerr=[r["speedup_iqr"] / 2 for _, r in pts], label=v, capsize=2,
                   hatch=["//" if r["noisy"] else "" for _, r in pts])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))])
        ax.set_xticklabels(models, rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{mode}, {fmt}", fontsize=9)
    axes[0][0].set_ylabel("speedup over torch.nn")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"{harness.device_name(device)}, torch {torch.__version__}: median of interleaved rounds, "
                 f"bars = IQR, hatched = too noisy to rank", fontsize=8, y=0.02)
    fig.tight_layout(rect=(0, 0.04, 1, 0.92))
    path = os.path.join(harness.RESULTS_DIR, f"models_{'cuda' if device == 'cuda' else 'cpu'}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary(rows: List[dict]) -> str:
    """The target: no model slower after convert than before, within the measured spread."""
    lines = []
    for r in rows:
        if r["variant"] not in ("convert", "convert+fold"):
            continue
        slower = r["speedup"] + r["speedup_iqr"] / 2 < 1.0
        lines.append(f"  {'SLOWER' if slower else 'ok    '} {r['model']} {r['mode']} {r['format']} {r['variant']}: "
                     f"{r['speedup']:.2f}x (IQR {r['speedup_iqr']:.2f})")
    bad = sum(line.strip().startswith("SLOWER") for line in lines)
    head = (f"[bench models] target: no model slower after convert than torch.nn (median speedup + IQR/2 >= 1.0): "
            f"{'PASS' if bad == 0 else f'MISS ({bad} rows slower)'}")
    return "\n".join([head] + lines)


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench models", description=__doc__.splitlines()[0])
    p.add_argument("--device", default=harness.default_device())
    p.add_argument("--models", default=None, help="comma list (default: all; --quick: three)")
    p.add_argument("--formats", default=None, help="comma list of fp32, channels_last, bf16")
    p.add_argument("--modes", default="eval,train")
    p.add_argument("--compile", action="store_true", help="also torch.compile of torch and of convert")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--processes", type=int, default=1,
                   help="repeat the run in this many fresh processes and pool their rounds (default 1)")
    p.add_argument("--dump-json", default=None, help=argparse.SUPPRESS)  # a child of --processes writes its rows here
    args = p.parse_args(argv)
    if args.processes < 1:
        p.error("--processes must be >= 1")
    cuda = args.device.startswith("cuda")
    args.models = args.models.split(",") if args.models else list(QUICK_MODELS if args.quick else MODELS)
    args.formats = args.formats.split(",") if args.formats else (["fp32"] if args.quick else list(FORMATS))
    args.modes = args.modes.split(",")
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.batch = args.batch or (32 if cuda else (2 if args.quick else 4))
    args.size = args.size or (224 if cuda or not args.quick else 128)
    for m in args.models:
        if m not in MODELS and not m.startswith("timm_"):
            p.error(f"unknown model {m!r}; choose from {MODELS}")
    for f in args.formats:
        if f not in FORMATS:
            p.error(f"unknown format {f!r}; choose from {FORMATS}")
    for m in args.modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}; choose from {MODES}")
    return args


def _child_argv(argv: List[str]) -> List[str]:
    """`argv` without --processes (and its value)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--processes":
            skip = True
        elif not a.startswith("--processes="):
            out.append(a)
    return out


def run_processes(argv: List[str], args, device: str) -> List[dict]:
    """The run repeated in args.processes fresh interpreters, one after the other; rows pooled (merge)."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.processes):
            dump = os.path.join(tmp, f"rows{i}.json")
            print(f"[bench models] process {i + 1}/{args.processes}", flush=True)
            cmd = [sys.executable, "-m", "bench", "models", *_child_argv(argv), "--dump-json", dump]
            r = subprocess.run(cmd, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            if r.returncode != 0:
                raise SystemExit(f"[bench models] process {i + 1} failed (exit {r.returncode})")
            with open(dump) as f:
                runs.append(json.load(f))
    return merge(runs)


def report(rows: List[dict], device: str, t0: float) -> None:
    """CSV, plot and the target summary of a run's rows."""
    path = write_csv(rows, device)
    png = plot(rows, device)
    print(summary(rows))
    print(f"[bench models] {len(rows)} rows -> {path}" + (f", {png}" if png else "")
          + f"; {time.perf_counter() - t0:.0f} s")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    t0 = time.perf_counter()
    if args.processes > 1:
        rows = run_processes(argv, args, device)
        if rows:
            print(f"[bench models] pooled over {args.processes} processes:")
            print_rows(rows)
            report(rows, device, t0)
        return rows
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"[bench models] {harness.device_name(device)}; {harness.versions()}; batch {args.batch}, "
          f"{args.size}x{args.size}, {args.rounds} interleaved rounds")
    rows = []
    for name in args.models:
        try:
            base = build_model(name)
        except ImportError as e:
            print(f"[bench models] skipped {name}: {e}")
            continue
        for mode in args.modes:
            for fmt in args.formats:
                if fmt == "bf16" and not _supports_bf16(device):
                    continue
                case_rows = run_case(name, base, mode, fmt, args, device)
                print_rows(case_rows)
                rows += case_rows
    if args.dump_json:  # a child of --processes: the parent reports
        with open(args.dump_json, "w") as f:
            json.dump(rows, f)
        return rows
    if not rows:
        print("[bench models] nothing ran")
        return rows
    report(rows, device, t0)
    return rows
