// The geometry of one depthwise conv2d (DepthwiseConv2dParams) as a plain C++ struct, with no
// ATen include: the CUDA kernel-family translation units include it (they compile without ATen,
// which takes most of a translation unit's compile time). make_depthwise_conv2d_params and the
// other ATen-facing helpers that fill it are in depthwise_conv2d.h.
//
// Output channel oc reads input channel oc / multiplier (torch's grouped-conv order). Strides are
// in elements, so NCHW, channels_last and sliced views are all described without copies. Padding
// may be asymmetric: only the top/left pads matter to the index math once out_h/out_w are known.
#pragma once

#include <array>
#include <cstdint>

namespace convext {

struct DepthwiseConv2dParams {
  int64_t batch = 0;
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t multiplier = 1;
  int64_t in_h = 0, in_w = 0;
  int64_t out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  // element strides of the (N, C_in, H, W) input and (N, C_out, H_out, W_out) output
  std::array<int64_t, 4> in_strides{};
  std::array<int64_t, 4> out_strides{};
};

namespace cpu {
// Whether the CPU backend runs the channel-blocked NCHW kernels for this geometry (multiplier 1,
// NCHW; acc_bytes: the accumulation type's size), else the plane kernels (csrc/cpu/depthwise_conv2d.cpp).
bool uses_channel_blocks(const DepthwiseConv2dParams& p, int64_t acc_bytes);
}  // namespace cpu

}  // namespace convext
