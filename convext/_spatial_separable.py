"""Spatial separable conv2d: a (kH x 1) depthwise conv followed by a (1 x kW) depthwise conv, as one op.

    z = F.conv2d(x, vertical_weight, vertical_bias, (sh, 1), (top/bottom, 0), (dh, 1), groups=C)
    y = F.conv2d(z, horizontal_weight, horizontal_bias, (1, sw), (0, left/right), (1, dw), groups=C*M)

How the 2-D arguments split between the two convs: the vertical conv takes the height half of
stride, padding and dilation (its width halves are 1, 0, 1), the horizontal conv the width half
(its height halves are 1, 0, 1). So the output has exactly the size of one kH x kW conv with the
same stride / padding / dilation, and without biases the op *is* that conv with the rank-1 kernel
`vertical_weight * horizontal_weight`. With a vertical bias it is not: the horizontal conv's zero
padding pads the intermediate, not the bias (the two convs in sequence, exactly).

Ops (schemas in csrc/ops.cpp): `convext::spatial_separable_conv2d` and its `_backward` (CPU kernel
in csrc/cpu/, CUDA kernel in csrc/cuda/), `convext::triton_spatial_separable_conv2d{,_backward}`
(convext/triton/spatial_separable_conv2d.py). The intermediate is never written to memory: the
kernels recompute it, the backward too. This module holds the argument checks, the torch
composite (backend "torch"), the backend choice, the fake kernels and the autograd formulas.
"""
from __future__ import annotations

import torch
from torch.overrides import handle_torch_function, has_torch_function_variadic

from . import _backend, _ext, _geometry, _ops

__all__ = ["spatial_separable_conv2d"]


# ---------------------------------------------------------------- arguments
def spatial_separable_geometry(input, vertical_weight, horizontal_weight, vertical_bias, horizontal_bias, stride,
                               padding, dilation) -> _geometry.ConvGeometry:
    """Checks every argument (errors name it) and returns the geometry of the equivalent kH x kW conv."""
    _geometry.check_tensor(input, "input", dims=(3, 4))
    _geometry.check_tensor(vertical_weight, "vertical_weight", dims=(4,), like=input)
    _geometry.check_tensor(horizontal_weight, "horizontal_weight", dims=(4,), like=input)
    channels = input.shape[-3]
    if channels == 0:
        raise ValueError(f"convext: input must have at least one channel, got shape {tuple(input.shape)}")
    vw, hw = vertical_weight.shape, horizontal_weight.shape
    cm = vw[0]
    if vw[1] != 1 or vw[3] != 1 or vw[2] < 1 or cm == 0 or cm % channels != 0:
        raise ValueError(f"convext: vertical_weight must have shape (C*M, 1, kH, 1) with C={channels} the input "
                         f"channels and M >= 1, got {tuple(vw)}")
    if hw[0] != cm or hw[1] != 1 or hw[2] != 1 or hw[3] < 1:
        raise ValueError(f"convext: horizontal_weight must have shape ({cm}, 1, 1, kW) (one 1 x kW filter per "
                         f"channel of the vertical conv's output), got {tuple(hw)}")
    for bias, name in ((vertical_bias, "vertical_bias"), (horizontal_bias, "horizontal_bias")):
        if bias is not None:
            _geometry.check_tensor(bias, name, dims=(1,), like=input)
            if bias.shape[0] != cm:
                raise ValueError(f"convext: {name} must have shape ({cm},), got {tuple(bias.shape)}")
    # The output geometry is the kH x kW conv's: an expanded (stride-0) view stands for its weight.
    rank1 = vertical_weight.expand(cm, 1, vw[2], hw[3])
    return _geometry.depthwise_conv2d_geometry(input, rank1, None, stride, padding, dilation)


