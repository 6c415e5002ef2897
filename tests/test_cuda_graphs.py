"""Every GPU backend is capturable in a CUDA graph (forward and backward): no host synchronisation,
no allocation outside the graph's pool, launches on the current stream. The replayed graph, fed
new inputs through its static tensors, must reproduce eager results on those inputs."""
import pytest
import torch
import torch.nn.functional as F

import convext
from conftest import assert_matches, require_backend, torch_separable

CASES = [  # (name, N, C, H, W, k, stride, padding, dilation, dtype, channels_last)
    ("3x3-cl-bf16", 4, 64, 28, 28, 3, 1, 1, 1, torch.bfloat16, True),
    ("5x5-s2-fp32", 2, 32, 33, 31, 5, 2, 2, 1, torch.float32, False),
    ("3x3-d2-fp32-cl", 2, 48, 30, 30, 3, 1, 2, 2, torch.float32, True),
    ("13x13-bf16", 2, 16, 28, 28, 13, 1, 6, 1, torch.bfloat16, False),
]

# Fixed, not convext.backends("cuda"): a backend missing on the GPU fails (require_backend).
GPU_BACKENDS = ("cuda", "triton")


def _tol(dtype):
    return dict(rtol=0, atol=0) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)


def _capture_and_check(step, reference, inputs):
    """step(*inputs) -> list of tensors (convext), reference(*inputs) -> the same list from torch.nn.
    Warm up on a side stream, capture, replay on fresh data; the replay must equal eager convext on
    that data and match float64 torch (torch at the tested dtype as the yardstick)."""
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
    leaves = [f.detach().requires_grad_(t.requires_grad) for f, t in zip(fresh, inputs)]
    expected = step(*leaves)
    ref64 = reference(*[f.detach().double().requires_grad_(t.requires_grad) for f, t in zip(fresh, inputs)])
    ref_lowp = reference(*[f.detach().requires_grad_(t.requires_grad) for f, t in zip(fresh, inputs)])
    for i, (o, e, r, t) in enumerate(zip(outs, expected, ref64, ref_lowp)):
        torch.testing.assert_close(o, e, **_tol(o.dtype), msg=lambda m: f"tensor {i}: {m}")
        assert_matches(o, r, t, name=f"tensor {i} (replayed) vs float64 torch")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_depthwise_conv2d_graph(backend, case):
    require_backend("cuda", backend)
    _, N, C, H, W, k, s, p, d, dtype, cl = case
    x = torch.randn(N, C, H, W, device="cuda", dtype=dtype)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(C, 1, k, k, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(C, device="cuda", dtype=dtype, requires_grad=True)
    x.requires_grad_(True)

    def run(conv):
        def step(x_, w_, b_):
            y = conv(x_, w_, b_)
            gx, gw, gb = torch.autograd.grad(y, (x_, w_, b_), torch.ones_like(y))
            return [y, gx, gw, gb]
        return step

    _capture_and_check(run(lambda x_, w_, b_: convext.depthwise_conv2d(x_, w_, b_, s, p, d, backend=backend)),
                       run(lambda x_, w_, b_: F.conv2d(x_, w_, b_, s, p, d, groups=C)), [x, w, b])


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_separable_graph(backend):
    require_backend("cuda", backend)
    x = torch.randn(4, 64, 28, 28, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dw = torch.randn(64, 1, 3, 3, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    pw = (torch.randn(96, 64, 1, 1, device="cuda") / 8).to(torch.bfloat16).requires_grad_(True)

    def run(sep):
        def step(x_, dw_, pw_):
            y = sep(x_, dw_, pw_)
            return [y, *torch.autograd.grad(y, (x_, dw_, pw_), torch.ones_like(y))]
        return step

    _capture_and_check(
        run(lambda x_, dw_, pw_: convext.depthwise_separable_conv2d(x_, dw_, pw_, padding=1, backend=backend,
                                                                    depthwise_activation="relu6")),
        run(lambda x_, dw_, pw_: torch_separable(x_, dw_, pw_, None, None, 1, 1, 1, "relu6")), [x, dw, pw])
