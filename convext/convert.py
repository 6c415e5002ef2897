"""convext.convert: swap exact torch.nn depthwise convs for convext layers, fuse separable pairs."""
from __future__ import annotations

import copy
from typing import List, Optional

import torch
from torch import nn

from . import _backend
from .nn import DepthwiseConv1d, DepthwiseConv2d, DepthwiseConvTranspose2d, DepthwiseSeparableConv2d

_ACTIVATIONS = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu"}


def _is_depthwise(m, cls) -> bool:
    return (type(m) is cls and m.groups == m.in_channels and m.out_channels % m.in_channels == 0
            and m.padding_mode == "zeros")


def _is_pointwise(m, in_channels: int) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.groups == 1
            and m.padding in ((0, 0), "valid") and m.padding_mode == "zeros" and m.in_channels == in_channels)


def _activation_name(m) -> Optional[str]:
    if type(m) in _ACTIVATIONS:
        return _ACTIVATIONS[type(m)]
    if type(m) is nn.GELU and m.approximate == "none":
        return "gelu"
    return None


def _foldable_bn(m, channels: int) -> bool:
    return (type(m) is nn.BatchNorm2d and m.num_features == channels and m.track_running_stats
            and m.running_mean is not None)


def _to_layer(conv, backend):
    """The convext layer for an exact nn depthwise conv, sharing its Parameter objects."""
    kwargs = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                  depth_multiplier=conv.out_channels // conv.in_channels, device="meta", backend=backend)
    if type(conv) is nn.Conv2d:
        new = DepthwiseConv2d(conv.in_channels, conv.kernel_size, **kwargs)
    elif type(conv) is nn.Conv1d:
        new = DepthwiseConv1d(conv.in_channels, conv.kernel_size, **kwargs)
    else:
        new = DepthwiseConvTranspose2d(conv.in_channels, conv.kernel_size, output_padding=conv.output_padding,
                                       **kwargs)
    new.weight = conv.weight
    new.bias = conv.bias
    new.train(conv.training)
    return new


def _fold_bn_into(conv, bn):
    """conv followed by eval-mode BN -> the same conv with folded weight and bias (new Parameters)."""
    with torch.no_grad():
        scale = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
        factor = (scale.double() * inv_std)
        weight = conv.weight.double() * factor.view(-1, *([1] * (conv.weight.dim() - 1)))
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(factor)
        bias = (bias - bn.running_mean.double()) * factor + shift.double()
    conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    return conv


def _fused(dw, pw, backend, dw_act=None, pw_act=None):
    fused = DepthwiseSeparableConv2d(dw.in_channels, pw.out_channels, dw.kernel_size, dw.stride, dw.padding,
                                     dw.dilation, depth_multiplier=dw.out_channels // dw.in_channels,
                                     device="meta", backend=backend, depthwise_activation=dw_act,
                                     pointwise_activation=pw_act)
    fused.depthwise = _to_layer(dw, backend)
    fused.pointwise = pw
    fused.train(dw.training)
    return fused


def _convert_sequential(seq: nn.Sequential, backend, fuse_separable, fold_batchnorm):
    mods: List[nn.Module] = list(seq)
    i = 0
    while i < len(mods):
        m = mods[i]
        if _is_depthwise(m, nn.Conv2d):
            j = i + 1
            dw = m
            dw_act = pw_act = None
            consumed = []
            if fold_batchnorm and j < len(mods) and _foldable_bn(mods[j], dw.out_channels):
                dw = _fold_bn_into(dw, mods[j])
                consumed.append(j)
                j += 1
            if fold_batchnorm and fuse_separable and j < len(mods) and _activation_name(mods[j]) \
                    and j + 1 < len(mods) and _is_pointwise(mods[j + 1], dw.out_channels):
                dw_act = _activation_name(mods[j])
                consumed.append(j)
                j += 1
            if fuse_separable and j < len(mods) and _is_pointwise(mods[j], dw.out_channels):
                pw = mods[j]
                consumed.append(j)
                j += 1
                if fold_batchnorm and j < len(mods) and _foldable_bn(mods[j], pw.out_channels):
                    pw = _fold_bn_into(pw, mods[j])
                    consumed.append(j)
                    j += 1
                if fold_batchnorm and j < len(mods) and _activation_name(mods[j]):
                    pw_act = _activation_name(mods[j])
                    consumed.append(j)
                    j += 1
                seq[i] = _fused(dw, pw, backend, dw_act, pw_act)
            else:
                seq[i] = _to_layer(dw, backend)
            # Identity keeps the indices (and so the state_dict keys) of the modules after the chain.
            for k in consumed:
                seq[k] = nn.Identity()
            i = j
            continue
        if fold_batchnorm and type(m) is nn.Conv2d and i + 1 < len(mods) and _foldable_bn(mods[i + 1], m.out_channels):
            seq[i] = _fold_bn_into(m, mods[i + 1])
            seq[i + 1] = nn.Identity()
            i += 2
            continue
        seq[i] = _convert(m, backend, fuse_separable, fold_batchnorm)
        i += 1


def _convert(module: nn.Module, backend, fuse_separable, fold_batchnorm) -> nn.Module:
    for cls in (nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d):
        if _is_depthwise(module, cls):
            return _to_layer(module, backend)
    if isinstance(module, nn.Sequential):
        _convert_sequential(module, backend, fuse_separable, fold_batchnorm)
        return module
    dw, pw = getattr(module, "depthwise", None), getattr(module, "pointwise", None)
    if fuse_separable and _is_depthwise(dw, nn.Conv2d) and _is_pointwise(pw, dw.out_channels):
        module.depthwise = _fused(dw, pw, backend)
        module.pointwise = nn.Identity()
    for name, child in list(module.named_children()):
        new = _convert(child, backend, fuse_separable, fold_batchnorm)
        if new is not child:
            setattr(module, name, new)
    return module


def convert(module: nn.Module, *, backend="auto", fuse_separable=True, fold_batchnorm=False,
            inplace=False) -> nn.Module:
    """Returns `module` with its exact nn depthwise convs replaced by convext layers (see API.md)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"convext: module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(backend, str) or backend not in _backend.CHOICES:
        raise ValueError(f"convext: backend must be one of {_backend.CHOICES}, got {backend!r}")
    if fold_batchnorm and any(m.training for m in module.modules()):
        raise ValueError("convext: fold_batchnorm=True needs a model in eval mode (call module.eval() first)")
    if not inplace:
        module = copy.deepcopy(module)
    return _convert(module, backend, bool(fuse_separable), bool(fold_batchnorm))
