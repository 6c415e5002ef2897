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
    assert "| MISS | depthwise_conv2d | convext:cuda | fwd+bwd % of copy BW, every memory-bound row | >= 60% |" in out
    assert "| 55.0% | -5.0 pp | a bf16 nchw fwd+bwd |" in out

    # an unknown GPU: no FP32 peak to judge against; rows of one provider only: the others say "no data"
    rows = [r for r in _synthetic_rows("Some GPU") if r["provider"] != "convext:triton"]
    t = next(t for t in summary.TARGETS if "FMA peak" in t.what)
    assert summary.check(rows, t)["status"] == "unknown peak"
    text = summary.summarize(rows)
    assert "unknown peak" in text and "30.00 TFLOP/s" in text
    assert [l.split()[:4] for l in text.splitlines() if "(provider not in this run)" in l] == [
        ["no", "data", op, "convext:triton"] for op in ("depthwise_conv2d", "depthwise_separable_conv2d")]
    assert "issue" not in text.lower()  # targets are stated, not referred to by internal numbers


def test_bench_cpu_quick_cli_prints_summary(bench_pkg, tmp_path, capsys):
    from bench import depthwise_conv2d, summary

    csv_path = str(tmp_path / "dw.csv")
    depthwise_conv2d.main(["--device", "cpu", "--quick", "--shapes", "cpu-deeplab", "--dtype", "fp32", "--layout",
                           "nchw", "--mode", "fwd", "--csv", csv_path, "--no-plot", "--no-progress"])
    out = capsys.readouterr().out
    assert "summary of run" in out and "geomean x" in out
    assert any(l.split()[:4] == ["no", "data", "depthwise_conv2d", "convext:cuda"] for l in out.splitlines())
    assert "Sanity check: " in out and "convext:torch / torch (the same computation) should read 1.00x" in out
    summary.main([csv_path])
    again = capsys.readouterr().out
    line = next(l for l in again.splitlines() if "convext:cpu" in l)
    assert line in out  # the CSV round trip gives the same summary


# --------------------------------------------------------------------------- timing, spread, sanity, plot


def test_sample_stats_medians_ratios_and_noise(bench_pkg):
    from bench import harness

    st = harness.sample_stats({"torch": [1.0, 1.0, 1.0, 1.0, 1.0], "convext:cpu": [0.5, 0.5, 0.5, 0.5, 0.5],
                               "convext:torch": [1.0, 2.0, 0.5, 1.0, 1.0], "convext:x": [float("nan")] * 5})
    assert st["torch"]["speedup_vs_torch"] == 1 and st["torch"]["ms_iqr"] == 0 and not st["torch"]["noisy"]
    assert st["convext:cpu"]["speedup_vs_torch"] == 2 and not st["convext:cpu"]["noisy"]
    # ratios 1, 0.5, 2, 1, 1: median 1, IQR 0 by the inclusive quartiles -> widen it
    st2 = harness.sample_stats({"torch": [1.0, 1.0, 1.0, 1.0], "convext:torch": [1.0, 2.0, 0.5, 1.5]})
    assert st2["convext:torch"]["speedup_vs_torch"] == pytest.approx((1 / 1.5 + 1) / 2)
    assert st2["convext:torch"]["noisy"]  # IQR of the ratios far above 10% of the median
    assert st["convext:x"]["rounds"] == 0 and st["convext:x"]["ms"] != st["convext:x"]["ms"]  # NaN: never ran
    # the speedup is the median of per-round ratios: a round where everything was slow cancels out
    st3 = harness.sample_stats({"torch": [1.0, 10.0, 1.0], "convext:cpu": [0.5, 5.0, 0.5]})
    assert st3["convext:cpu"]["speedup_vs_torch"] == 2 and st3["convext:cpu"]["speedup_iqr"] == 0


