"""Fake kernels and autograd for the convext ops, for both op families.

Family "" is the compiled ops (`convext::depthwise_conv2d`, ... : CPU and CUDA kernels of
convext._C); family "triton_" is the Triton ops of convext/triton with the same signatures.
Backward of the depthwise op calls the two backward ops of its family; backward of the separable op
calls its fused backward op, which recomputes the intermediate instead of saving it. Double
backward (create_graph=True) goes through a differentiable torch composite.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

from . import _backend, _ext

FAMILIES = {"cpu": "", "cuda": "", "triton": "triton_"}


def op(backend: str, name: str):
    return getattr(torch.ops.convext, FAMILIES[backend] + name)


def _out_hw(size, kernel, stride, padding, dilation):
    h = (size[0] + padding[0] + padding[1] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    w = (size[1] + padding[2] + padding[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return h, w


# ---------------------------------------------------------------- torch composites (reference)
def apply_activation(x, name: str):
    if name == "none":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.relu6(x)
    if name == "silu":
        return F.silu(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "hardswish":
        return F.hardswish(x)
    raise ValueError(f"convext: unknown activation {name!r}")


_FORMATS: dict = {}


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """suggest_memory_format(t), memoised on (shape, strides): it costs microseconds per call."""
    if t.layout != torch.strided:
        return torch.contiguous_format
    if type(t) is not torch.Tensor or torch.compiler.is_compiling():
        # fake / traced tensors: sizes may be symbolic (unhashable, and a look-up would specialise them)
        return suggest_memory_format(t)
    k = (t.shape, t.stride())
    fmt = _FORMATS.get(k)
    if fmt is None:
        if len(_FORMATS) >= 4096:
            _FORMATS.clear()
        fmt = _FORMATS[k] = suggest_memory_format(t)
    return fmt


def _in_format_of(out, input, fmt=None):
    # cuDNN may answer a channels_last input in NCHW; API.md promises the input's format.
    if fmt is None:
        fmt = memory_format(input)
    return out if out.is_contiguous(memory_format=fmt) else out.contiguous(memory_format=fmt)


def torch_depthwise_conv2d(input, weight, bias, stride, padding, dilation, fmt=None):
    top, bottom, left, right = padding
    if top == bottom and left == right:
        out = F.conv2d(input, weight, bias, stride, (top, left), dilation, input.shape[1])
    else:
        out = F.conv2d(F.pad(input, (left, right, top, bottom)), weight, bias, stride, 0, dilation, input.shape[1])
    return _in_format_of(out, input, fmt)


def torch_depthwise_separable_conv2d(input, dw_weight, pw_weight, dw_bias, pw_bias, stride, padding,
                                     dilation, dw_act, pw_act, fmt=None):
    mid = apply_activation(torch_depthwise_conv2d(input, dw_weight, dw_bias, stride, padding, dilation, fmt),
                           dw_act)
    return _in_format_of(apply_activation(F.conv2d(mid, pw_weight, pw_bias), pw_act), input, fmt)


def _torch_backward_input(grad_output, weight, input_size, stride, padding, dilation):
    """grad-input of the depthwise conv as a torch composite, differentiable in both arguments."""
    x = grad_output.new_zeros(input_size).requires_grad_()
    with torch.enable_grad():
        out = torch_depthwise_conv2d(x, weight, None, stride, padding, dilation)
        return torch.autograd.grad(out, x, grad_output, create_graph=True)[0]


# ---------------------------------------------------------------- fake kernels
def _like(t, shape, memory_format_of):
    return torch.empty(shape, dtype=t.dtype, device=t.device, memory_format=memory_format(memory_format_of))


def _fake_depthwise_conv2d(input, weight, bias, stride, padding, dilation):
    h, w = _out_hw(input.shape[2:], weight.shape[2:], stride, padding, dilation)
    return _like(input, (input.shape[0], weight.shape[0], h, w), input)


def _fake_backward_input(grad_output, weight, input_size, stride, padding, dilation):
    return _like(grad_output, tuple(input_size), grad_output)


def _fake_backward_weight(grad_output, input, kernel_size, stride, padding, dilation, compute_bias):
    cout = grad_output.shape[1]
    grad_weight = input.new_empty((cout, 1, kernel_size[0], kernel_size[1]))
    return grad_weight, input.new_empty((cout,) if compute_bias else (0,))


def _fake_separable(input, dw_weight, pw_weight, dw_bias, pw_bias, stride, padding, dilation, dw_act, pw_act):
    h, w = _out_hw(input.shape[2:], dw_weight.shape[2:], stride, padding, dilation)
    return _like(input, (input.shape[0], pw_weight.shape[0], h, w), input)


def _fake_separable_backward(grad_output, input, dw_weight, pw_weight, dw_bias, pw_bias, stride, padding,
                             dilation, dw_act, pw_act, output_mask):
    def grad_like(t, needed):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if needed and t is not None \
            else input.new_empty((0,))
    grad_input = _like(input, input.shape, input) if output_mask[0] else input.new_empty((0,))
    return (grad_input, grad_like(dw_weight, output_mask[1]), grad_like(pw_weight, output_mask[2]),
            grad_like(dw_bias, output_mask[3]), grad_like(pw_bias, output_mask[4]))


# ---------------------------------------------------------------- autograd
def _dense(grad, like):
    # Kernels read any strides, but an expanded (stride-0) or scattered grad is best read once.
    if grad.is_contiguous() or grad.is_contiguous(memory_format=torch.channels_last):
        return grad
    return grad.contiguous(memory_format=memory_format(like))


def _make_depthwise_autograd(prefix):
    backward_input = getattr(torch.ops.convext, prefix + "depthwise_conv2d_backward_input")
    backward_weight = getattr(torch.ops.convext, prefix + "depthwise_conv2d_backward_weight")

    def setup_context(ctx, inputs, output):
        input, weight, bias, stride, padding, dilation = inputs
        ctx.save_for_backward(input, weight, bias)
        ctx.geometry = (stride, padding, dilation)

    def backward(ctx, grad):
        input, weight, bias = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: a differentiable composite
            return _composite_backward(
                lambda x, w, b: torch_depthwise_conv2d(x, w, b, stride, padding, dilation),
                grad, (input, weight, bias), (need_input, need_weight, need_bias)) + (None, None, None)
        grad = _dense(grad, input)
        grad_input = grad_weight = grad_bias = None
        if need_input:
            grad_input = backward_input(grad, weight, list(input.shape), stride, padding, dilation)
        if need_weight or need_bias:
            gw, gb = backward_weight(grad, input, list(weight.shape[2:]), stride, padding, dilation,
                                     bool(need_bias and bias is not None))
            grad_weight = gw if need_weight else None
            grad_bias = gb if need_bias and bias is not None else None
        return grad_input, grad_weight, grad_bias, None, None, None

    return backward, setup_context


def _make_backward_input_autograd(prefix):
    # grad_input is linear in (grad_output, weight): its derivatives are the forward conv and the
    # weight gradient. This makes depthwise_conv_transpose2d differentiable.
    forward = getattr(torch.ops.convext, prefix + "depthwise_conv2d")
    backward_weight = getattr(torch.ops.convext, prefix + "depthwise_conv2d_backward_weight")

    def setup_context(ctx, inputs, output):
        grad_output, weight, input_size, stride, padding, dilation = inputs
        ctx.save_for_backward(grad_output, weight)
        ctx.geometry = (stride, padding, dilation)
        ctx.input_size = tuple(input_size)

    def backward(ctx, gg):
        grad_output, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        if torch.is_grad_enabled():  # create_graph=True: a differentiable composite
            return _composite_backward(
                lambda go, w: _torch_backward_input(go, w, ctx.input_size, stride, padding, dilation),
                gg, (grad_output, weight), ctx.needs_input_grad[:2]) + (None,) * 4
        gg = _dense(gg, gg)
        d_grad_output = d_weight = None
        if ctx.needs_input_grad[0]:
            d_grad_output = forward(gg, weight, None, stride, padding, dilation)
        if ctx.needs_input_grad[1]:
            d_weight = backward_weight(_dense(grad_output, grad_output), gg, list(weight.shape[2:]), stride,
                                       padding, dilation, False)[0]
        return d_grad_output, d_weight, None, None, None, None

    return backward, setup_context


def _make_separable_autograd(prefix):
    separable_backward = getattr(torch.ops.convext, prefix + "depthwise_separable_conv2d_backward")

    def setup_context(ctx, inputs, output):
        input, dw_weight, pw_weight, dw_bias, pw_bias, stride, padding, dilation, dw_act, pw_act = inputs
        ctx.save_for_backward(input, dw_weight, pw_weight, dw_bias, pw_bias)
        ctx.config = (stride, padding, dilation, dw_act, pw_act)

    def backward(ctx, grad):
        input, dw_weight, pw_weight, dw_bias, pw_bias = ctx.saved_tensors
        stride, padding, dilation, dw_act, pw_act = ctx.config
        tensors = (input, dw_weight, pw_weight, dw_bias, pw_bias)
        mask = [bool(n) and t is not None for n, t in zip(ctx.needs_input_grad[:5], tensors)]
        if torch.is_grad_enabled():
            return _composite_backward(
                lambda x, dw, pw, db, pb: torch_depthwise_separable_conv2d(
                    x, dw, pw, db, pb, stride, padding, dilation, dw_act, pw_act),
                grad, tensors, mask) + (None,) * 5
        grads = separable_backward(_dense(grad, input), *tensors, stride, padding, dilation, dw_act, pw_act, mask)
        return tuple(g if m else None for g, m in zip(grads, mask)) + (None,) * 5

    return backward, setup_context


def _composite_backward(fn, grad, tensors, mask):
    """Differentiable backward through the torch composite (for create_graph=True)."""
    with torch.enable_grad():
        leaves = [t if t is None or not m else (t if t.requires_grad else t.detach().requires_grad_())
                  for t, m in zip(tensors, mask)]
        out = fn(*leaves)
        wrt = [t for t, m in zip(leaves, mask) if m and t is not None]
        grads = iter(torch.autograd.grad(out, wrt, grad, create_graph=True, allow_unused=True)) if wrt else iter(())
    return tuple(next(grads) if m and t is not None else None for t, m in zip(tensors, mask))


def _register(prefix: str, register_fake: bool):
    ns = "convext::" + prefix
    if register_fake:
        torch.library.register_fake(ns + "depthwise_conv2d")(_fake_depthwise_conv2d)
        torch.library.register_fake(ns + "depthwise_conv2d_backward_input")(_fake_backward_input)
        torch.library.register_fake(ns + "depthwise_conv2d_backward_weight")(_fake_backward_weight)
        torch.library.register_fake(ns + "depthwise_separable_conv2d")(_fake_separable)
        torch.library.register_fake(ns + "depthwise_separable_conv2d_backward")(_fake_separable_backward)
    for name, make in (("depthwise_conv2d", _make_depthwise_autograd),
                       ("depthwise_conv2d_backward_input", _make_backward_input_autograd),
                       ("depthwise_separable_conv2d", _make_separable_autograd)):
        backward, setup_context = make(prefix)
        torch.library.register_autograd(ns + name, backward, setup_context=setup_context)


if _ext.compiled_available():
    _register("", register_fake=True)
if _backend._triton_error is None:
    # triton_op derives its fake kernel by tracing the Python implementation.
    _register("triton_", register_fake=False)

# The spatial separable ops register their fake kernels and autograd in their own module.
from . import _spatial_separable  # noqa: E402,F401
