"""GPU self-check + benchmark of convext's CUDA grad-weight kernel.

    python bench/cuda_selfcheck_bwd_weight.py            # correctness sweep + suite timings
    python bench/cuda_selfcheck_bwd_weight.py --no-bench # correctness only
    python bench/cuda_selfcheck_bwd_weight.py --big      # also a >= 2^31-element case (needs ~12 GB)
    python bench/cuda_selfcheck_bwd_weight.py --disable-fast-paths   # old kernels only

Checks torch.ops.convext.depthwise_conv2d_backward_weight against the weight/bias gradient
of F.conv2d(groups=C) (torch.autograd.grad) in float64, float32, bfloat16 and float16: the
error vs a float64 reference must be within a small multiple of torch's own error at that
dtype (plus a floor). Every case also runs twice and must be bitwise equal. Prints one
PASS/FAIL line per case and a summary.
"""
import argparse
import math
import random
import sys

import torch
import torch.nn.functional as F

try:
    import convext  # noqa: F401  (registers the ops)
except Exception as e:  # the package may not import while it is being written
    print(f"note: `import convext` failed ({e!r}); loading convext._C directly")
    import convext._C  # noqa: F401

OP = torch.ops.convext.depthwise_conv2d_backward_weight
DEV = "cuda"
FLOOR = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}


def out_size(n, p0, p1, k, s, d):
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


def torch_grads(go, x, k, stride, pad, dil, M, dtype):
    """(grad_weight, grad_bias) of F.conv2d(groups=C) computed by torch autograd at `dtype`."""
    C = x.shape[1]
    xx = x.detach().to(dtype).requires_grad_(False)
    w = torch.zeros(C * M, 1, k[0], k[1], device=x.device, dtype=dtype, requires_grad=True)
    b = torch.zeros(C * M, device=x.device, dtype=dtype, requires_grad=True)
    xp = F.pad(xx, (pad[2], pad[3], pad[0], pad[1]))
    y = F.conv2d(xp, w, b, stride=stride, padding=0, dilation=dil, groups=C)
    gw, gb = torch.autograd.grad(y, (w, b), go.to(dtype))
    return gw, gb


def make_layout(t, layout):
    if layout == "nchw":
        return t.contiguous()
    if layout == "cl":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":  # every other column of a wider tensor, channel-sliced
        N, C, H, W = t.shape
        big = torch.zeros(N, C + 2, H, 2 * W + 1, device=t.device, dtype=t.dtype)
        big[:, 1:C + 1, :, 1::2] = t
        return big[:, 1:C + 1, :, 1::2]
    if layout == "cl_sliced":  # channels_last storage, channel-sliced (misaligned for vectors)
        N, C, H, W = t.shape
        big = torch.zeros(N, C + 1, H, W, device=t.device, dtype=t.dtype).contiguous(
            memory_format=torch.channels_last)
        big[:, 1:] = t
        return big[:, 1:]
    raise ValueError(layout)


