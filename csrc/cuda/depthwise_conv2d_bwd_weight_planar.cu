// Instantiates the grad-weight planar family (depthwise_conv2d_bwd_weight_planar.cuh) for every dtype.
#include "cuda/depthwise_conv2d_bwd_weight_planar.cuh"

namespace convext {
namespace cuda {
CONVEXT_INSTANTIATE_FLOATING(void, run_bwd_weight_planar, const DepthwiseConv2dParams&, const BwdWeightIO&);
}  // namespace cuda
}  // namespace convext
