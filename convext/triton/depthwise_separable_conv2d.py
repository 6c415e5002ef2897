"""Fused depthwise-separable conv2d as Triton ops.

    z = depthwise_conv(x) + dw_b ; a = act1(z) ; y = act2(pw_w.view(Cout, C*M) @ a + pw_b)

Ops (same signatures as the C++ ops in csrc/ops.cpp, prefixed ``triton_``):
  convext::triton_depthwise_separable_conv2d
  convext::triton_depthwise_separable_conv2d_backward

Forward: one kernel. A program owns (n, BLOCK_P output pixels, BLOCK_CO output channels) and loops
over the C*M intermediate channels in blocks of BLOCK_K: the depthwise tile [BLOCK_P, BLOCK_K] is
computed on chip (fp32 / fp64 accumulation), biased, activated, rounded to the input dtype and fed
to ``tl.dot`` with the pointwise weight tile [BLOCK_K, BLOCK_CO]. The intermediate never exists.

Backward (the intermediate is recomputed, never stored):
  1. g = grad_y * act2'(pre)       -- the forward kernel in "grad mode" (skipped when act2 == none)
  2. grad_z = (g @ pw_w) * act1'(z) -- per (pixel tile, K block); z recomputed on chip
  3. grad_pw_w = sum_pixels g^T a, grad_pw_b = sum g
                                    -- split over pixel ranges, fp32 partials per split in a
                                       workspace, reduced in fixed order (deterministic)
  4. grad_input / grad_dw_w / grad_dw_b from the depthwise Triton backward applied to grad_z.
float64 takes an elementwise-product reduction path instead of tl.dot.

The kernels are in depthwise_separable_conv2d_kernels.py; this file holds their autotune configs,
the launches and the ops.
"""

from typing import List, Optional, Tuple

import torch
import triton
from torch.library import triton_op

from . import _common
from . import depthwise_conv2d  # noqa: F401  (registers the depthwise ops the backward calls)
from ._common import (_INTERPRET, _NO_AUTOTUNE, _acc_weights, _alloc_like, _any_fake,
                      _is_channels_last, _needs_int64, _next_pow2, _opaque_when_interpreted,
                      _out_size)
from .depthwise_separable_conv2d_kernels import _sep_bwd_gz_kernel, _sep_bwd_pw_kernel, _sep_fwd_kernel

__all__ = ["_triton_depthwise_separable_conv2d", "_triton_depthwise_separable_conv2d_backward"]

_ACTS = {"none": 0, "relu": 1, "relu6": 2, "silu": 3, "gelu": 4, "hardswish": 5}

# dot modes (constexpr)
_DOT_LOWP = 0  # fp16 / bf16 operands, fp32 accumulate
_DOT_TF32 = 1  # fp32 operands, tf32 tensor cores
_DOT_IEEE = 2  # fp32 operands, full precision
_DOT_F64 = 3  # fp64: elementwise product + tl.sum (tl.dot has no fp64)
_DOT_UPCAST = 4  # operands upcast to fp32, ieee: bf16 under TRITON_INTERPRET=1, whose bf16
#                  tl.dot returns garbage (triton 3.8 interpreter); exact, since bf16*bf16 fits fp32


# ----------------------------------------------------------------------------------------------
# autotuning
# ----------------------------------------------------------------------------------------------
def _cfg(bp, bco, bk, w, s):
    return triton.Config({"BLOCK_P": bp, "BLOCK_CO": bco, "BLOCK_K": bk}, num_warps=w, num_stages=s)


if _INTERPRET:
    _CONFIGS = [_cfg(16, 16, 16, 4, 1)]
