"""A machine runs the backends it is expected to have, or the run fails (issue 10).

On a GPU machine a failed CUDA build (or a broken Triton) used to pass by skipping: the `cuda`
parameters disappeared and explicit tests called pytest.skip. Now the parameters do not depend on
what is present (conftest.EXPECTED_BACKENDS), every (device, backend) test first calls
conftest.require_backend (an autouse fixture), which fails when the backend is missing, and
the test below names what is missing, and why, in one place. `pytest -m gpu` runs it on a GPU box;
pytest's header (conftest.pytest_report_header) prints the backends at the top of every run.
"""
import pytest
import torch

import convext
import conftest
from conftest import EXPECTED_BACKENDS, HAS_CUDA, device_backend_params, missing_backend_reason


def _report(device_type):
    return {b: missing_backend_reason(device_type, b) for b in EXPECTED_BACKENDS[device_type]}


def test_cpu_backends_present():
    missing = {b: why for b, why in _report("cpu").items() if why is not None}
    if set(missing) == {"triton"} and not conftest._triton_installed():
        pytest.skip("triton is not installed: the interpreted Triton backend cannot run")
    assert not missing, f"CPU backends missing: {missing}"


@pytest.mark.gpu
def test_gpu_backends_present():
    """On a machine with a GPU: the CUDA kernels were built and load, and Triton runs."""
    assert torch.cuda.is_available()
    have = convext.backends("cuda")
    missing = {b: why for b, why in _report("cuda").items() if why is not None}
    assert not missing, f"convext.backends('cuda') = {have}; missing on this GPU machine: {missing}"
    assert have == ["cuda", "triton", "torch"], have


def test_params_do_not_depend_on_what_is_present():
    """Every device's expected backends are collected (GPU ones gpu-marked), present or not."""
    ids = [p.id for p in device_backend_params()]
    assert ids[-3:] == ["cuda-cuda", "cuda-triton", "cuda-torch"]
    assert [i for i in ids if i.startswith("cpu-")] == [f"cpu-{b}" for b in EXPECTED_BACKENDS["cpu"]]
    for p in device_backend_params():
        assert (p.values[0] == "cuda") == any(m.name == "gpu" for m in p.marks), p.id


@pytest.fixture
def gpu_without_cuda_kernels(monkeypatch):
    """conftest as it sees a GPU machine whose extension has no CUDA kernels (no GPU needed)."""
    monkeypatch.setattr(conftest, "HAS_CUDA", True)
    monkeypatch.setattr(conftest, "backends_for", lambda d: ["triton", "torch"] if d == "cuda" else list(
        conftest.CPU_BACKENDS))
    monkeypatch.setattr(conftest, "ALLOW_MISSING", frozenset())


def test_a_missing_gpu_backend_fails(gpu_without_cuda_kernels):
    with pytest.raises(pytest.fail.Exception, match=r"backend 'cuda' is missing on cuda"):
        conftest.require_backend("cuda", "cuda")
    conftest.require_backend("cuda", "triton")  # present: returns
    conftest.require_backend("cuda", "auto")


def test_a_missing_gpu_backend_skips_only_when_allowed(gpu_without_cuda_kernels, monkeypatch):
    monkeypatch.setattr(conftest, "ALLOW_MISSING", frozenset({"cuda"}))
    with pytest.raises(pytest.skip.Exception, match=r"CONVEXT_TEST_ALLOW_MISSING"):
        conftest.require_backend("cuda", "cuda")


def test_the_report_header_names_a_missing_backend(gpu_without_cuda_kernels):
    lines = conftest.pytest_report_header(None)
    assert any("MISSING BACKEND 'cuda' on cuda" in line for line in lines), lines


def test_no_gpu_skips_cuda_tests():
    if HAS_CUDA:
        pytest.skip("a GPU is visible")
    with pytest.raises(pytest.skip.Exception, match="no CUDA GPU"):
        conftest.require_backend("cuda", "cuda")
