"""Self-check + timing of the CUDA depthwise forward / grad-input kernels (csrc/cuda/).

Usage (on a GPU machine, after building convext with CUDA):
    python bench/cuda_selfcheck_fwd_bwd_input.py            # correctness sweep + suite timings
    python bench/cuda_selfcheck_fwd_bwd_input.py --no-bench # correctness only
    python bench/cuda_selfcheck_fwd_bwd_input.py --big      # also a >= 2^31-element tensor (needs ~20 GB)
    python bench/cuda_selfcheck_fwd_bwd_input.py --cases 400 --seed 1
    python bench/cuda_selfcheck_fwd_bwd_input.py --disable-fast-paths   # v1 paths only (env var, read once)

Checks torch.ops.convext.depthwise_conv2d / depthwise_conv2d_backward_input against a float64
F.conv2d reference (and its autograd grad) computed from the same (rounded) inputs, with an
error bound relative to conv(|x|, |w|); checks output memory format, and that two runs are
bitwise identical. Prints PASS/FAIL lines and a summary; exit status 1 on any failure.
"""
import argparse
import math
import os
import random
import sys

import torch
from torch._prims_common import suggest_memory_format
import torch.nn.functional as F


def load_ops():
    try:
        import convext  # noqa: F401  (registers the ops)
    except Exception as e:  # the package may be mid-development; the extension alone suffices
        print(f"note: import convext failed ({e!r}); trying convext._C", file=sys.stderr)
    if not hasattr(torch.ops.convext, "depthwise_conv2d"):
        import convext._C  # noqa: F401
    return torch.ops.convext.depthwise_conv2d, torch.ops.convext.depthwise_conv2d_backward_input


RTOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 2.5e-2}


def ref_forward(x, w, b, stride, pad, dil):
    C = x.shape[1]
    xp = F.pad(x, (pad[2], pad[3], pad[0], pad[1]))
    return F.conv2d(xp, w, b, stride, 0, dil, groups=C)


def ref_backward_input(go, w, in_size, stride, pad, dil):
    x = torch.zeros(in_size, dtype=go.dtype, device=go.device, requires_grad=True)
    y = ref_forward(x, w, None, stride, pad, dil)
    assert y.shape == go.shape, (y.shape, go.shape)
    (g,) = torch.autograd.grad(y, x, go)
    return g


def make_layout(t, layout):
    if layout == "nchw":
        return t.contiguous()
    if layout == "cl":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":  # non-contiguous view: every other column, offset start
        N, C, H, W = t.shape
        big = torch.empty((N, C, H + 1, 2 * W + 1), dtype=t.dtype, device=t.device)
        big.normal_()
        v = big[:, :, 1:, 1::2]
        v.copy_(t)
        return v
    if layout == "cl_sliced":  # channels_last storage, channel slice (misaligned, non-dense)
        N, C, H, W = t.shape
        big = torch.randn((N, C + 3, H, W), dtype=t.dtype, device=t.device).contiguous(
            memory_format=torch.channels_last)
        v = big[:, 1:C + 1]
        v.copy_(t)
        return v
    raise ValueError(layout)


class Stats:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def report(self, ok, msg):
        if ok:
            self.passed += 1
            if VERBOSE:
                print("PASS", msg)
        else:
            self.failed += 1
            print("FAIL", msg)


VERBOSE = False


def check_close(out, ref, bound_ref, dtype, taps):
    if out.numel() == 0:
        return True, "empty"
    err = (out.double() - ref).abs()
    acc_eps = 2.0 ** -52 if dtype == torch.float64 else 2.0 ** -23
    tol = (RTOL[dtype] + 2 * acc_eps * taps) * bound_ref + (1e-300 if dtype == torch.float64 else 1e-6)
    bad = err > tol
    if not torch.isfinite(out.double()).all():
        return False, "non-finite output"
    if bad.any():
        i = bad.nonzero()[0].tolist()
        return False, f"max_err={err.max().item():.3e} first bad idx {i} out={out.double()[tuple(i)].item():.6g} ref={ref[tuple(i)].item():.6g}"
    return True, f"max_err={err.max().item():.2e}"


