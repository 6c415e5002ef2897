"""Cost and receptive field of a model, from one traced run: `conv_cost`, `receptive_field`.

Both run the module once (eval mode, no grad, a seeded random input of `input_size`; the module's
train/eval flags are restored afterwards) under a `torch.overrides.TorchFunctionMode`, which sees
every torch.nn.functional / torch call and every convext functional call (they dispatch through
`__torch_function__`, like torch.nn.functional) in the order they really execute, whatever the
module structure: Sequential or not, torch.fx-traceable or not, branches, shared modules called
twice, functional calls inside `forward`, and convext.convert's fused modules (a
`FusedDepthwiseConv2d` runs the whole depthwise -> 1x1 chain as one separable call, which is counted
as its depthwise and its 1x1 part, each under the path of the module that owns that weight; the
`FusedPointwiseConv2d` at the 1x1 conv's place passes its input through and costs nothing).

Layers are named by the module that owns the weight Parameter (so a fused model reports the same
names as the original); a call whose weight is not a registered Parameter is named after the
innermost module running it, `path:function`.

Counted (`conv_cost`): convolutions of every kind (torch conv1d/2d/3d, conv_transpose1d/2d/3d, and
convext's depthwise, separable, 1-D, transposed and streaming ops) and `F.linear`. One
multiply-accumulate per weight tap per output (transposed convs: per input) element, the batch
included: pass a batch of 1 for per-image figures. Bias additions, norms, activations and pooling
are not multiply-accumulates and are not counted.

Receptive field (`receptive_field`): every tensor carries (receptive field, jump) per spatial
dimension, in input pixels. A conv or pooling layer with effective kernel `e = dilation*(k-1)+1`
and stride `s` maps (r, j) to (r + (e-1)*j, j*s); a transposed conv to (r + span*j, j/s), `span` its
widest stride phase; adaptive pooling uses its widest window; interpolation keeps r (nearest) or
adds its interpolation footprint and divides j by the scale. Any other op gives its outputs the
largest (r, j) of its inputs (a sum or concatenation of branches sees what the widest branch sees),
except spatially constant operands broadcast over a larger output (squeeze-excitation gates,
per-channel scales): they modulate features without widening their receptive field. Global
pooling itself, and what is upsampled from it (ASPP's image pooling), covers the whole image.
"""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["conv_cost", "receptive_field", "ConvCost", "LayerCost", "ReceptiveField"]


# --------------------------------------------------------------------------- results


class _Record:
    """Attribute access and `entry["field"]` alike."""

    def __getitem__(self, key):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def keys(self):
        return [f.name for f in dataclasses.fields(self)]

    def get(self, key, default=None):
        return getattr(self, key) if key in self.keys() else default


@dataclasses.dataclass
class LayerCost(_Record):
    """One convolution / linear call: its parameters and multiply-accumulates."""

    name: str
    op: str  # "conv2d", "depthwise_conv2d", "pointwise_conv2d", "conv_transpose2d", "linear", ...
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    params: int
    macs: int


@dataclasses.dataclass
class ConvCost(_Record):
    """`conv_cost`'s answer: `params` (every parameter of the module, each counted once), `macs`
    (multiply-accumulates of one forward pass on `input_size`), `layers` (per call, in execution
    order)."""

    params: int
    macs: int
    layers: List[LayerCost]

    def __str__(self):
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'op':<18} {'output':<20} {'params':>12} {'MACs':>16}"]
        for layer in self.layers:
            lines.append(f"{layer.name:<{width}}  {layer.op:<18} {str(tuple(layer.output_shape)):<20} "
                         f"{layer.params:>12,} {layer.macs:>16,}")
        lines.append(f"{'total':<{width}}  {'':<18} {'':<20} {self.params:>12,} {self.macs:>16,}")
        return "\n".join(lines)


@dataclasses.dataclass
class ReceptiveField(_Record):
    """One convolution or pooling call: receptive field and jump (per spatial dimension, in input
    pixels) of its output, and its output's spatial size."""

    name: str
    op: str
    receptive_field: Tuple[int, ...]
    jump: Tuple[Any, ...]  # int, or a float below 1 after upsampling
    output_size: Tuple[int, ...]


# --------------------------------------------------------------------------- argument binding


