"""convext.depthwise_separable_conv2d: every backend of every device through one
parametrization, against the float64 composite (dw conv -> act -> 1x1 conv -> act),
outputs and the gradients of all five tensors."""
import itertools

import pytest
import torch
import torch.nn.functional as F

import convext
from conftest import (
    ACTIVATIONS, LAYOUTS, assert_matches, check_op, conv_out_size,
    convext_op_names, device_backend_params, interpreted, make_inputs, poisoned_like_view, random_sweep_params,
    require_backend, run_opcheck, to_layout, torch_separable, with_grads,
)

DEVICE_BACKENDS = device_backend_params()


def make_separable(N, C, H, W, k, M, Cout, dw_bias, pw_bias, dtype=torch.float32, device="cpu"):
    x, dw_w, dw_b = make_inputs(N, C, H, W, k, M, dw_bias, dtype, device)
    pw_w = torch.randn(Cout, C * M, 1, 1, dtype=dtype, device=device) / (C * M) ** 0.5
    pw_b = torch.randn(Cout, dtype=dtype, device=device) if pw_bias else None
    return x, dw_w, pw_w, dw_b, pw_b


def run_and_check(device, backend, tensors, stride, padding, dilation, acts=(None, None),
                  grad_layout=None, check_torch_dtype=True):
    a1, a2 = acts

    def ours(x_, dw_w, pw_w, dw_b, pw_b):
        return convext.depthwise_separable_conv2d(
            x_, dw_w, pw_w, dw_b, pw_b, stride, padding, dilation, backend=backend,
            depthwise_activation=a1, pointwise_activation=a2)

    def theirs(x_, dw_w, pw_w, dw_b, pw_b):
        return torch_separable(x_, dw_w, pw_w, dw_b, pw_b, stride, padding, dilation, a1, a2)

    names = ("grad_input", "grad_depthwise_weight", "grad_pointwise_weight",
             "grad_depthwise_bias", "grad_pointwise_bias")
    return check_op(device, ours, theirs, tensors, names, grad_layout, check_torch_dtype)


# --------------------------------------------------------------------------- the grid

# (id, N, C, H, W, kernel, stride, padding, dilation, M, Cout, dw_bias, pw_bias, also_interpreted)
GRID = [
    ("k3", 2, 4, 9, 10, 3, 1, 1, 1, 1, 6, True, True, True),
    ("k1", 2, 4, 9, 10, 1, 1, 0, 1, 1, 5, True, True, False),
    ("k5-s2", 2, 4, 9, 10, 5, 2, 2, 1, 1, 3, True, True, True),
    ("k7", 2, 3, 9, 10, 7, 1, 3, 1, 1, 8, True, False, False),
    ("k1x7", 1, 3, 8, 10, (1, 7), 1, (0, 3), 1, 1, 4, False, True, False),
    ("k3x1-s3", 2, 3, 9, 10, (3, 1), 3, (1, 0), 1, 1, 4, True, True, False),
    ("d2", 2, 4, 9, 10, 3, 1, 2, 2, 1, 4, True, True, True),
    ("d3-s2", 2, 3, 10, 9, 3, 2, 3, 3, 1, 5, False, False, False),
    ("same-k4-d1", 2, 3, 9, 10, 4, 1, "same", 1, 1, 4, True, True, True),
    ("same-d2", 2, 3, 9, 10, 3, 1, "same", (2, 1), 1, 4, True, False, False),
    ("valid", 2, 3, 9, 10, 5, 1, "valid", 1, 1, 4, False, True, False),
    ("p-tuple", 2, 3, 9, 10, 3, (2, 1), (2, 0), 1, 1, 4, True, True, False),
    ("M2", 2, 3, 9, 10, 3, 1, 1, 1, 2, 5, True, True, True),
    ("M3-d2", 1, 2, 9, 10, 5, 1, 4, 2, 3, 7, True, True, False),
    ("Cout1", 2, 4, 9, 10, 3, 1, 1, 1, 1, 1, True, True, False),
    ("C1", 2, 1, 9, 10, 3, 1, 1, 1, 1, 3, True, True, False),
    ("wide-out", 2, 3, 6, 7, 3, 1, 1, 1, 1, 70, True, True, False),  # Cout > any single tile
    ("wide-in", 1, 67, 6, 7, 3, 1, 1, 1, 1, 9, True, True, False),  # C*M > any single tile
    ("no-bias", 2, 4, 9, 10, 3, 1, 1, 1, 1, 6, False, False, False),
]

