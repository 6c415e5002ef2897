"""Large-kernel depthwise conv2d on tensor cores (Triton): forward, grad-input, grad-weight.

A depthwise conv with a large kernel (RepLKNet 31x31, 13x13, ...) is compute-bound, and a
depthwise conv has no channel reduction to feed a GEMM.  The row-Toeplitz form gives it one:
for a plane, kernel row ``kh`` and a block of ``BLOCK_Q`` output columns starting at ``q0``,

    y[oh, q0 + q] += sum_k  x[oh*SH + kh*DH - pad_t, q0*SW - pad_l + k] * T_kh[k, q]
    T_kh[k, q] = w[kh, j]  where  k = q*SW + j*DW, 0 <= j < KW  (else 0)

so each kernel row is one ``[BLOCK_H, BLOCK_K] @ [BLOCK_K, BLOCK_Q]`` tensor-core GEMM, with
``BLOCK_K >= (BLOCK_Q - 1)*SW + (KW - 1)*DW + 1``.  It does ``BLOCK_K / KW`` times the FLOPs of
the direct conv (about 2x for a 31-wide kernel, 2.5x for 13), on units that are 15x faster than
the FP32 FMA pipe in bf16/fp16 (fp32 accumulation; the products of bf16/fp16 values are exact in
fp32, so only the summation order differs from a CUDA-core kernel).

* grad-input is the same GEMM with the transposed band: for a block of input columns, the
  output columns that reach it form the K dimension (stride > 1: the band has holes).
* grad-weight accumulates ``G_kh = X_kh^T @ GO`` ([BLOCK_K, BLOCK_Q], fp32) over a chunk of
  output rows, then reads its ``KW`` band diagonals (through a per-program scratch in global
  memory, coherent within the program after a barrier) into per-chunk partials, reduced in a
  fixed order afterwards: deterministic, no atomics.

Tiles are planar (NCHW); a channels_last input is copied to NCHW once (the conv is compute-bound,
the copy costs a few percent).  Per-plane offsets are int32 (checked by ``applies``), per-image
and per-channel offsets int64.
"""

import os
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from . import _common
from ._common import _I32_LIMIT, _INTERPRET, _cfg, _is_channels_last, _next_pow2

__all__ = ["applies", "forward", "backward_input", "backward_weight"]

_MAX_BLOCK_K = 128
# Grad-weight: number of programs aimed at (shapes alone fix the chunking, hence the rounding).
_GW_TARGET_PROGRAMS = 528
_GW_MIN_ROWS = 64  # at least one full row tile of the largest BLOCK_R per chunk
# CONVEXT_TRITON_TC=0 switches this path off (the CUDA-core Triton kernels then run);
# CONVEXT_TRITON_TC=force uses it for every dtype that tl.dot takes (fp32 as IEEE fp32), for tests.
_MODE = os.environ.get("CONVEXT_TRITON_TC", "1")
_TC_DTYPES = (torch.float16, torch.bfloat16)


def _band_k(bq, s, k, d):
    """Input columns one block of ``bq`` outputs reaches: (bq - 1)*s + (k - 1)*d + 1."""
    return (bq - 1) * s + (k - 1) * d + 1


def _band_k_transposed(bq, s, k, d):
    """Output columns that reach one block of ``bq`` input columns (grad-input); at most
    _band_k(bq, s, k, d), so applies() bounds both."""
    return ((bq - 1) + (k - 1) * d) // s + 1


def _pick_block_q(extent, band):
    """(BLOCK_Q, BLOCK_K) minimising the GEMM work ceil(extent / bq) * BLOCK_K * bq over
    bq in {64, 32, 16} (ties: the larger block), BLOCK_K = the pow-2 cover of band(bq);
    None when even the smallest band exceeds _MAX_BLOCK_K."""
    best = None
    for bq in (64, 32, 16):
        bk = max(16, _next_pow2(band(bq)))
        if bk > _MAX_BLOCK_K:
            continue
        cost = triton.cdiv(max(extent, 1), bq) * bk * bq
        if best is None or cost < best[0]:
            best = (cost, bq, bk)
    return None if best is None else best[1:]


