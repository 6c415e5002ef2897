// Geometry of one depthwise conv2d, shared by the CPU and CUDA kernels: the params struct
// (depthwise_conv2d_params.h, plain C++, no ATen) and the ATen-facing helpers that fill it.
//
// Output channel oc reads input channel oc / multiplier (torch's grouped-conv
// order). Strides are in elements, so NCHW, channels_last and sliced views are
// all described without copies. Padding may be asymmetric: only the top/left
// pads matter to the index math once out_h/out_w are known.
#pragma once

#include "depthwise_conv2d_params.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>

namespace convext {

inline int64_t conv_output_size(int64_t in, int64_t pad_before, int64_t pad_after,
                                int64_t kernel, int64_t stride, int64_t dilation) {
  return (in + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride + 1;
}

// Validates what the Python wrapper already checked (a second line of defence for
// direct torch.ops calls) and fills the geometry. `input_sizes` is (N, C, H, W);
// in_strides/out_strides are left zero for the caller to fill.
inline DepthwiseConv2dParams make_depthwise_conv2d_params(
    at::IntArrayRef input_sizes, int64_t out_channels, at::IntArrayRef kernel_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(input_sizes.size() == 4, "convext: input must be 4-D (N, C, H, W), got ",
              input_sizes.size(), "-D");
  TORCH_CHECK(kernel_size.size() == 2, "convext: kernel_size must have 2 elements");
  TORCH_CHECK(stride.size() == 2, "convext: stride must have 2 elements");
  TORCH_CHECK(padding.size() == 4, "convext: padding must have 4 elements (top, bottom, left, right)");
  TORCH_CHECK(dilation.size() == 2, "convext: dilation must have 2 elements");
  DepthwiseConv2dParams p;
  p.batch = input_sizes[0];
  p.in_channels = input_sizes[1];
  p.in_h = input_sizes[2];
  p.in_w = input_sizes[3];
  p.out_channels = out_channels;
  TORCH_CHECK(p.in_channels > 0, "convext: input must have at least one channel");
  // As torch: a zero spatial size is an error unless the batch is empty (padding does not help).
  TORCH_CHECK(p.batch == 0 || (p.in_h > 0 && p.in_w > 0), "convext: input has an empty spatial size (",
              p.in_h, ", ", p.in_w, ")");
  TORCH_CHECK(out_channels > 0 && out_channels % p.in_channels == 0,
              "convext: weight.size(0) (", out_channels,
              ") must be a positive multiple of the input channels (", p.in_channels, ")");
  p.multiplier = out_channels / p.in_channels;
  p.kernel_h = kernel_size[0];
  p.kernel_w = kernel_size[1];
  p.stride_h = stride[0];
  p.stride_w = stride[1];
  p.dilation_h = dilation[0];
  p.dilation_w = dilation[1];
  p.pad_top = padding[0];
  p.pad_left = padding[2];
  TORCH_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1, "convext: kernel size must be >= 1");
  TORCH_CHECK(p.stride_h >= 1 && p.stride_w >= 1, "convext: stride must be >= 1");
  TORCH_CHECK(p.dilation_h >= 1 && p.dilation_w >= 1, "convext: dilation must be >= 1");
  TORCH_CHECK(padding[0] >= 0 && padding[1] >= 0 && padding[2] >= 0 && padding[3] >= 0,
              "convext: padding must be non-negative");
  p.out_h = conv_output_size(p.in_h, padding[0], padding[1], p.kernel_h, p.stride_h, p.dilation_h);
  p.out_w = conv_output_size(p.in_w, padding[2], padding[3], p.kernel_w, p.stride_w, p.dilation_w);
  TORCH_CHECK(p.out_h >= 1 && p.out_w >= 1, "convext: input (", p.in_h, "x", p.in_w,
              ", padded) is smaller than the dilated kernel (", p.kernel_h, "x", p.kernel_w, ")");
  return p;
}

inline void set_strides(std::array<int64_t, 4>& dst, const at::Tensor& t) {
  for (int i = 0; i < 4; ++i) dst[i] = t.stride(i);
}

// Output memory format: the input's, as torch.nn does.
inline at::MemoryFormat output_memory_format(const at::Tensor& like) {
  return like.suggest_memory_format();
}

}  // namespace convext