PAIRS = list(itertools.product(ACTIVATIONS, ACTIVATIONS))
# every activation in each position at least once, for the slow interpreter
INTERPRETED_PAIRS = [(None, "relu"), ("relu", "relu6"), ("relu6", "silu"), ("silu", "gelu"),
                     ("gelu", "hardswish"), ("hardswish", None)]


def _grid_params():
    params = []
    for case in GRID:
        for p in DEVICE_BACKENDS:
            device, backend = p.values
            if interpreted(device, backend) and not case[-1]:
                continue
            params.append(pytest.param(device, backend, case, id=f"{p.id}-{case[0]}", marks=p.marks))
    return params


@pytest.mark.parametrize("device,backend,case", _grid_params())
def test_grid(device, backend, case):
    _, N, C, H, W, k, s, p, d, M, Cout, dwb, pwb, _ = case
    if interpreted(device, backend):  # the Triton interpreter's cost grows with every dimension
        N, C, Cout = min(N, 1), min(C, 2), min(Cout, 3)
    t = make_separable(N, C, H, W, k, M, Cout, dwb, pwb, torch.float32, device)
    run_and_check(device, backend, t, s, p, d)


def _act_params():
    params = []
    for p in DEVICE_BACKENDS:
        device, backend = p.values
        for a1, a2 in (INTERPRETED_PAIRS if interpreted(device, backend) else PAIRS):
            params.append(pytest.param(device, backend, (a1, a2), id=f"{p.id}-{a1}-{a2}", marks=p.marks))
    return params


@pytest.mark.parametrize("device,backend,acts", _act_params())
def test_activation_pairs(device, backend, acts):
    # Scaled so the depthwise output crosses every kink (0 for relu, 6 for relu6, -3 and 3 for
    # hardswish).
    shape = (1, 2, 6, 7, 3, 2, 3) if interpreted(device, backend) else (2, 3, 7, 8, 3, 2, 5)
    t = list(make_separable(*shape, True, True, torch.float32, device))
    t[1] = t[1] * 4
    run_and_check(device, backend, t, 1, 1, 1, acts=acts)


# Pre-activation values exactly at every kink (relu: 0; relu6: 0, 6; hardswish: -3, 3) and around.
KINK_VALUES = (-7.0, -4.0, -3.0, -2.0, -0.5, 0.0, 0.5, 2.0, 3.0, 4.0, 6.0, 7.0)
KINK_CASES = ([(a, pos, torch.float32) for a in ACTIVATIONS[1:] for pos in ("dw", "pw")]
              + [("hardswish", pos, torch.float64) for pos in ("dw", "pw")])


def _kink_params():
    params = []
    for p in DEVICE_BACKENDS:
        device, backend = p.values
        for a, pos, dtype in KINK_CASES:
            if interpreted(device, backend) and a not in ("relu6", "hardswish"):
                continue
            params.append(pytest.param(device, backend, a, pos, dtype,
                                       id=f"{p.id}-{a}-{pos}-{str(dtype)[6:]}", marks=p.marks))
    return params


