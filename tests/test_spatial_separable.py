"""convext.spatial_separable_conv2d and convext.nn.SpatialSeparableConv2d: a (kH x 1) depthwise conv then
a (1 x kW) depthwise conv as one op, on every backend, against the two F.conv2d in sequence in float64:
outputs and all five gradients (every subset requiring grad), gradcheck, opcheck, layouts, odd sizes,
dtypes, bad arguments, the layer's state_dict."""
import itertools
import types

import pytest
import torch
import torch.nn.functional as F

import convext
from conftest import (
    CPU_BACKENDS, HAS_CUDA, LAYOUTS, TRITON_INTERPRETED, check_op, device_backend_params, interpreted,
    poisoned_like_view, to_layout, with_grads,
)
from convext import _spatial_separable

DEVICE_BACKENDS = device_backend_params()
NAMES = ("grad_input", "grad_vertical_weight", "grad_horizontal_weight", "grad_vertical_bias",
         "grad_horizontal_bias")


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def two_convs(x, vw, hw, vb=None, hb=None, stride=1, padding=0, dilation=1):
    """The definition: the two depthwise nn.Conv2d of the layer, in sequence."""
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    if isinstance(padding, str):
        vp = hp = padding
    else:
        ph, pw = pair(padding)
        vp, hp = (ph, 0), (0, pw)
    z = F.conv2d(x, vw, vb, (sh, 1), vp, (dh, 1), groups=x.shape[-3])
    return F.conv2d(z, hw, hb, (1, sw), hp, (1, dw), groups=vw.shape[0])


def make(N, C, H, W, kh, kw, M=1, vbias=True, hbias=True, dtype=torch.float32, device="cpu"):
    x = torch.randn(N, C, H, W, dtype=dtype, device=device)
    vw = (torch.randn(C * M, 1, kh, 1, dtype=dtype) / kh ** 0.5).to(device)
    hw = (torch.randn(C * M, 1, 1, kw, dtype=dtype) / kw ** 0.5).to(device)
    vb = torch.randn(C * M, dtype=dtype, device=device) if vbias else None
    hb = torch.randn(C * M, dtype=dtype, device=device) if hbias else None
    return x, vw, hw, vb, hb


def run_and_check(device, backend, tensors, stride, padding, dilation, grad_layout=None, check_torch_dtype=True):
    def ours(*t):
        return convext.spatial_separable_conv2d(*t, stride, padding, dilation, backend=backend)

    def theirs(*t):
        return two_convs(*t, stride, padding, dilation)

    return check_op(device, ours, theirs, tensors, NAMES, grad_layout, check_torch_dtype)


