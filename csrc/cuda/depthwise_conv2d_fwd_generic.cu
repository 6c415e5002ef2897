// Instantiates the forward engine's generic family (depthwise_conv2d_fwd_generic.cuh) for every dtype.
#include "cuda/depthwise_conv2d_fwd_generic.cuh"
#include "cuda/static_switch.cuh"

namespace convext {
namespace cuda {
CONVEXT_INSTANTIATE_FLOATING(void, run_fwd_generic, const CorrArgs&, bool, cudaStream_t);
}  // namespace cuda
}  // namespace convext
