"""Mixed precision and tracing (API.md, "Mixed precision, tracing, compilation").

- torch.autocast: every functional op and layer runs in the autocast dtype where F.conv2d / conv1d /
  conv_transpose2d would (autocast's eligibility: floating, not float64, on the autocast device), on
  every backend; the output has that dtype and matches torch under the same autocast by the shared
  error rule (against a float64 reference on the values autocast hands the conv); gradients reach
  the parameters in their own dtype; torch.compile, torch.export and a GradScaler see the same.
- torch.fx.symbolic_trace: convext functional calls are leaf call_function nodes (through
  __torch_function__, as torch.nn.functional), the layers trace, and the GraphModule computes what
  the module does; torch.compile(fullgraph=True) and torch.export still work.
"""
import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import convext
import convext.functional as CF
from conftest import CPU_BACKENDS, HAS_CUDA, assert_matches, assert_memory_format, device_backend_params, interpreted

DEVICE_BACKENDS = device_backend_params()
# the interpreted Triton backend is covered op by op; whole models and compiles use the fast ones
FAST_CPU_BACKENDS = [b for b in CPU_BACKENDS if not interpreted("cpu", b)]
OPS = ("depthwise_conv2d", "depthwise_separable_conv2d", "depthwise_conv1d", "depthwise_conv_transpose2d")


# CPU autocast takes float16 too (torch >= 2.4); where torch lacks a CPU float16 conv the case skips
LOWP = (torch.bfloat16, torch.float16)


# --------------------------------------------------------------------------- op cases


def op_case(name, backend, device, tiny=False):
    """(ours, theirs, tensors): convext's call, the torch.nn.functional call it equals, float32 inputs
    (input first, then the parameters), small and with every geometry argument away from its default."""
    g = torch.Generator().manual_seed(3)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    N, C, H, W = (1, 2, 5, 6) if tiny else (2, 3, 9, 10)
    if name == "depthwise_conv2d":
        x, w, b = r(N, C, H, W), r(2 * C, 1, 3, 2, scale=0.4), r(2 * C)

        def ours(x, w, b):
            return convext.depthwise_conv2d(x, w, b, (2, 1), 1, (1, 2), backend=backend)

        def theirs(x, w, b):
            return F.conv2d(x, w, b, (2, 1), 1, (1, 2), groups=C)
        return ours, theirs, (x, w, b)
    if name == "depthwise_separable_conv2d":
        cout = 4
        x, dw, pw, db, pb = r(N, C, H, W), r(C, 1, 3, 3, scale=0.3), r(cout, C, 1, 1, scale=0.5), r(C), r(cout)

        def ours(x, dw, pw, db, pb):
            return convext.depthwise_separable_conv2d(x, dw, pw, db, pb, 1, 2, 2, backend=backend,
                                                      depthwise_activation="relu6", pointwise_activation="gelu")

        def theirs(x, dw, pw, db, pb):
            return F.gelu(F.conv2d(F.relu6(F.conv2d(x, dw, db, 1, 2, 2, groups=C)), pw, pb))
        return ours, theirs, (x, dw, pw, db, pb)
    if name == "depthwise_conv1d":
        x, w, b = r(N, C, 3 * W), r(C, 1, 3, scale=0.5), r(C)

        def ours(x, w, b):
            return convext.depthwise_conv1d(x, w, b, dilation=2, causal=True, backend=backend)

        def theirs(x, w, b):
            return F.conv1d(F.pad(x, (4, 0)), w, b, 1, 0, 2, groups=C)
        return ours, theirs, (x, w, b)
    if name == "depthwise_conv_transpose2d":
        x, w, b = r(N, C, H - 2, W - 2), r(C, 2, 3, 3, scale=0.4), r(2 * C)

        def ours(x, w, b):
            return convext.depthwise_conv_transpose2d(x, w, b, 2, 1, 1, backend=backend)

        def theirs(x, w, b):
            return F.conv_transpose2d(x, w, b, 2, 1, 1, groups=C)
        return ours, theirs, (x, w, b)
    raise ValueError(name)


