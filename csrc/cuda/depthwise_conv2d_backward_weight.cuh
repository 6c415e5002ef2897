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
//
// No ATen header here (parsing ATen costs minutes of host compile per translation unit): the
// planner checks the tensors, takes their raw pointers and hands the families a BwdWeightIO with a
// workspace allocator; the families see the geometry as the plain DepthwiseConv2dParams.
#pragma once

#include "cuda/depthwise_conv2d_device.cuh"
#include "cuda/launch_utils.cuh"
#include "cuda/static_switch.cuh"
#include "depthwise_conv2d_params.h"

#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace convext {
namespace cuda {

__host__ __device__ __forceinline__ int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }

// What the planner hands a family: the tensors as raw pointers of the dispatched dtype (dtypes,
// devices and shapes checked by the op), the stream, a device limit, and the workspace allocator.
struct BwdWeightIO {
  const void* x = nullptr;   // input (N, C_in, H, W), element strides p.in_strides
  const void* go = nullptr;  // grad_output (N, C_out, H_out, W_out), element strides p.out_strides
  void* gw = nullptr;        // grad_weight, contiguous (C_out, 1, KH, KW)
  void* gb = nullptr;        // grad_bias, contiguous (C_out,); null when it is not computed
  cudaStream_t stream = nullptr;
  int64_t smem_optin = 0;    // the device's opt-in shared memory per block (sharedMemPerBlockOptin)
  // A rows x cols workspace of acc_t (AccType of the dtype) on the tensors' device, owned by the
  // planner and alive until the family's run_* has returned (kernels are stream-ordered).
  void* (*alloc_workspace)(void* ctx, int64_t rows, int64_t cols) = nullptr;
  void* workspace_ctx = nullptr;

  template <typename acc_t>
  acc_t* workspace(int64_t rows, int64_t cols) const {
    return static_cast<acc_t*>(alloc_workspace(workspace_ctx, rows, cols));
  }
};

// Kernel families: grad_weight (and grad_bias when io.gb is set) of io.x (input) and io.go
// (grad_output). The run_* that return bool return false when the shape is not covered (the caller
// falls back).
template <typename scalar_t>
void run_bwd_weight_planar(const DepthwiseConv2dParams& p, const BwdWeightIO& io);
template <typename scalar_t>
void run_bwd_weight_cl(const DepthwiseConv2dParams& p, const BwdWeightIO& io);
template <typename scalar_t>
bool run_bwd_weight_planar_fast(const DepthwiseConv2dParams& p, const BwdWeightIO& io);
template <typename scalar_t>
bool run_bwd_weight_cl_fast(const DepthwiseConv2dParams& p, const BwdWeightIO& io);

// Fixed-order reduction of the partials: ws[parts][per_part] (acc type) -> io.gw, io.gb (if set).
template <typename scalar_t>
void launch_reduce(const void* ws, int64_t parts, int64_t per_part, int T1, const BwdWeightIO& io);

}  // namespace cuda
}  // namespace convext
