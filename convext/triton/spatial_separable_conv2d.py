"""Triton spatial separable conv2d: (kH x 1) depthwise conv then (1 x kW) depthwise conv, fused.

Ops (same signatures as the C++ ops in csrc/ops.cpp, prefixed ``triton_``):
  convext::triton_spatial_separable_conv2d
  convext::triton_spatial_separable_conv2d_backward

    z[i, j] = bv + sum_a wv[a] x[i*SH - pt + a*DH, j]           j in [0, W)
    y[i, q] = bh + sum_b wh[b] z[i, q*SW - pl + b*DW]

Every kernel works on a [BLOCK_P, BLOCK_C] tile of (pixels of one image, channels), reading every
tensor through its strides: NCHW-like layouts take BLOCK_C = 1 and a long run of pixels (coalesced
along W), channels_last takes a channel block (coalesced along C). The intermediate is never
stored: the forward recomputes z at each horizontal tap from the input (kH x kW loads per output,
served by the cache), the backward recomputes it per tile.

  forward:      y tile  = bh + sum_b [col ok] wh[b] * (bv + sum_a [row ok] wv[a] x)
  grad_input:   gx tile = sum_m sum_a [row ok] wv[a] * gz(i_a, j),
                gz(i, j) = sum_b [col ok] wh[b] go[i, q_b(j)]        (q_b: the output reading j)
  grad_weights: one pass over tiles of intermediate positions (i, j), per channel block and chunk
                of tiles: gz as above, z from the input, then
                gwv[a] += sum gz * x_a, gwh[b] += sum z * go_b, gbv += sum gz  (per-tap register
                accumulators, per-chunk partials in a float32 / float64 workspace reduced in a fixed
                order: deterministic); gbh = sum of grad_output.
Taps that land in the zero padding are masked out of the *product* (tl.where), not only out of the
load, so a NaN or inf weight meets only real input elements (F.conv2d's pattern).
Accumulation and the intermediate are float32 (float64 for float64 inputs).
"""
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from . import _common
from ._common import (_INTERPRET, _acc_dtype, _acc_weights, _alloc_like, _any_fake,
                      _is_channels_last, _opaque_when_interpreted, _out_size, _zeros_1d, _zeros_2d)

__all__ = ["_triton_spatial_separable_conv2d", "_triton_spatial_separable_conv2d_backward"]

_GW_TARGET_PROGRAMS = 512


