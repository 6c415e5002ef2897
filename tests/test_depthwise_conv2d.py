"""convext.depthwise_conv2d: every backend of every device through one parametrization,
against float64 F.conv2d (outputs and input/weight/bias gradients)."""

import pytest
import torch
import torch.nn.functional as F

import convext
from conftest import (
    CPU_BACKENDS, HAS_CUDA, LAYOUTS, TRITON_INTERPRETED, assert_matches, conv_out_size,
    convext_op_names, device_backend_params, interpreted, make_inputs, poisoned_like_view, random_sweep_params,
    check_depthwise, require_backend, run_opcheck, to_layout, with_grads,
)

DEVICE_BACKENDS = device_backend_params()


# --------------------------------------------------------------------------- the grid

# (id, N, C, H, W, kernel, stride, padding, dilation, M, bias, also_interpreted)
GRID = [
    ("k1", 2, 3, 9, 10, 1, 1, 0, 1, 1, True, False),
    ("k3", 2, 3, 9, 10, 3, 1, 1, 1, 1, True, True),
    ("k5", 2, 3, 9, 10, 5, 1, 2, 1, 1, True, False),
    ("k7", 2, 3, 9, 10, 7, 1, 3, 1, 1, True, False),
    ("k1x7", 2, 3, 9, 10, (1, 7), 1, (0, 3), 1, 1, True, True),
    ("k3x1", 2, 3, 9, 10, (3, 1), 1, (1, 0), 1, 1, True, False),
    ("s2", 2, 3, 9, 10, 3, 2, 1, 1, 1, True, True),
    ("s3-k5", 2, 3, 9, 10, 5, 3, 2, 1, 1, True, False),
    ("s1x2", 2, 3, 9, 10, 3, (1, 2), 1, 1, 1, True, False),
    ("s3x1-k1x7", 1, 2, 9, 10, (1, 7), (3, 1), (0, 3), 1, 1, False, False),
    ("d2", 2, 3, 9, 10, 3, 1, 2, 2, 1, True, True),
    ("d3", 2, 3, 9, 10, 3, 1, 3, 3, 1, True, False),
    ("d2x1", 2, 3, 9, 10, 3, 1, (2, 1), (2, 1), 1, True, False),
    ("s2-d2-k5", 2, 3, 10, 9, 5, 2, 4, 2, 1, True, False),
    ("p0", 2, 3, 9, 10, 3, 1, 0, 1, 1, True, False),
    ("p-tuple", 2, 3, 9, 10, 3, 1, (2, 0), 1, 1, True, False),
    ("p-wide", 2, 3, 6, 5, 3, 1, 4, 1, 1, True, False),  # pad > kernel: bias-only border
    ("same-k3", 2, 3, 9, 10, 3, 1, "same", 1, 1, True, False),
    ("same-k4", 2, 3, 9, 10, 4, 1, "same", 1, 1, True, True),  # asymmetric padding
    ("same-k2x5-d2", 2, 3, 9, 10, (2, 5), 1, "same", 2, 1, True, False),
    ("same-k1x7-d3", 1, 2, 9, 10, (1, 7), 1, "same", (1, 3), 1, False, False),
    ("valid-k5", 2, 3, 9, 10, 5, 1, "valid", 1, 1, True, False),
    ("valid-d2", 2, 3, 9, 10, 3, 2, "valid", 2, 1, True, False),
    ("M2", 2, 3, 9, 10, 3, 1, 1, 1, 2, True, False),
    ("M3-s2-d2", 2, 3, 9, 10, 5, 2, 3, 2, 3, True, True),
    ("M2-nobias", 2, 3, 9, 10, 3, 1, 1, 1, 2, False, True),
    ("nobias", 2, 3, 9, 10, 7, 1, 3, 1, 1, False, False),
    ("C1", 2, 1, 9, 10, 3, 1, 1, 1, 1, True, False),
    ("H1", 2, 3, 1, 10, (1, 7), 1, (0, 3), 1, 1, True, False),
    ("kernel>input", 1, 2, 4, 3, 7, 1, 3, 1, 2, True, False),
    ("out1x1", 2, 3, 5, 5, 5, 1, 0, 1, 1, True, False),
]


