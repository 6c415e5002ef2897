// CUDA grad-input of depthwise conv2d (a transposed depthwise conv).
//
// stride 1: grad_input[n, c] = sum_m correlate(grad_output[n, c*M + m], flip(w[c*M + m])) with
//   padding' = dil*(k-1) - pad (per leading side; may be negative), run on the forward engine
//   (depthwise_conv2d_forward.cu: shared-memory tile / channels_last kernels, flip and
//   multiplier reduction folded into their weight staging, no extra launches).
// stride > 1: the engine's generic gather kernel (each grad_input element loops over the taps
//   whose (i + pad - k*dil) is a multiple of the stride), int64 indices.
#include "cuda/depthwise_conv2d_common.cuh"
#include "depthwise_conv2d.h"

#include <torch/library.h>

namespace convext {
namespace cuda {


namespace {

at::Tensor depthwise_conv2d_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                                at::IntArrayRef input_size, at::IntArrayRef stride,
                                                at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(grad_output.is_cuda(), "convext: depthwise_conv2d_backward_input CUDA kernel got a non-CUDA grad_output");
  TORCH_CHECK(grad_output.dim() == 4, "convext: grad_output must be 4-D");
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == 1, "convext: weight must be (C*M, 1, kH, kW)");
  TORCH_CHECK(weight.scalar_type() == grad_output.scalar_type(), "convext: weight dtype must match grad_output");
  TORCH_CHECK(weight.device() == grad_output.device(), "convext: weight must be on grad_output's device");
  auto p = make_depthwise_conv2d_params(input_size, weight.size(0), {weight.size(2), weight.size(3)}, stride,
                                        padding, dilation);
  TORCH_CHECK(grad_output.size(0) == p.batch && grad_output.size(1) == p.out_channels &&
                  grad_output.size(2) == p.out_h && grad_output.size(3) == p.out_w,
              "convext: grad_output has shape ", grad_output.sizes(), ", expected (", p.batch, ", ",
              p.out_channels, ", ", p.out_h, ", ", p.out_w, ")");
  auto grad_input = at::empty({p.batch, p.in_channels, p.in_h, p.in_w},
                              grad_output.options().memory_format(grad_output.suggest_memory_format()));
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor w = weight.contiguous();
  CorrArgs a;
  a.KH = p.kernel_h;
  a.KW = p.kernel_w;
  a.dh = p.dilation_h;
  a.dw = p.dilation_w;
  a.M = p.multiplier;
  if (p.stride_h == 1 && p.stride_w == 1) {
    a.sh = a.sw = 1;
    a.pt = p.dilation_h * (p.kernel_h - 1) - p.pad_top;
    a.pl = p.dilation_w * (p.kernel_w - 1) - p.pad_left;
    a.reduce_m = 1;
    a.flip = 1;
  } else {
    a.sh = p.stride_h;
    a.sw = p.stride_w;
    a.pt = p.pad_top;
    a.pl = p.pad_left;
    a.gather = 1;
  }
  run_depthwise_engine(grad_output, w, nullptr, grad_input, a);
  return grad_input;
}

}  // namespace
}  // namespace cuda
}  // namespace convext

TORCH_LIBRARY_IMPL(convext, CUDA, m) {
  m.impl("depthwise_conv2d_backward_input", &convext::cuda::depthwise_conv2d_backward_input_cuda);
}