def test_providers_are_interleaved_round_robin(bench_pkg, monkeypatch, tmp_path):
    """Each round samples every provider once, in a rotating order; a provider that fails is dropped."""
    from bench import harness

    order = []
    script = {"torch": [1.0, 1.0, 1.0], "convext:a": [0.5, 0.5, 0.5], "convext:b": [1.0, 1.0, 1.0]}

    def fake_time(fn, device, quick=False):
        name = fn()
        order.append(name)
        if name == "convext:bad":
            raise RuntimeError("cannot run this case")
        return script[name][sum(1 for o in order if o == name) - 1]
    monkeypatch.setattr(harness, "time_ms", fake_time)
    monkeypatch.setattr(harness, "copy_bandwidth_gbps", lambda device, quick=False: 10.0)
    monkeypatch.setattr(harness, "mode_fn", lambda prov, inputs, kwargs, mode, device: (lambda: prov.name))
    provs = [harness.Provider(n, None) for n in ("torch", "convext:a", "convext:b", "convext:bad")]
    mod = __import__("bench.depthwise_conv2d", fromlist=["make_case"])
    case = mod.make_case("tiny", 1, 2, 6, 3, 1, 1)
    rows = harness.run_benchmark("depthwise_conv2d", [case], provs, ["fp32"], ["nchw"], ["fwd"], "cpu", rounds=3,
                                 csv_path=str(tmp_path / "x.csv"), plot=False, progress=False)
    assert order == ["torch", "convext:a", "convext:b", "convext:bad",
                     "convext:a", "convext:b", "torch",
                     "convext:b", "torch", "convext:a"]
    by = {r["provider"]: r for r in rows}
    assert by["convext:a"]["speedup_vs_torch"] == 2 and by["convext:a"]["rounds"] == 3
    assert by["convext:bad"]["rounds"] == 0 and by["convext:bad"]["ms"] != by["convext:bad"]["ms"]


def _sanity_rows(ratio):
    rows = []
    for case in ("a", "b"):
        for prov, sp in (("torch", 1.0), ("convext:torch", ratio if case == "b" else 1.0), ("convext:cpu", 2.0)):
            r = _row("depthwise_conv2d", case, "8x8x8x8 k3 s1 d1", "fp32", "fwd", prov, sp, pct=50,
                     device="AMD EPYC (2 threads)")
            r.update(device="cpu", layout="nchw", speedup_iqr=0.02, ms_iqr=0.01, noisy=prov == "convext:cpu" and case == "a",
                     rounds=5, load=3.5, threads=2, cuda="-", torch="2.x", triton="3.x", copy_bw_gbps=20.0,
                     timestamp="t", gbps=1.0, convext="0.1.0")
            rows.append(r)
    return rows


@pytest.mark.parametrize("ratio", [0.97, 0.62])
def test_sanity_check_in_summary_and_plot(bench_pkg, tmp_path, monkeypatch, ratio):
    from bench import harness, summary

    rows = _sanity_rows(ratio)
    c = harness.sanity_check(rows)
    assert c["status"] == ("PASS" if ratio > 0.9 else "FAIL") and c["n"] == 2
    text = summary.summarize(rows)
    line = next(l for l in text.splitlines() if l.startswith("Sanity check"))
    if ratio > 0.9:
        assert line.startswith("Sanity check: PASS") and "0.97x" in line
    else:
        assert line.startswith("Sanity check: FAIL") and "b fp32 nchw fwd: 0.62x" in line
        assert "cannot be trusted" in line and "load average 3.5" in line
    assert "1 of 6 rows" in text  # the noisy count

    import matplotlib.pyplot as plt
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    path = str(tmp_path / "depthwise_conv2d.csv")
    harness.append_csv(rows, path)
    png = harness.plot_csv(path)
    assert png.endswith("depthwise_conv2d_cpu.png") and os.path.getsize(png) > 0
    (fig,) = figs
    texts = [t.get_text() for t in fig.texts]
    marks = [t for ax in fig.axes for t in ax.texts if t.get_text() == "!"]
    if ratio > 0.9:
        assert any(t.startswith("sanity check passed") for t in texts) and not marks
    else:
        failed = [t for t in fig.texts if t.get_text().startswith("SANITY CHECK FAILED")]
        assert len(failed) == 1 and failed[0].get_color() == "red" and len(marks) == 1
    plt.close(fig)