def run_case(st, fwd, bwd, cfg, dtype, layout, dev):
    N, C, M, H, W, kh, kw, stride, pad, dil, bias = cfg
    g = torch.Generator(device="cpu").manual_seed(hash((cfg, str(dtype), layout)) & 0xFFFFFFFF)
    x64 = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    w64 = torch.randn(C * M, 1, kh, kw, generator=g, dtype=torch.float64)
    b64 = torch.randn(C * M, generator=g, dtype=torch.float64) if bias else None
    # round to the test dtype so the float64 reference sees the same values
    x = make_layout(x64.to(dtype).to(dev), layout)
    w = w64.to(dtype).to(dev)
    b = b64.to(dtype).to(dev) if bias else None
    xr, wr = x.double(), w.double()
    br = b.double() if bias else None
    name = f"N{N} C{C} M{M} {H}x{W} k{kh}x{kw} s{stride} p{pad} d{dil} b{int(bias)} {str(dtype)[6:]} {layout}"
    try:
        ref = ref_forward(xr, wr, br, stride, pad, dil)
        bound = ref_forward(xr.abs(), wr.abs(), br.abs() if bias else None, stride, pad, dil)
        out = fwd(x, w, b, list(stride), list(pad), list(dil))
        out2 = fwd(x, w, b, list(stride), list(pad), list(dil))
        torch.cuda.synchronize()
        ok = out.shape == ref.shape and out.dtype == dtype
        msg = f"shape {tuple(out.shape)} vs {tuple(ref.shape)}"
        if ok:
            ok, msg = check_close(out, ref, bound, dtype, kh * kw)
        if ok and not out.is_contiguous(memory_format=suggest_memory_format(x)):
            ok, msg = False, "output memory format differs from input.suggest_memory_format()"
        if ok and not torch.equal(out, out2):
            ok, msg = False, "two runs differ bitwise"
        st.report(ok, f"fwd  {name}: {msg}")
    except Exception as e:  # noqa: BLE001
        st.report(False, f"fwd  {name}: exception {e!r}")
        return
    try:
        go64 = torch.randn(ref.shape, generator=g, dtype=torch.float64)
        go = make_layout(go64.to(dtype).to(dev), layout)
        gor = go.double()
        gref = ref_backward_input(gor, wr, (N, C, H, W), stride, pad, dil)
        gbound = ref_backward_input(gor.abs(), wr.abs(), (N, C, H, W), stride, pad, dil)
        gi = bwd(go, w, [N, C, H, W], list(stride), list(pad), list(dil))
        gi2 = bwd(go, w, [N, C, H, W], list(stride), list(pad), list(dil))
        torch.cuda.synchronize()
        ok = gi.shape == gref.shape and gi.dtype == dtype
        msg = f"shape {tuple(gi.shape)} vs {tuple(gref.shape)}"
        if ok:
            ok, msg = check_close(gi, gref, gbound, dtype, kh * kw * M)
        if ok and not gi.is_contiguous(memory_format=suggest_memory_format(go)):
            ok, msg = False, "grad_input memory format differs from grad_output.suggest_memory_format()"
        if ok and not torch.equal(gi, gi2):
            ok, msg = False, "two runs differ bitwise"
        st.report(ok, f"bwdi {name}: {msg}")
    except Exception as e:  # noqa: BLE001
        st.report(False, f"bwdi {name}: exception {e!r}")


