"""Public functional API (see docs/API.md): argument checks, backend choice, dispatch to the ops.

Every public function starts the way torch.nn.functional's Python functions do:

- `__torch_function__`: when a tensor argument overrides it (a torch.fx Proxy during
  `symbolic_trace`, a tensor subclass, a TorchFunctionMode), the call is handed to
  `handle_torch_function`, so torch.fx records it as one leaf `call_function` node.
- autocast: under `torch.autocast(device_type, dtype)` for the input's device type, the tensor
  arguments are cast as the autocast kernel of F.conv2d / conv1d / conv_transpose2d casts them
  (`cached_cast` to the autocast dtype for the eligible ones: floating point, not float64, on that
  device type), so the op runs and returns in that dtype, and the casts are ordinary differentiable
  `Tensor.to` calls (the gradients reach the parameters in their own dtype). Plain Python on the
  autocast state, which torch.compile reads as constants (and guards on) and torch.export traces.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import handle_torch_function, has_torch_function_variadic

from . import _backend, _geometry, _ops, _plan


def _autocast(names, tensors):
    """`tensors` (input first) as the autocast kernel of F.conv2d would pass them on.

    Outside autocast (for the input's device type) they come back unchanged. Inside, each eligible
    tensor (floating point, not float64, on that device type: torch's `is_eligible`) is cast to the
    autocast dtype; the rest (None, float64, integer tensors, other devices, non-tensors) pass
    through for the argument checks. Casting can leave float64 next to the autocast dtype, where
    F.conv2d raises a RuntimeError; here that is a TypeError naming the argument.
    """
    x = tensors[0]
    if not isinstance(x, torch.Tensor):
        return tensors
    device_type = x.device.type
    if not (torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    cast = tuple(t.to(dtype) if _autocast_eligible(t, device_type) and t.dtype != dtype else t for t in tensors)
    x = cast[0]
    if x.is_floating_point():
        for name, t, original in zip(names[1:], cast[1:], tensors[1:]):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.device == x.device \
                    and t.dtype != x.dtype:
                raise TypeError(
                    f"convext: {name} has dtype {original.dtype} and input {tensors[0].dtype}: under "
                    f"torch.autocast({device_type!r}, dtype={dtype}) they become {t.dtype} and {x.dtype} "
                    f"(autocast does not cast float64), which do not match (torch's convolutions raise here too)")
    return cast


def _autocast_eligible(t, device_type):
    return isinstance(t, torch.Tensor) and t.device.type == device_type and t.is_floating_point() \
        and t.dtype != torch.float64


def _call_depthwise_conv2d(name, x, weight, bias, g: _geometry.ConvGeometry, fmt=None):
    if name == "torch":
        return _ops.torch_depthwise_conv2d(x, weight, bias, g.stride, g.padding, g.dilation, fmt)
    return _ops.op(name, "depthwise_conv2d")(x, weight, bias, list(g.stride), list(g.padding), list(g.dilation))


def _resolve_depthwise_conv2d(x, weight, bias, g: _geometry.ConvGeometry, backend: str):
    # tune: what backend="auto" times on the first call of a new shape (convext/_autotune.py)
    tune = ((x, weight, bias), (g.stride, g.padding, g.dilation),
            lambda name, t: _call_depthwise_conv2d(name, *t, g))
    return _backend.resolve_final(backend, x, "depthwise_conv2d", g.kernel_size, g.dilation, tune=tune)


def _run_depthwise_conv2d(x, weight, bias, g: _geometry.ConvGeometry, backend: str):
    return _call_depthwise_conv2d(_resolve_depthwise_conv2d(x, weight, bias, g, backend)[0], x, weight, bias, g)


def _planned_depthwise_conv2d(plan, input, weight, bias, plain_eager=False):
    """The call of `plan`. plain_eager: the caller checked _plan's conditions (no autocast, tracing,
    compiling, dispatch mode or functorch transform), as for every memoised plan."""
    name, g, fmt = plan
    x = input.unsqueeze(0) if g.unbatched else input
    if plain_eager and name != "torch" and not torch.is_grad_enabled():
        # Inference in plain eager: nothing to record, so the op goes straight to its kernel, past the
        # autograd layer's Python formula (about 5 us a call on CPU).
        with torch._C._AutoDispatchBelowADInplaceOrView():
            out = _call_depthwise_conv2d(name, x, weight, bias, g, fmt)
    else:
        out = _call_depthwise_conv2d(name, x, weight, bias, g, fmt)
    return out.squeeze(0) if g.unbatched else out


def depthwise_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, *, backend="auto"):
    """Depthwise 2-D convolution: `F.conv2d(input, weight, bias, stride, padding, dilation, groups=C)`.

    Args:
        input: (N, C, H, W) or unbatched (C, H, W); N may be 0.
        weight: (C*M, 1, kH, kW), M >= 1 the depth multiplier; kH != kW allowed.
        bias: (C*M,) or None.
        stride, dilation: int or (int, int), each >= 1.
        padding: int, (int, int), "same" (stride 1 only) or "valid".
        backend: "auto" (default), "cuda", "triton", "cpu" or "torch" (see below).

    Returns the (N, C*M, H_out, W_out) result (unbatched: (C*M, H_out, W_out)), differentiable in
    input, weight and bias.
    """
    if has_torch_function_variadic(input, weight, bias):
        return handle_torch_function(depthwise_conv2d, (input, weight, bias), input, weight, bias, stride,
                                     padding, dilation, backend=backend)
    return _depthwise_conv2d(input, weight, bias, stride, padding, dilation, backend)[0]


def _depthwise_conv2d(input, weight, bias, stride, padding, dilation, backend):
    """(depthwise_conv2d's result, its memoised plan or None): after the __torch_function__ check."""
    key = _plan.key("depthwise_conv2d", (input, weight, bias), (stride, padding, dilation, backend),
                    _backend.switches())
    plan = None if key is None else _plan.get(key)
    if plan is None:
        input, weight, bias = _autocast(("input", "weight", "bias"), (input, weight, bias))
        g = _geometry.depthwise_conv2d_geometry(input, weight, bias, stride, padding, dilation)
        x = input.unsqueeze(0) if g.unbatched else input
        name, final = _resolve_depthwise_conv2d(x, weight, bias, g, backend)
        plan = (name, g, _ops.memory_format(x))
        if key is None or not final:
            return _planned_depthwise_conv2d(plan, input, weight, bias), None
        _plan.put(key, plan)
    return _planned_depthwise_conv2d(plan, input, weight, bias, plain_eager=True), plan


def depthwise_separable_conv2d(input, depthwise_weight, pointwise_weight, depthwise_bias=None,
                               pointwise_bias=None, stride=1, padding=0, dilation=1, *, backend="auto",
                               depthwise_activation=None, pointwise_activation=None):
    """Depthwise conv, optional activation, 1x1 conv, optional activation, as one op:

        z = F.conv2d(input, depthwise_weight, depthwise_bias, stride, padding, dilation, groups=C)
        out = act2(F.conv2d(act1(z), pointwise_weight, pointwise_bias))

    Args:
        input: (N, C, H, W) or unbatched (C, H, W).
        depthwise_weight: (C*M, 1, kH, kW); depthwise_bias: (C*M,) or None.
        pointwise_weight: (C_out, C*M, 1, 1); pointwise_bias: (C_out,) or None.
        stride, padding, dilation: of the depthwise conv, as in depthwise_conv2d.
        backend: "auto" (default), "cuda", "triton", "cpu" or "torch" (see below).
        depthwise_activation, pointwise_activation: act1 / act2, each None, "relu", "relu6", "silu",
            "gelu" (exact erf form) or "hardswish".

    The intermediate z need not exist in memory: the Triton kernel keeps it on chip; other backends
    may materialise it. Differentiable in every tensor argument.
    """
    tensors = (input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias)
    if has_torch_function_variadic(*tensors):
        return handle_torch_function(
            depthwise_separable_conv2d, tensors, *tensors, stride, padding, dilation, backend=backend,
            depthwise_activation=depthwise_activation, pointwise_activation=pointwise_activation)
    key = _plan.key("depthwise_separable_conv2d", tensors,
                    (stride, padding, dilation, backend, depthwise_activation, pointwise_activation),
                    _backend.switches())
    plan = None if key is None else _plan.get(key)
    if plan is None:
        tensors = _autocast(("input", "depthwise_weight", "pointwise_weight", "depthwise_bias", "pointwise_bias"),
                            tensors)
        plan, final = _plan_separable(tensors, stride, padding, dilation, backend, depthwise_activation,
                                      pointwise_activation)
        if key is not None and final:
            _plan.put(key, plan)
    name, g, dw_act, pw_act, fmt = plan
    input = tensors[0]
    x = input.unsqueeze(0) if g.unbatched else input
    args = (x,) + tuple(tensors[1:])
    if name == "torch":
        out = _ops.torch_depthwise_separable_conv2d(*args, g.stride, g.padding, g.dilation, dw_act, pw_act, fmt)
    else:
        out = _ops.op(name, "depthwise_separable_conv2d")(*args, list(g.stride), list(g.padding),
                                                          list(g.dilation), dw_act, pw_act)
    return out.squeeze(0) if g.unbatched else out


def _plan_separable(tensors, stride, padding, dilation, backend, depthwise_activation, pointwise_activation):
    """The checks and backend choice of depthwise_separable_conv2d: ((backend, geometry, activations,
    memory format), final) -- final as in _backend.resolve_final."""
    input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias = tensors
    g = _geometry.depthwise_conv2d_geometry(input, depthwise_weight, depthwise_bias, stride, padding, dilation,
                                            weight_name="depthwise_weight", bias_name="depthwise_bias")
    _geometry.check_pointwise(pointwise_weight, pointwise_bias, input, depthwise_weight.shape[0])
    dw_act = _geometry.check_activation(depthwise_activation, "depthwise_activation")
    pw_act = _geometry.check_activation(pointwise_activation, "pointwise_activation")
    x = input.unsqueeze(0) if g.unbatched else input
    tune = ((x, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias),
            (g.stride, g.padding, g.dilation, dw_act, pw_act),
            lambda n, t: depthwise_separable_conv2d(*t, stride, padding, dilation, backend=n,
                                                    depthwise_activation=depthwise_activation,
                                                    pointwise_activation=pointwise_activation))
    name, final = _backend.resolve_final(backend, x, "depthwise_separable_conv2d", g.kernel_size, g.dilation,
                                         tune=tune)
    return (name, g, dw_act, pw_act, _ops.memory_format(x)), final


def depthwise_conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, *, causal=False, backend="auto"):
    """Depthwise 1-D convolution: `F.conv1d(input, weight, bias, stride, padding, dilation, groups=C)`.

    Args:
        input: (N, C, L) or unbatched (C, L).
        weight: (C*M, 1, k); bias: (C*M,) or None.
        stride, dilation: int >= 1; padding: int, "same" or "valid".
        causal: pad dilation*(k-1) on the left only (WaveNet / TCN); padding must then be 0, and at
            stride 1 the output is as long as the input.
        backend: "auto" (default), "cuda", "triton", "cpu" or "torch" (see below).

    Runs as a 2-D depthwise conv over a height-1 image, so every backend serves it.
    """
    if has_torch_function_variadic(input, weight, bias):
        return handle_torch_function(depthwise_conv1d, (input, weight, bias), input, weight, bias, stride,
                                     padding, dilation, causal=causal, backend=backend)
    input, weight, bias = _autocast(("input", "weight", "bias"), (input, weight, bias))
    _geometry.check_tensor(input, "input", dims=(2, 3))
    _geometry.check_nonempty_spatial(input, 1)
    _geometry.check_tensor(weight, "weight", dims=(3,), like=input)
    if not isinstance(causal, bool):
        raise TypeError(f"convext: causal must be a bool, got {causal!r}")
    (s,) = _geometry.int_tuple(stride, "stride", 1, 1)
    (d,) = _geometry.int_tuple(dilation, "dilation", 1, 1)
    k = int(weight.shape[-1])
    if causal:
        if isinstance(padding, str) or _geometry.int_tuple(padding, "padding", 1, 0) != (0,):
            raise ValueError(f"convext: padding must be 0 when causal=True, got {padding!r}")
        pads = [(d * (k - 1), 0)]
    else:
        pads = _geometry.resolve_padding(padding, "padding", (k,), (s,), (d,), 1)
    (left, right), = pads
    # Geometry checks (channels, bias, sizes) on the 2-D view; explicit 4-side padding after that.
    x = input.unsqueeze(-2)
    w = weight.unsqueeze(-2)
    g = _geometry.depthwise_conv2d_geometry(x, w, bias, (1, s), (0, left + right), (1, d))
    g = _geometry.ConvGeometry(g.unbatched, g.kernel_size, g.stride, (0, 0, left, right), g.dilation, g.out_size)
    if input.dim() == 2:
        x = x.unsqueeze(0)
    out = _run_depthwise_conv2d(x, w, bias, g, backend).squeeze(-2)
    return out.squeeze(0) if input.dim() == 2 else out


def depthwise_conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                               *, backend="auto"):
    """Depthwise transposed convolution: `F.conv_transpose2d(input, weight, bias, stride, padding,
    output_padding, groups=C, dilation=dilation)`.

    Args:
        input: (N, C, H, W) or unbatched (C, H, W).
        weight: (C, M, kH, kW); bias: (C*M,) or None.
        stride, dilation: int or (int, int), each >= 1; padding: int or (int, int) (no strings).
        output_padding: int or (int, int), smaller than the stride or the dilation.
        backend: "auto" (default), "cuda", "triton", "cpu" or "torch" (see below).

    The transposed conv is the input-gradient of a depthwise conv2d, so it runs on the same kernels.
    """
    if has_torch_function_variadic(input, weight, bias):
        return handle_torch_function(depthwise_conv_transpose2d, (input, weight, bias), input, weight, bias,
                                     stride, padding, output_padding, dilation, backend=backend)
    input, weight, bias = _autocast(("input", "weight", "bias"), (input, weight, bias))
    _geometry.check_tensor(input, "input", dims=(3, 4))
    _geometry.check_tensor(weight, "weight", dims=(4,), like=input)
    _geometry.check_nonempty_spatial(input, 2)
    channels = input.shape[-3]
    if weight.shape[0] != channels or weight.shape[1] < 1:
        raise ValueError(f"convext: weight must have shape (C, M, kH, kW) with C={channels} the input channels, "
                         f"got {tuple(weight.shape)}")
    if isinstance(padding, str):
        raise ValueError(f"convext: padding must be an int or a pair of ints for a transposed conv, got {padding!r}")
    stride_t = _geometry.int_tuple(stride, "stride", 2, 1)
    dilation_t = _geometry.int_tuple(dilation, "dilation", 2, 1)
    pad_t = _geometry.int_tuple(padding, "padding", 2, 0)
    out_pad = _geometry.int_tuple(output_padding, "output_padding", 2, 0)
    if any(op >= max(s, d) for op, s, d in zip(out_pad, stride_t, dilation_t)):
        raise ValueError(f"convext: output_padding must be smaller than stride or dilation, got {output_padding!r}")
    mult = int(weight.shape[1])
    cout = channels * mult
    if bias is not None:
        _geometry.check_tensor(bias, "bias", dims=(1,), like=input)
        if bias.shape[0] != cout:
            raise ValueError(f"convext: bias must have shape ({cout},), got {tuple(bias.shape)}")
    x = input.unsqueeze(0) if input.dim() == 3 else input
    kh, kw = int(weight.shape[2]), int(weight.shape[3])
    out_hw = [(x.shape[2 + i] - 1) * stride_t[i] - 2 * pad_t[i] + dilation_t[i] * ((kh, kw)[i] - 1) + out_pad[i] + 1
              for i in range(2)]
    if min(out_hw) < 1:
        raise ValueError(f"convext: the transposed conv output would be empty ({out_hw}); check padding")
    name = _backend.resolve(backend, x, "depthwise_conv_transpose2d", tune=(
        (x, weight, bias), (stride_t, pad_t, out_pad, dilation_t),
        lambda n, t: depthwise_conv_transpose2d(*t, stride_t, pad_t, out_pad, dilation_t, backend=n)))
    # output_padding >= stride (allowed when dilation is larger) has no conv2d-gradient equivalent.
    if name == "torch" or x.shape[0] == 0 or any(op >= s for op, s in zip(out_pad, stride_t)):
        out = F.conv_transpose2d(x, weight, bias, stride_t, pad_t, out_pad, channels, dilation_t)
    else:
        w, b, dtype, fmt = weight.reshape(cout, 1, kh, kw), bias, x.dtype, _ops.memory_format(x)
        src = x
        if mult > 1:
            # Each (channel, m) pair is an independent depthwise channel: the input is repeated M times
            # (in its own memory format, so the result keeps it), and its gradient is the sum of the M
            # copies' gradients. In float16 / bfloat16 each copy's gradient would be rounded before that
            # sum (two roundings), so this path runs in float32 and rounds once, at the end.
            if dtype in (torch.float16, torch.bfloat16):
                src, w, b = src.float(), w.float(), None if b is None else b.float()
            n, c, h, wd = src.shape
            rep = torch.empty((n, cout, h, wd), dtype=src.dtype, device=src.device, memory_format=fmt)
            rep.view(n, c, mult, h, wd).copy_(src.unsqueeze(2))
            src = rep
        padding4 = [pad_t[0], pad_t[0], pad_t[1], pad_t[1]]
        out = _ops.op(name, "depthwise_conv2d_backward_input")(
            src, w, [src.shape[0], cout] + out_hw, list(stride_t), padding4, list(dilation_t))
        if b is not None:
            out = out + b.view(1, -1, 1, 1)
        out = out.to(dtype)
    out = _ops._in_format_of(out, x)  # cuDNN may answer a channels_last input in NCHW
    return out.squeeze(0) if input.dim() == 3 else out


