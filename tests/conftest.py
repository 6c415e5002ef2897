"""Shared test machinery: device/backend parametrization, float64 references, the
low-precision error rule, poisoned layouts.

The same suite runs in CPU CI and on a GPU box. Without a GPU, the Triton kernels run
on CPU tensors through the Triton interpreter, so TRITON_INTERPRET must be set before
Triton (and therefore convext.triton) is first imported: that happens here, at the very
top of the first module pytest imports.
"""
import os
import sys

import torch

if not torch.cuda.is_available():
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") is None:
        # triton reads the variable lazily, but warn: something imported it first
        print("conftest: triton imported before TRITON_INTERPRET was set", file=sys.stderr)
    os.environ.setdefault("TRITON_INTERPRET", "1")
# backend="auto" follows the static rule in tests (deterministic); tests/test_autotune.py measures explicitly.
os.environ.setdefault("CONVEXT_AUTOTUNE", "0")

import math  # noqa: E402

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import convext  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

ACTIVATIONS = (None, "relu", "relu6", "silu", "gelu", "hardswish")


# --------------------------------------------------------------------------- markers


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped when none is visible)")
    # float32 is compared at IEEE precision on both sides: cuDNN may or may not pick a TF32
    # algorithm for torch's own convs (allow_tf32 only permits it), while the fused Triton
    # separable kernel honours the flag on every call, so with the flag on the torch-relative
    # bound would compare TF32 with IEEE.  The TF32 path is checked on its own
    # (test_depthwise_separable_conv2d.py::test_tf32_when_allowed).
    torch.backends.cudnn.allow_tf32 = False
    config.addinivalue_line("markers", "slow_interpreter: runs Triton through its CPU interpreter")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# --------------------------------------------------------------------------- backends


def backends_for(device):
    """convext.backends(device), or [] when that device type does not exist here."""
    if device == "cuda" and not HAS_CUDA:
        return []
    return list(convext.backends(device))


CPU_BACKENDS = backends_for("cpu")
CUDA_BACKENDS = backends_for("cuda")

# The backends each device must have. A GPU machine runs every GPU test on "cuda", "triton" and
# "torch": one that is missing (a failed CUDA build, a broken Triton) fails those tests loudly, it
# never just drops their parameters. The CPU needs "cpu" and "torch", and "triton" through the
# interpreter (TRITON_INTERPRET=1, set above when no GPU is visible), unless Triton is not installed
# at all, which skips (visibly) instead.
EXPECTED_BACKENDS = {
    "cpu": ("triton", "cpu", "torch") if TRITON_INTERPRETED else ("cpu", "torch"),
    "cuda": ("cuda", "triton", "torch"),
}
# Explicit opt-out for a machine meant to run without some backend (comma-separated names, e.g.
# CONVEXT_TEST_ALLOW_MISSING=triton): those tests then skip, saying why, instead of failing.
ALLOW_MISSING = frozenset(filter(None, os.environ.get("CONVEXT_TEST_ALLOW_MISSING", "").replace(" ", "").split(",")))


def _triton_installed():
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def missing_backend_reason(device, backend):
    """None when `backend` serves `device` tensors here, else convext's own explanation."""
    device_type = torch.device(device).type
    if backend == "auto" or backend in backends_for(device_type):
        return None
    if device_type == "cuda" and not HAS_CUDA:
        return "no CUDA GPU visible"
    from convext import _backend
    return _backend.availability(backend, device_type)[1] or "not listed by convext.backends()"