else:
    # (BLOCK_P, BLOCK_CO, BLOCK_K, warps, stages). Suite: Cin=Cout in {256, 512, 728} -> wide CO
    # tiles; 144 -> 24 -> a 32-wide CO tile; 2048 -> 256 -> deep K loop.
    _CONFIGS = [
        _cfg(128, 128, 64, 8, 3),
        _cfg(128, 256, 32, 8, 3),
        _cfg(128, 256, 64, 8, 2),
        _cfg(64, 256, 64, 8, 3),
        _cfg(128, 128, 32, 4, 3),
        _cfg(128, 64, 64, 4, 3),
        _cfg(64, 128, 64, 4, 3),
        _cfg(64, 128, 32, 4, 2),
        _cfg(64, 64, 32, 4, 2),
        _cfg(128, 32, 64, 4, 3),
        _cfg(64, 32, 32, 4, 2),
    ]

# fp64: no tensor cores, the [BLOCK_P, BLOCK_K, BLOCK_CO] product lives in registers.
_F64_META = dict(BLOCK_P=32, BLOCK_CO=16, BLOCK_K=8, num_warps=4, num_stages=1)


def _prune(configs, named_args, **kwargs):
    try:
        args = dict(named_args)
        args.update(kwargs)
        cout, cm = int(args["COUT"]), int(args["CM"])
    except Exception:  # never let pruning break a launch
        return configs
    max_co, max_k = max(32, _next_pow2(cout)), max(32, _next_pow2(cm))
    kept = [c for c in configs if c.kwargs["BLOCK_CO"] <= max_co and c.kwargs["BLOCK_K"] <= max_k]
    kept = kept or [min(configs, key=lambda c: c.kwargs["BLOCK_CO"] * c.kwargs["BLOCK_K"])]
    return kept[:1] if _NO_AUTOTUNE else kept


_KEY = ["CM", "COUT", "HWO", "M", "KH", "KW", "SH", "SW", "DH", "DW", "ACT1", "ACT2", "DOT_MODE"]


def _autotune(key):
    if _INTERPRET:
        return triton.autotune(configs=_CONFIGS, key=key)
    return triton.autotune(configs=_CONFIGS, key=key, prune_configs_by={"early_config_prune": _prune})


_sep_fwd_tuned = _autotune(_KEY)(_sep_fwd_kernel)
_sep_bwd_gz_tuned = _autotune(_KEY)(_sep_bwd_gz_kernel)
_sep_bwd_pw_tuned = _autotune(_KEY + ["COMPUTE_W", "COMPUTE_B"])(_sep_bwd_pw_kernel)


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------
def _launch(tuned, raw, grid, is_f64, tensors, args, kwargs):
    """Launch `tuned` (autotuned) or, for fp64, `raw` with the fixed fp64 blocks.

    Under TRITON_INTERPRET=1 the kernels launch unwrapped (`_launcher`) and cannot run on
    fake/meta tensors; skipping them there lets triton_op's default fake impl trace the body.
    """
    if _INTERPRET and _any_fake(*tensors):
        return
    kwargs = dict(kwargs, INT64=_needs_int64(*tensors))  # offsets inside one image past 2**31
    if is_f64:
        _common._launcher(raw)[grid](*args, **kwargs, **_F64_META)
    else:
        _common._launcher(tuned)[grid](*args, **kwargs)


def _dot_mode(dtype):
    if dtype == torch.float64:
        return _DOT_F64
    if dtype == torch.float32:
        return _DOT_TF32 if torch.backends.cudnn.allow_tf32 else _DOT_IEEE
    if dtype == torch.bfloat16 and _INTERPRET:
        return _DOT_UPCAST
    return _DOT_LOWP


def _act_code(name):
    try:
        return _ACTS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTS)}") from None


def _geometry(input, depthwise_weight, pointwise_weight, stride, padding, dilation):
    N, C, H, W = input.shape
    CM, _, KH, KW = depthwise_weight.shape
    COUT = pointwise_weight.shape[0]
    SH, SW = int(stride[0]), int(stride[1])
    DH, DW = int(dilation[0]), int(dilation[1])
    PT, PB, PL, PR = (int(p) for p in padding)
    HO = _out_size(H, PT, PB, DH, KH, SH)
    WO = _out_size(W, PL, PR, DW, KW, SW)
    return dict(N=N, C=C, H=H, W=W, CM=CM, M=CM // C if C else 1, KH=KH, KW=KW, COUT=COUT,
                SH=SH, SW=SW, DH=DH, DW=DW, PT=PT, PL=PL, HO=max(HO, 0), WO=max(WO, 0))


