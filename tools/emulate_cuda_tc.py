"""Block-level NumPy emulation of csrc/cuda/depthwise_conv2d_tc.cu: the same loops, staging windows,
Toeplitz band and fragment offsets, with NumPy matmuls in place of WMMA, against F.conv2d in float64
(forward, and stride-1 grad-input as the engine calls it). Checks the index math without a GPU;
the WMMA calls themselves are checked only on a GPU (tests/test_cuda_tensor_core.py).
    python tools/emulate_cuda_tc.py
"""
import numpy as np, torch, torch.nn.functional as F, itertools, math
kGroupW = 64
def emulate(src, w, bias, dst_shape, KH, KW, dh, dw, pt, pl, M, reduce_m, flip):
    N, C_src, H_src, W_src = src.shape
    _, C_dst, H_dst, W_dst = dst_shape
    BK = math.ceil((16 + (KW - 1) * dw) / 16) * 16
    LDA = math.ceil((kGroupW - 16 + BK) / 16) * 16 + 16
    NW = 1 if H_dst <= 16 else 2 if H_dst <= 32 else 4
    BH = 16 * NW
    AROWS = BH + (KH - 1) * dh
    dst = np.full(dst_shape, np.nan)
    KK = KH * KW
    R = M if reduce_m else 1
    for n, cd, rb in itertools.product(range(N), range(C_dst), range(math.ceil(H_dst / BH))):
        y0 = rb * BH
        for x0 in range(0, W_dst, kGroupW):
            acc = np.zeros((BH, kGroupW))
            acols = kGroupW - 16 + BK
            assert acols <= LDA
            for r in range(R):
                cs = cd * M + r if reduce_m else cd // M
                wrow = cd * M + r if reduce_m else cd
                Ws = np.array([w.reshape(-1, KK)[wrow, (KK - 1 - e) if flip else e] for e in range(KK)])
                As = np.zeros((AROWS, LDA))
                for i in range(AROWS):
                    for k in range(acols):
                        iy = y0 - pt + i; ix = x0 - pl + k
                        if 0 <= iy < H_src and 0 <= ix < W_src:
                            As[i, k] = src[n, cs, iy, ix]
                for kh in range(KH):
                    Bs = np.zeros((BK, 16))
                    for k in range(BK):
                        for q in range(16):
                            jd = k - q; j = int(jd / dw) if jd >= 0 else -((-jd) // dw)  # C truncation
                            if jd >= 0 and jd - j * dw == 0 and j < KW:
                                Bs[k, q] = Ws[kh * KW + j]
                    for warp in range(NW):
                        rows = slice(warp * 16 + kh * dh, warp * 16 + kh * dh + 16)
                        for f in range(4):
                            Af = As[rows, f * 16: f * 16 + BK]
                            assert Af.shape == (16, BK), Af.shape
                            acc[warp * 16: warp * 16 + 16, f * 16: f * 16 + 16] += Af @ Bs
            b = bias[cd] if bias is not None else 0
            for i in range(BH):
                for q in range(kGroupW):
                    y, x = y0 + i, x0 + q
                    if y < H_dst and x < W_dst:
                        dst[n, cd, y, x] = acc[i, q] + b
    return dst

rng = torch.Generator().manual_seed(0)
def case_fwd(N, C, M, H, W, KH, KW, p, d):
    x = torch.randn(N, C, H, W, generator=rng, dtype=torch.float64)
    w = torch.randn(C * M, 1, KH, KW, generator=rng, dtype=torch.float64)
    b = torch.randn(C * M, generator=rng, dtype=torch.float64)
    ref = F.conv2d(x, w, b, 1, p, d, groups=C)
    out = emulate(x.numpy(), w.numpy(), b.numpy(), ref.shape, KH, KW, d[0], d[1], p[0], p[1], M, 0, 0)
    print("fwd", (N, C, M, H, W, KH, KW, p, d), np.abs(out - ref.numpy()).max())
    # grad-input, stride 1: correlation of go with flipped kernel, pt' = (KH-1)*dh - pt
    go = torch.randn(ref.shape, generator=rng, dtype=torch.float64)
    xr = x.clone().requires_grad_(); F.conv2d(xr, w, None, 1, p, d, groups=C).backward(go)
    gi = emulate(go.numpy(), w.numpy(), None, x.shape, KH, KW, d[0], d[1], (KH - 1) * d[0] - p[0], (KW - 1) * d[1] - p[1], M, 1, 1)
    print("gi ", np.abs(gi - xr.grad.numpy()).max())
case_fwd(1, 2, 1, 20, 23, 9, 9, (4, 4), (1, 1))
case_fwd(1, 1, 2, 17, 70, 13, 13, (6, 6), (1, 1))
case_fwd(1, 1, 1, 40, 30, 9, 11, (4, 5), (2, 1))
case_fwd(1, 1, 1, 33, 70, 31, 31, (0, 0), (1, 1))


def emulate_weight(x, go, KH, KW, dh, dw, pt, pl, M):
    """tc_weight_kernel: per (oc, n, row block, column group) partials of the band diagonals."""
    N, C, H, W = x.shape
    _, C_out, H_out, W_out = go.shape
    BK = math.ceil((16 + (KW - 1) * dw) / 16) * 16
    LDA = math.ceil((kGroupW - 16 + BK) / 16) * 16 + 16
    NW = 1 if H_out <= 16 else 2 if H_out <= 32 else 4
    BH = 16 * NW
    AROWS = BH + (KH - 1) * dh
    row_blocks, groups = math.ceil(H_out / BH), math.ceil(W_out / kGroupW)
    parts = N * row_blocks * groups
    ws = np.full((parts, C_out, KH * KW), np.nan)
    for oc, part in itertools.product(range(C_out), range(parts)):
        grp = part % groups; t = part // groups; rb = t % row_blocks; n = t // row_blocks
        ic = oc // M; y0 = rb * BH; x0 = grp * kGroupW
        acols = kGroupW - 16 + BK
        Xs = np.zeros((AROWS, LDA)); Gs = np.zeros((BH, kGroupW + 16))
        for i in range(AROWS):
            for k in range(acols):
                iy, ix = y0 - pt + i, x0 - pl + k
                if 0 <= iy < H and 0 <= ix < W:
                    Xs[i, k] = x[n, ic, iy, ix]
        for r in range(BH):
            for q in range(kGroupW):
                if y0 + r < H_out and x0 + q < W_out:
                    Gs[r, q] = go[n, oc, y0 + r, x0 + q]
        for warp in range(NW):
            for kh in range(warp, KH, NW):
                G = np.zeros((BK, 16))
                for rr in range(0, BH, 16):
                    for f in range(4):
                        b = Gs[rr:rr + 16, f * 16:f * 16 + 16]
                        a = Xs[rr + kh * dh: rr + kh * dh + 16, f * 16: f * 16 + BK]  # [16 rows x BK]
                        assert a.shape == (16, BK)
                        G += a.T @ b
                for j in range(KW):
                    ws[part, oc, kh * KW + j] = sum(G[q + j * dw, q] for q in range(16) if q + j * dw < BK)
    return ws.sum(0).reshape(C_out, 1, KH, KW)


def case_weight(N, C, M, H, W, KH, KW, p, d):
    x = torch.randn(N, C, H, W, generator=rng, dtype=torch.float64)
    w = torch.randn(C * M, 1, KH, KW, generator=rng, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w, None, 1, p, d, groups=C)
    go = torch.randn(y.shape, generator=rng, dtype=torch.float64)
    y.backward(go)
    gw = emulate_weight(x.numpy(), go.numpy(), KH, KW, d[0], d[1], p[0], p[1], M)
    print("gw ", (N, C, M, H, W, KH, KW, p, d), np.abs(gw - w.grad.numpy()).max())


case_weight(2, 2, 1, 20, 23, 9, 9, (4, 4), (1, 1))
case_weight(1, 1, 2, 40, 70, 13, 13, (6, 6), (1, 1))
case_weight(1, 1, 1, 40, 30, 9, 11, (4, 5), (2, 1))
case_weight(1, 1, 1, 33, 50, 31, 31, (3, 0), (1, 1))