@pytest.mark.parametrize("device,backend,act,pos,dtype", _kink_params())
def test_activation_kinks(device, backend, act, pos, dtype):
    """Derivative conventions at the kinks, as torch's backward formulas (relu'(0) = 0, relu6' = 0
    at 0 and 6, hardswish' = 0 at -3 and 1 at 3): a 1x1 depthwise weight of ones and an
    identity pointwise weight (zero biases) put the activation's input exactly at the kinks."""
    C, H, W = 4, 3, 3
    g = torch.Generator().manual_seed(7)
    v = torch.tensor(KINK_VALUES, dtype=dtype)
    x = torch.cat([v[torch.randperm(v.numel(), generator=g)] for _ in range(C * H * W // v.numel())])
    x = x.view(1, C, H, W).to(device)
    dw_w = torch.ones(C, 1, 1, 1, dtype=dtype, device=device)
    pw_w = torch.eye(C, dtype=dtype, device=device).view(C, C, 1, 1)
    dw_b = torch.zeros(C, dtype=dtype, device=device)
    pw_b = torch.zeros(C, dtype=dtype, device=device)
    acts = (act, None) if pos == "dw" else (None, act)
    run_and_check(device, backend, (x, dw_w, pw_w, dw_b, pw_b), 1, 0, 1, acts=acts)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(device, backend, layout):
    N = 1 if layout == "unbatched" else 2
    C, H, W, Cout = (2, 5, 6, 3) if interpreted(device, backend) else (8, 13, 17, 12)
    x, dw_w, pw_w, dw_b, pw_b = make_separable(N, C, H, W, 3, 1, Cout, True, True, torch.float32, device)
    out, _ = run_and_check(device, backend, (to_layout(x, layout), dw_w, pw_w, dw_b, pw_b), 1, 1, 1,
                           acts=("relu6", None), grad_layout=None if layout == "unbatched" else layout)
    assert out.dim() == (3 if layout == "unbatched" else 4)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype,k,pad,dil", [(torch.float32, 3, 1, 1), (torch.float32, 3, 2, 2),
                                             (torch.float64, 3, 1, 1)],
                         ids=["fp32-k3", "fp32-d2", "fp64-k3"])
def test_tile_paths(device, backend, layout, dtype, k, pad, dil):
    """A plane of several pixel tiles and a K loop of several blocks with a partial last one, so
    the Triton kernels take every depthwise-tile path: window in bounds (pixel tiles inside one
    row away from the borders), rows in bounds (tiles across rows), and border tiles / the
    partial K block; act1 = relu so the backward recomputes the tile too."""
    x, dw_w, pw_w, dw_b, pw_b = make_separable(1, 40, 8, 70, k, 1, 8, True, True, dtype, device)
    run_and_check(device, backend, (to_layout(x, layout), dw_w, pw_w, dw_b, pw_b), 1, pad, dil,
                  acts=("relu", None), grad_layout=layout)


# --------------------------------------------------------------------------- random sweep


def _random_case(rng, tiny):
    while True:
        layout = rng.choice(LAYOUTS)
        N = 1 if layout == "unbatched" else rng.choice([0, 1, 2] if tiny else [0, 1, 2, 3])
        C = rng.randint(1, 3) if tiny else rng.choice([1, 3, 8, 13, 32])
        Cout = rng.randint(1, 3) if tiny else rng.choice([1, 5, 16, 24, 33])
        H = rng.randint(1, 8) if tiny else rng.randint(1, 29)
        W = rng.randint(1, 8) if tiny else rng.randint(1, 37)
        kh = rng.choice([1, 3, 5, 7])
        kw = kh if rng.random() < 0.7 else rng.choice([1, 3, 5])
        M = rng.choice([1, 1, 2])
        s = rng.choice([1, 1, 2, 3])
        d = rng.choice([1, 1, 2, 3])
        kind = rng.choice(["int", "tuple", "same", "valid"])
        if kind == "same":
            s, padding, pads = 1, "same", (d * (kh - 1), d * (kw - 1))
        elif kind == "valid":
            padding, pads = "valid", (0, 0)
        elif kind == "int":
            padding = rng.randint(0, 3)
            pads = (2 * padding, 2 * padding)
        else:
            padding = (rng.randint(0, 3), rng.randint(0, 3))
            pads = (2 * padding[0], 2 * padding[1])
        if conv_out_size(H, kh, s, pads[0], 0, d) < 1 or conv_out_size(W, kw, s, pads[1], 0, d) < 1:
            continue
        return dict(N=N, C=C, Cout=Cout, H=H, W=W, k=(kh, kw), M=M, stride=s, padding=padding,
                    dilation=d, dw_bias=rng.random() < 0.6, pw_bias=rng.random() < 0.6, layout=layout,
                    acts=(rng.choice(ACTIVATIONS), rng.choice(ACTIVATIONS)),
                    dtype=torch.float32 if tiny else rng.choice([torch.float32, torch.float64]),
                    strided_weights=rng.random() < 0.3,
                    grad_layout=rng.choice(["contiguous", "channels_last", "sliced"]))


N_RANDOM, N_RANDOM_INTERPRETED = 25, 3


def _sweep_params():
    return random_sweep_params(DEVICE_BACKENDS, _random_case, seed=4321, n=N_RANDOM,
                               n_interpreted=N_RANDOM_INTERPRETED)


@pytest.mark.parametrize("device,backend,case", _sweep_params())
def test_random_sweep(device, backend, case):
    c = case
    t = list(make_separable(c["N"], c["C"], c["H"], c["W"], c["k"], c["M"], c["Cout"], c["dw_bias"],
                            c["pw_bias"], c["dtype"], device))
    t[0] = to_layout(t[0], c["layout"])
    if c["strided_weights"]:
        t[1:] = [None if v is None else poisoned_like_view(v) for v in t[1:]]
    out, _ = run_and_check(device, backend, t, c["stride"], c["padding"], c["dilation"], acts=c["acts"],
                           grad_layout=c["grad_layout"])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("which", ["depthwise_weight", "pointwise_weight", "depthwise_bias", "pointwise_bias"])
def test_strided_parameters(device, backend, which):
    """Each weight / bias as a strided view of a NaN buffer: its strides must be honoured."""
    shape = (1, 2, 6, 7, 3, 1, 3) if interpreted(device, backend) else (2, 5, 6, 7, 3, 1, 6)
    t = list(make_separable(*shape, True, True, torch.float32, device))
    i = ["input", "depthwise_weight", "pointwise_weight", "depthwise_bias", "pointwise_bias"].index(which)
    t[i] = poisoned_like_view(t[i])
    run_and_check(device, backend, t, 1, 1, 1, acts=(None, "relu"))


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_empty_batch(device, backend):
    t = make_separable(0, 2, 8, 8, 3, 2, 3, True, True, torch.float32, device)
    out, grads = run_and_check(device, backend, t, 2, 1, 1, acts=("relu", "silu"))
    assert out.shape == (0, 3, 4, 4)
    assert all(torch.count_nonzero(g) == 0 for g in grads[1:])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_auto_backend(device):
    t = make_separable(2, 16, 20, 21, 3, 1, 24, True, True, torch.float32, device)
    run_and_check(device, "auto", t, 1, 1, 1, acts=("relu6", None))
    t = make_separable(1, 8, 15, 15, 5, 2, 4, False, True, torch.float32, device)
    run_and_check(device, "auto", (to_layout(t[0], "channels_last"),) + tuple(t[1:]), 2, 4, 2)


# --------------------------------------------------------------------------- autograd checks


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("acts", [(None, None), ("silu", "gelu"), ("hardswish", "hardswish")],
                         ids=["plain", "silu-gelu", "hardswish"])
def test_gradcheck(device, backend, acts):
    t = make_separable(1, 2, 5, 6, (3, 2), 2, 3, True, True, torch.float64, device)
    t = [v.requires_grad_(True) for v in t]

    def fn(*a):
        return convext.depthwise_separable_conv2d(
            *a, (2, 1), (1, 0), (1, 2), backend=backend,
            depthwise_activation=acts[0], pointwise_activation=acts[1])

    assert torch.autograd.gradcheck(fn, tuple(t), fast_mode=interpreted(device, backend) or backend == "torch",
                                    check_batched_grad=False)


def test_expected_ops_registered():
    names = convext_op_names()
    for op in ("depthwise_separable_conv2d", "depthwise_separable_conv2d_backward"):
        assert op in names, f"convext::{op} not registered (have {names})"


def _opcheck_params():
    return [pytest.param(n, id=n, marks=[pytest.mark.slow_interpreter] if n.startswith("triton_") else [])
            for n in convext_op_names() if n.removeprefix("triton_").startswith("depthwise_separable")]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("name", _opcheck_params())
def test_opcheck(name, device):
    """torch.library.opcheck (schema, fake kernel, autograd registration, AOT dispatch), float64."""
    run_opcheck(name, device)


# --------------------------------------------------------------------------- GPU only

LOWP = [torch.float32, torch.bfloat16, torch.float16]
LOWP_SHAPES = [  # (N, C, H, W, k, stride, padding, dilation, M, Cout)
    (4, 64, 28, 28, 3, 1, 1, 1, 1, 96),
    (2, 144, 28, 28, 3, 2, 1, 1, 1, 24),
    (2, 96, 33, 33, 3, 1, 6, 6, 1, 128),
    (2, 40, 20, 20, 5, 1, 2, 1, 2, 40),
]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "torch"])
@pytest.mark.parametrize("dtype", LOWP, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("acts", [(None, None), ("relu6", None), ("silu", "gelu")], ids=str)
@pytest.mark.parametrize("shape", LOWP_SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + f"-k{s[4]}-o{s[9]}")
def test_low_precision_gpu(backend, dtype, layout, acts, shape):
    require_backend("cuda", backend)
    N, C, H, W, k, s, p, d, M, Cout = shape
    t = list(make_separable(N, C, H, W, k, M, Cout, True, True, dtype, "cuda"))
    t[0] = to_layout(t[0], layout)
    run_and_check("cuda", backend, t, s, p, d, acts=acts)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", LOWP, ids=str)
def test_cuda_deterministic(dtype):
    require_backend("cuda", "cuda")
    t = make_separable(8, 64, 56, 56, 3, 1, 96, True, True, dtype, "cuda")
    go = torch.randn(8, 96, 56, 56, device="cuda", dtype=dtype)
    runs = []
    for _ in range(2):
        out, grads, _ = with_grads(
            lambda *a: convext.depthwise_separable_conv2d(*a, 1, 1, backend="cuda", depthwise_activation="relu6"),
            list(t), grad_out=go)
        runs.append([out] + grads)
    for i, (a, b) in enumerate(zip(runs[0], runs[1])):
        assert torch.equal(a, b), f"tensor {i} differs between two identical runs"


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_low_precision_cpu(backend):
    require_backend("cpu", backend)
    t = make_separable(2, 16, 11, 13, 3, 1, 12, True, True, torch.bfloat16)
    run_and_check("cpu", backend, t, 1, 1, 1, acts=("relu", None))


def _tf32_truncated(t):
    """float32 -> the TF32 value of the tensor cores' worst case (mantissa cut to 10 bits)."""
    return (t.float().contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_tf32_when_allowed(layout):
    """With torch.backends.cudnn.allow_tf32 the fused Triton kernel's pointwise GEMM may run
    in TF32, as torch's own convs may: its error must be at TF32's scale, measured by a
    float64 emulation that cuts both GEMM operands to TF32."""
    require_backend("cuda", "triton")
    N, C, H, W, k, s, p, d, M, Cout = LOWP_SHAPES[0]
    x, dw_w, pw_w, dw_b, pw_b = make_separable(N, C, H, W, k, M, Cout, True, True, device="cuda")
    x = to_layout(x, layout)
    ref = torch_separable(*(t.double() for t in (x, dw_w, pw_w, dw_b, pw_b)), s, p, d, "relu6", None)
    z = F.relu6(F.conv2d(x.double(), dw_w.double(), dw_b.double(), s, p, d, groups=C)).float()
    emul = F.conv2d(_tf32_truncated(z).double(), _tf32_truncated(pw_w).double(), pw_b.double())
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):
        out = convext.depthwise_separable_conv2d(x, dw_w, pw_w, dw_b, pw_b, s, p, d, backend="triton",
                                                 depthwise_activation="relu6")
    assert_matches(out, ref, emul, dtype=torch.float32, name="output (TF32)")