# ---------------------------------------------------------------- torch composite (reference)
def torch_spatial_separable_conv2d(input, vertical_weight, horizontal_weight, vertical_bias, horizontal_bias,
                                   stride, padding, dilation):
    top, bottom, left, right = padding
    z = _ops.torch_depthwise_conv2d(input, vertical_weight, vertical_bias, (stride[0], 1), (top, bottom, 0, 0),
                                    (dilation[0], 1))
    y = _ops.torch_depthwise_conv2d(z, horizontal_weight, horizontal_bias, (1, stride[1]), (0, 0, left, right),
                                    (1, dilation[1]))
    return _ops._in_format_of(y, input)


# ---------------------------------------------------------------- backend choice
# The CUDA kernel (csrc/cuda/spatial_separable_conv2d.cu) has only been compiled, never run on a
# GPU: `auto` does not choose it (nor the Triton kernel) on CUDA tensors until a GPU run verifies
# them; backend="cuda" / "triton" run them. On CPU `auto` takes the C++ kernel (one pass over the
# input, no intermediate tensor; docs/DESIGN.md has the CPU timings). CONVEXT_BACKEND=<name>
# forces `auto` as for the other ops; no measuring (a static rule).
def _has_op(name):
    try:
        getattr(torch.ops.convext, name)
    except (AttributeError, RuntimeError):
        return False
    return True


_HAS_KERNEL = {
    key: _ext.compiled_available() and _has_op("spatial_separable_conv2d")
    and torch._C._dispatch_has_kernel_for_dispatch_key("convext::spatial_separable_conv2d", key)
    for key in ("CPU", "CUDA")
}


def resolve_backend(backend, x) -> str:
    if not isinstance(backend, str) or backend not in _backend.CHOICES:
        raise ValueError(f"convext: backend must be one of {_backend.CHOICES}, got {backend!r}")
    device_type = x.device.type
    if backend == "auto":
        env_error = getattr(_backend, "ENV_ERROR", None)
        if env_error is not None:
            raise ValueError(env_error)
        forced = getattr(_backend, "FORCED", None)  # CONVEXT_BACKEND=<name>: every auto becomes it
        if forced is not None:
            backend = forced
        elif device_type == "cpu" and _backend.availability("cpu", "cpu")[0] and _HAS_KERNEL["CPU"]:
            return "cpu"
        else:
            return "torch"
    ok, why = _backend.availability(backend, device_type)
    if not ok:
        raise RuntimeError(f"convext: backend {backend!r} is not available: {why}")
    if backend in ("cpu", "cuda") and not _HAS_KERNEL[backend.upper()]:
        raise RuntimeError(f"convext: backend {backend!r} is not available: convext._C has no {backend.upper()} "
                           f"kernel for spatial_separable_conv2d (rebuild the extension)")
    return backend


# ---------------------------------------------------------------- public function
def spatial_separable_conv2d(input, vertical_weight, horizontal_weight, vertical_bias=None, horizontal_bias=None,
                             stride=1, padding=0, dilation=1, *, backend="auto"):
    """A (kH x 1) depthwise conv then a (1 x kW) depthwise conv, in one op (no intermediate tensor).

    input (N, C, H, W) or (C, H, W), any memory format; vertical_weight (C*M, 1, kH, 1),
    horizontal_weight (C*M, 1, 1, kW), biases (C*M,) or None. stride / padding / dilation as for
    F.conv2d (int, pair, "same", "valid"); the height halves go to the vertical conv, the width
    halves to the horizontal one. Equals
    `F.conv2d(F.conv2d(input, vertical_weight, vertical_bias, (sh, 1), (ph, 0), (dh, 1), groups=C),
    horizontal_weight, horizontal_bias, (1, sw), (0, pw), (1, dw), groups=C*M)`, returned in the
    input's memory format.
    """
    tensors = (input, vertical_weight, horizontal_weight, vertical_bias, horizontal_bias)
    if has_torch_function_variadic(*tensors):
        return handle_torch_function(spatial_separable_conv2d, tensors, *tensors, stride, padding, dilation,
                                     backend=backend)
    from .functional import _autocast
    input, vertical_weight, horizontal_weight, vertical_bias, horizontal_bias = _autocast(
        ("input", "vertical_weight", "horizontal_weight", "vertical_bias", "horizontal_bias"), tensors)
    g = spatial_separable_geometry(input, vertical_weight, horizontal_weight, vertical_bias, horizontal_bias,
                                   stride, padding, dilation)
    x = input.unsqueeze(0) if g.unbatched else input
    name = resolve_backend(backend, x)
    args = (x, vertical_weight, horizontal_weight, vertical_bias, horizontal_bias)
    if name == "torch":
        out = torch_spatial_separable_conv2d(*args, g.stride, g.padding, g.dilation)
    else:
        out = _op(name, "spatial_separable_conv2d")(*args, list(g.stride), list(g.padding), list(g.dilation))
    return out.squeeze(0) if g.unbatched else out


