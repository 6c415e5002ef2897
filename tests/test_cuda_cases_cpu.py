"""tests/cuda_cases.py without a GPU: its case lists are well formed and reproducible, its float64
checkers pass the CPU kernels (the same raw ops, dispatched on CPU tensors) on small cases of every
dtype and layout, and they fail ops with planted bugs; its command line (the child process of
tests/test_cuda_sweeps.py) runs and reports the switches it ran with. So the GPU sweeps' code runs in
CPU CI and cannot rot unnoticed between GPU sessions."""
import os
import random

import pytest
import torch

import cuda_cases as cc
from conftest import conv_out_size, require_backend

pytestmark = pytest.mark.filterwarnings("ignore")
CPU_NUMEL = 3000  # N*C*M*H*W of the cases run here


def _small(cases, per_dtype):
    """The first `per_dtype` cases of each dtype with at most CPU_NUMEL elements, in list order."""
    out, seen = [], {}
    for c in cases:
        if c.numel <= CPU_NUMEL and seen.get(c.dtype, 0) < per_dtype:
            seen[c.dtype] = seen.get(c.dtype, 0) + 1
            out.append(c)
    return out


# fixed cases, then random ones (the GPU sweeps' seeds)
FB_CPU = _small(cc.fb_cases(0), per_dtype=6) + _small(cc.fb_cases(40, seed=0, fixed=False), per_dtype=4)
BW_CPU = _small(cc.bw_cases(0), per_dtype=4) + _small(cc.bw_cases(80, seed=1234, fixed=False), per_dtype=4)


@pytest.fixture
def cpu_ops():
    require_backend("cpu", "cpu")
    return cc.ops("cuda")  # the compiled extension's ops: CPU kernels for CPU tensors


# --------------------------------------------------------------------------- the case lists


def test_case_lists_well_formed():
    fb, bw = list(cc.fb_cases(50)), list(cc.bw_cases(50))
    n_fixed_fb = (len(cc.FB_FIXED) + len(cc.FB_ROUTING)) * len(cc.DTYPES) * len(cc.LAYOUTS)
    assert len(fb) == n_fixed_fb + 50 * len(cc.DTYPES)
    assert len(bw) == len(cc.BW_FIXED) * 4 * 2 + len(cc.BW_PLANAR_FAST) * 3 * 2 + 50
    for cases in (fb, bw):
        ids = [c.id for c in cases]
        assert len(set(ids)) == len(ids), "duplicate test ids"
        assert all(c.layout in cc.LAYOUTS and c.dtype in cc.DTYPES for c in cases)
    for c in fb:  # every geometry has an output (N = 0 allowed)
        N, C, M, H, W, kh, kw, s, p, d, _ = c.cfg
        assert conv_out_size(H, kh, s[0], p[0], p[1], d[0]) >= 1, c.id
        assert conv_out_size(W, kw, s[1], p[2], p[3], d[1]) >= 1, c.id
    for c in bw:
        N, C, M, H, W, k, s, p, d = c.geom
        assert cc.out_size(H, p[0], p[1], k[0], s[0], d[0]) >= 1 and cc.out_size(W, p[2], p[3], k[1], s[1], d[1]) >= 1
    # the large-kernel cases the tensor-core switches are checked on exist in both sweeps
    assert any(c.taps >= cc.TC_TAPS for c in fb) and any(c.taps >= cc.TC_TAPS for c in bw)


def test_case_lists_reproducible():
    """Same seed, same cases (xdist workers must collect the same ids); the first random cases do not
    depend on how many are drawn; another seed, other cases."""
    assert list(cc.fb_cases(30, seed=3)) == list(cc.fb_cases(30, seed=3))
    a, b = list(cc.fb_cases(10, seed=3, fixed=False)), list(cc.fb_cases(30, seed=3, fixed=False))
    assert b[:len(a)] == a
    assert list(cc.bw_cases(30, seed=4)) == list(cc.bw_cases(30, seed=4))
    assert list(cc.bw_cases(10, seed=4, fixed=False)) != list(cc.bw_cases(10, seed=5, fixed=False))
    assert cc.stable_seed((1, 2), "float32", "cl") == cc.stable_seed((1, 2), "float32", "cl")
    # drawn geometries stay valid over many seeds, not only the ones the tests use
    rng = random.Random(99)
    for _ in range(2000):
        N, C, M, H, W, kh, kw, s, p, d, _ = cc.fb_random_cfg(rng)
        assert conv_out_size(H, kh, s[0], p[0], p[1], d[0]) >= 1 and conv_out_size(W, kw, s[1], p[2], p[3], d[1]) >= 1


