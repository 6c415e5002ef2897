"""convext.convert: swap exact torch.nn depthwise convs for convext layers and fuse the separable
chains that the model's traced dataflow proves.

How it works (see API.md, "Converting a model"):

1. Every module whose type is exactly nn.Conv2d / nn.Conv1d / nn.ConvTranspose2d and that is a
   zero-padded depthwise conv is swapped for the convext layer holding the same Parameter objects.
   That swap computes the same function wherever and however the module is called, so it needs no
   proof.
2. The model is traced with torch.fx (convs, norms, activations and convext layers as leaves) in
   each mode the result must be right in: train and eval, or eval alone with fold_batchnorm. A
   module whose own code cannot be traced becomes an opaque leaf (named in a warning): inside it
   nothing is fused or folded.
3. On each graph, a chain depthwise conv -> [BatchNorm] -> [activation] -> 1x1 conv -> [BatchNorm]
   -> [activation] is accepted only when every module in it is called exactly once, is registered
   at one path, has no hooks, and every intermediate value has exactly one user. BatchNorms are
   links only when folded (eval mode, fold_batchnorm=True); in train mode a BatchNorm between the
   pair ends the chain. Without folding a chain must be found, identically, in both graphs.
4. The rewrite keeps the model's class and its parameters' paths: the depthwise conv's place gets a
   FusedDepthwiseConv2d (the depthwise parameters, computing the whole chain), the 1x1 conv's place
   a FusedPointwiseConv2d (the pointwise parameters, passing the chain's result through), and the
   absorbed BatchNorms and activations become nn.Identity. Along the chain every intermediate value
   had one user, so the chain's result reaches exactly the users of its last value.

The converted model carries `convext_report` (a ConvertReport): what was swapped, fused, folded,
and left alone, with the reason.
"""
from __future__ import annotations

import copy
import dataclasses
import operator
import warnings
from collections import Counter
from typing import Dict, List, Optional, Tuple

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from . import _backend
from .functional import depthwise_separable_conv2d
from .nn import DepthwiseConv1d, DepthwiseConv2d, DepthwiseConvTranspose2d

__all__ = ["convert", "ConvertReport", "FusedChain", "FusedDepthwiseConv2d", "FusedPointwiseConv2d"]

_ACTIVATION_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.Hardswish: "hardswish"}
_ACTIVATION_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.silu, F.gelu, F.hardswish, torch.relu_, F.relu_}


# --------------------------------------------------------------------------- fused modules


