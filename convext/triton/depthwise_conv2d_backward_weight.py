"""Triton depthwise conv2d grad-weight: ``convext::triton_depthwise_conv2d_backward_weight`` (see
depthwise_conv2d.py for the family).

    convext::triton_depthwise_conv2d_backward_weight(grad_output, input, kernel_size[2], stride,
                                                     padding, dilation, compute_bias)

Programs over (channel (block), chunk of output tiles) keep one register accumulator per tap
shaped like the tile (interior / border tile paths as in the forward), write per-chunk partials
into a float32 (float64 for float64 inputs) workspace, reduced afterwards in a fixed order (no
atomics: deterministic; tiles and chunks depend only on the shapes, never on the config).
"""
from typing import List, Tuple

import torch
import triton
import triton.language as tl

from . import _common
from . import depthwise_conv2d_tc as _tc
from ._common import (_cfg, _int64x4, _is_channels_last, _is_fake, _needs_int64, _pow2_bucket, _size_class,
                      _traced_interpreted, _udiv, _zeros_2d)
from .depthwise_conv2d_forward import _nchw_window_in

__all__ = ["_triton_depthwise_conv2d_backward_weight"]

# Number of programs aimed at (independent of the device, so that the chunking, hence the
# rounding of the result, depends only on the shapes).
_GW_TARGET_PROGRAMS = 1024


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
    if INT64:  # offsets inside one image past 2**31: every stride, so every offset, in int64
        sgn, sgc, sgh, sgw = _int64x4(sgn, sgc, sgh, sgw)
        sxn, sxc, sxh, sxw = _int64x4(sxn, sxc, sxh, sxw)
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
    if INT64:  # offsets inside one image past 2**31: every stride, so every offset, in int64
        sgn, sgc, sgh, sgw = _int64x4(sgn, sgc, sgh, sgw)
        sxn, sxc, sxh, sxw = _int64x4(sxn, sxc, sxh, sxw)
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
# Autotuning
# ----------------------------------------------------------------------------------------------
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



_GW_KEY = ["C_out", "M", "H", "W", "H_out", "W_out", "total", "sgc", "sgw", "sxc",
           "sxw"]


# ----------------------------------------------------------------------------------------------
# Op
# ----------------------------------------------------------------------------------------------
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
    if _tc.applies(dtype, (KH, KW), stride, dilation, grad_output, input):
        gw_tc, gb_tc = _tc.backward_weight(grad_output, input, kernel_size, stride, padding,
                                          dilation, compute_bias)
        # The band GEMMs multiply padding and zero-extended columns (0 * NaN): the channels whose
        # result is not finite are recomputed by the direct kernel (no host sync: a device mask).
        fix = (~torch.isfinite(gw_tc.view(C_out, KK))).any(1).to(torch.int32)
    acc64 = dtype == torch.float64
    ws_dtype = torch.float64 if acc64 else torch.float32
    int64 = _needs_int64(grad_output, input)
    cl = _is_channels_last(input)
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
        kern = _common._tuner(_dw_bwd_w_nhwc_kernel, _GW_KEY, _gw_nhwc_configs,
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
        kern = _common._tuner(_dw_bwd_w_nchw_kernel, _GW_KEY, _gw_nchw_configs, (KH, KW, bh * bw))
        tile = dict(BH=bh, BW=bw)

        def grid(meta):
            return (C_out * n_chunks,)
    bws = torch.empty((n_chunks, C_out) if compute_bias else (1,), dtype=ws_dtype, device=dev)
    if fix is not None:
        ws.zero_()
    _common._launcher(kern)[grid](
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

