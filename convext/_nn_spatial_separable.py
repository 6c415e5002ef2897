"""convext.nn.SpatialSeparableConv2d: a (k x 1) depthwise conv then a (1 x k) depthwise conv, run as one op."""
from __future__ import annotations

from torch import nn

from . import _backend
from ._spatial_separable import spatial_separable_conv2d
from .nn import DepthwiseConv2d

__all__ = ["SpatialSeparableConv2d"]


def _pair(value, name):
    if isinstance(value, bool) or not (isinstance(value, int) or (
            isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                          for v in value))):
        raise TypeError(f"convext: {name} must be an int or a pair of ints, got {value!r}")
    return (value, value) if isinstance(value, int) else tuple(value)


class SpatialSeparableConv2d(nn.Module):
    """`vertical = nn.Conv2d(C, C*M, (kH, 1), (sh, 1), (ph, 0), (dh, 1), groups=C)` followed by
    `horizontal = nn.Conv2d(C*M, C*M, (1, kW), (1, sw), (0, pw), (1, dw), groups=C*M)`, as one op whose
    intermediate never exists in memory.

    kernel_size, stride, padding, dilation: an int or a (height, width) pair; the height half goes to
    the vertical conv, the width half to the horizontal one (so the output size is that of one
    kH x kW conv with the same arguments). padding "same" / "valid" applies to both convs. `bias`
    gives both convs a bias. Submodules `vertical` and `horizontal` are `DepthwiseConv2d`
    (nn.Conv2d subclasses); state_dict keys `vertical.weight` (C*M, 1, kH, 1), `vertical.bias`,
    `horizontal.weight` (C*M, 1, 1, kW), `horizontal.bias`, so the module loads the state_dict of
    the hand-written pair above (same attribute names) and vice versa.
    """

    def __init__(self, channels, kernel_size, stride=1, padding=0, dilation=1, bias=True, depth_multiplier=1,
                 device=None, dtype=None, backend="auto"):
        super().__init__()
        if not isinstance(backend, str) or backend not in _backend.CHOICES:
            raise ValueError(f"convext: backend must be one of {_backend.CHOICES}, got {backend!r}")
        kh, kw = _pair(kernel_size, "kernel_size")
        sh, sw = _pair(stride, "stride")
        dh, dw = _pair(dilation, "dilation")
        if isinstance(padding, str):
            vpad = hpad = padding
        else:
            ph, pw = _pair(padding, "padding")
            vpad, hpad = (ph, 0), (0, pw)
        self.backend = backend
        self.vertical = DepthwiseConv2d(channels, (kh, 1), (sh, 1), vpad, (dh, 1), bias, depth_multiplier,
                                        device=device, dtype=dtype, backend=backend)
        self.horizontal = DepthwiseConv2d(self.vertical.out_channels, (1, kw), (1, sw), hpad, (1, dw), bias, 1,
                                          device=device, dtype=dtype, backend=backend)

    @property
    def in_channels(self):
        return self.vertical.in_channels

    @property
    def out_channels(self):
        return self.horizontal.out_channels

    @property
    def kernel_size(self):
        return (self.vertical.kernel_size[0], self.horizontal.kernel_size[1])

    def _fused_arguments(self):
        """(stride, padding, dilation) of the fused op, or None when the two submodules were changed
        into something it does not express (then they run one after the other)."""
        v, h = self.vertical, self.horizontal
        if v.padding_mode != "zeros" or h.padding_mode != "zeros" or v.stride[1] != 1 or h.stride[0] != 1 \
                or v.dilation[1] != 1 or h.dilation[0] != 1 or v.kernel_size[1] != 1 or h.kernel_size[0] != 1 \
                or h.groups != h.in_channels or h.out_channels != v.out_channels:
            return None
        if isinstance(v.padding, str) or isinstance(h.padding, str):
            if v.padding != h.padding:
                return None
            padding = v.padding
        else:
            if v.padding[1] != 0 or h.padding[0] != 0:
                return None
            padding = (v.padding[0], h.padding[1])
        return (v.stride[0], h.stride[1]), padding, (v.dilation[0], h.dilation[1])

    def forward(self, input):
        args = self._fused_arguments()
        if args is None:
            return self.horizontal(self.vertical(input))
        stride, padding, dilation = args
        return spatial_separable_conv2d(input, self.vertical.weight, self.horizontal.weight, self.vertical.bias,
                                        self.horizontal.bias, stride, padding, dilation, backend=self.backend)

    def extra_repr(self):
        return f"backend={self.backend!r}"