def _strided_or_dilated(case):
    return any(v != 1 for v in (case[6], case[8]) for v in ((v,) if isinstance(v, int) else v))


def _grid_params():
    """Every case NCHW, and channels_last with a channels_last grad_output (the channels_last
    grad-input kernels, stride and dilation included); the interpreter takes its cases NCHW and the
    strided or dilated ones channels_last too."""
    params = []
    for case in GRID:
        for p in DEVICE_BACKENDS:
            device, backend = p.values
            for layout, lid in (("contiguous", ""), ("channels_last", "-cl")):
                if interpreted(device, backend) and not (
                        case[-1] and (layout == "contiguous" or _strided_or_dilated(case))):
                    continue
                params.append(pytest.param(device, backend, case, layout, id=f"{p.id}-{case[0]}{lid}",
                                           marks=p.marks))
    return params


@pytest.mark.parametrize("device,backend,case,layout", _grid_params())
def test_grid(device, backend, case, layout):
    _, N, C, H, W, k, s, p, d, M, bias, _ = case
    if interpreted(device, backend):  # the Triton interpreter's cost grows with every dimension
        N, C = min(N, 1), min(C, 2)
    x, w, b = make_inputs(N, C, H, W, k, M, bias, torch.float32, device)
    check_depthwise(device, backend, to_layout(x, layout), w, b, s, p, d, grad_layout=layout)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(device, backend, layout):
    """Every layout of the input (and strided grad_output), output in the input's format."""
    N = 1 if layout == "unbatched" else 2
    C, H, W = (2, 5, 6) if interpreted(device, backend) else (4, 13, 17)
    x, w, b = make_inputs(N, C, H, W, 3, 2, True, torch.float32, device)
    xl = to_layout(x, layout)
    out, _ = check_depthwise(device, backend, xl, w, b, 1, 1, 1,
                           grad_layout=None if layout == "unbatched" else layout)
    assert out.dim() == xl.dim()


# Planes several tiles wide and high (for every first autotune config of the Triton kernels),
# so that the fully-interior tiles, the row-interior tiles and the border tiles all occur.
# (id, N, C, H, W, kernel, stride, padding, dilation, M)
TILED = [
    ("k3", 1, 2, 20, 140, 3, 1, 1, 1, 1),
    ("k3-s2-valid", 1, 2, 20, 140, 3, 2, 0, 1, 1),
    ("k5-d2-M2", 1, 2, 24, 140, 5, 1, 4, 2, 2),
    ("k3x5-same", 1, 2, 21, 140, (3, 5), 1, "same", 1, 1),
    # channels_last: full channel blocks (no channel masks) as well as partial ones
    ("k3-C8-M2", 1, 8, 20, 28, 3, 1, 1, 1, 2),
    ("k7-C8", 1, 8, 20, 28, 7, 1, 3, 1, 1),
]


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", TILED, ids=lambda c: c[0])
def test_interior_and_border_tiles(device, backend, layout, case):
    _, N, C, H, W, k, s, p, d, M = case
    x, w, b = make_inputs(N, C, H, W, k, M, True, torch.float32, device)
    check_depthwise(device, backend, to_layout(x, layout), w, b, s, p, d,
                  grad_layout=layout)


# Triton grad-weight: every tile path (interior / rows-in / border; channels_last with full and
# partial channel blocks), several chunks per plane, M > 1, stride, dilation, asymmetric
# padding, and kernel-row passes (KH * KW > 104 taps: one kernel row per pass), through the op.
# (id, N, C, H, W, kernel, stride, padding (top, bottom, left, right), dilation, M)
GW_CASES = [
    ("s2-d2-M2", 2, 8, 40, 300, 3, 2, (2, 2, 2, 2), 2, 2),
    ("k11-passes", 1, 3, 20, 30, 11, 1, (5, 5, 5, 5), 1, 1),
    ("k5x3-asym", 3, 5, 30, 150, (5, 3), 1, (1, 3, 2, 0), 1, 1),
]


