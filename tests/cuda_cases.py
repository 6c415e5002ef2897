"""Cases and float64 checkers of the CUDA depthwise kernels' correctness sweeps (formerly
bench/cuda_selfcheck_fwd_bwd_input.py and bench/cuda_selfcheck_bwd_weight.py).

Two sweeps, each a list of fixed cases (one per kernel path: tile / column-strip / gather / balanced
channels_last / planar grad-weight, large kernels, asymmetric padding, M > 1, N = 0, W > 256) and a
seeded random sweep, over float64 / float32 / bfloat16 / float16 and four layouts:

  fb  the raw forward op and its grad-input op (convext::depthwise_conv2d,
      convext::depthwise_conv2d_backward_input) vs float64 F.conv2d and its autograd grad on the same
      (rounded) inputs, error bound relative to conv(|x|, |w|); output memory format; bitwise-equal reruns.
  bw  the raw grad-weight op (convext::depthwise_conv2d_backward_weight) vs float64 autograd: within 4x
      torch's own error at that dtype plus a floor; compute_bias=False; bitwise-equal reruns.

Used by tests/test_cuda_sweeps.py (GPU-marked; a child process per CONVEXT_DISABLE_FAST_PATHS setting,
which the extension reads once per process), by tests/test_cuda_cases_cpu.py (the same checkers on the
CPU kernels, so this module is exercised without a GPU) and by tools/gpu_check.py (its correctness step:
the CUDA ops and, swapped in, the Triton ops of the same signature). Nothing here needs pytest.

Command line (the child process of the tests; also by hand):

    python tests/cuda_cases.py fb|bw [--random N] [--seed S] [--device cuda|cpu] [--backend cuda|triton]
                                     [--min-taps T] [--max-numel E] [--fixed-only] [-v]

prints one FAIL line per failed check and a last line `SWEEP <sweep> passed P failed F env ...`; exit
status 1 on any failure.
"""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import zlib
from typing import Iterator, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
LAYOUTS = ("nchw", "cl", "sliced", "cl_sliced")
TC_TAPS = 81  # kH*kW from which the tensor-core paths (CONVEXT_CUDA_TC=1, CONVEXT_TRITON_TC) run
SWITCHES = ("CONVEXT_DISABLE_FAST_PATHS", "CONVEXT_CUDA_TC", "CONVEXT_CUDA_NONFINITE", "CONVEXT_TRITON_TC")

Result = Tuple[bool, str]  # (passed, message)


def dtype_name(dtype) -> str:
    return str(dtype).split(".")[-1]


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def stable_seed(*parts) -> int:
    """A seed from the case's description, the same in every process (unlike hash() of strings)."""
    return zlib.crc32(repr(parts).encode())


def out_size(n, p0, p1, k, s, d):
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


def geometry_id(tag, N, C, M, H, W, k, s, p, d):
    """The readable start of a case's test id, e.g. fixed3-n2c16m1-28x28-k7x7-s1x1-p3.3.3.3-d1x1."""
    return f"{tag}-n{N}c{C}m{M}-{H}x{W}-k{k[0]}x{k[1]}-s{s[0]}x{s[1]}-p{'.'.join(map(str, p))}-d{d[0]}x{d[1]}"


def make_layout(t, layout):
    """`t` (4-D) in one of LAYOUTS: contiguous, channels_last, or a non-dense view of a bigger buffer."""
    if layout == "nchw":
        return t.contiguous()
    if layout == "cl":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":  # every other column of a wider buffer, offset start, channel-sliced
        N, C, H, W = t.shape
        big = torch.randn((N, C + 2, H + 1, 2 * W + 1), dtype=torch.float32, device=t.device).to(t.dtype)
        v = big[:, 1:C + 1, 1:, 1::2]
        v.copy_(t)
        return v
    if layout == "cl_sliced":  # channels_last storage, channel slice (misaligned for vectors, non-dense)
        N, C, H, W = t.shape
        big = torch.randn((N, C + 3, H, W), dtype=torch.float32, device=t.device).to(t.dtype).contiguous(
            memory_format=torch.channels_last)
        v = big[:, 1:C + 1]
        v.copy_(t)
        return v
    raise ValueError(layout)