def _dense_biases(*biases):
    """The kernels index biases by channel alone (weights go by their strides): a strided bias view
    is copied once (a few hundred elements; no copy when already contiguous)."""
    return tuple(b if b is None else b.contiguous() for b in biases)


def _tap_weights(depthwise_weight, gm):
    """The depthwise weights taps-major, (KH*KW, CM) contiguous, in the accumulation dtype (exact
    for bf16 / fp16), with the kernels' (k, kh, kw) strides: one contiguous load per tap."""
    CM, KW = gm["CM"], gm["KW"]
    wt = _acc_weights(depthwise_weight, CM, gm["KH"] * KW, True)
    return wt, (1, KW * CM, CM)


def _common_args(gm):
    return dict(
        M=gm["M"], KH=gm["KH"], KW=gm["KW"], SH=gm["SH"], SW=gm["SW"], DH=gm["DH"], DW=gm["DW"],
    )


def _pointwise_pre(input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias,
                   gm, out, grad_output, act1, act2, grad_mode):
    """Launch the fused forward kernel writing `out` (y, or g = grad_y * act2'(pre))."""
    dot_mode = _dot_mode(input.dtype)
    HWO = gm["HO"] * gm["WO"]
    x, pww = input, pointwise_weight
    dww, dw_strides = _tap_weights(depthwise_weight, gm)
    dwb = depthwise_bias if depthwise_bias is not None else dww
    pwb = pointwise_bias if pointwise_bias is not None else pww
    gy = grad_output if grad_mode else out
    N, COUT = gm["N"], gm["COUT"]

    def grid(meta):
        return (N * triton.cdiv(HWO, meta["BLOCK_P"]) * triton.cdiv(COUT, meta["BLOCK_CO"]),)

    args = (
        x, dww, dwb, pww, pwb, out, gy,
        gm["CM"], COUT, gm["H"], gm["W"], gm["WO"], HWO, gm["PT"], gm["PL"],
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        *dw_strides,
        pww.stride(0), pww.stride(1),
        out.stride(0), out.stride(1), out.stride(2), out.stride(3),
        gy.stride(0), gy.stride(1), gy.stride(2), gy.stride(3),
    )
    kwargs = dict(_common_args(gm), HAS_DWB=depthwise_bias is not None,
                  HAS_PWB=pointwise_bias is not None, ACT1=act1, ACT2=act2,
                  GRAD_MODE=grad_mode, DOT_MODE=dot_mode)
    _launch(_sep_fwd_tuned, _sep_fwd_kernel, grid, dot_mode == _DOT_F64,
            (x, dww, pww, out, gy), args, kwargs)


@triton_op(
    "convext::triton_depthwise_separable_conv2d",
    mutates_args=(),
    schema="(Tensor input, Tensor depthwise_weight, Tensor pointwise_weight, "
    "Tensor? depthwise_bias, Tensor? pointwise_bias, int[2] stride, int[4] padding, "
    "int[2] dilation, str depthwise_activation, str pointwise_activation) -> Tensor",
)
def _triton_depthwise_separable_conv2d(input: torch.Tensor, depthwise_weight: torch.Tensor,
                                       pointwise_weight: torch.Tensor, depthwise_bias: Optional[torch.Tensor],
                                       pointwise_bias: Optional[torch.Tensor], stride: List[int],
                                       padding: List[int], dilation: List[int], depthwise_activation: str,
                                       pointwise_activation: str) -> torch.Tensor:
    # (annotations too: torch 2.11's triton_op infers the schema from them)
    depthwise_bias, pointwise_bias = _dense_biases(depthwise_bias, pointwise_bias)
    act1, act2 = _act_code(depthwise_activation), _act_code(pointwise_activation)
    gm = _geometry(input, depthwise_weight, pointwise_weight, stride, padding, dilation)
    y = _alloc_like((gm["N"], gm["COUT"], gm["HO"], gm["WO"]), input)
    if y.numel() == 0:
        return y
    _pointwise_pre(input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias,
                   gm, y, None, act1, act2, grad_mode=False)
    return y


