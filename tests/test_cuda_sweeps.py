"""The raw CUDA depthwise ops (forward, grad-input, grad-weight) against float64 on fixed cases (one per
kernel path) and seeded random sweeps, every dtype and layout (cases and checkers: tests/cuda_cases.py,
formerly bench/cuda_selfcheck_*.py):

  * in this process, per case: as built (fast paths on), with the opt-in non-finite fix-up passes
    (CONVEXT_CUDA_NONFINITE=1, read on every call) and, for large kernels (kH*kW >= 81), with the opt-in
    tensor-core path (CONVEXT_CUDA_TC=1, read on every call);
  * without the fast paths (CONVEXT_DISABLE_FAST_PATHS=1): the extension reads that switch once per
    process, so the whole sweep runs in a child process (`python tests/cuda_cases.py fb|bw`) with it set.

Size: CONVEXT_TEST_CUDA_RANDOM random geometries per sweep (default 60: 2566 test items, two of them child
processes (1954 and 244 checks); estimated at a minute or two on an H200, not yet timed on one),
CONVEXT_TEST_CUDA_SEED (default 0) shifts both sweeps' seeds.
tools/gpu_check.sh runs the same cases and checkers in its correctness step (sized to its time budget,
the Triton ops too) and leaves this file out of its `pytest -m gpu` step.
"""
import os

import pytest

import cuda_cases as cc
from conftest import require_backend

pytestmark = pytest.mark.gpu

N_RANDOM = int(os.environ.get("CONVEXT_TEST_CUDA_RANDOM", "60"))
SEED = int(os.environ.get("CONVEXT_TEST_CUDA_SEED", "0"))
FB_SEED, BW_SEED = SEED, 1234 + SEED

FB = list(cc.fb_cases(N_RANDOM, FB_SEED))
BW = list(cc.bw_cases(N_RANDOM, BW_SEED))

# (name, environment, which cases): the switches the extension reads on every call
IN_PROCESS = [
    ("default", {}, lambda c: True),
    ("nonfinite", {"CONVEXT_CUDA_NONFINITE": "1"}, lambda c: True),
    ("tc", {"CONVEXT_CUDA_TC": "1"}, lambda c: c.taps >= cc.TC_TAPS),
]
# CONVEXT_DISABLE_FAST_PATHS values, each a child process: 1 = every fast path off
NO_FAST_PATHS = ["1"]


def _params(cases):
    return [pytest.param(env, c, id=f"{name}-{c.id}") for name, env, keep in IN_PROCESS for c in cases if keep(c)]


def _cuda_ops(monkeypatch, env):
    require_backend("cuda", "cuda")
    if os.environ.get("CONVEXT_DISABLE_FAST_PATHS") not in (None, "", "0"):
        # read once per process: this process's kernels are not the default ones
        print(f"note: CONVEXT_DISABLE_FAST_PATHS={os.environ['CONVEXT_DISABLE_FAST_PATHS']} in this process")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return cc.ops("cuda")


def _assert_all(results):
    bad = [msg for ok, msg in results if not ok]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("env,case", _params(FB))
def test_forward_and_grad_input(env, case, monkeypatch):
    fwd, bwd, _ = _cuda_ops(monkeypatch, env)
    _assert_all(cc.check_fb(fwd, bwd, case, "cuda"))


@pytest.mark.parametrize("env,case", _params(BW))
def test_grad_weight(env, case, monkeypatch):
    _, _, bw = _cuda_ops(monkeypatch, env)
    _assert_all([cc.check_bw(bw, case, "cuda")])


@pytest.mark.parametrize("env", [e for _, e, _ in IN_PROCESS], ids=[n for n, _, _ in IN_PROCESS])
def test_nonfinite_and_empty(env, monkeypatch):
    """inf / NaN propagate in the forward as torch's; non-finite input outside every window stays out of
    grad_weight; N = 0 gives a zero grad_weight."""
    fwd, _, bw = _cuda_ops(monkeypatch, env)
    _assert_all(cc.fb_nonfinite_checks(fwd, "cuda") + cc.bw_special_checks(bw, "cuda"))


@pytest.mark.parametrize("disable", NO_FAST_PATHS, ids=[f"disable_fast_paths={v}" for v in NO_FAST_PATHS])
@pytest.mark.parametrize("sweep", ["fb", "bw"], ids=["forward_grad_input", "grad_weight"])
def test_sweep_without_fast_paths(sweep, disable):
    """The whole sweep (fixed + random cases, the special checks) in a child process started with
    CONVEXT_DISABLE_FAST_PATHS set: the fallback kernels of every fast path."""
    require_backend("cuda", "cuda")
    seed = FB_SEED if sweep == "fb" else BW_SEED
    r = cc.run_child(sweep, ["--random", str(N_RANDOM), "--seed", str(seed)],
                     {"CONVEXT_DISABLE_FAST_PATHS": disable}, timeout=900)
    cc.check_child(r, sweep, f"CONVEXT_DISABLE_FAST_PATHS={disable}")
