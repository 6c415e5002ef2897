// CUDA grad-weight, reduction: adds the per-chunk partials every grad-weight family writes, in a
// fixed order (deterministic), and rounds once to grad_weight / grad_bias.
#pragma once

#include "cuda/depthwise_conv2d_backward_weight.cuh"

namespace convext {
namespace cuda {

// ---------------------------------------------------------------------------
// Fixed-order reduction of the partials: ws[parts][C_out * T1] -> grad_weight, grad_bias
// ---------------------------------------------------------------------------
template <typename scalar_t>
__global__ void __launch_bounds__(256)
dw_bwd_weight_reduce_kernel(const AccType<scalar_t>* __restrict__ ws, int64_t parts, int64_t per_part,
                            int T1, scalar_t* __restrict__ gw, scalar_t* __restrict__ gb) {
  using acc_t = AccType<scalar_t>;
  __shared__ acc_t sm[8][33];
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  acc_t s = acc_t(0);
  if (idx < per_part) {
    for (int64_t q = threadIdx.y; q < parts; q += 8) s += ws[q * per_part + idx];
  }
  sm[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && idx < per_part) {
    acc_t tsum = acc_t(0);
#pragma unroll
    for (int y = 0; y < 8; ++y) tsum += sm[y][threadIdx.x];
    const int64_t oc = idx / T1;
    const int tap = static_cast<int>(idx - oc * T1);
    if (tap < T1 - 1) {
      gw[oc * (T1 - 1) + tap] = from_acc<scalar_t>(tsum);
    } else if (gb != nullptr) {
      gb[oc] = from_acc<scalar_t>(tsum);
    }
  }
}

template <typename scalar_t>
void launch_reduce(const void* ws, int64_t parts, int64_t per_part, int T1, const BwdWeightIO& io) {
  using acc_t = AccType<scalar_t>;
  const dim3 block(32, 8);
  const int64_t nb = ceil_div<int64_t>(per_part, 32);
  TORCH_CHECK(nb <= kI32Max, "convext: depthwise_conv2d_backward_weight: too many channels");
  dw_bwd_weight_reduce_kernel<scalar_t><<<static_cast<unsigned>(nb), block, 0, io.stream>>>(
      static_cast<const acc_t*>(ws), parts, per_part, T1, static_cast<scalar_t*>(io.gw),
      static_cast<scalar_t*>(io.gb));
  CONVEXT_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace convext
