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