@triton.jit
def _tile(pid, C, HW_t, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Program id (channel block fastest, then pixel block, then image) -> (n, flat pixels, pixel
    mask, channels, channel mask)."""
    n_cb = tl.cdiv(C, BLOCK_C)
    n_pb = tl.cdiv(HW_t, BLOCK_P)
    cb = pid % n_cb
    r = pid // n_cb
    pb = r % n_pb
    n = r // n_pb
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    ch = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    return n.to(tl.int64), p, p < HW_t, ch, ch < C


@triton.jit
def _zrow(x_c, row0, col, c_ok, ok, sxh, sxw, H, wv_ptr, bv_ptr, oc, C_out, z0,
          KH: tl.constexpr, DH: tl.constexpr, HAS_BV: tl.constexpr):
    """z at intermediate rows `row0 // ...` (first input row row0 = i*SH - pt) and columns `col`
    ([BLOCK_P] each, col already valid where `ok`): bv + sum over real rows of wv[a] * x."""
    z = z0
    if HAS_BV:
        z += tl.load(bv_ptr + oc, mask=c_ok, other=0.0).to(z.dtype)[None, :]
    for a in range(KH):
        r = row0 + a * DH
        m = (ok & (r >= 0) & (r < H))[:, None] & c_ok[None, :]
        xv = tl.load(x_c + (r.to(tl.int64) * sxh + col.to(tl.int64) * sxw)[:, None], mask=m, other=0.0)
        wv = tl.load(wv_ptr + a * C_out + oc, mask=c_ok, other=0.0)
        z += tl.where(m, xv.to(z.dtype) * wv.to(z.dtype)[None, :], 0.0)
    return z


@triton.jit
def _ss_fwd_kernel(
    x_ptr, wv_ptr, bv_ptr, wh_ptr, bh_ptr, y_ptr,
    C_out, M, H, W, H_out, W_out,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    HAS_BV: tl.constexpr, HAS_BH: tl.constexpr, ACC_F64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    n, p, p_ok, oc, c_ok = _tile(tl.program_id(0), C_out, H_out * W_out, BLOCK_P, BLOCK_C)
    oh = p // W_out
    ow = p % W_out
    x_c = x_ptr + n * sxn + ((oc // M).to(tl.int64) * sxc)[None, :]
    zero = _zeros_2d(BLOCK_P, BLOCK_C, ACC_F64)
    acc = zero
    if HAS_BH:
        acc += tl.load(bh_ptr + oc, mask=c_ok, other=0.0).to(acc.dtype)[None, :]
    row0 = oh * SH - pad_t
    for b in range(KW):
        col = ow * SW - pad_l + b * DW
        col_ok = p_ok & (col >= 0) & (col < W)
        z = _zrow(x_c, row0, col, c_ok, col_ok, sxh, sxw, H, wv_ptr, bv_ptr, oc, C_out, zero, KH, DH, HAS_BV)
        wh = tl.load(wh_ptr + b * C_out + oc, mask=c_ok, other=0.0)
        acc += tl.where(col_ok[:, None], z * wh.to(acc.dtype)[None, :], 0.0)
    m = p_ok[:, None] & c_ok[None, :]
    dst = y_ptr + n * syn + (oh.to(tl.int64) * syh + ow.to(tl.int64) * syw)[:, None] \
        + (oc.to(tl.int64) * syc)[None, :]
    tl.store(dst, acc.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _gz(go_c, i, i_ok, j, c_ok, sgh, sgw, W_out, wh_ptr, oc, C_out, zero,
        KW: tl.constexpr, SW: tl.constexpr, DW: tl.constexpr, pad_l):
    """gz at intermediate rows i and columns j ([BLOCK_P] each, masked by i_ok):
    sum over the outputs q (q*SW - pl + b*DW == j) of wh[b] * go[i, q]."""
    gz = zero
    for b in range(KW):
        u = j + pad_l - b * DW
        q = u // SW
        ok = i_ok & (u >= 0) & (q * SW == u) & (q < W_out)
        m = ok[:, None] & c_ok[None, :]
        g = tl.load(go_c + (i.to(tl.int64) * sgh + q.to(tl.int64) * sgw)[:, None], mask=m, other=0.0)
        wh = tl.load(wh_ptr + b * C_out + oc, mask=c_ok, other=0.0)
        gz += tl.where(m, g.to(gz.dtype) * wh.to(gz.dtype)[None, :], 0.0)
    return gz


@triton.jit
def _ss_bwd_in_kernel(
    go_ptr, wv_ptr, wh_ptr, gi_ptr,
    C_in, M, H, W, H_out, W_out,
    sgn, sgc, sgh, sgw,
    sin, sic, sih, siw,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, ACC_F64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    n, p, p_ok, ic, c_ok = _tile(tl.program_id(0), C_in, H * W, BLOCK_P, BLOCK_C)
    r = p // W
    j = p % W
    C_out = C_in * M
    zero = _zeros_2d(BLOCK_P, BLOCK_C, ACC_F64)
    acc = zero
    for mm in range(M):
        oc = ic * M + mm
        go_c = go_ptr + n * sgn + (oc.to(tl.int64) * sgc)[None, :]
        for a in range(KH):
            t = r + pad_t - a * DH
            i = t // SH
            i_ok = p_ok & (t >= 0) & (i * SH == t) & (i < H_out)
            gz = _gz(go_c, i, i_ok, j, c_ok, sgh, sgw, W_out, wh_ptr, oc, C_out, zero, KW, SW, DW, pad_l)
            wv = tl.load(wv_ptr + a * C_out + oc, mask=c_ok, other=0.0)
            acc += tl.where(i_ok[:, None], gz * wv.to(acc.dtype)[None, :], 0.0)
    dst = gi_ptr + n * sin + (r.to(tl.int64) * sih + j.to(tl.int64) * siw)[:, None] \
        + (ic.to(tl.int64) * sic)[None, :]
    tl.store(dst, acc.to(gi_ptr.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


@triton.jit
def _ss_bwd_w_kernel(
    go_ptr, x_ptr, wv_ptr, bv_ptr, wh_ptr, ws_ptr,
    C_out, M, H, W, H_out, W_out, total, per_chunk,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, HAS_BV: tl.constexpr,
    NEED_V: tl.constexpr, NEED_H: tl.constexpr, ACC_F64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Program (channel block, chunk of [BLOCK_P] tiles of the N intermediate planes H_out x W):
    ws[chunk, 0:KH] = gwv partials, ws[chunk, KH:KH+KW] = gwh, ws[chunk, KH+KW] = gbv."""
    pid = tl.program_id(0)
    n_cb = tl.cdiv(C_out, BLOCK_C)
    cb = pid % n_cb
    chunk = pid // n_cb
    oc = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = oc < C_out
    HWm = H_out * W
    n_pb = tl.cdiv(HWm, BLOCK_P)
    zero = _zeros_2d(BLOCK_P, BLOCK_C, ACC_F64)
    gwv = ()
    for a in tl.static_range(KH):
        gwv = gwv + (_zeros_1d(BLOCK_C, ACC_F64),)
    gwh = ()
    for b in tl.static_range(KW):
        gwh = gwh + (_zeros_1d(BLOCK_C, ACC_F64),)
    gbv = _zeros_1d(BLOCK_C, ACC_F64)
    t0 = chunk * per_chunk
    t1 = tl.minimum(t0 + per_chunk, total)
    for t in range(t0, t1):
        n = (t // n_pb).to(tl.int64)
        p = (t % n_pb) * BLOCK_P + tl.arange(0, BLOCK_P)
        p_ok = p < HWm
        i = p // W
        j = p % W
        go_c = go_ptr + n * sgn + (oc.to(tl.int64) * sgc)[None, :]
        x_c = x_ptr + n * sxn + ((oc // M).to(tl.int64) * sxc)[None, :]
        gz = zero
        if NEED_V:
            gz = _gz(go_c, i, p_ok, j, c_ok, sgh, sgw, W_out, wh_ptr, oc, C_out, zero, KW, SW, DW, pad_l)
            gbv += tl.sum(gz, axis=0)
        z = zero
        if NEED_H and HAS_BV:
            z += tl.load(bv_ptr + oc, mask=c_ok, other=0.0).to(z.dtype)[None, :]
        row0 = i * SH - pad_t
        new_v = ()
        for a in tl.static_range(KH):
            r = row0 + a * DH
            m = (p_ok & (r >= 0) & (r < H))[:, None] & c_ok[None, :]
            xv = tl.load(x_c + (r.to(tl.int64) * sxh + j.to(tl.int64) * sxw)[:, None], mask=m,
                         other=0.0).to(zero.dtype)
            if NEED_H:
                wv = tl.load(wv_ptr + a * C_out + oc, mask=c_ok, other=0.0)
                z += tl.where(m, xv * wv.to(z.dtype)[None, :], 0.0)
            if NEED_V:
                new_v = new_v + (gwv[a] + tl.sum(tl.where(m, gz * xv, 0.0), axis=0),)
            else:
                new_v = new_v + (gwv[a],)
        gwv = new_v
        if NEED_H:
            new_h = ()
            for b in tl.static_range(KW):
                u = j + pad_l - b * DW
                q = u // SW
                ok = p_ok & (u >= 0) & (q * SW == u) & (q < W_out)
                m = ok[:, None] & c_ok[None, :]
                g = tl.load(go_c + (i.to(tl.int64) * sgh + q.to(tl.int64) * sgw)[:, None], mask=m,
                            other=0.0).to(zero.dtype)
                new_h = new_h + (gwh[b] + tl.sum(tl.where(m, g * z, 0.0), axis=0),)
            gwh = new_h
    ws = ws_ptr + chunk.to(tl.int64) * ((KH + KW + 1) * C_out)
    for a in tl.static_range(KH):
        tl.store(ws + a * C_out + oc, gwv[a], mask=c_ok)
    for b in tl.static_range(KW):
        tl.store(ws + (KH + b) * C_out + oc, gwh[b], mask=c_ok)
    tl.store(ws + (KH + KW) * C_out + oc, gbv, mask=c_ok)


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------
def _blocks(channels_last, C):
    """(BLOCK_P, BLOCK_C): channels_last tiles take a channel block, the rest a run of pixels."""
    if channels_last:
        bc = min(64, triton.next_power_of_2(max(C, 1)))
        bp = max(4, (64 if _INTERPRET else 256) // bc)
        return bp, bc
    return (64 if _INTERPRET else 256), 1


def _geom(input, vertical_weight, horizontal_weight, stride, padding, dilation):
    N, C, H, W = input.shape
    C_out, KH, KW = vertical_weight.shape[0], vertical_weight.shape[2], horizontal_weight.shape[3]
    SH, SW = (int(s) for s in stride)
    DH, DW = (int(d) for d in dilation)
    pt, pb, pl, pr = (int(p) for p in padding)
    H_out = max(_out_size(H, pt, pb, DH, KH, SH), 0)
    W_out = max(_out_size(W, pl, pr, DW, KW, SW), 0)
    return dict(N=N, C=C, H=H, W=W, C_out=C_out, M=C_out // C if C else 1, KH=KH, KW=KW, SH=SH, SW=SW, DH=DH,
                DW=DW, pt=pt, pl=pl, H_out=H_out, W_out=W_out)


@triton_op(
    "convext::triton_spatial_separable_conv2d",
    mutates_args=(),
    schema="(Tensor input, Tensor vertical_weight, Tensor horizontal_weight, Tensor? vertical_bias, "
    "Tensor? horizontal_bias, int[2] stride, int[4] padding, int[2] dilation) -> Tensor",
)
def _triton_spatial_separable_conv2d(input: torch.Tensor, vertical_weight: torch.Tensor,
                                     horizontal_weight: torch.Tensor, vertical_bias: Optional[torch.Tensor],
                                     horizontal_bias: Optional[torch.Tensor], stride: List[int],
                                     padding: List[int], dilation: List[int]) -> torch.Tensor:
    g = _geom(input, vertical_weight, horizontal_weight, stride, padding, dilation)
    C_out = g["C_out"]
    y = _alloc_like((g["N"], C_out, g["H_out"], g["W_out"]), input)
    if y.numel() == 0 or _any_fake(input, y):
        return y
    cl = _is_channels_last(input)
    wv = _acc_weights(vertical_weight, C_out, g["KH"], True)
    wh = _acc_weights(horizontal_weight, C_out, g["KW"], True)
    acc = _acc_dtype(input.dtype)
    bv = vertical_bias.to(acc).contiguous() if vertical_bias is not None else wv
    bh = horizontal_bias.to(acc).contiguous() if horizontal_bias is not None else wh
    bp, bc = _blocks(cl, C_out)
    grid = (g["N"] * triton.cdiv(g["H_out"] * g["W_out"], bp) * triton.cdiv(C_out, bc),)
    _common._launcher(_ss_fwd_kernel)[grid](
        input, wv, bv, wh, bh, y,
        C_out, g["M"], g["H"], g["W"], g["H_out"], g["W_out"],
        *input.stride(), *y.stride(), g["pt"], g["pl"],
        KH=g["KH"], KW=g["KW"], SH=g["SH"], SW=g["SW"], DH=g["DH"], DW=g["DW"],
        HAS_BV=vertical_bias is not None, HAS_BH=horizontal_bias is not None,
        ACC_F64=input.dtype == torch.float64, BLOCK_P=bp, BLOCK_C=bc,
    )
    return y


@triton_op(
    "convext::triton_spatial_separable_conv2d_backward",
    mutates_args=(),
    schema="(Tensor grad_output, Tensor input, Tensor vertical_weight, Tensor horizontal_weight, "
    "Tensor? vertical_bias, Tensor? horizontal_bias, int[2] stride, int[4] padding, int[2] dilation, "
    "bool[5] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
def _triton_spatial_separable_conv2d_backward(
        grad_output: torch.Tensor, input: torch.Tensor, vertical_weight: torch.Tensor,
        horizontal_weight: torch.Tensor, vertical_bias: Optional[torch.Tensor],
        horizontal_bias: Optional[torch.Tensor], stride: List[int], padding: List[int], dilation: List[int],
        output_mask: List[bool]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _geom(input, vertical_weight, horizontal_weight, stride, padding, dilation)
    m_in, m_wv, m_wh, m_bv, m_bh = (bool(m) for m in output_mask)
    m_bv = m_bv and vertical_bias is not None
    m_bh = m_bh and horizontal_bias is not None
    dtype, dev = input.dtype, input.device
    acc = _acc_dtype(dtype)
    N, C, C_out, KH, KW = g["N"], g["C"], g["C_out"], g["KH"], g["KW"]

    def none_():
        return torch.empty(0, dtype=dtype, device=dev)

    grad_in = _alloc_like(tuple(input.shape), input) if m_in else none_()
    fake = _any_fake(grad_output, input)
    cl = _is_channels_last(input)
    wv = _acc_weights(vertical_weight, C_out, KH, True)
    wh = _acc_weights(horizontal_weight, C_out, KW, True)
    empty_out = grad_output.numel() == 0
    if m_in and grad_in.numel() > 0 and not fake:
        if empty_out:
            grad_in.zero_()
        else:
            bp, bc = _blocks(cl, C)
            grid = (N * triton.cdiv(g["H"] * g["W"], bp) * triton.cdiv(C, bc),)
            _common._launcher(_ss_bwd_in_kernel)[grid](
                grad_output, wv, wh, grad_in,
                C, g["M"], g["H"], g["W"], g["H_out"], g["W_out"],
                *grad_output.stride(), *grad_in.stride(), g["pt"], g["pl"],
                KH=KH, KW=KW, SH=g["SH"], SW=g["SW"], DH=g["DH"], DW=g["DW"],
                ACC_F64=dtype == torch.float64, BLOCK_P=bp, BLOCK_C=bc,
            )
    grad_wv, grad_wh, grad_bv = none_(), none_(), none_()
    if m_wv or m_wh or m_bv:
        need_v, need_h = m_wv or m_bv, m_wh
        bp, bc = _blocks(cl, C_out)
        total = N * triton.cdiv(g["H_out"] * g["W"], bp)
        n_cb = triton.cdiv(C_out, bc)
        target = max(1, triton.cdiv(_GW_TARGET_PROGRAMS, n_cb))
        per_chunk = max(1, triton.cdiv(total, target)) if total > 0 else 1
        n_chunks = triton.cdiv(total, per_chunk) if total > 0 else 0
        ws = torch.zeros((max(n_chunks, 1), KH + KW + 1, C_out), dtype=acc, device=dev)
        if n_chunks > 0 and not fake:
            bv = vertical_bias.to(acc).contiguous() if vertical_bias is not None else wv
            _common._launcher(_ss_bwd_w_kernel)[(n_cb * n_chunks,)](
                grad_output, input, wv, bv, wh, ws,
                C_out, g["M"], g["H"], g["W"], g["H_out"], g["W_out"], total, per_chunk,
                *grad_output.stride(), *input.stride(), g["pt"], g["pl"],
                KH=KH, KW=KW, SH=g["SH"], SW=g["SW"], DH=g["DH"], DW=g["DW"],
                HAS_BV=vertical_bias is not None, NEED_V=need_v, NEED_H=need_h,
                ACC_F64=dtype == torch.float64, BLOCK_P=bp, BLOCK_C=bc,
            )
        red = ws.sum(0)  # fixed-order reduction of the chunk partials (deterministic)
        if m_wv:
            grad_wv = red[:KH].t().to(dtype).reshape(C_out, 1, KH, 1).contiguous()
        if m_wh:
            grad_wh = red[KH:KH + KW].t().to(dtype).reshape(C_out, 1, 1, KW).contiguous()
        if m_bv:
            grad_bv = red[KH + KW].to(dtype).contiguous()
    grad_bh = grad_output.sum((0, 2, 3), dtype=acc).to(dtype) if m_bh else none_()
    return grad_in, grad_wv, grad_wh, grad_bv, grad_bh


_opaque_when_interpreted(_triton_spatial_separable_conv2d, _triton_spatial_separable_conv2d_backward)