def _suggest_memory_format(t):
    from torch._prims_common import suggest_memory_format
    return suggest_memory_format(t)


# =========================================================================== fb: forward + grad-input

# (N, C, M, H, W, kh, kw, stride, pad[t,b,l,r], dil, bias)
FB_FIXED = [
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

# The undilated 5x5 / 7x7 NCHW forward routing (tile kernel instead of colstrip): the benchmark suite's
# own shapes at reduced batch, stride 1 and 2.
FB_ROUTING = [
    (4, 96, 1, 56, 56, 7, 7, (1, 1), (3, 3, 3, 3), (1, 1), True),
    (4, 384, 1, 14, 14, 7, 7, (1, 1), (3, 3, 3, 3), (1, 1), False),
    (4, 240, 1, 28, 28, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), True),
    (2, 64, 1, 57, 55, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1), False),
    (2, 64, 1, 33, 31, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), True),
    (2, 32, 2, 29, 300, 7, 7, (1, 1), (3, 3, 3, 3), (1, 1), True),
]

# per-dtype relative tolerance of the fb check (plus accumulation slack per tap, see fb_close)
FB_RTOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 2.5e-2}


class FbCase(NamedTuple):
    tag: str  # fixed3, routing1, rand17
    cfg: tuple  # (N, C, M, H, W, kh, kw, stride, pad, dil, bias)
    dtype: torch.dtype
    layout: str

    taps = property(lambda self: self.cfg[5] * self.cfg[6])
    numel = property(lambda self: math.prod(self.cfg[:5]))  # N*C*M*H*W

    @property
    def id(self):
        N, C, M, H, W, kh, kw, s, p, d, b = self.cfg
        return (f"{geometry_id(self.tag, N, C, M, H, W, (kh, kw), s, p, d)}-{'bias' if b else 'nobias'}"
                f"-{dtype_name(self.dtype)}-{self.layout}")


def fb_random_cfg(rng: random.Random) -> tuple:
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


def fb_cases(n_random: int, seed: int = 0, fixed: bool = True) -> Iterator[FbCase]:
    """The fixed cases (every dtype x every layout), then `n_random` random geometries (every dtype, one
    random layout each). A generator: the random part is drawn lazily, and the first k random cases do
    not depend on n_random."""
    if fixed:
        for tag, cfgs in (("fixed", FB_FIXED), ("routing", FB_ROUTING)):
            for i, cfg in enumerate(cfgs):
                for dtype in DTYPES:
                    for layout in LAYOUTS:
                        yield FbCase(f"{tag}{i}", cfg, dtype, layout)
    rng = random.Random(seed)
    for i in range(n_random):
        cfg = fb_random_cfg(rng)
        for dtype in DTYPES:
            yield FbCase(f"rand{i}", cfg, dtype, rng.choice(LAYOUTS))


def fb_ref_forward(x, w, b, stride, pad, dil):
    C = x.shape[1]
    xp = F.pad(x, (pad[2], pad[3], pad[0], pad[1]))
    return F.conv2d(xp, w, b, stride, 0, dil, groups=C)


def fb_ref_backward_input(go, w, in_size, stride, pad, dil):
    x = torch.zeros(in_size, dtype=go.dtype, device=go.device, requires_grad=True)
    y = fb_ref_forward(x, w, None, stride, pad, dil)
    assert y.shape == go.shape, (y.shape, go.shape)
    (g,) = torch.autograd.grad(y, x, go)
    return g


