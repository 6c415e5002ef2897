"""convext.convert on MobileNetV2- and DeepLabv3-like models: same function (outputs and
gradients, train and eval), what is replaced, what is fused, what is left alone, and
BatchNorm folding."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convext
from convext.nn import DepthwiseConv1d, DepthwiseConv2d, DepthwiseConvTranspose2d, DepthwiseSeparableConv2d
from convext.convert import FusedDepthwiseConv2d, FusedPointwiseConv2d
from conftest import CPU_BACKENDS, HAS_CUDA, interpreted

# The interpreted Triton backend is too slow for whole models; it is covered op by op.
BACKENDS = [pytest.param("cpu", b, id=f"cpu-{b}") for b in CPU_BACKENDS if not interpreted("cpu", b)]
BACKENDS += [pytest.param("cpu", "auto", id="cpu-auto")]
BACKENDS += [pytest.param("cuda", b, id=f"cuda-{b}", marks=pytest.mark.gpu)
             for b in (convext.backends("cuda") if HAS_CUDA else ["cuda", "triton", "torch"])]


# --------------------------------------------------------------------------- models


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> BN -> ReLU6 -> dw 3x3 -> BN -> ReLU6 -> 1x1 project -> BN."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid),
                   nn.ReLU6(inplace=True), nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Like(nn.Module):
    N_CHAINS = 5  # dw -> BN -> ReLU6 -> 1x1 -> BN chains (one per inverted residual)

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True)),
            InvertedResidual(8, 8, 1, 1),
            InvertedResidual(8, 12, 2, 6),
            InvertedResidual(12, 12, 1, 6),
            InvertedResidual(12, 16, 2, 6),
            InvertedResidual(16, 16, 1, 4),
            nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)),
        )
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SepConv(nn.Module):
    """The hand-written separable module (a `.depthwise` / `.pointwise` pair)."""

    def __init__(self, cin, cout, k, dilation=1):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, k, padding=dilation * (k // 2), dilation=dilation, groups=cin)
        self.pointwise = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class MyDepthwise(nn.Conv2d):
    """A user subclass: must be left alone even though it is depthwise."""

    def forward(self, x):
        return super().forward(x) * 0.5


class ASPP(nn.Module):
    def __init__(self, cin, cout, rates=(2, 4, 6)):
        super().__init__()
        self.branches = nn.ModuleList([nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                                     nn.ReLU())])
        for r in rates:  # dilated depthwise separable branches: dw directly followed by pw
            self.branches.append(nn.Sequential(
                nn.Conv2d(cin, cin, 3, padding=r, dilation=r, groups=cin, bias=False),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(cout * (len(rates) + 2), cout, 1, bias=False),
                                     nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x):
        outs = [b(x) for b in self.branches]
        outs.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, 1))


class DeepLabV3Like(nn.Module):
    N_PAIRS = 4  # SepConv + 3 ASPP branches
    N_DEPTHWISE = 5  # + the dw conv followed by BN (not a pair)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.sep = SepConv(16, 24, 3, dilation=2)
        self.dw_bn = nn.Sequential(nn.Conv2d(24, 48, 3, padding=4, dilation=4, groups=24, bias=False),
                                   nn.BatchNorm2d(48), nn.ReLU(), nn.Conv2d(48, 32, 1))
        self.regular = nn.Conv2d(32, 32, 3, padding=1)  # groups=1: not depthwise
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)  # grouped, not depthwise
        self.custom = MyDepthwise(32, 32, 3, padding=1, groups=32)  # subclass: untouched
        self.reflect = nn.Conv2d(32, 32, 3, padding=1, groups=32, padding_mode="reflect")  # untouched
        self.aspp = ASPP(32, 16)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        size = x.shape[-2:]
        x = self.stem(x)
        x = F.relu(self.sep(x))
        x = self.dw_bn(x)
        x = self.reflect(self.custom(self.grouped(F.relu(self.regular(x)))))
        x = self.head(self.aspp(x))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


MODELS = {"mobilenetv2": MobileNetV2Like, "deeplabv3": DeepLabV3Like}


def randomized(model):
    """Non-trivial BN affine parameters and running stats (so folding is really exercised and
    every parameter has a distinct value)."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model


def count(model, cls, exact=True):
    """Modules of type `cls`, not counting the parts of a DepthwiseSeparableConv2d."""
    inner = {id(c) for m in model.modules() if isinstance(m, DepthwiseSeparableConv2d)
             for c in m.modules() if c is not m}
    return sum(1 for m in model.modules()
               if id(m) not in inner and (type(m) is cls if exact else isinstance(m, cls)))


