// CUDA forward depthwise conv2d, and the "correlation engine" it is built on, which
// depthwise_conv2d_backward_input.cu reuses for stride-1 grad-input (a correlation of
// grad_output with the flipped kernel, summed over the depth multiplier).
//
// The engine computes, for every dst element (n, cd, y, x),
//   dst = bias[cd] + sum_{r < R} sum_{kh, kw} src[n, cs(cd, r), y*sh - pt + kh*dh, x*sw - pl + kw*dw]
//                                            * w[wrow(cd, r), kh', kw']
// with zero outside src, where
//   forward       : R = 1, cs = cd / M,   wrow = cd,       (kh', kw') = (kh, kw)
//   grad-input s=1: R = M, cs = cd*M + r, wrow = cd*M + r, (kh', kw') = (KH-1-kh, KW-1-kw)
// Padding may be negative (grad-input with padding larger than the dilated kernel).
//
// This file holds the engine's planner (which kernel family runs a given shape) and the forward
// op; each kernel family lives in its own header with its launcher and is compiled in its own
// translation unit (the table is in depthwise_conv2d_forward.cuh):
//  * tile (NCHW, shared-memory tiles), nhwc (channels_last): the first-generation kernels, S in {1, 2};
//  * colstrip (NCHW), nhwc2 (channels_last), gather (grad-input, stride > 1): the fast paths,
//    each switched off by its name in CONVEXT_DISABLE_FAST_PATHS (all of them by =1);
//  * the opt-in tensor-core path (depthwise_conv2d_tc.cu, CONVEXT_CUDA_TC=1);
//  * generic: every other shape, and float64.
#include "cuda/depthwise_conv2d_common.cuh"
#include "cuda/depthwise_conv2d_forward.cuh"
#include "cuda/depthwise_conv2d_nonfinite.cuh"
#include "depthwise_conv2d.h"

#include <ATen/cuda/CUDAContext.h>
#include <torch/library.h>

namespace convext {
namespace cuda {
namespace {

// The fast families (all but gather and generic) multiply zero-filled padding by the weights:
// with a non-finite weight their non-finite results are recomputed exactly
// (depthwise_conv2d_nonfinite.cuh; gated on a device flag, no host sync).
template <typename T>
bool run_fast_family(const CorrArgs& a, bool dst_cl, cudaStream_t stream) {
  if (a.gather || a.sh != a.sw || (a.sh != 1 && a.sh != 2)) return false;
  if (dst_cl) {
    if (!engine_nhwc_vec_ok(a, 4, sizeof(T))) return false;
    if (fast_path_enabled(kFpNhwc2) && run_fwd_nhwc2<T>(a, stream)) return true;
    return run_fwd_nhwc<T>(a, stream);
  }
  if (fast_path_enabled(kFpColstrip) && run_fwd_colstrip<T>(a, stream)) return true;
  return run_fwd_tile<T>(a, stream);
}

// Tried in order; the first family that covers the shape runs. Every family but generic is
// specialised for fp32 / fp16 / bf16 only.
template <typename T>
void run_engine_typed(const at::Tensor& src, const at::Tensor& dst, const CorrArgs& a, cudaStream_t stream) {
  const bool dst_cl = dst.suggest_memory_format() == at::MemoryFormat::ChannelsLast && a.C_dst > 1;
  if constexpr (!std::is_same_v<T, double>) {
    if (a.gather && fast_path_enabled(kFpGather) && run_fwd_gather<T>(a, dst_cl, stream)) return;
    if (!a.gather && run_fwd_tc<T>(src, dst, a, stream)) {
      launch_nonfinite_fixup<T>(a, dst_cl, stream);  // band GEMMs: off-band and padding zeros
      return;
    }
    if (run_fast_family<T>(a, dst_cl, stream)) {
      if (cuda_nonfinite_enabled()) launch_weight_gated_fixup<T>(a, dst_cl, dst, stream);
      return;
    }
  }
  run_fwd_generic<T>(a, dst_cl, stream);
}

}  // namespace

// Runs the engine: src/dst 4-D CUDA tensors of one dtype, weight contiguous (Cw,1,KH,KW) of the same
// dtype, bias contiguous or undefined; a.* geometry filled by the caller (pointers/strides here).
void run_depthwise_engine(const at::Tensor& src, const at::Tensor& weight, const at::Tensor* bias,
                          const at::Tensor& dst, CorrArgs a) {
  if (dst.numel() == 0) return;
  a.src = src.const_data_ptr();
  a.dst = dst.data_ptr();
  a.weight = weight.const_data_ptr();
  a.bias = (bias != nullptr && bias->defined()) ? bias->const_data_ptr() : nullptr;
  for (int i = 0; i < 4; ++i) {
    a.ss[i] = src.stride(i);
    a.ds[i] = dst.stride(i);
  }
  a.N = src.size(0);
  a.C_src = src.size(1);
  a.H_src = src.size(2);
  a.W_src = src.size(3);
  a.C_dst = dst.size(1);
  a.H_dst = dst.size(2);
  a.W_dst = dst.size(3);
  c10::cuda::CUDAGuard guard(src.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  CONVEXT_DISPATCH_FLOATING(src.scalar_type(), "convext_depthwise_conv2d_cuda", [&] {
    run_engine_typed<scalar_t>(src, dst, a, stream);
  });
}

namespace {

at::Tensor depthwise_conv2d_cuda(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(input.is_cuda(), "convext: depthwise_conv2d CUDA kernel got a non-CUDA input");
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == 1, "convext: weight must be (C*M, 1, kH, kW)");
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), "convext: weight dtype must match input");
  TORCH_CHECK(weight.device() == input.device(), "convext: weight must be on the input's device");
  auto p = make_depthwise_conv2d_params(input.sizes(), weight.size(0), {weight.size(2), weight.size(3)},
                                        stride, padding, dilation);
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->numel() == p.out_channels, "convext: bias must have ", p.out_channels, " elements");
    TORCH_CHECK(bias->scalar_type() == input.scalar_type() && bias->device() == input.device(),
                "convext: bias dtype/device must match input");
    b = bias->contiguous();
  }
  auto out = at::empty({p.batch, p.out_channels, p.out_h, p.out_w},
                       input.options().memory_format(input.suggest_memory_format()));
  if (out.numel() == 0) return out;
  const at::Tensor w = weight.contiguous();
  CorrArgs a;
  a.KH = p.kernel_h; a.KW = p.kernel_w;
  a.sh = p.stride_h; a.sw = p.stride_w;
  a.dh = p.dilation_h; a.dw = p.dilation_w;
  a.pt = p.pad_top; a.pl = p.pad_left;
  a.M = p.multiplier;
  run_depthwise_engine(input, w, b.defined() ? &b : nullptr, out, a);
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace convext

TORCH_LIBRARY_IMPL(convext, CUDA, m) {
  m.impl("depthwise_conv2d", &convext::cuda::depthwise_conv2d_cuda);
}
