// Shared helpers for convext's CUDA depthwise kernels (forward, grad-input, grad-weight). Keep
// this header stable: several .cu files include it. Device helpers (AccType, to_acc / from_acc,
// ldg, load_vec / store_vec, vec16, is_aligned, ceil_div, CorrArgs, CONVEXT_LAUNCH_CHECK) are in
// depthwise_conv2d_device.cuh, included here; host-side limits and launch helpers in
// launch_utils.cuh; compile-time configuration tables in static_switch.cuh.
//
//   CONVEXT_DISPATCH_FLOATING(scalar_type, name, ...)   scalar_t = float/double/half/bf16
//   run_depthwise_engine(...)          the forward / grad-input correlation engine
//   run_fwd_tc / run_bwd_weight_tc     the opt-in tensor-core path
#pragma once

#include "cuda/depthwise_conv2d_device.cuh"
#include "depthwise_conv2d_params.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

// ---------------------------------------------------------------------------
// Dtype dispatch: float32, float64, float16, bfloat16; defines scalar_t.
// ---------------------------------------------------------------------------
#define CONVEXT_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, TYPE, NAME, __VA_ARGS__)

// ---------------------------------------------------------------------------
// Entry points of the correlation engine (CorrArgs: depthwise_conv2d_device.cuh).
// ---------------------------------------------------------------------------
namespace convext {
namespace cuda {

// src/dst: 4-D CUDA tensors of one dtype (any strides); weight: contiguous (Cw, 1, KH, KW) of
// that dtype; bias: contiguous (C_dst,) or null. Fills pointers, sizes and strides of `a`
// from the tensors; the caller sets KH, KW, sh, sw, dh, dw, pt, pl, M, reduce_m, flip, gather.
// Launches on the current stream of src's device; no-op when dst is empty.
void run_depthwise_engine(const at::Tensor& src, const at::Tensor& weight, const at::Tensor* bias,
                          const at::Tensor& dst, CorrArgs a);

// Large-kernel stride-1 correlation on tensor cores (depthwise_conv2d_tc.cu): true when it ran.
// fp16 / bf16 only, opt-in with CONVEXT_CUDA_TC=1 until validated on a GPU.
template <typename T>
bool run_fwd_tc(const at::Tensor& src, const at::Tensor& dst, const CorrArgs& a, cudaStream_t stream);

// grad-weight (+ grad-bias) counterpart, same conditions (depthwise_conv2d_tc.cu).
template <typename T>
bool run_bwd_weight_tc(const at::Tensor& input, const at::Tensor& grad_output, const DepthwiseConv2dParams& p,
                       at::Tensor& gw, at::Tensor& gb, bool compute_bias, cudaStream_t stream);

}  // namespace cuda
}  // namespace convext
