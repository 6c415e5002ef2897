"""Safe defaults until a GPU has run the code (issue 11).

- `auto` on CUDA chooses only what a GPU run has verified: the `cuda` backend (CUDA depthwise
  kernels; the separable op as their composite with torch's 1x1 conv), else `torch`; the Triton
  paths only with CONVEXT_AUTO_UNVERIFIED=1.
- `import convext` warns once when a GPU is visible but convext._C has no CUDA kernels.
- setup.py builds csrc/cuda whenever torch is a CUDA build and nvcc is found, GPU or not.

None of this needs a GPU: the choice is a pure function of (device type, op, availability,
switch), and the wiring is checked with a stand-in for a CUDA tensor.
"""
import importlib.util
import itertools
import os
import subprocess
import sys
import types
import warnings

import pytest
import torch

import convext
from convext import _backend, _ext


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = ("depthwise_conv2d", "depthwise_separable_conv2d", "depthwise_conv_transpose2d")
SEP = "depthwise_separable_conv2d"


def usable(cuda=False, triton=False, cpu=False):
    return {"cuda": cuda, "triton": triton, "cpu": cpu, "torch": True}


def cuda_tensor_stand_in():
    """What _auto reads of a CUDA tensor (its device), without a GPU."""
    return types.SimpleNamespace(device=torch.device("cuda", 0))


# --------------------------------------------------------------------------- the auto choice


@pytest.mark.parametrize("op", OPS)
def test_cuda_with_cuda_kernels_takes_the_cuda_backend(op):
    assert _backend.auto_choice("cuda", op, usable(cuda=True, triton=True)) == "cuda"
    assert _backend.auto_choice("cuda", op, usable(cuda=True, triton=False)) == "cuda"


@pytest.mark.parametrize("op", OPS)
def test_cuda_without_cuda_kernels_takes_torch_not_triton(op):
    assert _backend.auto_choice("cuda", op, usable(cuda=False, triton=True)) == "torch"
    assert _backend.auto_choice("cuda", op, usable()) == "torch"


@pytest.mark.parametrize("op", OPS)
def test_switch_turns_the_unverified_paths_back_on(op):
    choose = lambda **u: _backend.auto_choice("cuda", op, usable(**u), unverified=True)  # noqa: E731
    # The earlier defaults: the fused Triton kernel first for the separable op, CUDA first otherwise.
    assert choose(cuda=True, triton=True) == ("triton" if op == SEP else "cuda")
    assert choose(cuda=False, triton=True) == "triton"
    assert choose(cuda=True, triton=False) == "cuda"
    assert choose() == "torch"


@pytest.mark.parametrize("op", OPS)
def test_auto_never_takes_triton_without_the_switch(op):
    for cuda, triton, cpu in itertools.product((False, True), repeat=3):
        u = usable(cuda=cuda, triton=triton, cpu=cpu)
        for device_type in ("cuda", "cpu", "meta"):
            for ks, layout in (((3, 3), False), ((3, 3), True), ((5, 5), False), ((9, 9), True)):
                got = _backend.auto_choice(device_type, op, u, kernel_size=ks, dilation=(1, 1),
                                           channels_last=layout)
                assert got != "triton", (device_type, op, u, ks, layout)
                if device_type == "cuda":
                    assert got == ("cuda" if cuda else "torch")


def test_cpu_choice_unchanged_and_ignores_the_switch():
    u = usable(cpu=True, triton=True)
    for unverified in (False, True):
        c = lambda op, ks, d=(1, 1), cl=False: _backend.auto_choice(  # noqa: E731
            "cpu", op, u, unverified=unverified, kernel_size=ks, dilation=d, channels_last=cl)
        assert c("depthwise_conv2d", (5, 5)) == "cpu"
        assert c("depthwise_conv2d", (3, 3)) == "cpu"
        assert c("depthwise_conv2d", (3, 3), cl=True) == "torch"
        assert c("depthwise_conv2d", (3, 3), d=(2, 2), cl=True) == "cpu"
        assert c(SEP, (3, 3)) == "torch"
        assert c(SEP, (7, 7)) == "cpu"
        assert c("depthwise_conv_transpose2d", None) == "cpu"
    assert _backend.auto_choice("cpu", "depthwise_conv2d", usable(triton=True), unverified=True,
                                kernel_size=(5, 5), dilation=(1, 1)) == "torch"


