"""Triton paths the rest of the CPU suite does not reach, through the Triton interpreter (issue 10):

- fp16 and bf16 (the GPU's dtypes; elsewhere the interpreter runs fp32 / fp64 only). The
  interpreter (triton 3.8) stores bf16 by truncation, not round-to-nearest: bf16 results are
  bounded by a float64 emulation of that truncation (conftest.bf16_truncated), as the TF32 test
  bounds TF32 by an emulation; fp16 by torch's own fp16 result as everywhere else.
- autotune configs other than the first (the interpreter otherwise takes the first only): other
  tile shapes of every depthwise kernel (forward, grad-input, grad-weight; NCHW and
  channels_last), and a second block shape of the fused separable kernels;
- the separable op with more than one output-channel tile and more than one K block (C_out and
  C*M > the interpreter's 16);
- 64-bit indexing: tensors whose element offsets pass 2**31, as views of a sparse file mapped
  copy-on-write (a few KiB of real memory), so the int64 paths run on tiny shapes;
- the depthwise kernels' interior tiles (no masks) on small planes, in both layouts.
Shapes are kept tiny: the interpreter's cost grows with every program and every element.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import convext
from conftest import (
    TRITON_INTERPRETED, assert_matches, bf16_truncated, check_depthwise, check_op, make_inputs, require_backend, to_layout,
    torch_separable,
)

pytestmark = pytest.mark.slow_interpreter

SEP_NAMES = tuple(f"grad_{n}" for n in ("input", "dw_weight", "pw_weight", "dw_bias", "pw_bias"))


@pytest.fixture(autouse=True)
def _interpreted_triton():
    if not TRITON_INTERPRETED:
        pytest.skip("needs TRITON_INTERPRET=1 (set by conftest when no GPU is visible)")
    require_backend("cpu", "triton")


def _separable_tensors(N, C, H, W, k, M, Cout, dtype=torch.float32):
    x, dw_w, dw_b = make_inputs(N, C, H, W, k, M, True, dtype)
    dw_w = dw_w * 2
    pw_w = (torch.randn(Cout, C * M, 1, 1) / (C * M) ** 0.5).to(dtype)
    pw_b = torch.randn(Cout, dtype=dtype)
    return [x, dw_w, pw_w, dw_b, pw_b]


def _check_separable(tensors, stride, padding, dilation, acts, layout="contiguous", yardstick=None,
                     requires=None):
    def ours(*t):
        return convext.depthwise_separable_conv2d(*t, stride, padding, dilation, backend="triton",
                                                  depthwise_activation=acts[0], pointwise_activation=acts[1])

    def theirs(*t):
        return torch_separable(*t, stride, padding, dilation, *acts)

    t = list(tensors)
    t[0] = to_layout(t[0], layout)
    return check_op("cpu", ours, theirs, t, SEP_NAMES, grad_layout=layout, yardstick=yardstick,
                    requires=requires)


# --------------------------------------------------------------------------- fp16 / bf16

LOWP = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]


def _yardstick(dtype):
    return bf16_truncated if dtype == torch.bfloat16 else None


@pytest.mark.parametrize("dtype", LOWP)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_depthwise_low_precision(dtype, layout):
    x, w, b = make_inputs(1, 3, 9, 10, 3, 2, True, dtype)
    check_depthwise("cpu", "triton", to_layout(x, layout), w, b, (2, 1), (1, 2), (1, 2), grad_layout=layout,
                    yardstick=_yardstick(dtype))


@pytest.mark.parametrize("dtype", LOWP)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_separable_low_precision(dtype, layout):
    t = _separable_tensors(1, 3, 6, 7, 3, 1, 5, dtype)
    _check_separable(t, 1, 1, 1, ("silu", "relu6"), layout, yardstick=_yardstick(dtype))


def test_bf16_yardstick_is_the_interpreters_rounding():
    """The emulation matches what the interpreter stores (else the bound above measures nothing)."""
    x, w, b = make_inputs(1, 2, 6, 7, 3, 1, True, torch.bfloat16)
    y = convext.depthwise_conv2d(x, w, b, 1, 1, backend="triton")
    ref = F.conv2d(x.double(), w.double(), b.double(), 1, 1, 1, 2)
    assert (y.double() - bf16_truncated(ref)).abs().max() <= 2 ** -7 * ref.abs().max()


# --------------------------------------------------------------------------- other autotune configs


def _distinct(configs):
    seen, out = set(), []
    for c in configs:
        key = tuple(sorted(c.kwargs.items()))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("which,geometry", [(1, (3, 1, 1, 1)), (-1, (3, 2, 1, 2))], ids=["second-k3", "last-k3-s2-d2"])
def test_depthwise_other_autotune_configs(which, layout, geometry, monkeypatch):
    """Every depthwise kernel launched with its second (last) distinct config instead of the first:
    other tile shapes (TILE_H != TILE_W, other BLOCK_C, outputs per thread, kernel rows per pass)."""
    import triton
    from convext.triton import _common

    picked = []

    def tuner(kernel, key, configs_fn, cls):
        configs = _distinct(configs_fn(*cls))
        cfg = configs[which] if len(configs) > 1 else configs[0]
        picked.append((kernel.fn.__name__ if hasattr(kernel, "fn") else str(kernel), len(configs) > 1))
        return triton.autotune(configs=[cfg], key=key)(kernel)

    monkeypatch.setattr(_common, "_tuner", tuner)
    k, s, p, d = geometry
    # C*M = 8: full channel blocks for channels_last; W = 40: NCHW tiles 64 wide
    x, w, b = make_inputs(1, 4, 13, 40, k, 2, True, torch.float32)
    check_depthwise("cpu", "triton", to_layout(x, layout), w, b, s, p, d, grad_layout=layout)
    assert len(picked) == 3 and any(multi for _, multi in picked), picked


SEP_SECOND_CONFIGS = [pytest.param((32, 32, 16, 4, 1), "contiguous", id="p32-co32-k16-nchw"),
                      pytest.param((64, 16, 32, 4, 1), "channels_last", id="p64-co16-k32-cl")]


@pytest.mark.parametrize("cfg,layout", SEP_SECOND_CONFIGS)
def test_separable_other_autotune_configs(cfg, layout, monkeypatch):
    """The three fused separable kernels with a block shape other than the interpreter's 16x16x16:
    several pixel, output-channel and K blocks, each with a partial last one."""
    import triton
    from convext.triton import depthwise_separable_conv2d as sk

    config = sk._cfg(*cfg)
    for name, kernel, key in (("_sep_fwd_tuned", sk._sep_fwd_kernel, sk._KEY),
                              ("_sep_bwd_gz_tuned", sk._sep_bwd_gz_kernel, sk._KEY),
                              ("_sep_bwd_pw_tuned", sk._sep_bwd_pw_kernel, sk._KEY + ["COMPUTE_W", "COMPUTE_B"])):
        monkeypatch.setattr(sk, name, triton.autotune(configs=[config], key=key)(kernel))
    t = _separable_tensors(1, 20, 4, 19, 3, 2, 37)  # C*M = 40, C_out = 37
    _check_separable(t, 1, 1, 1, ("relu6", "gelu"), layout)


# --------------------------------------------------------------------------- output-channel tiles


@pytest.mark.parametrize("requires,layout", [(None, "contiguous"), (None, "channels_last"),
                                             ((False, False, True, False, True), "channels_last"),
                                             ((True, False, False, False, False), "contiguous")],
                         ids=["all-nchw", "all-cl", "pointwise-only-cl", "input-only-nchw"])
def test_separable_several_output_channel_tiles(layout, requires):
    """C_out = 20 and C*M = 20: two output-channel tiles and two K blocks of 16, the second partial,
    in the forward, grad_z and pointwise-gradient kernels."""
    t = _separable_tensors(1, 10, 5, 6, 3, 2, 20)
    _check_separable(t, 1, 1, 1, ("silu", "hardswish"), layout, requires=requires)


# --------------------------------------------------------------------------- interior tiles


# (id, N, C, H, W, kernel, stride, padding, dilation, M): "valid" planes whose forward tiles
# (8 x 8 NCHW and channels_last for <= 8 channels, 16 x 16 for 9..16 output columns) lie entirely
# inside the input, so the unmasked interior path computes them; plus rows-in / cols-partial tiles.
INTERIOR = [
    ("16x8-M2", 1, 2, 18, 10, 3, 1, 0, 1, 2),
    ("s2", 1, 2, 17, 17, 3, 2, 0, 1, 1),
    ("d2", 1, 3, 12, 12, 3, 1, 0, 2, 1),
    ("k3x5-cols-partial", 1, 2, 10, 15, (3, 5), 1, 0, 1, 1),
    ("M4-C2-cl-full-block", 1, 2, 10, 10, 3, 1, 0, 1, 4),
    # padded: the last full tile's window ends exactly one row (column) past the input, so it
    # must take the masked path (an off-by-one in the interior test reads that row unmasked)
    ("same-bottom-edge", 1, 2, 16, 8, 3, 1, 1, 1, 1),
    ("same-right-edge", 1, 2, 8, 16, 3, 1, 1, 1, 1),
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", INTERIOR, ids=lambda c: c[0])
def test_depthwise_interior_tiles(case, layout):
    _, N, C, H, W, k, s, p, d, M = case
    x, w, b = make_inputs(N, C, H, W, k, M, True, torch.float32)
    check_depthwise("cpu", "triton", to_layout(x, layout), w, b, s, p, d, grad_layout=layout)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_separable_interior_tiles(layout):
    """The fused kernels' depthwise tile paths at their edges: with 16-pixel tiles over 24-column
    rows and C*M = 16 (full K blocks), some one-row tiles lie inside the window (no masks) and
    others end exactly at the last column or row, whose window passes the input by one and must be
    masked."""
    t = _separable_tensors(1, 16, 6, 24, 3, 1, 3)
    _check_separable(t, 1, 1, 1, ("relu", None), layout)


# --------------------------------------------------------------------------- 64-bit indexing

BIG = 2 ** 30 + 8  # a stride that puts element 2 (of that dimension) past 2**31


def _sparse_view(tmp_path, name, shape, strides, dtype=torch.float16):
    """A tensor of `shape` and `strides` (offsets past 2**31) holding random values, backed by a
    sparse file mapped copy-on-write: only the pages of its elements get memory."""
    numel = 1 + sum((n - 1) * s for n, s in zip(shape, strides))
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(numel * torch.finfo(dtype).bits // 8)
    storage = torch.from_file(str(path), shared=False, size=numel, dtype=dtype)
    os.remove(path)  # the private mapping outlives the name
    v = storage.as_strided(shape, strides)
    v.copy_(torch.randn(shape, dtype=torch.float32).to(dtype))
    return v


# (id, input shape, input strides, grad_output strides (2 * C channels)): the offsets past 2**31
# come from the batch or the channel index
BIG_VIEWS = [
    ("batch", (3, 2, 4, 5), (BIG, 20, 5, 1), (BIG, 20, 5, 1)),
    ("channel", (1, 3, 4, 5), (3 * BIG, BIG, 5, 1), (6 * BIG, BIG, 5, 1)),
    ("batch-channels_last", (3, 2, 4, 5), (BIG, 1, 10, 2), (BIG, 1, 20, 4)),
]


@pytest.mark.parametrize("view", BIG_VIEWS, ids=lambda v: v[0])
def test_depthwise_offsets_past_2pow31(view, tmp_path):
    """Forward, grad-input and grad-weight read tensors whose offsets pass 2**31 (the kernels take
    their int64 paths: per-image / per-channel bases, INT64 tiles), fp16 as on the GPU."""
    from convext.triton._common import _needs_int64

    _, shape, strides, go_strides = view
    x = _sparse_view(tmp_path, "x.bin", shape, strides)
    assert _needs_int64(x)
    C = shape[1]
    w = (torch.randn(2 * C, 1, 3, 3) / 3).half()
    b = torch.randn(2 * C).half()
    check_depthwise("cpu", "triton", x, w, b, 1, 1, 1)
    # grad_output past 2**31 too: the grad-input and grad-weight kernels read it in place
    go = _sparse_view(tmp_path, "go.bin", (shape[0], 2 * C, shape[2], shape[3]), go_strides)
    gi = torch.ops.convext.triton_depthwise_conv2d_backward_input(go, w, list(shape), [1, 1], [1, 1, 1, 1], [1, 1])
    gw, gb = torch.ops.convext.triton_depthwise_conv2d_backward_weight(go, x, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1],
                                                                      True)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    F.conv2d(xd, wd, bd, 1, 1, 1, C).backward(go.double())
    xt, wt, bt = (t.detach().requires_grad_() for t in (x, w, b))
    F.conv2d(xt, wt, bt, 1, 1, 1, C).backward(go)
    assert_matches(gi, xd.grad, xt.grad, name="grad_input")
    assert_matches(gw, wd.grad, wt.grad, name="grad_weight")
    assert_matches(gb, bd.grad, bt.grad, name="grad_bias")


def test_separable_batch_offsets_past_2pow31(tmp_path):
    """The fused separable kernels with per-image offsets past 2**31."""
    x = _sparse_view(tmp_path, "x.bin", (3, 2, 4, 5), (BIG, 20, 5, 1))
    t = _separable_tensors(3, 2, 4, 5, 3, 1, 3, torch.float16)
    t[0] = x
    _check_separable(t, 1, 1, 1, ("relu", None))


# Offsets past 2**31 *within* one image (each case runs in a child: a 32-bit offset crashes the
# process). They were 32-bit until the INT64 kernel variants cast every stride to int64: the
# depthwise kernels computed a tap's row offset (i * DH) * s_h in int32 (a row stride of 2**30:
# rows 2 and later), the fused separable kernels the channel offsets offs_k * sxc (one image of
# more than 2**31 elements, e.g. 1 x 128 x 4096 x 4096; they had no INT64 variant).
WITHIN_IMAGE = {
    "depthwise-row-stride": """
        x = view((1, 1, 3, 5), (3 * BIG, 3 * BIG, BIG, 1))
        w = torch.randn(1, 1, 3, 3).half()
        y = convext.depthwise_conv2d(x, w, None, 1, 1, backend="triton")
        ref = F.conv2d(x.double(), w.double(), None, 1, 1)
    """,
    "depthwise-row-stride-grad-weight": """
        x = view((1, 1, 3, 5), (3 * BIG, 3 * BIG, BIG, 1))
        w = torch.randn(1, 1, 3, 3).half().requires_grad_()
        go = torch.randn(1, 1, 3, 5).half()
        convext.depthwise_conv2d(x, w, None, 1, 1, backend="triton").backward(go)
        y = w.grad
        wd = w.detach().double().requires_grad_()
        F.conv2d(x.double(), wd, None, 1, 1).backward(go.double())
        ref = wd.grad
    """,
    "separable-channel-stride": """
        x = view((1, 3, 4, 5), (3 * BIG, BIG, 5, 1))
        w = torch.randn(3, 1, 3, 3).half()
        pw = torch.randn(4, 3, 1, 1).half()
        y = convext.depthwise_separable_conv2d(x, w, pw, None, None, 1, 1, backend="triton")
        ref = F.conv2d(F.conv2d(x.double(), w.double(), None, 1, 1, 1, 3), pw.double())
    """,
}


@pytest.mark.parametrize("case", list(WITHIN_IMAGE))
def test_offsets_past_2pow31_within_an_image(case, tmp_path):
    code = textwrap.dedent("""
        import os, sys
        os.environ["TRITON_INTERPRET"] = "1"
        import torch, torch.nn.functional as F, convext
        BIG = 2 ** 30 + 8
        def view(shape, strides):
            numel = 1 + sum((n - 1) * s for n, s in zip(shape, strides))
            path = sys.argv[1]
            with open(path, "wb") as f:
                f.truncate(numel * 2)
            v = torch.from_file(path, shared=False, size=numel, dtype=torch.float16).as_strided(shape, strides)
            os.remove(path)
            v.copy_(torch.randn(shape).half())
            return v
    """) + textwrap.dedent(WITHIN_IMAGE[case]) + textwrap.dedent("""
        err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
        print("relative error", err)
        sys.exit(0 if err < 1e-2 else 3)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(convext.__file__))]
                                                      + sys.path))
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.bin")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"rc={r.returncode}: {r.stdout[-500:]} {r.stderr[-1500:]}"