def _run(fn, tensors, grad_out, autocast=None):
    """fn(*leaves) (inside torch.autocast(*autocast) when given), then backward outside it as the
    autocast docs recommend; returns (output, grads of the leaves)."""
    leaves = [t.detach().requires_grad_(True) for t in tensors]
    ctx = torch.autocast(*autocast) if autocast else contextlib.nullcontext()
    with ctx:
        out = fn(*leaves)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), [t.grad for t in leaves]


def _skip_if_torch_lacks(theirs, tensors, device, dtype):
    try:
        with torch.autocast(device, dtype):
            theirs(*tensors)
    except RuntimeError as e:
        pytest.skip(f"torch itself has no {device} {dtype} kernel for this conv: {e}")


def _autocast_params():
    params = []
    for p in DEVICE_BACKENDS:
        device, backend = p.values
        for dtype in LOWP:
            for op in OPS:
                if interpreted(device, backend) and dtype != torch.bfloat16:
                    continue  # the interpreter is slow: one autocast dtype covers its casts
                params.append(pytest.param(device, backend, dtype, op, id=f"{p.id}-{str(dtype)[6:]}-{op}",
                                           marks=p.marks))
    return params


@pytest.mark.parametrize("device,backend,dtype,op", _autocast_params())
@pytest.mark.parametrize("input_dtype", ["float32", "autocast"])
def test_autocast_functional(device, backend, dtype, op, input_dtype):
    """Under torch.autocast the op returns the autocast dtype, matches torch's conv under the same
    autocast (error rule against float64 on the autocast-rounded values), is exactly the op run on
    explicitly cast arguments, and the gradients reach each tensor in its own dtype. The input is
    float32, or already in the autocast dtype with float32 parameters (a model after its first layer)."""
    tiny = interpreted(device, backend)
    ours, theirs, tensors = op_case(op, backend, device, tiny)
    if input_dtype == "autocast":
        tensors = (tensors[0].to(dtype),) + tensors[1:]
    _skip_if_torch_lacks(theirs, tensors, device, dtype)
    with torch.no_grad(), torch.autocast(device, dtype):
        shape = theirs(*tensors).shape
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(5)).to(device)

    out, grads = _run(ours, tensors, grad_out, (device, dtype))
    torch_out, torch_grads = _run(theirs, tensors, grad_out, (device, dtype))
    assert out.dtype == torch_out.dtype == dtype
    assert out.device == tensors[0].device
    assert_memory_format(out, tensors[0])

    # float64 on exactly the values autocast hands the conv: every argument rounded to `dtype`
    rounded = [t.to(dtype).double() for t in tensors]
    ref, ref_grads = _run(theirs, rounded, grad_out.to(dtype).double())
    assert_matches(out, ref, torch_out, dtype=dtype, name="output")
    for i, (g, tg, rg, t) in enumerate(zip(grads, torch_grads, ref_grads, tensors)):
        assert g is not None and g.dtype == t.dtype == tg.dtype, f"grad {i}: {g} for a {t.dtype} tensor"
        assert_matches(g, rg, tg, dtype=dtype, name=f"grad {i}")

    # autocast is a cast of the eligible arguments, nothing else: bitwise the explicit cast
    explicit, explicit_grads = _run(lambda *ts: ours(*(t.to(dtype) for t in ts)), tensors, grad_out)
    assert torch.equal(out, explicit)
    for g, eg in zip(grads, explicit_grads):
        assert torch.equal(g, eg)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_autocast_channels_last_and_unbatched(backend):
    """The casts keep the input's memory format, and unbatched inputs work under autocast."""
    tiny = interpreted("cpu", backend)
    ours, theirs, (x, w, b) = op_case("depthwise_conv2d", backend, "cpu", tiny)
    for xin in (x.contiguous(memory_format=torch.channels_last), x[0]):
        with torch.autocast("cpu", torch.bfloat16):
            out, expected = ours(xin, w, b), theirs(xin, w, b)
        assert out.dtype == expected.dtype == torch.bfloat16
        assert out.shape == expected.shape
        assert_memory_format(out, xin)
        ref = theirs(*(t.to(torch.bfloat16).double() for t in (xin, w, b)))
        assert_matches(out, ref, expected, name="output")


