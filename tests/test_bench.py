"""Smoke test of the benchmark harness (bench/): a tiny CPU run through the public API."""
import csv
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def bench_pkg():
    sys.path.insert(0, ROOT)
    try:
        import bench.depthwise_conv2d
        import bench.depthwise_separable_conv2d
        yield bench
    finally:
        sys.path.remove(ROOT)


@pytest.mark.parametrize("op", ["depthwise_conv2d", "depthwise_separable_conv2d"])
def test_bench_cpu_smoke(bench_pkg, op, tmp_path):
    import importlib

    mod = importlib.import_module(f"bench.{op}")
    case = mod.make_case("tiny", 2, 8, 8, 12, 3, 1) if op.endswith("separable_conv2d") else \
        mod.make_case("tiny", 2, 8, 12, 3, 1, 2)
    csv_path = str(tmp_path / f"{op}.csv")
    plot = op == "depthwise_conv2d"  # matplotlib is slow to import; one plot is enough
    rows = bench_pkg.harness.run_benchmark(op, [case], mod.providers_for("cpu"), ["fp32"], ["channels_last"],
                                           ["fwd+bwd"], "cpu", quick=True, measure_memory=True,
                                           csv_path=csv_path, plot=plot, progress=False)
    providers = {r["provider"] for r in rows}
    assert "torch" in providers and any(p.startswith("convext:") for p in providers)
    assert "convext:triton" not in providers  # interpreted Triton is never benchmarked
    assert all(r["ms"] > 0 for r in rows), [(r["provider"], r["ms"]) for r in rows]
    assert all(abs(r["speedup_vs_torch"] - 1) < 1e-12 for r in rows if r["provider"] == "torch")
    with open(csv_path) as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) and written[0]["torch"] and written[0]["device_name"]
    assert os.path.exists(str(tmp_path / f"{op}_cpu.png")) == plot


def _row(op, case, geometry, dtype, mode, provider, speedup, pct=float("nan"), tflops=float("nan"),
         peak=float("nan"), device="NVIDIA H100 80GB HBM3"):
    """A results row of a synthetic run; torch takes 1 ms, so ms = 1 / speedup."""
    return dict(run_id="synthetic", op=op, device="cuda", device_name=device, case=case, geometry=geometry,
                dtype=dtype, layout="nchw", mode=mode, provider=provider, ms=1.0 / speedup, pct_copy_bw=pct,
                tflops=tflops, speedup_vs_torch=speedup, peak_mem_mb=peak)


def _synthetic_rows(device="NVIDIA H100 80GB HBM3"):
    dw, sep = "depthwise_conv2d", "depthwise_separable_conv2d"
    geo = {"a": "8x8x8x8 k3 s1 d1", "b": "8x8x8x8 k13 s1 d1"}
    # (case, dtype, mode): (cuda speedup, % of copy bandwidth, TFLOP/s, triton time / cuda time)
    cuda = {("a", "fp32", "fwd"): (4, 85, 1, 1.1), ("a", "bf16", "fwd"): (4, 82, 1, 1.1),
            ("b", "fp32", "fwd"): (2, 5, 40, 1.1), ("b", "bf16", "fwd"): (2, 5, 40, 1.5),
            ("a", "fp32", "fwd+bwd"): (8, 70, 1, 1.1), ("a", "bf16", "fwd+bwd"): (8, 55, 1, 1.1),
            ("b", "fp32", "fwd+bwd"): (4, 5, 30, 1.1), ("b", "bf16", "fwd+bwd"): (4, 5, 30, 1.1)}
    rows = []
    for (case, dtype, mode), (s, pct, tf, ratio) in cuda.items():
        rows += [_row(dw, case, geo[case], dtype, mode, "torch", 1.0, device=device),
                 _row(dw, case, geo[case], dtype, mode, "convext:cuda", s, pct, tf, device=device),
                 _row(dw, case, geo[case], dtype, mode, "convext:triton", s / ratio, pct, tf, device=device)]
    for mode, s, pct in (("fwd", 2.5, 65), ("fwd+bwd", 1.5, 61)):
        rows += [_row(sep, "s", "8x8->8x8x8 k3 d1", "fp32", mode, "torch", 1.0, peak=100, device=device),
                 _row(sep, "s", "8x8->8x8x8 k3 d1", "fp32", mode, "convext:triton", s, pct, peak=50, device=device)]
    return rows


