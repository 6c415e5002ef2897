"""The Triton large-kernel tensor-core path (convext/triton/depthwise_conv2d_tc.py): forward,
grad-input and grad-weight against float64, on the CPU through the Triton interpreter (fp32
operands, the same band/tile index math as the bf16/fp16 GPU kernels) and on the GPU in
bf16/fp16 through the `triton` backend, which routes large kernels there."""
import pytest
import torch
import torch.nn.functional as F

import convext
from conftest import (
    HAS_CUDA, TRITON_INTERPRETED, assert_matches, check_depthwise, conv_out_size, pair, poisoned_like_view,
    require_backend, to_layout,
)

try:
    from convext.triton import depthwise_conv2d_tc as tc
except Exception:  # Triton absent or broken: require_backend says so (fail, or skip if not installed)
    tc = None


@pytest.fixture
def interpreted_triton():
    """The interpreted tests: Triton must run on CPU tensors here (a missing backend fails)."""
    if HAS_CUDA or not TRITON_INTERPRETED:
        pytest.skip("the Triton interpreter runs only without a GPU (TRITON_INTERPRET=1)")
    require_backend("cpu", "triton")


@pytest.fixture
def gpu_triton():
    require_backend("cuda", "triton")

# (N, C, M, H, W, (kH, kW), stride, (top, bottom, left, right), dilation)
CASES = [
    (2, 3, 1, 20, 23, (9, 9), (1, 1), (4, 4, 4, 4), (1, 1)),
    (1, 2, 2, 17, 40, (13, 13), (1, 1), (6, 6, 6, 6), (1, 1)),
    (2, 2, 1, 19, 21, (9, 7), (2, 2), (3, 5, 2, 1), (1, 1)),
    (1, 2, 1, 25, 30, (9, 9), (1, 1), (8, 8, 8, 8), (2, 2)),
    (1, 1, 3, 18, 70, (11, 11), (1, 3), (5, 2, 9, 0), (1, 2)),
    (1, 1, 1, 24, 37, (31, 31), (1, 1), (15, 15, 15, 15), (1, 1)),
    (4, 2, 1, 50, 9, (9, 9), (2, 1), (0, 0, 4, 4), (1, 1)),  # grad-weight chunks across images
]
CASE_IDS = ["9x9", "13x13-m2", "9x7-s2-asym", "9x9-d2", "11x11-s1x3-d1x2-m3", "31x31", "9x9-s2x1-chunks"]


