"""The seeds' convolution family: conv_cost, receptive_field, multi_grid, HybridDilatedConv2d, ASPP,
ResizeConv2d, and the transposed conv's layout / low-precision fixes.

Yardsticks are independent of the code under test: the seeds' published figures, brute-force
receptive fields (the support of an input gradient), the adjoint identity for transposed-conv
cost, float64 torch.nn.functional composites, torchvision's own DeepLabv3 ASPP.
"""
import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convext
from conftest import assert_matches, device_backend_params, interpreted, rel_l2

DEVICE_BACKENDS = device_backend_params()


# =========================================================================== conv_cost


def _sep(cin, cout, k, convext_layers):
    if convext_layers:
        return convext.nn.DepthwiseSeparableConv2d(cin, cout, k, bias=False)
    return nn.Sequential(nn.Conv2d(cin, cin, k, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False))


@pytest.mark.parametrize("convext_layers", [False, True])
def test_seed_parameter_counts(convext_layers):
    normal = nn.Conv2d(3, 3, 3, bias=False)
    depthwise = convext.nn.DepthwiseConv2d(3, 3, bias=False) if convext_layers else nn.Conv2d(3, 3, 3, groups=3,
                                                                                               bias=False)
    assert convext.conv_cost(normal, (1, 3, 12, 12)).params == 81
    assert convext.conv_cost(depthwise, (1, 3, 12, 12)).params == 27
    cost = convext.conv_cost(_sep(3, 3, 3, convext_layers), (1, 3, 12, 12))
    assert cost.params == 36 and [layer.params for layer in cost.layers] == [27, 9]


@pytest.mark.parametrize("convext_layers", [False, True])
def test_seed_multiply_accumulates(convext_layers):
    normal = convext.conv_cost(nn.Conv2d(3, 256, 5, bias=False), (1, 3, 12, 12))
    assert normal.macs == 1_228_800
    sep = convext.conv_cost(_sep(3, 256, 5, convext_layers), (1, 3, 12, 12))
    assert sep.macs == 53_952
    assert [(layer.op, layer.macs) for layer in sep.layers] == [("depthwise_conv2d", 4_800),
                                                                 ("pointwise_conv2d", 49_152)]
    assert sep["layers"][1]["output_shape"] == (1, 256, 8, 8)
    # unbatched input (C, H, W) and a batch of 4 (4x the work)
    assert convext.conv_cost(nn.Conv2d(3, 256, 5, bias=False), (3, 12, 12)).macs == 1_228_800
    assert convext.conv_cost(_sep(3, 256, 5, convext_layers), (4, 3, 12, 12)).macs == 4 * 53_952


def _mobile_block():
    return nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 5, stride=2, padding=2, groups=16), nn.Conv2d(16, 12, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10)).eval()


@pytest.mark.parametrize("fold", [False, True])
def test_converted_model_costs_the_same(fold):
    """convert's FusedDepthwiseConv2d runs dw -> 1x1 at the depthwise conv's place and the
    FusedPointwiseConv2d passes through: the same layers, names, MACs as the original."""
    model = _mobile_block()
    converted = convext.convert(model, fold_batchnorm=fold)
    assert converted.convext_report.fused, "the test needs a fused chain"
    before, after = convext.conv_cost(model, (2, 8, 16, 16)), convext.conv_cost(converted, (2, 8, 16, 16))
    assert [(layer.name, layer.macs) for layer in after.layers] == [(layer.name, layer.macs) for layer in before.layers]
    assert after.macs == before.macs
    if not fold:
        assert after.params == before.params
        assert [layer.params for layer in after.layers] == [layer.params for layer in before.layers]
    rf_before = [(e.name, e.receptive_field, e.jump) for e in convext.receptive_field(model, (1, 8, 16, 16))]
    rf_after = [(e.name, e.receptive_field, e.jump) for e in convext.receptive_field(converted, (1, 8, 16, 16))]
    assert rf_after == rf_before


