"""Triton depthwise conv2d: forward, grad-input and grad-weight as ``convext::triton_*`` ops.

Schemas copy csrc/ops.cpp (see docs/DESIGN.md for the semantics):

    convext::triton_depthwise_conv2d(input, weight, bias?, stride[2], padding[4], dilation[2])
    convext::triton_depthwise_conv2d_backward_input(grad_output, weight, input_size[4], stride,
                                                    padding, dilation)
    convext::triton_depthwise_conv2d_backward_weight(grad_output, input, kernel_size[2], stride,
                                                     padding, dilation, compute_bias)

Kernels read every tensor through its strides (NCHW, channels_last and sliced views in place).
Two kernel families per op, picked by the memory format the result is allocated in:

* NCHW: one program per (n * c, tile of rows, tile of cols), [BLOCK_H, BLOCK_W] register tile,
  taps unrolled (kH, kW, stride and dilation are constexpr), padding by masked loads.
* channels_last: one program per (n, pixel tile, channel block), [TILE_H * TILE_W, BLOCK_C] tile
  with the channels contiguous (vectorised loads); weights pre-transposed to (kH*kW, C_out).

Forward and stride-1 grad-input tiles take one of three paths, by a runtime test per tile: the
tile's outputs and whole source window in bounds (no masks), rows in bounds (NCHW: column masks;
channels_last: channel masks), any (all masks); every tap is the tile's pointers plus a scalar
(see docs/perf/SASS.md and tools/sass_report.py for the static instruction counts).  Weights are
passed in the accumulation dtype (the bf16 / fp16 -> fp32 conversion is exact).

grad-input gathers from grad_output (stride 1: forward with flipped taps; stride > 1: the same
gather with divisibility masks).  grad-weight: programs over (channel (block), chunk of output
tiles) keep one register accumulator per tap shaped like the tile (interior / border tile paths
as above), write per-chunk partials into a float32 (float64 for float64 inputs) workspace,
reduced afterwards in a fixed order (no atomics: deterministic; tiles and chunks depend only on
the shapes).

Accumulation is float32 for fp32/fp16/bf16 and float64 for float64.  Element offsets inside an
image become int64 when any tensor spans >= 2**31 elements; per-image base offsets always are.

The lead registers fake kernels / autograd elsewhere (convext/_ops.py); ``triton_op`` already
derives a fake implementation by running these functions on fake tensors (no kernel launch).
"""

import os
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

__all__ = [
    "depthwise_conv2d",
    "depthwise_conv2d_backward_input",
    "depthwise_conv2d_backward_weight",
]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# CONVEXT_TRITON_AUTOTUNE=0: take the first config instead of benchmarking them all (tests).
_NO_AUTOTUNE = os.environ.get("CONVEXT_TRITON_AUTOTUNE", "1") == "0"
_I32_LIMIT = 2**31 - 1
# Grad-weight: number of programs aimed at (independent of the device, so that the
# chunking, hence the rounding of the result, depends only on the shapes).
_GW_TARGET_PROGRAMS = 1024


# ----------------------------------------------------------------------------------------------
# Shared helpers (inlined by Triton)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _udiv(a, b):
    """a // b and a % b for non-negative int32 a, positive b, as unsigned divisions (cheaper in
    SASS than the signed ones: no sign fix-ups). b may be a plain int (an argument equal to 1 is
    specialised to one): ``b + a * 0`` makes it a tensor (folded away; triton 3.6 has no
    tl.to_tensor)."""
    b = b + a * 0
    q = (a.to(tl.uint32) // b.to(tl.uint32)).to(tl.int32)
    return q, a - q * b


@triton.jit
def _nchw_tile(pid, C, H_t, W_t, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
               INT64: tl.constexpr):
    """Program id -> (n, c, rows, cols, first row, first col) of a [BLOCK_H, BLOCK_W] tile of
    one of N * C planes of H_t x W_t (tiles of a plane row-major)."""
    tiles_w = tl.cdiv(W_t, BLOCK_W)
    tiles = tl.cdiv(H_t, BLOCK_H) * tiles_w
    plane, t = _udiv(pid, tiles)
    th, tw = _udiv(t, tiles_w)
    n, c = _udiv(plane, C)
    r0 = th * BLOCK_H
    c0 = tw * BLOCK_W
    rows = r0 + tl.arange(0, BLOCK_H)
    cols = c0 + tl.arange(0, BLOCK_W)
    if INT64:
        rows = rows.to(tl.int64)
        cols = cols.to(tl.int64)
    return n, c, rows, cols, r0, c0


@triton.jit
def _nhwc_tile(pid, C, H_t, W_t, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
               BLOCK_C: tl.constexpr, INT64: tl.constexpr):
    """Program id (channel block fastest, then pixel tile, then image) -> (n, rows, cols,
    channels, channel mask, first row, first col, first channel) of a [TILE_H * TILE_W, BLOCK_C]
    tile."""
    n_cb = tl.cdiv(C, BLOCK_C)
    tiles_w = tl.cdiv(W_t, TILE_W)
    tiles = tl.cdiv(H_t, TILE_H) * tiles_w
    r, cb = _udiv(pid, n_cb)
    n, t = _udiv(r, tiles)
    th, tw = _udiv(t, tiles_w)
    p = tl.arange(0, TILE_H * TILE_W)
    r0 = th * TILE_H
    c0 = tw * TILE_W
    rows = r0 + p // TILE_W
    cols = c0 + p % TILE_W
    if INT64:
        rows = rows.to(tl.int64)
        cols = cols.to(tl.int64)
        r0 = r0.to(tl.int64)
        c0 = c0.to(tl.int64)
    ch0 = cb * BLOCK_C
    ch = ch0 + tl.arange(0, BLOCK_C)
    return n, rows, cols, ch, ch < C, r0, c0, ch0


@triton.jit
def _zeros_2d(D0: tl.constexpr, D1: tl.constexpr, ACC_F64: tl.constexpr):
    if ACC_F64:
        acc = tl.zeros([D0, D1], dtype=tl.float64)
    else:
        acc = tl.zeros([D0, D1], dtype=tl.float32)
    return acc


@triton.jit
def _zeros_1d(D0: tl.constexpr, ACC_F64: tl.constexpr):
    if ACC_F64:
        acc = tl.zeros([D0], dtype=tl.float64)
    else:
        acc = tl.zeros([D0], dtype=tl.float32)
    return acc


@triton.jit
def _store_nchw_tile(base, acc, rows, cols, H_t, W_t, s_h, s_w):
    m = (rows < H_t)[:, None] & (cols < W_t)[None, :]
    tl.store(base + rows[:, None] * s_h + cols[None, :] * s_w,
             acc.to(base.dtype.element_ty), mask=m)


@triton.jit
def _store_nhwc_tile(base, acc, rows, cols, H_t, W_t, s_h, s_w, ch, s_c, c_ok):
    pm = (rows < H_t) & (cols < W_t)
    tl.store(base + (rows * s_h + cols * s_w)[:, None] + (ch * s_c)[None, :],
             acc.to(base.dtype.element_ty), mask=pm[:, None] & c_ok[None, :])


@triton.jit
def _gather_index(nx, S: tl.constexpr, LIM):
    """Output index o with nx == o * S (grad-input gather) and its validity mask."""
    if S == 1:
        o = nx
        ok = (nx >= 0) & (o < LIM)
    else:
        o = nx // S
        ok = (nx >= 0) & (nx - o * S == 0) & (o < LIM)
    return o, ok


# ----------------------------------------------------------------------------------------------
# Forward, NCHW (any strides; used when the output is not channels_last)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _nchw_taps_row(acc, p, s_w, r_ok, cols, LIM_W, w_row, KW: tl.constexpr, DW: tl.constexpr,
                   FLIP: tl.constexpr, ROW_MASK: tl.constexpr, COL_MASK: tl.constexpr):
    """One row of taps: tap j reads p + j * DW * s_w (an immediate offset when s_w is 1) with
    weight w_row[j] (w_row[KW - 1 - j] when FLIP), masked by the rows' r_ok ([R, 1]) when
    ROW_MASK and by cols + j * DW in [0, LIM_W) when COL_MASK."""
    for j in tl.static_range(KW):
        if COL_MASK:
            c = cols + j * DW
            c_ok = ((c >= 0) & (c < LIM_W))[None, :]
            if ROW_MASK:
                m = r_ok & c_ok
            else:
                m = c_ok
            xv = tl.load(p + (j * DW) * s_w, mask=m, other=0.0)
        elif ROW_MASK:
            m = r_ok
            xv = tl.load(p + (j * DW) * s_w, mask=m, other=0.0)
        else:
            xv = tl.load(p + (j * DW) * s_w)
        if FLIP:
            wv = tl.load(w_row + (KW - 1 - j))
        else:
            wv = tl.load(w_row + j)
        if ROW_MASK or COL_MASK:
            # a padded tap adds nothing (not 0 * w: NaN for a NaN / inf weight), as in F.conv2d
            acc += tl.where(m, xv.to(acc.dtype) * wv.to(acc.dtype), 0.0)
        else:
            acc += xv.to(acc.dtype) * wv.to(acc.dtype)
    return acc


