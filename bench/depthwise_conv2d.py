"""Benchmark of convext.depthwise_conv2d against torch.nn.functional.conv2d(groups=C).

    python -m bench.depthwise_conv2d [--quick] [--device cpu|cuda] [--dtype fp32,bf16]
                                     [--layout nchw,channels_last] [--mode fwd,bwd,fwd+bwd]
    python -m bench.depthwise_conv2d --mode bwd-input,bwd-weight   # the grad-input / grad-weight kernel alone

Bytes (an ideal kernel's traffic): fwd = input + output; bwd = grad_output + input +
grad_input; fwd+bwd = the sum. Weights are negligible and not counted.
FLOPs: fwd = 2*N*C_out*H_out*W_out*kH*kW; bwd = twice that (grad input + grad weight).
"""
from __future__ import annotations

import os
from typing import List, Sequence

import torch
import torch.nn.functional as F

from . import harness
from .harness import Case, Provider

# name: (N, C, H=W, k (int or (kH, kW)), stride, dilation)
GPU_SUITE = {
    "mbv2": (64, 144, 56, 3, 1, 1),
    "mbv2-s2": (64, 96, 112, 3, 2, 1),
    "mbv2-small": (64, 384, 14, 3, 1, 1),
    "effnet": (64, 240, 28, 5, 1, 1),
    "convnext": (64, 96, 56, 7, 1, 1),
    "convnext-deep": (64, 384, 14, 7, 1, 1),
    "deeplab": (16, 480, 33, 3, 1, 2),
    "deeplab-wide": (16, 960, 33, 5, 1, 4),
    "hdc": (32, 256, 64, 3, 1, 3),
    "large13": (32, 512, 14, 13, 1, 1),
    "replk31": (16, 128, 56, 31, 1, 1),
    "band": (64, 96, 56, (1, 11), 1, 1),
}
GPU_QUICK = ("mbv2", "convnext", "deeplab")

# Large enough (about a millisecond or more per call on 2 cores) that convext's Python layer, a few
# microseconds per call, does not show in the convext:torch / torch sanity check.
CPU_SUITE = {
    "cpu-mbv2": (8, 96, 56, 3, 1, 1),
    "cpu-effnet": (8, 144, 28, 5, 1, 1),
    "cpu-deeplab": (8, 128, 33, 3, 1, 2),
    "cpu-convnext": (8, 96, 56, 7, 1, 1),
    "cpu-mbv2-s2": (8, 144, 56, 3, 2, 1),  # a stride-2 layer of the mobile nets
    "cpu-convnext-deep": (8, 384, 14, 7, 1, 1),  # small planes: the NCHW channel-blocked kernels' case
}
CPU_QUICK = ("cpu-mbv2", "cpu-deeplab")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def make_case(name: str, N: int, C: int, HW: int, k, stride: int, dilation: int) -> Case:
    kh, kw = _pair(k)
    padding = (dilation * (kh // 2), dilation * (kw // 2))  # "same"-like
    ho = (HW + 2 * padding[0] - dilation * (kh - 1) - 1) // stride + 1
    wo = (HW + 2 * padding[1] - dilation * (kw - 1) - 1) // stride + 1
    n_in, n_out = N * C * HW * HW, N * C * ho * wo

    def make(dtype, layout, device):
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(N, C, HW, HW, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)
        w = (torch.randn(C, 1, kh, kw, generator=g) / (kh * kw) ** 0.5).to(device=device, dtype=dtype)
        b = torch.randn(C, generator=g).to(device=device, dtype=dtype)
        return [harness.to_layout(x, layout), w, b], dict(stride=stride, padding=padding, dilation=dilation)

    def flops(mode):
        fwd = 2.0 * n_out * kh * kw
        return {"fwd": fwd, "bwd": 2 * fwd, "fwd+bwd": 3 * fwd, "bwd-input": fwd, "bwd-weight": fwd}[mode]

    def nbytes(mode, elem):
        fwd = (n_in + n_out) * elem
        bwd = (n_out + n_in + n_in) * elem
        # bwd-input: grad_output + grad_input; bwd-weight: grad_output + input
        return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd, "bwd-input": fwd, "bwd-weight": fwd}[mode]

    k_desc = f"k{kh}" if kh == kw else f"k{kh}x{kw}"
    return Case(name, f"{N}x{C}x{HW}x{HW} {k_desc} s{stride} d{dilation}", make, flops, nbytes)


def cases_for(device: str, quick: bool) -> List[Case]:
    if torch.device(device).type == "cuda":
        suite = {k: v for k, v in GPU_SUITE.items() if not quick or k in GPU_QUICK}
    else:
        suite = {k: v for k, v in CPU_SUITE.items() if not quick or k in CPU_QUICK}
    return [make_case(name, *spec) for name, spec in suite.items()]


def _torch_run(inputs, kw):
    x, w, b = inputs
    return F.conv2d(x, w, b, kw["stride"], kw["padding"], kw["dilation"], groups=x.shape[1])


def _convext_run(backend):
    import convext

    def run(inputs, kw):
        x, w, b = inputs
        return convext.depthwise_conv2d(x, w, b, kw["stride"], kw["padding"], kw["dilation"], backend=backend)
    return run


_cuda_run = _convext_run("cuda")


def _cuda_tc_run(inputs, kw):
    # the opt-in CUDA tensor-core path (CONVEXT_CUDA_TC=1, read by the extension on every call)
    os.environ["CONVEXT_CUDA_TC"] = "1"
    try:
        return _cuda_run(inputs, kw)
    finally:
        os.environ.pop("CONVEXT_CUDA_TC", None)


def _tc_case(case, dtype, layout):
    return harness.compute_bound(case.desc) and dtype in (torch.float16, torch.bfloat16)


def providers_for(device: str, names: Sequence[str] = None) -> List[Provider]:
    provs = [Provider(harness.TORCH_PROVIDER, _torch_run)]
    provs += harness.convext_providers(device, _convext_run)
    if any(p.name == "convext:cuda" for p in provs) and "CONVEXT_CUDA_TC" not in os.environ:
        provs.append(Provider("convext:cuda-tc", _cuda_tc_run, supports=_tc_case))
    return harness.filter_providers(provs, names)


def main(argv=None, quick=None):
    return harness.main("depthwise_conv2d", __doc__.splitlines()[0], cases_for, providers_for, measure_memory=False,
                        argv=argv, quick=quick, modes=harness.ALL_MODES)


if __name__ == "__main__":
    main()