_COMMON_DOC = """
    Backends (`backend=`): "cuda" (CUDA kernels of convext._C), "triton" (Triton kernels; CPU tensors
    only with TRITON_INTERPRET=1), "cpu" (C++ kernels of convext._C), "torch" (the torch.nn.functional
    reference), "auto": on the first call with a new shape / dtype / layout / direction, times the
    verified backends (CUDA: cuda, torch; CPU: cpu, torch) and keeps the fastest, in memory and in
    $CONVEXT_CACHE_DIR (default ~/.cache/convext); CONVEXT_BACKEND=<name> forces one for every
    "auto"; CONVEXT_AUTOTUNE=0 uses a fixed rule. convext.backends() lists what this machine has.

    Dtypes: float32, float64, float16, bfloat16 (float16 / bfloat16 accumulate in float32); every
    tensor argument has the input's dtype and device. Under torch.autocast the tensors are cast as
    for F.conv2d and the result has the autocast dtype.

    Memory formats: any (contiguous, channels_last, strided views); the result has the input's.

    Raises:
        TypeError: a non-tensor or non-floating argument, or dtypes that do not match.
        ValueError: wrong ranks or shapes, channel counts or bias sizes that do not match, stride or
            dilation < 1, negative padding, "same" with stride > 1, an unknown activation or backend.
        RuntimeError: the backend cannot run here (not built, no GPU, wrong device), or tensors on
            different devices.

    docs/API.md has the full reference.
    """

for _f in (depthwise_conv2d, depthwise_separable_conv2d, depthwise_conv1d, depthwise_conv_transpose2d):
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.rstrip() + "\n" + _COMMON_DOC
del _f
