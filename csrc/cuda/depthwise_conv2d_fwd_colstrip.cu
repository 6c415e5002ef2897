// Instantiates the forward engine's colstrip family (depthwise_conv2d_fwd_colstrip.cuh) for fp32 / fp16 / bf16.
#include "cuda/depthwise_conv2d_fwd_colstrip.cuh"

namespace convext {
namespace cuda {
CONVEXT_INSTANTIATE_FLOAT_HALF_BF16(bool, run_fwd_colstrip, const CorrArgs&, cudaStream_t);
}  // namespace cuda
}  // namespace convext
