"""convext.nn layers: torch.nn drop-ins (construction, state_dict, forward == torch,
padding modes, torch.compile)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convext
from conftest import (
    ACTIVATIONS, activation_fn, assert_matches, device_backend_params, interpreted, require_backend,
)

DEVICE_BACKENDS = device_backend_params()


def with_configs(configs, ids):
    """(device, backend, config) params; the interpreted Triton backend gets the first config only."""
    params = []
    for p in DEVICE_BACKENDS:
        device, backend = p.values
        for i, (cfg, cid) in enumerate(zip(configs, ids)):
            if interpreted(device, backend) and i > 0:
                continue
            params.append(pytest.param(device, backend, cfg, id=f"{p.id}-{cid}", marks=p.marks))
    return params


def _compare_modules(ours, theirs, x, name="output"):
    """ours(x) vs theirs(x) and the grads of x and every parameter (matched by name), against a
    float64 copy of `theirs` with `theirs` at x's dtype as the yardstick (conftest.assert_matches)."""
    lowp = x.dtype != torch.float64
    theirs64 = copy.deepcopy(theirs).double()
    xs = x.detach().requires_grad_(True)
    xt = x.detach().requires_grad_(True)
    x64 = x.detach().double().requires_grad_(True)
    out, ref, ref64 = ours(xs), theirs(xt), theirs64(x64)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert_matches(out, ref64, ref if lowp else None, name=name)
    ours_p, theirs_p, p64 = (dict(m.named_parameters()) for m in (ours, theirs, theirs64))
    assert set(ours_p) == set(theirs_p)
    names = sorted(theirs_p)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, [xs] + [ours_p[n] for n in names], g)
    yard = torch.autograd.grad(ref, [xt] + [theirs_p[n] for n in names], g)
    want = torch.autograd.grad(ref64, [x64] + [p64[n] for n in names], g.double())
    for label, a, w, t in zip(["grad_input"] + names, got, want, yard):
        assert_matches(a, w, t if lowp else None, dtype=x.dtype, name=f"{name}: {label}")


# --------------------------------------------------------------------------- DepthwiseConv2d


def test_depthwise_conv2d_is_conv2d():
    m = convext.nn.DepthwiseConv2d(8, 3, stride=2, padding=1, dilation=1, bias=True, depth_multiplier=2)
    assert isinstance(m, nn.Conv2d)
    assert m.in_channels == 8 and m.out_channels == 16 and m.groups == 8
    assert m.kernel_size == (3, 3) and m.stride == (2, 2) and m.padding == (1, 1) and m.dilation == (1, 1)
    assert m.padding_mode == "zeros"
    sd = m.state_dict()
    assert list(sd) == ["weight", "bias"]
    assert sd["weight"].shape == (16, 1, 3, 3) and sd["bias"].shape == (16,)
    ref = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8)
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in sd.items()}


def test_depthwise_conv2d_no_bias_device_dtype():
    m = convext.nn.DepthwiseConv2d(4, (1, 7), padding=(0, 3), bias=False, dtype=torch.float64, device="cpu")
    assert m.bias is None and list(m.state_dict()) == ["weight"]
    assert m.weight.dtype == torch.float64 and m.weight.shape == (4, 1, 1, 7)


def test_depthwise_conv2d_same_init_distribution_as_torch():
    """Same reset_parameters as nn.Conv2d: bounds follow fan_in = k*k (not C*k*k)."""
    torch.manual_seed(0)
    m = convext.nn.DepthwiseConv2d(256, 5, depth_multiplier=2)
    bound = 1 / 25 ** 0.5
    assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
    assert m.bias.abs().max() <= bound


@pytest.mark.parametrize("device,backend,cfg", with_configs([
    dict(k=5, stride=2, padding=2, dilation=1, M=2),
    dict(k=3, stride=1, padding=1, dilation=1, M=1),
    dict(k=3, stride=1, padding="same", dilation=2, M=1),
    dict(k=(1, 7), stride=1, padding="valid", dilation=1, M=3),
], ["k5s2M2", "k3", "same-d2", "valid-1x7-M3"]))
def test_depthwise_conv2d_loads_torch_state_dict(device, backend, cfg):
    C = 2 if interpreted(device, backend) else 12
    ref = nn.Conv2d(C, C * cfg["M"], cfg["k"], cfg["stride"], cfg["padding"], cfg["dilation"], groups=C,
                    device=device)
    m = convext.nn.DepthwiseConv2d(C, cfg["k"], cfg["stride"], cfg["padding"], cfg["dilation"],
                                   depth_multiplier=cfg["M"], device=device, backend=backend)
    m.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1 if interpreted(device, backend) else 2, C, 9, 10, device=device)
    _compare_modules(m, ref, x)


_MODES = [(m, p) for p in [(2, 1), 1, "same"] for m in ["reflect", "circular", "replicate"]]


