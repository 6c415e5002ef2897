"""torch.nn drop-in layers backed by the convext kernels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import handle_torch_function, has_torch_function_unary

from . import _backend, _geometry, _plan
from .functional import (_depthwise_conv2d, _planned_depthwise_conv2d, depthwise_conv1d, depthwise_conv2d,
                         depthwise_conv_transpose2d, depthwise_separable_conv2d)

__all__ = ["DepthwiseConv2d", "DepthwiseSeparableConv2d", "DepthwiseConv1d", "DepthwiseConvTranspose2d"]


def _check_backend(backend):
    if not isinstance(backend, str) or backend not in _backend.CHOICES:
        raise ValueError(f"convext: backend must be one of {_backend.CHOICES}, got {backend!r}")
    return backend


def _check_multiplier(depth_multiplier):
    if isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, int) or depth_multiplier < 1:
        raise ValueError(f"convext: depth_multiplier must be an int >= 1, got {depth_multiplier!r}")
    return depth_multiplier


def _non_zero_padding(module, x):
    """nn.Conv's non-"zeros" padding modes: pad explicitly, then convolve unpadded."""
    return F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)


def _transpose_output_padding(input, output_size, stride, padding, kernel_size, dilation):
    """The output_padding that makes a transposed 2-D conv of `input` return `output_size`
    ((H, W), or with the leading batch/channel sizes), as nn.ConvTranspose2d computes it.

    It reads the input's sizes, so under torch.fx.symbolic_trace (input a Proxy) it is recorded as a
    leaf call through `__torch_function__`, like the functional ops, instead of being traced.
    """
    if has_torch_function_unary(input):
        return handle_torch_function(_transpose_output_padding, (input,), input, output_size, stride, padding,
                                     kernel_size, dilation)
    if not isinstance(input, torch.Tensor) or input.dim() not in (3, 4):
        return [0, 0]  # the op itself rejects the input, naming it
    non_spatial = input.dim() - 2
    if len(output_size) == non_spatial + 2:
        output_size = output_size[non_spatial:]
    if len(output_size) != 2:
        raise ValueError(f"convext: output_size must have 2 or {non_spatial + 2} elements for a "
                         f"{input.dim()}-D input, got {len(output_size)}")
    output_padding = []
    for d in range(2):
        smallest = ((input.size(non_spatial + d) - 1) * stride[d] - 2 * padding[d]
                    + dilation[d] * (kernel_size[d] - 1) + 1)
        largest = smallest + stride[d] - 1
        if not smallest <= output_size[d] <= largest:
            raise ValueError(f"convext: requested output_size {list(output_size)}, but the valid sizes for an "
                             f"input of size {list(input.shape[non_spatial:])} are from "
                             f"{smallest} to {largest} in dimension {d}")
        output_padding.append(output_size[d] - smallest)
    return output_padding


class DepthwiseConv2d(nn.Conv2d):
    """`nn.Conv2d(C, C*M, k, groups=C)` with convext kernels; same parameters and state_dict."""

    def __init__(self, in_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True, depth_multiplier=1,
                 padding_mode="zeros", device=None, dtype=None, backend="auto"):
        m = _check_multiplier(depth_multiplier)
        super().__init__(in_channels, in_channels * m, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=in_channels, bias=bias, padding_mode=padding_mode,
                         device=device, dtype=dtype)
        self.backend = _check_backend(backend)

    @property
    def depth_multiplier(self) -> int:
        return self.out_channels // self.in_channels

    def forward(self, input):
        if self.padding_mode != "zeros":
            return depthwise_conv2d(_non_zero_padding(self, input), self.weight, self.bias, self.stride, 0,
                                    self.dilation, backend=self.backend)
        # The layer's own memo of depthwise_conv2d's plan (convext/_plan.py, layer_key): a layer is
        # called with the same shapes every step, so this is the common path; anything else, the function.
        key = _plan.layer_key(self, input, _backend.switches())
        if key is None:
            return depthwise_conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                    backend=self.backend)
        memo = self.__dict__.get("_convext_plan")
        params = self._parameters
        if memo is not None and memo[0] == key:
            return _planned_depthwise_conv2d(memo[1], input, params["weight"], params["bias"], plain_eager=True)
        out, plan = _depthwise_conv2d(input, params["weight"], params["bias"], self.stride, self.padding,
                                      self.dilation, self.backend)
        if plan is not None:
            self.__dict__["_convext_plan"] = (key, plan)
        return out

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_convext_plan", None)  # a memo of this process: never saved, pickled or copied
        return state

    def extra_repr(self):
        return super().extra_repr() + f", backend={self.backend!r}"


