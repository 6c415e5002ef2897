"""The seeds' dilated and upsampling blocks, built from convext layers (exposed in convext.nn).

- `multi_grid(rate, grid)`: DeepLabv3's multi-grid dilation rates (rate * each grid entry).
- `HybridDilatedConv2d`: HDC (Wang et al. 2018), a stack of "same"-padded depthwise convs with
  the given dilation rates, each optionally followed by a 1x1 conv (then the fused separable op
  runs the pair); warns at construction when the rates grid (a common factor > 1, or any other
  hole in the stack's coverage of its receptive field).
- `ASPP`: DeepLabv3 / v3+ atrous spatial pyramid pooling: a 1x1 branch, one atrous branch per rate
  (depthwise separable by default, as DeepLabv3+), image pooling, concatenation, 1x1 projection.
- `ResizeConv2d`: upsample (nearest / bilinear) then conv, the checkerboard-free alternative to a
  strided transposed conv (Odena et al. 2016), with the output size of the matching
  `nn.ConvTranspose2d(in, out, kernel_size, stride=scale_factor, padding, output_padding, dilation)`.

None of them is an nn.Conv2d of exact type, so `convext.convert` leaves them (and their convext
layers) as they are.
"""
from __future__ import annotations

import math
import warnings
from functools import reduce
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch._prims_common import suggest_memory_format

from . import _geometry
from .nn import (DepthwiseConv2d, DepthwiseSeparableConv2d, _check_backend, _transpose_output_padding)

__all__ = ["multi_grid", "gridding_holes", "HybridDilatedConv2d", "ASPP", "ResizeConv2d"]

_ACTIVATION_MODULES = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "gelu": nn.GELU,
                       "hardswish": nn.Hardswish}


def _positive_int(v, name):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"convext: {name} must be an int >= 1, got {v!r}")
    return v


def _activation_module(name, arg="activation"):
    act = _geometry.check_activation(name, arg)
    return None if act == "none" else _ACTIVATION_MODULES[act]()


def multi_grid(rate, grid=(1, 2, 4)) -> Tuple[int, ...]:
    """DeepLabv3's multi-grid: the dilation rates `rate * g` for each unit rate `g` of `grid`
    (the last ResNet block's three convs at output stride 16: rate 2, grid (1, 2, 4) -> (2, 4, 8))."""
    _positive_int(rate, "rate")
    if not isinstance(grid, (tuple, list)) or not grid:
        raise ValueError(f"convext: grid must be a non-empty tuple of ints >= 1, got {grid!r}")
    return tuple(rate * _positive_int(g, "grid entries") for g in grid)


def gridding_holes(kernel_size: int, dilations: Sequence[int]) -> List[int]:
    """Offsets (relative to the centre, 1-D) inside the receptive field of a stack of
    kernel_size-wide convs with these dilations that no path through the stack reads: empty when
    the stack covers its receptive field densely (HDC's goal)."""
    offsets = {0}
    for d in dilations:
        taps = [(j - (kernel_size - 1) / 2) * d for j in range(kernel_size)]
        offsets = {o + t for o in offsets for t in taps}
    lo, hi = min(offsets), max(offsets)
    holes = [lo + i for i in range(int(hi - lo) + 1) if lo + i not in offsets]
    return [int(h) if float(h).is_integer() else h for h in holes]


class HybridDilatedConv2d(nn.Sequential):
    """HDC: depthwise convs (kernel_size, "same" padding, stride 1) with dilations `dilations`, in
    order, each followed by a 1x1 conv to `channels` when `pointwise` (the pair then runs as the
    fused separable op) and by `activation` (None, "relu", "relu6", "silu", "gelu", "hardswish")
    where given. A Sequential of `DepthwiseConv2d` (or `DepthwiseSeparableConv2d`) layers.

    Warns (UserWarning naming the rates) when the rates have a common factor > 1 (the stack then
    reads only one pixel in that factor: gridding), or otherwise leave holes in the receptive
    field (e.g. (1, 2, 9) with 3x3 kernels). (1, 2, 5) and (1, 2, 3) cover it densely.
    """

    def __init__(self, channels, kernel_size=3, dilations=(1, 2, 5), *, pointwise=False, bias=True,
                 activation=None, device=None, dtype=None, backend="auto"):
        _positive_int(channels, "channels")
        if not isinstance(dilations, (tuple, list)) or not dilations:
            raise ValueError(f"convext: dilations must be a non-empty tuple of ints >= 1, got {dilations!r}")
        dilations = tuple(_positive_int(d, "dilations entries") for d in dilations)
        kernel = _geometry.int_tuple(kernel_size, "kernel_size", 2, 1)
        _check_backend(backend)
        act = _geometry.check_activation(activation, "activation")
        layers = []
        for d in dilations:
            if pointwise:
                layers.append(DepthwiseSeparableConv2d(channels, channels, kernel, padding="same", dilation=d,
                                                       bias=bias, device=device, dtype=dtype, backend=backend,
                                                       pointwise_activation=None if act == "none" else act))
            else:
                layers.append(DepthwiseConv2d(channels, kernel, padding="same", dilation=d, bias=bias,
                                              device=device, dtype=dtype, backend=backend))
                if act != "none":
                    layers.append(_ACTIVATION_MODULES[act]())
        super().__init__(*layers)
        self.dilations = dilations
        self.pointwise = bool(pointwise)
        common = reduce(math.gcd, dilations)
        if common > 1:
            warnings.warn(f"convext: HybridDilatedConv2d dilation rates {dilations} have a common factor {common}: "
                          f"the stack reads only one pixel in {common} (gridding). HDC's rule: rates without a "
                          f"common factor > 1, e.g. (1, 2, 5)", UserWarning, stacklevel=2)
        else:
            holes = sorted({h for k in set(kernel) for h in gridding_holes(k, dilations)}, key=abs)
            if holes:
                warnings.warn(f"convext: HybridDilatedConv2d dilation rates {dilations} with a {kernel} kernel leave "
                              f"holes in the receptive field (offsets {holes[:6]} are never read: gridding). HDC's "
                              f"rule: each rate at most the span the previous ones cover, e.g. (1, 2, 5)",
                              UserWarning, stacklevel=2)

    def extra_repr(self):
        return f"dilations={self.dilations}, pointwise={self.pointwise}"


