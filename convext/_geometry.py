"""Argument checks and normalisation. Every user error is raised here, before any kernel runs."""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
ACTIVATIONS = ("none", "relu", "relu6", "silu", "gelu", "hardswish")


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """A depthwise conv2d after normalisation: 4-D input, explicit asymmetric padding."""

    unbatched: bool
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int, int, int]  # top, bottom, left, right
    dilation: Tuple[int, int]
    out_size: Tuple[int, int]

    @property
    def symmetric_padding(self) -> Optional[Tuple[int, int]]:
        top, bottom, left, right = self.padding
        return (top, left) if top == bottom and left == right else None


def _is_int(v) -> bool:
    return isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool)


def int_tuple(value, name: str, n: int, minimum: int) -> Tuple[int, ...]:
    if _is_int(value):
        values = (value,) * n
    elif isinstance(value, (tuple, list)) and len(value) == n and all(_is_int(v) for v in value):
        values = tuple(value)
    elif isinstance(value, (tuple, list)) and len(value) == 1 and _is_int(value[0]):
        values = (value[0],) * n
    else:
        raise TypeError(f"convext: {name} must be an int or a tuple of {n} ints, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"convext: {name} must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in values)


def check_tensor(t, name: str, *, dims: Tuple[int, ...], like: Optional[torch.Tensor] = None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"convext: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"convext: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if t.dim() not in dims:
        shapes = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"convext: {name} must be {shapes}, got shape {tuple(t.shape)}")
    if like is not None:
        if t.device != like.device:
            raise RuntimeError(f"convext: {name} is on {t.device} but input is on {like.device}")
        if t.dtype != like.dtype:
            raise TypeError(f"convext: {name} has dtype {t.dtype} but input has dtype {like.dtype}")


def check_activation(value, name: str) -> str:
    if value is None:
        return "none"
    if not isinstance(value, str) or value.lower() not in ACTIVATIONS:
        raise ValueError(f"convext: {name} must be None or one of {ACTIVATIONS[1:]}, got {value!r}")
    return value.lower()


def resolve_padding(padding, name: str, kernel, stride, dilation, ndim: int):
    """Returns per spatial dim (before, after) pads."""
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * ndim
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"convext: {name}='same' is not supported for strided convolutions "
                                 f"(stride={tuple(stride)})")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))  # torch pads the extra one after
            return pads
        raise ValueError(f"convext: {name} must be an int, a tuple of ints, 'same' or 'valid', got {padding!r}")
    p = int_tuple(padding, name, ndim, 0)
    return [(v, v) for v in p]


def check_nonempty_spatial(input, spatial_dims: int, name: str = "input"):
    """torch's convolutions reject an input with a zero spatial size unless the batch is empty (even
    when padding would make room for the kernel); so does convext, with a message about the size."""
    spatial = tuple(int(s) for s in input.shape[-spatial_dims:])
    batched = input.dim() == spatial_dims + 2
    if 0 in spatial and not (batched and input.shape[0] == 0):
        raise ValueError(f"convext: {name} has an empty spatial size {spatial} (shape {tuple(input.shape)}); "
                         f"convolutions need every spatial size >= 1 (an empty input is accepted only with "
                         f"batch size 0, as in torch)")


_GEOMETRY_CACHE: dict = {}
_GEOMETRY_CACHE_SIZE = 4096


def _arg_key(v):
    """A stride / padding / dilation argument as a cache key; TypeError (no caching) unless it is
    exactly an int, a str or a tuple/list of ints (True == 1 must not hit an int's entry)."""
    if type(v) is int or type(v) is str:
        return v
    if type(v) in (tuple, list) and all(type(e) is int for e in v):
        return tuple(v)
    raise TypeError("not a cacheable argument")


