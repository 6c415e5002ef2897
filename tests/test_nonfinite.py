"""NaN and inf propagate as in F.conv2d, on every backend, for every op (API.md, "Errors").

F.conv2d's pattern, measured on CPU: its oneDNN kernels (float32, and bfloat16, for channels_last
inputs and for NCHW depthwise with M = 1) never multiply the zero padding: a tap that falls into
the padding contributes nothing, so a NaN weight with padding 1 on a 5x5 image makes 16 NaN outputs,
not 25, and an inf weight makes 16 infs and no NaN. The same holds for the gradients: grad_input
gets w * grad_output only from real outputs, grad_weight gets x * grad_output only where the tap
meets a real input. (Torch's im2col paths -- float64 / float16 on CPU, NCHW with M > 1, the
dilated NCHW weight gradient -- do multiply the padding, 25 NaN; ATen's CUDA depthwise kernel skips
the padding like oneDNN.) convext implements the oneDNN pattern on every backend and every dtype;
`skip_conv2d` below is that definition in float64, and `test_reference_is_torch_onednn` checks it
against F.conv2d where torch runs oneDNN. The "torch" backend is F.conv2d itself, so it is checked
only where torch runs oneDNN.

Activations (separable op) follow torch's backward formulas element by element, as its CUDA kernels
and its scalar CPU loop compute them: relu(NaN) = relu6(NaN) = NaN, and the relu / relu6 /
hardswish derivatives at NaN pass the gradient (threshold_backward / hardtanh_backward /
hardswish_backward). (ATen's vectorised CPU loops give 0 for relu6 and NaN for hardswish there.)
"""
import pytest
import torch
import torch.nn.functional as F

import convext
from conftest import CPU_BACKENDS, device_backend_params, interpreted

DEVICE_BACKENDS = device_backend_params()


@pytest.fixture(autouse=True)
def _cuda_nonfinite_fixups(monkeypatch):
    """The CUDA backend's non-finite fix-up passes are opt-in until a GPU has run them
    (CONVEXT_CUDA_NONFINITE=1, read on every call); these tests are what checks them."""
    monkeypatch.setenv("CONVEXT_CUDA_NONFINITE", "1")
NAN, INF = float("nan"), float("inf")
# (the Triton interpreter's NumPy warns about every NaN it makes: that is the point here)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


# --------------------------------------------------------------------------- the definition

