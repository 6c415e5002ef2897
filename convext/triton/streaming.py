"""Triton streaming causal depthwise conv1d: ``convext::triton_depthwise_conv1d_update``.

Same schema and semantics as the compiled op (csrc/ops.cpp, csrc/depthwise_conv1d_update.h):

    (Tensor x, Tensor(a!) conv_state, Tensor weight, Tensor? bias, int dilation) -> Tensor

x (N, C, T), conv_state (N, C, S = dilation*(k-1)) the past inputs (oldest first), weight
(C*M, 1, k). With u = cat(conv_state, x) along time, out[:, c*M+m, t] = bias + sum_j w[j] * u[t + j*d]
and conv_state <- u[:, :, T:T+S], in place.

One program per (image, block of BLOCK_C channels) owns those rows of the state: it computes every
output of the rows first ([BLOCK_C, BLOCK_T] tiles, taps unrolled, the tap's source chosen per
element between the state and x), then shifts the state by T in ascending chunks of BLOCK_S:
each chunk loads u[i + T] for its i, a barrier (the warps of the program share the rows), then
stores state[i]. A chunk only ever writes indices below the ones any later chunk reads, so the
in-place shift is race-free. Every tensor is addressed through its strides: (N, C, T) rows and
channels-last (N, T, C) views are used in place. float16 / bfloat16 accumulate in float32
(float64 for float64) and round once.

Not verified on a GPU yet: tested through the interpreter (TRITON_INTERPRET=1) on CPU tensors;
`auto` takes it on CUDA only with CONVEXT_AUTO_UNVERIFIED=1 (convext/streaming.py).
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from . import _common
from ._common import _is_fake, _pow2_bucket, _traced_interpreted, _zeros_2d

__all__ = ["_triton_depthwise_conv1d_update"]


@triton.jit
def _conv1d_update_kernel(
    x_ptr, state_ptr, w_ptr, b_ptr, out_ptr,
    C, T, S, M, DIL, n_cb,
    sxn, sxc, sxt, ssn, ssc, sss, swo, swk, sb, son, soc, sot,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, ACC_F64: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr,
):
    pid = tl.program_id(0)
    n = (pid // n_cb).to(tl.int64)
    cb = pid % n_cb
    c = (cb * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    c_ok = c < C
    x_row = x_ptr + n * sxn + c * sxc  # [BLOCK_C] row starts
    s_row = state_ptr + n * ssn + c * ssc
    # ---- outputs: every (channel, multiplier, t) of the rows, from the old state and x
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        t_ok = t < T
        ok = c_ok[:, None] & t_ok[None, :]
        for m in range(M):
            oc = c * M + m
            acc = _zeros_2d(BLOCK_C, BLOCK_T, ACC_F64)
            for j in tl.static_range(K):
                i = (t + j * DIL).to(tl.int64)  # index into u = cat(state, x)
                in_state = i < S
                sv = tl.load(s_row[:, None] + i[None, :] * sss, mask=ok & in_state[None, :], other=0.0)
                xv = tl.load(x_row[:, None] + (i - S)[None, :] * sxt, mask=ok & (~in_state)[None, :], other=0.0)
                wj = tl.load(w_ptr + oc * swo + j * swk, mask=c_ok, other=0.0).to(acc.dtype)
                acc += wj[:, None] * tl.where(in_state[None, :], sv, xv).to(acc.dtype)
            if HAS_BIAS:
                acc += tl.load(b_ptr + oc * sb, mask=c_ok, other=0.0).to(acc.dtype)[:, None]
            o_ptr = out_ptr + n * son + oc[:, None] * soc + t[None, :].to(tl.int64) * sot
            tl.store(o_ptr, acc.to(out_ptr.dtype.element_ty), mask=ok)
    tl.debug_barrier()  # every read of the old state is done before it is overwritten
    # ---- state <- u[T : T+S], ascending chunks (a chunk writes only below what later chunks read)
    for i0 in range(0, S, BLOCK_S):
        i = (i0 + tl.arange(0, BLOCK_S)).to(tl.int64)
        ok = c_ok[:, None] & (i < S)[None, :]
        src = i + T
        from_state = src < S
        sv = tl.load(s_row[:, None] + src[None, :] * sss, mask=ok & from_state[None, :], other=0.0)
        xv = tl.load(x_row[:, None] + (src - S)[None, :] * sxt, mask=ok & (~from_state)[None, :], other=0.0)
        v = tl.where(from_state[None, :], sv, xv)
        tl.debug_barrier()
        tl.store(s_row[:, None] + i[None, :] * sss, v, mask=ok)


def _alloc_out(x, channels_out):
    N, _, T = x.shape
    if T > 1 and x.stride(1) < x.stride(2):  # channels-last (N, T, C) view in -> same layout out
        return torch.empty((N, T, channels_out), dtype=x.dtype, device=x.device).transpose(1, 2)
    return torch.empty((N, channels_out, T), dtype=x.dtype, device=x.device)


@torch.library.triton_op(
    "convext::triton_depthwise_conv1d_update",
    mutates_args={"conv_state"},
    schema="(Tensor x, Tensor(a!) conv_state, Tensor weight, Tensor? bias, int dilation) -> Tensor",
)
def _triton_depthwise_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                                    bias: Optional[torch.Tensor], dilation: int) -> torch.Tensor:
    r = _traced_interpreted(torch.ops.convext.triton_depthwise_conv1d_update, x, conv_state, weight, bias,
                            dilation)
    if r is not None:
        return r
    N, C, T = x.shape
    CM, _, K = weight.shape
    M = CM // C if C > 0 else 1
    S = dilation * (K - 1)
    out = _alloc_out(x, CM)
    if N * C == 0 or _is_fake(out) or _is_fake(conv_state) or (T == 0 and S == 0):
        return out
    # Channels: many per program for channels-last layouts (contiguous along C), fewer for rows.
    block_c = _pow2_bucket(C, 1, 64 if x.stride(1) == 1 else 16)
    block_t = _pow2_bucket(T, 1, 32)
    block_s = _pow2_bucket(S, 1, 64)
    n_cb = triton.cdiv(C, block_c)
    has_bias = bias is not None
    _common._launcher(_conv1d_update_kernel)[(N * n_cb,)](
        x, conv_state, weight, bias if has_bias else weight, out,
        C, T, S, M, dilation, n_cb,
        *x.stride(), *conv_state.stride(), weight.stride(0), weight.stride(2),
        bias.stride(0) if has_bias else 0, *out.stride(),
        K=K, HAS_BIAS=has_bias, ACC_F64=x.dtype == torch.float64,
        BLOCK_C=block_c, BLOCK_T=block_t, BLOCK_S=block_s,
        num_warps=4 if block_c * max(block_t, block_s) >= 1024 else 1,
    )
    return out