def random_cfg(rng):
    kh = rng.choice([1, 2, 3, 3, 3, 5, 5, 7, 7, 9, 13, 4])
    kw = kh if rng.random() < 0.7 else rng.choice([1, 3, 5, 7, 11, 2])
    s = rng.choice([1, 1, 1, 2, 2, 3])
    stride = (s, s) if rng.random() < 0.85 else (rng.choice([1, 2, 3]), rng.choice([1, 2, 3]))
    d = rng.choice([1, 1, 1, 2, 3, 4])
    dil = (d, d) if rng.random() < 0.85 else (rng.choice([1, 2, 4]), rng.choice([1, 3]))
    N = rng.choice([1, 2, 3])
    C = rng.choice([1, 3, 4, 8, 12, 16, 20, 33, 64])
    M = rng.choice([1, 1, 1, 2, 3])
    ekh, ekw = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
    pad = [rng.randint(0, ekh) for _ in range(2)] + [rng.randint(0, ekw) for _ in range(2)]
    H = rng.randint(max(1, ekh - pad[0] - pad[1]), ekh + rng.choice([0, 5, 17, 40, 70]))
    W = rng.randint(max(1, ekw - pad[2] - pad[3]), ekw + rng.choice([0, 5, 17, 40, 70]))
    return (N, C, M, H, W, kh, kw, stride, tuple(pad), dil, rng.random() < 0.5)


FIXED = [
    # (N, C, M, H, W, kh, kw, stride, pad[t,b,l,r], dil, bias)
    (2, 8, 1, 56, 56, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True),
    (2, 8, 1, 57, 55, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), False),
    (2, 16, 1, 14, 14, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), True),
    (2, 16, 1, 28, 28, 7, 7, (1, 1), (3, 3, 3, 3), (1, 1), False),
    (2, 8, 1, 33, 33, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), True),
    (2, 8, 1, 33, 33, 5, 5, (1, 1), (8, 8, 8, 8), (4, 4), False),
    (2, 8, 1, 64, 64, 3, 3, (1, 1), (3, 3, 3, 3), (3, 3), False),
    (2, 8, 1, 14, 14, 13, 13, (1, 1), (6, 6, 6, 6), (1, 1), True),
    (1, 4, 1, 56, 56, 31, 31, (1, 1), (15, 15, 15, 15), (1, 1), False),
    (2, 8, 1, 56, 56, 1, 11, (1, 1), (0, 0, 5, 5), (1, 1), True),
    (2, 8, 1, 40, 40, 11, 1, (1, 1), (5, 5, 0, 0), (1, 1), False),
    (2, 8, 1, 20, 20, 3, 3, (1, 1), (0, 1, 2, 0), (1, 1), False),      # asymmetric
    (2, 8, 1, 10, 10, 3, 3, (1, 1), (5, 6, 7, 4), (1, 1), True),       # padding > kernel extent
    (2, 6, 3, 23, 19, 3, 5, (1, 1), (1, 1, 2, 2), (1, 1), True),       # multiplier 3
    (2, 6, 2, 23, 19, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), True),
    (2, 6, 2, 23, 19, 7, 7, (3, 2), (3, 3, 3, 3), (2, 1), False),
    (1, 4, 1, 1, 1, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), True),
    (3, 5, 1, 7, 300, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False),
    (0, 8, 1, 14, 14, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True),       # N = 0
    (1, 4, 1, 40, 40, 31, 31, (1, 1), (0, 0, 0, 0), (1, 1), False),
    (1, 4, 1, 300, 17, 9, 9, (2, 2), (4, 4, 4, 4), (2, 2), True),
    # v2 fast paths: strided grad-input gather (nchw + channels_last V=4/V=8), column-strip
    # NCHW kernel (k 3/5/7, s 1/2, dilation, multiplier, W > 256 chunks), balanced cl blocks
    (2, 24, 1, 30, 30, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), False),
    (2, 40, 1, 29, 31, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1), True),
    (2, 16, 1, 33, 33, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), False),
    (2, 16, 1, 40, 37, 3, 3, (3, 3), (2, 2, 2, 2), (2, 2), False),
    (2, 8, 1, 31, 30, 3, 3, (2, 1), (1, 1, 1, 1), (1, 1), False),
    (1, 8, 1, 45, 45, 5, 5, (4, 4), (4, 4, 4, 4), (2, 2), False),
    (2, 8, 1, 30, 30, 3, 3, (2, 2), (2, 2, 2, 2), (2, 2), False),   # stride 2, dilation 2: empty phases
    (1, 8, 1, 23, 26, 3, 3, (2, 2), (0, 2, 1, 0), (3, 1), True),
    (1, 4, 1, 40, 40, 3, 3, (9, 9), (1, 1, 1, 1), (1, 1), False),   # stride > 8: generic
    (1, 4, 1, 9, 600, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True),    # W > 256
    (1, 4, 1, 9, 700, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1), False),
    (2, 8, 1, 40, 41, 7, 7, (1, 1), (9, 9, 9, 9), (3, 3), True),
    (2, 8, 1, 33, 33, 5, 5, (2, 2), (4, 4, 4, 4), (2, 2), True),
    (2, 6, 2, 21, 23, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), True),
    (2, 4, 3, 30, 30, 7, 7, (2, 2), (6, 6, 6, 6), (2, 2), False),
    (3, 7, 1, 5, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True),       # tiny planes, many per block
    (1, 144, 1, 10, 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True),   # cl: 2 balanced channel blocks
    (1, 136, 1, 9, 10, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), False),
    (1, 144, 1, 16, 16, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), False),
]