def test_cost_formulas():
    """MACs = outputs x (input channels per group) x taps; transposed convs by the adjoint identity (the
    transposed conv of x costs what the forward conv from its output back to x's shape costs)."""
    x = (2, 6, 11, 9)
    for conv in (nn.Conv2d(6, 4, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2),
                 nn.Conv2d(6, 12, 3, groups=6), convext.nn.DepthwiseConv2d(6, 3, stride=2, depth_multiplier=2)):
        y = conv(torch.randn(x))
        expect = y.numel() * (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)
        assert convext.conv_cost(conv, x).macs == expect
    for cls, kw in ((nn.ConvTranspose2d, dict(groups=3)), (convext.nn.DepthwiseConvTranspose2d, {})):
        if cls is nn.ConvTranspose2d:
            up = cls(6, 12, 3, stride=2, padding=1, output_padding=1, **kw)
        else:
            up = cls(6, 3, stride=2, padding=1, output_padding=1, depth_multiplier=2)
        y = up(torch.randn(x))
        down = nn.Conv2d(12, 6, 3, stride=2, padding=1, groups=up.groups)
        assert down(y).shape == x
        assert convext.conv_cost(up, x).macs == convext.conv_cost(down, tuple(y.shape)).macs
    lin = convext.conv_cost(nn.Sequential(nn.Flatten(), nn.Linear(6 * 11 * 9, 5)), x)
    assert lin.macs == 2 * 6 * 11 * 9 * 5 and lin.layers[0].op == "linear"
    c1 = convext.conv_cost(convext.nn.DepthwiseConv1d(4, 5, dilation=2, causal=True, depth_multiplier=3), (2, 4, 30))
    assert c1.macs == 2 * 12 * 30 * 5 and c1.params == 12 * 5 + 12


def test_spatial_separable_counts_as_its_two_convs():
    """The fused k x 1 -> 1 x k op costs and sees what its two depthwise convs in sequence do."""
    if not hasattr(convext.nn, "SpatialSeparableConv2d"):
        pytest.skip("no SpatialSeparableConv2d in this build")
    m = convext.nn.SpatialSeparableConv2d(3, (3, 5), stride=(1, 2), padding=(2, 4), dilation=(2, 2),
                                          depth_multiplier=2)
    pair = nn.Sequential(m.vertical, m.horizontal)
    fused, plain = convext.conv_cost(m, (2, 3, 12, 13)), convext.conv_cost(pair, (2, 3, 12, 13))
    assert [(c.macs, c.params, c.output_shape) for c in fused.layers] == \
        [(c.macs, c.params, c.output_shape) for c in plain.layers]
    assert [c.name for c in fused.layers] == ["vertical", "horizontal"]
    rf = [(e.receptive_field, e.jump, e.output_size) for e in convext.receptive_field(m, (1, 3, 12, 13))]
    assert rf == [(e.receptive_field, e.jump, e.output_size) for e in convext.receptive_field(pair, (1, 3, 12, 13))]
    assert rf[-1][:2] == ((5, 9), (1, 2))