def exact_zero_padded_depthwise(model):
    return [n for n, m in model.named_modules() if type(m) is nn.Conv2d and m.groups == m.in_channels
            and m.in_channels > 1 and m.out_channels % m.in_channels == 0 and m.padding_mode == "zeros"]


def snapshot(model):
    return ([(n, type(m)) for n, m in model.named_modules()],
            {k: v.clone() for k, v in model.state_dict().items()})


def assert_same_function(orig, conv, x, train):
    """Same outputs, input grads and parameter grads (parameters matched by value)."""
    orig.train(train)
    conv.train(train)
    xo = x.clone().requires_grad_(True)
    xc = x.clone().requires_grad_(True)
    # match parameters before running: train-mode BN updates buffers, not parameters
    conv_params = list(conv.parameters())
    pairs = []
    for name, p in orig.named_parameters():
        same = [q for q in conv_params if q.shape == p.shape and torch.equal(q.detach(), p.detach())]
        assert len(same) == 1, f"{name}: {len(same)} matching parameters in the converted model"
        pairs.append((name, p, same[0]))
    assert len(conv_params) == len(pairs), "converted model has extra parameters"
    yo, yc = orig(xo), conv(xc)
    torch.testing.assert_close(yc, yo, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(yo)
    yo.backward(g)
    yc.backward(g)
    torch.testing.assert_close(xc.grad, xo.grad, rtol=1e-4, atol=1e-5)
    for name, p, q in pairs:
        assert q.grad is not None, f"{name}: no grad in the converted model"
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-4, msg=lambda m: f"{name}: {m}")


# --------------------------------------------------------------------------- function preserved


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_same_function(device, backend, model_name, train):
    torch.manual_seed(0)
    # float64 on the GPU: fp32 convs there may use TF32, whose rounding train-mode BN amplifies
    dtype = torch.float64 if device == "cuda" else torch.float32
    model = randomized(MODELS[model_name]()).to(device, dtype)
    conv = convext.convert(model, backend=backend)
    assert conv is not model
    assert_same_function(model, conv, torch.randn(2, 3, 24, 24, device=device, dtype=dtype), train)


def test_mobilenetv2_structure():
    model = MobileNetV2Like()
    conv = convext.convert(model)
    # every dw conv is followed by BN, so nothing fuses without fold_batchnorm
    assert count(conv, DepthwiseConv2d) == MobileNetV2Like.N_CHAINS
    assert count(conv, FusedDepthwiseConv2d) == 0
    assert exact_zero_padded_depthwise(conv) == []
    # 1x1 convs and the stem stay plain nn.Conv2d
    assert count(conv, nn.Conv2d) == count(model, nn.Conv2d) - MobileNetV2Like.N_CHAINS
    assert count(conv, nn.BatchNorm2d) == count(model, nn.BatchNorm2d)


def test_deeplab_structure_fused():
    model = DeepLabV3Like()
    conv = convext.convert(model)
    assert count(conv, FusedDepthwiseConv2d) == DeepLabV3Like.N_PAIRS
    # the dw conv followed by BN is replaced, not fused (without fold_batchnorm)
    assert count(conv, DepthwiseConv2d) + count(conv, FusedDepthwiseConv2d) == DeepLabV3Like.N_DEPTHWISE
    assert exact_zero_padded_depthwise(conv) == []
    assert type(conv.regular) is nn.Conv2d and type(conv.grouped) is nn.Conv2d
    assert type(conv.custom) is MyDepthwise
    assert type(conv.reflect) is nn.Conv2d and conv.reflect.padding_mode == "reflect"
    assert type(conv.stem[0]) is nn.Conv2d and type(conv.head) is nn.Conv2d
    # untouched modules keep their parameters (values) exactly
    for name in ("regular", "grouped", "custom", "reflect"):
        for k, v in getattr(model, name).state_dict().items():
            assert torch.equal(getattr(conv, name).state_dict()[k], v)


def test_deeplab_no_fusion():
    model = randomized(DeepLabV3Like())
    conv = convext.convert(model, fuse_separable=False)
    assert count(conv, FusedDepthwiseConv2d) == 0
    assert count(conv, DepthwiseConv2d) == DeepLabV3Like.N_DEPTHWISE
    assert exact_zero_padded_depthwise(conv) == []
    assert type(conv.sep.depthwise) is DepthwiseConv2d and type(conv.sep.pointwise) is nn.Conv2d
    assert_same_function(model, conv, torch.randn(2, 3, 24, 24), train=True)