def fb_close(out, ref, bound_ref, dtype, taps) -> Result:
    """|out - ref| <= (rtol(dtype) + 2 * eps_acc * taps) * conv(|x|, |w|) + floor, elementwise."""
    if out.numel() == 0:
        return True, "empty"
    err = (out.double() - ref).abs()
    acc_eps = 2.0 ** -52 if dtype == torch.float64 else 2.0 ** -23
    tol = (FB_RTOL[dtype] + 2 * acc_eps * taps) * bound_ref + (1e-300 if dtype == torch.float64 else 1e-6)
    if not torch.isfinite(out.double()).all():
        return False, "non-finite output"
    bad = err > tol
    if bad.any():
        i = bad.nonzero()[0].tolist()
        return False, (f"max_err={err.max().item():.3e} first bad idx {i} out={out.double()[tuple(i)].item():.6g} "
                       f"ref={ref[tuple(i)].item():.6g}")
    return True, f"max_err={err.max().item():.2e}"


def check_fb(fwd, bwd, case: FbCase, device) -> List[Result]:
    """[(ok, 'fwd  <id>: ...'), (ok, 'bwdi <id>: ...')]: the forward op and the grad-input op of one case."""
    N, C, M, H, W, kh, kw, stride, pad, dil, bias = case.cfg
    dtype, layout, name = case.dtype, case.layout, case.id
    g = torch.Generator(device="cpu").manual_seed(stable_seed(case.cfg, dtype_name(dtype), layout))
    x64 = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    w64 = torch.randn(C * M, 1, kh, kw, generator=g, dtype=torch.float64)
    b64 = torch.randn(C * M, generator=g, dtype=torch.float64) if bias else None
    # round to the tested dtype so that the float64 reference sees the same values
    x = make_layout(x64.to(dtype).to(device), layout)
    w = w64.to(dtype).to(device)
    b = b64.to(dtype).to(device) if bias else None
    xr, wr = x.double(), w.double()
    br = b.double() if bias else None
    results = []
    try:
        ref = fb_ref_forward(xr, wr, br, stride, pad, dil)
        bound = fb_ref_forward(xr.abs(), wr.abs(), br.abs() if bias else None, stride, pad, dil)
        out = fwd(x, w, b, list(stride), list(pad), list(dil))
        out2 = fwd(x, w, b, list(stride), list(pad), list(dil))
        sync(device)
        ok = out.shape == ref.shape and out.dtype == dtype
        msg = f"shape {tuple(out.shape)} {out.dtype} vs {tuple(ref.shape)} {dtype}"
        if ok:
            ok, msg = fb_close(out, ref, bound, dtype, kh * kw)
        if ok and not out.is_contiguous(memory_format=_suggest_memory_format(x)):
            ok, msg = False, "output memory format differs from input.suggest_memory_format()"
        if ok and not torch.equal(out, out2):
            ok, msg = False, "two runs differ bitwise"
        results.append((ok, f"fwd  {name}: {msg}"))
    except Exception as e:  # noqa: BLE001
        return [(False, f"fwd  {name}: exception {e!r}")]
    try:
        go64 = torch.randn(ref.shape, generator=g, dtype=torch.float64)
        go = make_layout(go64.to(dtype).to(device), layout)
        gor = go.double()
        gref = fb_ref_backward_input(gor, wr, (N, C, H, W), stride, pad, dil)
        gbound = fb_ref_backward_input(gor.abs(), wr.abs(), (N, C, H, W), stride, pad, dil)
        gi = bwd(go, w, [N, C, H, W], list(stride), list(pad), list(dil))
        gi2 = bwd(go, w, [N, C, H, W], list(stride), list(pad), list(dil))
        sync(device)
        ok = gi.shape == gref.shape and gi.dtype == dtype
        msg = f"shape {tuple(gi.shape)} {gi.dtype} vs {tuple(gref.shape)} {dtype}"
        if ok:
            ok, msg = fb_close(gi, gref, gbound, dtype, kh * kw * M)
        if ok and not gi.is_contiguous(memory_format=_suggest_memory_format(go)):
            ok, msg = False, "grad_input memory format differs from grad_output.suggest_memory_format()"
        if ok and not torch.equal(gi, gi2):
            ok, msg = False, "two runs differ bitwise"
        results.append((ok, f"bwdi {name}: {msg}"))
    except Exception as e:  # noqa: BLE001
        results.append((False, f"bwdi {name}: exception {e!r}"))
    return results