class FusedDepthwiseConv2d(DepthwiseConv2d):
    """A fused separable chain, at the place of its depthwise conv in a converted model.

    Holds the depthwise conv's parameters (so the state_dict keys do not move) and runs
    depthwise conv -> activation -> 1x1 conv -> activation as one op. The 1x1 conv's parameters stay
    at their own path, in the FusedPointwiseConv2d this module reads them from; that module passes
    this one's result through. The output has the 1x1 conv's channels, not `out_channels`.
    """

    def __init__(self, depthwise: nn.Conv2d, pointwise: "FusedPointwiseConv2d", depthwise_activation=None,
                 pointwise_activation=None, backend="auto"):
        super().__init__(depthwise.in_channels, depthwise.kernel_size, depthwise.stride, depthwise.padding,
                         depthwise.dilation, depthwise.bias is not None,
                         depthwise.out_channels // depthwise.in_channels, device="meta", backend=backend)
        self.weight = depthwise.weight
        self.bias = depthwise.bias
        self.depthwise_activation = depthwise_activation
        self.pointwise_activation = pointwise_activation
        # Not a submodule: its parameters are registered at the 1x1 conv's own path.
        self.__dict__["pointwise"] = pointwise

    def forward(self, input):
        pw = self.pointwise
        return depthwise_separable_conv2d(
            input, self.weight, pw.weight, self.bias, pw.bias, self.stride, self.padding, self.dilation,
            backend=self.backend, depthwise_activation=self.depthwise_activation,
            pointwise_activation=self.pointwise_activation)

    def extra_repr(self):
        return (super().extra_repr() + f", pointwise_out_channels={self.pointwise.out_channels}, "
                f"depthwise_activation={self.depthwise_activation!r}, "
                f"pointwise_activation={self.pointwise_activation!r}")


class FusedPointwiseConv2d(nn.Conv2d):
    """The 1x1 conv of a fused chain: keeps its parameters at their path; its work is done upstream
    by the FusedDepthwiseConv2d, so its forward passes that module's result through."""

    def __init__(self, pointwise: nn.Conv2d):
        super().__init__(pointwise.in_channels, pointwise.out_channels, 1, bias=pointwise.bias is not None,
                         device="meta")
        self.weight = pointwise.weight
        self.bias = pointwise.bias
        self.train(pointwise.training)

    def forward(self, input):
        return input

    def extra_repr(self):
        return super().extra_repr() + ", computed by the FusedDepthwiseConv2d before it"


# --------------------------------------------------------------------------- report


@dataclasses.dataclass
class FusedChain:
    depthwise: str
    pointwise: str
    depthwise_activation: Optional[str]
    pointwise_activation: Optional[str]
    folded: List[str]  # BatchNorm paths folded into the chain's convs
    absorbed: List[str]  # every module path that became nn.Identity


@dataclasses.dataclass
class ConvertReport:
    """What convext.convert did to a model (attached as `model.convext_report`)."""

    swapped: List[str] = dataclasses.field(default_factory=list)
    fused: List[FusedChain] = dataclasses.field(default_factory=list)
    folded: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (batchnorm, conv)
    left_alone: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, why)
    untraced: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, error)
    unfused_train: int = 0  # chains a BatchNorm between depthwise and 1x1 conv keeps unfused in train mode

    def counts(self) -> Dict[str, int]:
        return {"swapped": len(self.swapped), "fused": len(self.fused), "folded": len(self.folded),
                "left_alone": len(self.left_alone), "untraced": len(self.untraced),
                "unfused_train": self.unfused_train}

    def __str__(self):
        lines = ["convext.convert: " + ", ".join(f"{k} {v}" for k, v in self.counts().items())]
        lines += [f"  swapped   {p}" for p in self.swapped]
        lines += [f"  fused     {c.depthwise} -> {c.pointwise} (activations {c.depthwise_activation}, "
                  f"{c.pointwise_activation}; folded {c.folded or 'none'})" for c in self.fused]
        lines += [f"  folded    {bn} into {conv}" for bn, conv in self.folded]
        lines += [f"  left      {p}: {why}" for p, why in self.left_alone]
        lines += [f"  untraced  {p}: {err}" for p, err in self.untraced]
        return "\n".join(lines)


# --------------------------------------------------------------------------- module predicates


def _is_depthwise(m, cls) -> bool:
    return (type(m) is cls and m.groups == m.in_channels and m.out_channels % m.in_channels == 0
            and m.padding_mode == "zeros")


def _is_pointwise(m, in_channels: int) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.groups == 1
            and m.padding in ((0, 0), "valid") and m.padding_mode == "zeros" and m.in_channels == in_channels)


def _activation_of_module(m) -> Optional[str]:
    if type(m) in _ACTIVATION_MODULES:
        return _ACTIVATION_MODULES[type(m)]
    if type(m) is nn.GELU and m.approximate == "none":
        return "gelu"
    return None


def _looks_depthwise(m) -> bool:
    return (isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)) and m.groups == m.in_channels
            and m.in_channels > 0 and m.out_channels % m.in_channels == 0)


def _has_hooks(m) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


# --------------------------------------------------------------------------- batch norms


@dataclasses.dataclass
class _Norm:
    """A BatchNorm the trace shows to be exactly an eval batch norm (+ an optional activation module)."""

    eps: float
    weight: Optional[torch.Tensor]
    bias: Optional[torch.Tensor]
    mean: torch.Tensor
    var: torch.Tensor
    activation: Optional[str]  # absorbed activation of a norm+act module, e.g. timm's BatchNormAct2d
    activation_module: Optional[nn.Module]
    unsupported_activation: bool  # it has an activation the fused op cannot run


_SIDE_FUNCTIONS = {getattr, operator.eq, operator.ne, torch._assert, len, isinstance}