@triton.jit
def _nchw_taps_kh(acc, p, s_h, s_w, rows, LIM_H, cols, LIM_W, w_base, i,
                  KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                  FLIP: tl.constexpr, ROW_MASK: tl.constexpr, COL_MASK: tl.constexpr):
    if FLIP:
        w_row = w_base + (KH - 1 - i) * KW
    else:
        w_row = w_base + i * KW
    r = rows + i * DH
    r_ok = ((r >= 0) & (r < LIM_H))[:, None]
    return _nchw_taps_row(acc, p + (i * DH) * s_h, s_w, r_ok, cols, LIM_W, w_row, KW, DW, FLIP,
                          ROW_MASK, COL_MASK)


@triton.jit
def _nchw_taps(acc, p, s_h, s_w, rows, LIM_H, cols, LIM_W, w_base,
               KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
               FLIP: tl.constexpr, ROW_MASK: tl.constexpr, COL_MASK: tl.constexpr):
    """acc[r, c] += sum over taps (i, j) of src[rows[r] + i * DH, cols[c] + j * DW] * w[tap],
    where p = the pointer tile of src[rows, cols] (computed once: every tap is p plus a scalar row
    offset and a column offset, an immediate when s_w is 1); w[tap] = w_base[i * KW + j], or the
    flipped tap when FLIP.  Rows (cols) are masked to [0, LIM_H) ([0, LIM_W)) only when ROW_MASK
    (COL_MASK): tiles whose window is known in bounds skip the masks."""
    if KH * KW <= 25:
        for i in tl.static_range(KH):
            acc = _nchw_taps_kh(acc, p, s_h, s_w, rows, LIM_H, cols, LIM_W, w_base, i, KH, KW,
                                DH, DW, FLIP, ROW_MASK, COL_MASK)
    else:  # a loop over kernel rows bounds the registers (7x7 fully unrolled spills)
        for i in range(KH):
            acc = _nchw_taps_kh(acc, p, s_h, s_w, rows, LIM_H, cols, LIM_W, w_base, i, KH, KW,
                                DH, DW, FLIP, ROW_MASK, COL_MASK)
    return acc


@triton.jit
def _nchw_window_in(r0, c0, LIM_H, LIM_W, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
                    S_H: tl.constexpr, S_W: tl.constexpr, SPAN_H: tl.constexpr,
                    SPAN_W: tl.constexpr, off_h, off_w, OUT_H, OUT_W):
    """Whether the tile's rows r0 .. r0 + BLOCK_H - 1 (its cols) are all < OUT_H (OUT_W) and
    their source window rows r * S_H + off_h + [0, SPAN_H] (cols) lie in [0, LIM_H) ([0, LIM_W))."""
    rows_in = ((r0 + BLOCK_H <= OUT_H) & (r0 * S_H + off_h >= 0)
               & ((r0 + BLOCK_H - 1) * S_H + off_h + SPAN_H < LIM_H))
    cols_in = ((c0 + BLOCK_W <= OUT_W) & (c0 * S_W + off_w >= 0)
               & ((c0 + BLOCK_W - 1) * S_W + off_w + SPAN_W < LIM_W))
    return rows_in, cols_in


@triton.jit
def _nchw_taps_m(acc, p, s_m, s_h, s_w, rows, LIM_H, cols, LIM_W, w_base, M,
                 KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                 FLIP: tl.constexpr, ROW_MASK: tl.constexpr, COL_MASK: tl.constexpr):
    """_nchw_taps summed over M source planes (pointer step s_m, weight step KH * KW)."""
    acc = _nchw_taps(acc, p, s_h, s_w, rows, LIM_H, cols, LIM_W, w_base, KH, KW, DH, DW, FLIP,
                     ROW_MASK, COL_MASK)
    for mm in range(1, M):
        acc = _nchw_taps(acc, p + mm * s_m, s_h, s_w, rows, LIM_H, cols, LIM_W,
                         w_base + mm * (KH * KW), KH, KW, DH, DW, FLIP, ROW_MASK, COL_MASK)
    return acc


@triton.jit
def _nchw_conv_tile(acc, src_base, s_m, M, s_h, s_w, rows, LIM_H, cols, LIM_W, w_base, rows_in,
                    cols_in, dst_base, d_h, d_w, orow, OUT_H, ocol, OUT_W, b_ptr, oc,
                    KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                    FLIP: tl.constexpr, HAS_BIAS: tl.constexpr):
    """The taps (see _nchw_taps) of M source planes over source window rows / cols `rows` /
    `cols`, bias, store of the [orow, ocol] tile; three paths: window in bounds (no masks), rows
    in bounds (column masks), any (row and column masks)."""
    p = src_base + (rows[:, None] * s_h + cols[None, :] * s_w)
    dst = dst_base + (orow[:, None] * d_h + ocol[None, :] * d_w)
    if rows_in:
        if cols_in:
            acc = _nchw_taps_m(acc, p, s_m, s_h, s_w, rows, LIM_H, cols, LIM_W, w_base, M, KH,
                               KW, DH, DW, FLIP, False, False)
            if HAS_BIAS:
                acc += tl.load(b_ptr + oc).to(acc.dtype)
            tl.store(dst, acc.to(dst_base.dtype.element_ty))
        else:
            acc = _nchw_taps_m(acc, p, s_m, s_h, s_w, rows, LIM_H, cols, LIM_W, w_base, M, KH,
                               KW, DH, DW, FLIP, False, True)
            if HAS_BIAS:
                acc += tl.load(b_ptr + oc).to(acc.dtype)
            tl.store(dst, acc.to(dst_base.dtype.element_ty), mask=(ocol < OUT_W)[None, :])
    else:
        acc = _nchw_taps_m(acc, p, s_m, s_h, s_w, rows, LIM_H, cols, LIM_W, w_base, M, KH, KW,
                           DH, DW, FLIP, True, True)
        if HAS_BIAS:
            acc += tl.load(b_ptr + oc).to(acc.dtype)
        tl.store(dst, acc.to(dst_base.dtype.element_ty),
                 mask=(orow < OUT_H)[:, None] & (ocol < OUT_W)[None, :])


@triton.jit
def _nonfinite_nchw_tile(base, rows, cols, H_t, W_t, s_h, s_w):
    """Whether the stored [rows, cols] tile at base holds a NaN or an inf (fix-up mode)."""
    m = (rows < H_t)[:, None] & (cols < W_t)[None, :]
    v = tl.load(base + rows[:, None] * s_h + cols[None, :] * s_w, mask=m, other=0.0)
    return tl.max((m & ((v - v) != 0)).to(tl.int32)) > 0  # v - v is NaN exactly for NaN / inf


@triton.jit
def _nonfinite_nhwc_tile(base, rows, cols, H_t, W_t, s_h, s_w, ch, s_c, c_ok):
    m = ((rows < H_t) & (cols < W_t))[:, None] & c_ok[None, :]
    v = tl.load(base + (rows * s_h + cols * s_w)[:, None] + (ch * s_c)[None, :], mask=m, other=0.0)
    return tl.max(tl.max((m & ((v - v) != 0)).to(tl.int32), axis=1), axis=0) > 0


# FIXUP (all direct kernels): the tile was already computed by the tensor-core path, whose band
# GEMMs multiply padding and off-band zeros (0 * NaN); a tile holding no NaN / inf is exact and
# is left alone (a finite sum had no non-finite product), any other is recomputed here, exactly.
@triton.jit
def _dw_fwd_nchw_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    C_out, M, H, W, H_out, W_out,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACC_F64: tl.constexpr, INT64: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, FIXUP: tl.constexpr,
):
    n, oc, oh, ow, oh0, ow0 = _nchw_tile(tl.program_id(0), C_out, H_out, W_out, BLOCK_H, BLOCK_W,
                                         INT64)
    if INT64:
        oh0 = oh0.to(tl.int64)
        ow0 = ow0.to(tl.int64)
    ic = oc // M
    acc = _zeros_2d(BLOCK_H, BLOCK_W, ACC_F64)
    rows_in, cols_in = _nchw_window_in(oh0, ow0, H, W, BLOCK_H, BLOCK_W, SH, SW, (KH - 1) * DH,
                                       (KW - 1) * DW, -pad_t, -pad_l, H_out, W_out)
    y_base = y_ptr + n.to(tl.int64) * syn + oc.to(tl.int64) * syc
    todo = True
    if FIXUP:
        todo = _nonfinite_nchw_tile(y_base, oh, ow, H_out, W_out, syh, syw)
    if todo:
        _nchw_conv_tile(acc, x_ptr + n.to(tl.int64) * sxn + ic.to(tl.int64) * sxc, 0, 1, sxh, sxw,
                        oh * SH - pad_t, H, ow * SW - pad_l, W, w_ptr + oc * (KH * KW),
                        rows_in, cols_in, y_base,
                        syh, syw, oh, H_out, ow, W_out, b_ptr, oc, KH, KW, DH, DW, False, HAS_BIAS)