def fb_nonfinite_checks(fwd, device) -> List[Result]:
    """inf / NaN propagation must match torch (no 0*inf from the padded taps of the large-kernel path)."""
    results = []
    g = torch.Generator(device="cpu").manual_seed(5)
    for k in (3, 13):
        x = torch.randn(1, 4, 20, 20, generator=g).to(device)
        x[0, 0, 5, 5] = float("inf")
        x[0, 1, 0, 19] = float("nan")
        w = torch.randn(4, 1, k, k, generator=g).to(device)
        p = [k // 2] * 4
        try:
            out = fwd(x, w, None, [1, 1], p, [1, 1])
            ref = F.conv2d(x, w, None, 1, k // 2, 1, groups=4)
            ok = torch.equal(torch.isnan(out), torch.isnan(ref)) and torch.equal(torch.isinf(out), torch.isinf(ref))
            results.append((ok, f"fwd inf/nan propagation k={k}"))
        except Exception as e:  # noqa: BLE001
            results.append((False, f"fwd inf/nan propagation k={k}: exception {e!r}"))
    return results


def fb_big_checks(fwd, bwd, device) -> List[Result]:
    """>= 2^31 elements (bf16, about 20 GB): the last rows of the forward and grad-input outputs vs a slice."""
    results = []
    for layout in ("nchw", "cl"):
        N, C, H, W = 1, 4, 23200, 23200  # 2.15e9 elements
        x = torch.randn(N, C, H, W, device=device, dtype=torch.bfloat16)
        if layout == "cl":
            x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(C, 1, 3, 3, device=device, dtype=torch.bfloat16)
        out = fwd(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1])
        rows = slice(H - 6, H)
        ref = F.conv2d(F.pad(x[:, :, H - 7:].float(), (1, 1, 0, 1)), w.float(), None, 1, 0, 1, groups=C)
        err = (out[:, :, rows].float() - ref).abs().max().item()
        results.append((err < 0.1, f"fwd big {layout} numel={x.numel()} tail max_err={err:.3e}"))
        go = torch.randn_like(out)
        gi = bwd(go, w, [N, C, H, W], [1, 1], [1, 1, 1, 1], [1, 1])
        gref = fb_ref_backward_input(go[:, :, H - 8:].double(), w.double(), (N, C, 8, W), (1, 1), (1, 1, 1, 1), (1, 1))
        err = (gi[:, :, H - 6:].double() - gref[:, :, 2:]).abs().max().item()
        results.append((err < 0.1, f"bwdi big {layout} tail max_err={err:.3e}"))
        del x, out, go, gi
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return results


# =========================================================================== bw: grad-weight

BW_FLOOR = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}

