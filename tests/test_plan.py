"""The per-call memo of checks and backend choice (convext/_plan.py): a memoised call computes
exactly what the full path computes, and anything the decision depends on misses the memo."""
import pytest
import torch
import torch.nn.functional as F

import convext
from convext import _autotune, _backend, _ops, _plan



@pytest.fixture(autouse=True)
def fresh_plans():
    _plan.clear()
    yield
    _plan.clear()


def _ref(x, w, b, stride, padding, dilation):
    return F.conv2d(x.double(), w.double(), None if b is None else b.double(), stride, padding, dilation,
                    groups=x.shape[-3])


def _count_op_calls(monkeypatch):
    """{backend: calls} through _ops.op and torch_depthwise_conv2d."""
    calls = {}
    real_op, real_torch = _ops.op, _ops.torch_depthwise_conv2d

    def op(name, opname):
        calls[name] = calls.get(name, 0) + 1
        return real_op(name, opname)

    def torch_dw(*a, **k):
        calls["torch"] = calls.get("torch", 0) + 1
        return real_torch(*a, **k)
    monkeypatch.setattr(_ops, "op", op)
    monkeypatch.setattr(_ops, "torch_depthwise_conv2d", torch_dw)
    return calls


@pytest.mark.parametrize("backend", ["cpu", "torch", "auto"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "unbatched"])
def test_memoised_call_equals_full_path(backend, layout):
    if backend == "cpu" and "cpu" not in convext.backends("cpu"):
        pytest.skip("convext._C not built")
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 7)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "unbatched":
        x = x[0]
    w, b = torch.randn(12, 1, 3, 3), torch.randn(12)
    outs = [convext.functional.depthwise_conv2d(x, w, b, 2, 1, 1, backend=backend) for _ in range(3)]
    assert len(_plan._PLANS) == 1
    ref = _ref(x, w, b, 2, 1, 1)
    for out in outs:
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
        assert out.shape == ref.shape
        if layout == "channels_last":
            assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)


def test_strides_change_the_result_format():
    """Same shape, other memory format: the memo must not hand back the first call's format."""
    w = torch.randn(4, 1, 3, 3)
    x = torch.randn(2, 4, 8, 8)
    a = convext.functional.depthwise_conv2d(x, w, None, 1, 1, backend="torch")
    xc = x.to(memory_format=torch.channels_last)
    c = convext.functional.depthwise_conv2d(xc, w, None, 1, 1, backend="torch")
    assert a.is_contiguous() and c.is_contiguous(memory_format=torch.channels_last) and not c.is_contiguous()
    torch.testing.assert_close(a, c)


def test_module_attribute_change_takes_effect():
    m = convext.nn.DepthwiseConv2d(4, 3, padding=1)
    x = torch.randn(1, 4, 9, 9)
    m(x)
    m.stride, m.padding, m.dilation = (2, 2), (2, 2), (2, 2)
    torch.testing.assert_close(m(x).double(), _ref(x, m.weight.detach(), m.bias.detach(), 2, 2, 2),
                               rtol=1e-5, atol=1e-5)
    m.bias = None
    torch.testing.assert_close(m(x).double(), _ref(x, m.weight.detach(), None, 2, 2, 2), rtol=1e-5, atol=1e-5)


def test_errors_after_a_memoised_call():
    w, b = torch.randn(4, 1, 3, 3), torch.randn(4)
    x = torch.randn(1, 4, 6, 6)
    convext.functional.depthwise_conv2d(x, w, b, 1, 1)
    convext.functional.depthwise_conv2d(x, w, b, 1, 1)
    with pytest.raises(TypeError, match="bias"):
        convext.functional.depthwise_conv2d(x, w, b.double(), 1, 1)
    with pytest.raises(ValueError, match="stride"):
        convext.functional.depthwise_conv2d(x, w, b, 0, 1)
    with pytest.raises(TypeError, match="stride"):
        convext.functional.depthwise_conv2d(x, w, b, True, 1)  # True == 1 must not hit 1's entry
    with pytest.raises(ValueError, match="backend"):
        convext.functional.depthwise_conv2d(x, w, b, 1, 1, backend="nope")


def test_grad_mode_and_requires_grad_are_part_of_the_key():
    m = convext.nn.DepthwiseConv2d(3, 3, padding=1).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        m(x)
    x.requires_grad_()
    m(x).square().sum().backward()
    xr = x.detach().clone().requires_grad_()
    wr, br = m.weight.detach().clone().requires_grad_(), m.bias.detach().clone().requires_grad_()
    F.conv2d(xr, wr, br, 1, 1, groups=3).square().sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(m.weight.grad, wr.grad)
    torch.testing.assert_close(m.bias.grad, br.grad)


def test_autocast_after_a_plain_call():
    m = convext.nn.DepthwiseConv2d(4, 3, padding=1)
    x = torch.randn(1, 4, 6, 6)
    assert m(x).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(x).dtype == torch.bfloat16
    assert m(x).dtype == torch.float32


def test_switches_are_part_of_the_key(monkeypatch):
    calls = _count_op_calls(monkeypatch)
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 1, 5, 5)
    convext.functional.depthwise_conv2d(x, w, None, 1, 2)
    before = dict(calls)
    monkeypatch.setattr(_backend, "FORCED", "torch")
    convext.functional.depthwise_conv2d(x, w, None, 1, 2)
    assert calls.get("torch", 0) == before.get("torch", 0) + 1


