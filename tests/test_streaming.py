"""Streaming causal depthwise conv1d: convext.depthwise_conv1d_update and DepthwiseConv1d.step.

Every backend: a sequence fed in pieces equals the float64 causal conv over the whole of it (any
width, dilation, multiplier, piece lengths), the state ends as the last dilation*(k-1) inputs and
is updated in place (in its own buffer, also a channels-last or strided view), low precision
within the error rule, layouts without copies, opcheck of both ops, clear errors.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import convext
from convext import streaming
from conftest import (HAS_CUDA, assert_matches, device_backend_params, interpreted, poisoned, rel_l2)

DEVICE_BACKENDS = device_backend_params()


def _ref_full(x, w, b, dilation):
    """float64 causal depthwise conv1d over the whole sequence (plain torch)."""
    k = w.shape[-1]
    return F.conv1d(F.pad(x.double(), (dilation * (k - 1), 0)), w.double(), None if b is None else b.double(),
                    dilation=dilation, groups=x.shape[1])


def _stream(x, state, w, b, dilation, pieces, backend):
    outs, t = [], 0
    with torch.no_grad():
        for n in pieces:
            piece = x[:, :, t:t + n]
            outs.append(convext.depthwise_conv1d_update(piece, state, w, b, dilation, backend=backend))
            t += n
    assert t == x.shape[2]
    return torch.cat(outs, dim=2)


def _pieces(L, pattern):
    out, i = [], 0
    while sum(out) < L:
        out.append(min(pattern[i % len(pattern)], L - sum(out)))
        i += 1
    return out


def _last_inputs(x, S):
    """What the state must hold after x: its last S samples, zero-padded on the left."""
    return F.pad(x, (S, 0))[:, :, x.shape[2]:] if S else x[:, :, :0]


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("k,dilation,mult,pattern", [
    (4, 1, 1, (1,)),            # Mamba's case: width 4, one sample at a time
    (3, 2, 2, (1, 3, 5)),       # dilation, multiplier, pieces shorter and longer than the state
    (2, 8, 1, (7, 1, 20)),      # WaveNet width 2, dilation 8: state 8
    (5, 3, 1, (2,)),            # width 5 (beyond Mamba's 2-4), state 12
    (1, 1, 2, (3, 0, 4)),       # width 1: empty state, an empty piece
])
def test_stream_equals_full_causal_conv(device, backend, k, dilation, mult, pattern):
    N, C, L = 2, 3, 9 if interpreted(device, backend) else 23
    x = torch.randn(N, C, L, dtype=torch.float64, device=device)
    w = torch.randn(C * mult, 1, k, dtype=torch.float64, device=device)
    b = torch.randn(C * mult, dtype=torch.float64, device=device)
    S = dilation * (k - 1)
    state = torch.zeros(N, C, S, dtype=torch.float64, device=device)
    got = _stream(x, state, w, b, dilation, _pieces(L, pattern), backend)
    torch.testing.assert_close(got, _ref_full(x, w, b, dilation), rtol=1e-12, atol=1e-12)
    # the layer's own full-sequence forward agrees too
    full = convext.depthwise_conv1d(x, w, b, dilation=dilation, causal=True, backend="torch")
    torch.testing.assert_close(got, full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, _last_inputs(x, S), rtol=0, atol=0)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_nonzero_initial_state_is_the_past(device, backend):
    """A stream resumed from a state equals the conv over (past inputs ++ new inputs)."""
    N, C, k, d = 2, 4, 3, 2
    S = d * (k - 1)
    past = torch.randn(N, C, S, dtype=torch.float64, device=device)
    x = torch.randn(N, C, 6, dtype=torch.float64, device=device)
    w = torch.randn(C, 1, k, dtype=torch.float64, device=device)
    state = past.clone()
    got = _stream(x, state, w, None, d, [2, 1, 3], backend)
    whole = torch.cat([past, x], dim=2)
    ref = F.conv1d(whole, w, None, dilation=d, groups=C)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, whole[:, :, -S:], rtol=0, atol=0)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("x_layout,state_layout", [("channels_last", "channels_last"), ("sliced", "sliced"),
                                                   ("contiguous", "channels_last")])
def test_layouts_in_place(device, backend, x_layout, state_layout):
    """x and the state as channels-last (N, T, C) views or strided slices of NaN buffers: read in place,
    the state written through its view into its own buffer, the output laid out like x."""
    N, C, L, k, d = 2, 5, 8, 3, 2
    S = d * (k - 1)

    def lay(t, layout):
        if layout == "contiguous":
            return t.contiguous()
        if layout == "channels_last":
            buf = torch.empty(t.shape[0], t.shape[2], t.shape[1], dtype=t.dtype, device=t.device)
            v = buf.transpose(1, 2)
        else:
            buf = poisoned((t.shape[0], 2 * t.shape[1], 2 * t.shape[2] + 1), t.dtype, t.device)
            v = buf[:, ::2, 1::2]
        v.copy_(t)
        return v

    x = lay(torch.randn(N, C, L, dtype=torch.float64, device=device), x_layout)
    state = lay(torch.zeros(N, C, S, dtype=torch.float64, device=device), state_layout)
    w = torch.randn(2 * C, 1, k, dtype=torch.float64, device=device)
    ptr, strides = state.data_ptr(), state.stride()
    with torch.no_grad():
        first = convext.depthwise_conv1d_update(x[:, :, :5], state, w, None, d, backend=backend)
        second = convext.depthwise_conv1d_update(x[:, :, 5:], state, w, None, d, backend=backend)
    assert state.data_ptr() == ptr and state.stride() == strides
    torch.testing.assert_close(torch.cat([first, second], 2), _ref_full(x, w, None, d), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, x[:, :, -S:], rtol=0, atol=0)
    if x_layout == "channels_last":
        assert first.stride(1) == 1 and first.transpose(1, 2).is_contiguous(), first.stride()
    else:
        assert first.is_contiguous()


def test_cpu_kernel_makes_no_copies():
    """The C++ kernel reads channels-last views in place: the only ops are the op and its output."""
    if "cpu" not in convext.backends("cpu"):
        pytest.skip("compiled extension missing")
    x = torch.randn(2, 7, 6).transpose(1, 2)  # (N, C=6, T=7) view of an (N, T, C) buffer
    state = torch.zeros(2, 4, 6).transpose(1, 2)  # (N, C=6, S=4) channels-last view
    w = torch.randn(6, 1, 3)

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Ops() as ops:
        convext.depthwise_conv1d_update(x, state, w, None, 2, backend="cpu")
    copies = [op for op in ops.seen if any(s in op for s in ("copy", "clone", "contiguous", "cat"))]
    assert not copies, ops.seen


@pytest.mark.parametrize("device,backend", device_backend_params(lambda b: b != "torch"))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_error_rule(device, backend, dtype):
    """Low precision vs float64, within the suite's rule (4x torch's own error at that dtype + eps)."""
    N, C, L, k, d = 2, 8, 12, 4, 2
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, C, L, generator=g).to(device)
    w = (torch.randn(C, 1, k, generator=g) / 2).to(device)
    b = torch.randn(C, generator=g).to(device)
    state = torch.zeros(N, C, d * (k - 1), dtype=dtype, device=device)
    got = _stream(x.to(dtype), state, w.to(dtype), b.to(dtype), d, [1, 4, 7], backend)
    assert got.dtype == dtype
    ref = _ref_full(x.to(dtype), w.to(dtype), b.to(dtype), d)  # float64 of the rounded inputs
    torch_lowp = convext.depthwise_conv1d(x.to(dtype), w.to(dtype), b.to(dtype), dilation=d, causal=True,
                                          backend="torch")
    assert_matches(got, ref, torch_lowp, name=f"{backend} {dtype}")


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_single_sample_and_empty(device, backend):
    C, k, d = 3, 3, 1
    w = torch.randn(C, 1, k, dtype=torch.float64, device=device)
    b = torch.randn(C, dtype=torch.float64, device=device)
    state = torch.randn(2, C, 2, dtype=torch.float64, device=device)
    before = state.clone()
    x = torch.randn(2, C, dtype=torch.float64, device=device)  # (N, C): one new sample
    with torch.no_grad():
        y = convext.depthwise_conv1d_update(x, state, w, b, d, backend=backend)
        assert y.shape == (2, C)
        ref = F.conv1d(torch.cat([before, x[:, :, None]], 2), w, b, groups=C)[:, :, 0]
        torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
        # T = 0: nothing out, state unchanged; N = 0: empty output
        kept = state.clone()
        y0 = convext.depthwise_conv1d_update(x[:, :, None][:, :, :0], state, w, b, d, backend=backend)
        assert y0.shape == (2, C, 0) and torch.equal(state, kept)
        e = convext.depthwise_conv1d_update(x[:0], state[:0], w, b, d, backend=backend)
        assert e.shape == (0, C)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_layer_step_equals_forward(device, backend):
    layer = convext.nn.DepthwiseConv1d(4, 3, dilation=4, causal=True, depth_multiplier=2, backend=backend,
                                       dtype=torch.float64, device=device)
    x = torch.randn(2, 4, 11, dtype=torch.float64, device=device)
    state = layer.init_state(2)
    assert state.shape == (2, 4, 8) and state.dtype == torch.float64 and not state.any()
    with torch.no_grad():
        streamed = torch.cat([layer.step(x[:, :, t], state)[:, :, None] for t in range(11)], dim=2)
        full = layer(x)
    torch.testing.assert_close(streamed, full, rtol=1e-12, atol=1e-12)


def test_autocast_step():
    """Under CPU autocast the step runs in bfloat16 like F.conv1d would; init_state allocates in that dtype."""
    layer = convext.nn.DepthwiseConv1d(4, 3, dilation=2, causal=True)
    x = torch.randn(2, 4, 9)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        state = layer.init_state(2)
        assert state.dtype == torch.bfloat16
        streamed = torch.cat([layer.step(x[:, :, t], state)[:, :, None] for t in range(9)], dim=2)
        full = layer(x)
        assert streamed.dtype == full.dtype == torch.bfloat16
        with pytest.raises(TypeError, match="conv_state has dtype torch.float32"):
            layer.step(x[:, :, 0], torch.zeros(2, 4, 4))
    torch.testing.assert_close(streamed.float(), full.float(), rtol=1e-2, atol=1e-2)


def test_layer_step_rejects_non_streamable():
    with pytest.raises(ValueError, match="causal"):
        convext.nn.DepthwiseConv1d(2, 3).step(torch.randn(1, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="stride"):
        convext.nn.DepthwiseConv1d(2, 3, stride=2, causal=True).step(torch.randn(1, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="batch_size"):
        convext.nn.DepthwiseConv1d(2, 3, causal=True).init_state(-1)


def _ok_args(**over):
    args = dict(x=torch.randn(2, 3, 4), conv_state=torch.zeros(2, 3, 4), weight=torch.randn(3, 1, 3),
                bias=torch.randn(3), dilation=2)
    args.update(over)
    return args


@pytest.mark.parametrize("over,exc,match", [
    (dict(conv_state=torch.zeros(2, 3, 3)), ValueError,
     r"conv_state must have shape .* = \(2, 3, 4\), got \(2, 3, 3\)"),
    (dict(conv_state=torch.zeros(2, 3, 4, dtype=torch.float64)), TypeError, "conv_state has dtype"),
    (dict(conv_state=[0.0]), TypeError, "conv_state must be a torch.Tensor"),
    (dict(x=torch.randn(2, 3, 4, 1)), ValueError, "x must be 2-D or 3-D"),
    (dict(x=torch.randint(0, 3, (2, 3, 4))), TypeError, "x must be float"),
    (dict(weight=torch.randn(4, 1, 3)), ValueError, "weight must have shape .C.M, 1, k."),
    (dict(weight=torch.randn(3, 2, 3)), ValueError, "weight must have shape"),
    (dict(bias=torch.randn(4)), ValueError, "bias must have shape .3,."),
    (dict(dilation=0), ValueError, "dilation must be >= 1"),
    (dict(dilation=1.5), TypeError, "dilation must be an int"),
    (dict(conv_state=torch.zeros(1, 3, 1).expand(2, 3, 4)), ValueError, "conv_state has elements that share"),
])
def test_bad_arguments_name_the_argument(over, exc, match):
    with torch.no_grad(), pytest.raises(exc, match=match):
        convext.depthwise_conv1d_update(**_ok_args(**over))


def test_state_sharing_memory_with_x_and_autograd_refused():
    buf = torch.randn(2, 3, 8)
    with torch.no_grad(), pytest.raises(ValueError, match="share memory"):
        convext.depthwise_conv1d_update(buf[:, :, :4], buf[:, :, 2:6], torch.randn(3, 1, 3), None, 2)
    w = torch.randn(3, 1, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        convext.depthwise_conv1d_update(torch.randn(2, 3, 4), torch.zeros(2, 3, 4), w, None, 2)
    with pytest.raises(ValueError, match="backend must be one of"):
        convext.depthwise_conv1d_update(**_ok_args(), backend="fast")
    if not HAS_CUDA:
        with torch.no_grad(), pytest.raises(RuntimeError, match="backend 'cuda' is not available"):
            convext.depthwise_conv1d_update(**_ok_args(), backend="cuda")


def test_auto_never_picks_the_unverified_cuda_kernel(monkeypatch):
    """On CUDA, auto runs the torch composite (the Triton kernel with CONVEXT_AUTO_UNVERIFIED=1); the CUDA
    kernel, compile-checked only, runs when asked for by name."""
    x = torch.empty(1, 1, 1, device="meta")
    cuda_like = type("T", (), {"device": torch.device("cuda")})()
    assert streaming._resolve("auto", x) == "torch"
    monkeypatch.setattr(convext._backend, "AUTO_UNVERIFIED", False, raising=False)
    assert streaming._resolve("auto", cuda_like) == "torch"
    monkeypatch.setattr(convext._backend, "AUTO_UNVERIFIED", True, raising=False)
    assert streaming._resolve("auto", cuda_like) == ("triton" if streaming._TRITON_ERROR is None else "torch")
    if "cpu" in convext.backends("cpu"):
        assert streaming._resolve("auto", torch.empty(1, 1, 1)) == "cpu"


def test_forced_backend_applies_to_auto(monkeypatch):
    """CONVEXT_BACKEND=<name> turns every `auto` into that backend, as for the other ops; an
    unavailable one is an error naming it, and a bad value of the variable is reported."""
    x = torch.empty(1, 1, 1)
    monkeypatch.setattr(convext._backend, "FORCED", "torch")
    assert streaming._resolve("auto", x) == "torch"
    assert streaming._resolve("cpu" if "cpu" in convext.backends("cpu") else "torch", x) != "auto"
    monkeypatch.setattr(convext._backend, "FORCED", "cuda")
    with pytest.raises(RuntimeError, match="'cuda'"):
        streaming._resolve("auto", x)
    monkeypatch.setattr(convext._backend, "ENV_ERROR", "convext: CONVEXT_BACKEND='x' is not a backend")
    with pytest.raises(ValueError, match="CONVEXT_BACKEND"):
        streaming._resolve("auto", x)


def _op_samples(device):
    g = torch.Generator().manual_seed(5)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)

    cl_x = r(2, 5, 3).transpose(1, 2)  # (N=2, C=3, T=5) channels-last view
    cl_state = r(2, 4, 3).transpose(1, 2)  # (2, 3, 4)
    return [[r(2, 3, 5), r(2, 3, 4), r(6, 1, 3), r(6), 2],
            [cl_x, cl_state, r(3, 1, 5), None, 1],
            [r(2, 3, 1), r(2, 3, 0), r(3, 1, 1), r(3), 3]]


@pytest.mark.parametrize("device,backend", device_backend_params(lambda b: b in ("cpu", "triton")))
def test_opcheck(device, backend):
    """torch.library.opcheck (schema incl. the in-place state, fake kernel, AOT dispatch) of the raw op."""
    if backend == "cuda":
        pytest.skip("the CUDA kernel is opt-in; its opcheck is in test_cuda_kernel_matches")
    op = torch.ops.convext.triton_depthwise_conv1d_update if backend == "triton" \
        else torch.ops.convext.depthwise_conv1d_update
    samples = _op_samples(device)
    if interpreted(device, backend):
        samples = samples[:2]
    for args in samples:
        torch.library.opcheck(op, args)


@pytest.mark.gpu
def test_cuda_kernel_matches():
    """The opt-in CUDA kernel (backend="cuda") vs float64, NCL and channels-last, and its opcheck."""
    if "cuda" not in convext.backends("cuda") or not streaming._HAS_CUDA_KERNEL:
        pytest.skip("no CUDA kernel in this build")
    for args in _op_samples("cuda"):
        torch.library.opcheck(torch.ops.convext.depthwise_conv1d_update, args)
    x = torch.randn(3, 64, 40, dtype=torch.float64, device="cuda")
    w = torch.randn(128, 1, 4, dtype=torch.float64, device="cuda")
    state = torch.zeros(3, 64, 9, dtype=torch.float64, device="cuda")
    got = _stream(x, state, w, None, 3, [1, 1, 5, 33], "cuda")
    torch.testing.assert_close(got, _ref_full(x, w, None, 3), rtol=1e-12, atol=1e-12)


def test_planted_bug_is_caught(monkeypatch):
    """The equivalence test's yardstick is not blind: a composite that forgets to shift the state fails it."""
    def forgetful(x, conv_state, weight, bias, dilation):
        u = torch.cat([conv_state, x], dim=2)
        return F.conv1d(u, weight, bias, 1, 0, dilation, x.shape[1])
    monkeypatch.setattr(streaming, "torch_depthwise_conv1d_update", forgetful)
    x = torch.randn(1, 2, 6, dtype=torch.float64)
    w = torch.randn(2, 1, 3, dtype=torch.float64)
    state = torch.zeros(1, 2, 2, dtype=torch.float64)
    got = _stream(x, state, w, None, 1, [1, 2, 3], "torch")
    assert rel_l2(got, _ref_full(x, w, None, 1)) > 1e-3