def correctness(args, fwd, bwd, dev):
    st = Stats()
    rng = random.Random(args.seed)
    cfgs = FIXED + [random_cfg(rng) for _ in range(args.cases)]
    layouts = ["nchw", "cl", "sliced", "cl_sliced"]
    dtypes = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
    for i, cfg in enumerate(cfgs):
        for dtype in dtypes:
            for layout in (layouts if i < len(FIXED) else [rng.choice(layouts)]):
                run_case(st, fwd, bwd, cfg, dtype, layout, dev)
    # inf/nan propagation must match torch (no 0*inf from padded taps of the large-kernel path)
    for k in (3, 13):
        x = torch.randn(1, 4, 20, 20, device=dev)
        x[0, 0, 5, 5] = float("inf")
        x[0, 1, 0, 19] = float("nan")
        w = torch.randn(4, 1, k, k, device=dev)
        p = [k // 2] * 4
        out = fwd(x, w, None, [1, 1], p, [1, 1])
        ref = F.conv2d(x, w, None, 1, k // 2, 1, groups=4)
        ok = torch.equal(torch.isnan(out), torch.isnan(ref)) and torch.equal(torch.isinf(out), torch.isinf(ref))
        st.report(ok, f"fwd inf/nan propagation k={k}")
    if args.big:
        big_check(st, fwd, bwd, dev)
    return st


def big_check(st, fwd, bwd, dev):
    # >= 2^31 elements (bf16): spot-check rows at the end against F.conv2d on a slice.
    for layout in ("nchw", "cl"):
        N, C, H, W = 1, 4, 23200, 23200  # 2.15e9 elements
        x = torch.randn(N, C, H, W, device=dev, dtype=torch.bfloat16)
        if layout == "cl":
            x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(C, 1, 3, 3, device=dev, dtype=torch.bfloat16)
        out = fwd(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1])
        rows = slice(H - 6, H)
        ref = F.conv2d(F.pad(x[:, :, H - 7:].float(), (1, 1, 0, 1)), w.float(), None, 1, 0, 1, groups=C)
        err = (out[:, :, rows].float() - ref).abs().max().item()
        st.report(err < 0.1, f"fwd big {layout} numel={x.numel()} tail max_err={err:.3e}")
        go = torch.randn_like(out)
        gi = bwd(go, w, [N, C, H, W], [1, 1], [1, 1, 1, 1], [1, 1])
        gref = ref_backward_input(go[:, :, H - 8:].double(), w.double(), (N, C, 8, W), (1, 1), (1, 1, 1, 1), (1, 1))
        err = (gi[:, :, H - 6:].double() - gref[:, :, 2:]).abs().max().item()
        st.report(err < 0.1, f"bwdi big {layout} tail max_err={err:.3e}")
        del x, out, go, gi
        torch.cuda.empty_cache()


SUITE = [  # N, C, H=W, k, stride, dilation
    (64, 144, 56, 3, 1, 1), (64, 96, 112, 3, 2, 1), (64, 384, 14, 3, 1, 1), (64, 240, 28, 5, 1, 1),
    (64, 96, 56, 7, 1, 1), (64, 384, 14, 7, 1, 1), (16, 480, 33, 3, 1, 2), (16, 960, 33, 5, 1, 4),
    (32, 256, 64, 3, 1, 3), (32, 512, 14, 13, 1, 1), (16, 128, 56, 31, 1, 1), (64, 96, 56, "1x11", 1, 1),
]


def bench(fwd, bwd, dev):
    try:
        from triton.testing import do_bench
    except Exception:  # noqa: BLE001
        def do_bench(fn, warmup=25, rep=100):
            for _ in range(5):
                fn()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(20):
                fn()
            e.record()
            torch.cuda.synchronize()
            return s.elapsed_time(e) / 20
    print(f"\n{'shape':32s} {'dtype':5s} {'fmt':4s} | {'fwd us':>8s} {'GB/s':>6s} {'torch us':>8s} {'x':>5s} "
          f"| {'bwdi us':>8s} {'GB/s':>6s} {'torch us':>8s} {'x':>5s} | {'fwd TFLOP/s':>10s}")
    for (N, C, H, k, s, d) in SUITE:
        kh, kw = (1, 11) if k == "1x11" else (k, k)
        ph, pw = d * (kh - 1) // 2, d * (kw - 1) // 2
        for dtype in (torch.float32, torch.bfloat16):
            for fmt in ("nchw", "cl"):
                x = torch.randn(N, C, H, H, device=dev, dtype=dtype)
                if fmt == "cl":
                    x = x.contiguous(memory_format=torch.channels_last)
                w = torch.randn(C, 1, kh, kw, device=dev, dtype=dtype)
                b = torch.randn(C, device=dev, dtype=dtype)
                pad = [ph, ph, pw, pw]
                y = fwd(x, w, b, [s, s], pad, [d, d])
                go = torch.randn_like(y)
                t_f = do_bench(lambda: fwd(x, w, b, [s, s], pad, [d, d]))
                t_tf = do_bench(lambda: F.conv2d(x, w, b, s, (ph, pw), d, groups=C))
                t_b = do_bench(lambda: bwd(go, w, [N, C, H, H], [s, s], pad, [d, d]))
                t_tb = do_bench(lambda: torch.ops.aten.convolution_backward(
                    go, x, w, None, [s, s], [ph, pw], [d, d], False, [0, 0], C, [True, False, False]))
                nbytes = (x.numel() + y.numel()) * x.element_size()
                flops = 2 * y.numel() * kh * kw
                print(f"{str((N, C, H, k, s, d)):32s} {str(dtype)[6:]:5s} {fmt:4s} | {t_f * 1e3:8.1f} "
                      f"{nbytes / t_f / 1e6:6.0f} {t_tf * 1e3:8.1f} {t_tf / t_f:5.2f} | {t_b * 1e3:8.1f} "
                      f"{nbytes / t_b / 1e6:6.0f} {t_tb * 1e3:8.1f} {t_tb / t_b:5.2f} | {flops / t_f / 1e9:10.1f}")
                del x, y, go


def main():
    global VERBOSE
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--bench-only", action="store_true")
    ap.add_argument("--big", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--disable-fast-paths", nargs="?", const="1", default=None, metavar="WHICH",
                    help="set CONVEXT_DISABLE_FAST_PATHS (default 1 = all; or e.g. 'gather,colstrip,nhwcbal,nhwc2') "
                         "before the first op call, to check / time the v1 fallback paths")
    args = ap.parse_args()
    if args.disable_fast_paths is not None:
        os.environ["CONVEXT_DISABLE_FAST_PATHS"] = args.disable_fast_paths
    print(f"CONVEXT_DISABLE_FAST_PATHS={os.environ.get('CONVEXT_DISABLE_FAST_PATHS', '')!r}")
    VERBOSE = args.verbose
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    dev = torch.device("cuda")
    fwd, bwd = load_ops()
    failed = 0
    if not args.bench_only:
        st = correctness(args, fwd, bwd, dev)
        print(f"\nSUMMARY: {st.passed} passed, {st.failed} failed")
        failed = st.failed
    if not args.no_bench:
        bench(fwd, bwd, dev)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