@pytest.mark.parametrize("op", OPS)
def test_autocast_disabled_and_off(op):
    """Autocast off (never entered, or disabled inside an autocast region): the op runs in float32."""
    ours, theirs, tensors = op_case(op, "auto", "cpu")
    with torch.autocast("cpu", torch.bfloat16):
        with torch.autocast("cpu", enabled=False):
            assert ours(*tensors).dtype == theirs(*tensors).dtype == torch.float32
    assert ours(*tensors).dtype == torch.float32


@pytest.mark.parametrize("op", OPS)
def test_autocast_float64(op):
    """float64 is not eligible, as for torch: all-float64 arguments run in float64 under autocast; a
    float64 input with float32 parameters (cast, so mismatched) raises, naming the argument, where
    torch's conv raises too."""
    ours, theirs, tensors = op_case(op, "auto", "cpu")
    t64 = [t.double() for t in tensors]
    with torch.autocast("cpu", torch.bfloat16):
        out, expected = ours(*t64), theirs(*t64)
        assert out.dtype == expected.dtype == torch.float64
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        mixed = (t64[0],) + tuple(tensors[1:])
        with pytest.raises(RuntimeError):
            theirs(*mixed)
        with pytest.raises(TypeError, match=r"weight.*float32.*float64"):
            ours(*mixed)
        mixed = (tensors[0], t64[1]) + tuple(tensors[2:])
        with pytest.raises(RuntimeError):
            theirs(*mixed)
        with pytest.raises(TypeError, match=r"weight.*float64"):
            ours(*mixed)


def test_autocast_non_floating_not_cast():
    """Integer tensors are not eligible: the usual dtype error, not a silent cast."""
    x = torch.ones(1, 2, 5, 5, dtype=torch.int64)
    with torch.autocast("cpu", torch.bfloat16):
        with pytest.raises(TypeError, match="input"):
            convext.depthwise_conv2d(x, torch.randn(2, 1, 3, 3))


# --------------------------------------------------------------------------- layers


class LayerNet(nn.Module):
    """Every convext layer, with the options that take other code paths: reflect padding, fused
    activations, transposed conv with output_size (from the input's size), causal conv1d."""

    def __init__(self, backend="auto"):
        super().__init__()
        self.dw = convext.nn.DepthwiseConv2d(3, 3, padding=1, depth_multiplier=2, padding_mode="reflect",
                                             backend=backend)
        self.sep = convext.nn.DepthwiseSeparableConv2d(6, 4, 3, padding=2, dilation=2, backend=backend,
                                                       depthwise_activation="relu6", pointwise_activation="silu")
        self.up = convext.nn.DepthwiseConvTranspose2d(4, 3, stride=2, padding=1, backend=backend)
        self.tcn = convext.nn.DepthwiseConv1d(4, 3, dilation=2, causal=True, depth_multiplier=2, backend=backend)

    def forward(self, x):
        y = self.sep(self.dw(x))
        y = self.up(y, output_size=[2 * x.size(2), 2 * x.size(3)])
        return self.tcn(y.flatten(2))


def torch_layer_net(m, x):
    """LayerNet with torch.nn.functional on m's parameters (the reference)."""
    dw, sep, up, tcn = m.dw, m.sep, m.up, m.tcn
    y = F.conv2d(F.pad(x, dw._reversed_padding_repeated_twice, mode="reflect"), dw.weight, dw.bias, groups=3)
    y = F.conv2d(y, sep.depthwise.weight, sep.depthwise.bias, 1, 2, 2, groups=6)
    y = F.silu(F.conv2d(F.relu6(y), sep.pointwise.weight, sep.pointwise.bias))
    y = F.conv_transpose2d(y, up.weight, up.bias, 2, 1, 1, groups=4)
    return F.conv1d(F.pad(y.flatten(2), (4, 0)), tcn.weight, tcn.bias, dilation=2, groups=4)