# (id, N, C, H, W, kh, kw, stride, padding, dilation, M, vbias, hbias, also_interpreted)
GRID = [
    ("k3", 2, 3, 7, 8, 3, 3, 1, 1, 1, 1, True, True, True),
    ("k1x5", 2, 3, 6, 9, 1, 5, 1, (0, 2), 1, 1, True, True, False),
    ("k5x1", 2, 3, 9, 6, 5, 1, 1, (2, 0), 1, 1, True, False, False),
    ("k7-same", 1, 2, 9, 10, 7, 7, 1, "same", 1, 1, True, True, False),
    ("k4-same-even", 2, 2, 7, 9, 4, 2, 1, "same", (1, 2), 1, True, True, True),
    ("valid", 2, 3, 8, 9, 3, 5, 1, "valid", 1, 1, False, True, False),
    ("s2", 2, 3, 9, 10, 3, 3, 2, 1, 1, 1, True, True, True),
    ("s3x2-d2x3-asym", 2, 2, 11, 13, 3, 4, (3, 2), (2, 3), (2, 3), 1, True, True, True),
    ("d2", 2, 3, 9, 10, 3, 3, 1, 2, 2, 1, False, True, False),
    ("M2", 2, 3, 7, 8, 3, 3, 1, 1, 1, 2, True, True, True),
    ("M3-s2", 1, 2, 8, 9, 5, 3, (2, 1), (2, 1), 1, 3, True, True, False),
    ("no-bias", 2, 3, 7, 8, 3, 3, 1, 1, 1, 1, False, False, False),
    ("C1", 3, 1, 6, 7, 3, 3, 1, 1, 1, 1, True, True, False),
    ("pad-gt-kernel", 1, 2, 4, 5, 3, 3, 1, 4, 1, 1, True, True, True),
    ("1x1-input", 2, 2, 1, 1, 3, 3, 1, 1, 1, 1, True, True, False),
    ("1-row", 2, 3, 1, 9, 3, 3, 1, (1, 1), 1, 1, True, True, False),
    ("stride-gt-kernel", 2, 2, 11, 12, 2, 2, (5, 4), 0, 1, 1, True, True, False),
    ("odd-primes", 1, 5, 13, 11, 5, 7, (2, 3), (3, 1), (1, 2), 1, True, True, False),
    ("wide-channels", 2, 70, 5, 6, 3, 3, 1, 1, 1, 1, True, True, False),
]


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
    _, N, C, H, W, kh, kw, s, p, d, M, vb, hb, _ = case
    if interpreted(device, backend):
        N, C = 1, min(C, 2)
    t = make(N, C, H, W, kh, kw, M, vb, hb, torch.float64, device)
    run_and_check(device, backend, t, s, p, d)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dtypes(device, backend, dtype):
    if interpreted(device, backend) and dtype == torch.float16:
        pytest.skip("float16 covered by bfloat16 under the interpreter")
    shape = (1, 2, 6, 7) if interpreted(device, backend) else (2, 5, 11, 12)
    t = make(*shape, 5, 3, 2, True, True, dtype, device)
    run_and_check(device, backend, t, (1, 2), (2, 1), (1, 2))


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_every_subset_requiring_grad(device, backend):
    """Each non-empty subset of the five tensors requires grad (the backward's output_mask)."""
    shape = (1, 2, 5, 6) if interpreted(device, backend) else (2, 3, 7, 8)
    t = make(*shape, 3, 3, 2, True, True, torch.float64, device)
    stride, padding, dilation = (2, 1), (1, 2), (1, 2)
    ref = two_convs(*t, stride, padding, dilation)
    go = torch.randn_like(ref)
    subsets = [s for r in range(1, 6) for s in itertools.combinations(range(5), r)]
    if interpreted(device, backend):
        subsets = [s for s in subsets if len(s) in (1, 5)]
    for subset in subsets:
        leaves = [tt.detach().requires_grad_(i in subset) for i, tt in enumerate(t)]
        out = convext.spatial_separable_conv2d(*leaves, stride, padding, dilation, backend=backend)
        grads = torch.autograd.grad(out, [leaves[i] for i in subset], go)
        rleaves = [tt.detach().requires_grad_(i in subset) for i, tt in enumerate(t)]
        rgrads = torch.autograd.grad(two_convs(*rleaves, stride, padding, dilation), [rleaves[i] for i in subset], go)
        for i, g, rg in zip(subset, grads, rgrads):
            torch.testing.assert_close(g, rg, rtol=1e-10, atol=1e-10, msg=lambda m: f"{NAMES[i]} of {subset}: {m}")


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_gradcheck(device, backend):
    shape = (1, 2, 4, 5) if interpreted(device, backend) else (2, 2, 5, 6)
    t = [tt.requires_grad_() for tt in make(*shape, 3, 2, 2, True, True, torch.float64, device)]

    def fn(*a):
        return convext.spatial_separable_conv2d(*a, (2, 1), (1, 1), (1, 2), backend=backend)

    assert torch.autograd.gradcheck(fn, tuple(t), fast_mode=interpreted(device, backend) or backend == "torch",
                                    check_batched_grad=False)