def test_summary_targets_on_synthetic_csv(bench_pkg, tmp_path, capsys):
    from bench import harness, summary

    assert [harness.compute_bound(f"8x8x8x8 k{k} s1 d1") for k in (3, 7, "1x11", 9, 13)] == [0, 0, 0, 1, 1]
    path = str(tmp_path / "synthetic.csv")
    harness.append_csv(_synthetic_rows(), path)
    rows = harness.read_run(path)  # through the CSV: numbers come back as floats
    got = {(t.op, t.backend, t.what): summary.check(rows, t) for t in summary.TARGETS}
    expect = {  # what: (status, measured, gap)
        "fwd % of copy BW, every memory-bound row": ("PASS", 82, 2),
        "fwd+bwd % of copy BW, every memory-bound row": ("MISS", 55, -5),
        "fwd geomean speedup vs torch": ("MISS", 8 ** 0.5, 8 ** 0.5 - 3),
        "fwd+bwd geomean speedup vs torch": ("PASS", 32 ** 0.5, 32 ** 0.5 - 4),
        "k>=13 fp32 % of FP32 FMA peak, every row": ("MISS", 3000 / 66.9, 3000 / 66.9 - 50),
        "k>=13 bf16 speedup vs torch, every row": ("PASS", 2, 1),
        "speedup vs torch, every row and mode": ("PASS", 2, 1),
        "time / convext:cuda time, every row": ("MISS", 1.5, -0.25),
    }
    for (op, backend, what), c in got.items():
        if op == "depthwise_conv2d":
            status, value, gap = expect[what]
        else:
            status, value, gap = {"fwd geomean speedup vs torch": ("PASS", 2.5, 0.5),
                                  "fwd+bwd geomean speedup vs torch": ("MISS", 1.5, -0.5),
                                  "% of fused-bytes roofline, every memory-bound row": ("PASS", 61, 1),
                                  "fwd+bwd peak memory / torch's, every row": ("PASS", 0.5, 0.5)}[what]
        assert (c["status"], c["value"], c["gap"]) == (status, pytest.approx(value), pytest.approx(gap)), what
    c = got[("depthwise_conv2d", "cuda", "fwd+bwd % of copy BW, every memory-bound row")]
    assert c["where"] == "a bf16 nchw fwd+bwd"
    assert got[("depthwise_conv2d", "triton", "time / convext:cuda time, every row")]["where"] == "b bf16 nchw fwd"

    stats = {(s["op"], s["mode"], s["provider"]): s for s in summary.provider_stats(rows)}
    s = stats[("depthwise_conv2d", "fwd", "convext:triton")]
    assert s["geomean"] == pytest.approx((4 / 1.1 * 4 / 1.1 * 2 / 1.1 * 2 / 1.5) ** 0.25, rel=1e-5)  # CSV: 6 digits
    assert (s["min"], s["min_row"], s["slower"]) == (pytest.approx(2 / 1.5, rel=1e-5), "b bf16 nchw", 0)
    assert (s["bw_median"], s["bw_min"], s["tf_median"]) == (83.5, 82, 40)  # k3 rows by bandwidth, k13 by TFLOP/s

    summary.main([path, "--markdown"])
    out = capsys.readouterr().out
    assert "| MISS | 3 | depthwise_conv2d | convext:cuda | fwd+bwd % of copy BW" in out
    assert "| 55.0% | -5.0 pp | a bf16 nchw fwd+bwd |" in out

    # an unknown GPU: no FP32 peak to judge against; rows of one provider only: the others say "no data"
    rows = [r for r in _synthetic_rows("Some GPU") if r["provider"] != "convext:triton"]
    t = next(t for t in summary.TARGETS if "FMA peak" in t.what)
    assert summary.check(rows, t)["status"] == "unknown peak"
    text = summary.summarize(rows)
    assert "unknown peak" in text and "30.00 TFLOP/s" in text
    assert [l.split()[:5] for l in text.splitlines() if "not in this run" in l] == [
        ["no", "data", "4", op, "convext:triton"] for op in ("depthwise_conv2d", "depthwise_separable_conv2d")]


def test_bench_cpu_quick_cli_prints_summary(bench_pkg, tmp_path, capsys):
    from bench import depthwise_conv2d, summary

    csv_path = str(tmp_path / "dw.csv")
    depthwise_conv2d.main(["--device", "cpu", "--quick", "--shapes", "cpu-deeplab", "--dtype", "fp32", "--layout",
                           "nchw", "--mode", "fwd", "--csv", csv_path, "--no-plot", "--no-progress"])
    out = capsys.readouterr().out
    assert "summary of run" in out and "geomean x" in out
    assert "no data  3      depthwise_conv2d  convext:cuda" in out  # no CUDA provider on the CPU
    summary.main([csv_path])
    again = capsys.readouterr().out
    line = next(l for l in again.splitlines() if "convext:cpu" in l)
    assert line in out  # the CSV round trip gives the same summary
