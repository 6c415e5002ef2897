"""Per-call fast path: a memo of what a public function's checks and backend choice decided.

A layer calls its function with the same shapes, strides, dtypes and arguments every step. The
first call runs the full path (argument checks, backend resolution, the measured `auto` choice);
when its answer is final it is kept here under a key of exactly what those steps read, and later
calls with the same key go straight to the kernel. On this CPU that cut convext's Python cost per
depthwise layer from about 20-45 us to a few (docs/perf/CPU_MODELS.md).

The key is built only for plain eager calls: real `torch.Tensor` / `nn.Parameter` arguments, no
autocast for the input's device type, nothing tracing (torch.compile, torch.jit, make_fx, fake
tensors, functorch transforms); otherwise `key` returns None and the call takes the full path.
It holds every input the decision depends on: each tensor's shape, dtype, device and whether it
requires grad (and the input's strides: the memory format), grad mode, the CPU thread count, the
arguments, and the switches read in Python (CONVEXT_BACKEND, CONVEXT_AUTOTUNE,
CONVEXT_AUTO_UNVERIFIED). Errors are never memoised: a bad call builds a key no good call has.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.overrides import has_torch_function_variadic

_PLANS: dict = {}
_GENERATION = [0]  # bumped by clear(): layer memos (layer_key) made before it are stale
_DEVICE_TYPES = ("cpu", "cuda")
MAX_PLANS = 4096


def _arg(v):
    """A non-tensor argument as part of a key; TypeError (no memo) unless it is exactly None, a
    bool, an int, a str or a tuple/list of ints (True == 1 must not hit an int's entry)."""
    t = type(v)
    if t is int or t is str or v is None or t is bool:
        return t, v
    if t is tuple or t is list:
        for e in v:
            if type(e) is not int:
                break
        else:
            return t, tuple(v)
    raise TypeError("not a memoisable argument")


def _tensor(t):
    if t is None:
        return None
    if type(t) is torch.Tensor or type(t) is torch.nn.Parameter:
        return t.shape, t.dtype, t.device, t.requires_grad
    raise TypeError("not a plain tensor")


def _plain_eager(device: torch.device) -> bool:
    """cpu / cuda, no autocast, nothing tracing or transforming the call: when a memo may be used."""
    return (device.type in _DEVICE_TYPES and not torch._C._is_any_autocast_enabled()
            and not torch.compiler.is_compiling() and not torch._C._is_tracing()
            and not torch._C._len_torch_dispatch_stack() and not torch._C._are_functorch_transforms_active())


def key(op: str, tensors, args, switches) -> Optional[tuple]:
    """The memo key of a call, or None when the call must take the full path."""
    x = tensors[0]
    if type(x) is not torch.Tensor:
        return None
    device = x.device
    if not _plain_eager(device):
        return None
    try:
        return (op, x.shape, x.stride(), x.dtype, device, x.requires_grad, torch.is_grad_enabled(),
                torch.get_num_threads() if device.type == "cpu" else 0, switches,
                tuple(map(_tensor, tensors[1:])), tuple(map(_arg, args)))
    except TypeError:  # an argument that is not a plain tensor, or not hashable: the full path
        return None


def get(k):
    return _PLANS.get(k)


def put(k, plan):
    if len(_PLANS) >= MAX_PLANS:
        _PLANS.clear()
    _PLANS[k] = plan


def clear():
    _PLANS.clear()
    _GENERATION[0] += 1


def _plain_tensor(t) -> bool:
    return t is None or type(t) is torch.Tensor or type(t) is torch.nn.Parameter


def layer_key(layer, x, switches) -> Optional[tuple]:
    """A layer's own memo key (convext.nn.DepthwiseConv2d keeps one plan per layer): the same
    inputs as `key` for its call, read with fewer calls -- the parameters straight from
    `_parameters`, the arguments as the layer's attributes, compared with == (never hashed).
    None when the call must take the full path (`key`'s conditions, and __torch_function__)."""
    if type(x) is not torch.Tensor:
        return None
    params = layer._parameters
    w, b = params["weight"], params["bias"]
    device = x.device
    if (not _plain_eager(device) or has_torch_function_variadic(x, w, b)
            or not _plain_tensor(w) or not _plain_tensor(b)):
        return None
    return (_GENERATION[0], x.shape, x.stride(), x.dtype, device, x.requires_grad, torch.is_grad_enabled(),
            torch.get_num_threads() if device.type == "cpu" else 0, switches, w.shape, w.dtype, w.device,
            w.requires_grad,
            None if b is None else (b.shape, b.dtype, b.device, b.requires_grad),
            layer.stride, layer.padding, layer.dilation, layer.backend)
