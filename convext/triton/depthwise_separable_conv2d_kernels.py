"""Triton kernels of the fused depthwise-separable conv2d (the ops and their launches are in
depthwise_separable_conv2d.py, which describes the algorithm).

* _sep_fwd_kernel: y = act2(pw @ act1(dw(x) + dw_b) + pw_b), or in GRAD_MODE g = gy * act2'(pre);
* _sep_bwd_gz_kernel: grad_z = (g @ pw) * act1'(z), z recomputed on chip;
* _sep_bwd_pw_kernel: per split of the pixel tiles, partial sums of g^T a and of g.

The depthwise tile (_dw_tile_paths) takes one of three paths by scalar tests per tile, as the
depthwise kernels do; the pointwise product is tl.dot (_mma; fp64: an elementwise product and a
sum).
"""
import triton
import triton.language as tl

from ._common import _int64x4, _zeros_1d, _zeros_2d


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
    INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y = act2(pw @ act1(dw(x))); GRAD_MODE: y := gy * act2'(pw @ act1(dw(x)) + pw_b)."""
    if INT64:  # offsets inside one image past 2**31: every stride, so every offset, in int64
        sxn, sxc, sxh, sxw = _int64x4(sxn, sxc, sxh, sxw)
        syn, syc, syh, syw = _int64x4(syn, syc, syh, syw)
        sgn, sgc, sgh, sgw = _int64x4(sgn, sgc, sgh, sgw)
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
    INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """grad_z[n, k, p] = (sum_co g[n, co, p] * pw[co, k]) * act1'(z[n, k, p])."""
    if INT64:  # offsets inside one image past 2**31: every stride, so every offset, in int64
        sxn, sxc, sxh, sxw = _int64x4(sxn, sxc, sxh, sxw)
        sgn, sgc, sgh, sgw = _int64x4(sgn, sgc, sgh, sgw)
        szn, szc, szh, szw = _int64x4(szn, szc, szh, szw)
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
    INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Split s of the pixel tiles: wsw[s, co, k] = sum g[co, p] a[k, p]; wsb[s, co] = sum g[co, p]."""
    if INT64:  # offsets inside one image past 2**31: every stride, so every offset, in int64
        sxn, sxc, sxh, sxw = _int64x4(sxn, sxc, sxh, sxw)
        sgn, sgc, sgh, sgw = _int64x4(sgn, sgc, sgh, sgw)
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
    acc_b = _zeros_1d(BLOCK_CO, IS_F64)
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