def require_backend(device, backend):
    """Call at the start of a test that runs `backend` on `device`.

    No GPU: cuda tests skip. Backend present: returns. Missing: fails, naming convext's reason,
    unless the backend is in CONVEXT_TEST_ALLOW_MISSING or is Triton with Triton not installed
    (then a visible skip)."""
    device_type = torch.device(device).type
    if device_type == "cuda" and not HAS_CUDA:
        pytest.skip("no CUDA GPU visible")
    why = missing_backend_reason(device_type, backend)
    if why is None:
        return
    if backend in ALLOW_MISSING:
        pytest.skip(f"backend {backend!r} missing on {device_type} (allowed by CONVEXT_TEST_ALLOW_MISSING): {why}")
    if backend == "triton" and not _triton_installed():
        pytest.skip(f"backend 'triton' missing on {device_type}: triton is not installed")
    pytest.fail(f"backend {backend!r} is missing on {device_type} on this machine, so this test cannot run "
                f"(set CONVEXT_TEST_ALLOW_MISSING={backend} to skip instead): {why}", pytrace=False)


@pytest.fixture(autouse=True)
def _require_parametrized_backend(request):
    """Every test parametrized by (device, backend), or gpu-marked and parametrized by backend, runs
    only when that backend is really there: else it fails (conftest.require_backend)."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None:
        return
    device, backend = callspec.params.get("device"), callspec.params.get("backend")
    if device is None and request.node.get_closest_marker("gpu") is not None:
        device = "cuda"  # gpu-marked tests parametrized by backend alone run on the GPU
    if isinstance(device, str) and isinstance(backend, str) and device in ("cpu", "cuda"):
        require_backend(device, backend)


def pytest_report_header(config):
    """First lines of every run (CI log, GPU check): which backends this machine has."""
    lines = [f"convext backends: cpu {CPU_BACKENDS}; cuda {CUDA_BACKENDS if HAS_CUDA else 'no GPU visible'}"
             f"; TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')}"]
    for device_type, expected in EXPECTED_BACKENDS.items():
        if device_type == "cuda" and not HAS_CUDA:
            continue
        for b in expected:
            why = missing_backend_reason(device_type, b)
            if why is not None:
                lines.append(f"convext: MISSING BACKEND {b!r} on {device_type} (its tests fail): {why}")
    return lines


def interpreted(device, backend):
    """True when the Triton backend runs through the (slow) CPU interpreter."""
    return backend == "triton" and torch.device(device).type == "cpu"


def device_backend_params(cpu_filter=None):
    """pytest params (device, backend) for every backend every device must have.

    The list does not depend on what this machine has (EXPECTED_BACKENDS): CUDA params carry the
    gpu marker and skip without a GPU; on a GPU machine a missing backend fails its tests
    (require_backend, applied to every (device, backend) test by an autouse fixture), so a failed
    CUDA build cannot pass by skipping. `cpu_filter(backend)` may drop CPU backends.
    """
    params = []
    for b in EXPECTED_BACKENDS["cpu"]:
        if cpu_filter is None or cpu_filter(b):
            marks = [pytest.mark.slow_interpreter] if interpreted("cpu", b) else []
            params.append(pytest.param("cpu", b, id=f"cpu-{b}", marks=marks))
    for b in EXPECTED_BACKENDS["cuda"]:
        params.append(pytest.param("cuda", b, id=f"cuda-{b}", marks=pytest.mark.gpu))
    return params


@pytest.fixture(scope="session")
def cpu_backends():
    return list(convext.backends("cpu"))


@pytest.fixture(scope="session")
def cuda_backends():
    if not HAS_CUDA:
        pytest.skip("no CUDA GPU visible")
    return list(convext.backends("cuda"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------- references


def _double(t):
    return None if t is None else t.detach().double()


def ref_depthwise_conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """float64 F.conv2d on upcast copies of the inputs."""
    return F.conv2d(_double(x), _double(w), _double(b), stride, padding, dilation, groups=x.shape[-3])


def activation_fn(name):
    return {
        None: lambda t: t,
        "relu": F.relu,
        "relu6": F.relu6,
        "silu": F.silu,
        "gelu": F.gelu,  # exact (erf) form, as nn.GELU()
        "hardswish": F.hardswish,  # x * relu6(x + 3) / 6, as nn.Hardswish() (MobileNetV3)
    }[name]


def torch_separable(x, dw_w, pw_w, dw_b=None, pw_b=None, stride=1, padding=0, dilation=1,
                    depthwise_activation=None, pointwise_activation=None):
    """The composite the separable op must equal, in the inputs' own dtype."""
    z = F.conv2d(x, dw_w, dw_b, stride, padding, dilation, groups=x.shape[-3])
    z = activation_fn(depthwise_activation)(z)
    y = F.conv2d(z, pw_w, pw_b)
    return activation_fn(pointwise_activation)(y)


