// Instantiates the grad-weight planar_fast family (depthwise_conv2d_bwd_weight_planar_fast.cuh) for every dtype (float64: returns false).
#include "cuda/depthwise_conv2d_bwd_weight_planar_fast.cuh"

namespace convext {
namespace cuda {
CONVEXT_INSTANTIATE_FLOATING(bool, run_bwd_weight_planar_fast, const DepthwiseConv2dParams&, const BwdWeightIO&);
}  // namespace cuda
}  // namespace convext
