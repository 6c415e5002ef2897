"""Benchmark of convext.depthwise_separable_conv2d against torch (F.conv2d depthwise, then F.conv2d 1x1).

    python -m bench.depthwise_separable_conv2d [--quick] [--device cpu|cuda] [--dtype fp32,bf16]
                                               [--layout nchw,channels_last] [--mode fwd,bwd,fwd+bwd]

Bytes of the fused ideal: fwd = input read once + output written once (the intermediate
never touches memory); bwd = grad_output + input + grad_input; fwd+bwd = the sum. Weights
are not counted. FLOPs: depthwise 2*N*C*M*Ho*Wo*k*k + pointwise 2*N*C_out*C*M*Ho*Wo
(bwd: twice that). Peak memory per provider is reported: the fused op's point is not
materialising the (N, C*M, Ho, Wo) intermediate.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F

from . import harness
from .harness import Case, Provider

# name: (N, C_in, C_out, H=W, k, dilation); stride 1, "same"-like padding
GPU_SUITE = {
    "mbv1": (64, 256, 256, 56, 3, 1),
    "mbv1-deep": (64, 512, 512, 28, 3, 1),
    "xception-atrous": (32, 728, 728, 19, 3, 2),
    "mbv2-project": (64, 144, 24, 56, 3, 1),
    "deeplabv3plus-aspp": (16, 2048, 256, 33, 3, 6),
}
GPU_QUICK = ("mbv1-deep", "mbv2-project")

CPU_SUITE = {  # sized like bench/depthwise_conv2d.py's CPU suite (the sanity check needs ~1 ms calls)
    "cpu-sep": (8, 64, 128, 28, 3, 1),
    "cpu-sep-atrous": (8, 128, 128, 17, 3, 2),
}
CPU_QUICK = ("cpu-sep",)


def make_case(name: str, N: int, C: int, Cout: int, HW: int, k: int, dilation: int) -> Case:
    padding = dilation * (k // 2)
    out_hw = HW + 2 * padding - dilation * (k - 1)
    n_in, n_out = N * C * HW * HW, N * Cout * out_hw * out_hw

    def make(dtype, layout, device):
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(N, C, HW, HW, generator=g).to(device=device, dtype=dtype)
        dw_w = (torch.randn(C, 1, k, k, generator=g) / k).to(device=device, dtype=dtype)
        pw_w = (torch.randn(Cout, C, 1, 1, generator=g) / C ** 0.5).to(device=device, dtype=dtype)
        dw_b = torch.randn(C, generator=g).to(device=device, dtype=dtype)
        pw_b = torch.randn(Cout, generator=g).to(device=device, dtype=dtype)
        return ([harness.to_layout(x, layout), dw_w, pw_w, dw_b, pw_b],
                dict(stride=1, padding=padding, dilation=dilation))

    def flops(mode):
        fwd = 2.0 * N * C * out_hw * out_hw * k * k + 2.0 * N * Cout * C * out_hw * out_hw
        return {"fwd": fwd, "bwd": 2 * fwd, "fwd+bwd": 3 * fwd}[mode]

    def nbytes(mode, elem):
        fwd = (n_in + n_out) * elem
        bwd = (n_out + 2 * n_in) * elem
        return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]

    return Case(name, f"{N}x{C}->{Cout}x{HW}x{HW} k{k} d{dilation}", make, flops, nbytes)


def cases_for(device: str, quick: bool) -> List[Case]:
    if torch.device(device).type == "cuda":
        suite = {k: v for k, v in GPU_SUITE.items() if not quick or k in GPU_QUICK}
    else:
        suite = {k: v for k, v in CPU_SUITE.items() if not quick or k in CPU_QUICK}
    return [make_case(name, *spec) for name, spec in suite.items()]


def _torch_run(inputs, kw):
    x, dw_w, pw_w, dw_b, pw_b = inputs
    mid = F.conv2d(x, dw_w, dw_b, kw["stride"], kw["padding"], kw["dilation"], groups=x.shape[1])
    return F.conv2d(mid, pw_w, pw_b)


def _convext_run(backend):
    import convext

    def run(inputs, kw):
        x, dw_w, pw_w, dw_b, pw_b = inputs
        return convext.depthwise_separable_conv2d(x, dw_w, pw_w, dw_b, pw_b, kw["stride"], kw["padding"],
                                                  kw["dilation"], backend=backend)
    return run


def providers_for(device: str, names: Sequence[str] = None) -> List[Provider]:
    provs = [Provider(harness.TORCH_PROVIDER, _torch_run)]
    provs += harness.convext_providers(device, _convext_run)
    return harness.filter_providers(provs, names)


def main(argv=None, quick=None):
    return harness.main("depthwise_separable_conv2d", __doc__.splitlines()[0], cases_for, providers_for, measure_memory=True,
                        argv=argv, quick=quick)


if __name__ == "__main__":
    main()