def test_execution_order_functional_calls_and_shared_modules():
    """Traced order, not registration order; functional convs inside forward; a module called twice."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Conv2d(4, 4, 3, padding=1)  # registered first, runs last
            self.shared = convext.nn.DepthwiseConv2d(4, 3, padding=2, dilation=2)
            self.w = nn.Parameter(torch.randn(4, 1, 5, 5))

        def forward(self, x):
            x = self.shared(x)
            x = F.conv2d(x, self.w, padding=2, groups=4)
            x = self.shared(x) if x.sum() > -1e9 else x  # data-dependent: torch.fx could not trace this
            x = F.max_pool2d(x, 2)
            return self.late(x)

    net = Net()
    cost = convext.conv_cost(net, (1, 4, 16, 16))
    assert [layer.name for layer in cost.layers] == ["shared", "w", "shared", "late"]
    assert cost.params == sum(p.numel() for p in net.parameters())  # shared counted once
    rf = convext.receptive_field(net, (1, 4, 16, 16))
    assert [e.name for e in rf] == ["shared", "w", "shared", "max_pool2d", "late"]
    assert [e.receptive_field for e in rf] == [(5, 5), (9, 9), (13, 13), (14, 14), (18, 18)]
    assert [e.jump for e in rf] == [(1, 1), (1, 1), (1, 1), (2, 2), (2, 2)]
    assert rf[-1]["output_size"] == (8, 8)
    assert net.training  # the module's flags are restored


def test_cost_restores_mode_and_rejects_bad_arguments():
    m = _mobile_block().train()
    convext.conv_cost(m, (1, 8, 8, 8))
    assert all(mod.training for mod in m.modules())
    with pytest.raises(TypeError, match="input_size"):
        convext.conv_cost(m, "1x8x8x8")
    with pytest.raises(TypeError, match="input_size"):
        convext.receptive_field(m, (1, 8, 8.5, 8))
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        convext.conv_cost(lambda x: x, (1, 3, 4, 4))


# =========================================================================== receptive_field


def test_seed_receptive_fields():
    for layers in ([nn.Conv2d(3, 3, 3, padding=d, dilation=d) for d in (1, 2, 4)],
                   [convext.nn.DepthwiseConv2d(3, 3, padding=d, dilation=d) for d in (1, 2, 4)],
                   list(convext.nn.HybridDilatedConv2d(3, 3, (1, 2, 4)))):
        rf = convext.receptive_field(nn.Sequential(*layers), (1, 3, 32, 32))
        assert [e["receptive_field"] for e in rf] == [(3, 3), (7, 7), (15, 15)]
        assert [e.jump for e in rf] == [(1, 1)] * 3 and rf[0].output_size == (32, 32)


def _brute_force_rf(model, shape):
    """The widest extent (per dim) of an output pixel's input-gradient support, over all output pixels,
    with positive weights (no cancellation), in float64."""
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.1)
    x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    y = model(x)
    widest = [0] * (len(shape) - 2)
    # 3 outputs per dim around the centre cover every stride phase used below
    ranges = [range(max(0, n // 2 - 1), min(n, n // 2 + 2)) for n in y.shape[2:]]
    for idx in itertools.product(*ranges):
        (g,) = torch.autograd.grad(y[(0, 0) + idx], x, retain_graph=True)
        support = g[0].abs().sum(0) > 0
        if not support.any():  # a transposed conv's output that no input reaches
            continue
        for d in range(len(widest)):
            hit = support.any(dim=tuple(i for i in range(support.dim()) if i != d)).nonzero()
            widest[d] = max(widest[d], int(hit.max() - hit.min() + 1))
    return tuple(widest)


@pytest.mark.parametrize("name,make,shape", [
    ("strided-dilated", lambda: nn.Sequential(nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, (3, 5),
                                              padding=(2, 4), dilation=2), nn.AvgPool2d(2)), (1, 2, 40, 40)),
    ("hdc", lambda: convext.nn.HybridDilatedConv2d(2, 3, (1, 2, 5)), (1, 2, 40, 40)),
    ("transposed", lambda: nn.Sequential(nn.Conv2d(2, 2, 3, stride=2), nn.ConvTranspose2d(2, 2, 4, stride=2),
                                         nn.ConvTranspose2d(2, 2, 3, stride=3, dilation=2)), (1, 2, 12, 12)),
    ("resize", lambda: convext.nn.ResizeConv2d(2, 2, 3, mode="nearest"), (1, 2, 8, 8)),
    ("conv1d", lambda: nn.Sequential(convext.nn.DepthwiseConv1d(2, 2, dilation=3, causal=True),
                                     nn.Conv1d(2, 2, 3, stride=2, dilation=2), nn.MaxPool1d(1)), (1, 2, 40)),
])
def test_receptive_field_matches_gradient_support(name, make, shape):
    model = make()
    rf = convext.receptive_field(model, shape)[-1].receptive_field
    assert rf == _brute_force_rf(model, shape), name


def test_image_pooling_sees_the_whole_image():
    aspp = convext.nn.ASPP(4, 4, rates=(2, 3), norm_layer=None)
    rf = convext.receptive_field(aspp, (1, 4, 20, 24))
    assert rf[-1].name == "project.0" and rf[-1].receptive_field == (20, 24)
    no_pool = convext.nn.ASPP(4, 4, rates=(2, 3), image_pooling=False)
    assert convext.receptive_field(no_pool, (1, 4, 20, 24))[-1].receptive_field == (7, 7)


# =========================================================================== multi_grid and HDC


def test_multi_grid():
    assert convext.multi_grid(2) == (2, 4, 8)
    assert convext.multi_grid(4, (1, 2, 1)) == (4, 8, 4)
    assert convext.multi_grid(1, [1]) == (1,)
    for bad in ((0, (1, 2)), (2, ()), (2, (1, 0)), (2.0, (1,)), (True, (1,))):
        with pytest.raises(ValueError, match="rate|grid"):
            convext.multi_grid(*bad)


def test_hdc_warns_on_gridding_rates():
    with pytest.warns(UserWarning, match=r"\(2, 4, 8\) have a common factor 2"):
        convext.nn.HybridDilatedConv2d(4, dilations=convext.multi_grid(2))
    with pytest.warns(UserWarning, match=r"\(1, 2, 9\).*holes"):
        convext.nn.HybridDilatedConv2d(4, dilations=(1, 2, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ok in ((1, 2, 5), (1, 2, 3), (1, 2, 5, 9, 17), (1,)):
            convext.nn.HybridDilatedConv2d(4, dilations=ok)
    assert convext.blocks.gridding_holes(3, (1, 2, 5)) == []
    assert convext.blocks.gridding_holes(3, (2, 4)) == [-5, -3, -1, 1, 3, 5]
    with pytest.raises(ValueError, match="dilations"):
        convext.nn.HybridDilatedConv2d(4, dilations=(1, 0))
    with pytest.raises(ValueError, match="activation"):
        convext.nn.HybridDilatedConv2d(4, activation="tanh")


# Blocks compose the layers; the layers' Triton kernels have their own interpreter tests, so the blocks
# run on the compiled and torch backends here (and on every backend on a GPU).
COMPILED_BACKENDS = device_backend_params(lambda b: b != "triton")


@pytest.mark.parametrize("device,backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("pointwise", [False, True])
def test_hdc_equals_its_convs(device, backend, pointwise):
    small = interpreted(device, backend)
    C, dil = 3, (1, 2, 5)
    hdc = convext.nn.HybridDilatedConv2d(C, 3, dil, pointwise=pointwise, activation="relu", backend=backend,
                                         dtype=torch.float64, device=device)
    x = torch.randn(2, C, *((7, 6) if small else (13, 12)), dtype=torch.float64, device=device, requires_grad=True)

    def reference(x):
        layers = list(hdc)
        for i, d in enumerate(dil):
            if pointwise:
                blk = layers[i]
                x = F.conv2d(x, blk.depthwise.weight, blk.depthwise.bias, padding=d, dilation=d, groups=C)
                x = F.relu(F.conv2d(x, blk.pointwise.weight, blk.pointwise.bias))
            else:
                conv = layers[2 * i]
                x = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=d, dilation=d, groups=C))
        return x

    y, ref = hdc(x), reference(x)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    params = [x] + list(hdc.parameters())
    go = torch.randn_like(y)
    for g, r in zip(torch.autograd.grad(y, params, go), torch.autograd.grad(ref, params, go)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)
    assert convext.receptive_field(hdc, (1, C, 40, 40))[-1].receptive_field == (17, 17)
    y_cl = hdc(x.detach().contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y, rtol=1e-10, atol=1e-10)


def test_hdc_gradcheck_and_convert_leaves_it():
    hdc = convext.nn.HybridDilatedConv2d(2, 3, (1, 2), pointwise=True, dtype=torch.float64)
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(hdc, (x,))
    converted = convext.convert(hdc)
    assert [type(m) for m in converted.modules()] == [type(m) for m in hdc.modules()]
    assert not converted.convext_report.swapped and not converted.convext_report.fused


# =========================================================================== ASPP


def _aspp_reference(aspp, x):
    """DeepLabv3 ASPP written out with torch.nn.functional (eval mode, BatchNorm as running-stat affine)."""
    def bn(t, m):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    outs = [F.relu(bn(F.conv2d(x, aspp.convs[0][0].weight), aspp.convs[0][1]))]
    for branch, r in zip(aspp.convs[1:1 + len(aspp.rates)], aspp.rates):
        if aspp.separable:
            t = F.relu(bn(F.conv2d(x, branch[0].weight, padding=r, dilation=r, groups=x.shape[1]), branch[1]))
            t = F.relu(bn(F.conv2d(t, branch[3].weight), branch[4]))
        else:
            t = F.relu(bn(F.conv2d(x, branch[0].weight, padding=r, dilation=r), branch[1]))
        outs.append(t)
    pool = aspp.convs[-1]
    p = F.relu(bn(F.conv2d(x.mean((2, 3), keepdim=True), pool[1].weight), pool[2]))
    outs.append(F.interpolate(p, size=x.shape[-2:], mode="bilinear", align_corners=False))
    proj = aspp.project
    return F.relu(bn(F.conv2d(torch.cat(outs, 1), proj[0].weight), proj[1]))


def _randomise_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.normal_()
                m.bias.normal_()


@pytest.mark.parametrize("device,backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("separable", [True, False])
def test_aspp_equals_deeplab_composite(device, backend, separable):
    aspp = convext.nn.ASPP(6, 4, rates=(2, 3), separable=separable, backend=backend, dtype=torch.float64,
                           device=device).eval()
    _randomise_bn(aspp)
    size = (5, 6) if interpreted(device, backend) else (9, 10)
    x = torch.randn(2, 6, *size, dtype=torch.float64, device=device, requires_grad=True)
    y, ref = aspp(x), _aspp_reference(aspp, x)
    assert y.shape == (2, 4, *size)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    params = [x] + [p for p in aspp.parameters()]
    go = torch.randn_like(y)
    for g, r in zip(torch.autograd.grad(y, params, go), torch.autograd.grad(ref, params, go, allow_unused=True)):
        torch.testing.assert_close(g, r if r is not None else torch.zeros_like(g), rtol=1e-10, atol=1e-10)
    # channels_last in, channels_last out (same values)
    y_cl = aspp(x.detach().contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y, rtol=1e-10, atol=1e-10)


def test_aspp_without_norm_runs_the_fused_separable_op():
    aspp = convext.nn.ASPP(2, 2, rates=(1, 2), norm_layer=None, activation="relu6", dropout=0.0,
                           dtype=torch.float64).eval()
    branch = aspp.convs[1][0]
    assert isinstance(branch, convext.nn.DepthwiseSeparableConv2d)
    assert (branch.depthwise_activation, branch.pointwise_activation) == ("relu6", "relu6")
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(aspp, (x,))
    aspp.train()
    aspp(torch.randn(1, 2, 7, 7, dtype=torch.float64)).sum().backward()  # no norm: batch 1 trains
    with pytest.raises(ValueError, match="rates"):
        convext.nn.ASPP(4, 4, rates=(6, 0))
    with pytest.raises(ValueError, match="dropout"):
        convext.nn.ASPP(4, 4, dropout=2)


def test_aspp_loads_torchvision_deeplabv3_aspp():
    """separable=False is torchvision's DeepLabv3 ASPP: same state-dict keys, same outputs."""
    tv = pytest.importorskip("torchvision.models.segmentation.deeplabv3")
    ref = tv.ASPP(8, [3, 6], 5).eval()
    _randomise_bn(ref)
    ours = convext.nn.ASPP(8, 5, rates=(3, 6), separable=False).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 8, 11, 9)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    converted = convext.convert(ours)
    assert [type(m) for m in converted.modules()] == [type(m) for m in ours.modules()]