def _poison_empty(monkeypatch):
    """Every torch.empty during the call comes back NaN-filled: outputs, the NCHW buffers of
    channels_last results and the grad-weight scratch must all be written before being read."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t
    monkeypatch.setattr(torch, "empty", empty)


def _ref(x, w, b, stride, pad, dilation):
    pt, pb, pl, pr = pad
    xp = F.pad(x.detach().double(), (pl, pr, pt, pb))
    return F.conv2d(xp, w.double(), None if b is None else b.double(), stride, 0, dilation,
                    groups=x.shape[1])


def _ref_grads(x, w, pad, stride, dilation, go):
    pt, pb, pl, pr = pad
    H, W = x.shape[2:]
    xp = F.pad(x.detach().double(), (pl, pr, pt, pb)).requires_grad_()
    wd = w.detach().double().requires_grad_()
    F.conv2d(xp, wd, None, stride, 0, dilation, groups=x.shape[1]).backward(go.double())
    return xp.grad[:, :, pt:pt + H, pl:pl + W], wd.grad, go.double().sum((0, 2, 3))


def _torch_lowp(x, w, b, stride, pad, dilation, go):
    """torch.nn at the tested dtype (for the torch-relative bound), asymmetric padding by F.pad."""
    pt, pb, pl, pr = pad
    H, W = x.shape[2:]
    xp = F.pad(x.detach(), (pl, pr, pt, pb)).requires_grad_()
    wl = w.detach().clone().requires_grad_()
    bl = b.detach().clone().requires_grad_()
    y = F.conv2d(xp, wl, bl, stride, 0, dilation, groups=x.shape[1])
    y.backward(go)
    return y, xp.grad[:, :, pt:pt + H, pl:pl + W], wl.grad, bl.grad


def _interpreted_params():
    # every case contiguous; the layouts on the cheaper ones (the interpreter is slow)
    for case, cid in zip(CASES, CASE_IDS):
        for layout in ("contiguous", "channels_last", "sliced"):
            if layout == "contiguous" or case[5][0] * case[5][1] <= 121:
                yield pytest.param(case, layout, id=f"{cid}-{layout}")


@pytest.mark.parametrize("case,layout", list(_interpreted_params()))
def test_kernels_interpreted(case, layout, monkeypatch, interpreted_triton):
    N, C, M, H, W, (KH, KW), stride, pad, dil = case
    x = to_layout(torch.randn(N, C, H, W), layout)
    w = torch.randn(C * M, 1, KH, KW) / (KH * KW) ** 0.5
    b = torch.randn(C * M)
    Ho = conv_out_size(H, KH, stride[0], pad[0], pad[1], dil[0])
    Wo = conv_out_size(W, KW, stride[1], pad[2], pad[3], dil[1])
    go = to_layout(torch.randn(N, C * M, Ho, Wo), layout)
    ref = _ref(x, w, b, stride, pad, dil)
    gi_ref, gw_ref, gb_ref = _ref_grads(x, w, pad, stride, dil, go)
    t_y, t_gi, t_gw, t_gb = _torch_lowp(x, w, b, stride, pad, dil, go)

    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    _poison_empty(monkeypatch)
    y = tc.forward(x, w, b, list(stride), list(pad), list(dil),
                   torch.empty((N, C * M, Ho, Wo), memory_format=fmt))
    gi = tc.backward_input(go, w, list(stride), list(pad), list(dil),
                           torch.empty((N, C, H, W), memory_format=fmt))
    gw, gb = tc.backward_weight(go, x, [KH, KW], list(stride), list(pad), list(dil), True)
    monkeypatch.undo()

    assert_matches(y, ref, t_y, name="output")
    assert_matches(gi, gi_ref, t_gi, name="grad_input")
    assert_matches(gw, gw_ref, t_gw, name="grad_weight")
    assert_matches(gb, gb_ref, t_gb, name="grad_bias")
    assert y.is_contiguous(memory_format=fmt) and gi.is_contiguous(memory_format=fmt)
    _, gb_off = tc.backward_weight(go, x, [KH, KW], list(stride), list(pad), list(dil), False)
    assert gb_off.numel() == 0


def test_backend_routes_large_kernels(monkeypatch, interpreted_triton):
    """With the path forced on for fp32, convext.depthwise_conv2d(backend="triton") runs the
    three tensor-core kernels (and autograd through them) and matches float64."""
    calls = []
    for name in ("forward", "backward_input", "backward_weight"):
        fn = getattr(tc, name)
        monkeypatch.setattr(tc, name, lambda *a, _fn=fn, _n=name: calls.append(_n) or _fn(*a))
    monkeypatch.setattr(tc, "_MODE", "force")
    x = torch.randn(2, 4, 15, 18).to(memory_format=torch.channels_last)
    w = torch.randn(4, 1, 9, 9) / 9
    check_depthwise("cpu", "triton", x, w, torch.randn(4), 1, "same", 1)
    assert sorted(set(calls)) == ["backward_input", "backward_weight", "forward"], calls


@pytest.mark.parametrize("dtype,kernel,stride,dilation,expected", [
    (torch.bfloat16, (31, 31), (1, 1), (1, 1), True),
    (torch.float16, (13, 13), (2, 2), (1, 1), True),
    (torch.bfloat16, (9, 9), (1, 1), (3, 3), True),
    (torch.float32, (31, 31), (1, 1), (1, 1), False),   # fp32 stays on the FMA kernels
    (torch.float64, (31, 31), (1, 1), (1, 1), False),
    (torch.bfloat16, (7, 7), (1, 1), (1, 1), False),    # memory-bound sizes stay direct
    (torch.bfloat16, (31, 1), (1, 1), (1, 1), False),   # no row band to speak of
    (torch.bfloat16, (9, 9), (1, 1), (16, 16), False),  # band wider than one tile
])
def test_applies(dtype, kernel, stride, dilation, expected, monkeypatch):
    require_backend("cuda" if HAS_CUDA else "cpu", "triton")
    monkeypatch.setattr(tc, "_MODE", "1")
    x = torch.empty(2, 8, 32, 32, dtype=dtype)
    assert tc.applies(dtype, kernel, stride, dilation, x) is expected
    monkeypatch.setattr(tc, "_MODE", "0")
    assert tc.applies(dtype, kernel, stride, dilation, x) is False


# --------------------------------------------------------------------------- GPU only

GPU_CASES = [  # (N, C, H, W, k, stride, padding, dilation, M)
    (2, 16, 56, 56, 31, 1, 15, 1, 1),   # RepLKNet
    (4, 32, 14, 14, 13, 1, 6, 1, 1),    # large13
    (2, 8, 33, 47, 9, 2, 4, 1, 2),
    (2, 8, 40, 40, 9, 1, 8, 2, 1),
    (1, 8, 29, 61, (13, 9), (1, 2), (6, 4), 1, 1),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: "x".join(map(str, c[:4])) + f"-k{c[4]}")
def test_gpu_triton_backend(case, layout, dtype, gpu_triton):
    N, C, H, W, k, s, p, d, M = case
    kh, kw = pair(k)
    x = to_layout(torch.randn(N, C, H, W, device="cuda", dtype=dtype), layout)
    w = (torch.randn(C * M, 1, kh, kw, device="cuda") / (kh * kw) ** 0.5).to(dtype)
    b = torch.randn(C * M, device="cuda", dtype=dtype)
    assert tc.applies(dtype, (kh, kw), pair(s), pair(d), x)
    _, grads = check_depthwise("cuda", "triton", x, w, b, s, p, d)
    # grad-weight is reduced in a fixed order: a second run is bitwise equal
    _, grads2 = check_depthwise("cuda", "triton", x, w, b, s, p, d)
    assert torch.equal(grads[1], grads2[1]) and torch.equal(grads[2], grads2[2])


@pytest.mark.gpu
def test_gpu_strided_weight(gpu_triton):
    x = torch.randn(2, 8, 40, 40, device="cuda", dtype=torch.bfloat16)
    w = poisoned_like_view((torch.randn(8, 1, 13, 13, device="cuda") / 13).to(torch.bfloat16))
    out = convext.depthwise_conv2d(x, w, None, 1, 6, backend="triton")
    ref = F.conv2d(x.double(), w.double(), None, 1, 6, 1, 8)
    assert_matches(out, ref, F.conv2d(x, w, None, 1, 6, 1, 8))