def skip_conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)):
    """Depthwise conv2d (weight (C*M, 1, kH, kW)) in which a tap meeting the zero padding adds
    nothing (never 0 * w). Differentiable: its autograd gradients have the same property."""
    N, C, H, W = x.shape
    Cout, _, kh, kw = w.shape
    M = Cout // C
    pt, pb, pl, pr = padding
    xp = F.pad(x, (pl, pr, pt, pb))
    real = F.pad(torch.ones(1, 1, H, W, dtype=x.dtype, device=x.device), (pl, pr, pt, pb))
    cols = F.unfold(xp, (kh, kw), dilation=dilation, stride=stride)
    real = F.unfold(real, (kh, kw), dilation=dilation, stride=stride) > 0
    L = cols.shape[-1]
    cols = cols.view(N, C, 1, kh * kw, L).expand(N, C, M, kh * kw, L).reshape(N, Cout, kh * kw, L)
    prod = torch.where(real.view(1, 1, kh * kw, L), cols * w.reshape(1, Cout, kh * kw, 1), 0.0)
    Ho = (H + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = prod.sum(2).view(N, Cout, Ho, Wo)
    return y if b is None else y + b.view(1, -1, 1, 1)


class _Relu6(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.relu6(x)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return torch.where((x <= 0) | (x >= 6), torch.zeros_like(g), g)


class _Hardswish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.hardswish(x)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return torch.where(x <= -3, torch.zeros_like(g), torch.where(x < 3, g * (x / 3 + 0.5), g))


ACT = {None: lambda t: t, "relu": F.relu, "relu6": _Relu6.apply, "silu": F.silu, "gelu": F.gelu,
       "hardswish": _Hardswish.apply}


def pads4(p):
    return (p, p, p, p) if isinstance(p, int) else (p[0], p[0], p[1], p[1])


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# --------------------------------------------------------------------------- comparison

def run(fn, tensors, grad_output):
    leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
    out = fn(*leaves)
    live = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(out, live, grad_output.to(out.dtype))
    return [out.detach()] + list(grads)


def assert_same_pattern(actual, expected, names, tol=1e-4):
    """Same NaN, +inf and -inf positions; the finite values close."""
    for name, a, e in zip(names, actual, expected):
        a, e = a.detach().double().cpu(), e.detach().double().cpu()
        assert a.shape == e.shape, name
        for what, fa, fe in (("NaN", a.isnan(), e.isnan()), ("+inf", a.isposinf(), e.isposinf()),
                             ("-inf", a.isneginf(), e.isneginf())):
            if not torch.equal(fa, fe):
                raise AssertionError(f"{name}: {what} at {fa.sum().item()} positions, expected {fe.sum().item()} "
                                     f"(first difference at {tuple(torch.nonzero(fa != fe)[0].tolist())})")
        fin = e.isfinite()
        torch.testing.assert_close(a[fin], e[fin], rtol=tol, atol=tol, msg=lambda m: f"{name}: {m}")


def _place(t, where, value):
    t = t.clone()
    t[where] = value
    return t


# --------------------------------------------------------------------------- torch's own pattern

@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("what", ["weight", "input", "grad_output"])
@pytest.mark.parametrize("value", [NAN, INF])
def test_reference_is_torch_onednn(layout, stride, padding, what, value):
    """skip_conv2d = F.conv2d's own pattern wherever torch runs oneDNN (float32; channels_last, or
    NCHW with M = 1, no dilation, padding 1): forward, grad_input, grad_weight, grad_bias."""
    if layout == "contiguous" and padding > 1 and what == "grad_output":
        pytest.skip("torch's NCHW weight gradient with padding 2 is not oneDNN (it multiplies the padding)")
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    M = 2 if layout == "channels_last" else 1
    x = torch.randn(1, 2, 5, 6)
    w = torch.randn(2 * M, 1, 3, 3)
    b = torch.randn(2 * M)
    Ho, Wo = [(n + 2 * padding - 3) // stride + 1 for n in (5, 6)]
    go = torch.randn(1, 2 * M, Ho, Wo)
    if what == "weight":
        w = _place(w, (0, 0, 0, 0), value)
    elif what == "input":
        x = _place(x, (0, 0, 0, 5), value)
    else:
        go = _place(go, (0, 0, Ho - 1, Wo - 1), value)
    torch_ = run(lambda x_, w_, b_: F.conv2d(x_, w_, b_, stride, padding, groups=2),
                 (x.to(memory_format=fmt), w, b), go)
    ref = run(lambda x_, w_, b_: skip_conv2d(x_, w_, b_, (stride, stride), pads4(padding)),
              (x.double(), w.double(), b.double()), go.double())
    assert_same_pattern(torch_, ref, ("output", "grad_input", "grad_weight", "grad_bias"))


def test_the_issue_example():
    """A NaN weight with padding 1 on a 5x5 NCHW input: 16 NaN outputs in F.conv2d (float32, groups = C
    = 2: the depthwise oneDNN kernel; with C = 1 torch runs a plain conv, 25), and on every backend;
    an inf weight: 16 infs, no NaN."""
    x = torch.randn(1, 2, 5, 5)
    for value, nan, inf in ((NAN, 16, 0), (INF, 0, 16)):
        w = _place(torch.randn(2, 1, 3, 3), (0, 0, 0, 0), value)
        y = F.conv2d(x, w, None, 1, 1, groups=2)[:, :1]
        assert (y.isnan().sum().item(), y.isinf().sum().item()) == (nan, inf)
        for backend in CPU_BACKENDS:
            for dtype in (torch.float32, torch.float64):
                y = convext.depthwise_conv2d(x.to(dtype), w.to(dtype), None, 1, 1, backend=backend)[:, :1]
                if backend == "torch" and dtype == torch.float64:
                    continue  # F.conv2d itself: float64 runs im2col, which multiplies the padding (25)
                assert (y.isnan().sum().item(), y.isinf().sum().item()) == (nan, inf), (backend, dtype)


# --------------------------------------------------------------------------- depthwise_conv2d

# (id, layout, M, stride, padding, dilation, what, where, value, also_interpreted)
DW_CASES = [
    ("w-corner-nan", "contiguous", 1, 1, 1, 1, "weight", (0, 0, 0, 0), NAN, True),
    ("w-corner-inf-s2", "contiguous", 1, 2, 1, 1, "weight", (0, 0, 0, 0), INF, True),
    ("w-mid-nan-d2", "contiguous", 2, 1, 2, 2, "weight", (1, 0, 2, 1), NAN, False),
    ("w-corner-ninf-cl", "channels_last", 2, 1, 1, 1, "weight", (3, 0, 2, 2), -INF, True),
    ("x-border-nan", "contiguous", 1, 1, 1, 1, "input", (0, 0, 0, 5), NAN, True),
    ("x-border-inf-cl-s2", "channels_last", 1, 2, 2, 1, "input", (0, 1, 4, 0), INF, False),
    ("go-corner-nan", "contiguous", 1, 1, 1, 1, "grad_output", (0, 0, 0, 0), NAN, True),
    ("go-corner-inf-cl", "channels_last", 2, 1, 2, 2, "grad_output", (0, 2, -1, -1), INF, True),
    ("go-corner-nan-s2", "contiguous", 2, 2, 1, 1, "grad_output", (0, 1, -1, 0), NAN, False),
]


def _dw_params():
    params = []
    for case in DW_CASES:
        for p in DEVICE_BACKENDS:
            device, backend = p.values
            if interpreted(device, backend) and not case[-1]:
                continue
            params.append(pytest.param(device, backend, case, id=f"{p.id}-{case[0]}", marks=p.marks))
    return params


def _torch_is_onednn(backend, layout, M, dilation, padding, dtype):
    return backend != "torch" or (dtype == torch.float32 and (layout == "channels_last"
                                                               or (M == 1 and dilation == 1 and padding == 1)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device,backend,case", _dw_params())
def test_depthwise_conv2d(device, backend, case, dtype):
    _, layout, M, stride, padding, dilation, what, where, value, _ = case
    if not _torch_is_onednn(backend, layout, M, dilation, padding, dtype) or (dtype == torch.float64 and interpreted(
            device, backend)):
        pytest.skip("F.conv2d itself (not oneDNN here)" if backend == "torch" else "interpreter time")
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64)
    w = torch.randn(2 * M, 1, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(2 * M, generator=g, dtype=torch.float64)
    pad4 = pads4(padding)
    ref_fn = lambda x_, w_, b_: skip_conv2d(x_, w_, b_, pair(stride), pad4, pair(dilation))  # noqa: E731
    go = torch.randn(ref_fn(x, w, b).shape, generator=g, dtype=torch.float64)
    if what == "weight":
        w = _place(w, where, value)
    elif what == "input":
        x = _place(x, where, value)
    else:
        go = _place(go, where, value)
    ref = run(ref_fn, (x, w, b), go)
    ours = run(lambda x_, w_, b_: convext.depthwise_conv2d(x_, w_, b_, stride, padding, dilation, backend=backend),
               (x.to(device, dtype).to(memory_format=fmt), w.to(device, dtype), b.to(device, dtype)), go.to(device))
    assert_same_pattern(ours, ref, ("output", "grad_input", "grad_weight", "grad_bias"))


@pytest.mark.parametrize("device,backend", device_backend_params(lambda b: b != "torch"))
def test_depthwise_conv2d_large_kernel_tensor_core_path(device, backend, monkeypatch):
    """The Triton large-kernel path (band GEMMs on tensor cores) multiplies padding and off-band
    zeros; its non-finite tiles / channels are recomputed exactly."""
    if backend == "triton":
        from convext.triton import depthwise_conv2d_tc as tc
        monkeypatch.setattr(tc, "_MODE", "force")  # fp32 through tl.dot (IEEE), as the GPU's fp16
        assert tc.applies(torch.float32, (9, 9), (1, 1), (1, 1), torch.empty(1, 2, 11, 12))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 11, 12, generator=g, dtype=torch.float64)
    w = _place(torch.randn(2, 1, 9, 9, generator=g, dtype=torch.float64), (0, 0, 0, 0), NAN)
    x = _place(x, (0, 1, 3, 11), INF)
    b = torch.randn(2, generator=g, dtype=torch.float64)
    go = _place(torch.randn(1, 2, 11, 12, generator=g, dtype=torch.float64), (0, 1, 0, 0), NAN)
    ref = run(lambda *t: skip_conv2d(*t, (1, 1), (4, 4, 4, 4)), (x, w, b), go)
    ours = run(lambda *t: convext.depthwise_conv2d(*t, 1, 4, backend=backend),
               (x.float().to(device), w.float().to(device), b.float().to(device)), go.to(device))
    assert_same_pattern(ours, ref, ("output", "grad_input", "grad_weight", "grad_bias"))


# --------------------------------------------------------------------------- depthwise_conv1d

@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_depthwise_conv1d(device, backend, causal):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 9, generator=g, dtype=torch.float64)
    w = _place(torch.randn(2, 1, 3, generator=g, dtype=torch.float64), (0, 0, 0), NAN)
    w = _place(w, (1, 0, 2), INF)
    b = torch.randn(2, generator=g, dtype=torch.float64)
    pad = (4, 0) if causal else (2, 2)  # causal: dilation 2 -> left pad 4

    def ref_fn(x_, w_, b_):
        return skip_conv2d(x_.unsqueeze(2), w_.unsqueeze(2), b_, (1, 1), (0, 0) + pad, (1, 2)).squeeze(2)

    if backend == "torch" and causal:
        pytest.skip("the torch composite F.pad-s the causal padding: real zeros there")
    go = torch.randn(ref_fn(x, w, b).shape, generator=g, dtype=torch.float64)
    ref = run(ref_fn, (x, w, b), go)
    dtype = torch.float32
    ours = run(lambda *t: convext.depthwise_conv1d(*t, 1, 0 if causal else 2, 2, causal=causal, backend=backend),
               (x.to(device, dtype), w.to(device, dtype), b.to(device, dtype)), go.to(device))
    n = 1 if backend == "torch" else 4  # torch: F.conv2d's dilated NCHW weight gradient is im2col
    assert_same_pattern(ours[:n], ref[:n], ("output", "grad_input", "grad_weight", "grad_bias"))


# --------------------------------------------------------------------------- transposed conv

@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("stride,padding,output_padding,M", [(1, 1, 0, 1), (2, 1, 1, 1), (2, 2, 1, 2)])
def test_depthwise_conv_transpose2d(device, backend, stride, padding, output_padding, M):
    """A NaN (and an inf) weight: the transposed conv is the grad_input of a conv, so the outputs
    reached only through the padding stay finite (the issue: 36 NaN on Triton where torch has 4)."""
    if interpreted(device, backend) and M == 2:
        pytest.skip("interpreter time")
    g = torch.Generator().manual_seed(4)
    C = 2
    x = torch.randn(1, C, 4, 4, generator=g, dtype=torch.float64)
    w = _place(torch.randn(C, M, 3, 3, generator=g, dtype=torch.float64), (0, 0, 0, 0), NAN)
    w = _place(w, (1, M - 1, 2, 1), INF)
    b = torch.randn(C * M, generator=g, dtype=torch.float64)
    Ho = (4 - 1) * stride - 2 * padding + 2 + output_padding + 1

    def ref_fn(x_, w_, b_):
        inp = torch.zeros(1, C * M, Ho, Ho, dtype=x_.dtype, requires_grad=True)
        with torch.enable_grad():
            out = skip_conv2d(inp, w_.reshape(C * M, 1, 3, 3), None, (stride, stride), pads4(padding))
            y, = torch.autograd.grad(out, inp, x_.repeat_interleave(M, 1), create_graph=True)
        return y + b_.view(1, -1, 1, 1)

    go = torch.randn(1, C * M, Ho, Ho, generator=g, dtype=torch.float64)
    x_ = x.clone().requires_grad_()
    ref_out = ref_fn(x_, w, b).detach()
    ours = run(lambda *t: convext.depthwise_conv_transpose2d(*t, stride, padding, output_padding, backend=backend),
               (x.float().to(device), w.float().to(device), b.float().to(device)), go.to(device))
    assert_same_pattern(ours[:1], [ref_out], ("output",))
    torch_out = F.conv_transpose2d(x.float(), w.float(), b.float(), stride, padding, output_padding, C)
    if M == 1:  # torch (oneDNN deconvolution) agrees
        assert_same_pattern([torch_out], [ref_out], ("F.conv_transpose2d",))
    # grad_input of the transposed conv is the forward conv of grad_output (skip_conv2d)
    gi_ref = skip_conv2d(go, w.reshape(C * M, 1, 3, 3), None, (stride, stride), pads4(padding))
    gi_ref = gi_ref.view(1, C, M, 4, 4).sum(2)
    if backend == "torch" and M > 1:
        return  # F.conv_transpose2d's input gradient (im2col for M > 1) multiplies the padding
    assert_same_pattern(ours[1:2], [gi_ref], ("grad_input",))
    if stride == 1 and M == 1:
        nan_outputs = ours[0].isnan().sum().item()
        assert nan_outputs == torch_out.isnan().sum().item()


# --------------------------------------------------------------------------- separable

# (activation 1, activation 2, tensor, value)
SEP_CASES = [
    (None, None, "depthwise_weight", NAN),
    ("relu", None, "input", NAN),
    ("relu", "relu", "pointwise_weight", INF),
    ("relu6", None, "pointwise_weight", -INF),
    ("relu6", "relu6", "input", INF),
    ("hardswish", "hardswish", "depthwise_weight", NAN),
    ("silu", "hardswish", "input", -INF),
    ("gelu", "relu6", "depthwise_weight", NAN),  # (gelu(+inf) is NaN or inf depending on torch's CPU path)
]
INTERPRETED_SEP = {0, 1, 3, 5}


def _sep_params():
    params = []
    for i, case in enumerate(SEP_CASES):
        for p in DEVICE_BACKENDS:
            device, backend = p.values
            if interpreted(device, backend) and i not in INTERPRETED_SEP:
                continue
            params.append(pytest.param(device, backend, case, id=f"{p.id}-{case[0]}-{case[1]}-{case[2]}",
                                       marks=p.marks))
    return params


@pytest.mark.parametrize("device,backend,case", _sep_params())
def test_depthwise_separable_conv2d(device, backend, case):
    a1, a2, what, value = case
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64) * 3
    dw = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64)
    db = torch.randn(2, generator=g, dtype=torch.float64)
    pw = torch.randn(3, 2, 1, 1, generator=g, dtype=torch.float64)
    pb = torch.randn(3, generator=g, dtype=torch.float64)
    where = {"input": (0, 0, 0, 4), "depthwise_weight": (1, 0, 0, 0), "pointwise_weight": (1, 0, 0, 0)}[what]
    t = dict(input=x, depthwise_weight=dw, pointwise_weight=pw)
    t[what] = _place(t[what], where, value)
    tensors = (t["input"], t["depthwise_weight"], t["pointwise_weight"], db, pb)
    go = torch.randn(1, 3, 5, 5, generator=g, dtype=torch.float64)
    ref = run(lambda x_, dw_, pw_, db_, pb_: ACT[a2](F.conv2d(ACT[a1](skip_conv2d(x_, dw_, db_, (1, 1), (1, 1, 1, 1))),
                                                             pw_, pb_)), tensors, go)
    if backend == "torch" and (what == "depthwise_weight" or a1 in ("relu6", "hardswish")
                               or a2 in ("relu6", "hardswish")):
        pytest.skip("the torch composite inherits F.conv2d's float32 NCHW pattern and ATen's vectorised "
                    "relu6 / hardswish derivatives at NaN")
    ours = run(lambda *ts: convext.depthwise_separable_conv2d(*ts, 1, 1, 1, backend=backend, depthwise_activation=a1,
                                                              pointwise_activation=a2),
               [tt.float().to(device) for tt in tensors], go.to(device))
    assert_same_pattern(ours, ref, ("output", "grad_input", "grad_depthwise_weight", "grad_pointwise_weight",
                                    "grad_depthwise_bias", "grad_pointwise_bias"))


@pytest.mark.parametrize("device,backend", device_backend_params(lambda b: b != "torch"))
@pytest.mark.parametrize("act", ["relu", "relu6", "hardswish"])
def test_activation_at_nonfinite(device, backend, act):
    """relu / relu6 keep NaN (no tl.maximum turning it into 0); their derivatives at NaN pass the
    gradient; at +-inf they are the limits. A 1x1 depthwise weight of ones and an identity
    pointwise weight put the values straight into each activation."""
    v = torch.tensor([NAN, INF, -INF, 1.0, -1.0, 7.0, NAN, -INF], dtype=torch.float64)
    C = 2
    x = v.view(1, C, 2, 2)
    ones = torch.ones(C, 1, 1, 1, dtype=torch.float64)
    eye = torch.eye(C, dtype=torch.float64).view(C, C, 1, 1)
    go = torch.arange(1.0, 9.0, dtype=torch.float64).view(1, C, 2, 2)
    for acts in ((act, None), (None, act)):
        ref = run(lambda x_: ACT[acts[1]](F.conv2d(ACT[acts[0]](x_), eye)), (x,), go)
        ours = run(lambda x_: convext.depthwise_separable_conv2d(
            x_, ones.float().to(device), eye.float().to(device), backend=backend, depthwise_activation=acts[0],
            pointwise_activation=acts[1]), (x.float().to(device),), go.to(device))
        # eye: 0 * inf = NaN mixes the channels in the 1x1 conv too, as in torch
        assert_same_pattern(ours, ref, ("output", "grad_input"))


# --------------------------------------------------------------------------- spatial separable

@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("what", ["vertical_weight", "horizontal_weight", "input", "grad_output"])
def test_spatial_separable_conv2d(device, backend, what):
    if backend == "torch" and what != "input":
        pytest.skip("the torch composite is two F.conv2d calls (float32 NCHW depthwise: oneDNN only for "
                    "undilated M = 1, here M = 2)")
    g = torch.Generator().manual_seed(8)
    x = torch.randn(1, 2, 5, 6, generator=g, dtype=torch.float64)
    vw = torch.randn(4, 1, 3, 1, generator=g, dtype=torch.float64)
    hw = torch.randn(4, 1, 1, 3, generator=g, dtype=torch.float64)
    vb = torch.randn(4, generator=g, dtype=torch.float64)
    hb = torch.randn(4, generator=g, dtype=torch.float64)
    stride, dil = (1, 2), (2, 1)

    def ref_fn(x_, vw_, hw_, vb_, hb_):
        z = skip_conv2d(x_, vw_, vb_, (stride[0], 1), (2, 2, 0, 0), (dil[0], 1))
        return skip_conv2d(z, hw_, hb_, (1, stride[1]), (0, 0, 1, 1), (1, dil[1]))

    go = torch.randn(ref_fn(x, vw, hw, vb, hb).shape, generator=g, dtype=torch.float64)
    t = dict(input=x, vertical_weight=vw, horizontal_weight=hw, grad_output=go)
    t[what] = _place(t[what], {"input": (0, 1, 0, 5), "vertical_weight": (1, 0, 0, 0),
                               "horizontal_weight": (2, 0, 0, 2), "grad_output": (0, 3, 0, 0)}[what], NAN)
    tensors = (t["input"], t["vertical_weight"], t["horizontal_weight"], vb, hb)
    ref = run(ref_fn, tensors, t["grad_output"])
    ours = run(lambda *ts: convext.spatial_separable_conv2d(*ts, stride, (2, 1), dil, backend=backend),
               [tt.float().to(device) for tt in tensors], t["grad_output"].to(device))
    assert_same_pattern(ours, ref, ("output", "grad_input", "grad_vertical_weight", "grad_horizontal_weight",
                                    "grad_vertical_bias", "grad_horizontal_bias"))


# --------------------------------------------------------------------------- empty spatial inputs

EMPTY_CASES = [
    ("conv2d-H0-padded", lambda: convext.depthwise_conv2d(torch.randn(1, 2, 0, 5), torch.randn(2, 1, 3, 3),
                                                          padding=2)),
    ("conv2d-W0", lambda: convext.depthwise_conv2d(torch.randn(2, 0, 5), torch.randn(2, 1, 1, 1))),
    ("separable-H0", lambda: convext.depthwise_separable_conv2d(torch.randn(1, 2, 0, 4), torch.randn(2, 1, 3, 3),
                                                                torch.randn(3, 2, 1, 1), padding=2)),
    ("conv1d-L0", lambda: convext.depthwise_conv1d(torch.randn(1, 2, 0), torch.randn(2, 1, 3), padding=2)),
    ("conv1d-L0-causal", lambda: convext.depthwise_conv1d(torch.randn(2, 0), torch.randn(2, 1, 1), causal=True)),
    ("transposed-H0", lambda: convext.depthwise_conv_transpose2d(torch.randn(1, 2, 0, 3), torch.randn(2, 1, 3, 3))),
    ("spatial-W0", lambda: convext.spatial_separable_conv2d(torch.randn(1, 2, 4, 0), torch.randn(2, 1, 3, 1),
                                                            torch.randn(2, 1, 1, 3), padding=2)),
]


@pytest.mark.parametrize("case", EMPTY_CASES, ids=[c[0] for c in EMPTY_CASES])
def test_empty_spatial_input_rejected(case):
    """torch rejects an empty spatial size unless the batch is empty, even when padding would make
    room for the kernel; convext too, saying so."""
    with pytest.raises(ValueError, match=r"input has an empty spatial size"):
        case[1]()


def test_empty_spatial_input_with_empty_batch_is_accepted():
    x, w = torch.randn(0, 2, 0, 5), torch.randn(2, 1, 3, 3)
    for backend in CPU_BACKENDS:
        assert convext.depthwise_conv2d(x, w, padding=2, backend=backend).shape == F.conv2d(x, w, None, 1, 2,
                                                                                              groups=2).shape


def test_torch_rejects_the_same():
    with pytest.raises(RuntimeError):
        F.conv2d(torch.randn(1, 2, 0, 5), torch.randn(2, 1, 3, 3), None, 1, 2, 1, 2)
    with pytest.raises(RuntimeError):
        F.conv1d(torch.randn(1, 2, 0), torch.randn(2, 1, 3), None, 1, 2, 1, 2)