def test_separable_memoised_call_equals_full_path():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 7, 7).to(memory_format=torch.channels_last)
    dw, pw, db, pb = torch.randn(8, 1, 3, 3), torch.randn(5, 8, 1, 1), torch.randn(8), torch.randn(5)
    outs = [convext.functional.depthwise_separable_conv2d(x, dw, pw, db, pb, 1, 1, depthwise_activation="relu6",
                                                          pointwise_activation="silu") for _ in range(2)]
    mid = F.relu6(F.conv2d(x.double(), dw.double(), db.double(), 1, 1, groups=4))
    ref = F.silu(F.conv2d(mid, pw.double(), pb.double()))
    for out in outs:
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
        assert out.is_contiguous(memory_format=torch.channels_last)
    assert len(_plan._PLANS) == 1
    with pytest.raises(ValueError, match="pointwise_activation"):
        convext.functional.depthwise_separable_conv2d(x, dw, pw, db, pb, 1, 1, pointwise_activation="tanh")


def test_nothing_memoised_while_tracing_or_under_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 1, 3, 3)
    with FakeTensorMode() as mode:
        convext.functional.depthwise_conv2d(mode.from_tensor(x), mode.from_tensor(w), None, 1, 1)
    torch.fx.symbolic_trace(convext.nn.DepthwiseConv2d(4, 3))
    assert len(_plan._PLANS) == 0


def test_unsettled_auto_choice_is_not_memoised(monkeypatch, tmp_path, capsys):
    """While `auto` is measuring, the memo waits: the tuning report is still printed once."""
    if "cpu" not in convext.backends("cpu"):
        pytest.skip("convext._C not built")
    monkeypatch.setattr(_autotune, "ENABLED", True)
    _autotune.reset(str(tmp_path))
    try:
        x, w = torch.randn(1, 4, 12, 12), torch.randn(4, 1, 5, 5)
        convext.functional.depthwise_conv2d(x, w, None, 1, 2)
        assert len(_plan._PLANS) == 0  # timed, but its report is due on the next call
        convext.functional.depthwise_conv2d(x, w, None, 1, 2)
        assert "timed the usable backends" in capsys.readouterr().err
        assert len(_plan._PLANS) == 1
        convext.functional.depthwise_conv2d(x, w, None, 1, 2)
        assert _autotune.stats()["timed"] == 1
    finally:
        _autotune.reset()


def test_auto_choice_per_direction(monkeypatch, tmp_path):
    """`auto` keys its measurement on the direction (inference / training): so must the memo."""
    if "cpu" not in convext.backends("cpu"):
        pytest.skip("convext._C not built")
    monkeypatch.setattr(_autotune, "ENABLED", True)
    _autotune.reset(str(tmp_path))
    try:
        m = convext.nn.DepthwiseConv2d(4, 5, padding=2)
        x = torch.randn(1, 4, 12, 12)
        with torch.no_grad():
            for _ in range(3):
                m(x)
        assert _autotune.stats()["timed"] == 1
        for _ in range(3):
            m(x).sum().backward()
        assert _autotune.stats()["timed"] == 2
    finally:
        _autotune.reset()


# --------------------------------------------------------------------------- the layer's own memo


def test_layer_memo_follows_switches_dtype_and_grad(monkeypatch):
    calls = _count_op_calls(monkeypatch)
    m = convext.nn.DepthwiseConv2d(4, 5, padding=2)
    x = torch.randn(1, 4, 9, 9)
    m(x)
    m(x)
    assert "_convext_plan" in m.__dict__
    before = calls.get("torch", 0)
    monkeypatch.setattr(_backend, "FORCED", "torch")
    m(x)
    assert calls.get("torch", 0) == before + 1
    monkeypatch.setattr(_backend, "FORCED", None)
    m(x)
    m.double()
    with pytest.raises(TypeError, match="weight"):  # convext's own check, not a stale plan
        m(x)
    xd = x.double()
    torch.testing.assert_close(m(xd), F.conv2d(xd, m.weight, m.bias, 1, 2, groups=4))
    m.weight.requires_grad_(False)
    m(xd)
    m.weight.requires_grad_(True)
    m(xd).sum().backward()
    assert m.weight.grad is not None and m.bias.grad is not None


def test_layer_memo_is_never_saved_or_copied():
    import copy
    import io
    m = convext.nn.DepthwiseConv2d(3, 3, padding=1)
    m(torch.randn(1, 3, 5, 5))
    assert "_convext_plan" in m.__dict__
    assert "_convext_plan" not in copy.deepcopy(m).__dict__
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    assert "_convext_plan" not in torch.load(buf, weights_only=False).__dict__


def test_layer_memo_forgotten_on_clear():
    m = convext.nn.DepthwiseConv2d(3, 3, padding=1)
    x = torch.randn(1, 3, 5, 5)
    m(x)
    key = m.__dict__["_convext_plan"][0]
    _plan.clear()
    assert _plan.layer_key(m, x, _backend.switches()) != key


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_memoised_inference_skips_autograd_but_not_the_result(context):
    """Without grad mode a memoised plan calls the op below the autograd layer: the same values as the
    full path and F.conv2d, no grad_fn; with grad mode back on the same layer records its graph again."""
    torch.manual_seed(7)
    layer = convext.nn.DepthwiseConv2d(16, 3, padding=1, backend="cpu")
    x = torch.randn(2, 16, 9, 9)
    ref = _ref(x, layer.weight, layer.bias, 1, 1, 1)
    ctx = torch.no_grad if context == "no_grad" else torch.inference_mode
    for _ in range(3):  # the first call plans, the later ones take the memo
        with ctx():
            y = layer(x)
            f = convext.depthwise_conv2d(x, layer.weight, layer.bias, 1, 1, backend="cpu")
        for out in (y, f):
            assert out.grad_fn is None and not out.requires_grad
            torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    y = layer(x)
    assert y.grad_fn is not None
    y.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