@pytest.mark.parametrize("layout", cc.LAYOUTS)
def test_make_layout(layout):
    t = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    v = cc.make_layout(t, layout)
    assert torch.equal(v, t)
    assert v.is_contiguous() == (layout == "nchw")
    if layout in ("cl", "cl_sliced"):
        assert v.stride(1) == 1


# --------------------------------------------------------------------------- the checkers on the CPU kernels


@pytest.mark.parametrize("case", FB_CPU, ids=lambda c: c.id)
def test_fb_checker_on_cpu_kernels(case, cpu_ops):
    fwd, bwd, _ = cpu_ops
    results = cc.check_fb(fwd, bwd, case, "cpu")
    assert len(results) == 2 and [m.split()[0] for _, m in results] == ["fwd", "bwdi"]
    assert all(ok for ok, _ in results), [m for ok, m in results if not ok]


@pytest.mark.parametrize("case", BW_CPU, ids=lambda c: c.id)
def test_bw_checker_on_cpu_kernels(case, cpu_ops):
    _, _, bw = cpu_ops
    ok, msg = cc.check_bw(bw, case, "cpu")
    assert ok, msg


def test_special_checks_on_cpu_kernels(cpu_ops):
    fwd, _, bw = cpu_ops
    results = cc.fb_nonfinite_checks(fwd, "cpu") + cc.bw_special_checks(bw, "cpu")
    assert len(results) == 4 and all(ok for ok, _ in results), results


def test_cpu_case_selection_covers_dtypes_and_layouts():
    for cases in (FB_CPU, BW_CPU):
        assert {c.dtype for c in cases} == set(cc.DTYPES)
    assert {c.layout for c in FB_CPU} == set(cc.LAYOUTS)
    assert any(c.tag.startswith("rand") for c in FB_CPU) and any(c.tag.startswith("rand") for c in BW_CPU)


# --------------------------------------------------------------------------- the checkers fail planted bugs

FB_BUG_CASE = next(c for c in FB_CPU if c.dtype == torch.float32 and c.cfg[0] > 0 and c.taps > 1)
BW_BUG_CASE = next(c for c in BW_CPU if c.dtype == torch.float32)


def _fb_bugs(fwd, bwd):
    def scaled(out):
        return out * (1 + 1e-3)

    def nondeterministic(op):
        calls = [0]

        def run(*a):
            calls[0] += 1
            out = op(*a)
            return out if calls[0] % 2 else out + 1e-7 * out.abs().max()
        return run
    return {
        "forward off by 1e-3": (lambda *a: scaled(fwd(*a)), bwd, "fwd"),
        "grad-input off by 1e-3": (fwd, lambda *a: scaled(bwd(*a)), "bwdi"),
        "forward without bias": (lambda x, w, b, *a: fwd(x, w, None, *a), bwd, None),
        "forward one tap short": (lambda x, w, b, *a: fwd(x, w * (torch.arange(w.numel()).reshape(w.shape) != 0),
                                                          b, *a), bwd, "fwd"),
        "forward output always contiguous": (lambda *a: fwd(*a).contiguous(), bwd, None),
        "forward not bitwise repeatable": (nondeterministic(fwd), bwd, "fwd"),
        "forward raises": (lambda *a: (_ for _ in ()).throw(RuntimeError("boom")), bwd, "fwd"),
    }


@pytest.mark.parametrize("bug", list(_fb_bugs(None, None)))
def test_fb_checker_catches(bug, cpu_ops):
    fwd, bwd, _ = cpu_ops
    bad_fwd, bad_bwd, which = _fb_bugs(fwd, bwd)[bug]
    case = FB_BUG_CASE
    if bug == "forward without bias":
        case = next(c for c in FB_CPU if c.dtype == torch.float32 and c.cfg[-1] and c.cfg[0] > 0)
    if bug == "forward output always contiguous":
        case = next(c for c in FB_CPU if c.layout == "cl" and c.cfg[0] > 0 and c.cfg[1] > 1)
    results = cc.check_fb(bad_fwd, bad_bwd, case, "cpu")
    failed = [m for ok, m in results if not ok]
    assert failed, f"the checker passed a planted bug ({bug}): {results}"
    if which:
        assert failed[0].startswith(which), failed


