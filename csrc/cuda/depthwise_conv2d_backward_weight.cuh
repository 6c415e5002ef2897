// CUDA grad-weight (and grad-bias) of the depthwise conv2d: what its kernel families share.
//   grad_weight[oc, kh, kw] = sum_{n,oh,ow} go[n,oc,oh,ow] * x[n, oc/M, oh*sh-pt+kh*dh, ow*sw-pl+kw*dw]
//   grad_bias[oc]           = sum_{n,oh,ow} go[n,oc,oh,ow]
//
// One pass over input and grad_output: every thread keeps all taps of its tap block (and the
// bias) in registers while it streams over output positions. No atomics: a family's kernel writes
// one partial sum per (chunk, oc, tap) into a workspace (acc type), the reduction kernel adds the
// partials of each (oc, tap) in a fixed order and rounds once, so results are bitwise
// reproducible run to run. Each family lives in its own header with its launcher and is compiled
// in its own translation unit:
//
//   family        kernel header                                 instantiation file
//   planar        depthwise_conv2d_bwd_weight_planar.cuh        depthwise_conv2d_bwd_weight_planar.cu
//   cl            depthwise_conv2d_bwd_weight_cl.cuh            depthwise_conv2d_bwd_weight_cl.cu
//   planar_fast   depthwise_conv2d_bwd_weight_planar_fast.cuh   depthwise_conv2d_bwd_weight_planar_fast.cu
//   cl_fast       depthwise_conv2d_bwd_weight_cl_fast.cuh       depthwise_conv2d_bwd_weight_cl_fast.cu
//   reduce        depthwise_conv2d_bwd_weight_reduce.cuh        depthwise_conv2d_bwd_weight_reduce.cu
//
// The planner (which family runs a shape) and the op are in depthwise_conv2d_backward_weight.cu;
// the opt-in tensor-core family in depthwise_conv2d_tc.cu.
#pragma once

#include "cuda/depthwise_conv2d_common.cuh"
#include "cuda/launch_utils.cuh"
#include "cuda/static_switch.cuh"
#include "depthwise_conv2d.h"

#include <algorithm>

namespace convext {
namespace cuda {

__host__ __device__ __forceinline__ int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }

// Kernel families: grad_weight (and grad_bias when compute_bias) of x (input) and go (grad_output).
// The run_* that return bool return false when the shape is not covered (the caller falls back).
template <typename scalar_t>
void run_bwd_weight_planar(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
    at::Tensor& gb, bool compute_bias, cudaStream_t stream);
template <typename scalar_t>
void run_bwd_weight_cl(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
    at::Tensor& gb, bool compute_bias, cudaStream_t stream);
template <typename scalar_t>
bool run_bwd_weight_planar_fast(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
    at::Tensor& gb, bool compute_bias, cudaStream_t stream);
template <typename scalar_t>
bool run_bwd_weight_cl_fast(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
    at::Tensor& gb, bool compute_bias, cudaStream_t stream);

// Fixed-order reduction of the partials: ws[parts][per_part] (acc type) -> grad_weight, grad_bias.
template <typename scalar_t>
void launch_reduce(const at::Tensor& ws, int64_t parts, int64_t per_part, int T1, at::Tensor& gw,
                   at::Tensor& gb, bool compute_bias, cudaStream_t stream);

}  // namespace cuda
}  // namespace convext
