// Streaming causal depthwise conv1d (convext::depthwise_conv1d_update), shared by the CPU and
// CUDA kernels: argument checks and the output allocation.
//
//   x (N, C, T) new samples, conv_state (N, C, S) the S = dilation*(k-1) previous inputs (oldest
//   first), weight (C*M, 1, k), bias (C*M,) or none. With u = cat(conv_state, x) along time:
//     out[n, c*M+m, t] = bias[c*M+m] + sum_j weight[c*M+m, 0, j] * u[n, c, t + j*dilation]
//     conv_state <- u[n, c, T : T+S]                                   (in place)
//   which is the causal conv over the whole stream (zero initial state = causal zero padding).
// Every tensor is read (and conv_state written) through its element strides: (N, C, T) and
// channels-last (N, T, C) views are used in place. The output is (N, T, C*M) transposed to
// (N, C*M, T) when x is channels-last (T > 1 and x.stride(1) < x.stride(2)), else contiguous.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include <optional>

namespace convext {

struct Conv1dUpdateParams {
  int64_t N = 0, C = 0, T = 0, M = 1, K = 1, S = 0, dilation = 1;
};

inline Conv1dUpdateParams check_conv1d_update(const at::Tensor& x, const at::Tensor& conv_state,
                                              const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                              int64_t dilation) {
  TORCH_CHECK(x.dim() == 3, "convext: x must be 3-D (N, C, T), got ", x.sizes());
  TORCH_CHECK(conv_state.dim() == 3, "convext: conv_state must be 3-D (N, C, dilation*(k-1)), got ",
              conv_state.sizes());
  TORCH_CHECK(weight.dim() == 3 && weight.size(1) == 1, "convext: weight must be (C*M, 1, k), got ",
              weight.sizes());
  TORCH_CHECK(dilation >= 1, "convext: dilation must be >= 1, got ", dilation);
  Conv1dUpdateParams p;
  p.N = x.size(0);
  p.C = x.size(1);
  p.T = x.size(2);
  p.K = weight.size(2);
  p.dilation = dilation;
  TORCH_CHECK(p.C > 0 && weight.size(0) > 0 && weight.size(0) % p.C == 0 && p.K >= 1,
              "convext: weight must be (C*M, 1, k) with C=", p.C, ", got ", weight.sizes());
  p.M = weight.size(0) / p.C;
  p.S = dilation * (p.K - 1);
  TORCH_CHECK(conv_state.size(0) == p.N && conv_state.size(1) == p.C && conv_state.size(2) == p.S,
              "convext: conv_state must have shape (", p.N, ", ", p.C, ", ", p.S, "), got ", conv_state.sizes());
  for (const at::Tensor* t : {&conv_state, &weight}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "convext: conv_state and weight must have x's dtype");
    TORCH_CHECK(t->device() == x.device(), "convext: conv_state and weight must be on x's device");
  }
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == p.C * p.M, "convext: bias must be (", p.C * p.M, ",), got ",
                bias->sizes());
    TORCH_CHECK(bias->scalar_type() == x.scalar_type() && bias->device() == x.device(),
                "convext: bias must have x's dtype and device");
  }
  at::assert_no_internal_overlap(conv_state);
  at::assert_no_overlap(conv_state, x);
  return p;
}

inline at::Tensor alloc_conv1d_update_output(const at::Tensor& x, const Conv1dUpdateParams& p) {
  if (p.T > 1 && x.stride(1) < x.stride(2)) {
    return at::empty({p.N, p.T, p.C * p.M}, x.options()).transpose(1, 2);
  }
  return at::empty({p.N, p.C * p.M, p.T}, x.options());
}

}  // namespace convext