def _plane_fits_i32(t):
    return 1 + sum((s - 1) * st for s, st in zip(t.shape[2:], t.stride()[2:]) if s > 0) <= _I32_LIMIT


def applies(dtype: torch.dtype, kernel_size, stride, dilation, *tensors) -> bool:
    """Whether the tensor-core path serves this conv: a large kernel (kH*kW >= 81, kW >= 7), a
    band that fits one tile, fp16/bf16 (any float but fp64 with CONVEXT_TRITON_TC=force)."""
    if _MODE == "0":
        return False
    if _MODE == "force":
        if dtype == torch.float64:
            return False
    elif dtype not in _TC_DTYPES:
        return False
    KH, KW = kernel_size
    if KH * KW < 81 or KW < 7:
        return False
    if _band_k(16, stride[1], KW, dilation[1]) > _MAX_BLOCK_K:
        return False
    return all(_plane_fits_i32(t) for t in tensors)


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _dot(a, b, acc, DOT_F32: tl.constexpr):
    if DOT_F32:  # fp32 operands (and bf16 under the interpreter, whose bf16 tl.dot is wrong)
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def _plane_block(pid, C, H_t, W_t, BLOCK_H: tl.constexpr, BLOCK_Q: tl.constexpr):
    """Program id -> (n, c, row block start, column block start); blocks of a plane row-major."""
    tiles_q = tl.cdiv(W_t, BLOCK_Q)
    tiles = tl.cdiv(H_t, BLOCK_H) * tiles_q
    plane = pid // tiles
    t = pid - plane * tiles
    th = t // tiles_q
    n = plane // C
    return n, plane - n * C, th * BLOCK_H, (t - th * tiles_q) * BLOCK_Q