@pytest.mark.parametrize("device_type", ["meta", "mps", "xpu"])
def test_other_devices_take_torch(device_type):
    every = usable(cuda=True, triton=True, cpu=True)
    for op in OPS:
        assert _backend.auto_choice(device_type, op, every, unverified=True) == "torch"


def test_unknown_op_is_an_error():
    with pytest.raises(ValueError, match="unknown op"):
        _backend.auto_choice("cuda", "separable", usable(cuda=True))


# --------------------------------------------------------------------------- the wiring of _auto


@pytest.mark.parametrize("has_cuda_kernels", [True, False], ids=["cuda-kernels", "no-cuda-kernels"])
@pytest.mark.parametrize("switch", [False, True], ids=["default", "unverified"])
@pytest.mark.parametrize("op", OPS)
def test_auto_on_a_cuda_tensor(monkeypatch, op, switch, has_cuda_kernels):
    """_backend._auto / resolve("auto") read the import-time availability and switch."""
    monkeypatch.setitem(_backend._USABLE, "cuda", usable(cuda=has_cuda_kernels, triton=True))
    monkeypatch.setattr(_backend, "AUTO_UNVERIFIED", switch)
    x = cuda_tensor_stand_in()
    if not switch:
        expected = "cuda" if has_cuda_kernels else "torch"
    elif has_cuda_kernels:
        expected = "triton" if op == SEP else "cuda"
    else:
        expected = "triton"
    assert _backend._auto(x, op, (3, 3), (1, 1)) == expected
    assert _backend.resolve("auto", x, op, (3, 3), (1, 1)) == expected


def test_import_time_availability_matches_the_extension():
    """What _auto consults is what the extension and Triton offer in this process."""
    for t in ("cpu", "cuda"):
        for b in _backend.BACKENDS:
            assert _backend._USABLE[t][b] == _backend.availability(b, t)[0]
    assert _backend._USABLE["cuda"]["cuda"] == _ext.compiled_has_kernel("CUDA")


def _run_python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "CONVEXT_AUTO_UNVERIFIED"}
    full_env.update(env)
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_switch_is_read_from_the_environment_at_import():
    code = "import convext._backend as b; print(b.AUTO_UNVERIFIED)"
    assert _run_python(code, CONVEXT_AUTO_UNVERIFIED="1") == "True"
    assert _run_python(code) == "False"


def test_auto_compiles_without_graph_breaks():
    """The CUDA branch of the choice, as _auto calls it, and the whole CPU op, in one fullgraph."""
    torch._dynamo.reset()

    def fn(x, w):
        name = _backend.auto_choice("cuda", SEP, _backend._USABLE["cuda"], unverified=_backend.AUTO_UNVERIFIED)
        y = convext.depthwise_conv2d(x, w, padding=1)
        return y + (1.0 if name == "cuda" else 2.0)

    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 1, 3, 3)
    out = torch.compile(fn, backend="eager", fullgraph=True)(x, w)
    torch.testing.assert_close(out, fn(x, w))


@pytest.mark.gpu
@pytest.mark.parametrize("op", OPS)
def test_auto_on_this_gpu(op):
    x = torch.empty(1, 2, 4, 4, device="cuda")
    if _backend.AUTO_UNVERIFIED:
        pytest.skip("CONVEXT_AUTO_UNVERIFIED is set")
    expected = "cuda" if "cuda" in convext.backends("cuda") else "torch"
    assert _backend.resolve("auto", x, op, (3, 3), (1, 1)) == expected


# --------------------------------------------------------------------------- the import-time warning


@pytest.fixture
def fresh_warning_state(monkeypatch):
    monkeypatch.setattr(_ext, "_warned", False)
    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "13.0")
    return monkeypatch


def test_warns_once_with_a_gpu_and_no_cuda_kernels(fresh_warning_state):
    mp = fresh_warning_state
    mp.setattr(torch.cuda, "is_available", lambda: True)
    mp.setattr(_ext, "compiled_has_kernel", lambda key: False)
    with pytest.warns(UserWarning, match="GPU is visible") as rec:
        assert _ext.warn_if_gpu_without_cuda_kernels()
    msg = str(rec[0].message)
    assert "without CUDA kernels" in msg and "setup.py build_ext --inplace" in msg and "CONVEXT_SKIP_CUDA" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _ext.warn_if_gpu_without_cuda_kernels()  # once


