"""Streaming inference of a causal depthwise conv1d: `depthwise_conv1d_update` (and
`convext.nn.DepthwiseConv1d.step`), for WaveNet / TCN / Mamba-style decoding.

    y = depthwise_conv1d_update(x, conv_state, weight, bias=None, dilation=1, *, backend="auto")

x is (N, C) (one new sample) or (N, C, T) (T new samples); conv_state (N, C, dilation*(k-1)) holds
the past inputs, oldest first (zeros at the start of a stream: the causal zero padding), and is
updated in place to the last dilation*(k-1) inputs; weight (C*M, 1, k), bias (C*M,). Feeding a
sequence through in pieces of any lengths gives exactly `depthwise_conv1d(whole, weight, bias,
dilation=dilation, causal=True)` (up to rounding), for any width k and dilation. The result is
(N, C*M) or (N, C*M, T), laid out like x ((N, T, C)-transposed channels-last views in, the same
out). Tensors are read and the state written through their strides: (N, C, T) and channels-last
(N, T, C) views are used without copies (backends cpu, cuda, triton; the torch composite copies).

Autograd: none. The state update is in place and a step's output depends on inputs of earlier
steps that only the state remembers, so a gradient through one step would be silently partial;
the function raises if asked to record one (run it under torch.no_grad() / torch.inference_mode();
train with `depthwise_conv1d(..., causal=True)` over whole sequences).

Backends: "cpu" (C++ kernel, csrc/cpu/depthwise_conv1d_update.cpp), "triton"
(convext/triton/streaming.py; CPU tensors with TRITON_INTERPRET=1), "cuda"
(csrc/cuda/depthwise_conv1d_update.cu: compile-checked, never run on a GPU yet, so only when asked
for by name), "torch" (the composite `cat(state, x) -> F.conv1d -> copy the tail into the state`,
the reference). `auto`: "cpu" on CPU; on CUDA the torch composite, or with CONVEXT_AUTO_UNVERIFIED=1
the Triton kernel (both GPU kernels are unverified).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import handle_torch_function, has_torch_function_variadic

from . import _backend, _ext, _geometry
from .functional import _autocast

__all__ = ["depthwise_conv1d_update"]

OP = "convext::depthwise_conv1d_update"

if _backend._triton_error is None:
    try:
        from .triton import streaming as _triton_streaming  # noqa: F401  (registers the triton op)
        _TRITON_ERROR = None
    except Exception as e:  # pragma: no cover - a Triton too old for the kernel
        _TRITON_ERROR = f"the Triton streaming kernel could not be loaded ({type(e).__name__}: {e})"
else:
    _TRITON_ERROR = _backend._triton_error


def _compiled_kernel(dispatch_key: str) -> bool:
    if not _ext.compiled_available():
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(OP, dispatch_key)
    except RuntimeError:  # an extension built before the op existed
        return False


_HAS_CPU_KERNEL = _compiled_kernel("CPU")
_HAS_CUDA_KERNEL = _compiled_kernel("CUDA")


def _channels_last(x) -> bool:
    return x.shape[2] > 1 and x.stride(1) < x.stride(2)


def _alloc_out(x, channels_out):
    N, _, T = x.shape
    if _channels_last(x):
        return x.new_empty((N, T, channels_out)).transpose(1, 2)
    return x.new_empty((N, channels_out, T))


# ---------------------------------------------------------------- torch composite (reference)
def torch_depthwise_conv1d_update(x, conv_state, weight, bias, dilation):
    """u = cat(conv_state, x); out = conv1d(u) (length T); conv_state <- u[..., T:]."""
    T = x.shape[2]
    out = _alloc_out(x, weight.shape[0])
    if T == 0 or x.shape[0] == 0:
        return out
    u = torch.cat([conv_state, x], dim=2)
    out.copy_(F.conv1d(u, weight, bias, 1, 0, dilation, x.shape[1]))
    conv_state.copy_(u[:, :, T:])
    return out


# ---------------------------------------------------------------- fake kernel of the compiled op
if _ext.compiled_available() and hasattr(torch.ops.convext, "depthwise_conv1d_update"):
    @torch.library.register_fake(OP)
    def _fake_depthwise_conv1d_update(x, conv_state, weight, bias, dilation):
        return _alloc_out(x, weight.shape[0])


# ---------------------------------------------------------------- backend choice
def _resolve(backend, x) -> str:
    if not isinstance(backend, str) or backend not in _backend.CHOICES:
        raise ValueError(f"convext: backend must be one of {_backend.CHOICES}, got {backend!r}")
    device_type = x.device.type
    if backend == "auto":
        if _backend.ENV_ERROR is not None:
            raise ValueError(_backend.ENV_ERROR)
        if _backend.FORCED is None:  # CONVEXT_BACKEND=<name>: every auto becomes it (checked below)
            if device_type == "cpu" and _HAS_CPU_KERNEL:
                return "cpu"
            if device_type == "cuda" and _backend.AUTO_UNVERIFIED and _TRITON_ERROR is None:
                return "triton"
            return "torch"
        backend = _backend.FORCED
    ok, why = _backend.availability(backend, device_type)
    if not ok:
        raise RuntimeError(f"convext: backend {backend!r} is not available: {why}")
    if backend == "triton" and _TRITON_ERROR is not None:
        raise RuntimeError(f"convext: backend 'triton' is not available: {_TRITON_ERROR}")
    if backend in ("cpu", "cuda") and not (_HAS_CPU_KERNEL if backend == "cpu" else _HAS_CUDA_KERNEL):
        raise RuntimeError(f"convext: backend {backend!r} is not available: convext._C has no {backend.upper()} kernel "
                           f"for depthwise_conv1d_update (rebuild the extension: {_ext.REBUILD_HINT})")
    return backend


# ---------------------------------------------------------------- checks
def _check(x, conv_state, weight, bias, dilation):
    _geometry.check_tensor(x, "x", dims=(2, 3))
    if not isinstance(conv_state, torch.Tensor):
        raise TypeError(f"convext: conv_state must be a torch.Tensor, got {type(conv_state).__name__}")
    if conv_state.device != x.device:
        raise RuntimeError(f"convext: conv_state is on {conv_state.device} but x is on {x.device}")
    if conv_state.dtype != x.dtype:
        raise TypeError(f"convext: conv_state has dtype {conv_state.dtype} but x has dtype {x.dtype} (the state is "
                        f"updated in place, so it must have the dtype the step runs in; under torch.autocast that "
                        f"is the autocast dtype)")
    _geometry.check_tensor(weight, "weight", dims=(3,), like=x)
    (d,) = _geometry.int_tuple(dilation, "dilation", 1, 1)
    N, C = int(x.shape[0]), int(x.shape[1])
    if C == 0:
        raise ValueError(f"convext: x must have at least one channel, got shape {tuple(x.shape)}")
    cm, k = int(weight.shape[0]), int(weight.shape[2])
    if weight.shape[1] != 1 or cm == 0 or cm % C != 0 or k < 1:
        raise ValueError(f"convext: weight must have shape (C*M, 1, k) with C={C} the channels of x and M >= 1, "
                         f"got {tuple(weight.shape)}")
    if bias is not None:
        _geometry.check_tensor(bias, "bias", dims=(1,), like=x)
        if bias.shape[0] != cm:
            raise ValueError(f"convext: bias must have shape ({cm},), got {tuple(bias.shape)}")
    S = d * (k - 1)
    if conv_state.dim() != 3 or tuple(conv_state.shape) != (N, C, S):
        raise ValueError(f"convext: conv_state must have shape (N, C, dilation*(k-1)) = ({N}, {C}, {S}), got "
                         f"{tuple(conv_state.shape)}")
    if conv_state.numel() and torch._debug_has_internal_overlap(conv_state) == 1:
        raise ValueError("convext: conv_state has elements that share memory (an expanded view?); it is written "
                         "in place, so it needs one element per (n, c, t)")
    if conv_state.numel() and x.numel() and _overlap(conv_state, x):
        raise ValueError("convext: conv_state and x share memory; the state is written in place while x is read")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, conv_state, weight, bias)):
        raise RuntimeError(
            "convext: depthwise_conv1d_update has no autograd (it updates conv_state in place, and a step's output "
            "depends on earlier inputs that only the state remembers): run it under torch.no_grad() or "
            "torch.inference_mode(); to train, use depthwise_conv1d(..., causal=True) over whole sequences")
    return d


def _overlap(a, b) -> bool:
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False

    def span(t):
        start = t.storage_offset()
        return start, start + sum((s - 1) * st for s, st in zip(t.shape, t.stride())) + 1

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


# ---------------------------------------------------------------- public function
def depthwise_conv1d_update(x, conv_state, weight, bias=None, dilation=1, *, backend="auto"):
    """One streaming step of a causal depthwise conv1d (see the module docstring): returns the
    outputs for the new samples `x` ((N, C) or (N, C, T)) and updates `conv_state`
    ((N, C, dilation*(k-1)), the past inputs) in place. Inference only (no autograd)."""
    if has_torch_function_variadic(x, conv_state, weight, bias):
        return handle_torch_function(depthwise_conv1d_update, (x, conv_state, weight, bias), x, conv_state, weight,
                                     bias, dilation, backend=backend)
    x, weight, bias = _autocast(("x", "weight", "bias"), (x, weight, bias))
    d = _check(x, conv_state, weight, bias, dilation)
    x3 = x.unsqueeze(-1) if x.dim() == 2 else x
    name = _resolve(backend, x3)
    if name == "torch":
        out = torch_depthwise_conv1d_update(x3, conv_state, weight, bias, d)
    elif name == "triton":
        out = torch.ops.convext.triton_depthwise_conv1d_update(x3, conv_state, weight, bias, d)
    else:
        out = torch.ops.convext.depthwise_conv1d_update(x3, conv_state, weight, bias, d)
    return out.squeeze(-1) if x.dim() == 2 else out


# ---------------------------------------------------------------- DepthwiseConv1d.step / init_state
def layer_init_state(layer, batch_size, *, device=None, dtype=None):
    """Zeros (batch_size, in_channels, dilation*(k-1)): the state at the start of a stream."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"convext: batch_size must be an int >= 0, got {batch_size!r}")
    w = layer.weight
    if dtype is None:
        dtype = w.dtype
        device_type = torch.device(device).type if device is not None else w.device.type
        if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type) \
                and dtype != torch.float64:
            dtype = torch.get_autocast_dtype(device_type)
    span = layer.dilation[0] * (layer.kernel_size[0] - 1)
    return torch.zeros((batch_size, layer.in_channels, span), dtype=dtype, device=device or w.device)


def layer_step(layer, x, state):
    if not layer.causal:
        raise ValueError("convext: DepthwiseConv1d.step needs a causal layer (causal=True): a streaming step "
                         "sees only past inputs")
    if layer.stride[0] != 1:
        raise ValueError(f"convext: DepthwiseConv1d.step needs stride 1, the layer has stride {layer.stride[0]}")
    return depthwise_conv1d_update(x, state, layer.weight, layer.bias, layer.dilation[0], backend=layer.backend)