def _layer_net(backend):
    torch.manual_seed(0)
    return LayerNet(backend)


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_autocast_layers(backend, dtype):
    """Every layer under autocast: output dtype and values as the torch.nn composite under the same
    autocast; parameter gradients in float32 and as torch's."""
    m = _layer_net(backend)
    x = torch.randn(2, 3, 7, 6)
    _skip_if_torch_lacks(lambda x: torch_layer_net(m, x), (x,), "cpu", dtype)
    go = torch.randn(2, 8, 7 * 6 * 4)
    names = [n for n, _ in m.named_parameters()]

    def run(fn):
        m.zero_grad(set_to_none=True)
        out, _ = _run(fn, (x,), go, ("cpu", dtype))
        return out, [p.grad for p in m.parameters()]

    out, grads = run(m)
    expected, expected_grads = run(lambda x: torch_layer_net(m, x))
    assert out.dtype == expected.dtype == dtype
    # float64 reference: the same net on float64 copies of the parameters rounded to `dtype`,
    # and every layer's input rounded too (what autocast hands each conv)
    m64 = _rounded_copy(m, dtype)
    assert_matches(out, _rounded_forward(m64, x, dtype), expected, dtype=dtype)
    ref_grads = _rounded_grads(m64, x, go, dtype)
    for n, p, g, eg in zip(names, m.parameters(), grads, expected_grads):
        assert g.dtype == p.dtype == torch.float32, n
        assert_matches(g, ref_grads[n], eg, dtype=dtype, name=n)


def _rounded_forward(m64, x, dtype):
    """LayerNet in float64 with each conv's input rounded to `dtype` first (autocast's casts)."""
    def q(t):
        return t.to(dtype).to(torch.float64)
    dw, sep, up, tcn = m64.dw, m64.sep, m64.up, m64.tcn
    y = F.pad(q(x.double()), dw._reversed_padding_repeated_twice, mode="reflect")
    y = F.conv2d(y, dw.weight, dw.bias, groups=3)
    y = F.conv2d(q(y), sep.depthwise.weight, sep.depthwise.bias, 1, 2, 2, groups=6)
    y = F.silu(F.conv2d(F.relu6(y), sep.pointwise.weight, sep.pointwise.bias))
    y = F.conv_transpose2d(q(y), up.weight, up.bias, 2, 1, 1, groups=4)
    return F.conv1d(F.pad(q(y.flatten(2)), (4, 0)), tcn.weight, tcn.bias, dilation=2, groups=4)


def _rounded_grads(m64, x, go, dtype):
    """{name: gradient} of _rounded_forward for the output gradient `go` (rounded as autocast's)."""
    m64.zero_grad(set_to_none=True)
    _rounded_forward(m64, x, dtype).backward(go.to(dtype).double())
    return {n: p.grad for n, p in m64.named_parameters()}


def _rounded_copy(m, dtype):
    """A float64 copy of m whose parameters hold m's parameters rounded to `dtype`."""
    m64 = copy.deepcopy(m)
    with torch.no_grad():
        for p in m64.parameters():
            p.copy_(p.to(dtype))
    return m64.double()


def test_autocast_compile_fullgraph():
    """torch.compile(fullgraph=True) (aot_eager) of the layers: same dtype, values and gradients as
    eager under autocast, and a graph compiled outside autocast is not reused inside it (guards)."""
    m = _layer_net("auto")
    x = torch.randn(2, 3, 7, 6)
    go = torch.randn(2, 8, 7 * 6 * 4)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
        assert compiled(x).dtype == torch.float32
        for dtype in (torch.bfloat16, torch.float16):
            results = []
            for fn in (m, compiled):
                m.zero_grad(set_to_none=True)
                out, _ = _run(fn, (x,), go, ("cpu", dtype))
                results.append((out, [p.grad for p in m.parameters()]))
            (out, grads), (cout, cgrads) = results
            assert cout.dtype == out.dtype == dtype
            torch.testing.assert_close(cout, out, rtol=0, atol=0)
            for g, cg in zip(grads, cgrads):
                assert cg.dtype == torch.float32
                torch.testing.assert_close(cg, g, rtol=0, atol=0)
    finally:
        torch._dynamo.reset()