def test_warning_names_a_missing_extension(fresh_warning_state):
    mp = fresh_warning_state
    mp.setattr(torch.cuda, "is_available", lambda: True)
    mp.setattr(_ext, "COMPILED_ERROR", "the compiled extension convext._C could not be loaded (boom)")
    msg = _ext.missing_cuda_kernels_message()
    assert "could not be loaded (boom)" in msg and "build_ext" in msg


def test_no_warning_without_a_gpu_or_with_cuda_kernels(fresh_warning_state):
    mp = fresh_warning_state
    mp.setattr(_ext, "compiled_has_kernel", lambda key: False)
    mp.setattr(torch.cuda, "is_available", lambda: False)
    assert _ext.missing_cuda_kernels_message() is None

    def no_driver_query():
        raise AssertionError("torch.cuda.is_available() asked although the CUDA kernels are there")

    mp.setattr(_ext, "compiled_has_kernel", lambda key: key == "CUDA")
    mp.setattr(torch.cuda, "is_available", no_driver_query)
    assert _ext.missing_cuda_kernels_message() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _ext.warn_if_gpu_without_cuda_kernels()

    mp.setattr(_ext, "compiled_has_kernel", lambda key: False)
    mp.setattr(torch.version, "cuda", None)  # CPU-only torch: nothing to rebuild
    assert _ext.missing_cuda_kernels_message() is None


_IMPORT_WITH_A_FAKE_GPU = r"""
import warnings
import torch
torch.cuda.is_available = lambda: True
real = torch._C._dispatch_has_kernel_for_dispatch_key
torch._C._dispatch_has_kernel_for_dispatch_key = (
    lambda op, key: False if op.startswith("convext::") and key == "CUDA" else real(op, key))
ours = lambda rec: sum(issubclass(w.category, UserWarning) and "GPU is visible" in str(w.message) for w in rec)
with warnings.catch_warnings(record=True) as at_import:
    warnings.simplefilter("always")
    import convext
with warnings.catch_warnings(record=True) as again:
    warnings.simplefilter("always")
    convext._ext.warn_if_gpu_without_cuda_kernels()
print(ours(at_import), ours(again), "cuda" in convext.backends("cuda"))
"""


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch never warns")
def test_import_warns_once_in_a_fresh_process():
    assert _run_python(_IMPORT_WITH_A_FAKE_GPU) == "1 0 False"


def test_import_without_a_gpu_does_not_warn():
    code = ("import warnings\nwith warnings.catch_warnings(record=True) as rec:\n"
            "    warnings.simplefilter('always')\n    import convext\n"
            "print(sum('GPU is visible' in str(w.message) for w in rec))")
    expected = "0" if _ext.missing_cuda_kernels_message() is None else "1"
    assert _run_python(code) == expected


# --------------------------------------------------------------------------- setup.py