def with_grads(fn, tensors, grad_out_like=None, grad_out=None, seed=1, requires=None):
    """Runs fn(*tensors) on leaf copies; returns (out, grads, grad_out).

    `tensors` may contain None (absent bias); their grads are None. `requires` (one bool per
    tensor, default all True) says which leaves require grad: the others are frozen (requires_grad
    False, as frozen weights or a frozen input in training) and their grads are None. The output
    must require grad exactly when some leaf does. The same grad_out (random, from `seed`) is used
    for every call given the same output shape.
    """
    if requires is None:
        requires = [True] * len(tensors)
    # detach(), not clone(): keeps the exact strides of poisoned views
    leaves = [None if t is None else t.detach().requires_grad_(bool(r)) for t, r in zip(tensors, requires)]
    live = [t for t in leaves if t is not None and t.requires_grad]
    out = fn(*leaves)
    assert out.requires_grad == bool(live), (
        f"output requires_grad={out.requires_grad} with {len(live)} input(s) requiring grad")
    if grad_out is None:
        g = torch.Generator().manual_seed(seed)
        grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    if not live:
        return out.detach(), [None] * len(leaves), grad_out
    go = grad_out
    if go.device != out.device or go.dtype != out.dtype:
        go = go.to(device=out.device, dtype=out.dtype)
    grads = torch.autograd.grad(out, live, go, allow_unused=True)
    # an input that did not reach the output (possible only for empty outputs) has grad 0
    grads = {id(t): torch.zeros_like(t) if g is None else g for g, t in zip(grads, live)}
    full = [grads.get(id(t)) if t is not None else None for t in leaves]
    return out.detach(), full, grad_out


def check_op(device, ours, theirs, tensors, grad_names, grad_layout=None, check_torch_dtype=True,
             requires=None, yardstick=None):
    """Forward + backward of `ours` vs `theirs` in float64 (and `theirs` at the input's dtype, the
    error bound's yardstick): output dtype, device and memory format, then the output and every
    gradient (None exactly where the reference has none, else the input's dtype).

    `requires`: which tensors require grad (default all; see with_grads). `yardstick(t64)`, when
    given, replaces torch at the input's dtype as the bound's yardstick: it maps each float64
    reference (output, gradients) to the value an emulation of the expected rounding gives."""
    x = tensors[0]
    ref, ref_grads, go = with_grads(theirs, [t if t is None else t.double() for t in tensors],
                                    requires=requires)
    go = go.to(device=device, dtype=x.dtype)
    if grad_layout is not None and go.dim() == 4:
        go = to_layout(go, grad_layout)
    out, grads, _ = with_grads(ours, list(tensors), grad_out=go, requires=requires)
    assert out.dtype == x.dtype and out.device == x.device
    assert_memory_format(out, x)
    torch_out, torch_grads = None, [None] * len(tensors)
    if yardstick is not None:
        torch_out = yardstick(ref)
        torch_grads = [None if g is None else yardstick(g) for g in ref_grads]
    elif x.dtype != torch.float64 and check_torch_dtype:
        torch_out, torch_grads, _ = with_grads(theirs, list(tensors), grad_out=go, requires=requires)
    assert_matches(out, ref, torch_out, name="output")
    for name, g, rg, tg in zip(grad_names, grads, ref_grads, torch_grads):
        if rg is None:
            assert g is None, f"{name}: a gradient where the reference has none"
            continue
        assert g is not None, f"{name}: missing"
        assert g.dtype == x.dtype, f"{name}: dtype {g.dtype}"
        assert_matches(g, rg, tg, dtype=x.dtype, name=name)
    return out, grads