def _is_toolchain_error(e):
    text = f"{type(e).__name__}: {e}"
    return any(s in text for s in ("CppCompileError", "C++ compiler", "InvalidCxxCompiler",
                                   "No such file or directory: 'g++'"))


def test_autocast_compile_inductor():
    """One inductor compile (cold compiles are slow): a depthwise layer and a separable layer under
    autocast, forward only."""
    torch.manual_seed(0)
    m = nn.Sequential(convext.nn.DepthwiseConv2d(4, 3, padding=1, backend="cpu"),
                      convext.nn.DepthwiseSeparableConv2d(4, 6, 3, padding=1, backend="cpu",
                                                          depthwise_activation="relu")).eval()
    x = torch.randn(2, 4, 8, 9)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(m, fullgraph=True)
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            out = m(x)
            try:
                cout = compiled(x)
            except Exception as e:
                if _is_toolchain_error(e):
                    pytest.skip(f"torch.compile cannot build kernels on this machine: {type(e).__name__}")
                raise
        assert cout.dtype == out.dtype == torch.bfloat16
        torch.testing.assert_close(cout, out, rtol=0, atol=0)
    finally:
        torch._dynamo.reset()


class AutocastInside(nn.Module):
    def __init__(self, inner, dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, x):
        with torch.autocast("cpu", self.dtype):
            return self.inner(x)


def test_autocast_export():
    """torch.export of a model that enters autocast in its forward (export's way: a
    wrap_with_autocast region) and of a model exported under autocast: the exported program
    computes in the autocast dtype, equal to eager, with the convext ops in its graph."""
    m = _layer_net("cpu").eval()
    x = torch.randn(2, 3, 7, 6)
    wrapped = AutocastInside(m, torch.bfloat16)
    with torch.no_grad():
        expected = wrapped(x)
    assert expected.dtype == torch.bfloat16
    exported = torch.export.export(wrapped, (x,))
    out = exported.module()(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)

    with torch.autocast("cpu", torch.bfloat16):
        exported = torch.export.export(m, (x,))
        out = exported.module()(x)
    assert "convext." in exported.graph_module.code
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def _grad_scaler_steps(device, backend, dtype):
    """Three SGD steps with torch.amp.GradScaler under autocast, for LayerNet and for its torch.nn
    composite. The first step's unscaled float32 gradients match the float64 reference by the error
    rule (torch's as the yardstick); the scaler skips no step on one side only; parameters move."""
    torch.manual_seed(0)
    m = LayerNet(backend).to(device)
    ref = copy.deepcopy(m)
    initial = [p.detach().clone() for p in m.parameters()]
    x = torch.randn(2, 3, 7, 6, device=device)
    go = torch.randn(2, 8, 7 * 6 * 4, device=device)
    runs = []
    for model, forward in ((m, m), (ref, lambda x: torch_layer_net(ref, x))):
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        # a power of two: the scaled output gradient rounds as the unscaled one
        scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 6)
        first, scales = None, []
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype):
                out = forward(x)
                loss = (out.float() * go).sum()  # linear: its output gradient is `go`
            assert out.dtype == dtype
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            for p in model.parameters():
                assert p.grad.dtype == p.dtype == torch.float32
            if first is None:
                first = {n: p.grad.clone() for n, p in model.named_parameters()}
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        runs.append((first, scales))
    (grads, scales), (torch_grads, torch_scales) = runs
    assert scales == torch_scales == [2.0 ** 6] * 3  # no step skipped for non-finite gradients
    ref_grads = _rounded_grads(_rounded_copy(m_initial(m, initial), dtype), x.cpu(), go.cpu(), dtype)
    for n in grads:
        assert_matches(grads[n], ref_grads[n], torch_grads[n], dtype=dtype, name=n)
    for p, p0 in zip(m.parameters(), initial):
        assert not torch.equal(p.detach(), p0)


