"""Benchmark of convext.spatial_separable_conv2d against torch (a k x 1 then a 1 x k depthwise F.conv2d).

    python -m bench.spatial_separable_conv2d [--quick] [--device cpu|cuda] [--dtype fp32,bf16]
                                             [--layout nchw,channels_last] [--mode fwd,bwd,fwd+bwd]

Bytes of the fused ideal: fwd = input read once + output written once (the k x 1 conv's output
never touches memory); bwd = grad_output + input + grad_input. FLOPs: 2*N*C*(Ho*W*k + Ho*Wo*k)
(bwd: twice that). Peak memory per provider is reported (torch materialises the intermediate).
On CUDA the `cuda` provider is the compile-checked kernel that `auto` does not choose yet.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F

from . import harness
from .harness import Case, Provider

# name: (N, C, H=W, k, dilation); stride 1, "same" padding
GPU_SUITE = {
    "inception-7": (64, 192, 35, 7, 1),
    "inception-7-17": (64, 768, 17, 7, 1),
    "large-15": (32, 128, 56, 15, 1),
    "atrous-3-d4": (32, 256, 33, 3, 4),
}
GPU_QUICK = ("inception-7", "large-15")

CPU_SUITE = {
    "cpu-7": (8, 64, 28, 7, 1),
    "cpu-3-d2": (8, 64, 28, 3, 2),
}
CPU_QUICK = ("cpu-7",)


def make_case(name: str, N: int, C: int, HW: int, k: int, dilation: int) -> Case:
    padding = dilation * (k // 2)
    n = N * C * HW * HW

    def make(dtype, layout, device):
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(N, C, HW, HW, generator=g).to(device=device, dtype=dtype)
        vw = (torch.randn(C, 1, k, 1, generator=g) / k ** 0.5).to(device=device, dtype=dtype)
        hw = (torch.randn(C, 1, 1, k, generator=g) / k ** 0.5).to(device=device, dtype=dtype)
        vb = torch.randn(C, generator=g).to(device=device, dtype=dtype)
        hb = torch.randn(C, generator=g).to(device=device, dtype=dtype)
        return ([harness.to_layout(x, layout), vw, hw, vb, hb], dict(padding=padding, dilation=dilation))

    def flops(mode):
        fwd = 2.0 * n * 2 * k
        return {"fwd": fwd, "bwd": 2 * fwd, "fwd+bwd": 3 * fwd}[mode]

    def nbytes(mode, elem):
        return {"fwd": 2 * n * elem, "bwd": 3 * n * elem, "fwd+bwd": 5 * n * elem}[mode]

    return Case(name, f"{N}x{C}x{HW}x{HW} k{k}x1+1x{k} d{dilation}", make, flops, nbytes)


def cases_for(device: str, quick: bool) -> List[Case]:
    if torch.device(device).type == "cuda":
        suite = {k: v for k, v in GPU_SUITE.items() if not quick or k in GPU_QUICK}
    else:
        suite = {k: v for k, v in CPU_SUITE.items() if not quick or k in CPU_QUICK}
    return [make_case(name, *spec) for name, spec in suite.items()]


def _torch_run(inputs, kw):
    x, vw, hw, vb, hb = inputs
    p, d = kw["padding"], kw["dilation"]
    z = F.conv2d(x, vw, vb, 1, (p, 0), (d, 1), groups=x.shape[1])
    return F.conv2d(z, hw, hb, 1, (0, p), (1, d), groups=x.shape[1])


def _convext_run(backend):
    import convext

    def run(inputs, kw):
        return convext.spatial_separable_conv2d(*inputs, 1, kw["padding"], kw["dilation"], backend=backend)
    return run


def providers_for(device: str, names: Sequence[str] = None) -> List[Provider]:
    provs = [Provider(harness.TORCH_PROVIDER, _torch_run)]
    provs += harness.convext_providers(device, _convext_run)
    return harness.filter_providers(provs, names)


def main(argv=None, quick=None):
    return harness.main("spatial_separable_conv2d", __doc__.splitlines()[0], cases_for, providers_for,
                        measure_memory=True, argv=argv, quick=quick)


if __name__ == "__main__":
    main()
