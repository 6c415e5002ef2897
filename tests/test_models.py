"""convext.convert on the real models users bring (torchvision and timm, random weights, small
inputs): same function in float64 in train and eval mode (outputs, every gradient, BatchNorm
buffers), fused chains where the structure allows them, checkpoints both ways, a bf16 autocast
training step, torch.fx, torch.compile(fullgraph=True) and torch.export of the converted model."""
import copy

import pytest
import torch
from torch import nn

import convext
from convext.convert import FusedDepthwiseConv2d
from conftest import RULE_EPS, rel_l2

torchvision = pytest.importorskip("torchvision")

try:
    import timm
except ImportError:  # timm is optional: its models are skipped with a note
    timm = None


def _tv(name, **kw):
    return lambda: getattr(torchvision.models, name)(**kw)


def _deeplab():
    return torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None)


def _timm(name):
    def make():
        if timm is None:
            pytest.skip("timm is not installed")
        return timm.create_model(name, pretrained=False)
    return make


# name: (constructor, fused chains in eval mode with fold_batchnorm, depthwise convs, chains a
# BatchNorm keeps unfused in train mode). The counts follow from the architectures: every
# MobileNetV2 / MNASNet inverted residual is dw -> BN -> act -> 1x1 -> BN; MobileNetV3 blocks with
# squeeze-excitation (8 of 15) use the depthwise output twice; EfficientNet-B0 has SE in every
# block; ConvNeXt's depthwise conv feeds a LayerNorm.
MODELS = {
    "mobilenet_v2": (_tv("mobilenet_v2"), 17, 17, 17),
    "mobilenet_v3_large": (_tv("mobilenet_v3_large"), 7, 15, 7),
    "mnasnet1_0": (_tv("mnasnet1_0"), 17, 17, 17),
    "efficientnet_b0": (_tv("efficientnet_b0"), 0, 16, 0),
    "convnext_tiny": (_tv("convnext_tiny"), 0, 18, 0),
    "deeplabv3_mobilenet_v3_large": (_deeplab, 7, 15, 7),
    "timm_mobilenetv3_large_100": (_timm("mobilenetv3_large_100"), 7, 15, 7),
    "timm_convnext_tiny": (_timm("convnext_tiny"), 0, 18, 0),
}
HEAVY = {"convnext_tiny", "timm_convnext_tiny"}  # 28M parameters: one float64 pass per test


def _model(name):
    torch.manual_seed(0)
    model = MODELS[name][0]()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():  # BatchNorms that do something, so folding is really exercised
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.2, generator=gen)
                m.running_mean.normal_(0, 0.3, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
    return model


def _out(y):
    return y["out"] if isinstance(y, dict) else y


def _run(model, x, seed=2):
    torch.manual_seed(seed)  # the same dropout masks for both models
    return _out(model(x))


def _input(name, dtype=torch.float64):
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=dtype)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(MODELS))
def test_same_function_float64(name, train):
    orig = _model(name).double().train(train)
    conv = convext.convert(orig)
    report = conv.convext_report
    assert len(report.swapped) == MODELS[name][2] and report.unfused_train == MODELS[name][3], report.counts()
    x = _input(name)
    yo, yc = _run(orig, x), _run(conv, x)
    assert yc.dtype == yo.dtype and yc.shape == yo.shape
    assert rel_l2(yc, yo) <= 1e-10  # train-mode BN on 2x2 maps amplifies float64 rounding
    grad = torch.randn_like(yo)
    yo.backward(grad)
    yc.backward(grad)
    po, pc = dict(orig.named_parameters()), dict(conv.named_parameters())
    assert list(po) == list(pc)
    scale = max(p.grad.abs().max().item() for p in po.values())
    for k in po:  # gradients a train-mode BN cancels are rounding noise: floor at the largest gradient
        torch.testing.assert_close(pc[k].grad, po[k].grad, rtol=1e-9, atol=1e-12 * scale, msg=lambda m: f"{k}: {m}")
    bo, bc = dict(orig.named_buffers()), dict(conv.named_buffers())
    assert list(bo) == list(bc)
    for k in bo:
        torch.testing.assert_close(bc[k], bo[k], rtol=1e-10, atol=1e-12, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("name", list(MODELS))
def test_fused_chains_eval_fold(name):
    orig = _model(name).double().eval()
    conv = convext.convert(orig, fold_batchnorm=True)
    report = conv.convext_report
    fused = MODELS[name][1]
    assert len(report.fused) == fused, report
    calls = []
    for m in conv.modules():
        if isinstance(m, FusedDepthwiseConv2d):
            m.register_forward_hook(lambda *a: calls.append(1))
    x = _input(name)
    with torch.no_grad():
        yo, yc = _run(orig, x), _run(conv, x)
    assert len(calls) == fused  # the fused op really runs, once per chain
    assert rel_l2(yc, yo) <= 1e-10  # train-mode BN on 2x2 maps amplifies float64 rounding
    # every BatchNorm right after a conv is folded (all of them in these models)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in orig.modules())
    assert len(report.folded) == n_bn and not any(isinstance(m, nn.BatchNorm2d) for m in conv.modules())


@pytest.mark.parametrize("name", list(MODELS))
def test_checkpoints_both_ways(name):
    orig = _model(name)
    conv = convext.convert(orig)
    so, sc = orig.state_dict(), conv.state_dict()
    assert [(k, v.shape, v.dtype) for k, v in so.items()] == [(k, v.shape, v.dtype) for k, v in sc.items()]
    other = _model(name)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    conv.load_state_dict(other.state_dict(), strict=True)
    back = MODELS[name][0]()
    back.load_state_dict(conv.state_dict(), strict=True)
    for k, v in back.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    x = _input(name, torch.float32)
    other.eval()
    conv.eval()
    with torch.no_grad():
        assert rel_l2(_run(conv, x), _run(other, x)) <= 1e-5


@pytest.mark.parametrize("name", list(MODELS))
def test_autocast_bf16_training_step(name):
    """A bf16 CPU autocast training step: the converted model returns what the original returns (dtype,
    and values as close to float64 as the original's), and its parameters get float32 gradients."""
    orig = _model(name).train()
    conv = convext.convert(orig)
    ref = copy.deepcopy(orig).double()
    x = _input(name, torch.float32)
    y64 = _run(ref, x.double())
    outs = []
    for model in (orig, conv):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = _run(model, x)
            loss = y.float().square().mean()
        loss.backward()
        assert all(p.grad is None or (p.grad.dtype == torch.float32 and p.grad.isfinite().all())
                   for p in model.parameters())
        opt.step()
        outs.append(y)
    yo, yc = outs
    assert yc.dtype == yo.dtype == torch.bfloat16
    err_t, err = rel_l2(yo, y64), rel_l2(yc, y64)
    assert err <= 4 * max(err_t, RULE_EPS[torch.bfloat16]), (err, err_t)


@pytest.mark.parametrize("name", list(MODELS))
def test_fx_compile_export(name):
    orig = _model(name).eval()
    conv = convext.convert(orig, fold_batchnorm=True)
    x = _input(name, torch.float32)
    with torch.no_grad():
        y = _run(conv, x)
        traced = torch.fx.symbolic_trace(conv)
        assert torch.equal(_out(traced(x)), y)
        if name not in HEAVY:  # compiling the 28M-parameter ConvNeXt takes minutes on 2 cores
            compiled = torch.compile(conv, fullgraph=True, backend="aot_eager")
            torch.testing.assert_close(_out(compiled(x)), y)
    exported = torch.export.export(conv, (x,))
    with torch.no_grad():
        torch.testing.assert_close(_out(exported.module()(x)), y)