def check_depthwise(device, backend, x, w, b, stride, padding, dilation, grad_layout=None,
                    check_torch_dtype=True, requires=None, yardstick=None):
    """Forward + backward through convext vs float64 F.conv2d (and torch at x's dtype)."""
    C = x.shape[-3]

    def ours(x_, w_, b_):
        return convext.depthwise_conv2d(x_, w_, b_, stride, padding, dilation, backend=backend)

    def theirs(x_, w_, b_):
        return F.conv2d(x_, w_, b_, stride, padding, dilation, groups=C)

    return check_op(device, ours, theirs, (x, w, b), ("grad_input", "grad_weight", "grad_bias"),
                    grad_layout, check_torch_dtype, requires, yardstick)


def bf16_truncated(t64):
    """float64 -> bfloat16 by truncation (round toward zero), as the Triton interpreter (triton
    3.8) stores bf16: the yardstick of interpreted bf16 results, in place of torch's
    round-to-nearest (as test_tf32_when_allowed bounds TF32 by an emulation)."""
    bits = t64.float().contiguous().view(torch.int32) & ~0xFFFF
    return bits.view(torch.float32).double()


# --------------------------------------------------------------------------- error rule

# eps of the rule below, relative to the reference's norm; small against any real bug
# (a missing tap, a wrong border or channel is an O(1/k) relative error or worse).
RULE_EPS = {
    torch.float64: 1e-12,
    torch.float32: 1e-6,
    torch.float16: 2e-3,
    torch.bfloat16: 1e-2,
}
RULE_FACTOR = 4.0


def rel_l2(a, b):
    a, b = a.double(), b.double()
    nb = torch.linalg.vector_norm(b).item()
    na = torch.linalg.vector_norm(a - b).item()
    if nb == 0.0:
        return na
    return na / nb


def max_abs(a, b):
    if a.numel() == 0:
        return 0.0
    return (a.double() - b.double()).abs().max().item()


def assert_matches(actual, ref64, torch_lowp=None, dtype=None, name="output"):
    """The flash-attention rule, as relative L2 and as max-abs error:

        err(actual vs float64 ref) <= 4 * err(torch at that dtype vs float64 ref) + eps

    `torch_lowp` is torch's own result at the tested dtype; without it (float64, or a
    backend that *is* torch) only eps applies. Also: same shape, no NaN/Inf where the
    reference is finite.
    """
    assert actual is not None, f"{name}: missing"
    assert tuple(actual.shape) == tuple(ref64.shape), f"{name}: shape {tuple(actual.shape)} != {tuple(ref64.shape)}"
    if actual.numel() == 0:
        return
    dtype = dtype or actual.dtype
    actual = actual.detach().cpu().double()
    ref64 = ref64.detach().cpu().double()
    assert torch.isfinite(actual).all(), f"{name}: non-finite values ({(~torch.isfinite(actual)).sum().item()} of {actual.numel()})"
    eps = RULE_EPS[dtype]
    err_l2 = rel_l2(actual, ref64)
    bound_l2 = eps
    scale = ref64.abs().max().item()
    err_max = max_abs(actual, ref64)
    bound_max = eps * max(scale, 1e-30)
    if torch_lowp is not None:
        torch_lowp = torch_lowp.detach().cpu().double()
        bound_l2 += RULE_FACTOR * rel_l2(torch_lowp, ref64)
        bound_max += RULE_FACTOR * max_abs(torch_lowp, ref64)
    assert err_l2 <= bound_l2, f"{name}: relative L2 error {err_l2:.3e} > bound {bound_l2:.3e} ({dtype})"
    assert err_max <= bound_max, (
        f"{name}: max abs error {err_max:.3e} > bound {bound_max:.3e} ({dtype}); "
        f"worst at {tuple(int(i) for i in torch.nonzero((actual - ref64).abs() == err_max)[0])}")