def _n_splits(input, gm, n_tiles):
    """Pixel-range splits for the pointwise-weight reduction (fixed per shape: deterministic)."""
    if input.device.type == "cuda":
        sms = torch.cuda.get_device_properties(input.device).multi_processor_count
    else:
        sms = 4
    blocks = triton.cdiv(gm["COUT"], 128) * triton.cdiv(gm["CM"], 64)
    s = triton.cdiv(4 * sms, blocks)
    cap = max(1, (64 << 20) // max(1, gm["COUT"] * gm["CM"]))  # workspace <= 64M elements
    return max(1, min(s, n_tiles, cap))


@triton_op(
    "convext::triton_depthwise_separable_conv2d_backward",
    mutates_args=(),
    schema="(Tensor grad_output, Tensor input, Tensor depthwise_weight, Tensor pointwise_weight, "
    "Tensor? depthwise_bias, Tensor? pointwise_bias, int[2] stride, int[4] padding, "
    "int[2] dilation, str depthwise_activation, str pointwise_activation, bool[5] output_mask) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
def _triton_depthwise_separable_conv2d_backward(
        grad_output: torch.Tensor, input: torch.Tensor, depthwise_weight: torch.Tensor,
        pointwise_weight: torch.Tensor, depthwise_bias: Optional[torch.Tensor],
        pointwise_bias: Optional[torch.Tensor], stride: List[int], padding: List[int], dilation: List[int],
        depthwise_activation: str, pointwise_activation: str, output_mask: List[bool]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    depthwise_bias, pointwise_bias = _dense_biases(depthwise_bias, pointwise_bias)
    act1, act2 = _act_code(depthwise_activation), _act_code(pointwise_activation)
    gm = _geometry(input, depthwise_weight, pointwise_weight, stride, padding, dilation)
    m_in, m_dww, m_pww, m_dwb, m_pwb = (bool(m) for m in output_mask)
    m_dwb = m_dwb and depthwise_bias is not None
    m_pwb = m_pwb and pointwise_bias is not None
    dev = input.device

    def none_():
        return torch.empty(0, dtype=input.dtype, device=dev)

    N, CM, COUT = gm["N"], gm["CM"], gm["COUT"]
    HWO = gm["HO"] * gm["WO"]
    need_gz = m_in or m_dww or m_dwb

    if N * HWO == 0 or CM == 0:  # nothing flows: all gradients are zero
        return (
            torch.zeros_like(input, memory_format=torch.contiguous_format
                             if not _is_channels_last(grad_output)
                             else torch.channels_last) if m_in else none_(),
            torch.zeros(depthwise_weight.shape, dtype=depthwise_weight.dtype, device=dev)
            if m_dww else none_(),
            torch.zeros(pointwise_weight.shape, dtype=pointwise_weight.dtype, device=dev)
            if m_pww else none_(),
            torch.zeros(depthwise_bias.shape, dtype=depthwise_bias.dtype, device=dev)
            if m_dwb else none_(),
            torch.zeros(pointwise_bias.shape, dtype=pointwise_bias.dtype, device=dev)
            if m_pwb else none_(),
        )

    x, pww = input, pointwise_weight
    dww, dw_strides = _tap_weights(depthwise_weight, gm)
    dwb = depthwise_bias if depthwise_bias is not None else dww
    dot_mode = _dot_mode(input.dtype)
    is_f64 = dot_mode == _DOT_F64
    common = _common_args(gm)

    # 1. g = grad_y * act2'(pre)
    if act2 == 0:
        g = grad_output
    else:
        g = _alloc_like(grad_output.shape, input)
        _pointwise_pre(input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias,
                       gm, g, grad_output, act1, act2, grad_mode=True)

    # 2. grad_z = (g @ pw) * act1'(z)
    grad_z = None
    if need_gz:
        grad_z = _alloc_like((N, CM, gm["HO"], gm["WO"]), input)

        def grid_gz(meta):
            return (N * triton.cdiv(HWO, meta["BLOCK_P"]) * triton.cdiv(CM, meta["BLOCK_K"]),)

        args = (
            x, dww, dwb, pww, g, grad_z,
            CM, COUT, gm["H"], gm["W"], gm["WO"], HWO, gm["PT"], gm["PL"],
            x.stride(0), x.stride(1), x.stride(2), x.stride(3),
            *dw_strides,
            pww.stride(0), pww.stride(1),
            g.stride(0), g.stride(1), g.stride(2), g.stride(3),
            grad_z.stride(0), grad_z.stride(1), grad_z.stride(2), grad_z.stride(3),
        )
        kwargs = dict(common, HAS_DWB=depthwise_bias is not None, ACT1=act1, ACT2=act2,
                      DOT_MODE=dot_mode)
        _launch(_sep_bwd_gz_tuned, _sep_bwd_gz_kernel, grid_gz, is_f64,
                (x, dww, pww, g, grad_z), args, kwargs)

    # 3. grad_pw_w = sum g^T a, grad_pw_b = sum g  (split partials, fixed-order reduction)
    grad_pww, grad_pwb = none_(), none_()
    if m_pww or m_pwb:
        n_splits = _n_splits(input, gm, N * triton.cdiv(HWO, 64))
        acc_dtype = torch.float64 if is_f64 else torch.float32
        wsw = torch.empty((n_splits, COUT, CM) if m_pww else (1,), dtype=acc_dtype, device=dev)
        wsb = torch.empty((n_splits, COUT) if m_pwb else (1,), dtype=acc_dtype, device=dev)

        def grid_pw(meta):
            nk = triton.cdiv(CM, meta["BLOCK_K"]) if m_pww else 1
            return (triton.cdiv(COUT, meta["BLOCK_CO"]) * nk, n_splits)

        args = (
            x, dww, dwb, g, wsw, wsb,
            N, CM, COUT, gm["H"], gm["W"], gm["WO"], HWO, gm["PT"], gm["PL"], n_splits,
            x.stride(0), x.stride(1), x.stride(2), x.stride(3),
            *dw_strides,
            g.stride(0), g.stride(1), g.stride(2), g.stride(3),
        )
        kwargs = dict(common, HAS_DWB=depthwise_bias is not None, ACT1=act1, ACT2=act2,
                      DOT_MODE=dot_mode, COMPUTE_W=m_pww, COMPUTE_B=m_pwb)
        _launch(_sep_bwd_pw_tuned, _sep_bwd_pw_kernel, grid_pw, is_f64,
                (x, dww, g, wsw, wsb), args, kwargs)
        if m_pww:
            grad_pww = wsw.sum(0).to(pointwise_weight.dtype).view(COUT, CM, 1, 1)
        if m_pwb:
            grad_pwb = wsb.sum(0).to(pointwise_bias.dtype)

    # 4. depthwise backward on grad_z
    grad_in, grad_dww, grad_dwb = none_(), none_(), none_()
    if need_gz:
        if m_in:
            grad_in = torch.ops.convext.triton_depthwise_conv2d_backward_input(
                grad_z, depthwise_weight, list(input.shape), list(stride), list(padding),
                list(dilation))
        if m_dww or m_dwb:
            gw, gb = torch.ops.convext.triton_depthwise_conv2d_backward_weight(
                grad_z, input, [gm["KH"], gm["KW"]], list(stride), list(padding),
                list(dilation), m_dwb)
            if m_dww:
                grad_dww = gw
            if m_dwb:
                grad_dwb = gb
    return grad_in, grad_dww, grad_pww, grad_dwb, grad_pwb


_opaque_when_interpreted(_triton_depthwise_separable_conv2d,
                         _triton_depthwise_separable_conv2d_backward)