def _norm_spec(m, fold: bool) -> Optional[_Norm]:
    """How BatchNorm `m` can be folded, or None. Exact nn.BatchNorm2d by its type; subclasses (timm's
    BatchNormAct2d) by tracing their forward: batch_norm of the input with the module's own running
    stats and affine parameters in eval mode, then only Identity modules and at most one activation."""
    if not fold or m.training or not m.track_running_stats or m.running_mean is None or m.running_var is None:
        return None
    if type(m) is nn.BatchNorm2d:
        return _Norm(m.eps, m.weight, m.bias, m.running_mean, m.running_var, None, None, False)
    if not isinstance(m, nn.BatchNorm2d):
        return None
    try:
        graph = torch.fx.Tracer().trace(m)
    except Exception:
        return None
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    bns = [n for n in nodes if n.op == "call_function" and n.target is F.batch_norm]
    if len(placeholders) != 1 or len(bns) != 1:
        return None
    bn = bns[0]
    sig = dict(zip(("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
                   bn.args))
    sig.update(bn.kwargs)
    own = dict(m.named_parameters(recurse=False)) | dict(m.named_buffers(recurse=False))

    def attr(key):
        v = sig.get(key)
        if v is None:
            return None
        return own.get(v.target) if isinstance(v, torch.fx.Node) and v.op == "get_attr" else False

    mean, var, weight, bias = attr("running_mean"), attr("running_var"), attr("weight"), attr("bias")
    if (sig.get("input") is not placeholders[0] or sig.get("training", False) is not False or mean is None
            or mean is False or var is None or var is False or weight is False or bias is False
            or mean is not m.running_mean or var is not m.running_var):
        return None
    eps = sig.get("eps", 1e-5)
    if not isinstance(eps, float):
        return None
    # after the batch norm: a straight line of Identity modules and at most one activation module
    act = act_module = None
    unsupported = False
    node = bn
    line = {placeholders[0], bn}
    while True:
        if len(node.users) != 1:
            return None
        (node,) = node.users
        line.add(node)
        if node.op == "output":
            break
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            return None
        sub = m.get_submodule(node.target)
        if type(sub) is nn.Identity:
            continue
        if act_module is not None:
            return None
        act_module = sub
        act = _activation_of_module(sub)
        unsupported = act is None
    # everything else must be side-effect free checks on the input (timm asserts its rank)
    for n in nodes:
        if n not in line and n.op != "get_attr" and not (n.op == "call_function" and n.target in _SIDE_FUNCTIONS):
            return None
    return _Norm(eps, weight, bias, mean, var, act, act_module, unsupported)


def _fold(conv: nn.Conv2d, norm: _Norm) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of `conv` followed by the eval batch norm `norm`, computed in float64."""
    with torch.no_grad():
        inv_std = torch.rsqrt(norm.var.double() + norm.eps)
        scale = inv_std if norm.weight is None else norm.weight.double() * inv_std
        shift = torch.zeros_like(scale) if norm.bias is None else norm.bias.double()
        weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        bias = torch.zeros_like(scale) if conv.bias is None else conv.bias.double()
        bias = (bias - norm.mean.double()) * scale + shift
    dtype = conv.weight.dtype
    return (nn.Parameter(weight.to(dtype), requires_grad=conv.weight.requires_grad),
            nn.Parameter(bias.to(dtype), requires_grad=conv.weight.requires_grad))


# --------------------------------------------------------------------------- tracing


class _Tracer(torch.fx.Tracer):
    """Convs, norms, activations and convext layers are leaves; so are the opaque modules (those
    whose own code failed to trace). Records the innermost module being traced when tracing fails."""

    def __init__(self, opaque):
        super().__init__()
        self.opaque = opaque
        self.stack: List[str] = []
        self.failed_in: Optional[List[str]] = None

    def is_leaf_module(self, m, qualname):
        if qualname in self.opaque or isinstance(m, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)):
            return True
        if type(m).__module__.startswith("convext."):
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        name = self.path_of_module(m)
        self.stack.append(name)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = list(self.stack)
            raise
        finally:
            self.stack.pop()


def _trace(model: nn.Module, opaque: set) -> Tuple[Optional[torch.fx.Graph], Dict[str, str]]:
    """The model's graph, with the modules that cannot be traced made opaque leaves.

    Returns (graph or None if the model's own forward cannot be traced, {opaque path: error})."""
    errors: Dict[str, str] = {}
    for _ in range(len(list(model.modules())) + 1):
        tracer = _Tracer(opaque)
        try:
            return tracer.trace(model), errors
        except Exception as e:  # noqa: BLE001  (any failure of user code under tracing)
            message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
            culprit = tracer.failed_in[-1] if tracer.failed_in else None
            if culprit is None or culprit in opaque:
                errors[""] = message
                return None, errors
            opaque.add(culprit)
            errors[culprit] = message
    return None, errors


# --------------------------------------------------------------------------- chains


@dataclasses.dataclass
class _Chain:
    dw: str
    pw: str
    dw_norm: Optional[str] = None
    pw_norm: Optional[str] = None
    dw_act: Optional[str] = None
    pw_act: Optional[str] = None
    absorbed: Tuple[str, ...] = ()  # module paths that become nn.Identity (norms and activation modules)

    def key(self):
        return (self.dw, self.pw, self.dw_norm, self.pw_norm, self.dw_act, self.pw_act, self.absorbed)


class _Graph:
    """One traced graph of the model with the facts the chain rules need."""

    def __init__(self, model, graph, fold, paths_of):
        self.model, self.graph, self.fold = model, graph, fold
        self.modules = dict(model.named_modules())
        self.calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
        self.paths_of = paths_of  # id(module) -> every path it is registered at
        self.norms: Dict[str, Optional[_Norm]] = {}

    def module(self, node):
        if node.op != "call_module":
            return None
        return self.modules.get(node.target)

    def single_call(self, node) -> bool:
        """A call_module node whose module is called here only, lives at one path, has no hooks and
        takes the one value of the chain."""
        m = self.module(node)
        return (m is not None and self.calls[node.target] == 1 and len(self.paths_of[id(m)]) == 1
                and not _has_hooks(m) and len(node.args) == 1 and not node.kwargs)

    def norm(self, node, channels) -> Optional[_Norm]:
        m = self.module(node)
        if not isinstance(m, nn.BatchNorm2d) or m.num_features != channels or not self.single_call(node):
            return None
        if node.target not in self.norms:
            self.norms[node.target] = _norm_spec(m, self.fold)
        return self.norms[node.target]

    def chain(self, node) -> Tuple[Optional[_Chain], str]:
        """The fusible chain starting at depthwise-conv node `node`, or (None, why not)."""
        if not self.single_call(node):
            return None, "called more than once, registered at several paths, or hooked"
        dw = self.module(node)
        channels = dw.out_channels
        chain = _Chain(dw=node.target, pw="")
        absorbed = []
        cur = node

        def next_node(n):
            return next(iter(n.users)) if len(n.users) == 1 else None

        # depthwise conv -> [norm] -> [activation], with Identity modules anywhere in between
        nxt = next_node(cur)
        saw_norm = False
        while nxt is not None:
            m = self.module(nxt)
            if type(m) is nn.Identity and not _has_hooks(m):  # passes any value through, so may be shared
                cur, nxt = nxt, next_node(nxt)
                continue
            if isinstance(m, nn.BatchNorm2d) and not saw_norm and chain.dw_act is None:
                norm = self.norm(nxt, channels)
                if norm is None:
                    why = ("a BatchNorm between the depthwise and the 1x1 conv (fused only in eval mode with "
                           "fold_batchnorm=True)")
                    return None, why if self._pointwise_follows(nxt, channels) else "no 1x1 conv follows"
                if norm.unsupported_activation:
                    return None, f"the activation inside {nxt.target} is not one the fused op runs"
                saw_norm = True
                chain.dw_norm = nxt.target
                absorbed.append(nxt.target)
                if norm.activation:
                    chain.dw_act = norm.activation
                cur, nxt = nxt, next_node(nxt)
                continue
            act = _activation_of_module(m) if m is not None else None
            if act is not None and chain.dw_act is None and self.single_call(nxt):
                chain.dw_act = act
                absorbed.append(nxt.target)
                cur, nxt = nxt, next_node(nxt)
                continue
            break
        if nxt is None:
            return None, "its output has several users" if len(cur.users) > 1 else "no 1x1 conv follows"
        pw = self.module(nxt)
        if not _is_pointwise(pw, channels):
            if nxt.op in ("call_function", "call_method") and (nxt.target in _ACTIVATION_FUNCTIONS or
                                                               nxt.target in ("relu", "relu_")):
                if self._pointwise_follows(nxt, channels):
                    return None, ("the activation before the 1x1 conv is a function call in a forward; fusing "
                                  "it would mean rewriting that forward")
            return None, "no 1x1 conv follows"
        if not self.single_call(nxt):
            return None, "the 1x1 conv is called more than once, registered at several paths, or hooked"
        if pw.weight.dtype != dw.weight.dtype or pw.weight.device != dw.weight.device:
            return None, "the 1x1 conv has another dtype or device"
        chain.pw = nxt.target
        cur = nxt
        # 1x1 conv -> [norm] -> [activation module]: absorbed only while each value has one user
        nxt = next_node(cur)
        if nxt is not None:
            m = self.module(nxt)
            norm = self.norm(nxt, pw.out_channels) if isinstance(m, nn.BatchNorm2d) else None
            if norm is not None and not norm.unsupported_activation:
                chain.pw_norm = nxt.target
                absorbed.append(nxt.target)
                chain.pw_act = norm.activation
                cur, nxt = nxt, next_node(nxt)
            if chain.pw_act is None and nxt is not None and self.single_call(nxt):
                act = _activation_of_module(self.module(nxt))
                if act is not None:
                    chain.pw_act = act
                    absorbed.append(nxt.target)
        chain.absorbed = tuple(absorbed)
        return chain, ""

    def _pointwise_follows(self, node, channels) -> bool:
        """Whether a 1x1 conv is within a few single-user steps of `node` (to say why a chain stops)."""
        for _ in range(4):
            if len(node.users) != 1:
                return False
            (node,) = node.users
            if _is_pointwise(self.module(node), channels):
                return True
        return False

    def conv_norm_pairs(self):
        """(conv node, norm node) for exact nn.Conv2d followed only by a foldable BatchNorm."""
        for node in self.graph.nodes:
            conv = self.module(node)
            if type(conv) is nn.Conv2d and self.single_call(node) and len(node.users) == 1:
                (user,) = node.users
                norm = self.norm(user, conv.out_channels) if isinstance(self.module(user), nn.BatchNorm2d) else None
                if norm is not None:
                    yield node, user, norm


# --------------------------------------------------------------------------- convert


def _to_layer(conv, backend):
    """The convext layer for an exact nn depthwise conv, sharing its Parameter objects and hooks."""
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
    for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                 "_state_dict_hooks", "_load_state_dict_pre_hooks"):
        if hasattr(conv, name):
            setattr(new, name, copy.copy(getattr(conv, name)))
    new.train(conv.training)
    return new


def _set(model, path, module):
    if path:
        model.set_submodule(path, module)


def _mode_flags(model):
    return {name: m.training for name, m in model.named_modules()}


def _restore_flags(model, flags):
    for name, m in model.named_modules():
        m.training = flags[name]


def _graphs(model, fold, report) -> Tuple[List[_Graph], set]:
    """The traced graphs the chains must be found in (train and eval, or eval alone when folding)."""
    paths_of: Dict[int, List[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        paths_of.setdefault(id(m), []).append(name)
    flags = _mode_flags(model)
    opaque: set = set()
    graphs = []
    try:
        for training in ((False,) if fold else (True, False)):
            model.train(training)
            graph, errors = _trace(model, opaque)
            for path, err in errors.items():
                if path not in dict(report.untraced):
                    report.untraced.append((path, err))
            if graph is None:
                return [], opaque
            graphs.append(_Graph(model, graph, fold, paths_of))
    finally:
        _restore_flags(model, flags)
    return graphs, opaque


def _warn_untraced(model, report):
    for path, err in report.untraced:
        where = f"{type(model).__name__}" if path == "" else f"'{path}' ({type(model.get_submodule(path)).__name__})"
        inside = "the model" if path == "" else "that module"
        warnings.warn(f"convext.convert: could not trace {where}: {err}. Inside {inside} depthwise convs are swapped "
                      f"one by one, without fusion or BatchNorm folding.", UserWarning, stacklevel=3)


def _convert(model: nn.Module, backend, fuse, fold) -> Tuple[nn.Module, ConvertReport]:
    report = ConvertReport()
    chains: List[_Chain] = []
    folds: List[Tuple[str, str, _Norm]] = []
    if fuse or fold:
        graphs, _ = _graphs(model, fold, report)
        _warn_untraced(model, report)
        if graphs:
            chains, folds = _plan(graphs, fuse, fold, report)
    root_replacement = None
    taken = set()
    for chain in chains:
        dw, pw = model.get_submodule(chain.dw), model.get_submodule(chain.pw)
        folded = []
        holder = FusedPointwiseConv2d(pw)
        fused = FusedDepthwiseConv2d(dw, holder, chain.dw_act, chain.pw_act, backend)
        fused.train(dw.training)
        if chain.dw_norm:
            fused.weight, fused.bias = _fold(dw, graphs[0].norms[chain.dw_norm])
            folded.append(chain.dw_norm)
        if chain.pw_norm:
            holder.weight, holder.bias = _fold(pw, graphs[0].norms[chain.pw_norm])
            folded.append(chain.pw_norm)
        _set(model, chain.dw, fused)
        _set(model, chain.pw, holder)
        for path in chain.absorbed:
            _set(model, path, nn.Identity())
        taken.update((chain.dw, chain.pw) + chain.absorbed)
        report.fused.append(FusedChain(chain.dw, chain.pw, chain.dw_act, chain.pw_act, folded,
                                       list(chain.absorbed)))
        report.folded += [(bn, chain.dw if bn == chain.dw_norm else chain.pw) for bn in folded]
    for conv_path, bn_path, norm in folds:
        if conv_path in taken or bn_path in taken:
            continue
        conv = model.get_submodule(conv_path)
        conv.weight, conv.bias = _fold(conv, norm)
        _set(model, bn_path, norm.activation_module if norm.activation_module is not None else nn.Identity())
        report.folded.append((bn_path, conv_path))
    # every remaining exact depthwise conv: swapped where it is (safe however it is called)
    for name, m in list(model.named_modules()):
        if any(_is_depthwise(m, cls) for cls in (nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d)):
            new = _to_layer(m, backend)
            if name:
                _set(model, name, new)
            else:
                root_replacement = new
            report.swapped.append(name)
        elif _looks_depthwise(m) and not isinstance(m, (DepthwiseConv2d, DepthwiseConv1d, DepthwiseConvTranspose2d,
                                                        FusedPointwiseConv2d)):
            why = (f"padding_mode={m.padding_mode!r}" if type(m) in (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)
                   else f"a subclass ({type(m).__name__}), not exactly an nn conv")
            report.left_alone.append((name, why))
    return (root_replacement if root_replacement is not None else model), report


def _plan(graphs: List[_Graph], fuse, fold, report):
    """Chains found identically in every graph, and the conv -> BatchNorm folds outside them."""
    chains: Dict[tuple, _Chain] = {}
    first = graphs[0]
    if fuse:
        found = []
        for g in graphs:
            here, why_not = {}, {}
            for node in g.graph.nodes:
                if _is_depthwise(g.module(node), nn.Conv2d):
                    chain, why = g.chain(node)
                    if chain is not None:
                        here[chain.key()] = chain
                    else:
                        why_not[node.target] = why
            found.append((here, why_not, g))
        common = set(found[0][0])
        for here, _, _ in found[1:]:
            common &= set(here)
        chains = {k: found[0][0][k] for k in common}
        fused_dw = {c.dw for c in chains.values()}
        reasons: Dict[str, str] = {}
        for here, why_not, g in found:
            training = len(found) == 2 and g is found[0][2]
            for path, why in why_not.items():
                if path in fused_dw or path in reasons:
                    continue
                reasons[path] = why
                if training and why.startswith("a BatchNorm between"):
                    report.unfused_train += 1
            for key, chain in here.items():
                if key not in common and chain.dw not in reasons:
                    reasons[chain.dw] = "the chain differs between train and eval mode"
        report.left_alone += [(p, "not fused: " + why) for p, why in reasons.items() if why != "no 1x1 conv follows"]
    folds = []
    if fold:
        for conv_node, bn_node, norm in first.conv_norm_pairs():
            folds.append((conv_node.target, bn_node.target, norm))
    return list(chains.values()), folds


def convert(module: nn.Module, *, backend="auto", fuse_separable=True, fold_batchnorm=False,
            inplace=False) -> nn.Module:
    """Returns `module` with its exact nn depthwise convs replaced by convext layers and, with
    `fuse_separable`, its depthwise -> [BN] -> [act] -> 1x1 chains fused (see API.md and this module's
    docstring). The result carries `convext_report`."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"convext: module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(backend, str) or backend not in _backend.CHOICES:
        raise ValueError(f"convext: backend must be one of {_backend.CHOICES}, got {backend!r}")
    if fold_batchnorm and any(m.training for m in module.modules()):
        raise ValueError("convext: fold_batchnorm=True needs a model in eval mode (call module.eval() first)")
    if not inplace:
        module = copy.deepcopy(module)
    out, report = _convert(module, backend, bool(fuse_separable), bool(fold_batchnorm))
    out.convext_report = report
    return out