# --------------------------------------------------------------------------- layouts

LAYOUTS = ("contiguous", "channels_last", "sliced", "sliced_channels_last", "offset_view", "unbatched")


def poisoned(shape, dtype, device, memory_format=torch.contiguous_format):
    """A buffer full of NaN (or a huge value for integer-free dtypes that cannot hold NaN)."""
    buf = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
    buf.fill_(float("nan"))
    return buf


def to_layout(x, layout):
    """The values of the 4-D tensor `x` in the given layout.

    Strided views are cut out of NaN-poisoned buffers, so a kernel that reads outside the
    view (or ignores its strides) produces NaN or wrong values, never a lucky pass.
    "unbatched" returns x[0] (x must have N == 1).
    """
    N, C, H, W = x.shape
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":  # every other row of a taller NCHW buffer
        buf = poisoned((N, C, 2 * H, W), x.dtype, x.device)
        v = buf[:, :, ::2]
    elif layout == "sliced_channels_last":  # every other column of a wider NHWC buffer
        buf = poisoned((N, C, H, 2 * W), x.dtype, x.device, torch.channels_last)
        v = buf[:, :, :, ::2]
    elif layout == "offset_view":  # an interior block of a bigger tensor (offset, all dims)
        buf = poisoned((N + 1, C + 2, H + 3, W + 5), x.dtype, x.device)
        v = buf[1:, 1:C + 1, 2:H + 2, 3:W + 3]
    elif layout == "unbatched":
        assert N == 1, "unbatched layout needs N == 1"
        return x[0].contiguous()
    else:
        raise ValueError(layout)
    v.copy_(x)
    return v


def poisoned_like_view(t):
    """A copy of `t` (any rank) living in a strided window of a NaN buffer."""
    shape = list(t.shape)
    big = shape[:-1] + [2 * shape[-1] + 1]
    buf = poisoned(big, t.dtype, t.device)
    v = buf[..., 1::2]
    v.copy_(t)
    return v


def expected_memory_format(x):
    """What torch (and convext's outputs) use: suggest_memory_format of the input."""
    if x.dim() != 4:
        return torch.contiguous_format
    try:
        from torch._prims_common import suggest_memory_format
        return suggest_memory_format(x)
    except Exception:  # pragma: no cover - private helper moved
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return torch.channels_last
        return torch.contiguous_format


def assert_memory_format(out, x, name="output"):
    fmt = expected_memory_format(x)
    if out.dim() != 4:
        assert out.is_contiguous(), f"{name}: unbatched output not contiguous"
        return
    assert out.is_contiguous(memory_format=fmt), (
        f"{name}: expected {fmt} like the input (input strides {x.stride()}), got strides {out.stride()}")


# --------------------------------------------------------------------------- raw ops