# (N, C, M, H, W, k, stride, pad[t,b,l,r], dil): fixed cases that hit each kernel path, every dtype, nchw / cl
BW_FIXED = [
    (2, 16, 1, 17, 19, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 16, 1, 30, 31, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    (2, 16, 1, 23, 23, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1)),
    (2, 8, 1, 40, 37, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    (2, 16, 1, 33, 33, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
    (1, 8, 1, 33, 33, (5, 5), (1, 1), (8, 8, 8, 8), (4, 4)),
    (1, 8, 1, 40, 40, (13, 13), (1, 1), (6, 6, 6, 6), (1, 1)),
    (1, 8, 1, 40, 40, (31, 31), (1, 1), (15, 15, 15, 15), (1, 1)),
    (2, 8, 1, 20, 30, (1, 11), (1, 1), (0, 0, 5, 5), (1, 1)),
    (2, 8, 2, 20, 21, (3, 3), (1, 2), (0, 1, 1, 0), (1, 3)),
    (2, 6, 3, 19, 300, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),   # wide rows: several column tiles
    (3, 16, 1, 9, 9, (3, 3), (3, 2), (2, 0, 0, 2), (2, 3)),
    (1, 8, 1, 1, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),      # 1x1 plane, W stride ambiguous
]
# The planar fast path (square K in {3,5,7}, sh | dh or sh == 2): odd widths, partial row bands,
# dilation 2-4, stride 2 with odd/even dilation, column tiles (Wo > 256), sliced views, M > 1;
# float32 / bfloat16 / float16, nchw / sliced
BW_PLANAR_FAST = [
    (3, 5, 1, 29, 31, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 4, 1, 37, 41, (3, 3), (2, 2), (1, 0, 1, 0), (1, 1)),
    (2, 4, 1, 41, 39, (3, 3), (2, 1), (3, 3, 2, 2), (3, 2)),
    (2, 4, 2, 27, 45, (5, 5), (2, 2), (4, 4, 4, 4), (2, 2)),
    (1, 6, 1, 35, 35, (5, 5), (1, 1), (8, 8, 8, 8), (4, 4)),
    (2, 3, 1, 25, 23, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1)),
    (2, 3, 1, 30, 33, (7, 7), (2, 2), (3, 2, 3, 2), (1, 1)),
    (1, 4, 1, 40, 41, (7, 7), (1, 2), (6, 6, 6, 6), (2, 3)),
    (1, 2, 3, 13, 600, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 2, 1, 11, 530, (5, 5), (1, 2), (2, 2, 2, 2), (1, 1)),
    (5, 3, 1, 7, 9, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1)),
    (2, 3, 1, 50, 20, (3, 3), (2, 2), (2, 2, 2, 2), (4, 4)),
    (1, 2, 1, 30, 30, (5, 5), (2, 3), (6, 6, 6, 6), (3, 3)),
]


class BwCase(NamedTuple):
    tag: str  # fixed3, pfast2, rand17
    geom: tuple  # (N, C, M, H, W, k, stride, pad, dil)
    dtype: torch.dtype
    layout: str  # of the input
    go_layout: Optional[str]  # of grad_output (None: as the input)

    taps = property(lambda self: self.geom[5][0] * self.geom[5][1])
    numel = property(lambda self: math.prod(self.geom[:5]))  # N*C*M*H*W

    @property
    def id(self):
        return (f"{geometry_id(self.tag, *self.geom)}-{dtype_name(self.dtype)}-{self.layout}"
                + (f"-go_{self.go_layout}" if self.go_layout else ""))


def bw_random_geom(rng: random.Random) -> tuple:
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
        pad = (rng.randint(0, d[0] * (k[0] - 1)), rng.randint(0, d[0] * (k[0] - 1)),
               rng.randint(0, d[1] * (k[1] - 1)), rng.randint(0, d[1] * (k[1] - 1)))
        Ho = out_size(H, pad[0], pad[1], k[0], s[0], d[0])
        Wo = out_size(W, pad[2], pad[3], k[1], s[1], d[1])
        if Ho >= 1 and Wo >= 1:
            return N, C, M, H, W, k, s, pad, d


def bw_cases(n_random: int, seed: int = 1234, fixed: bool = True) -> Iterator[BwCase]:
    """The fixed cases (every dtype, nchw / cl), the planar fast-path cases (3 dtypes, nchw / sliced), then
    `n_random` random cases (random dtype, input layout and grad_output layout). A generator."""
    if fixed:
        for i, geom in enumerate(BW_FIXED):
            for dtype in DTYPES:
                for layout in ("nchw", "cl"):
                    yield BwCase(f"fixed{i}", geom, dtype, layout, None)
        for i, geom in enumerate(BW_PLANAR_FAST):
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                for layout in ("nchw", "sliced"):
                    yield BwCase(f"pfast{i}", geom, dtype, layout, None)
    rng = random.Random(seed)
    for i in range(n_random):
        geom = bw_random_geom(rng)
        dtype = rng.choice(DTYPES)
        layout = rng.choice(LAYOUTS)
        go_layout = rng.choice([None, None, None, "nchw", "cl"])
        yield BwCase(f"rand{i}", geom, dtype, layout, go_layout)