# =========================================================================== ResizeConv2d


def _resize_reference(layer, x, output_padding=None):
    """F.interpolate, then zero pad / crop to the matching ConvTranspose2d's size, then F.conv2d."""
    s, k, p, d = layer.scale_factor, layer.kernel_size, layer.padding, layer.dilation
    op = layer.output_padding if output_padding is None else output_padding
    H, W = x.shape[-2:]
    up = F.interpolate(x, size=(H * s[0], W * s[1]), mode=layer.mode,
                       align_corners=False if layer.mode == "bilinear" else None)
    pads = []
    for i, n in enumerate((H, W)):
        target = (n - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1
        total = target - n * s[i] + d[i] * (k[i] - 1)
        pads.append((total // 2, total - total // 2))
    up = F.pad(up, (*pads[1], *pads[0]))
    groups = x.shape[1] if layer.depthwise else 1
    return F.conv2d(up, layer.conv.weight, layer.conv.bias, 1, 0, d, groups)


def test_resize_conv_has_the_transposed_conv_output_size():
    for k, s, p, op, d in itertools.product((1, 3, 4), (1, 2, 3), (0, 2), (0, 1, 2), (1, 2)):
        if op >= max(s, d):
            continue
        t = nn.ConvTranspose2d(2, 4, k, s, p, op, dilation=d)
        r = convext.nn.ResizeConv2d(2, 4, k, s, padding=p, output_padding=op, dilation=d)
        for H, W in ((3, 4), (6, 5)):
            x = torch.randn(1, 2, H, W)
            try:
                expected = t(x).shape
            except RuntimeError:  # "Output size is too small": ours refuses too
                with pytest.raises(ValueError, match="output would be empty"):
                    r(x)
                continue
            assert r(x).shape == expected, (k, s, p, op, d, H, W)
    t = nn.ConvTranspose2d(3, 3, 3, stride=2, padding=1)
    r = convext.nn.ResizeConv2d(3, 3, 3, padding=1)
    x = torch.randn(1, 3, 5, 6)
    for size in ([10, 11], [9, 12], (1, 3, 10, 12)):
        assert r(x, output_size=size).shape == t(x, output_size=size).shape


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("depthwise,mode,k,s,p,op", [(False, "nearest", 3, 2, 1, 1), (True, "nearest", 4, 2, 1, 0),
                                                     (True, "bilinear", 3, 3, 0, 2), (False, "bilinear", 5, 2, 2, 0)])
def test_resize_conv_values_and_gradients(device, backend, depthwise, mode, k, s, p, op):
    if interpreted(device, backend) and not (depthwise and mode == "nearest"):
        pytest.skip("the backend matters only to the depthwise conv: one interpreted case")
    layer = convext.nn.ResizeConv2d(3, 6, k, s, mode, depthwise=depthwise, padding=p, output_padding=op,
                                    backend=backend, dtype=torch.float64, device=device)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, device=device, requires_grad=True)
    y, ref = layer(x), _resize_reference(layer, x)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    params = [x, layer.conv.weight, layer.conv.bias]
    go = torch.randn_like(y)
    for g, r in zip(torch.autograd.grad(y, params, go), torch.autograd.grad(ref, params, go)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last)
    y_cl = layer(x_cl)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer(x[0]), y[0], rtol=1e-10, atol=1e-10)  # unbatched


def test_resize_conv_gradcheck_and_errors():
    layer = convext.nn.ResizeConv2d(2, 4, 3, depthwise=True, padding=1, output_padding=1, dtype=torch.float64)
    assert torch.autograd.gradcheck(layer, (torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True),))
    assert set(layer.state_dict()) == {"conv.weight", "conv.bias"}
    with pytest.raises(ValueError, match="mode"):
        convext.nn.ResizeConv2d(2, 2, 3, mode="bicubic-ish")
    with pytest.raises(ValueError, match="out_channels .5. to be a multiple of in_channels .2."):
        convext.nn.ResizeConv2d(2, 5, 3, depthwise=True)
    with pytest.raises(ValueError, match="output_padding"):
        convext.nn.ResizeConv2d(2, 2, 3, scale_factor=2, output_padding=2)
    with pytest.raises(ValueError, match="scale_factor"):
        convext.nn.ResizeConv2d(2, 2, 3, scale_factor=0)
    with pytest.raises(ValueError, match="input must be a 3-D or 4-D"):
        convext.nn.ResizeConv2d(2, 2, 3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="output would be empty"):
        convext.nn.ResizeConv2d(2, 2, 1, padding=3)(torch.randn(1, 2, 2, 2))
    with pytest.raises(ValueError, match="output_size"):
        convext.nn.ResizeConv2d(2, 2, 3)(torch.randn(1, 2, 4, 4), output_size=(20, 20))