# ----------------------------------------------------------------------------------------------
# Forward, channels_last
# ----------------------------------------------------------------------------------------------
@triton.jit
def _nhwc_taps_kh(acc, p, s_h, s_w, rows, LIM_H, cols, LIM_W, wt_base, C_w, c_ok, i,
                  KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                  FLIP: tl.constexpr, PIX_MASK: tl.constexpr, CH_MASK: tl.constexpr):
    r = rows + i * DH
    r_ok = (r >= 0) & (r < LIM_H)
    p_i = p + (i * DH) * s_h
    for j in tl.static_range(KW):
        if FLIP:
            tap = (KH - 1 - i) * KW + (KW - 1 - j)
        else:
            tap = i * KW + j
        if PIX_MASK:
            c = cols + j * DW
            pm = r_ok & (c >= 0) & (c < LIM_W)
            xv = tl.load(p_i + (j * DW) * s_w, mask=pm[:, None] & c_ok[None, :], other=0.0)
        elif CH_MASK:
            xv = tl.load(p_i + (j * DW) * s_w, mask=c_ok[None, :], other=0.0)
        else:
            xv = tl.load(p_i + (j * DW) * s_w)
        if CH_MASK:
            wv = tl.load(wt_base + tap * C_w, mask=c_ok, other=0.0)
        else:
            wv = tl.load(wt_base + tap * C_w)
        if PIX_MASK:
            # a padded tap adds nothing (not 0 * w), as in F.conv2d
            acc += tl.where(pm[:, None], xv.to(acc.dtype) * wv.to(acc.dtype)[None, :], 0.0)
        else:
            acc += xv.to(acc.dtype) * wv.to(acc.dtype)[None, :]
    return acc


@triton.jit
def _nhwc_taps(acc, p, s_h, s_w, rows, LIM_H, cols, LIM_W, wt_base, C_w, c_ok,
               KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
               FLIP: tl.constexpr, PIX_MASK: tl.constexpr, CH_MASK: tl.constexpr):
    """acc[q, c] += sum over taps (i, j) of src[rows[q] + i * DH, cols[q] + j * DW, c] * wt[tap, c]
    with p = the [pixels, channels] pointer tile of src[rows, cols] (each tap is p plus one scalar
    offset) and wt[tap, c] = wt_base[tap * C_w] (the flipped tap when FLIP).  Pixels are masked to
    the [0, LIM_H) x [0, LIM_W) window only when PIX_MASK, channels by c_ok only when CH_MASK or
    PIX_MASK."""
    if KH * KW <= 25:
        for i in tl.static_range(KH):
            acc = _nhwc_taps_kh(acc, p, s_h, s_w, rows, LIM_H, cols, LIM_W, wt_base, C_w, c_ok, i,
                                KH, KW, DH, DW, FLIP, PIX_MASK, CH_MASK)
    else:  # a loop over kernel rows bounds the registers (7x7 fully unrolled spills)
        for i in range(KH):
            acc = _nhwc_taps_kh(acc, p, s_h, s_w, rows, LIM_H, cols, LIM_W, wt_base, C_w, c_ok, i,
                                KH, KW, DH, DW, FLIP, PIX_MASK, CH_MASK)
    return acc


@triton.jit
def _nhwc_taps_m(acc, p, s_m, s_h, s_w, rows, LIM_H, cols, LIM_W, wt_base, C_w, c_ok, M,
                 KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                 FLIP: tl.constexpr, PIX_MASK: tl.constexpr, CH_MASK: tl.constexpr):
    """_nhwc_taps summed over M source channels per lane (pointer step s_m, weight step 1; m = 0
    peeled: with M == 1 (specialised) the channel offsets stay provably contiguous and aligned, so
    the loads vectorise)."""
    acc = _nhwc_taps(acc, p, s_h, s_w, rows, LIM_H, cols, LIM_W, wt_base, C_w, c_ok, KH, KW, DH,
                     DW, FLIP, PIX_MASK, CH_MASK)
    for mm in range(1, M):
        acc = _nhwc_taps(acc, p + mm * s_m, s_h, s_w, rows, LIM_H, cols, LIM_W, wt_base + mm,
                         C_w, c_ok, KH, KW, DH, DW, FLIP, PIX_MASK, CH_MASK)
    return acc


@triton.jit
def _nhwc_conv_tile(acc, src_base, c_off, s_m, M, s_h, s_w, rows, LIM_H, cols, LIM_W, wt_base,
                    C_w, c_ok, win_in, ch_full, dst_base, d_h, d_w, d_c, orow, OUT_H, ocol, OUT_W,
                    och, b_ptr, KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr,
                    DW: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr):
    """The taps (see _nhwc_taps) of M source channels per lane, bias, store of the tile; three
    paths: window in bounds and all channels valid (no masks), window in bounds (channel masks),
    any (pixel and channel masks)."""
    p = src_base + (rows * s_h + cols * s_w)[:, None] + c_off[None, :]
    dst = dst_base + (orow * d_h + ocol * d_w)[:, None] + (och * d_c)[None, :]
    if win_in:
        if ch_full:
            acc = _nhwc_taps_m(acc, p, s_m, s_h, s_w, rows, LIM_H, cols, LIM_W, wt_base, C_w,
                               c_ok, M, KH, KW, DH, DW, FLIP, False, False)
            if HAS_BIAS:
                acc += tl.load(b_ptr + och).to(acc.dtype)[None, :]
            tl.store(dst, acc.to(dst_base.dtype.element_ty))
        else:
            acc = _nhwc_taps_m(acc, p, s_m, s_h, s_w, rows, LIM_H, cols, LIM_W, wt_base, C_w,
                               c_ok, M, KH, KW, DH, DW, FLIP, False, True)
            if HAS_BIAS:
                acc += tl.load(b_ptr + och, mask=c_ok, other=0.0).to(acc.dtype)[None, :]
            tl.store(dst, acc.to(dst_base.dtype.element_ty), mask=c_ok[None, :])
    else:
        acc = _nhwc_taps_m(acc, p, s_m, s_h, s_w, rows, LIM_H, cols, LIM_W, wt_base, C_w, c_ok,
                           M, KH, KW, DH, DW, FLIP, True, True)
        if HAS_BIAS:
            acc += tl.load(b_ptr + och, mask=c_ok, other=0.0).to(acc.dtype)[None, :]
        pm = (orow < OUT_H) & (ocol < OUT_W)
        tl.store(dst, acc.to(dst_base.dtype.element_ty), mask=pm[:, None] & c_ok[None, :])


@triton.jit
def _dw_fwd_nhwc_kernel(
    x_ptr, wt_ptr, b_ptr, y_ptr,
    C_out, M, H, W, H_out, W_out,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACC_F64: tl.constexpr, INT64: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_C: tl.constexpr, FIXUP: tl.constexpr,
):
    n, oh, ow, oc, c_ok, oh0, ow0, oc0 = _nhwc_tile(tl.program_id(0), C_out, H_out, W_out, TILE_H,
                                                    TILE_W, BLOCK_C, INT64)
    ic = oc // M
    acc = _zeros_2d(TILE_H * TILE_W, BLOCK_C, ACC_F64)
    rows_in, cols_in = _nchw_window_in(oh0, ow0, H, W, TILE_H, TILE_W, SH, SW, (KH - 1) * DH,
                                       (KW - 1) * DW, -pad_t, -pad_l, H_out, W_out)
    todo = True
    if FIXUP:
        todo = _nonfinite_nhwc_tile(y_ptr + n.to(tl.int64) * syn, oh, ow, H_out, W_out, syh, syw,
                                    oc, syc, c_ok)
    if todo:
        _nhwc_conv_tile(acc, x_ptr + n.to(tl.int64) * sxn, ic * sxc, 0, 1, sxh, sxw,
                        oh * SH - pad_t, H, ow * SW - pad_l, W, wt_ptr + oc, C_out, c_ok,
                        rows_in & cols_in, oc0 + BLOCK_C <= C_out, y_ptr + n.to(tl.int64) * syn,
                        syh, syw, syc, oh, H_out, ow, W_out, oc, b_ptr, KH, KW, DH, DW, False,
                        HAS_BIAS)