class _ImagePooling(nn.Sequential):
    """Global average pooling, 1x1 conv (+ norm, activation), upsampled back (bilinear) to the input size."""

    def forward(self, input):
        size, fmt = input.shape[-2:], suggest_memory_format(input)
        out = input
        for module in self:
            out = module(out)
        # the pooled (N, C, 1, 1) map has no layout of its own: upsample into the input's
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False).contiguous(memory_format=fmt)


class ASPP(nn.Module):
    """DeepLabv3 / v3+ atrous spatial pyramid pooling.

    Branches: a 1x1 conv; for each rate, a 3x3 conv with that dilation (and padding), depthwise
    separable when `separable` (DeepLabv3+: depthwise 3x3 -> norm -> activation -> 1x1 -> norm ->
    activation; with `norm_layer=None` the pair is one `DepthwiseSeparableConv2d` running the fused
    op with both activations); image pooling (global average, 1x1 conv, bilinear upsampling) when
    `image_pooling`. Concatenated, then projected by a 1x1 conv (+ norm, activation, dropout) to
    `out_channels`. Branch order and layout as torchvision's DeepLabv3 ASPP (`convs`, `project`).
    `rates` is typically (6, 12, 18) at output stride 16, (12, 24, 36) at 8.
    """

    def __init__(self, in_channels, out_channels, rates=(6, 12, 18), *, separable=True, image_pooling=True,
                 norm_layer=nn.BatchNorm2d, activation="relu", dropout=0.5, device=None, dtype=None,
                 backend="auto"):
        super().__init__()
        _positive_int(in_channels, "in_channels")
        _positive_int(out_channels, "out_channels")
        if not isinstance(rates, (tuple, list)):
            raise ValueError(f"convext: rates must be a tuple of ints >= 1, got {rates!r}")
        rates = tuple(_positive_int(r, "rates entries") for r in rates)
        _check_backend(backend)
        act = _geometry.check_activation(activation, "activation")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"convext: dropout must be a probability in [0, 1], got {dropout!r}")
        kw = dict(device=device, dtype=dtype)
        use_norm = norm_layer is not None

        def norm_act(channels):
            layers = [norm_layer(channels, **kw)] if use_norm else []
            return layers + ([_ACTIVATION_MODULES[act]()] if act != "none" else [])

        self.rates = rates
        self.separable = bool(separable)
        branches = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=not use_norm, **kw),
                                  *norm_act(out_channels))]
        for r in rates:
            if separable and use_norm:
                branches.append(nn.Sequential(
                    DepthwiseConv2d(in_channels, 3, padding=r, dilation=r, bias=False, backend=backend, **kw),
                    *norm_act(in_channels),
                    nn.Conv2d(in_channels, out_channels, 1, bias=False, **kw),
                    *norm_act(out_channels)))
            elif separable:
                fused_act = None if act == "none" else act
                branches.append(nn.Sequential(DepthwiseSeparableConv2d(
                    in_channels, out_channels, 3, padding=r, dilation=r, bias=True, backend=backend,
                    depthwise_activation=fused_act, pointwise_activation=fused_act, **kw)))
            else:
                branches.append(nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r, bias=not use_norm, **kw),
                    *norm_act(out_channels)))
        if image_pooling:
            branches.append(_ImagePooling(nn.AdaptiveAvgPool2d(1),
                                          nn.Conv2d(in_channels, out_channels, 1, bias=not use_norm, **kw),
                                          *norm_act(out_channels)))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=not use_norm, **kw),
            *norm_act(out_channels), nn.Dropout(dropout))

    def forward(self, input):
        return self.project(torch.cat([branch(input) for branch in self.convs], dim=-3))

    def extra_repr(self):
        return f"rates={self.rates}, separable={self.separable}"


_RESIZE_MODES = ("nearest", "bilinear")