def test_resize_conv_has_no_checkerboard():
    """A constant image through uniform weights: the stride-2 transposed conv alternates (the checkerboard),
    ResizeConv2d is flat away from the border."""
    x = torch.ones(1, 1, 8, 8)
    t = nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1, bias=False)
    r = convext.nn.ResizeConv2d(1, 1, 3, padding=1, output_padding=1, bias=False)
    with torch.no_grad():
        t.weight.fill_(1.0)
        r.conv.weight.fill_(1.0)
        yt, yr = t(x)[0, 0, 2:-2, 2:-2], r(x)[0, 0, 2:-2, 2:-2]
    assert yt.max() / yt.min() == 4  # interior values 1, 2, 4: overlap counts of the stride-2 kernel
    assert torch.all(yr == yr[0, 0])


# =========================================================================== transposed conv fixes


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("mult", [1, 2, 3])
def test_transposed_channels_last_keeps_its_format(device, backend, mult):
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(2, mult, 3, 3, dtype=torch.float64, device=device)
    b = torch.randn(2 * mult, dtype=torch.float64, device=device)
    for stride, op in ((1, 0), (2, 1)):
        y = convext.depthwise_conv_transpose2d(x, w, b, stride, 1, op, backend=backend)
        ref = F.conv_transpose2d(x, w, b, stride, 1, op, 2)
        assert y.is_contiguous(memory_format=torch.channels_last), (stride, y.stride())
        torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