def check_case(tag, N, C, M, H, W, k, stride, pad, dil, dtype, layout, go_layout=None, stats=None):
    Ho = out_size(H, pad[0], pad[1], k[0], stride[0], dil[0])
    Wo = out_size(W, pad[2], pad[3], k[1], stride[1], dil[1])
    assert Ho >= 1 and Wo >= 1
    g = torch.Generator(device="cpu").manual_seed(hash((N, C, M, H, W, tuple(k), tuple(stride), tuple(pad), tuple(dil))) % (2**31))
    x64 = torch.randn(N, C, H, W, generator=g, dtype=torch.float64).to(DEV)
    go64 = torch.randn(N, C * M, Ho, Wo, generator=g, dtype=torch.float64).to(DEV)
    # quantise once so every dtype sees the same values
    xq = x64.to(dtype).to(torch.float64)
    goq = go64.to(dtype).to(torch.float64)
    ref_w, ref_b = torch_grads(goq, xq, k, stride, pad, dil, M, torch.float64)
    x = make_layout(xq.to(dtype), layout)
    go = make_layout(goq.to(dtype), go_layout or layout)
    args = (list(k), list(stride), list(pad), list(dil))
    gw, gb = OP(go, x, *args, True)
    gw2, gb2 = OP(go, x, *args, True)
    ok = True
    msgs = []
    if gw.shape != (C * M, 1, k[0], k[1]) or gb.shape != (C * M,) or gw.dtype != dtype or not gw.is_contiguous():
        ok = False
        msgs.append(f"bad output meta {tuple(gw.shape)} {tuple(gb.shape)} {gw.dtype}")
    if not (torch.equal(gw, gw2) and torch.equal(gb, gb2)):
        ok = False
        msgs.append("not bitwise reproducible")
    if dtype == torch.float64:
        tw, tb = ref_w, ref_b
    else:
        tw, tb = torch_grads(goq, xq, k, stride, pad, dil, M, dtype)
    scale_w = ref_w.abs().max().item() + 1e-30
    scale_b = ref_b.abs().max().item() + 1e-30
    # per-element scale: sqrt(#terms) * |values| gives the natural rounding size
    e_ours = max((gw.double() - ref_w).abs().max().item() / scale_w, (gb.double() - ref_b).abs().max().item() / scale_b)
    e_torch = max((tw.double() - ref_w).abs().max().item() / scale_w, (tb.double() - ref_b).abs().max().item() / scale_b)
    tol = 4.0 * e_torch + FLOOR[dtype]
    # Per-element rounding slack that accounts for the reduction: a sum of L terms accumulated
    # in fp32 (fp64 for float64) in a fixed but different order than torch's has an error of
    # about u*sqrt(L)*sum|terms| (probabilistic bound); this matters when max|ref| is a single
    # cancelled sum (e.g. C*M == 1 bias). Capped at FLOOR*sum|terms| so real bugs still show.
    L = N * Ho * Wo
    u = 2.0**-53 if dtype == torch.float64 else 2.0**-24
    abs_w, abs_b = torch_grads(goq.abs(), xq.abs(), k, stride, pad, dil, M, torch.float64)
    rel_slack = min(2.0 * u * math.sqrt(L), FLOOR[dtype])
    over_w = ((gw.double() - ref_w).abs() - tol * scale_w - rel_slack * abs_w).max().item()
    over_b = ((gb.double() - ref_b).abs() - tol * scale_b - rel_slack * abs_b).max().item()
    if not (over_w <= 0 and over_b <= 0) or not math.isfinite(e_ours):
        ok = False
        msgs.append(f"err {e_ours:.3e} > tol {tol:.3e} (+ {rel_slack:.1e}*sum|terms| per element)")
    # compute_bias=False: grad_bias is (0,) and grad_weight identical
    gw3, gb3 = OP(go, x, *args, False)
    if gb3.numel() != 0 or not torch.equal(gw3, gw):
        ok = False
        msgs.append("compute_bias=False differs")
    line = (f"{'PASS' if ok else 'FAIL'} {tag} N={N} C={C} M={M} {H}x{W} k={k} s={stride} p={pad} d={dil} "
            f"{str(dtype).split('.')[-1]} {layout}{'/' + go_layout if go_layout else ''} "
            f"err={e_ours:.2e} torch_err={e_torch:.2e} {' '.join(msgs)}")
    print(line, flush=True)
    if stats is not None:
        stats["pass" if ok else "fail"] += 1
        if not ok:
            stats["failed"].append(line)
    return ok


