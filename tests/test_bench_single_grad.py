"""The benchmark's opt-in single-gradient modes (bench/harness.py SINGLE_GRAD_MODES): bwd-input times the
grad-input kernel alone, bwd-weight the grad-weight (and grad-bias) kernel alone, for torch and convext
alike; only depthwise_conv2d accepts them."""
import pytest
import torch
import torch.nn.functional as F

from bench import depthwise_conv2d as dw, depthwise_separable_conv2d as sep, harness


def _conv(inputs, kw):
    x, w, b = inputs
    return F.conv2d(x, w, b, kw["stride"], kw["padding"], kw["dilation"], groups=x.shape[1])


@pytest.mark.parametrize("mode,n_grads,shapes", [
    ("bwd", 3, [(2, 4, 9, 9), (4, 1, 3, 3), (4,)]),
    ("bwd-input", 1, [(2, 4, 9, 9)]),
    ("bwd-weight", 2, [(4, 1, 3, 3), (4,)]),
])
def test_mode_fn_computes_only_the_asked_gradients(mode, n_grads, shapes):
    x, w, b = torch.randn(2, 4, 9, 9), torch.randn(4, 1, 3, 3), torch.randn(4)
    kw = dict(stride=1, padding=1, dilation=1)
    fn = harness.mode_fn(harness.Provider("torch", _conv), [x, w, b], kw, mode, "cpu")
    grads = fn()
    assert len(grads) == n_grads and [tuple(g.shape) for g in grads] == shapes


def test_depthwise_case_counts_single_grad_modes():
    case = dw.make_case("t", 2, 4, 9, 3, 1, 1)
    for mode in harness.SINGLE_GRAD_MODES:
        assert case.flops(mode) == case.flops("fwd")
        assert case.bytes(mode, 4) == case.bytes("fwd", 4)
    assert case.bytes("bwd", 4) > case.bytes("bwd-input", 4)


def test_only_depthwise_accepts_single_grad_modes(tmp_path):
    with pytest.raises(SystemExit, match="not supported by depthwise_separable_conv2d"):
        sep.main(["--device", "cpu", "--mode", "bwd-input", "--csv", str(tmp_path / "x.csv"), "--no-plot"])
    with pytest.raises(SystemExit, match="is not one of"):
        dw.main(["--device", "cpu", "--mode", "bwd-nothing", "--csv", str(tmp_path / "x.csv"), "--no-plot"])
