"""The seeds' figures, computed by convext.conv_cost and convext.receptive_field.

    python examples/conv_cost_seeds.py

Parameters of a 3x3 conv on 3 channels: normal 81, depthwise 27, depthwise separable 36.
Multiply-accumulates of a 5x5 conv 3 -> 256 channels on a 12x12x3 image: 1,228,800 normal,
53,952 depthwise separable (4,800 depthwise + 49,152 pointwise).
Receptive fields of three stacked 3x3 convs with dilations 1, 2, 4: 3, 7, 15.
"""
import os
import sys

import torch
from torch import nn

try:
    import convext
except ImportError:  # run from a source checkout: python examples/<name>.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import convext


def main(argv=None):
    rows = {}
    normal = nn.Conv2d(3, 3, 3, bias=False)
    depthwise = convext.nn.DepthwiseConv2d(3, 3, bias=False)
    separable = convext.nn.DepthwiseSeparableConv2d(3, 3, 3, bias=False)
    for name, m in (("normal", normal), ("depthwise", depthwise), ("depthwise separable", separable)):
        rows[f"params 3x3, 3 -> 3, {name}"] = convext.conv_cost(m, (1, 3, 12, 12)).params

    big = nn.Conv2d(3, 256, 5, bias=False)
    big_sep = convext.nn.DepthwiseSeparableConv2d(3, 256, 5, bias=False)
    cost, cost_sep = convext.conv_cost(big, (1, 3, 12, 12)), convext.conv_cost(big_sep, (1, 3, 12, 12))
    rows["MACs 5x5, 3 -> 256 on 12x12x3, normal"] = cost.macs
    rows["MACs 5x5, 3 -> 256 on 12x12x3, depthwise separable"] = cost_sep.macs

    stack = nn.Sequential(*[convext.nn.DepthwiseConv2d(3, 3, padding=d, dilation=d) for d in (1, 2, 4)])
    fields = convext.receptive_field(stack, (1, 3, 32, 32))
    for d, entry in zip((1, 2, 4), fields):
        rows[f"receptive field after the 3x3 conv with dilation {d}"] = entry.receptive_field[0]

    width = max(map(len, rows))
    for k, v in rows.items():
        print(f"{k:<{width}}  {v:>12,}")
    print()
    print(cost_sep)
    print(f"\nseparable / normal: {cost_sep.macs / cost.macs:.4f} of the multiply-accumulates "
          f"(1/256 + 1/25 = {1 / 256 + 1 / 25:.4f})")
    return rows


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