def m_initial(m, initial):
    """A CPU copy of m holding the parameter values `initial`."""
    m0 = copy.deepcopy(m).cpu()
    with torch.no_grad():
        for p, p0 in zip(m0.parameters(), initial):
            p.copy_(p0)
    return m0


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "torch"])
def test_grad_scaler_cuda(backend):
    """torch.amp.GradScaler with float16 autocast on CUDA, the usual mixed-precision training loop."""
    if backend not in convext.backends("cuda"):
        pytest.skip(f"{backend} not available on cuda")
    _grad_scaler_steps("cuda", backend, torch.float16)


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
def test_grad_scaler_cpu(backend):
    """The same loop on CPU (bfloat16 autocast; CPU GradScaler), which runs on every machine."""
    _grad_scaler_steps("cpu", backend, torch.bfloat16)


# --------------------------------------------------------------------------- torch.fx


class FunctionalNet(nn.Module):
    """Calls each functional op, positional and keyword arguments mixed."""

    def __init__(self, backend="auto"):
        super().__init__()
        self.backend = backend
        self.w = nn.Parameter(torch.randn(6, 1, 3, 3) * 0.3)
        self.b = nn.Parameter(torch.randn(6))
        self.pw = nn.Parameter(torch.randn(5, 6, 1, 1) * 0.4)
        self.w1 = nn.Parameter(torch.randn(5, 1, 3) * 0.5)
        self.wt = nn.Parameter(torch.randn(5, 1, 2, 2) * 0.5)

    def forward(self, x):
        y = CF.depthwise_conv2d(x, self.w, self.b, stride=1, padding="same", dilation=2, backend=self.backend)
        y = convext.depthwise_separable_conv2d(y, self.w, self.pw, None, pointwise_bias=None, padding=1,
                                               backend=self.backend, depthwise_activation="silu")
        y = convext.depthwise_conv_transpose2d(y, self.wt, None, 2, backend=self.backend)
        return convext.depthwise_conv1d(y.flatten(2), self.w1, None, 2, causal=True, backend=self.backend)


def torch_functional_net(m, x):
    y = F.conv2d(x, m.w, m.b, 1, "same", 2, groups=3)
    y = F.conv2d(F.silu(F.conv2d(y, m.w, None, 1, 1, 1, groups=6)), m.pw)
    y = F.conv_transpose2d(y, m.wt, None, 2, groups=5)
    return F.conv1d(F.pad(y.flatten(2), (2, 0)), m.w1, None, 2, groups=5)


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fx_functional_leaf_nodes(backend):
    """symbolic_trace records each convext functional call as one call_function node (a leaf: its
    internals are not traced), and the GraphModule computes the module's function, with gradients."""
    torch.manual_seed(0)
    m = FunctionalNet(backend)
    gm = torch.fx.symbolic_trace(m)
    targets = _targets(gm)
    for fn in (convext.depthwise_conv2d, convext.depthwise_separable_conv2d, convext.depthwise_conv_transpose2d,
               convext.depthwise_conv1d):
        assert targets.count(fn) == 1, (fn.__name__, targets)
    node = next(n for n in gm.graph.nodes if n.target is convext.depthwise_separable_conv2d)
    assert node.kwargs["depthwise_activation"] == "silu" and node.kwargs["backend"] == backend
    x = torch.randn(1, 3, 5, 4) if interpreted("cpu", backend) else torch.randn(2, 3, 9, 8)
    out, expected = gm(x), m(x)
    assert torch.equal(out, expected)
    torch.testing.assert_close(out, torch_functional_net(m, x), rtol=1e-4, atol=1e-5)
    names = [n for n, _ in m.named_parameters()]
    gm_params = dict(gm.named_parameters())
    assert sorted(gm_params) == sorted(names)
    grads = torch.autograd.grad(gm(x).sum(), [gm_params[n] for n in names])
    expected_grads = torch.autograd.grad(m(x).sum(), list(m.parameters()))
    for n, g, eg in zip(names, grads, expected_grads):
        assert torch.equal(g, eg), n


