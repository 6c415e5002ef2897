// Instantiates the forward engine's nhwc2 family (depthwise_conv2d_fwd_nhwc2.cuh) for fp32 / fp16 / bf16.
#include "cuda/depthwise_conv2d_fwd_nhwc2.cuh"

namespace convext {
namespace cuda {
CONVEXT_INSTANTIATE_FLOAT_HALF_BF16(bool, run_fwd_nhwc2, const CorrArgs&, cudaStream_t);
}  // namespace cuda
}  // namespace convext
