// Instantiates the grad-weight reduction (depthwise_conv2d_bwd_weight_reduce.cuh) for every dtype.
#include "cuda/depthwise_conv2d_bwd_weight_reduce.cuh"

namespace convext {
namespace cuda {
CONVEXT_INSTANTIATE_FLOATING(void, launch_reduce, const void*, int64_t, int64_t, int, const BwdWeightIO&);
}  // namespace cuda
}  // namespace convext
