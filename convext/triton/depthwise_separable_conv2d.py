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
"""

import importlib
import os
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format
from torch.library import triton_op

from .depthwise_conv2d import _acc_weights, _launcher, _zeros_2d

__all__ = ["depthwise_separable_conv2d", "depthwise_separable_conv2d_backward"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# CONVEXT_TRITON_AUTOTUNE=0: take the first fitting config instead of benchmarking them all (tests).
_NO_AUTOTUNE = os.environ.get("CONVEXT_TRITON_AUTOTUNE", "1") == "0"

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


def _next_pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


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


# ----------------------------------------------------------------------------------------------
# device helpers
# ----------------------------------------------------------------------------------------------
@triton.jit
def _relu6(x):
    # clamp to [0, 6] that keeps NaN (as torch.clamp / F.relu6; tl.maximum / tl.minimum would
    # return the other operand for a NaN)
    return tl.where(x < 0.0, 0.0, tl.where(x > 6.0, 6.0, x)).to(x.dtype)


@triton.jit
def _act(x, ACT: tl.constexpr):
    if ACT == 1:
        x = tl.where(x < 0.0, 0.0, x).to(x.dtype)  # NaN stays NaN, as F.relu
    elif ACT == 2:
        x = _relu6(x)
    elif ACT == 3:
        x = x / (1.0 + tl.exp(-x))
    elif ACT == 4:
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACT == 5:
        # x * relu6(x + 3) / 6
        x = x * _relu6(x + 3.0) / 6.0
    return x


@triton.jit
def _act_bwd(g, x, ACT: tl.constexpr):
    """g * act'(x) at pre-activation x, with torch's backward formulas element by element (as its
    CUDA kernels and its scalar CPU loop compute them): relu / relu6 / hardswish *select* (a zero
    slope gives 0 even for an inf / NaN gradient; a NaN x takes the pass-through branch:
    threshold_backward / hardtanh_backward / hardswish_backward), silu / gelu multiply."""
    if ACT == 1:
        # threshold_backward: 0 where x <= 0, else the gradient passes (also at NaN)
        d = tl.where(x <= 0.0, 0.0, g)
    elif ACT == 2:
        # hardtanh_backward: 0 where x <= 0 or x >= 6, else the gradient passes (also at NaN)
        d = tl.where((x <= 0.0) | (x >= 6.0), 0.0, g)
    elif ACT == 3:
        s = 1.0 / (1.0 + tl.exp(-x))
        d = g * (s * (1.0 + x * (1.0 - s)))
    elif ACT == 4:
        cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
        pdf = tl.exp(-0.5 * x * x) * 0.3989422804014327
        d = g * (cdf + x * pdf)
    elif ACT == 5:
        # hardswish_backward: 0 for x <= -3, g * (x / 3 + 1/2) on (-3, 3), g for x >= 3 (the kinks
        # take the outer slope, as relu / relu6 do; NaN takes the last branch, as there)
        d = tl.where(x <= -3.0, 0.0, tl.where(x < 3.0, g * (x / 3.0 + 0.5), g))
    else:
        d = g
    return d.to(g.dtype)


@triton.jit
def _dw_tile(x_tile, w_k, dwb_ptr, offs_k, k_mask, ih0, iw0, p_mask, H, W, sxh, sxw, sdwh, sdww,
             KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
             HAS_DWB: tl.constexpr, IS_F64: tl.constexpr, BLOCK_P: tl.constexpr,
             BLOCK_K: tl.constexpr, PIX_MASK: tl.constexpr, K_MASK: tl.constexpr):
    """Pre-activation depthwise tile z[BLOCK_P, BLOCK_K] (+ bias), fp32 (fp64 for fp64).

    x_tile: the [BLOCK_P, BLOCK_K] pointer tile of x[ic(k), ih0, iw0] (every tap is x_tile plus
    one scalar; a column tap is an immediate offset when sxw is 1); w_k: the weights of the K
    block, taps-major in the accumulation dtype (tap (kh, kw) at w_k + kh * sdwh + kw * sdww).
    PIX_MASK 0: the tile's pixels and window are in bounds (no pixel masks); 1: rows in bounds
    (column masks); 2: pixel, row and column masks.  K_MASK: mask the channels by k_mask."""
    z = _zeros_2d(BLOCK_P, BLOCK_K, IS_F64)
    for kh in tl.static_range(KH):
        x_row = x_tile + (kh * DH) * sxh
        if PIX_MASK == 2:
            ih = ih0 + kh * DH
            h_ok = p_mask & (ih >= 0) & (ih < H)
        for kw in tl.static_range(KW):
            if PIX_MASK == 0:
                ok = None
            else:
                iw = iw0 + kw * DW
                ok = (iw >= 0) & (iw < W)
                if PIX_MASK == 2:
                    ok = ok & h_ok
            if K_MASK:
                if PIX_MASK == 0:
                    xv = tl.load(x_row + (kw * DW) * sxw, mask=k_mask[None, :], other=0.0)
                else:
                    xv = tl.load(x_row + (kw * DW) * sxw, mask=ok[:, None] & k_mask[None, :],
                                 other=0.0)
                wv = tl.load(w_k + (kh * sdwh + kw * sdww), mask=k_mask, other=0.0)
            else:
                if PIX_MASK == 0:
                    xv = tl.load(x_row + (kw * DW) * sxw)
                else:
                    xv = tl.load(x_row + (kw * DW) * sxw, mask=ok[:, None], other=0.0)
                wv = tl.load(w_k + (kh * sdwh + kw * sdww))
            if PIX_MASK == 0:
                z = tl.fma(xv.to(z.dtype), wv.to(z.dtype)[None, :], z)
            else:
                # a padded tap adds nothing (not 0 * w: NaN for a NaN / inf weight), as F.conv2d
                z = tl.fma(xv.to(z.dtype), tl.where(ok[:, None], wv.to(z.dtype)[None, :], 0.0), z)
    if HAS_DWB:
        if K_MASK:
            b = tl.load(dwb_ptr + offs_k, mask=k_mask, other=0.0)
        else:
            b = tl.load(dwb_ptr + offs_k)
        z += b.to(z.dtype)[None, :]
    return z


@triton.jit
def _tile_window_in(pid_p, WO, HWO, H, W, PAD_T, PAD_L, KH: tl.constexpr, KW: tl.constexpr,
                    SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                    BLOCK_P: tl.constexpr):
    """Scalar tests for the pixel tile [pid_p * BLOCK_P, + BLOCK_P) of the flattened output
    plane: rows_in (every pixel exists and every row of its window lies in [0, H)), cols_in (the
    window columns of every pixel lie in [0, W); a tile spanning rows covers all columns)."""
    p0 = pid_p * BLOCK_P
    p1 = p0 + BLOCK_P - 1
    oh_a = p0 // WO
    oh_b = p1 // WO
    one_row = oh_a == oh_b
    c_lo = tl.where(one_row, p0 - oh_a * WO, 0)
    c_hi = tl.where(one_row, p1 - oh_b * WO, WO - 1)
    rows_in = ((p1 < HWO) & (oh_a * SH - PAD_T >= 0)
               & (oh_b * SH - PAD_T + (KH - 1) * DH < H))
    cols_in = (c_lo * SW - PAD_L >= 0) & (c_hi * SW - PAD_L + (KW - 1) * DW < W)
    return rows_in, cols_in


@triton.jit
def _dw_tile_paths(x_base, dww_ptr, dwb_ptr, k0, offs_k, CM, pix, ih0, iw0, p_mask, rows_in,
                   cols_in, H, W, sxc, sxh, sxw, sdw0, sdwh, sdww,
                   M: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr,
                   DW: tl.constexpr, HAS_DWB: tl.constexpr, IS_F64: tl.constexpr,
                   BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    """The depthwise tile of the K block offs_k on one of three paths picked by scalar tests:
    window in bounds and a full K block (no masks), rows in bounds and a full K block (column
    masks), any (pixel, row, column and channel masks)."""
    k_mask = offs_k < CM
    x_tile = x_base + ((offs_k // M) * sxc)[None, :] + pix[:, None]
    w_k = dww_ptr + offs_k * sdw0
    if rows_in & (k0 + BLOCK_K <= CM):
        if cols_in:
            z = _dw_tile(x_tile, w_k, dwb_ptr, offs_k, k_mask, ih0, iw0, p_mask, H, W, sxh, sxw,
                         sdwh, sdww, KH, KW, DH, DW, HAS_DWB, IS_F64, BLOCK_P, BLOCK_K, 0, False)
        else:
            z = _dw_tile(x_tile, w_k, dwb_ptr, offs_k, k_mask, ih0, iw0, p_mask, H, W, sxh, sxw,
                         sdwh, sdww, KH, KW, DH, DW, HAS_DWB, IS_F64, BLOCK_P, BLOCK_K, 1, False)
    else:
        z = _dw_tile(x_tile, w_k, dwb_ptr, offs_k, k_mask, ih0, iw0, p_mask, H, W, sxh, sxw,
                     sdwh, sdww, KH, KW, DH, DW, HAS_DWB, IS_F64, BLOCK_P, BLOCK_K, 2, True)
    return z


@triton.jit
def _mma(acc, a, b, DOT_MODE: tl.constexpr):
    """acc += a @ b (a: [R, K], b: [K, C])."""
    if DOT_MODE == 3:
        acc += tl.sum(a.to(tl.float64)[:, :, None] * b.to(tl.float64)[None, :, :], axis=1)
    elif DOT_MODE == 1:
        acc = tl.dot(a, b, acc, input_precision="tf32")
    elif DOT_MODE == 2:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    elif DOT_MODE == 4:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc)
    return acc


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _sep_fwd_kernel(
    x_ptr, dww_ptr, dwb_ptr, pww_ptr, pwb_ptr, y_ptr, gy_ptr,
    CM, COUT, H, W, WO, HWO, PAD_T, PAD_L,
    sxn, sxc, sxh, sxw,
    sdw0, sdwh, sdww,
    spw0, spw1,
    syn, syc, syh, syw,
    sgn, sgc, sgh, sgw,
    M: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    HAS_DWB: tl.constexpr, HAS_PWB: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr,
    GRAD_MODE: tl.constexpr, DOT_MODE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y = act2(pw @ act1(dw(x))); GRAD_MODE: y := gy * act2'(pw @ act1(dw(x)) + pw_b)."""
    IS_F64: tl.constexpr = DOT_MODE == 3
    pid = tl.program_id(0)
    num_co = tl.cdiv(COUT, BLOCK_CO)
    num_p = tl.cdiv(HWO, BLOCK_P)
    pid_co = pid % num_co
    t = pid // num_co
    pid_p = t % num_p
    n = (t // num_p).to(tl.int64)

    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = offs_p < HWO
    oh = offs_p // WO
    ow = offs_p % WO
    ih0 = oh * SH - PAD_T
    iw0 = ow * SW - PAD_L
    x_base = x_ptr + n * sxn

    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_mask = offs_co < COUT

    rows_in, cols_in = _tile_window_in(pid_p, WO, HWO, H, W, PAD_T, PAD_L, KH, KW, SH, SW, DH,
                                       DW, BLOCK_P)
    pix = ih0 * sxh + iw0 * sxw

    acc = _zeros_2d(BLOCK_P, BLOCK_CO, IS_F64)
    for k0 in range(0, CM, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < CM
        z = _dw_tile_paths(x_base, dww_ptr, dwb_ptr, k0, offs_k, CM, pix, ih0, iw0, p_mask,
                           rows_in, cols_in, H, W, sxc, sxh, sxw, sdw0, sdwh, sdww, M, KH, KW,
                           DH, DW, HAS_DWB, IS_F64, BLOCK_P, BLOCK_K)
        a = _act(z, ACT1).to(x_ptr.dtype.element_ty)
        w = tl.load(pww_ptr + offs_k[:, None] * spw1 + offs_co[None, :] * spw0,
                    mask=k_mask[:, None] & co_mask[None, :], other=0.0)
        acc = _mma(acc, a, w, DOT_MODE)

    if HAS_PWB:
        b = tl.load(pwb_ptr + offs_co, mask=co_mask, other=0.0)
        acc += b.to(acc.dtype)[None, :]
    mask = p_mask[:, None] & co_mask[None, :]
    if GRAD_MODE:
        gy = tl.load(gy_ptr + n * sgn + offs_co[None, :] * sgc + (oh * sgh + ow * sgw)[:, None],
                     mask=mask, other=0.0)
        out = _act_bwd(gy.to(acc.dtype), acc, ACT2)
    else:
        out = _act(acc, ACT2)
    tl.store(y_ptr + n * syn + offs_co[None, :] * syc + (oh * syh + ow * syw)[:, None],
             out.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sep_bwd_gz_kernel(
    x_ptr, dww_ptr, dwb_ptr, pww_ptr, g_ptr, gz_ptr,
    CM, COUT, H, W, WO, HWO, PAD_T, PAD_L,
    sxn, sxc, sxh, sxw,
    sdw0, sdwh, sdww,
    spw0, spw1,
    sgn, sgc, sgh, sgw,
    szn, szc, szh, szw,
    M: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    HAS_DWB: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr, DOT_MODE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """grad_z[n, k, p] = (sum_co g[n, co, p] * pw[co, k]) * act1'(z[n, k, p])."""
    IS_F64: tl.constexpr = DOT_MODE == 3
    pid = tl.program_id(0)
    num_k = tl.cdiv(CM, BLOCK_K)
    num_p = tl.cdiv(HWO, BLOCK_P)
    pid_k = pid % num_k  # K blocks fastest: the g tile is shared through L2
    t = pid // num_k
    pid_p = t % num_p
    n = (t // num_p).to(tl.int64)

    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = offs_p < HWO
    oh = offs_p // WO
    ow = offs_p % WO
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = offs_k < CM

    g_base = g_ptr + n * sgn + (oh * sgh + ow * sgw)[:, None]
    ga = _zeros_2d(BLOCK_P, BLOCK_K, IS_F64)
    for co0 in range(0, COUT, BLOCK_CO):
        offs_co = co0 + tl.arange(0, BLOCK_CO)
        co_mask = offs_co < COUT
        g = tl.load(g_base + offs_co[None, :] * sgc, mask=p_mask[:, None] & co_mask[None, :],
                    other=0.0)
        wt = tl.load(pww_ptr + offs_co[:, None] * spw0 + offs_k[None, :] * spw1,
                     mask=co_mask[:, None] & k_mask[None, :], other=0.0)
        ga = _mma(ga, g, wt, DOT_MODE)

    if ACT1 != 0:
        ih0 = oh * SH - PAD_T
        iw0 = ow * SW - PAD_L
        rows_in, cols_in = _tile_window_in(pid_p, WO, HWO, H, W, PAD_T, PAD_L, KH, KW, SH, SW,
                                           DH, DW, BLOCK_P)
        z = _dw_tile_paths(x_ptr + n * sxn, dww_ptr, dwb_ptr, pid_k * BLOCK_K, offs_k, CM,
                           ih0 * sxh + iw0 * sxw, ih0, iw0, p_mask, rows_in, cols_in, H, W, sxc,
                           sxh, sxw, sdw0, sdwh, sdww, M, KH, KW, DH, DW, HAS_DWB, IS_F64,
                           BLOCK_P, BLOCK_K)
        ga = _act_bwd(ga, z, ACT1)
    tl.store(gz_ptr + n * szn + offs_k[None, :] * szc + (oh * szh + ow * szw)[:, None],
             ga.to(gz_ptr.dtype.element_ty), mask=p_mask[:, None] & k_mask[None, :])


@triton.jit
def _sep_bwd_pw_kernel(
    x_ptr, dww_ptr, dwb_ptr, g_ptr, wsw_ptr, wsb_ptr,
    N, CM, COUT, H, W, WO, HWO, PAD_T, PAD_L, S,
    sxn, sxc, sxh, sxw,
    sdw0, sdwh, sdww,
    sgn, sgc, sgh, sgw,
    M: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    HAS_DWB: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr, DOT_MODE: tl.constexpr,
    COMPUTE_W: tl.constexpr, COMPUTE_B: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Split s of the pixel tiles: wsw[s, co, k] = sum g[co, p] a[k, p]; wsb[s, co] = sum g[co, p]."""
    IS_F64: tl.constexpr = DOT_MODE == 3
    pid = tl.program_id(0)
    s = tl.program_id(1)
    if COMPUTE_W:
        num_k = tl.cdiv(CM, BLOCK_K)
    else:
        num_k = 1  # bias only: one program per CO block
    pid_k = pid % num_k
    pid_co = pid // num_k
    num_p = tl.cdiv(HWO, BLOCK_P)
    T = N * num_p
    per = tl.cdiv(T, S)
    t_begin = s * per
    t_end = tl.minimum(t_begin + per, T)

    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_mask = offs_co < COUT
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = offs_k < CM

    acc_w = _zeros_2d(BLOCK_CO, BLOCK_K, IS_F64)
    if IS_F64:
        acc_b = tl.zeros([BLOCK_CO], dtype=tl.float64)
    else:
        acc_b = tl.zeros([BLOCK_CO], dtype=tl.float32)
    for t in range(t_begin, t_end):
        n = (t // num_p).to(tl.int64)
        offs_p = (t % num_p) * BLOCK_P + tl.arange(0, BLOCK_P)
        p_mask = offs_p < HWO
        oh = offs_p // WO
        ow = offs_p % WO
        # rows past HWO load g = 0, so they contribute nothing
        g = tl.load(g_ptr + n * sgn + offs_co[None, :] * sgc + (oh * sgh + ow * sgw)[:, None],
                    mask=p_mask[:, None] & co_mask[None, :], other=0.0)
        if COMPUTE_W:
            ih0 = oh * SH - PAD_T
            iw0 = ow * SW - PAD_L
            rows_in, cols_in = _tile_window_in(t % num_p, WO, HWO, H, W, PAD_T, PAD_L, KH, KW,
                                               SH, SW, DH, DW, BLOCK_P)
            z = _dw_tile_paths(x_ptr + n * sxn, dww_ptr, dwb_ptr, pid_k * BLOCK_K, offs_k, CM,
                               ih0 * sxh + iw0 * sxw, ih0, iw0, p_mask, rows_in, cols_in, H, W,
                               sxc, sxh, sxw, sdw0, sdwh, sdww, M, KH, KW, DH, DW, HAS_DWB,
                               IS_F64, BLOCK_P, BLOCK_K)
            a = _act(z, ACT1).to(x_ptr.dtype.element_ty)
            if DOT_MODE == 3:
                acc_w += tl.sum(g.to(tl.float64)[:, :, None] * a.to(tl.float64)[:, None, :], axis=0)
            else:
                acc_w = _mma(acc_w, tl.trans(g), a, DOT_MODE)
        if COMPUTE_B:
            acc_b += tl.sum(g.to(acc_b.dtype), axis=0)

    if COMPUTE_W:
        ws = wsw_ptr + s.to(tl.int64) * COUT * CM
        tl.store(ws + offs_co[:, None] * CM + offs_k[None, :], acc_w,
                 mask=co_mask[:, None] & k_mask[None, :])
    if COMPUTE_B:
        # A branch, not `co_mask & (pid_k == 0)`: triton 3.9's interpreter gives a block mask
        # combined with a scalar predicate a non-boolean dtype and refuses the store.
        if pid_k == 0:
            tl.store(wsb_ptr + s * COUT + offs_co, acc_b, mask=co_mask)


_sep_fwd_tuned = _autotune(_KEY)(_sep_fwd_kernel)
_sep_bwd_gz_tuned = _autotune(_KEY)(_sep_bwd_gz_kernel)
_sep_bwd_pw_tuned = _autotune(_KEY + ["COMPUTE_W", "COMPUTE_B"])(_sep_bwd_pw_kernel)


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------
def _is_fake(*tensors):
    from torch._subclasses.fake_tensor import is_fake

    return any(t is not None and (is_fake(t) or t.device.type == "meta") for t in tensors)


def _launch(tuned, raw, grid, is_f64, tensors, args, kwargs):
    """Launch `tuned` (autotuned) or, for fp64, `raw` with the fixed fp64 blocks.

    Under TRITON_INTERPRET=1 the kernels launch unwrapped (`_launcher`) and cannot run on
    fake/meta tensors; skipping them there lets triton_op's default fake impl trace the body.
    """
    if _INTERPRET and _is_fake(*tensors):
        return
    if is_f64:
        _launcher(raw)[grid](*args, **kwargs, **_F64_META)
    else:
        _launcher(tuned)[grid](*args, **kwargs)


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
    HO = (H + PT + PB - DH * (KH - 1) - 1) // SH + 1
    WO = (W + PL + PR - DW * (KW - 1) - 1) // SW + 1
    return dict(N=N, C=C, H=H, W=W, CM=CM, M=CM // C if C else 1, KH=KH, KW=KW, COUT=COUT,
                SH=SH, SW=SW, DH=DH, DW=DW, PT=PT, PL=PL, HO=max(HO, 0), WO=max(WO, 0))


def _dense_biases(*biases):
    """The kernels index biases by channel alone (weights go by their strides): a strided bias view
    is copied once (a few hundred elements; no copy when already contiguous)."""
    return tuple(b if b is None else b.contiguous() for b in biases)


def _empty_like_input(input, shape):
    fmt = suggest_memory_format(input)
    if fmt != torch.channels_last:
        fmt = torch.contiguous_format
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=fmt)


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
    y = _empty_like_input(input, (gm["N"], gm["COUT"], gm["HO"], gm["WO"]))
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
                             if suggest_memory_format(grad_output) != torch.channels_last
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
        g = _empty_like_input(input, grad_output.shape)
        _pointwise_pre(input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias,
                       gm, g, grad_output, act1, act2, grad_mode=True)

    # 2. grad_z = (g @ pw) * act1'(z)
    grad_z = None
    if need_gz:
        grad_z = _empty_like_input(input, (N, CM, gm["HO"], gm["WO"]))

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
        dw = importlib.import_module("convext.triton.depthwise_conv2d")
        if m_in:
            grad_in = dw.depthwise_conv2d_backward_input(
                grad_z, depthwise_weight, list(input.shape), list(stride), list(padding),
                list(dilation))
        if m_dww or m_dwb:
            gw, gb = dw.depthwise_conv2d_backward_weight(
                grad_z, input, [gm["KH"], gm["KW"]], list(stride), list(padding),
                list(dilation), m_dwb)
            if m_dww:
                grad_dww = gw
            if m_dwb:
                grad_dwb = gb
    return grad_in, grad_dww, grad_pww, grad_dwb, grad_pwb


if _INTERPRET:
    # triton_op decomposes into its body under AOTDispatcher (torch.compile) so that Inductor sees
    # the kernels; under TRITON_INTERPRET=1 the kernels launch unwrapped (`_launcher`), which
    # cannot be traced, so the decomposed graph would lose the launches. Keep the ops opaque there.
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    def _opaque(mode, op, types, args, kwargs):
        return mode.__torch_dispatch__(op, types, args, kwargs)

    for _op in (_triton_depthwise_separable_conv2d, _triton_depthwise_separable_conv2d_backward):
        _op.register_torch_dispatch(FunctionalTensorMode, _opaque)


# ----------------------------------------------------------------------------------------------
# plain Python entry points (called by the lead's autograd / backend table)
# ----------------------------------------------------------------------------------------------
def depthwise_separable_conv2d(input, depthwise_weight, pointwise_weight, depthwise_bias,
                               pointwise_bias, stride, padding, dilation,
                               depthwise_activation="none", pointwise_activation="none"):
    return torch.ops.convext.triton_depthwise_separable_conv2d(
        input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias,
        list(stride), list(padding), list(dilation), depthwise_activation or "none",
        pointwise_activation or "none")


def depthwise_separable_conv2d_backward(grad_output, input, depthwise_weight, pointwise_weight,
                                        depthwise_bias, pointwise_bias, stride, padding, dilation,
                                        depthwise_activation="none", pointwise_activation="none",
                                        output_mask=(True, True, True, True, True)):
    return torch.ops.convext.triton_depthwise_separable_conv2d_backward(
        grad_output, input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias,
        list(stride), list(padding), list(dilation), depthwise_activation or "none",
        pointwise_activation or "none", [bool(m) for m in output_mask])
