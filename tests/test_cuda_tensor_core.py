"""The CUDA tensor-core path (csrc/cuda/depthwise_conv2d_tc.cu: stride-1 forward, grad-input and
grad-weight of large fp16/bf16 kernels), opt-in with CONVEXT_CUDA_TC=1 (read on every call): outputs
and all gradients vs float64 under the torch-relative bound, on layouts (NaN-poisoned views),
multi-group widths (> 64 columns), several row blocks, dilation, M > 1, asymmetric padding; the
same cases without the path as the reference behaviour; bitwise-repeatable gradients."""
import pytest
import torch

from conftest import check_depthwise, require_backend, to_layout

CASES = [  # N, C, M, H, W, (kh, kw), padding, dilation
    (2, 16, 1, 56, 56, (31, 31), 15, 1),     # RepLKNet
    (4, 32, 1, 14, 14, (13, 13), 6, 1),      # large13: one warp per block
    (2, 8, 2, 40, 90, (13, 13), 6, 1),       # M = 2 (grad-input sums over it); two column groups
    (1, 8, 1, 100, 37, (9, 11), (4, 5), 1),  # several row blocks, non-square kernel
    (2, 8, 1, 40, 40, (9, 9), 8, 2),         # dilation 2
    (1, 4, 1, 33, 70, (31, 31), 0, 1),       # no padding: 3 x 40 outputs
]


def _ids(c):
    return f"{c[0]}x{c[1]}x{c[3]}x{c[4]}-k{c[5][0]}x{c[5][1]}-m{c[2]}-d{c[7]}"


@pytest.mark.gpu
@pytest.mark.parametrize("tc", ["1", "0"], ids=["tensor-cores", "without"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_large_kernels_fp16_bf16(case, dtype, layout, tc, monkeypatch):
    require_backend("cuda", "cuda")
    monkeypatch.setenv("CONVEXT_CUDA_TC", tc)
    N, C, M, H, W, k, p, d = case
    x = to_layout(torch.randn(N, C, H, W, device="cuda", dtype=dtype), layout)
    w = (torch.randn(C * M, 1, *k, device="cuda") / (k[0] * k[1]) ** 0.5).to(dtype)
    b = torch.randn(C * M, device="cuda", dtype=dtype)

    _, grads = check_depthwise("cuda", "cuda", x, w, b, 1, p, d)
    _, grads2 = check_depthwise("cuda", "cuda", x, w, b, 1, p, d)
    assert all(torch.equal(g1, g2) for g1, g2 in zip(grads, grads2)), "gradients differ between two runs"
