"""Every GPU backend is capturable in a CUDA graph (forward and backward): no host synchronisation,
no allocation outside the graph's pool, launches on the current stream. The replayed graph, fed
new inputs through its static tensors, must reproduce eager results on those inputs."""
import pytest
import torch

import convext
from conftest import HAS_CUDA

CASES = [  # (name, N, C, H, W, k, stride, padding, dilation, dtype, channels_last)
    ("3x3-cl-bf16", 4, 64, 28, 28, 3, 1, 1, 1, torch.bfloat16, True),
    ("5x5-s2-fp32", 2, 32, 33, 31, 5, 2, 2, 1, torch.float32, False),
    ("3x3-d2-fp32-cl", 2, 48, 30, 30, 3, 1, 2, 2, torch.float32, True),
    ("13x13-bf16", 2, 16, 28, 28, 13, 1, 6, 1, torch.bfloat16, False),
]


def _backends():
    return [b for b in (convext.backends("cuda") if HAS_CUDA else ["cuda", "triton"]) if b in ("cuda", "triton")]


def _tol(dtype):
    return dict(rtol=0, atol=0) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)


def _capture_and_check(step, inputs):
    """step(*inputs) -> list of tensors. Warm up on a side stream, capture, replay on fresh data."""
    static = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):  # autotuning and lazy initialisation happen here, not in the capture
            step(*static)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = step(*static)
    fresh = [torch.randn_like(t) for t in inputs]
    with torch.no_grad():
        for st, f in zip(static, fresh):
            st.copy_(f)
    graph.replay()
    torch.cuda.synchronize()
    expected = step(*[f.detach().requires_grad_(t.requires_grad) for f, t in zip(fresh, inputs)])
    for i, (o, e) in enumerate(zip(outs, expected)):
        torch.testing.assert_close(o, e, **_tol(o.dtype), msg=lambda m: f"tensor {i}: {m}")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_depthwise_conv2d_graph(backend, case):
    _, N, C, H, W, k, s, p, d, dtype, cl = case
    x = torch.randn(N, C, H, W, device="cuda", dtype=dtype)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(C, 1, k, k, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(C, device="cuda", dtype=dtype, requires_grad=True)
    x.requires_grad_(True)

    def step(x_, w_, b_):
        y = convext.depthwise_conv2d(x_, w_, b_, s, p, d, backend=backend)
        gx, gw, gb = torch.autograd.grad(y, (x_, w_, b_), torch.ones_like(y))
        return [y, gx, gw, gb]

    _capture_and_check(step, [x, w, b])


@pytest.mark.gpu
@pytest.mark.parametrize("backend", _backends())
def test_separable_graph(backend):
    x = torch.randn(4, 64, 28, 28, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dw = torch.randn(64, 1, 3, 3, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    pw = (torch.randn(96, 64, 1, 1, device="cuda") / 8).to(torch.bfloat16).requires_grad_(True)

    def step(x_, dw_, pw_):
        y = convext.depthwise_separable_conv2d(x_, dw_, pw_, padding=1, backend=backend,
                                               depthwise_activation="relu6")
        return [y, *torch.autograd.grad(y, (x_, dw_, pw_), torch.ones_like(y))]

    _capture_and_check(step, [x, dw, pw])