def test_plot_is_one_readable_figure(bench_pkg, tmp_path, monkeypatch):
    """Only panels with data, none left empty; the legend above the panels, clear of them and of the notes."""
    from bench import harness
    import matplotlib.pyplot as plt

    rows = []
    for mode in ("fwd", "bwd", "fwd+bwd"):
        for layout in ("nchw", "channels_last"):
            if (mode, layout) == ("bwd", "channels_last"):
                continue  # 5 panels with data
            for case in ("a", "b", "c"):
                for prov, sp in (("torch", 1.0), ("convext:cpu", 1.7), ("convext:torch", 1.0)):
                    r = _sanity_rows(1.0)[0]
                    r.update(case=case, mode=mode, layout=layout, provider=prov, speedup_vs_torch=sp)
                    rows.append(r)
    # a provider with no finite number anywhere (e.g. not supported) must not make a panel or a legend entry
    rows.append(dict(rows[-1], provider="convext:cuda-tc", speedup_vs_torch=float("nan"), ms=float("nan")))
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    path = str(tmp_path / "dw.csv")
    harness.append_csv(rows, path)
    harness.plot_csv(path)
    (fig,) = figs
    assert len(fig.axes) == 5  # 5 panels of data; the 6th cell of the grid removed
    assert all(len(ax.patches) == 6 for ax in fig.axes)  # 3 cases x 2 convext providers, no empty panel
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["convext:cpu", "convext:torch"]
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_tightbbox(renderer)), "legend over a panel"
    for t in fig.texts:
        assert not legend.overlaps(t.get_window_extent(renderer)), f"legend over the note {t.get_text()!r}"
    (title,) = [t.get_window_extent(renderer) for t in fig.texts if "speedup over torch.nn" in t.get_text()]
    assert title.y0 >= legend.y1 and all(legend.y0 >= ax.get_tightbbox(renderer).y1 for ax in fig.axes)
    notes = [t.get_window_extent(renderer) for t in fig.texts if "sanity check" in t.get_text()]
    assert len(notes) == 1 and all(ax.get_tightbbox(renderer).y0 >= notes[0].y1 for ax in fig.axes)
    width = fig.get_figwidth() * fig.dpi
    assert all(0 <= t.get_window_extent(renderer).x0 and t.get_window_extent(renderer).x1 <= width
               for t in fig.texts), "a note runs off the figure"
    plt.close(fig)
    assert [harness._grid(n) for n in (1, 2, 3, 4, 5, 6, 8, 9)] == [(1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (2, 3),
                                                                    (2, 4), (3, 3)]


def test_csv_of_an_older_harness_is_migrated(bench_pkg, tmp_path):
    from bench import harness

    path = str(tmp_path / "old.csv")
    old_cols = [c for c in harness.COLUMNS if c not in ("ms_iqr", "speedup_iqr", "noisy", "rounds", "threads", "load")]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old_cols)
        w.writeheader()
        w.writerow({c: ("old" if c == "run_id" else "1") for c in old_cols})
    harness.append_csv(_sanity_rows(1.0), path)
    with open(path) as f:
        header = next(csv.reader(f))
    assert header == harness.COLUMNS
    old = harness.read_run(path, "old")
    assert len(old) == 1 and old[0]["ms"] == 1 and old[0]["ms_iqr"] != old[0]["ms_iqr"] and old[0]["noisy"] is False
    assert len(harness.read_run(path)) == 6


# --------------------------------------------------------------------------- bench models --processes


def _model_row(variant, samples, ratios, peak=float("nan")):
    return dict(model="m", mode="eval", format="fp32", variant=variant, batch=2, size=32, ms=0.0, images_per_s=0.0,
                spread_pct=0.0, speedup=0.0, speedup_iqr=0.0, noisy=False, peak_mb=peak, rounds=len(samples),
                processes=1, _samples=samples, _ratios=ratios)


def test_models_processes_pool_rounds(bench_pkg):
    """--processes: one row per (model, mode, format, variant) from the pooled samples and per-round ratios
    of every process, so the spread includes the change from one process to the next."""
    import bench.models as bm
    runs = [[_model_row("torch", [0.010, 0.011], [1.0, 1.0]), _model_row("convert", [0.009, 0.010], [1.11, 1.10])],
            [_model_row("torch", [0.014, 0.013], [1.0, 1.0]), _model_row("convert", [0.015, 0.014], [0.93, 0.92], 5.0)]]
    rows = {r["variant"]: r for r in bm.merge(runs)}
    c = rows["convert"]
    assert c["processes"] == 2 and c["rounds"] == 4 and c["peak_mb"] == 5.0
    assert c["speedup"] == pytest.approx((0.93 + 1.10) / 2)  # median of the four pooled ratios
    assert c["speedup_iqr"] > 0.1 and c["noisy"]  # the two processes disagree: too noisy to rank
    assert c["ms"] == pytest.approx(1e3 * (0.010 + 0.014) / 2)
    assert rows["torch"]["speedup"] == 1.0 and not rows["torch"]["noisy"]
    # one process alone: its own numbers
    one = {r["variant"]: r for r in bm.merge(runs[:1])}["convert"]
    assert one["speedup"] == pytest.approx(1.105) and one["processes"] == 1


def test_models_child_argv_drops_processes(bench_pkg):
    import bench.models as bm
    assert bm._child_argv(["--models", "a", "--processes", "3", "--rounds", "2"]) == ["--models", "a", "--rounds", "2"]
    assert bm._child_argv(["--processes=3", "--quick"]) == ["--quick"]
    with pytest.raises(SystemExit):
        bm.parse(["--processes", "0"])


def test_models_csv_leaves_out_raw_samples(bench_pkg, tmp_path, monkeypatch):
    import bench.models as bm
    monkeypatch.setattr(bm.harness, "RESULTS_DIR", str(tmp_path))
    path = bm.write_csv([_model_row("convert", [0.01], [1.0])], "cpu")
    header = open(path).readline()
    assert "_samples" not in header and "_ratios" not in header and "processes" in header