class DepthwiseSeparableConv2d(nn.Module):
    """Depthwise conv (+ activation) then 1x1 conv (+ activation), run as one fused op.

    State dict keys `depthwise.weight`, `depthwise.bias`, `pointwise.weight`, `pointwise.bias`, as the
    usual hand-written `depthwise = nn.Conv2d(Cin, Cin, k, groups=Cin); pointwise = nn.Conv2d(Cin, Cout, 1)`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 depth_multiplier=1, device=None, dtype=None, backend="auto", depthwise_activation=None,
                 pointwise_activation=None):
        super().__init__()
        self.backend = _check_backend(backend)
        self.depthwise_activation = _geometry.check_activation(depthwise_activation, "depthwise_activation")
        self.pointwise_activation = _geometry.check_activation(pointwise_activation, "pointwise_activation")
        self.depthwise = DepthwiseConv2d(in_channels, kernel_size, stride, padding, dilation, bias,
                                         depth_multiplier, device=device, dtype=dtype, backend=backend)
        self.pointwise = nn.Conv2d(in_channels * self.depthwise.depth_multiplier, out_channels, 1, bias=bias,
                                   device=device, dtype=dtype)

    @property
    def in_channels(self):
        return self.depthwise.in_channels

    @property
    def out_channels(self):
        return self.pointwise.out_channels

    def forward(self, input):
        dw, pw = self.depthwise, self.pointwise
        return depthwise_separable_conv2d(
            input, dw.weight, pw.weight, dw.bias, pw.bias, dw.stride, dw.padding, dw.dilation,
            backend=self.backend,
            depthwise_activation=self.depthwise_activation, pointwise_activation=self.pointwise_activation)

    def extra_repr(self):
        return (f"backend={self.backend!r}, depthwise_activation={self.depthwise_activation!r}, "
                f"pointwise_activation={self.pointwise_activation!r}")


class DepthwiseConv1d(nn.Conv1d):
    """`nn.Conv1d(C, C*M, k, groups=C)` with convext kernels; `causal=True` for TCN/WaveNet left padding."""

    def __init__(self, in_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True, depth_multiplier=1,
                 padding_mode="zeros", device=None, dtype=None, backend="auto", causal=False):
        m = _check_multiplier(depth_multiplier)
        if causal and padding != 0:
            raise ValueError(f"convext: padding must be 0 when causal=True, got {padding!r}")
        super().__init__(in_channels, in_channels * m, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=in_channels, bias=bias, padding_mode=padding_mode,
                         device=device, dtype=dtype)
        self.backend = _check_backend(backend)
        self.causal = bool(causal)

    def forward(self, input):
        if self.padding_mode != "zeros":
            input, padding = _non_zero_padding(self, input), 0
        else:
            padding = self.padding
        return depthwise_conv1d(input, self.weight, self.bias, self.stride, padding, self.dilation,
                                causal=self.causal, backend=self.backend)

    def step(self, x, state):
        """Streaming (causal=True, stride 1): the outputs for the new samples x ((N, C) or (N, C, T)), with
        `state` ((N, C, dilation*(k-1)), from `init_state`) updated in place; no autograd. Equal to
        `forward` over the whole sequence. See convext.depthwise_conv1d_update."""
        from .streaming import layer_step
        return layer_step(self, x, state)

    def init_state(self, batch_size, *, device=None, dtype=None):
        """Zeros (batch_size, in_channels, dilation*(k-1)): the state at the start of a stream."""
        from .streaming import layer_init_state
        return layer_init_state(self, batch_size, device=device, dtype=dtype)


class DepthwiseConvTranspose2d(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d(C, C*M, k, groups=C)` with convext kernels."""

    def __init__(self, in_channels, kernel_size, stride=1, padding=0, output_padding=0, bias=True, dilation=1,
                 depth_multiplier=1, padding_mode="zeros", device=None, dtype=None, backend="auto"):
        m = _check_multiplier(depth_multiplier)
        super().__init__(in_channels, in_channels * m, kernel_size, stride=stride, padding=padding,
                         output_padding=output_padding, groups=in_channels, bias=bias, dilation=dilation,
                         padding_mode=padding_mode, device=device, dtype=dtype)
        self.backend = _check_backend(backend)

    def forward(self, input, output_size=None):
        if output_size is None:
            output_padding = self.output_padding
        else:
            output_padding = _transpose_output_padding(input, output_size, self.stride, self.padding,
                                                       self.kernel_size, self.dilation)
        return depthwise_conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                          output_padding, self.dilation, backend=self.backend)

from ._nn_spatial_separable import SpatialSeparableConv2d  # noqa: E402
__all__ += ["SpatialSeparableConv2d"]

from .blocks import ASPP, HybridDilatedConv2d, ResizeConv2d  # noqa: E402
__all__ += ["HybridDilatedConv2d", "ASPP", "ResizeConv2d"]
