"""DeepLabv3 on a dilated MobileNet backbone with convext's ASPP head, and the receptive field of its output.

    python examples/deeplabv3_aspp.py [--size 160] [--no-torchvision]

With torchvision: `deeplabv3_mobilenet_v3_large` (random weights; its last stage is dilated, output
stride 16) is converted by `convext.convert` (its depthwise convs become convext layers, the result
equal to the original), then its ASPP is replaced by `convext.nn.ASPP` with depthwise separable
atrous branches (rates 12, 24, 36, as torchvision's). Without torchvision, a small dilated MobileNet
of convext layers stands in. Prints the output stride and receptive field along the network (the
atrous branches widen it; image pooling reaches the whole image) and the cost of both heads.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

try:
    import convext
except ImportError:  # run from a source checkout: python examples/<name>.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import convext


class _InvertedResidual(nn.Module):
    """MobileNetV2 block from convext layers: 1x1 expand, depthwise 3x3 (stride / dilation), 1x1 project."""

    def __init__(self, cin, cout, stride=1, dilation=1, expand=4):
        super().__init__()
        mid = cin * expand
        self.block = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            convext.nn.DepthwiseConv2d(mid, 3, stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class SmallDeepLab(nn.Module):
    """A dilated MobileNet (output stride 16: the last stage dilates instead of striding) + ASPP head."""

    def __init__(self, num_classes=21):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
            _InvertedResidual(16, 24, stride=2), _InvertedResidual(24, 24),
            _InvertedResidual(24, 32, stride=2), _InvertedResidual(32, 32),
            _InvertedResidual(32, 48, stride=2), _InvertedResidual(48, 48),
            _InvertedResidual(48, 64, dilation=2), _InvertedResidual(64, 64, dilation=4))
        self.classifier = nn.Sequential(convext.nn.ASPP(64, 64, rates=(6, 12, 18)), nn.Conv2d(64, num_classes, 1))

    def forward(self, x):
        out = self.classifier(self.backbone(x))
        return {"out": F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)}


def build(use_torchvision=True):
    """(model, its original ASPP module or None, description)."""
    if use_torchvision:
        try:
            from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large
        except ImportError:
            use_torchvision = False
    if not use_torchvision:
        return SmallDeepLab().eval(), None, "a small dilated MobileNet of convext layers (torchvision absent)"
    original = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21,
                                            aux_loss=False).eval()
    model = convext.convert(original)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        err = (model(x)["out"] - original(x)["out"]).abs().max().item()
    print(f"torchvision deeplabv3_mobilenet_v3_large converted: {len(model.convext_report.swapped)} depthwise convs "
          f"swapped for convext layers, max |converted - original| = {err:.2e}")
    tv_aspp = model.classifier[0]
    model.classifier[0] = convext.nn.ASPP(960, 256, rates=(12, 24, 36), separable=True).eval()
    return model, tv_aspp, "torchvision's deeplabv3_mobilenet_v3_large, converted, with convext's ASPP"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160, help="input height and width")
    parser.add_argument("--no-torchvision", action="store_true", help="use the small stand-in backbone")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model, tv_aspp, what = build(not args.no_torchvision)
    size = (1, 3, args.size, args.size)
    with torch.no_grad():
        out = model(torch.randn(size))["out"]
    print(f"model: {what}\ninput {tuple(size)} -> output {tuple(out.shape)}\n")

    fields = convext.receptive_field(model, size)
    backbone = [e for e in fields if e.name.startswith("backbone")]
    head = [e for e in fields if e.name.startswith("classifier")]
    last_backbone = backbone[-1]
    print(f"backbone output: stride (jump) {last_backbone.jump[0]}, receptive field {last_backbone.receptive_field[0]} "
          f"px, feature map {last_backbone.output_size}")
    print("ASPP branches (receptive field of each branch's last conv):")
    aspp = [e for e in head if ".convs." in e.name]
    branch_end = {}
    for e in aspp:
        branch_end[e.name.split(".convs.")[1].split(".")[0]] = e
    for branch, e in branch_end.items():
        print(f"  convs.{branch:<3} {e.op:<20} receptive field {e.receptive_field[0]:>5} px")
    print(f"output ({head[-1].name}): receptive field {head[-1].receptive_field[0]} px on a {args.size} px image\n"
          f"  (theoretical: the widest atrous taps reach far into the zero padding; image pooling gives every\n"
          f"  output pixel the whole image in any case)\n")

    cost = convext.conv_cost(model, size)
    head_macs = sum(layer.macs for layer in cost.layers if layer.name.startswith("classifier.0"))
    print(f"whole model: {cost.params:,} parameters, {cost.macs:,} multiply-accumulates")
    print(f"convext ASPP head (depthwise separable branches): {head_macs:,} MACs")
    result = {"receptive_field": head[-1].receptive_field, "output_stride": last_backbone.jump, "macs": cost.macs,
              "head_macs": head_macs, "output_shape": tuple(out.shape), "fields": fields}
    if tv_aspp is not None:
        feat = (1, 960) + tuple(last_backbone.output_size)
        tv_macs = convext.conv_cost(tv_aspp, feat).macs
        print(f"torchvision's ASPP head (3x3 atrous convs):        {tv_macs:,} MACs "
              f"({tv_macs / head_macs:.1f}x the separable head)")
        result["torchvision_head_macs"] = tv_macs
    return result


if __name__ == "__main__":
    main()