def _bw_bugs(bw):
    return {
        "grad-weight off by 1e-3": lambda *a: tuple(t * (1 + 1e-3) for t in bw(*a)),
        "grad-bias zero": lambda go, x, *a: (bw(go, x, *a)[0], torch.zeros_like(bw(go, x, *a)[1])),
        "compute_bias ignored": lambda go, x, k, s, p, d, cb: bw(go, x, k, s, p, d, True),
        "one kernel row short": lambda go, x, k, s, p, d, cb: (
            bw(go, x, k, s, p, d, cb)[0] * (torch.arange(k[0]).view(1, 1, -1, 1) != 0), bw(go, x, k, s, p, d, cb)[1]),
    }


@pytest.mark.parametrize("bug", list(_bw_bugs(None)))
def test_bw_checker_catches(bug, cpu_ops):
    _, _, bw = cpu_ops
    case = BW_BUG_CASE
    if bug == "one kernel row short":
        case = next(c for c in BW_CPU if c.dtype == torch.float32 and c.geom[5][0] > 1 and c.geom[3] >= 5)
    ok, msg = cc.check_bw(_bw_bugs(bw)[bug], case, "cpu")
    assert not ok, f"the checker passed a planted bug ({bug}): {msg}"


def test_special_checks_catch(cpu_ops):
    fwd, _, bw = cpu_ops

    def nan_everywhere(x, *a):
        return fwd(x, *a) * float("nan")

    def leaks(go, x, *a):  # inf / NaN anywhere in x reaches grad_weight; N = 0 gives ones
        gw, gb = bw(go, x, *a)
        gw = gw + x.sum() * 0 if x.numel() else gw + 1
        return gw, gb
    assert not all(ok for ok, _ in cc.fb_nonfinite_checks(nan_everywhere, "cpu"))
    assert [ok for ok, _ in cc.bw_special_checks(leaks, "cpu")] == [False, False]


# --------------------------------------------------------------------------- the child process


@pytest.mark.parametrize("sweep", ["fb", "bw"])
def test_child_process_cpu(sweep, cpu_ops):
    """The command line the GPU test starts per CONVEXT_DISABLE_FAST_PATHS value, on CPU tensors (where the
    switch changes nothing): it runs, checks cases, and reports the switch it ran with."""
    r = cc.run_child(sweep, ["--device", "cpu", "--fixed-only", "--max-numel", "1000"],
                  {"CONVEXT_DISABLE_FAST_PATHS": "1"}, timeout=600)
    cc.check_child(r, sweep, "CONVEXT_DISABLE_FAST_PATHS=1")


def test_child_process_reports_failures(tmp_path):
    """A failing child run makes check_child fail (not pass silently)."""
    class R:
        returncode = 1
        stdout = "FAIL fwd something: max_err=1\nSWEEP fb backend cuda device cpu passed 3 failed 1 env CONVEXT_DISABLE_FAST_PATHS=1\n"
        stderr = ""
    with pytest.raises(AssertionError, match="max_err"):
        cc.check_child(R, "fb", "CONVEXT_DISABLE_FAST_PATHS=1")
    R.returncode, R.stdout = 0, "SWEEP fb backend cuda device cpu passed 3 failed 0 env -\n"
    with pytest.raises(AssertionError, match="did not run with"):
        cc.check_child(R, "fb", "CONVEXT_DISABLE_FAST_PATHS=1")
    R.stdout = "Traceback ...\n"
    with pytest.raises(AssertionError, match="no result"):
        cc.check_child(R, "fb", "CONVEXT_DISABLE_FAST_PATHS=1")


def test_switches_report(monkeypatch):
    for k in cc.SWITCHES:
        monkeypatch.delenv(k, raising=False)
    assert cc.switches() == "-"
    monkeypatch.setenv("CONVEXT_CUDA_TC", "1")
    assert cc.switches() == "CONVEXT_CUDA_TC=1"
    assert os.environ["CONVEXT_CUDA_TC"] == "1"
