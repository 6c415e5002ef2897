"""Triton depthwise conv2d: forward, grad-input and grad-weight as ``convext::triton_*`` ops.

Schemas copy csrc/ops.cpp (see docs/DESIGN.md for the semantics):

    convext::triton_depthwise_conv2d(input, weight, bias?, stride[2], padding[4], dilation[2])
    convext::triton_depthwise_conv2d_backward_input(grad_output, weight, input_size[4], stride,
                                                    padding, dilation)
    convext::triton_depthwise_conv2d_backward_weight(grad_output, input, kernel_size[2], stride,
                                                     padding, dilation, compute_bias)

Kernels read every tensor through its strides (NCHW, channels_last and sliced views in place).
Two kernel families per op, picked by the memory format the result is allocated in:

* NCHW: one program per (n * c, tile of rows, tile of cols), [BLOCK_H, BLOCK_W] register tile,
  taps unrolled (kH, kW, stride and dilation are constexpr), padding by masked loads.
* channels_last: one program per (n, pixel tile, channel block), [TILE_H * TILE_W, BLOCK_C] tile
  with the channels contiguous (vectorised loads); weights pre-transposed to (kH*kW, C_out).

Forward and stride-1 grad-input tiles take one of three paths, by a runtime test per tile: the
tile's outputs and whole source window in bounds (no masks), rows in bounds (NCHW: column masks;
channels_last: channel masks), any (all masks); every tap is the tile's pointers plus a scalar
(see docs/perf/SASS.md and tools/sass_report.py for the static instruction counts).  Weights are
passed in the accumulation dtype (the bf16 / fp16 -> fp32 conversion is exact).

grad-input gathers from grad_output (stride 1: forward with flipped taps; stride > 1: the same
gather with divisibility masks).  grad-weight: programs over (channel (block), chunk of output
tiles) keep one register accumulator per tap shaped like the tile (interior / border tile paths
as above), write per-chunk partials into a float32 (float64 for float64 inputs) workspace,
reduced afterwards in a fixed order (no atomics: deterministic; tiles and chunks depend only on
the shapes).

Accumulation is float32 for fp32/fp16/bf16 and float64 for float64.  Element offsets inside an
image become int64 when any tensor spans >= 2**31 elements; per-image base offsets always are.

The lead registers fake kernels / autograd elsewhere (convext/_ops.py); ``triton_op`` already
derives a fake implementation by running these functions on fake tensors (no kernel launch).

Files: depthwise_conv2d_forward.py (forward kernels and the tap machinery the stride-1 grad-input
reuses), depthwise_conv2d_backward_input.py, depthwise_conv2d_backward_weight.py, each with its
autotune configs and its op; depthwise_conv2d_tc.py (the large-kernel tensor-core path the three
ops try first); _common.py (flags, jit helpers, tuner / launcher, host helpers).  Importing this
module registers the three ops.
"""
from .depthwise_conv2d_backward_input import _triton_depthwise_conv2d_backward_input
from .depthwise_conv2d_backward_weight import _triton_depthwise_conv2d_backward_weight
from .depthwise_conv2d_forward import _triton_depthwise_conv2d

__all__ = [
    "_triton_depthwise_conv2d",
    "_triton_depthwise_conv2d_backward_input",
    "_triton_depthwise_conv2d_backward_weight",
]