def test_fx_trace_function():
    """symbolic_trace of a plain function calling the functional API."""
    def fn(x, w, b):
        return convext.depthwise_conv2d(x, w, b, padding=1) * 2
    gm = torch.fx.symbolic_trace(fn)
    assert convext.depthwise_conv2d in _targets(gm)
    x, w, b = torch.randn(2, 3, 6, 6), torch.randn(3, 1, 3, 3), torch.randn(3)
    assert torch.equal(gm(x, w, b), fn(x, w, b))


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
def test_fx_layers(backend):
    """symbolic_trace of a model using every layer: reflect padding is an F.pad node, each layer one
    convext call (output_size through a leaf computing the output padding, so other input sizes work),
    and the GraphModule equals the model, also at an input size other than the traced one."""
    m = _layer_net(backend)
    gm = torch.fx.symbolic_trace(m)
    targets = _targets(gm)
    for fn in (convext.depthwise_conv2d, convext.depthwise_separable_conv2d, convext.depthwise_conv_transpose2d,
               convext.depthwise_conv1d, F.pad):
        assert targets.count(fn) == 1, (fn, targets)
    assert not [n for n in gm.graph.nodes if n.op == "call_module"]
    for shape in ((2, 3, 7, 6), (1, 3, 5, 9)):
        x = torch.randn(shape)
        out = gm(x)
        assert torch.equal(out, m(x))
        assert out.shape == (shape[0], 8, shape[2] * shape[3] * 4)
        torch.testing.assert_close(out, torch_layer_net(m, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="output_size"):
        m.up(torch.randn(1, 4, 3, 3), output_size=[9, 9])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_fx_graph_module_under_autocast(dtype):
    """The leaf nodes apply autocast when the GraphModule runs: as the module under autocast."""
    m = _layer_net("auto")
    gm = torch.fx.symbolic_trace(m)
    x = torch.randn(2, 3, 7, 6)
    with torch.autocast("cpu", dtype):
        out, expected = gm(x), m(x)
    assert out.dtype == expected.dtype == dtype
    assert torch.equal(out, expected)


def test_torch_function_protocol():
    """The functional ops honour __torch_function__ like torch.nn.functional: a TorchFunctionMode
    sees the public function itself (with its arguments) and may replace the result."""
    seen = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    ours, _, tensors = op_case("depthwise_separable_conv2d", "auto", "cpu")
    expected = ours(*tensors)
    with Record():
        out = ours(*tensors)
    assert convext.depthwise_separable_conv2d in seen
    assert torch.equal(out, expected)


@pytest.mark.parametrize("which", ["layers", "functional"])
def test_compile_and_export_after_fx_change(which):
    """torch.compile(fullgraph=True) (aot_eager) and torch.export of the layer and functional
    models, and of their symbolic_trace GraphModules: same result as eager, convext ops in the
    exported graph (the __torch_function__ check is transparent to dynamo and export)."""
    torch.manual_seed(0)
    m = (_layer_net("cpu") if which == "layers" else FunctionalNet("cpu")).eval()
    x = torch.randn(2, 3, 7, 6)
    gm = torch.fx.symbolic_trace(m)
    with torch.no_grad():
        expected = m(x)
    torch._dynamo.reset()
    try:
        for model in (m, gm):
            compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
            torch.testing.assert_close(compiled(x), expected, rtol=0, atol=0)
            exported = torch.export.export(model, (x,))
            ops = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
            assert "convext.depthwise_conv2d.default" in ops, ops
            torch.testing.assert_close(exported.module()(x), expected, rtol=0, atol=0)
    finally:
        torch._dynamo.reset()


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU visible")
def test_cuda_autocast_ignores_cpu_tensors():
    """autocast('cuda') leaves CPU tensors alone, as for F.conv2d (autocast is per device type)."""
    ours, theirs, tensors = op_case("depthwise_conv2d", "auto", "cpu")
    with torch.autocast("cuda", torch.float16):
        assert ours(*tensors).dtype == theirs(*tensors).dtype == torch.float32