_COMPILE_SM90 = r"""
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from convext.triton.streaming import _conv1d_update_kernel as fn
for dt, (bc, bt, bs), nw in (("fp32", (64, 1, 4), 4), ("bf16", (16, 32, 64), 4), ("fp64", (1, 1, 1), 1)):
    consts = dict(K=3, HAS_BIAS=dt != "fp32", ACC_F64=dt == "fp64", BLOCK_C=bc, BLOCK_T=bt, BLOCK_S=bs)
    sig, constexprs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name.endswith("_ptr"):
            sig[name] = "*" + dt
        elif name in consts:
            sig[name], constexprs[(i,)] = "constexpr", consts[name]
        else:
            sig[name] = "i32"
    compiled = triton.compile(ASTSource(fn, signature=sig, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": nw})
    assert len(compiled.asm["cubin"]) > 0
    print("compiled", dt)
"""


def test_triton_kernel_compiles_for_sm90():
    """No GPU here, and the interpreter is lenient about types: compile the real kernel for sm_90 (PTX and
    cubin through Triton's own ptxas), per accumulation flavour and for both tile shapes the launcher uses.
    In a subprocess: the interpreter, once active in a process, patches what the compiler needs."""
    import os
    import subprocess
    import sys
    if streaming._TRITON_ERROR is not None:
        pytest.skip(streaming._TRITON_ERROR)
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as e:
        pytest.skip(f"this Triton cannot compile ahead of time: {e}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _COMPILE_SM90], env=env, cwd=root, capture_output=True, text=True,
                       timeout=300)
    if r.returncode and "ptxas" in r.stderr and "not found" in r.stderr.lower():
        pytest.skip("Triton's ptxas is missing")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["compiled", "fp32", "compiled", "bf16", "compiled", "fp64"]