def convext_op_names():
    """Base names of every op registered in the convext:: namespace."""
    names = sorted({n.split("::", 1)[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
                    if n.startswith("convext::")})
    return names


def op_samples(name, device="cpu"):
    """Sample (args) lists for a raw op, float64, tiny, covering asymmetric padding."""
    base = name[len("triton_"):] if name.startswith("triton_") else name
    g = torch.Generator().manual_seed(7)

    def r(*shape, grad=False):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device).requires_grad_(grad)

    N, C, H, W, M, kh, kw = 2, 3, 7, 6, 2, 3, 2
    stride, padding, dilation = [2, 1], [1, 0, 0, 1], [1, 2]
    Ho = conv_out_size(H, kh, stride[0], padding[0], padding[1], dilation[0])
    Wo = conv_out_size(W, kw, stride[1], padding[2], padding[3], dilation[1])
    Cout = 5
    acts = [("relu", "none"), ("none", "gelu"), ("silu", "relu6")]
    if base == "depthwise_conv2d":
        return [[r(N, C, H, W, grad=True), r(C * M, 1, kh, kw, grad=True), r(C * M, grad=True), stride, padding, dilation],
                [r(N, C, H, W, grad=True).contiguous(memory_format=torch.channels_last),
                 r(C * M, 1, kh, kw, grad=True), None, stride, padding, dilation]]
    if base == "depthwise_conv2d_backward_input":
        return [[r(N, C * M, Ho, Wo), r(C * M, 1, kh, kw), [N, C, H, W], stride, padding, dilation]]
    if base == "depthwise_conv2d_backward_weight":
        return [[r(N, C * M, Ho, Wo), r(N, C, H, W), [kh, kw], stride, padding, dilation, True],
                [r(N, C * M, Ho, Wo), r(N, C, H, W), [kh, kw], stride, padding, dilation, False]]
    if base == "depthwise_separable_conv2d":
        return [[r(N, C, H, W, grad=True), r(C * M, 1, kh, kw, grad=True), r(Cout, C * M, 1, 1, grad=True),
                 r(C * M, grad=True), r(Cout, grad=True), stride, padding, dilation, *a] for a in acts[:2]] + [
                [r(N, C, H, W, grad=True), r(C * M, 1, kh, kw, grad=True), r(Cout, C * M, 1, 1, grad=True),
                 None, None, stride, padding, dilation, *acts[2]]]
    if base == "depthwise_separable_conv2d_backward":
        return [[r(N, Cout, Ho, Wo), r(N, C, H, W), r(C * M, 1, kh, kw), r(Cout, C * M, 1, 1), r(C * M), r(Cout),
                 stride, padding, dilation, *acts[0], [True] * 5],
                [r(N, Cout, Ho, Wo), r(N, C, H, W), r(C * M, 1, kh, kw), r(Cout, C * M, 1, 1), None, None,
                 stride, padding, dilation, *acts[2], [True, False, True, False, False]]]
    return None



# --------------------------------------------------------------------------- misc


def conv_out_size(n, k, s, p0, p1, d):
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def make_inputs(N, C, H, W, kernel, M=1, bias=True, dtype=torch.float32, device="cpu", scale=1.0):
    kh, kw = pair(kernel)
    x = torch.randn(N, C, H, W, dtype=dtype, device=device)
    w = torch.randn(C * M, 1, kh, kw, dtype=dtype, device=device) * (scale / math.sqrt(kh * kw))
    b = torch.randn(C * M, dtype=dtype, device=device) if bias else None
    return x, w, b


def run_opcheck(name, device):
    """torch.library.opcheck on every sample of convext::<name>, skipping what this machine lacks."""
    if device == "cpu" and name.startswith("triton_") and not TRITON_INTERPRETED:
        pytest.skip("triton ops run on CPU tensors only with TRITON_INTERPRET=1 (set to 0 here)")
    require_backend(device, "triton" if name.startswith("triton_") else ("cpu" if device == "cpu" else "cuda"))
    samples = op_samples(name, device)
    if samples is None:
        pytest.skip(f"no sample inputs written for convext::{name}")
    op = getattr(torch.ops.convext, name)
    if name.startswith("triton_") and device == "cpu":
        samples = samples[:1]  # the interpreter is slow; the first sample covers the geometry
    for args in samples:
        torch.library.opcheck(op, args)


def random_sweep_params(device_backends, random_case, *, seed, n, n_interpreted):
    """(device, backend, case) params: a seeded sweep per backend, `random_case(rng, tiny)` drawing
    each case (tiny shapes and fewer cases for the slow Triton interpreter)."""
    import random
    params = []
    for p in device_backends:
        device, backend = p.values
        tiny = interpreted(device, backend)
        rng = random.Random(seed)
        for i in range(n_interpreted if tiny else n):
            params.append(pytest.param(device, backend, random_case(rng, tiny), id=f"{p.id}-rand{i}",
                                       marks=p.marks))
    return params
