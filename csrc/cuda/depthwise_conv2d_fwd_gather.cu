// Instantiates the forward engine's gather family (depthwise_conv2d_fwd_gather.cuh) for fp32 / fp16 / bf16.
#include "cuda/depthwise_conv2d_fwd_gather.cuh"
#include "cuda/static_switch.cuh"

namespace convext {
namespace cuda {
CONVEXT_INSTANTIATE_FLOAT_HALF_BF16(bool, run_fwd_gather, const CorrArgs&, bool, cudaStream_t);
}  // namespace cuda
}  // namespace convext
