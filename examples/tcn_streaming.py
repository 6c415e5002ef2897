"""A TCN / WaveNet stack of causal dilated depthwise conv1d, run on a whole sequence and streamed.

    python examples/tcn_streaming.py [--length 200] [--layers 6] [--kernel 3]

Each residual block: causal depthwise conv1d (dilation 2**i) -> GELU -> 1x1 conv1d, plus the input.
The receptive field grows as 1 + (k-1) * (2**layers - 1). Streaming keeps one state per block
(`DepthwiseConv1d.init_state`: the last dilation*(k-1) inputs) and feeds samples (here one at a
time, then in chunks) through `DepthwiseConv1d.step`; its outputs equal the full forward.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

try:
    import convext
except ImportError:  # run from a source checkout: python examples/<name>.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import convext


class CausalBlock(nn.Module):
    def __init__(self, channels, kernel_size, dilation):
        super().__init__()
        self.conv = convext.nn.DepthwiseConv1d(channels, kernel_size, dilation=dilation, causal=True)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        return x + self.mix(F.gelu(self.conv(x)))

    def step(self, x, state):
        """x (N, C, T) new samples; state updated in place."""
        return x + self.mix(F.gelu(self.conv.step(x, state)))


class TCN(nn.Module):
    def __init__(self, channels=16, layers=6, kernel_size=3):
        super().__init__()
        self.blocks = nn.ModuleList(CausalBlock(channels, kernel_size, 2 ** i) for i in range(layers))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x

    def init_state(self, batch_size):
        return [block.conv.init_state(batch_size) for block in self.blocks]

    def step(self, x, states):
        for block, state in zip(self.blocks, states):
            x = block.step(x, state)
        return x


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--channels", type=int, default=16)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = TCN(args.channels, args.layers, args.kernel).double().eval()
    x = torch.randn(2, args.channels, args.length, dtype=torch.float64)
    with torch.no_grad():
        full = model(x)
        t0 = time.perf_counter()
        states = model.init_state(2)
        one_at_a_time = torch.cat([model.step(x[:, :, t:t + 1], states) for t in range(args.length)], dim=2)
        per_sample = (time.perf_counter() - t0) / args.length
        states = model.init_state(2)
        cuts = [0, 1, 8, 50, args.length]
        chunked = torch.cat([model.step(x[:, :, a:b], states) for a, b in zip(cuts, cuts[1:]) if b > a], dim=2)
    rf = convext.receptive_field(model, tuple(x.shape))[-1].receptive_field[0]
    expect_rf = 1 + (args.kernel - 1) * (2 ** args.layers - 1)
    err1 = (one_at_a_time - full).abs().max().item()
    err2 = (chunked - full).abs().max().item()
    print(f"TCN: {args.layers} causal blocks, kernel {args.kernel}, dilations "
          f"{[2 ** i for i in range(args.layers)]}, {args.channels} channels")
    print(f"receptive field {rf} samples (1 + (k-1)*(2**layers - 1) = {expect_rf})")
    print(f"state per block: dilation*(k-1) = {[tuple(s.shape) for s in model.init_state(1)]}")
    print(f"streamed one sample at a time: max |stream - full| = {err1:.2e} ({per_sample * 1e3:.2f} ms per step)")
    print(f"streamed in chunks {[b - a for a, b in zip(cuts, cuts[1:])]}: max |stream - full| = {err2:.2e}")
    assert err1 < 1e-10 and err2 < 1e-10, "the streamed output must equal the full one"
    return {"receptive_field": rf, "expected_receptive_field": expect_rf, "max_error": max(err1, err2)}


if __name__ == "__main__":
    main()