def test_separable_pair_forms_are_fused():
    seq = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 12, 1), nn.ReLU())
    conv = convext.convert(seq)
    assert count(conv, FusedDepthwiseConv2d) == 1 and count(conv, DepthwiseConv2d, exact=True) == 0
    x = torch.randn(2, 8, 10, 10)
    assert_same_function(seq, conv, x, train=True)
    holder = nn.Module()
    holder.block = SepConv(8, 12, 5, dilation=2)
    wrapper = nn.Sequential(holder.block, nn.ReLU())
    conv = convext.convert(wrapper)
    assert count(conv, FusedDepthwiseConv2d) == 1
    assert_same_function(wrapper, conv, x, train=True)


def test_pairs_that_must_not_fuse():
    """Only a 1x1, stride-1, unpadded, groups=1 conv completes a separable pair."""
    cases = [
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 3, padding=1)),  # 3x3
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1, stride=2)),  # strided
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1, padding=1)),  # padded
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1, groups=2)),  # grouped
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Tanh(), nn.Conv2d(8, 8, 1)),  # not fusable act
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1)),  # BN, no fold
    ]
    x = torch.randn(2, 8, 9, 9)
    for seq in cases:
        conv = convext.convert(seq)
        assert count(conv, FusedDepthwiseConv2d) == 0, seq
        assert count(conv, DepthwiseConv2d) == 1, seq
        assert_same_function(seq, conv, x, train=True)


def test_conv1d_and_transpose_replaced():
    model = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1, groups=4), nn.ReLU(), nn.Conv1d(8, 8, 1))
    conv = convext.convert(model)
    assert type(conv[0]) is DepthwiseConv1d and type(conv[2]) is nn.Conv1d
    assert_same_function(model, conv, torch.randn(2, 4, 17), train=True)
    model = nn.Sequential(nn.ConvTranspose2d(4, 8, 4, stride=2, padding=1, groups=4), nn.ReLU())
    conv = convext.convert(model)
    assert type(conv[0]) is DepthwiseConvTranspose2d
    assert_same_function(model, conv, torch.randn(2, 4, 7, 6), train=True)


def test_top_level_depthwise_module():
    m = nn.Conv2d(6, 12, 3, padding=1, groups=6)
    conv = convext.convert(m)
    assert type(conv) is DepthwiseConv2d
    assert_same_function(m, conv, torch.randn(1, 6, 8, 8), train=False)


# --------------------------------------------------------------------------- inplace


def test_inplace_false_leaves_original_untouched():
    for cls in MODELS.values():
        model = randomized(cls())
        before = snapshot(model)
        conv = convext.convert(model, fold_batchnorm=False)
        assert conv is not model
        after = snapshot(model)
        assert before[0] == after[0]
        assert before[1].keys() == after[1].keys()
        assert all(torch.equal(before[1][k], after[1][k]) for k in before[1])
        # and the converted model does not share parameters with the original
        ids = {id(p) for p in model.parameters()}
        assert not any(id(p) in ids for p in conv.parameters())


def test_inplace_true_converts_original():
    model = DeepLabV3Like()
    out = convext.convert(model, inplace=True)
    assert count(out, FusedDepthwiseConv2d) == DeepLabV3Like.N_PAIRS
    assert count(model, FusedDepthwiseConv2d) == DeepLabV3Like.N_PAIRS  # the same object was changed


# --------------------------------------------------------------------------- fold_batchnorm


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_fold_batchnorm_eval(device, backend, model_name):
    torch.manual_seed(0)
    model = randomized(MODELS[model_name]()).to(device).eval()
    conv = convext.convert(model, backend=backend, fold_batchnorm=True)
    conv.eval()
    x = torch.randn(2, 3, 20, 20, device=device)
    with torch.no_grad():
        ref64 = copy.deepcopy(model).double()(x.double())
        y = conv(x)
        yt = model(x)
    # folding only reorders rounding: as close to float64 as the unfolded float32 model, give or take
    err = (y.double() - ref64).norm() / ref64.norm()
    err_t = (yt.double() - ref64).norm() / ref64.norm()
    assert err <= 4 * max(err_t, torch.finfo(torch.float32).eps), (err.item(), err_t.item())
    if model_name == "mobilenetv2":
        assert count(conv, FusedDepthwiseConv2d) == MobileNetV2Like.N_CHAINS
        assert count(conv, DepthwiseConv2d) == 0
        assert count(conv, nn.BatchNorm2d) < count(model, nn.BatchNorm2d) - MobileNetV2Like.N_CHAINS
    else:
        assert count(conv, FusedDepthwiseConv2d) == DeepLabV3Like.N_DEPTHWISE
    for mod in conv.modules():  # no BN directly after a convext layer is left
        if isinstance(mod, nn.Sequential):
            kids = list(mod)
            for a, b in zip(kids, kids[1:]):
                assert not (isinstance(a, (DepthwiseConv2d, DepthwiseSeparableConv2d))
                            and isinstance(b, nn.BatchNorm2d)), mod


