// Instantiates the forward engine's nhwc family (depthwise_conv2d_fwd_nhwc.cuh) for fp32 / fp16 / bf16.
#include "cuda/depthwise_conv2d_fwd_nhwc.cuh"

namespace convext {
namespace cuda {
CONVEXT_INSTANTIATE_FLOAT_HALF_BF16(bool, run_fwd_nhwc, const CorrArgs&, cudaStream_t);
}  // namespace cuda
}  // namespace convext