@pytest.mark.parametrize("device,backend,mode_padding", with_configs(_MODES, [f"{m}-{p}" for m, p in _MODES]))
def test_depthwise_conv2d_padding_modes(device, backend, mode_padding):
    padding_mode, padding = mode_padding
    C, N = (2, 1) if interpreted(device, backend) else (3, 2)
    ref = nn.Conv2d(C, C * 2, 3, padding=padding, groups=C, padding_mode=padding_mode, device=device,
                    dilation=2 if padding == "same" else 1)
    m = convext.nn.DepthwiseConv2d(C, 3, padding=padding, depth_multiplier=2, padding_mode=padding_mode,
                                   device=device, backend=backend, dilation=2 if padding == "same" else 1)
    m.load_state_dict(ref.state_dict())
    assert m.padding_mode == padding_mode
    _compare_modules(m, ref, torch.randn(N, C, 8, 9, device=device))


def test_depthwise_conv2d_unbatched_and_train_eval():
    """Unbatched input, in train mode and in eval mode: output and gradients (a conv has no
    mode-dependent behaviour, and must not grow one)."""
    m = convext.nn.DepthwiseConv2d(4, 3, padding=1)
    ref = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(4, 6, 7)
    for training in (True, False):
        m.train(training)
        ref.train(training)
        assert m.training is training
        _compare_modules(m, ref, x, name=f"{'train' if training else 'eval'} unbatched")
        out = m(x)
        assert out.shape == (4, 6, 7) and out.is_contiguous()


# --------------------------------------------------------------------------- DepthwiseSeparableConv2d


class HandWrittenSeparable(nn.Module):
    """The module people write by hand; its state_dict must load into DepthwiseSeparableConv2d."""

    def __init__(self, cin, cout, k, stride=1, padding=0, dilation=1, bias=True, act1=None, act2=None):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, k, stride, padding, dilation, groups=cin, bias=bias)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=bias)
        self.act1, self.act2 = activation_fn(act1), activation_fn(act2)

    def forward(self, x):
        return self.act2(self.pointwise(self.act1(self.depthwise(x))))


def test_separable_construction():
    m = convext.nn.DepthwiseSeparableConv2d(8, 16, 3, stride=2, padding=1, dilation=1, bias=True)
    assert isinstance(m, nn.Module)
    assert isinstance(m.depthwise, nn.Conv2d) and isinstance(m.pointwise, nn.Conv2d)
    assert m.depthwise.groups == 8 and m.depthwise.weight.shape == (8, 1, 3, 3)
    assert m.depthwise.stride == (2, 2) and m.depthwise.padding == (1, 1)
    assert m.pointwise.weight.shape == (16, 8, 1, 1) and m.pointwise.groups == 1
    sd = m.state_dict()
    assert set(sd) == {"depthwise.weight", "depthwise.bias", "pointwise.weight", "pointwise.bias"}
    assert sd["depthwise.bias"].shape == (8,) and sd["pointwise.bias"].shape == (16,)
    m2 = convext.nn.DepthwiseSeparableConv2d(4, 6, 5, depth_multiplier=2, bias=False, dtype=torch.float64)
    assert set(m2.state_dict()) == {"depthwise.weight", "pointwise.weight"}
    assert m2.depthwise.weight.shape == (8, 1, 5, 5) and m2.pointwise.weight.shape == (6, 8, 1, 1)
    assert m2.pointwise.weight.dtype == torch.float64


_ACTS = [("silu", "gelu"), (None, None), ("relu6", None), ("gelu", "relu")]


@pytest.mark.parametrize("device,backend,acts", with_configs(_ACTS, [f"{a}-{b}" for a, b in _ACTS]))
def test_separable_loads_handwritten_state_dict(device, backend, acts):
    cin, cout = (2, 3) if interpreted(device, backend) else (12, 20)
    ref = HandWrittenSeparable(cin, cout, 3, stride=2, padding=1, act1=acts[0], act2=acts[1]).to(device)
    m = convext.nn.DepthwiseSeparableConv2d(cin, cout, 3, stride=2, padding=1, device=device, backend=backend,
                                            depthwise_activation=acts[0], pointwise_activation=acts[1])
    m.load_state_dict(ref.state_dict(), strict=True)
    _compare_modules(m, ref, torch.randn(1 if interpreted(device, backend) else 2, cin, 9, 8, device=device))


def test_separable_every_activation_pair():
    """Each (depthwise, pointwise) activation pair is stored as given and computed: forward equals the
    hand-written module with those activations (float64 reference)."""
    x = torch.randn(1, 2, 5, 6) * 3
    for a1 in ACTIVATIONS:
        for a2 in ACTIVATIONS:
            m = convext.nn.DepthwiseSeparableConv2d(2, 3, 3, padding=1, depthwise_activation=a1,
                                                    pointwise_activation=a2)
            assert (m.depthwise_activation, m.pointwise_activation) == (a1 or "none", a2 or "none")
            ref = HandWrittenSeparable(2, 3, 3, padding=1, act1=a1, act2=a2)
            ref.load_state_dict(m.state_dict())
            with torch.no_grad():
                assert_matches(m(x), copy.deepcopy(ref).double()(x.double()), ref(x), name=f"{a1}-{a2}")