def test_fold_batchnorm_train_raises():
    model = MobileNetV2Like().train()
    with pytest.raises(ValueError, match=r"(?i)eval|train"):
        convext.convert(model, fold_batchnorm=True)


def test_fold_batchnorm_leaves_original():
    model = randomized(MobileNetV2Like()).eval()
    before = snapshot(model)
    convext.convert(model, fold_batchnorm=True)
    after = snapshot(model)
    assert before[0] == after[0] and all(torch.equal(before[1][k], after[1][k]) for k in before[1])


# --------------------------------------------------------------------------- dataflow, not names


class Named(nn.Module):
    """A module with `.depthwise` / `.pointwise` attributes whose forward is given: names decide nothing."""

    def __init__(self, forward, cin=8, cout=8, bn=False):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin)
        self.bn = nn.BatchNorm2d(cin) if bn else nn.Identity()
        self.pointwise = nn.Conv2d(cin, cout, 1)
        self._forward = forward

    def forward(self, x):
        return self._forward(self, x)


class Piecewise(nn.Module):
    """A Sequential whose members the parent calls one by one."""

    def __init__(self, forward):
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1))
        self._forward = forward

    def forward(self, x):
        return self._forward(self, x)


class TrainOnlyDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.drop = nn.Dropout(0.0)  # p=0: same values, but another dataflow in train mode
        self.pw = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.dw(x)
        if self.training:
            y = self.drop(y) * 1.0
        return self.pw(y)


class SharedAct(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.act = nn.ReLU()
        self.pw = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.act(self.pw(self.act(self.dw(x))))


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace its forward."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1))

    def forward(self, x):
        return self.block(x) if x.sum() > 0 else -self.block(-x)


class HasUntraceableChild(nn.Module):
    def __init__(self):
        super().__init__()
        self.odd = Untraceable()
        self.sep = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2, groups=8), nn.ReLU6(), nn.Conv2d(8, 12, 1))

    def forward(self, x):
        return self.sep(self.odd(x))


NOT_FUSED = {
    "pointwise_first": lambda: Named(lambda m, x: m.depthwise(m.pointwise(x))),
    "depthwise_output_used_twice": lambda: Named(lambda m, x: (lambda d: m.pointwise(d) + d)(m.depthwise(x))),
    "bn_between_train": lambda: Named(lambda m, x: m.pointwise(F.relu(m.bn(m.depthwise(x)))), bn=True),
    "functional_relu_between": lambda: Named(lambda m, x: m.pointwise(F.relu(m.depthwise(x)))),
    "scaled_between": lambda: Named(lambda m, x: m.pointwise(2.0 * m.depthwise(x))),
    "piecewise_two_users": lambda: Piecewise(lambda m, x: (lambda y: m.seq[1](y) + y.mean())(m.seq[0](x))),
    "piecewise_op_between": lambda: Piecewise(lambda m, x: m.seq[1](torch.tanh(m.seq[0](x)))),
    "depthwise_called_twice": lambda: Named(lambda m, x: m.pointwise(m.depthwise(m.depthwise(x)))),
    "train_only_dataflow": TrainOnlyDropout,
    "shared_activation": SharedAct,
    "untraceable": Untraceable,
}


@pytest.mark.parametrize("name", list(NOT_FUSED))
def test_not_a_plain_chain_is_not_fused(name):
    torch.manual_seed(0)
    model = randomized(NOT_FUSED[name]())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conv = convext.convert(model)
    assert count(conv, FusedDepthwiseConv2d, exact=False) == 0, conv.convext_report
    assert count(conv, FusedPointwiseConv2d, exact=False) == 0
    assert count(conv, DepthwiseConv2d) == 1 and exact_zero_padded_depthwise(conv) == []
    assert list(conv.state_dict()) == list(model.state_dict())
    untraced = [str(w.message) for w in caught if "could not trace" in str(w.message)]
    assert bool(untraced) == (name == "untraceable"), untraced
    x = torch.randn(2, 8, 9, 9)
    for train in (True, False):
        assert_same_function(model, conv, x, train)