def test_double_backward():
    """create_graph=True goes through the differentiable composite: second-order grads match it."""
    t = make(1, 2, 5, 6, 3, 3, 1, True, True, torch.float64)

    def second(fn):
        leaves = [tt.detach().requires_grad_() for tt in t]
        out = fn(*leaves)
        g = torch.autograd.grad(out.square().sum(), leaves, create_graph=True)
        return torch.autograd.grad(sum(gg.square().sum() for gg in g), leaves)

    ours = second(lambda *a: convext.spatial_separable_conv2d(*a, 1, 1, 1, backend="cpu"))
    ref = second(lambda *a: two_convs(*a, 1, 1, 1))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(device, backend, layout):
    if interpreted(device, backend) and layout in ("sliced", "offset_view"):
        pytest.skip("strided NCHW views: covered by the compiled backends; interpreter time")
    N = 1 if layout == "unbatched" else 2
    C, H, W = (2, 5, 6) if interpreted(device, backend) else (6, 9, 11)
    x, vw, hw, vb, hb = make(N, C, H, W, 3, 5, 1, True, True, torch.float64, device)
    out, _ = run_and_check(device, backend, (to_layout(x, layout), vw, hw, vb, hb), (1, 2), (1, 2), 1,
                           grad_layout=None if layout == "unbatched" else layout)
    assert out.dim() == (3 if layout == "unbatched" else 4)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_strided_parameters_and_grad_output(device, backend):
    """Weights and biases that are views of NaN buffers, and a non-contiguous grad_output."""
    shape = (1, 2, 5, 6) if interpreted(device, backend) else (2, 3, 7, 8)
    x, vw, hw, vb, hb = make(*shape, 3, 3, 1, True, True, torch.float64, device)
    t = (x, poisoned_like_view(vw.transpose(2, 3)).transpose(2, 3), poisoned_like_view(hw), poisoned_like_view(vb),
         poisoned_like_view(hb))
    run_and_check(device, backend, t, 1, 1, 1, grad_layout="sliced")


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_empty_batch(device, backend):
    x, vw, hw, vb, hb = make(0, 3, 5, 6, 3, 3, 1, True, True, torch.float64, device)
    t = [tt.requires_grad_() for tt in (x, vw, hw, vb, hb)]
    out = convext.spatial_separable_conv2d(*t, 1, 1, 1, backend=backend)
    assert out.shape == (0, 3, 5, 6)
    grads = torch.autograd.grad(out, t, torch.ones_like(out))
    for g, tt in zip(grads, t):
        assert g.shape == tt.shape and not g.any()


@pytest.mark.parametrize("backend", [b for b in CPU_BACKENDS if b != "torch"])
def test_deterministic(backend):
    shape = (2, 2, 6, 7) if backend == "triton" else (4, 5, 17, 19)
    t = [tt.requires_grad_() for tt in make(*shape, 3, 3, 1, True, True, torch.float32)]
    runs = []
    for _ in range(2):
        out = convext.spatial_separable_conv2d(*t, 1, 1, 1, backend=backend)
        runs.append([out] + list(torch.autograd.grad(out, t, torch.ones_like(out))))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_bias_not_folded():
    """A vertical bias meets the horizontal conv's zero padding: the op is the two convs, not one
    kH x kW conv with a folded bias."""
    x, vw, hw, vb, hb = make(1, 2, 5, 5, 3, 3, 1, True, True, torch.float64)
    for backend in CPU_BACKENDS:
        out = convext.spatial_separable_conv2d(x, vw, hw, vb, hb, 1, 1, 1, backend=backend)
        torch.testing.assert_close(out, two_convs(x, vw, hw, vb, hb, 1, 1, 1))
    rank1 = F.conv2d(x, vw * hw, None, 1, 1, 1, groups=2) + (vb * hw.sum((1, 2, 3)) + hb).view(1, -1, 1, 1)
    assert not torch.allclose(out, rank1)  # differs at the left/right border columns
    torch.testing.assert_close(out[..., 1:-1], rank1[..., 1:-1])


# --------------------------------------------------------------------------- raw ops

def _op_samples(name, device="cpu"):
    g = torch.Generator().manual_seed(3)

    def r(*shape, grad=False):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device).requires_grad_(grad)

    N, C, H, W, M, kh, kw = 2, 2, 7, 6, 2, 3, 2
    stride, padding, dilation = [2, 1], [1, 0, 0, 1], [1, 2]
    Ho = (H + 1 - (kh - 1) - 1) // 2 + 1
    Wo = (W + 1 - 2 * (kw - 1) - 1) // 1 + 1
    if name.endswith("_backward"):
        return [[r(N, C * M, Ho, Wo), r(N, C, H, W), r(C * M, 1, kh, 1), r(C * M, 1, 1, kw), r(C * M), r(C * M),
                 stride, padding, dilation, [True] * 5],
                [r(N, C * M, Ho, Wo), r(N, C, H, W), r(C * M, 1, kh, 1), r(C * M, 1, 1, kw), None, r(C * M),
                 stride, padding, dilation, [False, True, False, True, True]]]
    return [[r(N, C, H, W, grad=True), r(C * M, 1, kh, 1, grad=True), r(C * M, 1, 1, kw, grad=True),
             r(C * M, grad=True), r(C * M, grad=True), stride, padding, dilation],
            [r(N, C, H, W, grad=True).contiguous(memory_format=torch.channels_last), r(C * M, 1, kh, 1, grad=True),
             r(C * M, 1, 1, kw, grad=True), None, None, stride, padding, dilation]]