def test_separable_dilated_multiplier_matches_torch():
    m = convext.nn.DepthwiseSeparableConv2d(6, 10, 3, padding=2, dilation=2, depth_multiplier=2,
                                            depthwise_activation="relu")
    dw = nn.Conv2d(6, 12, 3, padding=2, dilation=2, groups=6)
    pw = nn.Conv2d(12, 10, 1)
    dw.load_state_dict(m.depthwise.state_dict())
    pw.load_state_dict(m.pointwise.state_dict())
    ref = nn.Sequential(dw, nn.ReLU(), pw)
    x = torch.randn(2, 6, 11, 13)
    with torch.no_grad():
        assert_matches(m(x), ref.double()(x.double()), ref.float()(x))


# --------------------------------------------------------------------------- torch.compile


class SmallNet(nn.Module):
    """Both layers, an activation between them: few inductor kernels (cold compiles are slow)."""

    def __init__(self, backend):
        super().__init__()
        self.dw = convext.nn.DepthwiseConv2d(4, 3, padding=1, depth_multiplier=2, backend=backend)
        self.sep = convext.nn.DepthwiseSeparableConv2d(8, 6, 3, stride=2, padding=2, dilation=2, backend=backend,
                                                       depthwise_activation="relu6")

    def forward(self, x):
        return self.sep(F.relu6(self.dw(x)) * 2)


class SmallNetTorch(nn.Module):
    """SmallNet in plain torch.nn (same state_dict keys): the reference."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(4, 8, 3, padding=1, groups=4)
        self.sep = HandWrittenSeparable(8, 6, 3, stride=2, padding=2, dilation=2, act1="relu6")

    def forward(self, x):
        return self.sep(F.relu6(self.dw(x)) * 2)


def _is_toolchain_error(e):
    text = f"{type(e).__name__}: {e}"
    return any(s in text for s in ("CppCompileError", "C++ compiler", "InvalidCxxCompiler", "No such file or "
                                   "directory: 'g++'", "cl.exe"))


_COMPILE_PARAMS = [pytest.param("cpu", b, id=f"cpu-{b}") for b in ("cpu", "torch")] + [
    pytest.param("cuda", b, id=f"cuda-{b}", marks=pytest.mark.gpu) for b in ("cuda", "triton", "torch")]


@pytest.mark.parametrize("device,backend", _COMPILE_PARAMS)
def test_torch_compile_fullgraph(device, backend):
    """fullgraph=True: no graph breaks through the public ops (fake kernels, autograd); the compiled
    model's output and gradients match the float64 torch.nn model (torch at fp32 the yardstick),
    as the eager model's do. (A missing backend fails: conftest.require_backend.)"""
    torch._dynamo.reset()
    model = SmallNet(backend).to(device)
    ref = SmallNetTorch().to(device)
    ref.load_state_dict(model.state_dict())
    ref64 = copy.deepcopy(ref).double()
    x = torch.randn(2, 4, 11, 12, device=device)
    compiled = torch.compile(model, fullgraph=True)
    go = None

    def step(fn, module, dtype=torch.float32):
        nonlocal go
        module.zero_grad(set_to_none=True)
        xs = x.detach().to(dtype).requires_grad_(True)
        out = fn(xs)
        go = torch.randn_like(out) if go is None else go
        out.backward(go.to(dtype))
        return [out.detach(), xs.grad] + [p.grad for _, p in sorted(module.named_parameters())]

    labels = ["output", "grad_input"] + [n for n, _ in sorted(model.named_parameters())]
    try:
        eager = step(model, model)
        want = step(ref64, ref64, torch.float64)
        yard = step(ref, ref)
        try:
            got = step(compiled, model)
        except Exception as e:
            if _is_toolchain_error(e):
                pytest.skip(f"torch.compile cannot build kernels on this machine: {type(e).__name__}")
            raise
        for label, a, e, w, t in zip(labels, got, eager, want, yard):
            assert_matches(e, w, t, dtype=torch.float32, name=f"eager {label}")
            assert_matches(a, w, t, dtype=torch.float32, name=f"compiled {label}")
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_torch_export(backend):
    """torch.export traces the layers (through the fake kernels) and the exported program computes
    the same function: float64 torch.nn is the reference, torch at fp32 the yardstick."""
    require_backend("cpu", backend)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        convext.nn.DepthwiseConv2d(6, 3, padding=1, depth_multiplier=2, backend=backend),
        torch.nn.ReLU(),
        convext.nn.DepthwiseSeparableConv2d(12, 5, 3, padding=2, dilation=2, backend=backend,
                                            depthwise_activation="relu6"),
    ).eval()
    ref = torch.nn.Sequential(nn.Conv2d(6, 12, 3, padding=1, groups=6), nn.ReLU(),
                              HandWrittenSeparable(12, 5, 3, padding=2, dilation=2, act1="relu6")).eval()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(2, 6, 11, 9)
    exported = torch.export.export(model, (x,))
    ops = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    if backend == "cpu":
        assert any("convext." in o for o in ops), ops
    x2 = torch.randn(2, 6, 11, 9)
    with torch.no_grad():
        assert_matches(exported.module()(x2), copy.deepcopy(ref).double()(x2.double()), ref(x2), name="exported")