def test_report_says_why():
    conv = convext.convert(NOT_FUSED["bn_between_train"]())
    report = conv.convext_report
    assert report.swapped == ["depthwise"] and report.fused == [] and report.unfused_train == 1
    assert any(p == "depthwise" and "BatchNorm" in why for p, why in report.left_alone), report
    conv = convext.convert(NOT_FUSED["functional_relu_between"]())
    assert any("function call" in why for _, why in conv.convext_report.left_alone), conv.convext_report
    assert "swapped 1" in str(conv.convext_report)


FUSED = {
    "dw_pw": lambda: Named(lambda m, x: m.pointwise(m.depthwise(x)), cout=12),
    "dw_relu_pw_functional_tail": lambda: nn.Sequential(
        Named(lambda m, x: F.relu(m.pointwise(m.depthwise(x))), cout=12)),
    "piecewise_direct": lambda: Piecewise(lambda m, x: m.seq[1](m.seq[0](x))),
    "dw_act_pw_act_modules": lambda: nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=8), nn.Hardswish(),
                                                   nn.Identity(), nn.Conv2d(16, 12, 1), nn.SiLU()),
    "untraceable_child_skipped": HasUntraceableChild,
}


@pytest.mark.parametrize("name", list(FUSED))
def test_plain_chain_fused_in_train_and_eval(name):
    torch.manual_seed(0)
    model = FUSED[name]()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conv = convext.convert(model)
    assert count(conv, FusedDepthwiseConv2d) == 1, conv.convext_report
    assert count(conv, FusedPointwiseConv2d) == 1
    assert list(conv.state_dict()) == list(model.state_dict())
    if name == "untraceable_child_skipped":  # the child is named, swapped but not fused inside
        assert any("'odd'" in str(w.message) for w in caught), [str(w.message) for w in caught]
        assert type(conv.odd.block[0]) is DepthwiseConv2d and type(conv.odd.block[1]) is nn.Conv2d
    x = torch.randn(2, 8, 9, 9)
    for train in (True, False):
        assert_same_function(model, conv, x, train)


def test_hooks_block_fusion_and_survive_swap():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1))
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    conv = convext.convert(model)
    assert count(conv, FusedDepthwiseConv2d) == 0 and type(conv[0]) is DepthwiseConv2d
    conv(torch.randn(1, 8, 5, 5))
    assert seen == [torch.Size([1, 8, 5, 5])]


def test_checkpoints_load_both_ways():
    """Without folding the converted model has the original's keys, shapes and order; a checkpoint of
    either loads strictly into the other and gives the same function."""
    torch.manual_seed(0)
    model = randomized(MobileNetV2Like())
    fused = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 12, 1))
    for orig in (model, randomized(DeepLabV3Like()), fused):
        conv = convext.convert(orig)
        sd_o, sd_c = orig.state_dict(), conv.state_dict()
        assert [(k, v.shape) for k, v in sd_o.items()] == [(k, v.shape) for k, v in sd_c.items()]
        other = copy.deepcopy(orig)
        with torch.no_grad():
            for p in other.parameters():
                p.mul_(1 + 0.1 * torch.randn_like(p))
        conv.load_state_dict(other.state_dict(), strict=True)
        x = torch.randn(2, 3, 24, 24) if orig is not fused else torch.randn(2, 8, 7, 7)
        assert_same_function(other, conv, x, train=False)
        back = copy.deepcopy(orig)
        back.load_state_dict(conv.state_dict(), strict=True)
        for k, v in back.state_dict().items():
            assert torch.equal(v, other.state_dict()[k]), k


def test_convert_twice_is_stable():
    model = randomized(DeepLabV3Like())
    once = convext.convert(model)
    twice = convext.convert(once)
    assert [(n, type(m)) for n, m in once.named_modules()] == [(n, type(m)) for n, m in twice.named_modules()]
    assert twice.convext_report.fused == [] and twice.convext_report.swapped == []
    assert_same_function(model, twice, torch.randn(2, 3, 24, 24), train=True)


def test_fold_keeps_model_class_and_methods():
    model = randomized(MobileNetV2Like()).eval()
    conv = convext.convert(model, fold_batchnorm=True)
    assert type(conv) is MobileNetV2Like and not isinstance(conv, torch.fx.GraphModule)
    report = conv.convext_report
    assert len(report.fused) == MobileNetV2Like.N_CHAINS
    assert all(c.depthwise_activation == "relu6" and len(c.folded) == 2 for c in report.fused)
    # every BatchNorm of the model is folded: into a fused chain or into the conv before it
    assert len(report.folded) == count(model, nn.BatchNorm2d) and count(conv, nn.BatchNorm2d) == 0