def _bind(names: Sequence[str], defaults: Dict[str, Any], args, kwargs) -> Dict[str, Any]:
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    return bound


def _tuple(v, n):
    if isinstance(v, (list, tuple)):
        v = tuple(v)
        return v if len(v) == n else (v[0],) * n
    return (v,) * n


def _numel(t) -> int:
    return 0 if t is None else int(t.numel())


# --------------------------------------------------------------------------- op table
# Each entry: (argument names, defaults, kind). kinds: "conv", "conv_transpose", "linear", "pool",
# "adaptive_pool", "interpolate", and the convext specials.

_CONV = (("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
         {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
_CONV_T = (("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
           {"bias": None, "stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1})
_MAX_POOL = (("input", "kernel_size", "stride", "padding", "dilation"),
             {"stride": None, "padding": 0, "dilation": 1})
_AVG_POOL = (("input", "kernel_size", "stride", "padding"), {"stride": None, "padding": 0})
_LP_POOL = (("input", "norm_type", "kernel_size", "stride"), {"stride": None})
_ADAPTIVE = (("input", "output_size"), {})
_INTERP = (("input", "size", "scale_factor", "mode"), {"size": None, "scale_factor": None, "mode": "nearest"})
_LINEAR = (("input", "weight", "bias"), {"bias": None})
_DW = (("input", "weight", "bias", "stride", "padding", "dilation"),
       {"bias": None, "stride": 1, "padding": 0, "dilation": 1})
_DW_T = (("input", "weight", "bias", "stride", "padding", "output_padding", "dilation"),
         {"bias": None, "stride": 1, "padding": 0, "output_padding": 0, "dilation": 1})
_SEP = (("input", "depthwise_weight", "pointwise_weight", "depthwise_bias", "pointwise_bias", "stride",
         "padding", "dilation"),
        {"depthwise_bias": None, "pointwise_bias": None, "stride": 1, "padding": 0, "dilation": 1})
_UPDATE = (("x", "conv_state", "weight", "bias", "dilation"), {"bias": None, "dilation": 1})
_SPATIAL = (("input", "vertical_weight", "horizontal_weight", "vertical_bias", "horizontal_bias", "stride",
             "padding", "dilation"),
            {"vertical_bias": None, "horizontal_bias": None, "stride": 1, "padding": 0, "dilation": 1})

_OPS: Dict[Callable, Tuple[str, int, Tuple]] = {}  # function -> (kind, spatial dims, (names, defaults))


def _register(fn, kind, nd, spec):
    if fn is not None:
        _OPS[fn] = (kind, nd, spec)


for _nd in (1, 2, 3):
    _register(getattr(torch, f"conv{_nd}d"), "conv", _nd, _CONV)
    _register(getattr(torch, f"conv_transpose{_nd}d"), "conv_transpose", _nd, _CONV_T)
    for _name in (f"max_pool{_nd}d", f"_max_pool{_nd}d", f"max_pool{_nd}d_with_indices"):
        _register(getattr(F, _name, None), "pool", _nd, _MAX_POOL)
    _register(getattr(torch, f"max_pool{_nd}d", None), "pool", _nd, _MAX_POOL)
    _register(getattr(F, f"avg_pool{_nd}d", None), "pool", _nd, _AVG_POOL)
    _register(getattr(torch, f"avg_pool{_nd}d", None), "pool", _nd, _AVG_POOL)
    _register(getattr(F, f"lp_pool{_nd}d", None), "pool", _nd, _LP_POOL)
    for _name in (f"adaptive_avg_pool{_nd}d", f"adaptive_max_pool{_nd}d", f"_adaptive_max_pool{_nd}d",
                  f"adaptive_max_pool{_nd}d_with_indices"):
        _register(getattr(F, _name, None), "adaptive_pool", _nd, _ADAPTIVE)
        _register(getattr(torch, _name, None), "adaptive_pool", _nd, _ADAPTIVE)
_register(F.interpolate, "interpolate", 0, _INTERP)
_register(F.linear, "linear", 0, _LINEAR)


def _register_convext_ops():
    from . import functional
    _register(functional.depthwise_conv2d, "dw", 2, _DW)
    _register(functional.depthwise_conv1d, "dw", 1, _DW)
    _register(functional.depthwise_conv_transpose2d, "dw_transpose", 2, _DW_T)
    _register(functional.depthwise_separable_conv2d, "separable", 2, _SEP)
    try:
        from .streaming import depthwise_conv1d_update
    except ImportError:  # pragma: no cover - the streaming module is part of the package
        depthwise_conv1d_update = None
    _register(depthwise_conv1d_update, "update", 1, _UPDATE)
    try:  # the spatial separable op (k x 1 then 1 x k depthwise), where this build has it
        from ._spatial_separable import spatial_separable_conv2d
    except ImportError:
        spatial_separable_conv2d = None
    _register(spatial_separable_conv2d, "spatial_separable", 2, _SPATIAL)


# --------------------------------------------------------------------------- the tracer


@dataclasses.dataclass(frozen=True)
class _Field:
    rf: Tuple[Fraction, ...]
    jump: Tuple[Fraction, ...]

    def dims(self, nd):
        """As nd spatial dims: a 1-entry field (the raw input) broadcasts, a longer one keeps its last."""
        if len(self.rf) == nd:
            return self
        if len(self.rf) == 1:
            return _Field(self.rf * nd, self.jump * nd)
        if len(self.rf) > nd:
            return _Field(self.rf[-nd:], self.jump[-nd:])
        return _Field((max(self.rf),) * nd, (max(self.jump),) * nd)


def _merge(fields: List[_Field]) -> Optional[_Field]:
    if not fields:
        return None
    nd = max(len(f.rf) for f in fields)
    fields = [f.dims(nd) for f in fields]
    return _Field(tuple(max(f.rf[d] for f in fields) for d in range(nd)),
                  tuple(max(f.jump[d] for f in fields) for d in range(nd)))


def _transposed_span(k, s, d) -> Fraction:
    """Input positions (minus one) that one output of a transposed conv reads, at its widest stride phase."""
    widest = 0
    for r in range(s):
        taps = [j for j in range(k) if (j * d) % s == r]
        if taps:
            widest = max(widest, (taps[-1] - taps[0]) * d // s)
    return Fraction(widest)


def _conv_label(kind, fname, a, x, w, nd):
    """torch convs by their shape: depthwise (groups == input channels > 1), pointwise (1x1, groups 1)."""
    if kind != "conv":
        return fname
    groups = int(a.get("groups") or 1)
    channels = int(x.shape[-nd - 1]) if x.dim() > nd else 0
    if groups > 1 and groups == channels:
        return f"depthwise_conv{nd}d"
    if groups == 1 and all(int(v) == 1 for v in w.shape[2:]):
        return f"pointwise_conv{nd}d"
    return fname


class _Tracer(TorchFunctionMode):
    def __init__(self, param_owner: Dict[int, str], stack: List[str]):
        super().__init__()
        self.param_owner = param_owner
        self.stack = stack
        self.fields = WeakIdKeyDictionary()
        self.costs: List[LayerCost] = []
        self.rfs: List[ReceptiveField] = []

    # naming -----------------------------------------------------------------------------------
    def _where(self):
        return self.stack[-1] if self.stack else ""

    def _name(self, weight, func_name):
        if isinstance(weight, torch.Tensor) and id(weight) in self.param_owner:
            return self.param_owner[id(weight)]
        where = self._where()
        return f"{where}:{func_name}" if where else func_name

    def _pool_name(self, func_name, module_types):
        where = self._where()
        mod = module_types.get(where)
        if mod is not None and "Pool" in mod:
            return where
        return f"{where}:{func_name}" if where else func_name

    # fields -----------------------------------------------------------------------------------
    def _field_of(self, t) -> Optional[_Field]:
        return self.fields.get(t) if isinstance(t, torch.Tensor) else None

    def _set(self, out, field):
        if field is None:
            return
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.fields[t] = field

    def _entry(self, name, op, field, out, nd):
        size = tuple(int(s) for s in out.shape[-nd:]) if nd else ()
        self.rfs.append(ReceptiveField(
            name=name, op=op,
            receptive_field=tuple(int(math.ceil(r)) for r in field.rf),
            jump=tuple(int(j) if j.denominator == 1 else float(j) for j in field.jump),
            output_size=size))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        spec = _OPS.get(func)
        try:
            if spec is None:
                self._set(out, self._generic(args, kwargs, out))
            else:
                self._known(func, spec, args, kwargs, out)
        except Exception as e:  # the analysis must never break the model's run silently wrong
            raise RuntimeError(f"convext.analysis: could not account for {getattr(func, '__name__', func)}: "
                               f"{type(e).__name__}: {e}") from e
        return out

    def _generic(self, args, kwargs, out):
        """Any other op: the widest field of its inputs, leaving out spatially constant operands that
        are broadcast over a larger output (squeeze-excitation gates, per-channel scales): they
        modulate the features, the receptive field is the features'."""
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        fields = [(t, self.fields.get(t)) for t in tensors]
        fields = [(t, f) for t, f in fields if f is not None]
        if not fields:
            return None
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        nd = max(len(f.rf) for _, f in fields)
        out_area = max((math.prod(t.shape[-nd:]) for t in outs if t.dim() >= nd), default=1)

        def broadcast(t):
            return t.dim() >= nd and math.prod(t.shape[-nd:]) == 1 < out_area

        kept = [f for t, f in fields if not broadcast(t)] or [f for _, f in fields]
        return _merge(kept)

    def _known(self, func, spec, args, kwargs, out):
        kind, nd, (names, defaults) = spec
        a = _bind(names, defaults, args, kwargs)
        fname = getattr(func, "__name__", str(func)).lstrip("_")
        y = out[0] if isinstance(out, (tuple, list)) else out
        x = a.get("input", a.get("x"))
        if kind in ("conv", "conv_transpose", "dw", "dw_transpose", "separable", "update", "spatial_separable"):
            self._conv(kind, nd, fname, a, x, y)
            return
        field = (self._field_of(x) or _Field((Fraction(1),), (Fraction(1),)))
        if kind == "linear":
            w = a["weight"]
            self.costs.append(LayerCost(self._name(w, fname), "linear", tuple(x.shape), tuple(y.shape),
                                        _numel(w) + _numel(a["bias"]), int(y.numel()) * int(w.shape[-1])))
            self._set(out, field)
            return
        if kind == "interpolate":
            nd = x.dim() - 2
            field = field.dims(nd)
            mode = a.get("mode") or "nearest"
            extra = {"linear": 1, "bilinear": 1, "trilinear": 1, "bicubic": 3}.get(mode, 0)
            rf, jump = [], []
            for d in range(nd):
                scale = Fraction(int(x.shape[2 + d]), int(y.shape[2 + d])) if y.shape[2 + d] else Fraction(1)
                # a 1-pixel input has no neighbour to interpolate with
                rf.append(field.rf[d] + min(extra, int(x.shape[2 + d]) - 1) * field.jump[d])
                jump.append(field.jump[d] * scale)
            self._set(out, _Field(tuple(rf), tuple(jump)))
            return
        field = field.dims(nd)
        if kind == "pool":
            k = _tuple(a["kernel_size"], nd)
            s = _tuple(a["stride"] if a["stride"] not in (None, [], ()) else a["kernel_size"], nd)
            dil = _tuple(a.get("dilation", 1), nd)
            eff = [dd * (kk - 1) + 1 for kk, dd in zip(k, dil)]
            stride = [Fraction(int(v)) for v in s]
        else:  # adaptive pooling: the widest window, the mean stride
            eff, stride = [], []
            for d in range(nd):
                n_in, n_out = int(x.shape[-nd + d]), int(y.shape[-nd + d])
                widest = max(((i + 1) * n_in + n_out - 1) // n_out - (i * n_in) // n_out for i in range(n_out)) \
                    if n_out else n_in
                eff.append(widest)
                stride.append(Fraction(n_in, n_out) if n_out else Fraction(1))
        new = _Field(tuple(field.rf[d] + (eff[d] - 1) * field.jump[d] for d in range(nd)),
                     tuple(field.jump[d] * stride[d] for d in range(nd)))
        self._set(out, new)
        self._entry(self._pool_name(fname, self._module_types), fname, new, y, nd)

    def _conv(self, kind, nd, fname, a, x, y):
        field = (self._field_of(x) or _Field((Fraction(1),), (Fraction(1),))).dims(nd)
        if kind == "update":
            w = a["weight"]
            k = (int(w.shape[-1]),)
            macs = int(y.numel()) * k[0]
            name = self._name(w, fname)
            self.costs.append(LayerCost(name, fname, tuple(x.shape), tuple(y.shape), _numel(w) + _numel(a["bias"]),
                                        macs))
            return  # a streaming step: no spatial geometry to follow
        if kind == "spatial_separable":
            self._spatial_separable(a, x, y, field)
            return
        transposed = kind in ("conv_transpose", "dw_transpose")
        w = a["depthwise_weight"] if kind == "separable" else a["weight"]
        k = tuple(int(v) for v in w.shape[2:])
        nd = len(k)
        field = field.dims(nd)
        s = _tuple(a["stride"], nd)
        dil = _tuple(a["dilation"], nd)
        bias = a["depthwise_bias"] if kind == "separable" else a["bias"]
        if transposed:
            macs = int(x.numel()) * int(w.shape[1]) * math.prod(k)
            new = _Field(tuple(field.rf[d] + _transposed_span(k[d], int(s[d]), int(dil[d])) * field.jump[d]
                               for d in range(nd)),
                         tuple(field.jump[d] / int(s[d]) for d in range(nd)))
        else:
            new = _Field(tuple(field.rf[d] + (int(dil[d]) * (k[d] - 1)) * field.jump[d] for d in range(nd)),
                         tuple(field.jump[d] * int(s[d]) for d in range(nd)))
        name = self._name(w, fname)
        if kind == "separable":
            pw, pb = a["pointwise_weight"], a["pointwise_bias"]
            mid_shape = tuple(y.shape[:-nd - 1]) + (int(w.shape[0]),) + tuple(y.shape[-nd:])
            mid = math.prod(mid_shape)
            self.costs.append(LayerCost(name, "depthwise_conv2d", tuple(x.shape), mid_shape,
                                        _numel(w) + _numel(bias), mid * math.prod(k)))
            pw_name = self._name(pw, "pointwise_conv2d")
            self.costs.append(LayerCost(pw_name, "pointwise_conv2d", mid_shape, tuple(y.shape),
                                        _numel(pw) + _numel(pb), int(y.numel()) * int(pw.shape[1])))
            self._entry(name, "depthwise_conv2d", new, y, nd)
            self._entry(pw_name, "pointwise_conv2d", new, y, nd)
        else:
            if not transposed:
                macs = int(y.numel()) * int(w.shape[1]) * math.prod(k)
            op = _conv_label(kind, fname, a, x, w, nd)
            self.costs.append(LayerCost(name, op, tuple(x.shape), tuple(y.shape), _numel(w) + _numel(bias), macs))
            self._entry(name, op, new, y, nd)
        self._set(y, new)


    def _spatial_separable(self, a, x, y, field):
        """A (kH x 1) depthwise conv (height stride / dilation) then a (1 x kW) one (width's): two entries."""
        vw, hw = a["vertical_weight"], a["horizontal_weight"]
        s, dil = _tuple(a["stride"], 2), _tuple(a["dilation"], 2)
        kh, kw = int(vw.shape[2]), int(hw.shape[3])
        mid_shape = tuple(y.shape[:-3]) + (int(vw.shape[0]), int(y.shape[-2]), int(x.shape[-1]))
        mid = _Field((field.rf[0] + int(dil[0]) * (kh - 1) * field.jump[0], field.rf[1]),
                     (field.jump[0] * int(s[0]), field.jump[1]))
        new = _Field((mid.rf[0], mid.rf[1] + int(dil[1]) * (kw - 1) * mid.jump[1]),
                     (mid.jump[0], mid.jump[1] * int(s[1])))
        v_name, h_name = self._name(vw, "vertical_conv2d"), self._name(hw, "horizontal_conv2d")
        self.costs.append(LayerCost(v_name, "depthwise_conv2d", tuple(x.shape), mid_shape,
                                    _numel(vw) + _numel(a["vertical_bias"]), math.prod(mid_shape) * kh))
        self.costs.append(LayerCost(h_name, "depthwise_conv2d", mid_shape, tuple(y.shape),
                                    _numel(hw) + _numel(a["horizontal_bias"]), int(y.numel()) * kw))
        self.rfs.append(ReceptiveField(v_name, "depthwise_conv2d", tuple(int(math.ceil(r)) for r in mid.rf),
                                       tuple(int(j) if j.denominator == 1 else float(j) for j in mid.jump),
                                       mid_shape[-2:]))
        self._entry(h_name, "depthwise_conv2d", new, y, 2)
        self._set(y, new)


# --------------------------------------------------------------------------- running a model


def _example_input(module: nn.Module, input_size, dtype, device):
    if isinstance(input_size, torch.Tensor):
        return (input_size,)
    first = next((p for p in module.parameters() if p.is_floating_point()), None)
    dtype = dtype or (first.dtype if first is not None else torch.float32)
    device = device or (first.device if first is not None else torch.device("cpu"))
    sizes = input_size
    if isinstance(sizes, torch.Size) or (isinstance(sizes, (tuple, list)) and all(isinstance(v, int) for v in sizes)):
        sizes = [sizes]
    if not isinstance(sizes, (tuple, list)) or not sizes or not all(
            isinstance(s, (tuple, list, torch.Size)) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                             for v in s) for s in sizes):
        raise TypeError(f"convext: input_size must be a tuple of ints (the input's shape, batch included, e.g. "
                        f"(1, 3, 224, 224)), a list of such tuples, or a tensor; got {input_size!r}")
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(tuple(s), generator=g, dtype=dtype).to(device) for s in sizes)


def _trace(module: nn.Module, input_size, dtype=None, device=None) -> _Tracer:
    if not isinstance(module, nn.Module):
        raise TypeError(f"convext: module must be a torch.nn.Module, got {type(module).__name__}")
    _register_convext_ops()
    inputs = _example_input(module, input_size, dtype, device)
    param_owner: Dict[int, str] = {}
    for mod_name, mod in module.named_modules(remove_duplicate=False):
        for p_name, p in mod.named_parameters(recurse=False):
            param_owner.setdefault(id(p), mod_name or p_name)
    stack: List[str] = []
    module_types: Dict[str, str] = {}
    handles = []
    for mod_name, mod in module.named_modules():
        module_types[mod_name] = type(mod).__name__

        def pre(m, args, _name=mod_name):
            stack.append(_name)

        def post(m, args, output, _name=mod_name):
            if stack and stack[-1] == _name:
                stack.pop()

        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post, always_call=True))
    modes = {m: m.training for m in module.modules()}
    tracer = _Tracer(param_owner, stack)
    tracer._module_types = module_types
    try:
        module.eval()
        with torch.no_grad(), tracer:
            for t in inputs:
                tracer.fields[t] = _Field((Fraction(1),), (Fraction(1),))
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return tracer


def conv_cost(module: nn.Module, input_size, *, dtype=None, device=None) -> ConvCost:
    """Parameters and multiply-accumulates of `module` on an input of shape `input_size`.

    `input_size` is the input's shape, batch included ((1, 3, 224, 224) for per-image figures; an
    unbatched (C, H, W) works for modules that accept it), a list of shapes for several inputs, or
    an input tensor. Returns `.params` (all parameters of the module, each once), `.macs` (the
    multiply-accumulates of every conv / linear call of one forward pass) and `.layers`
    (a `LayerCost` per call, in execution order; a separable op gives a depthwise and a pointwise
    entry). The module runs once in eval mode without gradients; its flags are restored.
    """
    tracer = _trace(module, input_size, dtype, device)
    params = sum(p.numel() for p in module.parameters())
    return ConvCost(params=int(params), macs=int(sum(layer.macs for layer in tracer.costs)), layers=tracer.costs)


def receptive_field(module: nn.Module, input_size, *, dtype=None, device=None) -> List[ReceptiveField]:
    """One `ReceptiveField` per convolution or pooling call of `module` (execution order, traced):
    `name`, `op`, `receptive_field` and `jump` (per spatial dimension, (h, w) for 2-D, in input
    pixels; jump = the product of the strides so far) and `output_size` (the output's spatial size).
    Entries read as attributes or as `entry["receptive_field"]`. A stack of 3x3 convs with dilations
    1, 2, 4 gives 3, 7, 15."""
    return _trace(module, input_size, dtype, device).rfs