OP_NAMES = ["spatial_separable_conv2d", "spatial_separable_conv2d_backward",
            pytest.param("triton_spatial_separable_conv2d", marks=pytest.mark.slow_interpreter),
            pytest.param("triton_spatial_separable_conv2d_backward", marks=pytest.mark.slow_interpreter)]


@pytest.mark.parametrize("name", OP_NAMES)
def test_opcheck(name):
    """torch.library.opcheck: schema, fake kernel, autograd registration, AOT dispatch (float64)."""
    if name.startswith("triton_") and not (TRITON_INTERPRETED and "triton" in CPU_BACKENDS):
        pytest.skip("triton ops need TRITON_INTERPRET=1 for CPU tensors")
    op = getattr(torch.ops.convext, name)
    samples = _op_samples(name)
    if name.startswith("triton_"):
        samples = samples[:1]
    for args in samples:
        torch.library.opcheck(op, args)


def test_ops_registered():
    for name in ("spatial_separable_conv2d", "spatial_separable_conv2d_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key("convext::" + name, "CPU")


# --------------------------------------------------------------------------- backend choice

def test_auto_backend():
    assert _spatial_separable.resolve_backend("auto", torch.empty(1)) == "cpu"
    # Not verified on a GPU yet: auto routes CUDA tensors to the torch composite.
    fake_cuda = types.SimpleNamespace(device=torch.device("cuda"))
    assert _spatial_separable.resolve_backend("auto", fake_cuda) == "torch"
    assert _spatial_separable.resolve_backend("auto", torch.empty(1, device="meta")) == "torch"


def test_auto_on_cpu_runs_the_kernel(monkeypatch):
    calls = []
    real = torch.ops.convext.spatial_separable_conv2d

    class Spy:
        def __call__(self, *a):
            calls.append(1)
            return real(*a)

    monkeypatch.setattr(_spatial_separable, "_op", lambda backend, name: Spy())
    x, vw, hw, vb, hb = make(1, 2, 5, 6, 3, 3)
    convext.spatial_separable_conv2d(x, vw, hw, vb, hb, padding=1)
    assert calls


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "auto"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_gpu(backend, layout, dtype):
    if backend not in convext.backends("cuda") and backend != "auto":
        pytest.skip(f"{backend} not available")
    x, vw, hw, vb, hb = make(2, 24, 33, 35, 7, 5, 2, True, True, dtype, "cuda")
    run_and_check("cuda", backend, (to_layout(x, layout), vw, hw, vb, hb), (1, 2), (3, 2), (1, 2),
                  grad_layout=layout)


# --------------------------------------------------------------------------- errors

def ss(x=None, vw=None, hw=None, vb=None, hb=None, stride=1, padding=1, dilation=1, backend="auto"):
    x = torch.randn(2, 4, 8, 8) if x is None else x
    vw = torch.randn(4, 1, 3, 1) if vw is None else vw
    hw = torch.randn(4, 1, 1, 3) if hw is None else hw
    return convext.spatial_separable_conv2d(x, vw, hw, vb, hb, stride, padding, dilation, backend=backend)


ERROR_CASES = [
    ("input-2d", dict(x=torch.randn(4, 8)), r"input"),
    ("input-5d", dict(x=torch.randn(1, 2, 4, 8, 8)), r"input"),
    ("input-list", dict(x=[[1.0]]), r"input"),
    ("input-int", dict(x=torch.ones(2, 4, 8, 8, dtype=torch.int64)), r"input"),
    ("vertical-3d", dict(vw=torch.randn(4, 3, 1)), r"vertical_weight"),
    ("vertical-kw-not-1", dict(vw=torch.randn(4, 1, 3, 3)), r"vertical_weight"),
    ("vertical-dim1", dict(vw=torch.randn(4, 2, 3, 1)), r"vertical_weight"),
    ("vertical-not-multiple", dict(vw=torch.randn(6, 1, 3, 1)), r"vertical_weight"),
    ("vertical-empty-kernel", dict(vw=torch.randn(4, 1, 0, 1)), r"vertical_weight"),
    ("horizontal-kh-not-1", dict(hw=torch.randn(4, 1, 3, 3)), r"horizontal_weight"),
    ("horizontal-channels", dict(hw=torch.randn(8, 1, 1, 3)), r"horizontal_weight"),
    ("horizontal-dtype", dict(hw=torch.randn(4, 1, 1, 3, dtype=torch.float64)), r"horizontal_weight"),
    ("horizontal-device", dict(hw=torch.randn(4, 1, 1, 3, device="meta")), r"horizontal_weight"),
    ("vertical-bias-shape", dict(vb=torch.randn(5)), r"vertical_bias"),
    ("horizontal-bias-shape", dict(hb=torch.randn(4, 1)), r"horizontal_bias"),
    ("horizontal-bias-dtype", dict(hb=torch.randn(4, dtype=torch.float64)), r"horizontal_bias"),
    ("stride-0", dict(stride=0), r"stride"),
    ("stride-len3", dict(stride=(1, 1, 1)), r"stride"),
    ("dilation-0", dict(dilation=(1, 0)), r"dilation"),
    ("padding-neg", dict(padding=(0, -1)), r"padding"),
    ("padding-bad-string", dict(padding="full"), r"padding"),
    ("same-stride2", dict(padding="same", stride=2), r"padding|same"),
    ("kernel-too-big", dict(x=torch.randn(2, 4, 2, 8), padding=0), r"input"),
    ("empty-height", dict(x=torch.randn(2, 4, 0, 8), padding=2), r"input.*size|size.*input"),
    ("empty-width", dict(x=torch.randn(2, 4, 8, 0), padding=2), r"input.*size|size.*input"),
    ("unknown-backend", dict(backend="fast"), r"backend"),
    ("cuda-backend-on-cpu", dict(backend="cuda"), r"backend"),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["auto"])
@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_bad_arguments(backend, case):
    _, kwargs, pattern = case
    kwargs = dict(kwargs)
    kwargs.setdefault("backend", backend)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=pattern):
        ss(**kwargs)