def random_case(rng):
    kernels = [(1, 1), (3, 3), (3, 3), (5, 5), (7, 7), (1, 11), (3, 1), (2, 4), (13, 13), (31, 31), (4, 4)]
    while True:
        k = rng.choice(kernels)
        big = max(k) >= 13
        s = (rng.randint(1, 3), rng.randint(1, 3))
        d = (1, 1) if big else (rng.randint(1, 4), rng.randint(1, 4))
        N = rng.randint(1, 3)
        C = rng.choice([1, 3, 5, 8, 16, 24]) if not big else rng.choice([3, 8])
        M = rng.choice([1, 1, 2, 3])
        lo = 33 if big else 5
        H = rng.randint(lo, lo + 35) | 1 if rng.random() < 0.7 else rng.randint(lo, lo + 35)
        W = rng.randint(lo, lo + 35)
        pad = [rng.randint(0, d[0] * (k[0] - 1)), rng.randint(0, d[0] * (k[0] - 1)),
               rng.randint(0, d[1] * (k[1] - 1)), rng.randint(0, d[1] * (k[1] - 1))]
        Ho = out_size(H, pad[0], pad[1], k[0], s[0], d[0])
        Wo = out_size(W, pad[2], pad[3], k[1], s[1], d[1])
        if Ho >= 1 and Wo >= 1:
            return N, C, M, H, W, k, s, pad, d


def correctness(args):
    stats = {"pass": 0, "fail": 0, "failed": []}
    dtypes = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
    # fixed cases that hit each kernel path
    fixed = [
        (2, 16, 1, 17, 19, (3, 3), (1, 1), [1, 1, 1, 1], (1, 1)),
        (2, 16, 1, 30, 31, (5, 5), (1, 1), [2, 2, 2, 2], (1, 1)),
        (2, 16, 1, 23, 23, (7, 7), (1, 1), [3, 3, 3, 3], (1, 1)),
        (2, 8, 1, 40, 37, (3, 3), (2, 2), [1, 1, 1, 1], (1, 1)),
        (2, 16, 1, 33, 33, (3, 3), (1, 1), [2, 2, 2, 2], (2, 2)),
        (1, 8, 1, 33, 33, (5, 5), (1, 1), [8, 8, 8, 8], (4, 4)),
        (1, 8, 1, 40, 40, (13, 13), (1, 1), [6, 6, 6, 6], (1, 1)),
        (1, 8, 1, 40, 40, (31, 31), (1, 1), [15, 15, 15, 15], (1, 1)),
        (2, 8, 1, 20, 30, (1, 11), (1, 1), [0, 0, 5, 5], (1, 1)),
        (2, 8, 2, 20, 21, (3, 3), (1, 2), [0, 1, 1, 0], (1, 3)),
        (2, 6, 3, 19, 300, (3, 3), (1, 1), [1, 1, 1, 1], (1, 1)),   # wide rows: several column tiles
        (3, 16, 1, 9, 9, (3, 3), (3, 2), [2, 0, 0, 2], (2, 3)),
        (1, 8, 1, 1, 1, (3, 3), (1, 1), [1, 1, 1, 1], (1, 1)),      # 1x1 plane, W stride ambiguous
    ]
    for i, c in enumerate(fixed):
        for dt in dtypes:
            for layout in ["nchw", "cl"]:
                check_case(f"fixed{i}", *c, dt, layout, stats=stats)
    # planar fast path (square K in {3,5,7}, sh | dh or sh == 2): odd widths, partial row bands,
    # dilation 2-4, stride 2 with odd/even dilation, column tiles (Wo > 256), sliced views, M > 1
    planar_fast = [
        (3, 5, 1, 29, 31, (3, 3), (1, 1), [1, 1, 1, 1], (1, 1)),
        (2, 4, 1, 37, 41, (3, 3), (2, 2), [1, 0, 1, 0], (1, 1)),
        (2, 4, 1, 41, 39, (3, 3), (2, 1), [3, 3, 2, 2], (3, 2)),
        (2, 4, 2, 27, 45, (5, 5), (2, 2), [4, 4, 4, 4], (2, 2)),
        (1, 6, 1, 35, 35, (5, 5), (1, 1), [8, 8, 8, 8], (4, 4)),
        (2, 3, 1, 25, 23, (7, 7), (1, 1), [3, 3, 3, 3], (1, 1)),
        (2, 3, 1, 30, 33, (7, 7), (2, 2), [3, 2, 3, 2], (1, 1)),
        (1, 4, 1, 40, 41, (7, 7), (1, 2), [6, 6, 6, 6], (2, 3)),
        (1, 2, 3, 13, 600, (3, 3), (1, 1), [1, 1, 1, 1], (1, 1)),
        (1, 2, 1, 11, 530, (5, 5), (1, 2), [2, 2, 2, 2], (1, 1)),
        (5, 3, 1, 7, 9, (3, 3), (1, 1), [0, 0, 0, 0], (1, 1)),
        (2, 3, 1, 50, 20, (3, 3), (2, 2), [2, 2, 2, 2], (4, 4)),
        (1, 2, 1, 30, 30, (5, 5), (2, 3), [6, 6, 6, 6], (3, 3)),
    ]
    for i, c in enumerate(planar_fast):
        for dt in [torch.float32, torch.bfloat16, torch.float16]:
            for layout in ["nchw", "sliced"]:
                check_case(f"pfast{i}", *c, dt, layout, stats=stats)
    # non-finite input outside every output's window must not leak into grad_weight
    x = torch.randn(1, 2, 12, 12, device=DEV)
    x[:, :, 11, :] = float("inf")  # row 11 is never read by a 3x3 stride-2 conv of H=12 w/o padding
    x[:, :, :, 11] = float("nan")
    go = torch.randn(1, 2, 5, 5, device=DEV)
    gw, gb = OP(go, x, [3, 3], [2, 2], [0, 0, 0, 0], [1, 1], True)
    ok = bool(torch.isfinite(gw).all()) and bool(torch.isfinite(gb).all())
    print(f"{'PASS' if ok else 'FAIL'} non-finite input outside the windows stays out")
    stats["pass" if ok else "fail"] += 1
    rng = random.Random(1234)
    layouts = ["nchw", "cl", "sliced", "cl_sliced"]
    for i in range(args.random):
        N, C, M, H, W, k, s, pad, d = random_case(rng)
        dt = rng.choice(dtypes)
        layout = rng.choice(layouts)
        go_layout = rng.choice([None, None, None, "nchw", "cl"])
        check_case(f"rand{i}", N, C, M, H, W, k, s, pad, d, dt, layout, go_layout, stats=stats)
    # N = 0
    x = torch.randn(0, 4, 8, 8, device=DEV)
    go = torch.randn(0, 4, 8, 8, device=DEV)
    gw, gb = OP(go, x, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], True)
    ok = gw.shape == (4, 1, 3, 3) and bool((gw == 0).all()) and gb.shape == (4,) and bool((gb == 0).all())
    print(f"{'PASS' if ok else 'FAIL'} N=0 gives zeros")
    stats["pass" if ok else "fail"] += 1
    if args.big:
        big_case(stats)
    return stats