# ----------------------------------------------------------------------------------------------
# Grad-input, NCHW: grad_input[n, ic, ih, iw] = sum_{m, kh, kw} go[n, ic*M+m, oh, ow] * w[...]
# with oh = (ih + pad_t - kh*DH) / SH when divisible and in range.
# ----------------------------------------------------------------------------------------------
@triton.jit
def _bwd_in_nchw_row(acc, go_row_ptr, oh_ok, iw_p, W_out, sgw, w_row_ptr,
                     KW: tl.constexpr, SW: tl.constexpr, DW: tl.constexpr):
    for kw in tl.static_range(KW):
        ow, ow_ok = _gather_index(iw_p - kw * DW, SW, W_out)
        m = oh_ok[:, None] & ow_ok[None, :]
        gv = tl.load(go_row_ptr + ow[None, :] * sgw, mask=m, other=0.0)
        wv = tl.load(w_row_ptr + kw)
        acc += tl.where(m, gv.to(acc.dtype) * wv.to(acc.dtype), 0.0)  # no 0 * w for missing outputs
    return acc


@triton.jit
def _bwd_in_nchw_kh(acc, go_base, ih_p, iw_p, H_out, W_out, sgh, sgw, w_base, kh,
                    KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr,
                    DW: tl.constexpr):
    oh, oh_ok = _gather_index(ih_p - kh * DH, SH, H_out)
    return _bwd_in_nchw_row(acc, go_base + oh[:, None] * sgh, oh_ok, iw_p, W_out, sgw,
                            w_base + kh * KW, KW, SW, DW)


@triton.jit
def _bwd_in_nchw_taps(acc, go_base, ih_p, iw_p, H_out, W_out, sgh, sgw, w_base,
                      KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                      DH: tl.constexpr, DW: tl.constexpr):
    if KH * KW <= 64:
        for kh in tl.static_range(KH):
            acc = _bwd_in_nchw_kh(acc, go_base, ih_p, iw_p, H_out, W_out, sgh, sgw, w_base, kh,
                                  KW, SH, SW, DH, DW)
    else:
        for kh in range(KH):
            acc = _bwd_in_nchw_kh(acc, go_base, ih_p, iw_p, H_out, W_out, sgh, sgw, w_base, kh,
                                  KW, SH, SW, DH, DW)
    return acc


@triton.jit
def _dw_bwd_in_nchw_kernel(
    go_ptr, w_ptr, gi_ptr,
    C_in, M, H, W, H_out, W_out,
    sgn, sgc, sgh, sgw,
    sin, sic, sih, siw,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    ACC_F64: tl.constexpr, INT64: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, FIXUP: tl.constexpr,
):
    n, ic, ih, iw, ih0, iw0 = _nchw_tile(tl.program_id(0), C_in, H, W, BLOCK_H, BLOCK_W, INT64)
    acc = _zeros_2d(BLOCK_H, BLOCK_W, ACC_F64)
    go_base = go_ptr + n.to(tl.int64) * sgn + (ic * M).to(tl.int64) * sgc
    gi_base = gi_ptr + n.to(tl.int64) * sin + ic.to(tl.int64) * sic
    todo = True
    if FIXUP:
        todo = _nonfinite_nchw_tile(gi_base, ih, iw, H, W, sih, siw)
    if todo:
        if SH == 1 and SW == 1:
            # stride 1: the forward with flipped taps over grad_output rows ih + pad_t - kh * DH
            if INT64:
                ih0 = ih0.to(tl.int64)
                iw0 = iw0.to(tl.int64)
            off_h = pad_t - (KH - 1) * DH
            off_w = pad_l - (KW - 1) * DW
            rows_in, cols_in = _nchw_window_in(ih0, iw0, H_out, W_out, BLOCK_H, BLOCK_W, 1, 1,
                                               (KH - 1) * DH, (KW - 1) * DW, off_h, off_w, H, W)
            _nchw_conv_tile(acc, go_base, sgc, M, sgh, sgw, ih + off_h, H_out, iw + off_w, W_out,
                            w_ptr + ic * M * (KH * KW), rows_in, cols_in, gi_base, sih, siw, ih, H,
                            iw, W, w_ptr, ic, KH, KW, DH, DW, True, False)
        else:
            ih_p = ih + pad_t
            iw_p = iw + pad_l
            for mm in range(M):
                oc = ic * M + mm
                acc = _bwd_in_nchw_taps(acc, go_base + mm * sgc, ih_p, iw_p, H_out, W_out, sgh, sgw,
                                        w_ptr + oc * (KH * KW), KH, KW, SH, SW, DH, DW)
            _store_nchw_tile(gi_base, acc, ih, iw, H, W, sih, siw)


# ----------------------------------------------------------------------------------------------
# Grad-input, channels_last
# ----------------------------------------------------------------------------------------------
@triton.jit
def _bwd_in_nhwc_row(acc, go_base, oh_off, oh_ok, iw_p, W_out, sgw, c_off, c_ok, wt_ptr, oc,
                     C_out, kh, KW: tl.constexpr, SW: tl.constexpr, DW: tl.constexpr):
    for kw in tl.static_range(KW):
        ow, ow_ok = _gather_index(iw_p - kw * DW, SW, W_out)
        pm = oh_ok & ow_ok
        gv = tl.load(go_base + (oh_off + ow * sgw)[:, None] + c_off[None, :],
                     mask=pm[:, None] & c_ok[None, :], other=0.0)
        wv = tl.load(wt_ptr + (kh * KW + kw) * C_out + oc, mask=c_ok, other=0.0)
        acc += tl.where(pm[:, None], gv.to(acc.dtype) * wv.to(acc.dtype)[None, :], 0.0)
    return acc


@triton.jit
def _bwd_in_nhwc_kh(acc, go_base, ih_p, iw_p, H_out, W_out, sgh, sgw, c_off, c_ok, wt_ptr, oc,
                    C_out, kh, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                    DH: tl.constexpr, DW: tl.constexpr):
    oh, oh_ok = _gather_index(ih_p - kh * DH, SH, H_out)
    return _bwd_in_nhwc_row(acc, go_base, oh * sgh, oh_ok, iw_p, W_out, sgw, c_off, c_ok,
                            wt_ptr, oc, C_out, kh, KW, SW, DW)


@triton.jit
def _bwd_in_nhwc_taps(acc, go_base, ih_p, iw_p, H_out, W_out, sgh, sgw, c_off, c_ok, wt_ptr, oc,
                      C_out, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr,
                      SW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr):
    if KH * KW <= 64:
        for kh in tl.static_range(KH):
            acc = _bwd_in_nhwc_kh(acc, go_base, ih_p, iw_p, H_out, W_out, sgh, sgw, c_off, c_ok,
                                  wt_ptr, oc, C_out, kh, KW, SH, SW, DH, DW)
    else:
        for kh in range(KH):
            acc = _bwd_in_nhwc_kh(acc, go_base, ih_p, iw_p, H_out, W_out, sgh, sgw, c_off, c_ok,
                                  wt_ptr, oc, C_out, kh, KW, SH, SW, DH, DW)
    return acc


@triton.jit
def _dw_bwd_in_nhwc_kernel(
    go_ptr, wt_ptr, gi_ptr,
    C_in, M, H, W, H_out, W_out,
    sgn, sgc, sgh, sgw,
    sin, sic, sih, siw,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    ACC_F64: tl.constexpr, INT64: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_C: tl.constexpr, FIXUP: tl.constexpr,
):
    n, ih, iw, ic, c_ok, ih0, iw0, ic0 = _nhwc_tile(tl.program_id(0), C_in, H, W, TILE_H, TILE_W,
                                                    BLOCK_C, INT64)
    C_out = C_in * M
    acc = _zeros_2d(TILE_H * TILE_W, BLOCK_C, ACC_F64)
    go_base = go_ptr + n.to(tl.int64) * sgn
    todo = True
    if FIXUP:
        todo = _nonfinite_nhwc_tile(gi_ptr + n.to(tl.int64) * sin, ih, iw, H, W, sih, siw, ic, sic,
                                    c_ok)
    if todo:
        if SH == 1 and SW == 1:
            # stride 1: the forward with flipped taps over grad_output pixels ih + pad_t - kh * DH
            off_h = pad_t - (KH - 1) * DH
            off_w = pad_l - (KW - 1) * DW
            rows_in, cols_in = _nchw_window_in(ih0, iw0, H_out, W_out, TILE_H, TILE_W, 1, 1,
                                               (KH - 1) * DH, (KW - 1) * DW, off_h, off_w, H, W)
            _nhwc_conv_tile(acc, go_base, (ic * M) * sgc, sgc, M, sgh, sgw, ih + off_h, H_out,
                            iw + off_w, W_out, wt_ptr + ic * M, C_out, c_ok, rows_in & cols_in,
                            ic0 + BLOCK_C <= C_in, gi_ptr + n.to(tl.int64) * sin, sih, siw, sic, ih,
                            H, iw, W, ic, wt_ptr, KH, KW, DH, DW, True, False)
        else:
            ih_p = ih + pad_t
            iw_p = iw + pad_l
            # m = 0 peeled: with M == 1 (specialised) the channel offsets stay provably contiguous
            # and aligned, so the loads vectorise.
            oc = ic * M
            acc = _bwd_in_nhwc_taps(acc, go_base, ih_p, iw_p, H_out, W_out, sgh, sgw, oc * sgc, c_ok,
                                    wt_ptr, oc, C_out, KH, KW, SH, SW, DH, DW)
            for mm in range(1, M):
                oc = ic * M + mm
                acc = _bwd_in_nhwc_taps(acc, go_base, ih_p, iw_p, H_out, W_out, sgh, sgw, oc * sgc,
                                        c_ok, wt_ptr, oc, C_out, KH, KW, SH, SW, DH, DW)
            _store_nhwc_tile(gi_ptr + n.to(tl.int64) * sin, acc, ih, iw, H, W, sih, siw, ic, sic,
                             c_ok)