@pytest.mark.parametrize("device,backend", [p for p in DEVICE_BACKENDS if p.values[1] == "triton"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", GW_CASES, ids=lambda c: c[0])
def test_grad_weight_interior_border_passes(device, backend, layout, case):
    _, N, C, H, W, k, s, pad, d, M = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = to_layout(torch.randn(N, C, H, W, device=device), layout)
    xp = F.pad(x.double(), (pad[2], pad[3], pad[0], pad[1]))
    Ho = (xp.shape[2] - d * (kh - 1) - 1) // s + 1
    Wo = (xp.shape[3] - d * (kw - 1) - 1) // s + 1
    go = to_layout(torch.randn(N, C * M, Ho, Wo, device=device), layout)
    gw, gb = torch.ops.convext.triton_depthwise_conv2d_backward_weight(
        go, x, [kh, kw], [s, s], list(pad), [d, d], True)
    ref = torch.nn.grad.conv2d_weight(xp, (C * M, 1, kh, kw), go.double(), s, 0, d, groups=C)
    ref32 = torch.nn.grad.conv2d_weight(xp.float(), (C * M, 1, kh, kw), go, s, 0, d, groups=C)
    assert_matches(gw, ref, ref32, dtype=torch.float32, name="grad_weight")
    assert_matches(gb, go.double().sum((0, 2, 3)), go.sum((0, 2, 3)), dtype=torch.float32,
                   name="grad_bias")


# --------------------------------------------------------------------------- random sweep


def _random_case(rng, tiny):
    """A random valid argument combination; odd sizes, every layout, N = 0 sometimes."""
    while True:
        layout = rng.choice(LAYOUTS)
        N = 1 if layout == "unbatched" else rng.choice([0, 1, 2] if tiny else [0, 1, 2, 3])
        C = rng.randint(1, 3) if tiny else rng.choice([1, 2, 3, 5, 8, 13, 17, 32, 33])
        H = rng.randint(1, 8) if tiny else rng.randint(1, 29)
        W = rng.randint(1, 8) if tiny else rng.randint(1, 45)
        kh, kw = rng.randint(1, 7), rng.randint(1, 7)
        if rng.random() < 0.5:
            kw = kh
        M = rng.choice([1, 1, 2, 3])
        sh, sw = rng.randint(1, 3), rng.randint(1, 3)
        dh, dw = rng.randint(1, 3), rng.randint(1, 3)
        kind = rng.choice(["int", "tuple", "same", "valid"])
        if kind == "same":
            sh = sw = 1
            padding, pads = "same", (dh * (kh - 1), dw * (kw - 1))
        elif kind == "valid":
            padding, pads = "valid", (0, 0)
        elif kind == "int":
            padding = rng.randint(0, 4)
            pads = (2 * padding, 2 * padding)
        else:
            padding = (rng.randint(0, 4), rng.randint(0, 4))
            pads = (2 * padding[0], 2 * padding[1])
        Ho = conv_out_size(H, kh, sh, pads[0], 0, dh)
        Wo = conv_out_size(W, kw, sw, pads[1], 0, dw)
        if Ho < 1 or Wo < 1:
            continue
        stride = (sh, sw) if (sh != sw or rng.random() < 0.3) else sh
        dilation = (dh, dw) if (dh != dw or rng.random() < 0.3) else dh
        dtype = torch.float32 if tiny else rng.choice([torch.float32, torch.float64])
        return dict(N=N, C=C, H=H, W=W, k=(kh, kw), M=M, stride=stride, padding=padding,
                    dilation=dilation, bias=rng.random() < 0.7, layout=layout, dtype=dtype,
                    strided_weight=rng.random() < 0.3,
                    grad_layout=rng.choice(["contiguous", "channels_last", "sliced"]))


N_RANDOM, N_RANDOM_INTERPRETED = 40, 4


def _sweep_params():
    return random_sweep_params(DEVICE_BACKENDS, _random_case, seed=1234, n=N_RANDOM,
                               n_interpreted=N_RANDOM_INTERPRETED)


@pytest.mark.parametrize("device,backend,case", _sweep_params())
def test_random_sweep(device, backend, case):
    c = case
    x, w, b = make_inputs(max(c["N"], 1) if c["layout"] == "unbatched" else c["N"], c["C"], c["H"],
                          c["W"], c["k"], c["M"], c["bias"], c["dtype"], device)
    x = to_layout(x, c["layout"])
    if c["strided_weight"]:
        w = poisoned_like_view(w)
        if b is not None:
            b = poisoned_like_view(b)
    out, _ = check_depthwise(device, backend, x, w, b, c["stride"], c["padding"], c["dilation"],
                           grad_layout=c["grad_layout"])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_strided_weight_and_bias(device, backend):
    """Weight and bias as strided views of NaN buffers: their strides must be honoured."""
    N, C = (1, 2) if interpreted(device, backend) else (2, 5)
    x, w, b = make_inputs(N, C, 6, 7, 3, 2, True, torch.float32, device)
    check_depthwise(device, backend, x, poisoned_like_view(w), poisoned_like_view(b), 1, 1, 1)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_empty_batch(device, backend):
    x, w, b = make_inputs(0, 2, 8, 8, 3, 2, True, torch.float32, device)
    out, grads = check_depthwise(device, backend, x, w, b, 2, 1, 1)
    assert out.shape == (0, 4, 4, 4)
    assert torch.count_nonzero(grads[1]) == 0 and torch.count_nonzero(grads[2]) == 0


# --------------------------------------------------------------------------- backends


def test_backends_listing():
    names = convext.backends("cpu")
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert set(names) <= {"cpu", "torch", "triton"}, names  # "cuda" never serves CPU tensors
    assert "torch" in names and "cpu" in names
    assert set(convext.backends()) <= {"cpu", "torch", "triton", "cuda"}
    if TRITON_INTERPRETED:
        try:
            import triton  # noqa: F401
        except ImportError:
            pytest.skip("TRITON_INTERPRET=1 but triton is not installed")
        assert "triton" in names, "TRITON_INTERPRET=1 and triton installed: triton serves CPU tensors"
    if HAS_CUDA:
        assert "torch" in convext.backends("cuda")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_auto_backend(device, layout):
    x, w, b = make_inputs(2, 16, 20, 21, 3, 1, True, torch.float32, device)
    check_depthwise(device, "auto", to_layout(x, layout), w, b, 1, 1, 1)
    x, w, b = make_inputs(1, 8, 15, 15, 5, 2, False, torch.float32, device)
    check_depthwise(device, "auto", x, w, b, 2, 2, 2)


# --------------------------------------------------------------------------- autograd checks


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_gradcheck(device, backend):
    x, w, b = make_inputs(2 if not interpreted(device, backend) else 1, 2, 5, 6, (3, 2), 2, True,
                          torch.float64, device)
    x, w, b = (t.requires_grad_(True) for t in (x, w, b))

    def fn(x_, w_, b_):
        return convext.depthwise_conv2d(x_, w_, b_, (2, 1), (1, 0), (1, 2), backend=backend)

    fast = interpreted(device, backend) or backend == "torch"  # slow paths; fast mode still checks
    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=fast, check_batched_grad=False)


@pytest.mark.parametrize("device,backend", device_backend_params(lambda b: b != "triton"))
def test_gradgradcheck_through_the_composite_fallback(device, backend):
    """Second order: by design (API.md) the backward of the backward (create_graph=True) runs the
    differentiable torch composite, not a convext kernel, whatever the backend; the forward that
    gradgradcheck differentiates numerically is the backend's. This checks that composite."""
    x, w, b = make_inputs(1, 2, 5, 5, 3, 1, True, torch.float64, device)
    x, w, b = (t.requires_grad_(True) for t in (x, w, b))

    def fn(x_, w_, b_):
        return convext.depthwise_conv2d(x_, w_, b_, 1, 1, 1, backend=backend)

    assert torch.autograd.gradgradcheck(fn, (x, w, b), fast_mode=True, check_batched_grad=False)


@pytest.mark.parametrize("device,backend", device_backend_params(lambda b: b != "torch"))
def test_grad_input_op_differentiates_through_kernels(device, backend):
    """The convext path of second-order terms: grad_input = backward_input(grad_output, weight) is
    itself differentiable through convext kernels (its registered autograd runs the forward and
    grad-weight kernels; depthwise_conv_transpose2d relies on it). gradcheck of the raw op."""
    g = torch.Generator().manual_seed(3)
    N, C, M, H, W = 1, 2, 2, 6, 5
    stride, padding, dilation = [2, 1], [1, 2, 0, 1], [1, 2]
    Ho = conv_out_size(H, 3, stride[0], padding[0], padding[1], dilation[0])
    Wo = conv_out_size(W, 2, stride[1], padding[2], padding[3], dilation[1])
    go = torch.randn(N, C * M, Ho, Wo, generator=g, dtype=torch.float64).to(device).requires_grad_()
    w = torch.randn(C * M, 1, 3, 2, generator=g, dtype=torch.float64).to(device).requires_grad_()
    prefix = "triton_" if backend == "triton" else ""
    op = getattr(torch.ops.convext, prefix + "depthwise_conv2d_backward_input")

    def fn(go_, w_):
        return op(go_, w_, [N, C, H, W], stride, padding, dilation)

    assert torch.autograd.gradcheck(fn, (go, w), fast_mode=interpreted(device, backend), check_batched_grad=False)


# --------------------------------------------------------------------------- raw ops


def test_expected_ops_registered():
    names = convext_op_names()
    for op in ("depthwise_conv2d", "depthwise_conv2d_backward_input", "depthwise_conv2d_backward_weight",
               "depthwise_separable_conv2d", "depthwise_separable_conv2d_backward"):
        assert op in names, f"convext::{op} not registered (have {names})"
    if "triton" in CPU_BACKENDS or (HAS_CUDA and "triton" in convext.backends("cuda")):
        assert any(n.startswith("triton_") for n in names), "triton backend listed but no convext::triton_* ops"


def _opcheck_params():
    params = []
    for name in convext_op_names():
        if name.removeprefix("triton_").startswith("depthwise_separable"):
            continue  # tests/test_depthwise_separable_conv2d.py
        marks = [pytest.mark.slow_interpreter] if name.startswith("triton_") else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("name", _opcheck_params())
def test_opcheck(name, device):
    """torch.library.opcheck (schema, fake kernel, autograd registration, AOT dispatch), float64."""
    run_opcheck(name, device)


def test_raw_op_asymmetric_padding():
    """The raw op takes [top, bottom, left, right]; check it against F.pad + F.conv2d."""
    for name in [n for n in convext_op_names() if n.endswith("depthwise_conv2d")]:
        if name.startswith("triton_") and "triton" not in CPU_BACKENDS:
            continue
        x, w, b = make_inputs(2, 3, 7, 6, (3, 2), 2, True, torch.float64)
        pad = [2, 0, 1, 3]
        out = getattr(torch.ops.convext, name)(x, w, b, [1, 2], pad, [2, 1])
        ref = F.conv2d(F.pad(x, (pad[2], pad[3], pad[0], pad[1])), w, b, (1, 2), 0, (2, 1), groups=3)
        assert_matches(out, ref, name=name)


# --------------------------------------------------------------------------- GPU only

LOWP = [torch.float32, torch.bfloat16, torch.float16]
LOWP_SHAPES = [  # (N, C, H, W, k, stride, padding, dilation, M)
    (4, 64, 28, 28, 3, 1, 1, 1, 1),
    (2, 48, 33, 31, 5, 2, 2, 1, 1),
    (2, 32, 33, 33, 3, 1, 4, 4, 2),
    (2, 24, 56, 56, 7, 1, 3, 1, 1),
    (2, 16, 20, 24, (1, 11), 1, (0, 5), 1, 1),
]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "torch"])
@pytest.mark.parametrize("dtype", LOWP, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", LOWP_SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + f"-k{s[4]}")
def test_low_precision_gpu(backend, dtype, layout, shape):
    require_backend("cuda", backend)
    N, C, H, W, k, s, p, d, M = shape
    x, w, b = make_inputs(N, C, H, W, k, M, True, dtype, "cuda")
    check_depthwise("cuda", backend, to_layout(x, layout), w, b, s, p, d)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_cpu(backend, dtype):
    x, w, b = make_inputs(2, 16, 13, 15, 3, 2, True, dtype)
    try:
        F.conv2d(x, w, b, 1, 1, 1, groups=16)
    except RuntimeError as e:
        pytest.skip(f"torch itself has no CPU {dtype} depthwise conv: {e}")
    check_depthwise("cpu", backend, x, w, b, 1, 1, 1)
    check_depthwise("cpu", backend, to_layout(x, "channels_last"), w, b, 2, "valid", 2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", LOWP, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_deterministic(dtype, layout):
    """Bitwise-equal outputs and gradients across two runs (no atomics-order noise)."""
    require_backend("cuda", "cuda")
    x, w, b = make_inputs(8, 64, 56, 56, 3, 1, True, dtype, "cuda")
    x = to_layout(x, layout)
    go = torch.randn(8, 64, 56, 56, device="cuda", dtype=dtype)
    runs = []
    for _ in range(2):
        out, grads, _ = with_grads(lambda a, c, e: convext.depthwise_conv2d(a, c, e, 1, 1, backend="cuda"),
                                   [x, w, b], grad_out=go)
        runs.append([out] + grads)
    for a, c, name in zip(runs[0], runs[1], ("output", "grad_input", "grad_weight", "grad_bias")):
        assert torch.equal(a, c), f"{name} differs between two identical runs"


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_more_than_2pow31_elements(backend):
    """64-bit indexing: a 2.4e9-element fp16 input whose last channel lies entirely past element
    2^31. Every channel is checked (exact for a depthwise conv: channel c depends on channel c
    alone), output and all three gradients, against float64 with torch's own fp16 result on that
    channel as the yardstick (the suite's rule, no fixed bound)."""
    require_backend("cuda", backend)
    N, C, H, W = 1, 9, 16400, 16400  # 2.42e9 elements; channel 8 starts at 2.15e9 > 2^31
    nbytes = N * C * H * W * 2
    plane64 = N * H * W * 8
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    need = 4 * nbytes + 8 * plane64 + (4 << 30)
    if free < need:
        pytest.skip(f"needs ~{need >> 30} GiB free GPU memory, have {free >> 30}")
    # positive inputs: a lost or misplaced block of rows shows up in every reduction
    x = torch.rand(N, C, H, W, device="cuda", dtype=torch.float16).requires_grad_(True)
    w = torch.randn(C, 1, 3, 3, device="cuda", dtype=torch.float16).requires_grad_(True)
    b = torch.randn(C, device="cuda", dtype=torch.float16).requires_grad_(True)
    out = convext.depthwise_conv2d(x, w, b, 1, 1, backend=backend)
    assert out.shape == (N, C, H, W)
    go_value = 2.0 ** -14  # exact in fp16; keeps grad_bias (= N*H*W*go) finite
    go = torch.full_like(out, go_value)
    gx, gw, gb = torch.autograd.grad(out, (x, w, b), go)
    del go
    for c in range(C):
        sl = slice(c, c + 1)
        # torch at fp16 on this channel (the yardstick), then float64 (the reference)
        xs, ws, bs = (t.detach().requires_grad_(True) for t in (x[:, sl], w[sl], b[sl]))
        t_out = F.conv2d(xs, ws, bs, 1, 1)
        t_gx, t_gw, t_gb = torch.autograd.grad(t_out, (xs, ws, bs), torch.full_like(t_out, go_value))
        xd, wd, bd = (t.detach().double().requires_grad_(True) for t in (x[:, sl], w[sl], b[sl]))
        ref = F.conv2d(xd, wd, bd, 1, 1)
        r_gx, r_gw, r_gb = torch.autograd.grad(ref, (xd, wd, bd), torch.full_like(ref, go_value))
        assert_matches(out[:, sl], ref, t_out, name=f"output[channel {c}]")
        assert_matches(gx[:, sl], r_gx, t_gx, name=f"grad_input[channel {c}]")
        assert_matches(gw[sl], r_gw, t_gw, name=f"grad_weight[channel {c}]")
        assert_matches(gb[sl], r_gb, t_gb, name=f"grad_bias[channel {c}]")
        del xs, ws, bs, t_out, t_gx, t_gw, t_gb, xd, wd, bd, ref, r_gx, r_gw, r_gb
