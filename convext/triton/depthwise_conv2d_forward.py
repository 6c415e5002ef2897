"""Triton depthwise conv2d forward: ``convext::triton_depthwise_conv2d`` (see depthwise_conv2d.py
for the family), and the tap machinery the stride-1 grad-input reuses with flipped taps.

    convext::triton_depthwise_conv2d(input, weight, bias?, stride[2], padding[4], dilation[2])

* NCHW (_dw_fwd_nchw_kernel): one program per (n * c, tile of rows, tile of cols), a
  [BLOCK_H, BLOCK_W] register tile, taps unrolled, padding by masked loads.
* channels_last (_dw_fwd_nhwc_kernel): one program per (n, pixel tile, channel block), a
  [TILE_H * TILE_W, BLOCK_C] tile with the channels contiguous; weights taps-major (kH*kW, C_out).

Every tile takes one of three paths by a runtime test (_nchw_window_in): outputs and source window
in bounds (no masks), rows in bounds (NCHW: column masks; channels_last: channel masks), any (all
masks).  Large kernels (fp16 / bf16, kH*kW >= 81) go to the tensor-core path first
(depthwise_conv2d_tc.py), after which this kernel recomputes only the non-finite tiles (FIXUP).
"""
from typing import List, Optional

import torch
import triton
import triton.language as tl

from . import _common
from . import depthwise_conv2d_tc as _tc
from ._common import (_acc_weights, _alloc_like, _cfg, _int64x4, _is_channels_last, _is_fake,
                      _needs_int64, _out_size, _size_class, _traced_interpreted, _udiv, _zeros_2d)

__all__ = ["_triton_depthwise_conv2d"]


# ----------------------------------------------------------------------------------------------
# Tiles (shared with grad-input)
# ----------------------------------------------------------------------------------------------
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
    if INT64:  # offsets inside one image past 2**31: every stride, so every offset, in int64
        sxn, sxc, sxh, sxw = _int64x4(sxn, sxc, sxh, sxw)
        syn, syc, syh, syw = _int64x4(syn, syc, syh, syw)
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
    if INT64:  # offsets inside one image past 2**31: every stride, so every offset, in int64
        sxn, sxc, sxh, sxw = _int64x4(sxn, sxc, sxh, sxw)
        syn, syc, syh, syw = _int64x4(syn, syc, syh, syw)
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
# Autotuning (tile configs shared with grad-input)
# ----------------------------------------------------------------------------------------------
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



_CONV_KEY = ["C_out", "M", "H", "W", "H_out", "W_out", "sxc", "sxh", "sxw", "syc", "syw"]


# ----------------------------------------------------------------------------------------------
# Op
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
    cl = _is_channels_last(input)
    y = _alloc_like((N, C_out, H_out, W_out), input)
    if y.numel() == 0 or _is_fake(y):
        return y
    fixup = False
    if _tc.applies(input.dtype, (KH, KW), stride, dilation, input, y):
        y = _tc.forward(input, weight, bias, stride, padding, dilation, y)
        fixup = True  # then the direct kernel recomputes the tiles the band GEMMs left non-finite
        cl = _is_channels_last(y)
    has_bias = bias is not None
    int64 = _needs_int64(input, y)
    acc64 = input.dtype == torch.float64
    if cl:
        wt = _acc_weights(weight, C_out, KH * KW, True)
        b = bias.contiguous() if has_bias else wt
        kern = _common._tuner(_dw_fwd_nhwc_kernel, _CONV_KEY, _nhwc_tile_configs, (_size_class(C_out),))

        def grid(meta):
            return (triton.cdiv(C_out, meta["BLOCK_C"]) * N
                    * triton.cdiv(H_out, meta["TILE_H"]) * triton.cdiv(W_out, meta["TILE_W"]),)
        w_arg = wt
    else:
        w_arg = _acc_weights(weight, C_out, KH * KW, False)
        b = bias.contiguous() if has_bias else w_arg
        kern = _common._tuner(_dw_fwd_nchw_kernel, _CONV_KEY, _nchw_tile_configs, (_size_class(W_out),))

        def grid(meta):
            return (N * C_out * triton.cdiv(H_out, meta["BLOCK_H"])
                    * triton.cdiv(W_out, meta["BLOCK_W"]),)
    _common._launcher(kern)[grid](
        input, w_arg, b, y,
        C_out, M, H, W, H_out, W_out,
        *input.stride(), *y.stride(),
        pt, pl,
        KH=KH, KW=KW, SH=SH, SW=SW, DH=DH, DW=DW,
        HAS_BIAS=has_bias, ACC_F64=acc64, INT64=int64, FIXUP=fixup,
    )
    return y