def bw_torch_grads(go, x, k, stride, pad, dil, M, dtype):
    """(grad_weight, grad_bias) of F.conv2d(groups=C) computed by torch autograd at `dtype`."""
    C = x.shape[1]
    xx = x.detach().to(dtype)
    w = torch.zeros(C * M, 1, k[0], k[1], device=x.device, dtype=dtype, requires_grad=True)
    b = torch.zeros(C * M, device=x.device, dtype=dtype, requires_grad=True)
    xp = F.pad(xx, (pad[2], pad[3], pad[0], pad[1]))
    y = F.conv2d(xp, w, b, stride=stride, padding=0, dilation=dil, groups=C)
    gw, gb = torch.autograd.grad(y, (w, b), go.to(dtype))
    return gw, gb


def check_bw(op, case: BwCase, device) -> Result:
    """(ok, '<id>: err=... torch_err=... [problems]') for one grad-weight case: the error vs float64 within
    4x torch's own at that dtype plus a floor (and a per-element slack for the reduction order), output
    metadata, bitwise-equal reruns, compute_bias=False."""
    N, C, M, H, W, k, stride, pad, dil = case.geom
    dtype = case.dtype
    try:
        Ho = out_size(H, pad[0], pad[1], k[0], stride[0], dil[0])
        Wo = out_size(W, pad[2], pad[3], k[1], stride[1], dil[1])
        assert Ho >= 1 and Wo >= 1
        g = torch.Generator(device="cpu").manual_seed(stable_seed(case.geom) % (2 ** 31))
        x64 = torch.randn(N, C, H, W, generator=g, dtype=torch.float64).to(device)
        go64 = torch.randn(N, C * M, Ho, Wo, generator=g, dtype=torch.float64).to(device)
        # quantise once so every dtype sees the same values
        xq = x64.to(dtype).to(torch.float64)
        goq = go64.to(dtype).to(torch.float64)
        ref_w, ref_b = bw_torch_grads(goq, xq, k, stride, pad, dil, M, torch.float64)
        x = make_layout(xq.to(dtype), case.layout)
        go = make_layout(goq.to(dtype), case.go_layout or case.layout)
        args = (list(k), list(stride), list(pad), list(dil))
        gw, gb = op(go, x, *args, True)
        gw2, gb2 = op(go, x, *args, True)
        sync(device)
        ok, msgs = True, []
        if gw.shape != (C * M, 1, k[0], k[1]) or gb.shape != (C * M,) or gw.dtype != dtype or not gw.is_contiguous():
            return False, f"{case.id}: bad output meta {tuple(gw.shape)} {tuple(gb.shape)} {gw.dtype}"
        if not (torch.equal(gw, gw2) and torch.equal(gb, gb2)):
            ok = False
            msgs.append("not bitwise reproducible")
        if dtype == torch.float64:
            tw, tb = ref_w, ref_b
        else:
            tw, tb = bw_torch_grads(goq, xq, k, stride, pad, dil, M, dtype)
        scale_w = ref_w.abs().max().item() + 1e-30
        scale_b = ref_b.abs().max().item() + 1e-30
        e_ours = max((gw.double() - ref_w).abs().max().item() / scale_w,
                     (gb.double() - ref_b).abs().max().item() / scale_b)
        e_torch = max((tw.double() - ref_w).abs().max().item() / scale_w,
                      (tb.double() - ref_b).abs().max().item() / scale_b)
        tol = 4.0 * e_torch + BW_FLOOR[dtype]
        # Per-element rounding slack that accounts for the reduction: a sum of L terms accumulated in fp32
        # (fp64 for float64) in a fixed but different order than torch's has an error of about
        # u*sqrt(L)*sum|terms| (probabilistic bound); this matters when max|ref| is a single cancelled sum
        # (e.g. C*M == 1 bias). Capped at FLOOR*sum|terms| so real bugs still show.
        L = N * Ho * Wo
        u = 2.0 ** -53 if dtype == torch.float64 else 2.0 ** -24
        abs_w, abs_b = bw_torch_grads(goq.abs(), xq.abs(), k, stride, pad, dil, M, torch.float64)
        rel_slack = min(2.0 * u * math.sqrt(L), BW_FLOOR[dtype])
        over_w = ((gw.double() - ref_w).abs() - tol * scale_w - rel_slack * abs_w).max().item()
        over_b = ((gb.double() - ref_b).abs() - tol * scale_b - rel_slack * abs_b).max().item()
        if not (over_w <= 0 and over_b <= 0) or not math.isfinite(e_ours):
            ok = False
            msgs.append(f"err {e_ours:.3e} > tol {tol:.3e} (+ {rel_slack:.1e}*sum|terms| per element)")
        # compute_bias=False: grad_bias is (0,) and grad_weight identical
        gw3, gb3 = op(go, x, *args, False)
        if gb3.numel() != 0 or not torch.equal(gw3, gw):
            ok = False
            msgs.append("compute_bias=False differs")
        return ok, f"{case.id}: err={e_ours:.2e} torch_err={e_torch:.2e} {' '.join(msgs)}".rstrip()
    except Exception as e:  # noqa: BLE001
        return False, f"{case.id}: exception {e!r}"