# ----------------------------------------------------------------------------------------------
# Grad-weight.  Both kernels walk a chunk of output tiles (a fixed range of the tiles of the N
# planes, in (n, tile row, tile col) order; chunk and tile shapes depend only on the shapes)
# and keep one register accumulator per tap (a tuple of tiles shaped like the output tile):
# per tile and tap one load of the input tile (the hoisted pointer tile plus a scalar), one
# multiply-add with the grad_output tile.  The accumulators are reduced (tl.sum) once per
# program.  Kernel rows go KR at a time (KR == KH: one pass; otherwise KH passes over the chunk,
# bounding the registers of large kernels).  Tiles take one of several paths by a scalar test:
# output tile and its input window in bounds (no pixel masks) or not (masks).
# ----------------------------------------------------------------------------------------------
@triton.jit
def _gw_zeros(K: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, ACC_F64: tl.constexpr):
    accs = ()
    for k in tl.static_range(K):
        accs = accs + (_zeros_2d(D0, D1, ACC_F64),)
    return accs


@triton.jit
def _gw_next_tile(n, th, tw, tiles_h, tiles_w):
    """The tile after (n, th, tw) in (image, tile row, tile col) order (no divisions)."""
    tw += 1
    wrap = (tw == tiles_w).to(tl.int32)
    tw -= wrap * tiles_w
    th += wrap
    wrap = (th == tiles_h).to(tl.int32)
    th -= wrap * tiles_h
    n += wrap
    return n, th, tw


@triton.jit
def _gw_nchw_taps(accs, p, g, s_h, s_w, rows, LIM_H, cols, LIM_W, o_ok, i0,
                  KR: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                  ROW_MASK: tl.constexpr, COL_MASK: tl.constexpr):
    """accs[r * KW + j] += x[rows + (i0 + r) * DH, cols + j * DW] * g over a [BH, BW] tile, p =
    the pointer tile of x[rows, cols] (tap (r, j) reads p plus a scalar row offset plus j * DW *
    s_w, an immediate when s_w is 1).  Masks: rows of x in [0, LIM_H) when ROW_MASK, cols in
    [0, LIM_W) when COL_MASK, and o_ok (the tile's valid outputs) with either."""
    new = ()
    for r in tl.static_range(KR):
        p_r = p + ((i0 + r) * DH) * s_h
        if ROW_MASK:
            ri = rows + (i0 + r) * DH
            r_ok = ((ri >= 0) & (ri < LIM_H))[:, None] & o_ok
        for j in tl.static_range(KW):
            if COL_MASK:
                cj = cols + j * DW
                c_ok = ((cj >= 0) & (cj < LIM_W))[None, :]
                if ROW_MASK:
                    m = r_ok & c_ok
                else:
                    m = o_ok & c_ok
                xv = tl.load(p_r + (j * DW) * s_w, mask=m, other=0.0)
                # a padded tap must not meet grad_output (0 * NaN), as in F.conv2d
                new = new + (tl.fma(xv.to(g.dtype), tl.where(m, g, 0.0), accs[r * KW + j]),)
            else:
                xv = tl.load(p_r + (j * DW) * s_w)
                new = new + (tl.fma(xv.to(g.dtype), g, accs[r * KW + j]),)
    return new


# ----------------------------------------------------------------------------------------------
# Grad-weight, NCHW: program (oc, chunk of [BH, BW] output tiles of the N planes of oc).
# Paths: window in bounds (no masks), window rows in bounds (column masks), any (all masks).
# Partials: ws[chunk, oc, tap], bws[chunk, oc].
# ----------------------------------------------------------------------------------------------
@triton.jit
def _gw_tile_origin(th, tw, TH: tl.constexpr, TW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                    pad_t, pad_l, INT64: tl.constexpr):
    """First output (oh0, ow0) of tile (th, tw) and the origin (ih0, iw0) of its input window."""
    oh0 = th * TH
    ow0 = tw * TW
    if INT64:
        oh0 = oh0.to(tl.int64)
        ow0 = ow0.to(tl.int64)
    return oh0, ow0, oh0 * SH - pad_t, ow0 * SW - pad_l


@triton.jit
def _dw_bwd_w_nchw_kernel(
    go_ptr, x_ptr, ws_ptr, bws_ptr, fix_ptr,
    C_out, M, H, W, H_out, W_out,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    pad_t, pad_l, tiles_h, tiles_w, total, per_chunk,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    COMPUTE_BIAS: tl.constexpr, ACC_F64: tl.constexpr, INT64: tl.constexpr,
    BH: tl.constexpr, BW: tl.constexpr, KR: tl.constexpr, FIXUP: tl.constexpr,
):
    pid = tl.program_id(0)
    chunk, oc = _udiv(pid, C_out)
    ic = oc // M
    t0 = chunk * per_chunk
    t1 = tl.minimum(t0 + per_chunk, total)
    if FIXUP:  # only the channels whose tensor-core result is not finite (fix_ptr[oc] != 0)
        t1 = tl.where(tl.load(fix_ptr + oc) != 0, t1, t0)
    n0, rem = _udiv(t0, tiles_h * tiles_w)
    th0, tw0 = _udiv(rem, tiles_w)

    dr = tl.arange(0, BH)
    dc = tl.arange(0, BW)
    if INT64:
        dr = dr.to(tl.int64)
        dc = dc.to(tl.int64)
    # hoisted offset tiles, relative to the tile's first output / first window element
    g_off = dr[:, None] * sgh + dc[None, :] * sgw
    x_off = dr[:, None] * (SH * sxh) + dc[None, :] * (SW * sxw)
    go_c = go_ptr + oc.to(tl.int64) * sgc
    x_c = x_ptr + ic.to(tl.int64) * sxc
    bacc = _zeros_2d(BH, BW, ACC_F64)

    for i0 in range(0, KH, KR):
        accs = _gw_zeros(KR * KW, BH, BW, ACC_F64)
        n = n0
        th = th0
        tw = tw0
        for t in range(t0, t1):
            oh0, ow0, ih0, iw0 = _gw_tile_origin(th, tw, BH, BW, SH, SW, pad_t, pad_l, INT64)
            go_t = go_c + n.to(tl.int64) * sgn + (oh0 * sgh + ow0 * sgw)
            p = x_c + n.to(tl.int64) * sxn + (ih0 * sxh + iw0 * sxw) + x_off
            rows_in, cols_in = _nchw_window_in(oh0, ow0, H, W, BH, BW, SH, SW, (KH - 1) * DH,
                                               (KW - 1) * DW, -pad_t, -pad_l, H_out, W_out)
            if rows_in:
                if cols_in:
                    g = tl.load(go_t + g_off).to(bacc.dtype)
                    accs = _gw_nchw_taps(accs, p, g, sxh, sxw, dr, H, dc, W, None, i0, KR, KW,
                                         DH, DW, False, False)
                else:
                    o_ok = ((ow0 + dc) < W_out)[None, :]
                    g = tl.load(go_t + g_off, mask=o_ok, other=0.0).to(bacc.dtype)
                    accs = _gw_nchw_taps(accs, p, g, sxh, sxw, dr, H, iw0 + dc * SW, W, o_ok,
                                         i0, KR, KW, DH, DW, False, True)
            else:
                o_ok = ((oh0 + dr) < H_out)[:, None] & ((ow0 + dc) < W_out)[None, :]
                g = tl.load(go_t + g_off, mask=o_ok, other=0.0).to(bacc.dtype)
                accs = _gw_nchw_taps(accs, p, g, sxh, sxw, ih0 + dr * SH, H, iw0 + dc * SW, W,
                                     o_ok, i0, KR, KW, DH, DW, True, True)
            if COMPUTE_BIAS:
                if i0 == 0:
                    bacc += g
            n, th, tw = _gw_next_tile(n, th, tw, tiles_h, tiles_w)
        ws_row = ws_ptr + (chunk.to(tl.int64) * C_out + oc) * (KH * KW) + i0 * KW
        for k in tl.static_range(KR * KW):
            tl.store(ws_row + k, tl.sum(accs[k]).to(ws_ptr.dtype.element_ty))
    if COMPUTE_BIAS:
        tl.store(bws_ptr + chunk.to(tl.int64) * C_out + oc,
                 tl.sum(bacc).to(bws_ptr.dtype.element_ty))


