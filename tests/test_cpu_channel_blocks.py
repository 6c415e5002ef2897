"""The CPU backend's two NCHW kernel families (csrc/cpu/depthwise_conv2d_cblock_kernel.h and the plane
kernels) and the channels_last forward's sliding window (cl_slide_block) next to its per-pixel kernel,
each on the shapes it takes and, in a child process with CONVEXT_DISABLE_FAST_PATHS=cpu_cblock, the
older kernels on the shapes the rule gives to the new ones: forward, grad-input (stride 1 and > 1)
and grad-weight/bias against float64 F.conv2d.

The channel blocks have edges of their own: a partial last block (C not a multiple of the vector
width), planes narrower and wider than a vector (the flat and the row transposes), non-contiguous
planes (the element-by-element pack), negative padding of the transposed geometry (grad-input at
stride 1 with padding > (k-1)*d), and non-finite weights or grad_output next to padding."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import convext
from convext import _ext
from conftest import check_depthwise, conv_out_size, make_inputs, to_layout
from test_nonfinite import skip_conv2d

pytestmark = pytest.mark.skipif(not _ext.compiled_available(), reason="convext._C not built")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD_ENV = "CONVEXT_TEST_CHANNEL_BLOCKS_CHILD"

# (id, N, C, H, W, kernel, stride, padding, dilation, M)
CASES = [
    ("c16-k3", 2, 16, 9, 10, 3, 1, 1, 1, 1),
    ("c17-k3-partial", 2, 17, 7, 5, 3, 1, 1, 1, 1),
    ("c40-k5-wide", 1, 40, 12, 37, 5, 1, 2, 1, 1),  # rows of > 16 pixels: the row transposes
    ("c33-k7-tiny", 2, 33, 5, 5, 7, 1, 3, 1, 1),  # 5x5 planes, 7x7 kernel: mostly padding
    ("c24-k1x7", 1, 24, 6, 19, (1, 7), 1, (0, 3), 1, 1),
    ("c20-k3-d2", 2, 20, 11, 13, 3, 1, 2, 2, 1),
    ("c18-k3-s2", 2, 18, 12, 17, 3, 2, 1, 1, 1),  # grad-input by scatter
    ("c5-k3-s2", 2, 5, 9, 10, 3, 2, 1, 1, 1),  # fewer channels than a block, stride 2
    ("c19-k5-s3x2-d2", 1, 19, 16, 14, 5, (3, 2), 3, 2, 1),
    ("c16-p-wide", 1, 16, 6, 5, 3, 1, 4, 1, 1),  # pad > kernel: negative pad in the transposed geometry
    ("c16-valid", 2, 16, 9, 18, 3, 1, 0, 1, 1),
    ("c16-out1x1", 1, 16, 5, 5, 5, 1, 0, 1, 1),
    ("c32-k7-dh2", 1, 32, 12, 21, 7, 1, (6, 3), (2, 1), 1),  # channels_last: sliding window, dilated rows
    ("c16-k5-s2x1", 2, 16, 11, 13, 5, (2, 1), 2, 1, 1),  # channels_last: sliding window, strided rows
    ("c16-M2", 1, 16, 8, 9, 3, 1, 1, 1, 2),  # multiplier 2: the plane kernels
    ("c3-stem-k3", 1, 3, 20, 21, 3, 1, 1, 1, 1),  # few channels at stride 1: the plane kernels
]


def _acc_bytes(dtype):
    return 8 if dtype == torch.float64 else 4


def blocks_taken(case, dtype=torch.float32):
    """What the rule in csrc/cpu/depthwise_conv2d.cpp chooses (convext._C.cpu_channel_blocks)."""
    _, N, C, H, W, k, s, p, d, M = case
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (s, s) if isinstance(s, int) else s
    ph, pw = (p, p) if isinstance(p, int) else p
    dh, dw = (d, d) if isinstance(d, int) else d
    oh, ow = conv_out_size(H, kh, sh, ph, ph, dh), conv_out_size(W, kw, sw, pw, pw, dw)
    from convext import _C
    return _C.cpu_channel_blocks(C * M, oh, ow, kh, kw, sh, sw, dh, dw, M, _acc_bytes(dtype))


def test_the_rule_sends_cases_both_ways():
    """The cases cover both kernel families (else the grid below would test one of them twice)."""
    if os.environ.get(CHILD_ENV):
        assert not any(blocks_taken(c) for c in CASES), "cpu_cblock switched off, yet the rule takes blocks"
        return
    taken = {c[0]: blocks_taken(c) for c in CASES}
    assert taken["c16-k3"] and taken["c18-k3-s2"] and taken["c5-k3-s2"] and taken["c33-k7-tiny"]
    assert not taken["c16-M2"] and not taken["c3-stem-k3"]
    # a plane far larger than the per-core cache stays with the plane kernels at stride 1
    assert not blocks_taken(("big", 1, 16, 512, 512, 3, 1, 1, 1, 1))
    assert blocks_taken(("big-s2", 1, 16, 512, 512, 3, 2, 1, 1, 1))


@pytest.mark.parametrize("layout", ["contiguous", "sliced", "offset_view", "channels_last", "sliced_channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_grid(case, dtype, layout):
    _, N, C, H, W, k, s, p, d, M = case
    torch.manual_seed(hash((case[0], str(dtype), layout)) % 2**31)
    x, w, b = make_inputs(N, C, H, W, k, M=M, dtype=dtype)
    check_depthwise("cpu", "cpu", to_layout(x, layout), w, b, s, p, d)


@pytest.mark.parametrize("requires", [(True, False, False), (False, True, True), (False, True, False)],
                         ids=["grad-input", "grad-weight-bias", "grad-weight"])
def test_grad_subsets(requires):
    torch.manual_seed(3)
    x, w, b = make_inputs(2, 21, 9, 11, 3)
    check_depthwise("cpu", "cpu", x, w, b, 2, 1, 1, requires=requires)
    check_depthwise("cpu", "cpu", x, w, b, 1, 1, 1, requires=requires)


def _nonfinite_reference(x, w, b, stride, padding, dilation, go):
    """F.conv2d's oneDNN pattern (a tap meeting the padding adds nothing), in float64: test_nonfinite's
    definition (torch's own float64 path multiplies the padding)."""
    xr, wr, br = (t.double().detach().requires_grad_() for t in (x, w, b))
    y = skip_conv2d(xr, wr, br, (stride, stride), (padding,) * 4, (dilation, dilation))
    y.backward(go.double())
    return y, xr.grad, wr.grad, br.grad


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("stride", [1, 2])
def test_nonfinite_weight_in_a_block(stride, layout):
    """A NaN and an inf weight: a channel block runs exactly (the padding never meets the weight), the
    channels_last sliding window skips padded columns; NaN/inf exactly where F.conv2d has them, in every
    output and gradient."""
    torch.manual_seed(5)
    x, w, b = make_inputs(2, 32, 7, 13, 3, dtype=torch.float64)
    w[3, 0, 0, 0] = float("nan")
    w[17, 0, 2, 1] = float("inf")
    go = torch.randn(2, 32, conv_out_size(7, 3, stride, 1, 1, 1), conv_out_size(13, 3, stride, 1, 1, 1),
                     dtype=torch.float64)
    ref = _nonfinite_reference(x, w, b, stride, 1, 1, go)
    xs, ws, bs = (t.detach().clone().requires_grad_() for t in (to_layout(x, layout), w, b))
    y = convext.depthwise_conv2d(xs, ws, bs, stride, 1, 1, backend="cpu")
    y.backward(go)
    for name, a, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), (y, xs.grad, ws.grad, bs.grad), ref):
        torch.testing.assert_close(a, r, equal_nan=True, msg=name)


