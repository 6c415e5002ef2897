// Instantiates the grad-weight cl family (depthwise_conv2d_bwd_weight_cl.cuh) for every dtype.
#include "cuda/depthwise_conv2d_bwd_weight_cl.cuh"

namespace convext {
namespace cuda {
CONVEXT_INSTANTIATE_FLOATING(void, run_bwd_weight_cl, const DepthwiseConv2dParams&, const BwdWeightIO&);
}  // namespace cuda
}  // namespace convext
