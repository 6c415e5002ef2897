// Instantiates the forward engine's tile family (depthwise_conv2d_fwd_tile.cuh) for fp32 / fp16 / bf16.
#include "cuda/depthwise_conv2d_fwd_tile.cuh"

namespace convext {
namespace cuda {
CONVEXT_INSTANTIATE_FLOAT_HALF_BF16(bool, run_fwd_tile, const CorrArgs&, cudaStream_t);
}  // namespace cuda
}  // namespace convext
