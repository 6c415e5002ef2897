// CUDA kernel of convext::depthwise_conv1d_update (streaming causal depthwise conv1d; semantics in
// depthwise_conv1d_update.h).
//
// NOT VERIFIED ON A GPU: compile-checked for sm_90 only (tools/nvcc_check.sh). The Python layer
// never routes a tensor here unless backend="cuda" is asked for explicitly (convext/streaming.py);
// `auto` runs the torch composite on CUDA (the Triton kernel with CONVEXT_AUTO_UNVERIFIED=1).
//
// One thread per (n, c) row, channels fastest across the threads of a block (coalesced for the
// channels-last (N, T, C) layouts decoding uses; plain (N, C, T) rows are strided but a decoding
// step touches only k + S elements per row). Each thread computes the M outputs of its row over
// the T new samples from the old state, then shifts its own state row by T in place, ascending
// (each element is read before it is overwritten; no other thread touches the row, so no
// barrier). float16 / bfloat16 accumulate in float32 and round once; int64 offsets.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "cuda/launch_utils.cuh"
#include "depthwise_conv1d_update.h"

namespace convext {
namespace cuda {
namespace {

struct UpdateArgs {
  int64_t N, C, T, M, K, S, dilation;
  int64_t sxn, sxc, sxt;
  int64_t ssn, ssc, sss;
  int64_t swo, swk;
  int64_t son, soc, sot;
  int64_t sb;
};

template <typename scalar_t>
__global__ void depthwise_conv1d_update_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ state,
                                               const scalar_t* __restrict__ weight,
                                               const scalar_t* __restrict__ bias, scalar_t* __restrict__ out,
                                               UpdateArgs a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= a.N * a.C) return;
  const int64_t n = row / a.C, c = row % a.C;
  const scalar_t* xr = x + n * a.sxn + c * a.sxc;
  scalar_t* st = state + n * a.ssn + c * a.ssc;
  for (int64_t m = 0; m < a.M; ++m) {
    const int64_t oc = c * a.M + m;
    const scalar_t* w = weight + oc * a.swo;
    const acc_t b0 = bias != nullptr ? static_cast<acc_t>(bias[oc * a.sb]) : acc_t(0);
    scalar_t* o = out + n * a.son + oc * a.soc;
    for (int64_t t = 0; t < a.T; ++t) {
      acc_t acc = b0;
      for (int64_t j = 0; j < a.K; ++j) {
        const int64_t i = t + j * a.dilation;  // index into u = cat(state, x)
        const acc_t v = i < a.S ? static_cast<acc_t>(st[i * a.sss]) : static_cast<acc_t>(xr[(i - a.S) * a.sxt]);
        acc += static_cast<acc_t>(w[j * a.swk]) * v;
      }
      o[t * a.sot] = static_cast<scalar_t>(acc);
    }
  }
  for (int64_t i = 0; i < a.S; ++i) {
    const int64_t src = i + a.T;
    st[i * a.sss] = src < a.S ? st[src * a.sss] : xr[(src - a.S) * a.sxt];
  }
}

at::Tensor depthwise_conv1d_update_cuda(const at::Tensor& x, const at::Tensor& conv_state, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, int64_t dilation) {
  TORCH_CHECK(x.is_cuda(), "convext: depthwise_conv1d_update CUDA kernel got a ", x.device(), " tensor");
  const Conv1dUpdateParams p = check_conv1d_update(x, conv_state, weight, bias, dilation);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = alloc_conv1d_update_output(x, p);
  const int64_t rows = p.N * p.C;
  if (rows == 0 || (p.T == 0 && p.S == 0)) return out;
  const bool has_bias = bias.has_value() && bias->defined();
  UpdateArgs a{p.N, p.C, p.T, p.M, p.K, p.S, p.dilation,
               x.stride(0), x.stride(1), x.stride(2),
               conv_state.stride(0), conv_state.stride(1), conv_state.stride(2),
               weight.stride(0), weight.stride(2),
               out.stride(0), out.stride(1), out.stride(2),
               has_bias ? bias->stride(0) : 0};
  constexpr int kThreads = 128;
  const int64_t blocks = (rows + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= kI32Max, "convext: depthwise_conv1d_update: too many rows (", rows, ")");
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "convext_depthwise_conv1d_update_cuda", [&] {
    depthwise_conv1d_update_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), conv_state.mutable_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
        has_bias ? bias->const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(), a);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace convext

TORCH_LIBRARY_IMPL(convext, CUDA, m) {
  m.impl("depthwise_conv1d_update", &convext::cuda::depthwise_conv1d_update_cuda);
}
