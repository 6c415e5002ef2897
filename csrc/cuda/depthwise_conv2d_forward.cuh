// The forward "correlation engine" (forward conv and stride-1 grad-input; semantics in
// depthwise_conv2d_forward.cu): one entry point per kernel family, each defined in its own header
// next to its kernel and instantiated in its own .cu file (so the build parallelises):
//
//   family       kernel header                          instantiation file
//   tile         depthwise_conv2d_fwd_tile.cuh          depthwise_conv2d_fwd_tile.cu
//   nhwc         depthwise_conv2d_fwd_nhwc.cuh          depthwise_conv2d_fwd_nhwc.cu
//   nhwc2        depthwise_conv2d_fwd_nhwc2.cuh         depthwise_conv2d_fwd_nhwc2.cu
//   colstrip     depthwise_conv2d_fwd_colstrip.cuh      depthwise_conv2d_fwd_colstrip.cu
//   gather       depthwise_conv2d_fwd_gather.cuh        depthwise_conv2d_fwd_gather.cu
//   generic      depthwise_conv2d_fwd_generic.cuh       depthwise_conv2d_fwd_generic.cu
//
// Each run_* returns false when the shape is not covered (the caller falls back to the next
// family); run_fwd_generic covers every shape. T: float, c10::Half, c10::BFloat16 (the generic
// kernel also double).
#pragma once

#include "cuda/launch_utils.cuh"

namespace convext {
namespace cuda {

template <typename T> bool run_fwd_tile(const CorrArgs& a, cudaStream_t stream);      // NCHW, S in {1, 2}
template <typename T> bool run_fwd_nhwc(const CorrArgs& a, cudaStream_t stream);      // channels_last, S in {1, 2}
template <typename T> bool run_fwd_nhwc2(const CorrArgs& a, cudaStream_t stream);     // fast path "nhwc2"
template <typename T> bool run_fwd_colstrip(const CorrArgs& a, cudaStream_t stream);  // fast path "colstrip"
template <typename T> bool run_fwd_gather(const CorrArgs& a, bool dst_cl, cudaStream_t stream);  // fast path "gather"
template <typename T> void run_fwd_generic(const CorrArgs& a, bool dst_cl, cudaStream_t stream);

// channels_last vectors of V channels of T: M == 1, channel stride 1, the other strides multiples
// of V, C % V == 0, V*sizeof(T)-aligned pointers.
inline bool engine_nhwc_vec_ok(const CorrArgs& a, int V, int elem_size) {
  if (a.M != 1 || a.C_dst % V != 0) return false;
  if (a.ss[1] != 1 || a.ds[1] != 1) return false;
  for (int i : {0, 2, 3}) {
    if (a.ss[i] % V != 0 || a.ds[i] % V != 0) return false;
  }
  const int vb = V * elem_size;
  return is_aligned(a.src, vb) && is_aligned(a.dst, vb);
}

}  // namespace cuda
}  // namespace convext