# ----------------------------------------------------------------------------------------------
# Grad-weight, channels_last: program (channel block, chunk of TH x TW pixel tiles of the N
# images); accumulators [TH * TW, BLOCK_C] per tap, summed over the pixels at the end.  Paths:
# tile and window in bounds with a full channel block (no masks), tile and window in bounds
# (channel masks, no fill: lanes of invalid channels are never stored), any (all masks).  Partials: ws[chunk, tap, oc], bws[chunk, oc].
# ----------------------------------------------------------------------------------------------
@triton.jit
def _gw_nhwc_taps(accs, p, g, s_h, s_w, rows, LIM_H, cols, LIM_W, o_ok, c_ok, i0,
                  KR: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                  PIX_MASK: tl.constexpr, CH_MASK: tl.constexpr):
    """accs[r * KW + j] += x[pixel + ((i0 + r) * DH, j * DW), c] * g over a [pixels, channels]
    tile, p = the pointer tile of x at the pixels (every tap is p plus a scalar).  With
    PIX_MASK, pixels are masked by o_ok and by the window rows / cols in [0, LIM_H) x
    [0, LIM_W) (rows / cols = the pixels' window origin), and channels by c_ok; otherwise, with
    CH_MASK, only the channels, without fill (lanes of invalid channels are never stored)."""
    new = ()
    for r in tl.static_range(KR):
        p_r = p + ((i0 + r) * DH) * s_h
        if PIX_MASK:
            ri = rows + (i0 + r) * DH
            r_ok = o_ok & (ri >= 0) & (ri < LIM_H)
        for j in tl.static_range(KW):
            if PIX_MASK:
                cj = cols + j * DW
                pm = r_ok & (cj >= 0) & (cj < LIM_W)
                xv = tl.load(p_r + (j * DW) * s_w, mask=pm[:, None] & c_ok[None, :], other=0.0)
                # a padded tap must not meet grad_output (0 * NaN), as in F.conv2d
                new = new + (tl.fma(xv.to(g.dtype), tl.where(pm[:, None], g, 0.0), accs[r * KW + j]),)
            else:
                if CH_MASK:
                    xv = tl.load(p_r + (j * DW) * s_w, mask=c_ok[None, :])
                else:
                    xv = tl.load(p_r + (j * DW) * s_w)
                new = new + (tl.fma(xv.to(g.dtype), g, accs[r * KW + j]),)
    return new


@triton.jit
def _dw_bwd_w_nhwc_kernel(
    go_ptr, x_ptr, ws_ptr, bws_ptr, fix_ptr,
    C_out, M, H, W, H_out, W_out,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    pad_t, pad_l, tiles_h, tiles_w, total, per_chunk,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    COMPUTE_BIAS: tl.constexpr, ACC_F64: tl.constexpr, INT64: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr, BLOCK_C: tl.constexpr, KR: tl.constexpr,
    FIXUP: tl.constexpr,
):
    pid = tl.program_id(0)
    chunk, cb = _udiv(pid, tl.cdiv(C_out, BLOCK_C))
    t0 = chunk * per_chunk
    t1 = tl.minimum(t0 + per_chunk, total)
    n0, rem = _udiv(t0, tiles_h * tiles_w)
    th0, tw0 = _udiv(rem, tiles_w)

    oc = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = oc < C_out
    ch_full = cb * BLOCK_C + BLOCK_C <= C_out
    if FIXUP:  # only the channel blocks holding a channel whose tensor-core result is not finite
        t1 = tl.where(tl.max(tl.load(fix_ptr + oc, mask=c_ok, other=0)) != 0, t1, t0)
    ic = oc // M
    q = tl.arange(0, TH * TW)
    dr = q // TW
    dc = q % TW
    if INT64:
        dr = dr.to(tl.int64)
        dc = dc.to(tl.int64)
    g_off = (dr * sgh + dc * sgw)[:, None] + (oc * sgc)[None, :]
    x_off = (dr * (SH * sxh) + dc * (SW * sxw))[:, None] + (ic * sxc)[None, :]
    bacc = _zeros_2d(TH * TW, BLOCK_C, ACC_F64)

    for i0 in range(0, KH, KR):
        accs = _gw_zeros(KR * KW, TH * TW, BLOCK_C, ACC_F64)
        n = n0
        th = th0
        tw = tw0
        for t in range(t0, t1):
            oh0, ow0, ih0, iw0 = _gw_tile_origin(th, tw, TH, TW, SH, SW, pad_t, pad_l, INT64)
            go_t = go_ptr + n.to(tl.int64) * sgn + (oh0 * sgh + ow0 * sgw)
            p = x_ptr + n.to(tl.int64) * sxn + (ih0 * sxh + iw0 * sxw) + x_off
            rows_in, cols_in = _nchw_window_in(oh0, ow0, H, W, TH, TW, SH, SW, (KH - 1) * DH,
                                               (KW - 1) * DW, -pad_t, -pad_l, H_out, W_out)
            if rows_in & cols_in:
                if ch_full:
                    g = tl.load(go_t + g_off).to(bacc.dtype)
                    accs = _gw_nhwc_taps(accs, p, g, sxh, sxw, dr, H, dc, W, None, None, i0, KR,
                                         KW, DH, DW, False, False)
                else:
                    g = tl.load(go_t + g_off, mask=c_ok[None, :]).to(bacc.dtype)
                    accs = _gw_nhwc_taps(accs, p, g, sxh, sxw, dr, H, dc, W, None, c_ok, i0, KR,
                                         KW, DH, DW, False, True)
            else:
                o_ok = ((oh0 + dr) < H_out) & ((ow0 + dc) < W_out)
                g = tl.load(go_t + g_off, mask=o_ok[:, None] & c_ok[None, :],
                            other=0.0).to(bacc.dtype)
                accs = _gw_nhwc_taps(accs, p, g, sxh, sxw, ih0 + dr * SH, H, iw0 + dc * SW, W,
                                     o_ok, c_ok, i0, KR, KW, DH, DW, True, True)
            if COMPUTE_BIAS:
                if i0 == 0:
                    bacc += g
            n, th, tw = _gw_next_tile(n, th, tw, tiles_h, tiles_w)
        ws_row = ws_ptr + (chunk.to(tl.int64) * (KH * KW) + i0 * KW) * C_out + oc
        for k in tl.static_range(KR * KW):
            tl.store(ws_row + k * C_out, tl.sum(accs[k], axis=0).to(ws_ptr.dtype.element_ty),
                     mask=c_ok)
    if COMPUTE_BIAS:
        tl.store(bws_ptr + chunk.to(tl.int64) * C_out + oc,
                 tl.sum(bacc, axis=0).to(bws_ptr.dtype.element_ty), mask=c_ok)


# ----------------------------------------------------------------------------------------------
# Autotuning: one Autotuner per (kernel, size class); a single config under the interpreter.
# ----------------------------------------------------------------------------------------------
def _cfg(num_warps, num_stages=1, **kw):
    return triton.Config(kw, num_warps=num_warps, num_stages=num_stages)


def _nchw_tile_configs(w_extent):
    if w_extent <= 8:
        c = [(8, 8, 1), (16, 8, 2), (32, 8, 4)]
    elif w_extent <= 16:
        c = [(16, 16, 2), (32, 16, 4), (8, 16, 1)]
    elif w_extent <= 32:
        c = [(16, 32, 4), (8, 32, 2), (32, 32, 4)]
    else:
        c = [(8, 64, 2), (8, 64, 4), (16, 64, 4), (4, 128, 4), (8, 128, 8), (32, 32, 4)]
    return [_cfg(nw, BLOCK_H=bh, BLOCK_W=bw) for bh, bw, nw in c]


def _nhwc_tile_configs(channels):
    if channels <= 8:
        c = [(8, 8, 8, 2), (8, 16, 8, 4), (4, 8, 8, 1)]
    elif channels <= 16:
        c = [(8, 8, 16, 4), (4, 8, 16, 2), (8, 16, 16, 4)]
    elif channels <= 32:
        c = [(4, 8, 32, 4), (8, 8, 32, 4), (2, 8, 32, 2)]
    else:
        c = [(4, 8, 64, 4), (2, 8, 64, 4), (8, 8, 64, 8), (4, 4, 128, 4), (4, 8, 32, 4)]
    return [_cfg(nw, TILE_H=th, TILE_W=tw, BLOCK_C=bc) for th, tw, bc, nw in c]


# Grad-weight: accumulator registers per thread aimed at (taps of a pass x outputs per thread).
_GW_ACC_REGS = 104


def _gw_kr(kh, kw, ept):
    """Kernel rows per pass: all of them when their accumulators fit, else one."""
    return kh if kh * kw * ept <= _GW_ACC_REGS else 1