def test_raw_op_rejects_bad_shapes():
    x = torch.randn(1, 2, 5, 5)
    with pytest.raises(RuntimeError, match="vertical_weight"):
        torch.ops.convext.spatial_separable_conv2d(x, torch.randn(2, 1, 3, 3), torch.randn(2, 1, 1, 3), None, None,
                                                   [1, 1], [1, 1, 1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="horizontal_weight"):
        torch.ops.convext.spatial_separable_conv2d(x, torch.randn(2, 1, 3, 1), torch.randn(4, 1, 1, 3), None, None,
                                                   [1, 1], [1, 1, 1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="empty spatial size"):
        torch.ops.convext.spatial_separable_conv2d(torch.randn(1, 2, 0, 5), torch.randn(2, 1, 3, 1),
                                                   torch.randn(2, 1, 1, 3), None, None, [1, 1], [2, 2, 2, 2], [1, 1])


# --------------------------------------------------------------------------- the layer

class HandWritten(torch.nn.Module):
    def __init__(self, C, k, p, s=1, d=1, bias=True):
        super().__init__()
        self.vertical = torch.nn.Conv2d(C, C, (k, 1), (s, 1), (p, 0), (d, 1), groups=C, bias=bias)
        self.horizontal = torch.nn.Conv2d(C, C, (1, k), (1, s), (0, p), (1, d), groups=C, bias=bias)

    def forward(self, x):
        return self.horizontal(self.vertical(x))


@pytest.mark.parametrize("backend", [b for b in CPU_BACKENDS if b != "triton"] + ["auto"])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_loads_hand_written_state_dict(backend, bias):
    ref = HandWritten(4, 5, 2, 2, 1, bias).double()
    layer = convext.nn.SpatialSeparableConv2d(4, 5, stride=2, padding=2, bias=bias, backend=backend).double()
    assert list(layer.state_dict()) == list(ref.state_dict())
    layer.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(layer.state_dict(), strict=True)
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64)
    out, grads, go = with_grads(layer, [x])
    rout, rgrads, _ = with_grads(ref, [x], grad_out=go)
    torch.testing.assert_close(out, rout)
    torch.testing.assert_close(grads[0], rgrads[0])
    layer(x).backward(go)
    ref(x).backward(go)
    for (name, p), (rname, rp) in zip(layer.named_parameters(), ref.named_parameters()):
        assert name == rname
        torch.testing.assert_close(p.grad, rp.grad)


def test_layer_arguments_split():
    layer = convext.nn.SpatialSeparableConv2d(3, (5, 3), stride=(2, 3), padding=(2, 1), dilation=(1, 2),
                                              depth_multiplier=2)
    v, h = layer.vertical, layer.horizontal
    assert isinstance(v, torch.nn.Conv2d) and isinstance(h, torch.nn.Conv2d)
    assert (v.kernel_size, v.stride, v.padding, v.dilation, v.groups) == ((5, 1), (2, 1), (2, 0), (1, 1), 3)
    assert (h.kernel_size, h.stride, h.padding, h.dilation, h.groups) == ((1, 3), (1, 3), (0, 1), (1, 2), 6)
    assert v.weight.shape == (6, 1, 5, 1) and h.weight.shape == (6, 1, 1, 3)
    assert (layer.in_channels, layer.out_channels, layer.kernel_size) == (3, 6, (5, 3))
    x = torch.randn(2, 3, 12, 13)
    ref = h(F.conv2d(x, v.weight, v.bias, v.stride, v.padding, v.dilation, groups=3))
    torch.testing.assert_close(layer(x), ref)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_layer_string_padding(padding):
    layer = convext.nn.SpatialSeparableConv2d(3, (4, 3), padding=padding, dilation=(1, 2)).double()
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64)
    ref = layer.horizontal(layer.vertical(x))  # two DepthwiseConv2d calls
    torch.testing.assert_close(layer(x), ref)
    if padding == "same":
        assert layer(x).shape == x.shape