@pytest.mark.parametrize("width", [6, 20], ids=["tap-by-tap", "pixel-outer"])
def test_nonfinite_grad_output_next_to_padding(width):
    """An inf in grad_output at a border output: grad-weight's taps that read padding there stay
    finite (F.conv2d never multiplies padding), the others are inf/NaN as in F.conv2d. Both
    grad-weight loops of the blocks (rows of < 16 and >= 16 outputs)."""
    torch.manual_seed(6)
    x, w, b = make_inputs(1, 16, 6, width, 3, dtype=torch.float64)
    go = torch.randn(1, 16, 6, width, dtype=torch.float64)
    go[0, 4, 0, 0] = float("inf")
    go[0, 9, 5, 2] = float("nan")
    go[0, 11, 3, width - 1] = float("inf")
    ref = _nonfinite_reference(x, w, b, 1, 1, 1, go)
    xs, ws, bs = (t.detach().clone().requires_grad_() for t in (x, w, b))
    convext.depthwise_conv2d(xs, ws, bs, 1, 1, 1, backend="cpu").backward(go)
    torch.testing.assert_close(ws.grad, ref[2], equal_nan=True)
    torch.testing.assert_close(bs.grad, ref[3], equal_nan=True)
    torch.testing.assert_close(xs.grad, ref[1], equal_nan=True)


@pytest.mark.parametrize("isa", ["avx2", "default"])
def test_narrower_vector_copies(isa):
    """The AVX2 (8 lanes) and baseline (4 lanes) copies: other tile sizes, other partial blocks."""
    if os.environ.get(CHILD_ENV):
        pytest.skip("run from the parent process")
    code = ("import torch, convext, torch.nn.functional as F\n"
            "torch.manual_seed(0)\n"
            "for C, H, W, k, s in ((9, 7, 21, 3, 1), (13, 5, 6, 5, 1), (12, 9, 10, 3, 2)):\n"
            "    x = torch.randn(2, C, H, W, dtype=torch.float64, requires_grad=True)\n"
            "    w = torch.randn(C, 1, k, k, dtype=torch.float64, requires_grad=True)\n"
            "    b = torch.randn(C, dtype=torch.float64, requires_grad=True)\n"
            "    y = convext.depthwise_conv2d(x, w, b, s, k // 2, 1, backend='cpu')\n"
            "    g = torch.autograd.grad(y, (x, w, b), torch.ones_like(y))\n"
            "    r = F.conv2d(x, w, b, s, k // 2, 1, C)\n"
            "    gr = torch.autograd.grad(r, (x, w, b), torch.ones_like(r))\n"
            "    torch.testing.assert_close(y, r)\n"
            "    for a, e in zip(g, gr): torch.testing.assert_close(a, e)\n"
            "print('ok')\n")
    env = dict(os.environ, CONVEXT_CPU_ISA=isa, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_plane_kernels_on_the_block_shapes():
    """This file again in a child process with the channel blocks switched off: the plane kernels on
    every case (the switch is read once per process)."""
    if os.environ.get(CHILD_ENV):
        pytest.skip("already the child")
    env = dict(os.environ, CONVEXT_DISABLE_FAST_PATHS="cpu_cblock", **{CHILD_ENV: "1"})
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__],
                       cwd=os.path.join(ROOT, "tests"), env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