def _gw_ept_order(kh, kw):
    """Outputs per thread to try, best first: the most whose accumulators fit."""
    taps = kh * kw if kh * kw <= _GW_ACC_REGS else kw
    best = 1
    while best < 8 and 2 * best * taps <= _GW_ACC_REGS:
        best *= 2
    return [best] + [e for e in (best // 2, best * 2) if 1 <= e <= 16]


def _gw_nchw_configs(kh, kw, tile):
    """tile = BH * BW outputs (fixed by the shapes); configs pick the warps (outputs per
    thread) and the kernel rows per pass."""
    out = []
    for ept in _gw_ept_order(kh, kw):
        nw = tile // (32 * ept)
        if 1 <= nw <= 8 and 32 * nw * ept == tile:
            out.append(_cfg(nw, 1, KR=_gw_kr(kh, kw, ept)))
    return out or [_cfg(1, 1, KR=_gw_kr(kh, kw, max(1, tile // 32)))]


def _gw_nhwc_configs(kh, kw, channels, pix):
    """pix = TH * TW pixels per tile (fixed by the shapes); configs pick the channel block, the
    warps and the kernel rows per pass."""
    bcs = {8: [8], 16: [16, 8], 32: [32, 16]}.get(channels, [64, 32, 16])
    out = []
    for ept in _gw_ept_order(kh, kw):
        for bc in bcs:
            nw = pix * bc // (32 * ept)
            if 1 <= nw <= 8 and 32 * nw * ept == pix * bc:
                out.append(_cfg(nw, 1, BLOCK_C=bc, KR=_gw_kr(kh, kw, ept)))
    return out[:4] or [_cfg(1, 1, BLOCK_C=bcs[-1], KR=_gw_kr(kh, kw, max(1, pix * bcs[-1] // 32)))]


_CONV_KEY = ["C_out", "M", "H", "W", "H_out", "W_out", "sxc", "sxh", "sxw", "syc", "syw"]
_BWD_IN_KEY = ["C_in", "M", "H", "W", "H_out", "W_out", "sgc", "sgh", "sgw", "sic", "siw"]
_GW_KEY = ["C_out", "M", "H", "W", "H_out", "W_out", "total", "sgc", "sgw", "sxc",
           "sxw"]

_TUNERS: dict = {}


def _tuner(kernel, key, configs_fn, cls):
    k = (kernel, cls)
    t = _TUNERS.get(k)
    if t is None:
        configs = configs_fn(*cls)
        if _INTERPRET or _NO_AUTOTUNE:
            configs = configs[:1]
        t = triton.autotune(configs=configs, key=key)(kernel)
        _TUNERS[k] = t
    return t


def _launcher(kernel):
    # Under the interpreter (and with fake tensors handled before) launch directly; otherwise
    # wrap_triton so that torch.compile traces the kernel.  (torch < 2.14 wrap_triton rejects
    # interpreted kernels.)
    if _INTERPRET:
        return kernel
    return torch.library.wrap_triton(kernel)


def _size_class(v):
    return 8 if v <= 8 else 16 if v <= 16 else 32 if v <= 32 else 64


def _needs_int64(*tensors):
    for t in tensors:
        if t.numel() > _I32_LIMIT:
            return True
        ext = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()) if s > 0)
        if ext > _I32_LIMIT:
            return True
    return False


def _pow2_bucket(v, lo, hi):
    # next power of two of v clamped to [lo, hi], by comparisons only (SymInt friendly).
    b = lo
    while b < hi and v > b:
        b *= 2
    return b


def _traced_interpreted(op, *args):
    """Under TRITON_INTERPRET=1 the kernels cannot be traced (interpreted kernels are not
    wrap_triton-traceable); when AOT dispatch decomposes the op with FunctionalTensors, keep it
    as an opaque op call instead (eager then runs the interpreter).  Returns None otherwise."""
    if not _INTERPRET:
        return None
    from torch._subclasses.functional_tensor import FunctionalTensor

    if not any(isinstance(a, FunctionalTensor) for a in args):
        return None
    cfg = torch._functorch.config
    if not hasattr(cfg, "decompose_custom_triton_ops"):
        return None
    with cfg.patch(decompose_custom_triton_ops=False):
        return op(*args)


def _is_fake(t):
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor) or t.device.type == "meta"


def _tensor_core_path():
    """The large-kernel tensor-core kernels (imported here: that module imports this one)."""
    from . import depthwise_conv2d_tc
    return depthwise_conv2d_tc


def _alloc_like_format(shape, ref, dtype):
    if suggest_memory_format(ref) == torch.channels_last:
        return torch.empty(shape, dtype=dtype, device=ref.device,
                           memory_format=torch.channels_last), True
    return torch.empty(shape, dtype=dtype, device=ref.device), False


def _acc_weights(weight, C_out, KK, taps_major):
    """The weights as a contiguous (C_out, KK) matrix, or (KK, C_out) when taps_major, in the
    accumulation dtype (float32, float64 for float64): the bf16 / fp16 -> float32 conversion is
    exact and done once here instead of by every program."""
    w = weight.reshape(C_out, KK)
    if taps_major:
        w = w.t()
    dt = torch.float64 if weight.dtype == torch.float64 else torch.float32
    return torch.empty(w.shape, dtype=dt, device=weight.device).copy_(w)


def _out_size(size, lo, hi, d, k, s):
    return (size + lo + hi - d * (k - 1) - 1) // s + 1


# ----------------------------------------------------------------------------------------------
# Ops
# ----------------------------------------------------------------------------------------------
@torch.library.triton_op(
    "convext::triton_depthwise_conv2d",
    mutates_args=(),
    schema="(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
    "int[2] dilation) -> Tensor",
)
def _triton_depthwise_conv2d(input: torch.Tensor, weight: torch.Tensor,
                             bias: Optional[torch.Tensor], stride: List[int],
                             padding: List[int], dilation: List[int]) -> torch.Tensor:
    r = _traced_interpreted(torch.ops.convext.triton_depthwise_conv2d, input, weight, bias,
                            stride, padding, dilation)
    if r is not None:
        return r
    N, C_in, H, W = input.shape
    C_out, _, KH, KW = weight.shape
    M = C_out // C_in if C_in > 0 else 1
    SH, SW = stride
    pt, pb, pl, pr = padding
    DH, DW = dilation
    H_out = max(_out_size(H, pt, pb, DH, KH, SH), 0)
    W_out = max(_out_size(W, pl, pr, DW, KW, SW), 0)
    y, cl = _alloc_like_format((N, C_out, H_out, W_out), input, input.dtype)
    if y.numel() == 0 or _is_fake(y):
        return y
    fixup = False
    tc = _tensor_core_path()
    if tc.applies(input.dtype, (KH, KW), stride, dilation, input, y):
        y = tc.forward(input, weight, bias, stride, padding, dilation, y)
        fixup = True  # then the direct kernel recomputes the tiles the band GEMMs left non-finite
        cl = suggest_memory_format(y) == torch.channels_last
    has_bias = bias is not None
    int64 = _needs_int64(input, y)
    acc64 = input.dtype == torch.float64
    if cl:
        wt = _acc_weights(weight, C_out, KH * KW, True)
        b = bias.contiguous() if has_bias else wt
        kern = _tuner(_dw_fwd_nhwc_kernel, _CONV_KEY, _nhwc_tile_configs, (_size_class(C_out),))

        def grid(meta):
            return (triton.cdiv(C_out, meta["BLOCK_C"]) * N
                    * triton.cdiv(H_out, meta["TILE_H"]) * triton.cdiv(W_out, meta["TILE_W"]),)
        w_arg = wt
    else:
        w_arg = _acc_weights(weight, C_out, KH * KW, False)
        b = bias.contiguous() if has_bias else w_arg
        kern = _tuner(_dw_fwd_nchw_kernel, _CONV_KEY, _nchw_tile_configs, (_size_class(W_out),))

        def grid(meta):
            return (N * C_out * triton.cdiv(H_out, meta["BLOCK_H"])
                    * triton.cdiv(W_out, meta["BLOCK_W"]),)
    _launcher(kern)[grid](
        input, w_arg, b, y,
        C_out, M, H, W, H_out, W_out,
        *input.stride(), *y.stride(),
        pt, pl,
        KH=KH, KW=KW, SH=SH, SW=SW, DH=DH, DW=DW,
        HAS_BIAS=has_bias, ACC_F64=acc64, INT64=int64, FIXUP=fixup,
    )
    return y


@torch.library.triton_op(
    "convext::triton_depthwise_conv2d_backward_input",
    mutates_args=(),
    schema="(Tensor grad_output, Tensor weight, int[4] input_size, int[2] stride, "
    "int[4] padding, int[2] dilation) -> Tensor",
)
def _triton_depthwise_conv2d_backward_input(grad_output: torch.Tensor, weight: torch.Tensor,
                                            input_size: List[int], stride: List[int],
                                            padding: List[int], dilation: List[int]
                                            ) -> torch.Tensor:
    r = _traced_interpreted(torch.ops.convext.triton_depthwise_conv2d_backward_input,
                            grad_output, weight, input_size, stride, padding, dilation)
    if r is not None:
        return r
    N, C_in, H, W = input_size
    C_out, _, KH, KW = weight.shape
    M = C_out // C_in if C_in > 0 else 1
    SH, SW = stride
    pt, pb, pl, pr = padding
    DH, DW = dilation
    H_out, W_out = grad_output.shape[2], grad_output.shape[3]
    gi, cl = _alloc_like_format((N, C_in, H, W), grad_output, grad_output.dtype)
    if gi.numel() == 0 or _is_fake(gi):
        return gi
    if grad_output.numel() == 0:
        return gi.zero_()
    fixup = False
    tc = _tensor_core_path()
    if tc.applies(grad_output.dtype, (KH, KW), stride, dilation, grad_output, gi):
        gi = tc.backward_input(grad_output, weight, stride, padding, dilation, gi)
        fixup = True  # then the direct kernel recomputes the tiles the band GEMMs left non-finite
        cl = suggest_memory_format(gi) == torch.channels_last
    int64 = _needs_int64(grad_output, gi)
    acc64 = grad_output.dtype == torch.float64
    if cl:
        w_arg = _acc_weights(weight, C_out, KH * KW, True)
        kern = _tuner(_dw_bwd_in_nhwc_kernel, _BWD_IN_KEY, _nhwc_tile_configs,
                      (_size_class(C_in),))

        def grid(meta):
            return (triton.cdiv(C_in, meta["BLOCK_C"]) * N
                    * triton.cdiv(H, meta["TILE_H"]) * triton.cdiv(W, meta["TILE_W"]),)
    else:
        w_arg = _acc_weights(weight, C_out, KH * KW, False)
        kern = _tuner(_dw_bwd_in_nchw_kernel, _BWD_IN_KEY, _nchw_tile_configs, (_size_class(W),))

        def grid(meta):
            return (N * C_in * triton.cdiv(H, meta["BLOCK_H"]) * triton.cdiv(W, meta["BLOCK_W"]),)
    _launcher(kern)[grid](
        grad_output, w_arg, gi,
        C_in, M, H, W, H_out, W_out,
        *grad_output.stride(), *gi.stride(),
        pt, pl,
        KH=KH, KW=KW, SH=SH, SW=SW, DH=DH, DW=DW,
        ACC_F64=acc64, INT64=int64, FIXUP=fixup,
    )
    return gi


@torch.library.triton_op(
    "convext::triton_depthwise_conv2d_backward_weight",
    mutates_args=(),
    schema="(Tensor grad_output, Tensor input, int[2] kernel_size, int[2] stride, "
    "int[4] padding, int[2] dilation, bool compute_bias) -> (Tensor, Tensor)",
)
def _triton_depthwise_conv2d_backward_weight(grad_output: torch.Tensor, input: torch.Tensor,
                                             kernel_size: List[int], stride: List[int],
                                             padding: List[int], dilation: List[int],
                                             compute_bias: bool
                                             ) -> Tuple[torch.Tensor, torch.Tensor]:
    r = _traced_interpreted(torch.ops.convext.triton_depthwise_conv2d_backward_weight,
                            grad_output, input, kernel_size, stride, padding, dilation,
                            compute_bias)
    if r is not None:
        return r
    N, C_in, H, W = input.shape
    C_out, H_out, W_out = grad_output.shape[1], grad_output.shape[2], grad_output.shape[3]
    KH, KW = kernel_size
    M = C_out // C_in if C_in > 0 else 1
    SH, SW = stride
    pt, pb, pl, pr = padding
    DH, DW = dilation
    dtype, dev = input.dtype, input.device
    KK = KH * KW
    if grad_output.numel() == 0 or _is_fake(grad_output) or _is_fake(input):
        gw = torch.zeros((C_out, 1, KH, KW), dtype=dtype, device=dev)
        gb = (torch.zeros((C_out,), dtype=dtype, device=dev) if compute_bias
              else torch.empty((0,), dtype=dtype, device=dev))
        return gw, gb
    fix = None
    tc = _tensor_core_path()
    if tc.applies(dtype, (KH, KW), stride, dilation, grad_output, input):
        gw_tc, gb_tc = tc.backward_weight(grad_output, input, kernel_size, stride, padding,
                                          dilation, compute_bias)
        # The band GEMMs multiply padding and zero-extended columns (0 * NaN): the channels whose
        # result is not finite are recomputed by the direct kernel (no host sync: a device mask).
        fix = (~torch.isfinite(gw_tc.view(C_out, KK))).any(1).to(torch.int32)
    acc64 = dtype == torch.float64
    ws_dtype = torch.float64 if acc64 else torch.float32
    int64 = _needs_int64(grad_output, input)
    cl = suggest_memory_format(input) == torch.channels_last
    # Tiles and chunks (ranges of tiles, in (image, tile row, tile col) order) depend only on
    # the shapes, never on the autotune config.
    if cl:
        tw_ = _pow2_bucket(W_out, 1, 4)
        th_ = 16 // tw_
        tiles_h, tiles_w = triton.cdiv(H_out, th_), triton.cdiv(W_out, tw_)
        total = N * tiles_h * tiles_w
        target_chunks = max(1, triton.cdiv(_GW_TARGET_PROGRAMS, triton.cdiv(C_out, 32)))
        per_chunk = max(triton.cdiv(total, target_chunks), 4)
        n_chunks = triton.cdiv(total, per_chunk)
        ws = torch.empty((n_chunks, KK, C_out), dtype=ws_dtype, device=dev)
        kern = _tuner(_dw_bwd_w_nhwc_kernel, _GW_KEY, _gw_nhwc_configs,
                      (KH, KW, _size_class(C_out), th_ * tw_))
        tile = dict(TH=th_, TW=tw_)

        def grid(meta):
            return (triton.cdiv(C_out, meta["BLOCK_C"]) * n_chunks,)
    else:
        bw = _pow2_bucket(W_out, 8, 64)
        bh = _pow2_bucket(H_out, 1, 512 // bw)
        tiles_h, tiles_w = triton.cdiv(H_out, bh), triton.cdiv(W_out, bw)
        total = N * tiles_h * tiles_w
        target_chunks = max(1, triton.cdiv(_GW_TARGET_PROGRAMS, C_out))
        per_chunk = max(triton.cdiv(total, target_chunks), triton.cdiv(4096, bh * bw))
        n_chunks = triton.cdiv(total, per_chunk)
        ws = torch.empty((n_chunks, C_out, KK), dtype=ws_dtype, device=dev)
        kern = _tuner(_dw_bwd_w_nchw_kernel, _GW_KEY, _gw_nchw_configs, (KH, KW, bh * bw))
        tile = dict(BH=bh, BW=bw)

        def grid(meta):
            return (C_out * n_chunks,)
    bws = torch.empty((n_chunks, C_out) if compute_bias else (1,), dtype=ws_dtype, device=dev)
    if fix is not None:
        ws.zero_()
    _launcher(kern)[grid](
        grad_output, input, ws, bws, fix if fix is not None else ws,
        C_out, M, H, W, H_out, W_out,
        *grad_output.stride(), *input.stride(),
        pt, pl, tiles_h, tiles_w, total, per_chunk,
        KH=KH, KW=KW, SH=SH, SW=SW, DH=DH, DW=DW,
        COMPUTE_BIAS=compute_bias and fix is None, ACC_F64=acc64, INT64=int64, FIXUP=fix is not None,
        **tile,
    )
    # Fixed-order reduction of the per-chunk partials (deterministic).
    if cl:
        gw = ws.sum(0).t()
    else:
        gw = ws.sum(0)
    gw = gw.to(dtype).reshape(C_out, 1, KH, KW).contiguous()
    if fix is not None:
        return torch.where(fix.view(C_out, 1, 1, 1) != 0, gw, gw_tc), gb_tc
    if compute_bias:
        gb = bws.sum(0).to(dtype)
    else:
        gb = torch.empty((0,), dtype=dtype, device=dev)
    return gw, gb


# ----------------------------------------------------------------------------------------------
# Plain functions (used by the separable conv); same arguments as the ops.
# ----------------------------------------------------------------------------------------------
def depthwise_conv2d(input, weight, bias, stride, padding, dilation):
    return torch.ops.convext.triton_depthwise_conv2d(
        input, weight, bias, list(stride), list(padding), list(dilation))


def depthwise_conv2d_backward_input(grad_output, weight, input_size, stride, padding, dilation):
    return torch.ops.convext.triton_depthwise_conv2d_backward_input(
        grad_output, weight, list(input_size), list(stride), list(padding), list(dilation))


def depthwise_conv2d_backward_weight(grad_output, input, kernel_size, stride, padding, dilation,
                                     compute_bias):
    return torch.ops.convext.triton_depthwise_conv2d_backward_weight(
        grad_output, input, list(kernel_size), list(stride), list(padding), list(dilation),
        bool(compute_bias))