def depthwise_conv2d_geometry(input, weight, bias, stride, padding, dilation, *,
                              weight_name="weight", bias_name="bias") -> ConvGeometry:
    """The checked geometry of a depthwise conv2d call (raises naming the bad argument).

    A layer calls this with the same shapes, dtypes and arguments every step, so a successful check
    is memoised on exactly what it reads (errors are never cached); not while torch.compile traces,
    where sizes may be symbolic.
    """
    key = None
    if (type(input) is torch.Tensor and type(weight) is torch.Tensor
            and (bias is None or type(bias) is torch.Tensor) and not torch.compiler.is_compiling()):
        try:
            key = (input.shape, input.dtype, input.device, weight.shape, weight.dtype, weight.device,
                   None if bias is None else (bias.shape, bias.dtype, bias.device),
                   _arg_key(stride), _arg_key(padding), _arg_key(dilation), weight_name, bias_name)
            hit = _GEOMETRY_CACHE.get(key)
        except TypeError:  # an unhashable argument: checked (and rejected) below
            key = hit = None
        if hit is not None:
            return hit
    g = _depthwise_conv2d_geometry(input, weight, bias, stride, padding, dilation, weight_name, bias_name)
    if key is not None:
        if len(_GEOMETRY_CACHE) >= _GEOMETRY_CACHE_SIZE:
            _GEOMETRY_CACHE.clear()
        _GEOMETRY_CACHE[key] = g
    return g


def _depthwise_conv2d_geometry(input, weight, bias, stride, padding, dilation, weight_name, bias_name):
    check_tensor(input, "input", dims=(3, 4))
    check_tensor(weight, weight_name, dims=(4,), like=input)
    check_nonempty_spatial(input, 2)
    channels = input.shape[-3]
    if channels == 0:
        raise ValueError(f"convext: input must have at least one channel, got shape {tuple(input.shape)}")
    cout = weight.shape[0]
    if weight.shape[1] != 1 or cout == 0 or cout % channels != 0:
        raise ValueError(f"convext: {weight_name} must have shape (C*M, 1, kH, kW) with C={channels} the "
                         f"input channels and M >= 1, got {tuple(weight.shape)}")
    if weight.shape[2] < 1 or weight.shape[3] < 1:
        raise ValueError(f"convext: {weight_name} has an empty kernel: {tuple(weight.shape)}")
    if bias is not None:
        check_tensor(bias, bias_name, dims=(1,), like=input)
        if bias.shape[0] != cout:
            raise ValueError(f"convext: {bias_name} must have shape ({cout},), got {tuple(bias.shape)}")
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    stride_t = int_tuple(stride, "stride", 2, 1)
    dilation_t = int_tuple(dilation, "dilation", 2, 1)
    (pt, pb), (pl, pr) = resolve_padding(padding, "padding", kernel, stride_t, dilation_t, 2)
    h, w = int(input.shape[-2]), int(input.shape[-1])
    out = []
    for size, before, after, k, s, d in ((h, pt, pb, kernel[0], stride_t[0], dilation_t[0]),
                                         (w, pl, pr, kernel[1], stride_t[1], dilation_t[1])):
        span = size + before + after - d * (k - 1)
        if span < 1:
            raise ValueError(f"convext: input spatial size ({h}, {w}) with padding {padding!r} is smaller "
                             f"than the dilated kernel {kernel} (dilation {dilation_t})")
        out.append((span - 1) // s + 1)
    return ConvGeometry(unbatched=input.dim() == 3, kernel_size=kernel, stride=stride_t,
                        padding=(pt, pb, pl, pr), dilation=dilation_t, out_size=(out[0], out[1]))


def check_pointwise(pointwise_weight, pointwise_bias, input, mid_channels):
    check_tensor(pointwise_weight, "pointwise_weight", dims=(4,), like=input)
    pw = pointwise_weight.shape
    if pw[1] != mid_channels or pw[2] != 1 or pw[3] != 1 or pw[0] == 0:
        raise ValueError(f"convext: pointwise_weight must have shape (C_out, {mid_channels}, 1, 1), got {tuple(pw)}")
    if pointwise_bias is not None:
        check_tensor(pointwise_bias, "pointwise_bias", dims=(1,), like=input)
        if pointwise_bias.shape[0] != pw[0]:
            raise ValueError(f"convext: pointwise_bias must have shape ({pw[0]},), got "
                             f"{tuple(pointwise_bias.shape)}")