@pytest.fixture(scope="module")
def setup_py():
    """setup.py as a module (its setup() call runs only as __main__), the environment restored."""
    saved = dict(os.environ)
    try:
        spec = importlib.util.spec_from_file_location("convext_setup_under_test", os.path.join(ROOT, "setup.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def toolkit(tmp_path):
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir()
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(0o755)
    return str(tmp_path)


@pytest.mark.parametrize("env,want", [
    ({}, True),                                   # no GPU and no flag needed
    ({"CONVEXT_FORCE_CUDA": "1"}, True),          # still accepted (.ci/run sets it)
    ({"CONVEXT_SKIP_CUDA": "1"}, False),
    ({"CONVEXT_SKIP_CUDA": "true"}, False),
    ({"CONVEXT_SKIP_CUDA": "1", "CONVEXT_FORCE_CUDA": "1"}, False),
    ({"CONVEXT_SKIP_CUDA": "0"}, True),
])
def test_want_cuda_with_a_cuda_torch_and_a_toolkit(setup_py, toolkit, monkeypatch, env, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a Docker build: no GPU
    got, why = setup_py._want_cuda(env, torch_cuda="13.0", cuda_home=toolkit)
    assert got is want, why


@pytest.mark.parametrize("env", [{}, {"CONVEXT_FORCE_CUDA": "1"}])
def test_want_cuda_needs_a_cuda_torch_and_nvcc(setup_py, toolkit, tmp_path, env):
    assert setup_py._want_cuda(env, torch_cuda=None, cuda_home=toolkit) == (False, "torch is a CPU-only build")
    got, why = setup_py._want_cuda(env, torch_cuda="13.0", cuda_home=None)
    assert not got and "CUDA_HOME" in why
    empty = tmp_path / "no_toolkit"
    empty.mkdir()
    got, why = setup_py._want_cuda(env, torch_cuda="13.0", cuda_home=str(empty))
    assert not got and "nvcc" in why


def test_want_cuda_here(setup_py, monkeypatch):
    """This process: the CUDA build of torch and /usr/local/cuda, no GPU -> CUDA kernels are built."""
    from torch.utils import cpp_extension
    monkeypatch.delenv("CONVEXT_SKIP_CUDA", raising=False)
    home = cpp_extension.CUDA_HOME
    expected = torch.version.cuda is not None and home is not None and os.path.exists(os.path.join(home, "bin", "nvcc"))
    assert setup_py._want_cuda()[0] is expected


def test_cuda_arch_list(setup_py):
    arch = setup_py._cuda_arch_list
    every = {(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (10, 3), (12, 0), (12, 1)}
    assert arch({}, visible=[], supported=every) == ("8.0;9.0;10.0;12.0+PTX", "default list (no GPU visible)")
    assert arch({}, visible=[], supported=None)[0] == "8.0;9.0;10.0;12.0+PTX"
    assert arch({}, visible=[], supported={(8, 0), (8, 6), (9, 0)})[0] == "8.0;9.0+PTX"  # an older nvcc
    assert arch({}, visible=[(9, 0)], supported=every) == ("9.0+PTX", "the visible GPUs")
    assert arch({}, visible=[(9, 0), (8, 6), (9, 0)], supported=every)[0] == "8.6;9.0+PTX"
    assert arch({}, visible=[(7, 5), (9, 0)], supported=every)[0] == "9.0+PTX"
    got, why = arch({}, visible=[(7, 5)], supported=every)
    assert got is None and "8.0" in why
    assert arch({"TORCH_CUDA_ARCH_LIST": "9.0"}, visible=[(8, 0)], supported=every) == ("9.0", "TORCH_CUDA_ARCH_LIST")
    assert arch({"TORCH_CUDA_ARCH_LIST": "8.0 9.0a;12.0+PTX"}, visible=[], supported=every)[0] == "8.0 9.0a;12.0+PTX"
    assert arch({"TORCH_CUDA_ARCH_LIST": "Hopper"}, visible=[], supported=every)[0] == "Hopper"
    for old in ("7.5", "8.0;7.5", "6.1+PTX"):
        with pytest.raises(SystemExit, match="8.0 or newer"):
            arch({"TORCH_CUDA_ARCH_LIST": old}, visible=[], supported=every)


def test_nvcc_here_builds_the_default_archs(setup_py):
    from torch.utils import cpp_extension
    home = cpp_extension.CUDA_HOME
    if home is None or not os.path.exists(os.path.join(home, "bin", "nvcc")):
        pytest.skip("no nvcc")
    supported = setup_py._nvcc_archs(home)
    assert supported is not None and {(8, 0), (9, 0)} <= supported


def test_make_extension_builds_cuda_without_a_gpu(setup_py, monkeypatch):
    from torch.utils import cpp_extension
    home = cpp_extension.CUDA_HOME
    if torch.version.cuda is None or home is None or not os.path.exists(os.path.join(home, "bin", "nvcc")):
        pytest.skip("needs a CUDA build of torch and nvcc")
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("CONVEXT_SKIP_CUDA", "CONVEXT_FORCE_CUDA", "TORCH_CUDA_ARCH_LIST"):
        monkeypatch.setenv(name, "")  # recorded, so that teardown restores what make_extension sets
        monkeypatch.delenv(name)
    ext = setup_py.make_extension()
    assert any(s.endswith(".cu") for s in ext.sources)
    assert os.environ["TORCH_CUDA_ARCH_LIST"].startswith("8.0;9.0")
    monkeypatch.setenv("CONVEXT_SKIP_CUDA", "1")
    ext = setup_py.make_extension()
    assert not any(s.endswith(".cu") for s in ext.sources)
