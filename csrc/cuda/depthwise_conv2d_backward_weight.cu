// CUDA grad-weight (and grad-bias) of the depthwise conv2d: the planner (which kernel family runs
// a shape) and the op. The kernel families, the workspace / fixed-order reduction they share and
// where each lives: depthwise_conv2d_backward_weight.cuh.
//
// Order: the opt-in tensor-core family (depthwise_conv2d_tc.cu, CONVEXT_CUDA_TC=1); channels_last
// tensors with M == 1 and 16-byte channel vectors: the cl fast family, else the cl family; every
// other layout (NCHW, channels_last with M > 1, odd alignments, sliced views): the planar fast
// family, else the planar family, which reads through the strides. The two fast families are off
// with CONVEXT_DISABLE_FAST_PATHS=1.
#include "cuda/depthwise_conv2d_backward_weight.cuh"
#include "cuda/depthwise_conv2d_common.cuh"
#include "cuda/depthwise_conv2d_nonfinite.cuh"
#include "depthwise_conv2d.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

namespace convext {
namespace cuda {
namespace {

template <typename scalar_t>
bool cl_eligible(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p) {
  constexpr int VC = vec16<scalar_t>();
  if (p.multiplier != 1 || p.in_channels % VC != 0) return false;
  if (x.stride(1) != 1 || go.stride(1) != 1) return false;
  // W-contiguous planes with more than one column go to the planar kernel.
  if (x.stride(3) == 1 && p.in_w > 1) return false;
  for (int d : {0, 2, 3}) {
    if (x.stride(d) % VC != 0 || go.stride(d) % VC != 0) return false;
  }
  return is_aligned(x.const_data_ptr(), 16) && is_aligned(go.const_data_ptr(), 16);
}

// The families' workspaces (BwdWeightIO::alloc_workspace): acc-type tensors on the input's
// device, held until the family has returned.
struct Workspaces {
  at::TensorOptions options;
  std::vector<at::Tensor> held;
};

void* alloc_workspace(void* ctx, int64_t rows, int64_t cols) {
  auto* w = static_cast<Workspaces*>(ctx);
  w->held.push_back(at::empty({rows, cols}, w->options));
  return w->held.back().mutable_data_ptr();
}

template <typename scalar_t>
void run_families(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
                  at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
  if (run_bwd_weight_tc<scalar_t>(x, go, p, gw, gb, compute_bias, stream)) return;
  Workspaces ws{x.options().dtype(c10::CppTypeToScalarType<AccType<scalar_t>>::value), {}};
  BwdWeightIO io;
  io.x = x.const_data_ptr<scalar_t>();
  io.go = go.const_data_ptr<scalar_t>();
  io.gw = gw.mutable_data_ptr<scalar_t>();
  io.gb = compute_bias ? gb.mutable_data_ptr<scalar_t>() : nullptr;
  io.stream = stream;
  io.smem_optin = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin);
  io.alloc_workspace = &alloc_workspace;
  io.workspace_ctx = &ws;
  if (cl_eligible<scalar_t>(x, go, p)) {
    if (run_bwd_weight_cl_fast<scalar_t>(p, io)) return;
    run_bwd_weight_cl<scalar_t>(p, io);
    return;
  }
  if (run_bwd_weight_planar_fast<scalar_t>(p, io)) return;
  run_bwd_weight_planar<scalar_t>(p, io);
}

// Every family multiplies zero-filled padding / zero-extended rows (0 * NaN): the non-finite
// grad_weight entries are then recomputed exactly (depthwise_conv2d_nonfinite.cuh; a block per
// entry that returns at once when it is finite).
template <typename scalar_t>
void dispatch(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
              at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
  run_families<scalar_t>(x, go, p, gw, gb, compute_bias, stream);
  GwFixArgs g;
  g.N = p.batch;
  g.C_out = p.out_channels;
  g.M = p.multiplier;
  g.H = p.in_h;
  g.W = p.in_w;
  g.Ho = p.out_h;
  g.Wo = p.out_w;
  g.KH = p.kernel_h;
  g.KW = p.kernel_w;
  g.sh = p.stride_h;
  g.sw = p.stride_w;
  g.dh = p.dilation_h;
  g.dw = p.dilation_w;
  g.pt = p.pad_top;
  g.pl = p.pad_left;
  for (int d = 0; d < 4; ++d) {
    g.xs[d] = x.stride(d);
    g.gs[d] = go.stride(d);
  }
  if (cuda_nonfinite_enabled() || cuda_tc_enabled()) launch_gw_nonfinite_fixup<scalar_t>(x, go, gw, g, stream);
}

std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_backward_weight_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool compute_bias) {
  TORCH_CHECK(input.is_cuda() && grad_output.is_cuda(),
              "convext: depthwise_conv2d_backward_weight: tensors must be CUDA tensors");
  TORCH_CHECK(input.device() == grad_output.device(),
              "convext: depthwise_conv2d_backward_weight: input and grad_output on different devices");
  TORCH_CHECK(input.dim() == 4 && grad_output.dim() == 4,
              "convext: depthwise_conv2d_backward_weight: input and grad_output must be 4-D");
  TORCH_CHECK(input.scalar_type() == grad_output.scalar_type(),
              "convext: depthwise_conv2d_backward_weight: input and grad_output dtypes differ (",
              input.scalar_type(), " vs ", grad_output.scalar_type(), ")");
  DepthwiseConv2dParams p = make_depthwise_conv2d_params(input.sizes(), grad_output.size(1), kernel_size, stride,
                                                         padding, dilation);
  TORCH_CHECK(grad_output.size(0) == p.batch && grad_output.size(2) == p.out_h && grad_output.size(3) == p.out_w,
              "convext: depthwise_conv2d_backward_weight: grad_output has shape ", grad_output.sizes(),
              ", expected (", p.batch, ", ", p.out_channels, ", ", p.out_h, ", ", p.out_w, ")");
  for (int64_t v : {p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.pad_top,
                    p.pad_left}) {
    TORCH_CHECK(v < (int64_t(1) << 20), "convext: depthwise_conv2d_backward_weight: geometry too large");
  }
  TORCH_CHECK(p.kernel_h * p.kernel_w < (int64_t(1) << 24), "convext: kernel too large");
  set_strides(p.in_strides, input);
  set_strides(p.out_strides, grad_output);

  c10::cuda::CUDAGuard guard(input.device());
  const auto opts = input.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor gw = at::empty({p.out_channels, 1, p.kernel_h, p.kernel_w}, opts);
  at::Tensor gb = compute_bias ? at::empty({p.out_channels}, opts) : at::empty({0}, opts);
  if (p.batch == 0) {
    gw.zero_();
    if (compute_bias) gb.zero_();
    return {gw, gb};
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  CONVEXT_DISPATCH_FLOATING(input.scalar_type(), "convext_depthwise_conv2d_backward_weight", [&] {
    dispatch<scalar_t>(input, grad_output, p, gw, gb, compute_bias, stream);
  });
  return {gw, gb};
}

}  // namespace
}  // namespace cuda
}  // namespace convext

TORCH_LIBRARY_IMPL(convext, CUDA, m) {
  m.impl("depthwise_conv2d_backward_weight", &convext::cuda::depthwise_conv2d_backward_weight_cuda);
}
