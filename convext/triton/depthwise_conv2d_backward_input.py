"""Triton depthwise conv2d grad-input: ``convext::triton_depthwise_conv2d_backward_input`` (see
depthwise_conv2d.py for the family).

    convext::triton_depthwise_conv2d_backward_input(grad_output, weight, input_size[4], stride,
                                                    padding, dilation)

grad_input[n, ic, ih, iw] = sum_{m, kh, kw} go[n, ic*M+m, oh, ow] * w[ic*M+m, kh, kw] with
oh = (ih + pad_t - kh*DH) / SH when divisible and in range.  Stride 1: the forward's tile
machinery (depthwise_conv2d_forward.py) with flipped taps over grad_output, same three paths.
Stride > 1: a gather with divisibility masks (_gather_index).  Same two layouts and tile configs
as the forward.
"""
from typing import List

import torch
import triton
import triton.language as tl

from . import _common
from . import depthwise_conv2d_tc as _tc
from ._common import (_acc_weights, _alloc_like, _int64x4, _is_channels_last, _is_fake, _needs_int64,
                      _size_class, _traced_interpreted, _zeros_2d)
from .depthwise_conv2d_forward import (_nchw_conv_tile, _nchw_tile, _nchw_tile_configs,
                                       _nchw_window_in, _nhwc_conv_tile, _nhwc_tile,
                                       _nhwc_tile_configs, _nonfinite_nchw_tile,
                                       _nonfinite_nhwc_tile)

__all__ = ["_triton_depthwise_conv2d_backward_input"]


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
    if INT64:  # offsets inside one image past 2**31: every stride, so every offset, in int64
        sgn, sgc, sgh, sgw = _int64x4(sgn, sgc, sgh, sgw)
        sin, sic, sih, siw = _int64x4(sin, sic, sih, siw)
    n, ic, ih, iw, ih0, iw0 = _nchw_tile(tl.program_id(0), C_in, H, W, BLOCK_H, BLOCK_W, INT64)
    if INT64:  # here, not in the stride-1 branch: a branch may not change a variable's type
        ih0 = ih0.to(tl.int64)
        iw0 = iw0.to(tl.int64)
    acc = _zeros_2d(BLOCK_H, BLOCK_W, ACC_F64)
    go_base = go_ptr + n.to(tl.int64) * sgn + (ic * M).to(tl.int64) * sgc
    gi_base = gi_ptr + n.to(tl.int64) * sin + ic.to(tl.int64) * sic
    todo = True
    if FIXUP:
        todo = _nonfinite_nchw_tile(gi_base, ih, iw, H, W, sih, siw)
    if todo:
        if SH == 1 and SW == 1:
            # stride 1: the forward with flipped taps over grad_output rows ih + pad_t - kh * DH
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
    if INT64:  # offsets inside one image past 2**31: every stride, so every offset, in int64
        sgn, sgc, sgh, sgw = _int64x4(sgn, sgc, sgh, sgw)
        sin, sic, sih, siw = _int64x4(sin, sic, sih, siw)
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
# Op
# ----------------------------------------------------------------------------------------------
_BWD_IN_KEY = ["C_in", "M", "H", "W", "H_out", "W_out", "sgc", "sgh", "sgw", "sic", "siw"]


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
    cl = _is_channels_last(grad_output)
    gi = _alloc_like((N, C_in, H, W), grad_output)
    if gi.numel() == 0 or _is_fake(gi):
        return gi
    if grad_output.numel() == 0:
        return gi.zero_()
    fixup = False
    if _tc.applies(grad_output.dtype, (KH, KW), stride, dilation, grad_output, gi):
        gi = _tc.backward_input(grad_output, weight, stride, padding, dilation, gi)
        fixup = True  # then the direct kernel recomputes the tiles the band GEMMs left non-finite
        cl = _is_channels_last(gi)
    int64 = _needs_int64(grad_output, gi)
    acc64 = grad_output.dtype == torch.float64
    if cl:
        w_arg = _acc_weights(weight, C_out, KH * KW, True)
        kern = _common._tuner(_dw_bwd_in_nhwc_kernel, _BWD_IN_KEY, _nhwc_tile_configs,
                      (_size_class(C_in),))

        def grid(meta):
            return (triton.cdiv(C_in, meta["BLOCK_C"]) * N
                    * triton.cdiv(H, meta["TILE_H"]) * triton.cdiv(W, meta["TILE_W"]),)
    else:
        w_arg = _acc_weights(weight, C_out, KH * KW, False)
        kern = _common._tuner(_dw_bwd_in_nchw_kernel, _BWD_IN_KEY, _nchw_tile_configs, (_size_class(W),))

        def grid(meta):
            return (N * C_in * triton.cdiv(H, meta["BLOCK_H"]) * triton.cdiv(W, meta["BLOCK_W"]),)
    _common._launcher(kern)[grid](
        grad_output, w_arg, gi,
        C_in, M, H, W, H_out, W_out,
        *grad_output.stride(), *gi.stride(),
        pt, pl,
        KH=KH, KW=KW, SH=SH, SW=SW, DH=DH, DW=DW,
        ACC_F64=acc64, INT64=int64, FIXUP=fixup,
    )
    return gi

