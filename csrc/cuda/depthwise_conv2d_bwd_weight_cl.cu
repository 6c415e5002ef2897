// Instantiates the grad-weight cl family (depthwise_conv2d_bwd_weight_cl.cuh) for every dtype.
#include "cuda/depthwise_conv2d_bwd_weight_cl.cuh"

namespace convext {
namespace cuda {
CONVEXT_INSTANTIATE_FLOATING(void, run_bwd_weight_cl,
    const at::Tensor&, const at::Tensor&, const DepthwiseConv2dParams&, at::Tensor&, at::Tensor&, bool, cudaStream_t);
}  // namespace cuda
}  // namespace convext
