// CPU kernel of convext::depthwise_conv1d_update (streaming causal depthwise conv1d; semantics in
// depthwise_conv1d_update.h). One task per (n, c) row, parallel with at::parallel_for: the M
// outputs of the row over the T new samples are computed from the old state first, then the
// state is shifted by T in place (ascending, so each element is read before it is overwritten).
// Any strides, no copies; float16 / bfloat16 accumulate in float32 and round once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>

#include "depthwise_conv1d_update.h"

namespace convext {
namespace cpu {
namespace {

at::Tensor depthwise_conv1d_update_cpu(const at::Tensor& x, const at::Tensor& conv_state, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, int64_t dilation) {
  TORCH_CHECK(x.device().is_cpu(), "convext: depthwise_conv1d_update CPU kernel got a ", x.device(), " tensor");
  const Conv1dUpdateParams p = check_conv1d_update(x, conv_state, weight, bias, dilation);
  at::Tensor out = alloc_conv1d_update_output(x, p);
  if (p.N == 0) return out;
  const bool has_bias = bias.has_value() && bias->defined();
  const int64_t sxn = x.stride(0), sxc = x.stride(1), sxt = x.stride(2);
  const int64_t ssn = conv_state.stride(0), ssc = conv_state.stride(1), sss = conv_state.stride(2);
  const int64_t swo = weight.stride(0), swk = weight.stride(2);
  const int64_t son = out.stride(0), soc = out.stride(1), sot = out.stride(2);
  const int64_t sb = has_bias ? bias->stride(0) : 0;
  const int64_t C = p.C, T = p.T, M = p.M, K = p.K, S = p.S, d = p.dilation;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "convext_depthwise_conv1d_update_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* sp = conv_state.mutable_data_ptr<scalar_t>();
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    const scalar_t* bp = has_bias ? bias->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, (T + S) * M * K));
    at::parallel_for(0, p.N * C, grain, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / C, c = row % C;
        const scalar_t* xr = xp + n * sxn + c * sxc;
        scalar_t* st = sp + n * ssn + c * ssc;
        for (int64_t m = 0; m < M; ++m) {
          const int64_t oc = c * M + m;
          const scalar_t* w = wp + oc * swo;
          const acc_t b0 = has_bias ? static_cast<acc_t>(bp[oc * sb]) : acc_t(0);
          scalar_t* o = op + n * son + oc * soc;
          for (int64_t t = 0; t < T; ++t) {
            acc_t acc = b0;
            for (int64_t j = 0; j < K; ++j) {
              const int64_t i = t + j * d;  // index into u = cat(state, x)
              const acc_t v = i < S ? static_cast<acc_t>(st[i * sss]) : static_cast<acc_t>(xr[(i - S) * sxt]);
              acc += static_cast<acc_t>(w[j * swk]) * v;
            }
            o[t * sot] = static_cast<scalar_t>(acc);
          }
        }
        // state <- u[T : T+S], ascending: u[i+T] is read before index i+T is written.
        for (int64_t i = 0; i < S; ++i) {
          const int64_t src = i + T;
          st[i * sss] = src < S ? st[src * sss] : xr[(src - S) * sxt];
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(convext, CPU, m) {
  m.impl("depthwise_conv1d_update", &depthwise_conv1d_update_cpu);
}

}  // namespace cpu
}  // namespace convext