def _op(backend, name):
    return getattr(torch.ops.convext, _ops.FAMILIES[backend] + name)


# ---------------------------------------------------------------- fake kernels
def _fake_forward(input, vertical_weight, horizontal_weight, vertical_bias, horizontal_bias, stride, padding,
                  dilation):
    h, w = _ops._out_hw(input.shape[2:], (vertical_weight.shape[2], horizontal_weight.shape[3]), stride, padding,
                        dilation)
    return _ops._like(input, (input.shape[0], vertical_weight.shape[0], h, w), input)


def _fake_backward(grad_output, input, vertical_weight, horizontal_weight, vertical_bias, horizontal_bias, stride,
                   padding, dilation, output_mask):
    def grad_like(t, needed):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if needed and t is not None \
            else input.new_empty((0,))
    grad_input = _ops._like(input, input.shape, input) if output_mask[0] else input.new_empty((0,))
    return (grad_input, grad_like(vertical_weight, output_mask[1]), grad_like(horizontal_weight, output_mask[2]),
            grad_like(vertical_bias, output_mask[3]), grad_like(horizontal_bias, output_mask[4]))


# ---------------------------------------------------------------- autograd
def _make_autograd(prefix):
    backward_op = getattr(torch.ops.convext, prefix + "spatial_separable_conv2d_backward")

    def setup_context(ctx, inputs, output):
        input, vw, hw, vb, hb, stride, padding, dilation = inputs
        ctx.save_for_backward(input, vw, hw, vb, hb)
        ctx.geometry = (stride, padding, dilation)

    def backward(ctx, grad):
        tensors = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        mask = [bool(n) and t is not None for n, t in zip(ctx.needs_input_grad[:5], tensors)]
        if torch.is_grad_enabled():  # create_graph=True: a differentiable composite
            return _ops._composite_backward(
                lambda x, vw, hw, vb, hb: torch_spatial_separable_conv2d(x, vw, hw, vb, hb, stride, padding,
                                                                         dilation),
                grad, tensors, mask) + (None,) * 3
        grads = backward_op(_ops._dense(grad, tensors[0]), *tensors, stride, padding, dilation, mask)
        return tuple(g if m else None for g, m in zip(grads, mask)) + (None,) * 3

    return backward, setup_context


def _register():
    if _ext.compiled_available() and _has_op("spatial_separable_conv2d"):
        torch.library.register_fake("convext::spatial_separable_conv2d")(_fake_forward)
        torch.library.register_fake("convext::spatial_separable_conv2d_backward")(_fake_backward)
        backward, setup_context = _make_autograd("")
        torch.library.register_autograd("convext::spatial_separable_conv2d", backward, setup_context=setup_context)
    if _backend._triton_error is None and _has_op("triton_spatial_separable_conv2d"):
        backward, setup_context = _make_autograd("triton_")
        torch.library.register_autograd("convext::triton_spatial_separable_conv2d", backward,
                                        setup_context=setup_context)


_register()