@triton.jit
def _tc_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    C_out, M, H, W, H_out, W_out,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
):
    n, oc, h0, q0 = _plane_block(tl.program_id(0), C_out, H_out, W_out, BLOCK_H, BLOCK_Q)
    ic = oc // M
    oh = h0 + tl.arange(0, BLOCK_H)
    oq = q0 + tl.arange(0, BLOCK_Q)
    kk = tl.arange(0, BLOCK_K)
    iw = q0 * SW - pad_l + kk
    iw_ok = (iw >= 0) & (iw < W)
    # band: T[k, q] = w[kh, j] with k = q*SW + j*DW
    jd = kk[:, None] - tl.arange(0, BLOCK_Q)[None, :] * SW
    j = jd // DW
    j_ok = (jd >= 0) & (jd - j * DW == 0) & (j < KW)

    x_base = x_ptr + n.to(tl.int64) * sxn + ic.to(tl.int64) * sxc
    w_base = w_ptr + oc * (KH * KW)
    acc = tl.zeros([BLOCK_H, BLOCK_Q], dtype=tl.float32)
    for kh in range(KH):
        ih = oh * SH + kh * DH - pad_t
        a = tl.load(x_base + ih[:, None] * sxh + iw[None, :] * sxw,
                    mask=((ih >= 0) & (ih < H))[:, None] & iw_ok[None, :], other=0.0)
        t = tl.load(w_base + kh * KW + j, mask=j_ok, other=0.0)
        acc = _dot(a, t.to(a.dtype), acc, DOT_F32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + oc).to(tl.float32)
    m = (oh < H_out)[:, None] & (oq < W_out)[None, :]
    y_base = y_ptr + n.to(tl.int64) * syn + oc.to(tl.int64) * syc
    tl.store(y_base + oh[:, None] * syh + oq[None, :] * syw, acc.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _tc_bwd_in_kernel(
    go_ptr, w_ptr, gi_ptr,
    C_in, M, H, W, H_out, W_out,
    sgn, sgc, sgh, sgw,
    sin, sic, sih, siw,
    pad_t, pad_l,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, DOT_F32: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
):
    # grad_input[ih, iw] = sum go[oh, ow] * w[kh, kw], ih + pad_t = oh*SH + kh*DH,
    # iw + pad_l = ow*SW + kw*DW.  Block of BLOCK_Q input columns from p0; the output columns
    # that reach it start at ow0 = ceil((p0 + pad_l - (KW-1)*DW) / SW).
    n, ic, h0, p0 = _plane_block(tl.program_id(0), C_in, H, W, BLOCK_H, BLOCK_Q)
    ih = h0 + tl.arange(0, BLOCK_H)
    ip = p0 + tl.arange(0, BLOCK_Q)
    num = p0 + pad_l - (KW - 1) * DW
    ow0 = tl.where(num >= 0, (num + SW - 1) // SW, -((-num) // SW))
    ow = ow0 + tl.arange(0, BLOCK_K)
    ow_ok = (ow >= 0) & (ow < W_out)
    # band: T[k, p] = w[kh, j] with (p0 + p) + pad_l = (ow0 + k)*SW + j*DW
    jd = (p0 + pad_l + tl.arange(0, BLOCK_Q))[None, :] - ow[:, None] * SW
    j = jd // DW
    j_ok = (jd >= 0) & (jd - j * DW == 0) & (j < KW)

    acc = tl.zeros([BLOCK_H, BLOCK_Q], dtype=tl.float32)
    for mm in range(M):
        oc = ic * M + mm
        go_base = go_ptr + n.to(tl.int64) * sgn + oc.to(tl.int64) * sgc
        w_base = w_ptr + oc * (KH * KW)
        for kh in range(KH):
            hn = ih + pad_t - kh * DH
            oh = hn // SH
            oh_ok = (hn >= 0) & (hn - oh * SH == 0) & (oh < H_out)
            a = tl.load(go_base + oh[:, None] * sgh + ow[None, :] * sgw,
                        mask=oh_ok[:, None] & ow_ok[None, :], other=0.0)
            t = tl.load(w_base + kh * KW + j, mask=j_ok, other=0.0)
            acc = _dot(a, t.to(a.dtype), acc, DOT_F32)
    m = (ih < H)[:, None] & (ip < W)[None, :]
    gi_base = gi_ptr + n.to(tl.int64) * sin + ic.to(tl.int64) * sic
    tl.store(gi_base + ih[:, None] * sih + ip[None, :] * siw, acc.to(gi_ptr.dtype.element_ty),
             mask=m)


@triton.jit
def _tc_bwd_w_kernel(
    go_ptr, x_ptr, ws_ptr, scratch_ptr,
    C_out, M, H, W, H_out, W_out,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    pad_t, pad_l, rows_total, rows_per_chunk, n_qb,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, DOT_F32: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, KW_P: tl.constexpr, BLOCK_R: tl.constexpr,
):
    # Program (oc fastest, column block, chunk of the N*H_out output rows).
    # G[k, q] = sum_rows x[n, ic, oh*SH + kh*DH - pad_t, q0*SW - pad_l + k] * go[n, oc, oh, q0 + q]
    # grad_weight[oc, kh, j] = sum_q G[q*SW + j*DW, q]
    pid = tl.program_id(0)
    oc = pid % C_out
    rest = pid // C_out
    qb = rest % n_qb
    chunk = rest // n_qb
    ic = oc // M
    q0 = qb * BLOCK_Q
    oq = q0 + tl.arange(0, BLOCK_Q)
    q_ok = oq < W_out
    kk = tl.arange(0, BLOCK_K)
    iw = q0 * SW - pad_l + kk
    iw_ok = (iw >= 0) & (iw < W)
    r_lo = chunk * rows_per_chunk
    r_hi = tl.minimum(r_lo + rows_per_chunk, rows_total)

    x_c = x_ptr + ic.to(tl.int64) * sxc
    go_c = go_ptr + oc.to(tl.int64) * sgc
    scratch = scratch_ptr + pid.to(tl.int64) * (BLOCK_K * BLOCK_Q)
    g_off = kk[:, None] * BLOCK_Q + tl.arange(0, BLOCK_Q)[None, :]
    jj = tl.arange(0, KW_P)
    diag_k = tl.arange(0, BLOCK_Q)[None, :] * SW + jj[:, None] * DW
    diag_ok = (jj < KW)[:, None] & (diag_k < BLOCK_K)
    diag_off = diag_k * BLOCK_Q + tl.arange(0, BLOCK_Q)[None, :]
    ws_row = ws_ptr + ((chunk * n_qb + qb).to(tl.int64) * C_out + oc) * (KH * KW)

    for kh in range(KH):
        g_acc = tl.zeros([BLOCK_K, BLOCK_Q], dtype=tl.float32)
        for r0 in range(r_lo, r_hi, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            r_ok = r < r_hi
            n = r // H_out
            oh = r - n * H_out
            ih = oh * SH + kh * DH - pad_t
            h_ok = r_ok & (ih >= 0) & (ih < H)
            xt = tl.load(x_c + n.to(tl.int64)[None, :] * sxn + ih[None, :] * sxh
                         + iw[:, None] * sxw, mask=iw_ok[:, None] & h_ok[None, :], other=0.0)
            g = tl.load(go_c + n.to(tl.int64)[:, None] * sgn + oh[:, None] * sgh
                        + oq[None, :] * sgw, mask=r_ok[:, None] & q_ok[None, :], other=0.0)
            g_acc = _dot(xt, g.to(xt.dtype), g_acc, DOT_F32)
        # band diagonals through the scratch (a barrier makes the stores visible to the CTA)
        tl.store(scratch + g_off, g_acc)
        tl.debug_barrier()
        d = tl.load(scratch + diag_off, mask=diag_ok, other=0.0, cache_modifier=".cg")
        tl.store(ws_row + kh * KW + jj, tl.sum(d, axis=1), mask=jj < KW)
        tl.debug_barrier()


# ----------------------------------------------------------------------------------------------
# Configs and launchers
# ----------------------------------------------------------------------------------------------
def _tile_configs(h_extent, bq, bk):
    out = []
    for bh, nw, ns in ((64, 4, 3), (32, 4, 3), (64, 8, 3), (128, 8, 3), (16, 4, 3),
                       (64, 4, 2), (32, 2, 2)):
        if bh > max(16, _next_pow2(h_extent)) or bh * bk * 2 > 64 * 1024:
            continue
        out.append(_cfg(nw, ns, BLOCK_H=bh))
    return out


def _gw_configs(bq, bk):
    return [_cfg(nw, ns, BLOCK_R=br) for br, nw, ns in
            ((64, 4, 3), (32, 4, 3), (64, 8, 3), (128, 8, 2), (32, 2, 2))]


_FWD_KEY = ["C_out", "M", "H", "W", "H_out", "W_out", "sxh", "sxw", "syh", "syw"]
_BWD_IN_KEY = ["C_in", "M", "H", "W", "H_out", "W_out", "sgh", "sgw", "sih", "siw"]
_GW_KEY = ["C_out", "M", "H", "W", "H_out", "W_out", "rows_total", "rows_per_chunk"]


def _dot_f32(dtype):
    return _INTERPRET or dtype not in _TC_DTYPES


def _planar(t):
    """t itself, or an NCHW copy when it is channels_last (rows of a plane must be dense)."""
    return t.contiguous() if _is_channels_last(t) else t


def _planar_out(out):
    """Where the kernel writes: out itself, or an NCHW buffer copied into a channels_last out."""
    if _is_channels_last(out):
        return torch.empty(out.shape, dtype=out.dtype, device=out.device)
    return out


def _finish(buf, out):
    if buf is not out:
        out.copy_(buf)
    return out


def forward(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
            stride: List[int], padding: List[int], dilation: List[int], out: torch.Tensor
            ) -> torch.Tensor:
    """Writes the conv into ``out`` ((N, C_out, H_out, W_out), any memory format); returns it."""
    N, C_in, H, W = input.shape
    C_out, _, KH, KW = weight.shape
    H_out, W_out = out.shape[2], out.shape[3]
    M = C_out // C_in
    (SH, SW), (DH, DW) = stride, dilation
    pt, _, pl, _ = padding
    x = _planar(input)
    y = _planar_out(out)
    bq, bk = _pick_block_q(W_out, lambda q: _band_k(q, SW, KW, DW))
    w = weight.reshape(C_out, KH * KW).contiguous()
    b = bias.contiguous() if bias is not None else w
    kern = _common._tuner(_tc_fwd_kernel, _FWD_KEY, _tile_configs, (H_out, bq, bk))

    def grid(meta):
        return (N * C_out * triton.cdiv(H_out, meta["BLOCK_H"]) * triton.cdiv(W_out, bq),)
    _common._launcher(kern)[grid](
        x, w, b, y, C_out, M, H, W, H_out, W_out, *x.stride(), *y.stride(), pt, pl,
        KH=KH, KW=KW, SH=SH, SW=SW, DH=DH, DW=DW, HAS_BIAS=bias is not None,
        DOT_F32=_dot_f32(input.dtype), BLOCK_Q=bq, BLOCK_K=bk)
    return _finish(y, out)


def backward_input(grad_output: torch.Tensor, weight: torch.Tensor, stride: List[int],
                   padding: List[int], dilation: List[int], out: torch.Tensor) -> torch.Tensor:
    """Writes grad_input into ``out`` ((N, C_in, H, W), any memory format); returns it."""
    N, C_in, H, W = out.shape
    C_out, _, KH, KW = weight.shape
    M = C_out // C_in
    (SH, SW), (DH, DW) = stride, dilation
    pt, _, pl, _ = padding
    H_out, W_out = grad_output.shape[2], grad_output.shape[3]
    go = _planar(grad_output)
    gi = _planar_out(out)
    bq, bk = _pick_block_q(W, lambda q: _band_k_transposed(q, SW, KW, DW))
    w = weight.reshape(C_out, KH * KW).contiguous()
    kern = _common._tuner(_tc_bwd_in_kernel, _BWD_IN_KEY, _tile_configs, (H, bq, bk))

    def grid(meta):
        return (N * C_in * triton.cdiv(H, meta["BLOCK_H"]) * triton.cdiv(W, bq),)
    _common._launcher(kern)[grid](
        go, w, gi, C_in, M, H, W, H_out, W_out, *go.stride(), *gi.stride(), pt, pl,
        KH=KH, KW=KW, SH=SH, SW=SW, DH=DH, DW=DW, DOT_F32=_dot_f32(grad_output.dtype),
        BLOCK_Q=bq, BLOCK_K=bk)
    return _finish(gi, out)


def backward_weight(grad_output: torch.Tensor, input: torch.Tensor, kernel_size: List[int],
                    stride: List[int], padding: List[int], dilation: List[int],
                    compute_bias: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    N, C_in, H, W = input.shape
    C_out, H_out, W_out = grad_output.shape[1], grad_output.shape[2], grad_output.shape[3]
    KH, KW = kernel_size
    M = C_out // C_in
    (SH, SW), (DH, DW) = stride, dilation
    pt, _, pl, _ = padding
    x, go = _planar(input), _planar(grad_output)
    bq, bk = _pick_block_q(W_out, lambda q: _band_k(q, SW, KW, DW))
    n_qb = triton.cdiv(W_out, bq)
    rows = N * H_out
    n_chunks = max(1, triton.cdiv(_GW_TARGET_PROGRAMS, C_out * n_qb))
    per_chunk = max(triton.cdiv(rows, n_chunks), _GW_MIN_ROWS)
    n_chunks = triton.cdiv(rows, per_chunk)
    programs = C_out * n_qb * n_chunks
    dev = input.device
    ws = torch.empty((n_chunks * n_qb, C_out, KH * KW), dtype=torch.float32, device=dev)
    scratch = torch.empty((programs, bk * bq), dtype=torch.float32, device=dev)
    kern = _common._tuner(_tc_bwd_w_kernel, _GW_KEY, _gw_configs, (bq, bk))
    _common._launcher(kern)[(programs,)](
        go, x, ws, scratch, C_out, M, H, W, H_out, W_out, *go.stride(), *x.stride(), pt, pl,
        rows, per_chunk, n_qb,
        KH=KH, KW=KW, SH=SH, SW=SW, DH=DH, DW=DW, DOT_F32=_dot_f32(input.dtype),
        BLOCK_Q=bq, BLOCK_K=bk, KW_P=_next_pow2(KW))
    gw = ws.sum(0).to(input.dtype).reshape(C_out, 1, KH, KW)
    if compute_bias:
        gb = grad_output.sum((0, 2, 3), dtype=torch.float32).to(input.dtype)
    else:
        gb = torch.empty((0,), dtype=input.dtype, device=dev)
    return gw, gb