class ResizeConv2d(nn.Module):
    """Upsample by `scale_factor` (`mode` "nearest" or "bilinear"), then a conv with `kernel_size`:
    the checkerboard-free alternative to `nn.ConvTranspose2d(in_channels, out_channels, kernel_size,
    stride=scale_factor, padding=padding, output_padding=output_padding, dilation=dilation)`, whose
    output size it has: `(H - 1) * scale - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1`
    (and, like it, `forward(input, output_size=...)`). The upsampled image is zero-padded (or
    cropped) by that size's difference, split as evenly as possible (the extra one after).

    `depthwise=True` makes the conv a `DepthwiseConv2d` (out_channels a multiple of in_channels),
    else an `nn.Conv2d`; both at `.conv`, so the state dict is `conv.weight`, `conv.bias`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, scale_factor=2, mode="nearest", *, depthwise=False,
                 padding=0, output_padding=0, dilation=1, bias=True, device=None, dtype=None, backend="auto"):
        super().__init__()
        _positive_int(in_channels, "in_channels")
        _positive_int(out_channels, "out_channels")
        if mode not in _RESIZE_MODES:
            raise ValueError(f"convext: mode must be one of {_RESIZE_MODES}, got {mode!r}")
        self.scale_factor = _geometry.int_tuple(scale_factor, "scale_factor", 2, 1)
        self.kernel_size = _geometry.int_tuple(kernel_size, "kernel_size", 2, 1)
        self.padding = _geometry.int_tuple(padding, "padding", 2, 0)
        self.output_padding = _geometry.int_tuple(output_padding, "output_padding", 2, 0)
        self.dilation = _geometry.int_tuple(dilation, "dilation", 2, 1)
        if any(op >= max(s, d) for op, s, d in zip(self.output_padding, self.scale_factor, self.dilation)):
            raise ValueError(f"convext: output_padding must be smaller than scale_factor or dilation (as for "
                             f"ConvTranspose2d's stride), got {output_padding!r}")
        _check_backend(backend)
        self.mode = mode
        self.depthwise = bool(depthwise)
        if depthwise:
            if out_channels % in_channels:
                raise ValueError(f"convext: depthwise=True needs out_channels ({out_channels}) to be a multiple of "
                                 f"in_channels ({in_channels})")
            self.conv = DepthwiseConv2d(in_channels, self.kernel_size, dilation=self.dilation, bias=bias,
                                        depth_multiplier=out_channels // in_channels, device=device, dtype=dtype,
                                        backend=backend)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, self.kernel_size, dilation=self.dilation, bias=bias,
                                  device=device, dtype=dtype)

    @property
    def in_channels(self):
        return self.conv.in_channels

    @property
    def out_channels(self):
        return self.conv.out_channels

    def _pads(self, size, output_padding):
        """(before, after) per spatial dim: what the upsampled image needs (negative: cropped)."""
        pads = []
        for d in range(2):
            k, s, p, dil = self.kernel_size[d], self.scale_factor[d], self.padding[d], self.dilation[d]
            target = (size[d] - 1) * s - 2 * p + dil * (k - 1) + output_padding[d] + 1
            if target < 1:  # torch's transposed conv raises "Output size is too small" here
                raise ValueError(f"convext: ResizeConv2d output would be empty ({target} in dimension {d}) for an "
                                 f"input of spatial size {tuple(size)}; check padding")
            total = target - size[d] * s + dil * (k - 1)
            pads.append((total // 2, total - total // 2, target))
        return pads

    def forward(self, input, output_size=None):
        if not isinstance(input, torch.Tensor) or input.dim() not in (3, 4):
            raise ValueError(f"convext: input must be a 3-D or 4-D tensor, got "
                             f"{tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__}")
        if output_size is None:
            output_padding = self.output_padding
        else:
            output_padding = _transpose_output_padding(input, output_size, self.scale_factor, self.padding,
                                                       self.kernel_size, self.dilation)
        size = tuple(int(v) for v in input.shape[-2:])
        (top, bottom, out_h), (left, right, out_w) = self._pads(size, output_padding)
        x = input.unsqueeze(0) if input.dim() == 3 else input
        if x.shape[0] == 0:
            return x.new_zeros((0, self.out_channels, out_h, out_w))
        align = False if self.mode == "bilinear" else None
        up = F.interpolate(x, size=(size[0] * self.scale_factor[0], size[1] * self.scale_factor[1]), mode=self.mode,
                           align_corners=align)
        if top == bottom and left == right and top >= 0 and left >= 0:
            padding = (top, left)
        else:
            up = F.pad(up, (left, right, top, bottom))
            padding = (0, 0)
        conv = self.conv
        if self.depthwise:
            from .functional import depthwise_conv2d
            out = depthwise_conv2d(up, conv.weight, conv.bias, 1, padding, conv.dilation, backend=conv.backend)
        else:
            out = F.conv2d(up, conv.weight, conv.bias, 1, padding, conv.dilation)
        return out.squeeze(0) if input.dim() == 3 else out

    def extra_repr(self):
        return (f"scale_factor={self.scale_factor}, mode={self.mode!r}, padding={self.padding}, "
                f"output_padding={self.output_padding}, depthwise={self.depthwise}")