def big_case(stats):
    """>= 2^31 elements in input and grad_output (bf16): compare 2 channels against torch fp32."""
    N, C, H, W = 2, 16, 8192, 8200  # 2.15e9 elements
    torch.cuda.empty_cache()
    x = torch.randn(N, C, H, W, device=DEV, dtype=torch.bfloat16)
    go = torch.randn(N, C, H, W, device=DEV, dtype=torch.bfloat16)
    assert x.numel() >= 2**31
    gw, gb = OP(go, x, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], True)
    sel = [0, C - 1]
    tw, tb = torch_grads(go[:, sel].float(), x[:, sel].float(), (3, 3), (1, 1), [1, 1, 1, 1], (1, 1), 1, torch.float32)
    err = max((gw[sel].float() - tw).abs().max().item() / tw.abs().max().item(),
              (gb[sel].float() - tb).abs().max().item() / tb.abs().max().item())
    ok = err < 2e-2
    print(f"{'PASS' if ok else 'FAIL'} big N={N} C={C} {H}x{W} bf16 (>=2^31 elements) err={err:.2e}")
    stats["pass" if ok else "fail"] += 1
    del x, go
    torch.cuda.empty_cache()


SUITE = [  # N, C, H=W, k, stride, dilation
    (64, 144, 56, (3, 3), 1, 1), (64, 96, 112, (3, 3), 2, 1), (64, 384, 14, (3, 3), 1, 1),
    (64, 240, 28, (5, 5), 1, 1), (64, 96, 56, (7, 7), 1, 1), (64, 384, 14, (7, 7), 1, 1),
    (16, 480, 33, (3, 3), 1, 2), (16, 960, 33, (5, 5), 1, 4), (32, 256, 64, (3, 3), 1, 3),
    (32, 512, 14, (13, 13), 1, 1), (16, 128, 56, (31, 31), 1, 1), (64, 96, 56, (1, 11), 1, 1),
]