def bw_special_checks(op, device) -> List[Result]:
    """Non-finite input outside every output's window stays out of grad_weight; N = 0 gives zeros."""
    results = []
    try:
        g = torch.Generator(device="cpu").manual_seed(6)
        x = torch.randn(1, 2, 12, 12, generator=g).to(device)
        x[:, :, 11, :] = float("inf")  # row 11 is never read by a 3x3 stride-2 conv of H=12 w/o padding
        x[:, :, :, 11] = float("nan")
        go = torch.randn(1, 2, 5, 5, generator=g).to(device)
        gw, gb = op(go, x, [3, 3], [2, 2], [0, 0, 0, 0], [1, 1], True)
        ok = bool(torch.isfinite(gw).all()) and bool(torch.isfinite(gb).all())
        results.append((ok, "bw non-finite input outside the windows stays out"))
    except Exception as e:  # noqa: BLE001
        results.append((False, f"bw non-finite input outside the windows: exception {e!r}"))
    try:
        x = torch.randn(0, 4, 8, 8, device=device)
        go = torch.randn(0, 4, 8, 8, device=device)
        gw, gb = op(go, x, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], True)
        ok = gw.shape == (4, 1, 3, 3) and bool((gw == 0).all()) and gb.shape == (4,) and bool((gb == 0).all())
        results.append((ok, "bw N=0 gives zeros"))
    except Exception as e:  # noqa: BLE001
        results.append((False, f"bw N=0: exception {e!r}"))
    return results


def bw_big_check(op, device) -> Result:
    """>= 2^31 elements in input and grad_output (bf16, about 12 GB): 2 channels against torch in fp32."""
    N, C, H, W = 2, 16, 8192, 8200  # 2.15e9 elements
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    x = torch.randn(N, C, H, W, device=device, dtype=torch.bfloat16)
    go = torch.randn(N, C, H, W, device=device, dtype=torch.bfloat16)
    assert x.numel() >= 2 ** 31
    gw, gb = op(go, x, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], True)
    sel = [0, C - 1]
    tw, tb = bw_torch_grads(go[:, sel].float(), x[:, sel].float(), (3, 3), (1, 1), [1, 1, 1, 1], (1, 1), 1,
                            torch.float32)
    err = max((gw[sel].float() - tw).abs().max().item() / tw.abs().max().item(),
              (gb[sel].float() - tb).abs().max().item() / tb.abs().max().item())
    del x, go
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return err < 2e-2, f"bw big N={N} C={C} {H}x{W} bf16 (>=2^31 elements) err={err:.2e}"


# =========================================================================== the ops