def test_layer_falls_back_when_submodules_changed():
    layer = convext.nn.SpatialSeparableConv2d(3, 3, padding=1).double()
    layer.horizontal.padding_mode = "reflect"
    layer.horizontal._reversed_padding_repeated_twice = [1, 1, 0, 0]
    x = torch.randn(1, 3, 6, 7, dtype=torch.float64)
    z = F.conv2d(x, layer.vertical.weight, layer.vertical.bias, 1, (1, 0), 1, 3)
    ref = F.conv2d(F.pad(z, (1, 1, 0, 0), mode="reflect"), layer.horizontal.weight, layer.horizontal.bias, groups=3)
    torch.testing.assert_close(layer(x), ref)


def test_layer_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        convext.nn.SpatialSeparableConv2d(3, 3, backend="fast")
    with pytest.raises(TypeError, match="kernel_size"):
        convext.nn.SpatialSeparableConv2d(3, (3, 3, 3))
    with pytest.raises(ValueError, match="depth_multiplier"):
        convext.nn.SpatialSeparableConv2d(3, 3, depth_multiplier=0)


def test_layer_fx_compile_export():
    layer = convext.nn.SpatialSeparableConv2d(3, 3, padding=1)
    x = torch.randn(2, 3, 8, 9)
    gm = torch.fx.symbolic_trace(layer)
    assert any(n.target is convext.spatial_separable_conv2d for n in gm.graph.nodes)
    torch.testing.assert_close(gm(x), layer(x))
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x))
    ep = torch.export.export(layer, (x,))
    torch.testing.assert_close(ep.module()(x), layer(x))


def test_autocast_cpu():
    layer = convext.nn.SpatialSeparableConv2d(3, 3, padding=1)
    x = torch.randn(2, 3, 8, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        ref = layer.horizontal(layer.vertical(x))
    assert out.dtype == ref.dtype == torch.bfloat16
    out.float().sum().backward()
    assert layer.vertical.weight.grad.dtype == torch.float32


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU visible")
def test_cuda_speed_smoke():
    """Placeholder for the GPU check: the CUDA kernel runs and matches the composite on a real size."""
    x, vw, hw, vb, hb = make(8, 64, 56, 56, 7, 7, 1, True, True, torch.float32, "cuda")
    out = convext.spatial_separable_conv2d(x, vw, hw, vb, hb, 1, 3, 1, backend="cuda")
    torch.testing.assert_close(out, two_convs(x, vw, hw, vb, hb, 1, 3, 1), rtol=1e-4, atol=1e-4)