def bench(args):
    from triton.testing import do_bench

    src = torch.empty(256 * 2**20, dtype=torch.uint8, device=DEV)
    dst = torch.empty_like(src)
    t = do_bench(lambda: dst.copy_(src), warmup=50, rep=200)
    copy_bw = 2 * src.numel() / (t * 1e-3)
    print(f"copy bandwidth: {copy_bw / 1e9:.0f} GB/s")
    rows = []
    for dt in [torch.float32, torch.bfloat16]:
        for layout in ["nchw", "cl"]:
            for N, C, H, k, s, d in SUITE:
                pad = [d * (k[0] - 1) // 2] * 2 + [d * (k[1] - 1) // 2] * 2
                Ho = out_size(H, pad[0], pad[1], k[0], s, d)
                Wo = out_size(H, pad[2], pad[3], k[1], s, d)
                mf = torch.channels_last if layout == "cl" else torch.contiguous_format
                x = torch.randn(N, C, H, H, device=DEV, dtype=dt).contiguous(memory_format=mf)
                go = torch.randn(N, C, Ho, Wo, device=DEV, dtype=dt).contiguous(memory_format=mf)
                w = torch.randn(C, 1, k[0], k[1], device=DEV, dtype=dt)
                ours = lambda: OP(go, x, list(k), [s, s], pad, [d, d], True)  # noqa: E731
                theirs = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
                    go, x, w, [C], [s, s], [pad[0], pad[2]], [d, d], False, [0, 0], C, [False, True, True])
                t_ours = do_bench(ours, warmup=25, rep=100)
                t_torch = do_bench(theirs, warmup=25, rep=100)
                nbytes = (x.numel() + go.numel()) * x.element_size()
                bw = nbytes / (t_ours * 1e-3)
                name = f"{N},{C},{H},{k[0]}x{k[1]},s{s},d{d}"
                rows.append((name, dt, layout, t_ours, t_torch))
                print(f"BENCH {name:24s} {str(dt).split('.')[-1]:8s} {layout:4s} ours {t_ours * 1e3:8.1f} us  "
                      f"torch {t_torch * 1e3:8.1f} us  speedup {t_torch / t_ours:5.2f}x  "
                      f"{bw / 1e9:6.0f} GB/s ({100 * bw / copy_bw:4.0f}% of copy)", flush=True)
                del x, go, w
    sp = [r[4] / r[3] for r in rows]
    print(f"bench summary: geomean speedup vs torch {math.exp(sum(map(math.log, sp)) / len(sp)):.2f}x, "
          f"min {min(sp):.2f}x, slower than torch on {sum(v < 1 for v in sp)}/{len(sp)} shapes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--random", type=int, default=300)
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--disable-fast-paths", action="store_true",
                    help="set CONVEXT_DISABLE_FAST_PATHS=1 (read once by the extension at its first call)")
    args = ap.parse_args()
    if args.disable_fast_paths:
        import os
        os.environ["CONVEXT_DISABLE_FAST_PATHS"] = "1"
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    stats = correctness(args)
    print(f"correctness summary: {stats['pass']} PASS, {stats['fail']} FAIL")
    for line in stats["failed"][:20]:
        print("  " + line)
    if not args.no_bench:
        bench(args)
    sys.exit(1 if stats["fail"] else 0)


if __name__ == "__main__":
    main()