def ops(backend: str = "cuda"):
    """(forward, grad-input, grad-weight) raw ops of a backend: 'cuda' (the compiled extension's ops, which
    dispatch on the tensors' device: the CPU kernels for CPU tensors) or 'triton'."""
    import convext  # noqa: F401  (registers the ops)
    o = torch.ops.convext
    if backend == "triton":
        return o.triton_depthwise_conv2d, o.triton_depthwise_conv2d_backward_input, \
            o.triton_depthwise_conv2d_backward_weight
    return o.depthwise_conv2d, o.depthwise_conv2d_backward_input, o.depthwise_conv2d_backward_weight


def switches() -> str:
    """The run-time switches of this process, for reports: 'CONVEXT_DISABLE_FAST_PATHS=1 ...' or '-'."""
    return " ".join(f"{k}={os.environ[k]}" for k in SWITCHES if os.environ.get(k)) or "-"


def run_sweep(sweep: str, n_random: int, seed: int, device, backend="cuda", min_taps=0, max_numel=None,
              fixed=True, verbose=False, out=sys.stdout) -> Tuple[int, List[str]]:
    """Runs a whole sweep in this process: (passed, failure messages)."""
    fwd, bwd, bw = ops(backend)
    passed, failed = 0, []

    def take(results):
        nonlocal passed
        for ok, msg in results:
            if ok:
                passed += 1
            else:
                failed.append(msg)
            if verbose or not ok:
                print(("PASS " if ok else "FAIL ") + msg, file=out, flush=True)

    if sweep == "fb":
        for case in fb_cases(n_random, seed, fixed):
            if case.taps >= min_taps and (max_numel is None or case.numel <= max_numel):
                take(check_fb(fwd, bwd, case, device))
        take(fb_nonfinite_checks(fwd, device))
    elif sweep == "bw":
        for case in bw_cases(n_random, seed, fixed):
            if case.taps >= min_taps and (max_numel is None or case.numel <= max_numel):
                take([check_bw(bw, case, device)])
        take(bw_special_checks(bw, device))
    else:
        raise ValueError(sweep)
    return passed, failed


# =========================================================================== the child process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(sweep, args, env, timeout):
    """`python tests/cuda_cases.py <sweep> <args>` with `env` added to this process's environment."""
    e = dict(os.environ, **env)
    e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, os.path.abspath(__file__), sweep] + args, env=e, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def check_child(r, sweep, env_word):
    lines = r.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    assert last.startswith(f"SWEEP {sweep} "), f"the child reported no result (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert env_word in last, f"the child did not run with {env_word}: {last}"
    fails = [ln for ln in lines if ln.startswith("FAIL ")]
    assert r.returncode == 0 and not fails, f"{last}\n" + "\n".join(fails[:40]) + f"\n{r.stderr[-2000:]}"
    assert " passed 0 " not in last, last


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", choices=["fb", "bw"])
    p.add_argument("--random", type=int, default=60, help="random cases (default 60)")
    p.add_argument("--seed", type=int, default=None, help="default: 0 (fb), 1234 (bw)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--backend", choices=["cuda", "triton"], default="cuda")
    p.add_argument("--min-taps", type=int, default=0, help="only kernels with kH*kW >= this")
    p.add_argument("--max-numel", type=int, default=None, help="only cases with N*C*M*H*W <= this")
    p.add_argument("--fixed-only", action="store_true")
    p.add_argument("--no-fixed", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    torch.backends.cudnn.allow_tf32 = False  # IEEE fp32 on both sides, as tests/conftest.py
    torch.backends.cuda.matmul.allow_tf32 = False
    seed = a.seed if a.seed is not None else (0 if a.sweep == "fb" else 1234)
    n_random = 0 if a.fixed_only else a.random
    passed, failed = run_sweep(a.sweep, n_random, seed, a.device, a.backend, a.min_taps, a.max_numel,
                               fixed=not a.no_fixed, verbose=a.verbose)
    print(f"SWEEP {a.sweep} backend {a.backend} device {a.device} passed {passed} failed {len(failed)} "
          f"env {switches()}", flush=True)
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