def _low_precision_params():
    out = []
    for p in device_backend_params(lambda b: b != "torch"):
        device, backend = p.values
        # the interpreter: one multiplier per dtype (each case takes seconds there)
        cases = [(torch.float16, 2)] if interpreted(device, backend) else \
            list(itertools.product((torch.float16, torch.bfloat16), (2, 4)))
        out += [pytest.param(device, backend, dt, m, id=f"{p.id}-{str(dt)[6:]}-M{m}", marks=p.marks) for dt, m in cases]
    return out


@pytest.mark.parametrize("device,backend,dtype,mult", _low_precision_params())
def test_transposed_low_precision_rounds_once(device, backend, dtype, mult):
    """grad-input at M >= 2 sums M per-copy gradients: rounding each copy first doubled the error. Now every
    tensor (output, grad-input, grad-weight, grad-bias) is within 1.1x torch's own error (+ eps)."""
    C, small = 6, interpreted(device, backend)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2 if small else 3, C, 4 if small else 9, 4 if small else 9, generator=g).to(device, dtype)
    w = (torch.randn(C, mult, 3, 3, generator=g) / 3).to(device, dtype)
    b = torch.randn(C * mult, generator=g).to(device, dtype)

    def run(fn, tensors):
        leaves = [t.detach().requires_grad_() for t in tensors]
        out = fn(*leaves)
        go = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(device, out.dtype)
        return [out] + list(torch.autograd.grad(out, leaves, go))

    ref = run(lambda a, c, d: F.conv_transpose2d(a, c, d, 2, 1, 1, C), [x.double(), w.double(), b.double()])
    theirs = run(lambda a, c, d: F.conv_transpose2d(a, c, d, 2, 1, 1, C), [x, w, b])
    ours = run(lambda a, c, d: convext.depthwise_conv_transpose2d(a, c, d, 2, 1, 1, backend=backend), [x, w, b])
    for name, o, t, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, theirs, ref):
        assert o.dtype == dtype, name
        assert rel_l2(o, r) <= 1.1 * rel_l2(t, r) + 1e-6, (name, rel_l2(o, r), rel_l2(t, r))
        assert_matches(o, r, t, dtype=dtype, name=name)
