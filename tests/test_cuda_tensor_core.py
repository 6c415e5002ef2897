"""The CUDA tensor-core path (csrc/cuda/depthwise_conv2d_tc.cu: stride-1 forward and grad-input of
large fp16/bf16 kernels) is opt-in with CONVEXT_CUDA_TC=1, read once per process, so it is checked
in a child process: outputs and gradients vs float64 under the torch-relative bound, NaN-poisoned
views, layouts, multi-group widths (> 64 columns), several row blocks, dilation, M > 1, asymmetric
padding; the same geometries once more without the path give the reference behaviour."""
import os
import subprocess
import sys
import textwrap

import pytest

import convext

CHILD = textwrap.dedent(r"""
    import sys, torch, torch.nn.functional as F
    sys.path.insert(0, sys.argv[1])
    import convext
    from conftest import assert_matches, assert_memory_format, to_layout, with_grads
    torch.manual_seed(0)
    cases = [  # N, C, M, H, W, (kh, kw), padding, dilation
        (2, 16, 1, 56, 56, (31, 31), 15, 1),
        (4, 32, 1, 14, 14, (13, 13), 6, 1),
        (2, 8, 2, 40, 90, (13, 13), 6, 1),      # M = 2: grad-input sums over the multiplier; 2 column groups
        (1, 8, 1, 100, 37, (9, 11), (4, 5), 1),  # several row blocks, non-square
        (2, 8, 1, 40, 40, (9, 9), 8, 2),         # dilation 2
        (1, 4, 1, 33, 70, (31, 31), 0, 1),       # valid: no padding, output 3 x 40
    ]
    fails = 0
    for dtype in (torch.bfloat16, torch.float16):
        for (N, C, M, H, W, k, p, d) in cases:
            for layout in ("contiguous", "channels_last", "sliced"):
                x = to_layout(torch.randn(N, C, H, W, device="cuda", dtype=dtype), layout)
                w = (torch.randn(C * M, 1, *k, device="cuda") / (k[0] * k[1]) ** 0.5).to(dtype)
                b = torch.randn(C * M, device="cuda", dtype=dtype)
                ours = lambda x_, w_, b_: convext.depthwise_conv2d(x_, w_, b_, 1, p, d, backend="cuda")
                theirs = lambda x_, w_, b_: F.conv2d(x_, w_, b_, 1, p, d, groups=C)
                try:
                    out, grads, go = with_grads(ours, [x, w, b])
                    ref, rgrads, _ = with_grads(theirs, [x.double(), w.double(), b.double()], grad_out=go.double())
                    t_out, t_grads, _ = with_grads(theirs, [x, w, b], grad_out=go)
                    assert_memory_format(out, x)
                    assert_matches(out, ref, t_out)
                    assert_matches(grads[0], rgrads[0], t_grads[0], dtype=dtype, name="grad_input")
                    assert_matches(grads[1], rgrads[1], t_grads[1], dtype=dtype, name="grad_weight")
                except AssertionError as e:
                    fails += 1
                    print("FAIL", dtype, (N, C, M, H, W, k, p, d), layout, str(e)[:200])
    print("failures:", fails)
    sys.exit(1 if fails else 0)
""")


@pytest.mark.gpu
@pytest.mark.parametrize("tc", ["1", "0"], ids=["tensor-cores", "without"])
def test_cuda_large_kernels_fp16_bf16(tc):
    if "cuda" not in convext.backends("cuda"):
        pytest.skip("cuda backend not built")
    env = dict(os.environ, CONVEXT_CUDA_TC=tc)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", CHILD, tests_dir], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


def test_child_script_compiles():
    compile(CHILD, "<child>", "exec")
