// CPU kernels of convext::depthwise_conv2d{,_backward_input,_backward_weight}.
//
// Every geometry (any kernel, stride, dilation, asymmetric padding, depth multiplier,
// N = 0, optional bias) and any input strides: tensors are read in place through
// element strides, never made contiguous. The loops themselves live in
// depthwise_conv2d_kernel.h (and the per-ISA pieces it includes), compiled three times
// (baseline, AVX2+FMA, AVX-512) and chosen at run time; see that file for the loop
// structure. float32/float64 natively, float16 and bfloat16 accumulate in float32
// (at::opmath_type) and round once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/cpu_isa.h"
#include "cpu/tap_range.h"
#include "depthwise_conv2d.h"
#include "switches.h"

namespace convext {
namespace cpu {

// A depthwise conv as the kernels see it. Normally output channel oc reads input channel
// oc / M through weight row oc. With `reduce` (grad-input at stride 1, run as a conv of
// grad_output with the flipped kernel) output channel c sums input channels c*M + m
// through weight rows c*M + m; then p.in_* describe grad_output and p.out_* grad_input.
struct Geometry {
  DepthwiseConv2dParams p;
  bool reduce = false;
  std::vector<TapRange> w_ranges;  // per kw: valid ow range along W
  int64_t w_int_lo = 0, w_int_hi = 0;  // ow range valid for every kw (empty: 0, 0)
};

inline Geometry make_geometry(const DepthwiseConv2dParams& p, bool reduce = false) {
  Geometry g;
  g.p = p;
  g.reduce = reduce;
  g.w_ranges.resize(p.kernel_w);
  int64_t lo = 0, hi = p.out_w;
  for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
    g.w_ranges[kw] = tap_range(p.out_w, p.in_w, p.stride_w, kw * p.dilation_w - p.pad_left);
    lo = std::max(lo, g.w_ranges[kw].lo);
    hi = std::min(hi, g.w_ranges[kw].hi);
  }
  if (lo < hi) {
    g.w_int_lo = lo;
    g.w_int_hi = hi;
  }
  return g;
}

// grad_input = conv(grad_output, flipped weight) when both strides are 1.
inline Geometry make_transposed_geometry(const DepthwiseConv2dParams& p) {
  DepthwiseConv2dParams t = p;
  t.in_channels = p.out_channels;
  t.out_channels = p.in_channels;
  t.in_h = p.out_h;
  t.in_w = p.out_w;
  t.out_h = p.in_h;
  t.out_w = p.in_w;
  t.pad_top = p.dilation_h * (p.kernel_h - 1) - p.pad_top;  // may be negative
  t.pad_left = p.dilation_w * (p.kernel_w - 1) - p.pad_left;
  t.in_strides = p.out_strides;
  t.out_strides = p.in_strides;
  return make_geometry(t, /*reduce=*/true);
}

namespace base {
#define CONVEXT_VEC_BYTES 16
#include "depthwise_conv2d_kernel.h"
#undef CONVEXT_VEC_BYTES
}  // namespace base

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CONVEXT_CPU_HAVE_X86_COPIES 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#define CONVEXT_VEC_BYTES 32
#include "depthwise_conv2d_kernel.h"
#undef CONVEXT_VEC_BYTES
}  // namespace avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
namespace avx512 {
#define CONVEXT_VEC_BYTES 64
#include "depthwise_conv2d_kernel.h"
#undef CONVEXT_VEC_BYTES
}  // namespace avx512
#pragma GCC pop_options
#endif

// The channel-blocked NCHW kernels (cpu/depthwise_conv2d_cblock_kernel.h) or the plane kernels?
// Blocks need multiplier 1. They win at stride > 1 (the plane kernels' strided rows are scalar) and,
// at stride 1, when a block's lanes are full (at least VL channels) and its padded buffer stays in
// the per-core cache (<= 2 MiB); the plane kernels win on a few wide planes (an RGB stem, 512^2
// planes). Measured on AVX-512 (docs/perf/CPU_MODELS.md). CONVEXT_DISABLE_FAST_PATHS=cpu_cblock:
// never.
bool uses_channel_blocks(const DepthwiseConv2dParams& p, int64_t acc_bytes) {
  if (p.multiplier != 1 || !switches::fast_path_enabled(switches::kFpCpuBlocks)) return false;
  if (p.stride_h != 1 || p.stride_w != 1) return true;
  const int64_t vec_bytes = cpu_isa_level() == 2 ? 64 : cpu_isa_level() == 1 ? 32 : 16;
  const int64_t lanes = vec_bytes / acc_bytes;
  const int64_t hb = (p.out_h - 1) + (p.kernel_h - 1) * p.dilation_h + 1;
  const int64_t wb = (p.out_w - 1) + (p.kernel_w - 1) * p.dilation_w + 1;
  return p.out_channels >= lanes && hb * wb * vec_bytes <= (int64_t(2) << 20);
}

namespace {

// The copy that runs: cpu_isa_level() (cpu/cpu_isa.h), the widest the CPU supports, capped by
// CONVEXT_CPU_ISA (csrc/switches.h).
#ifdef CONVEXT_CPU_HAVE_X86_COPIES
#define CONVEXT_CPU_CALL(fn, ...)                                                    \
  do {                                                                               \
    switch (cpu_isa_level()) {                                                       \
      case 2: avx512::fn(__VA_ARGS__); break;                                        \
      case 1: avx2::fn(__VA_ARGS__); break;                                          \
      default: base::fn(__VA_ARGS__);                                                \
    }                                                                                \
  } while (0)
#else
#define CONVEXT_CPU_CALL(fn, ...) base::fn(__VA_ARGS__)
#endif

void check_cpu_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "convext (CPU kernel): ", name, " must be a CPU tensor, got ",
              t.device());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "convext: ", name,
              " must be a floating-point tensor, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 4, "convext: ", name, " must be 4-D, got ", t.dim(), "-D");
}

void check_same_dtype(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "convext: ", an, " (", a.scalar_type(), ") and ",
              bn, " (", b.scalar_type(), ") must have the same dtype");
}

// weight (Cout, 1, KH, KW), any strides -> acc_t w (Cout, KH*KW), optionally with the kernel flipped in
// both spatial dims, and, when `wT` is given, its transpose (KH*KW, Cout).
template <typename scalar_t, typename acc_t>
void load_weight(const at::Tensor& weight, std::vector<acc_t>& w, std::vector<acc_t>* wT, bool flip = false) {
  const int64_t Cout = weight.size(0), KH = weight.size(2), KW = weight.size(3), taps = KH * KW;
  const scalar_t* src = weight.const_data_ptr<scalar_t>();
  const int64_t s0 = weight.stride(0), s2 = weight.stride(2), s3 = weight.stride(3);
  w.resize(Cout * taps);
  if (std::is_same_v<scalar_t, acc_t> && !flip && s3 == 1 && s2 == KW && s0 == taps) {
    std::memcpy(w.data(), src, sizeof(acc_t) * Cout * taps);
  } else {
    for (int64_t oc = 0; oc < Cout; ++oc) {
      for (int64_t kh = 0; kh < KH; ++kh) {
        for (int64_t kw = 0; kw < KW; ++kw) {
          const int64_t sh = flip ? KH - 1 - kh : kh, sw = flip ? KW - 1 - kw : kw;
          w[oc * taps + kh * KW + kw] = static_cast<acc_t>(src[oc * s0 + sh * s2 + sw * s3]);
        }
      }
    }
  }
  if (!wT) return;
  wT->resize(Cout * taps);
  for (int64_t t = 0; t < taps; ++t) {
    acc_t* d = wT->data() + t * Cout;
    for (int64_t oc = 0; oc < Cout; ++oc) d[oc] = w[oc * taps + t];
  }
}

at::Tensor depthwise_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias_opt, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_cpu_float(input, "input");
  check_cpu_float(weight, "weight");
  check_same_dtype(input, "input", weight, "weight");
  TORCH_CHECK(weight.size(1) == 1, "convext: weight must have shape (C*M, 1, kH, kW), got ",
              weight.sizes());
  auto p = make_depthwise_conv2d_params(input.sizes(), weight.size(0), {weight.size(2), weight.size(3)},
                                        stride, padding, dilation);
  const bool has_bias = bias_opt.has_value() && bias_opt->defined();
  if (has_bias) {
    const auto& b = *bias_opt;
    TORCH_CHECK(b.device().is_cpu(), "convext (CPU kernel): bias must be a CPU tensor");
    TORCH_CHECK(b.dim() == 1 && b.size(0) == p.out_channels, "convext: bias must have shape (",
                p.out_channels, ",), got ", b.sizes());
    check_same_dtype(input, "input", b, "bias");
  }
  const auto fmt = output_memory_format(input);
  at::Tensor out = at::empty({p.batch, p.out_channels, p.out_h, p.out_w}, input.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  set_strides(p.in_strides, input);
  set_strides(p.out_strides, out);
  const Geometry g = make_geometry(p);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "convext_depthwise_conv2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool cl = fmt == at::MemoryFormat::ChannelsLast;
    std::vector<acc_t> w, wT, b;
    load_weight<scalar_t, acc_t>(weight, w, cl ? &wT : nullptr);
    if (has_bias) {
      const auto& bt = *bias_opt;
      const scalar_t* bp = bt.const_data_ptr<scalar_t>();
      b.resize(p.out_channels);
      for (int64_t i = 0; i < p.out_channels; ++i) b[i] = static_cast<acc_t>(bp[i * bt.stride(0)]);
    }
    const acc_t* bptr = has_bias ? b.data() : nullptr;
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    scalar_t* y = out.mutable_data_ptr<scalar_t>();
    if (cl) {
      CONVEXT_CPU_CALL(conv_cl, g, x, wT.data(), bptr, y);
    } else {
      if (uses_channel_blocks(p, sizeof(acc_t))) {
        CONVEXT_CPU_CALL(conv_nchw_cb, g, x, w.data(), bptr, y);
      } else {
        CONVEXT_CPU_CALL(conv_nchw, g, x, w.data(), bptr, y);
      }
    }
  });
  return out;
}

at::Tensor depthwise_conv2d_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                               at::IntArrayRef input_size, at::IntArrayRef stride,
                                               at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_cpu_float(grad_output, "grad_output");
  check_cpu_float(weight, "weight");
  check_same_dtype(grad_output, "grad_output", weight, "weight");
  TORCH_CHECK(weight.size(1) == 1, "convext: weight must have shape (C*M, 1, kH, kW), got ",
              weight.sizes());
  TORCH_CHECK(input_size.size() == 4, "convext: input_size must have 4 elements");
  for (auto s : input_size) TORCH_CHECK(s >= 0, "convext: input_size must be non-negative, got ", input_size);
  auto p = make_depthwise_conv2d_params(input_size, weight.size(0), {weight.size(2), weight.size(3)},
                                        stride, padding, dilation);
  TORCH_CHECK(grad_output.size(0) == p.batch && grad_output.size(1) == p.out_channels &&
                  grad_output.size(2) == p.out_h && grad_output.size(3) == p.out_w,
              "convext: grad_output has shape ", grad_output.sizes(), ", expected (", p.batch, ", ",
              p.out_channels, ", ", p.out_h, ", ", p.out_w, ")");
  const auto fmt = output_memory_format(grad_output);
  at::Tensor gi = at::empty(input_size, grad_output.options().memory_format(fmt));
  if (gi.numel() == 0) return gi;
  set_strides(p.in_strides, gi);
  set_strides(p.out_strides, grad_output);
  // Stride 1: a conv of grad_output with the flipped kernel (same fast kernels as forward).
  const bool unit_stride = p.stride_h == 1 && p.stride_w == 1;
  const Geometry g = unit_stride ? make_transposed_geometry(p) : make_geometry(p);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "convext_depthwise_conv2d_backward_input_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> w, wT;
    load_weight<scalar_t, acc_t>(weight, w, cl ? &wT : nullptr, /*flip=*/unit_stride);
    const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
    scalar_t* out = gi.mutable_data_ptr<scalar_t>();
    if (unit_stride && cl) {
      CONVEXT_CPU_CALL(conv_cl, g, go, wT.data(), static_cast<const acc_t*>(nullptr), out);
    } else if (unit_stride && uses_channel_blocks(p, sizeof(acc_t))) {
      CONVEXT_CPU_CALL(conv_nchw_cb, g, go, w.data(), static_cast<const acc_t*>(nullptr), out);
    } else if (unit_stride) {
      CONVEXT_CPU_CALL(conv_nchw, g, go, w.data(), static_cast<const acc_t*>(nullptr), out);
    } else if (cl) {
      CONVEXT_CPU_CALL(backward_input_cl, g, go, wT.data(), out);
    } else if (uses_channel_blocks(p, sizeof(acc_t))) {
      CONVEXT_CPU_CALL(backward_input_nchw_cb, g, go, w.data(), out);
    } else {
      CONVEXT_CPU_CALL(backward_input_nchw, g, go, w.data(), out);
    }
  });
  return gi;
}

std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_backward_weight_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef kernel_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool compute_bias) {
  check_cpu_float(grad_output, "grad_output");
  check_cpu_float(input, "input");
  check_same_dtype(grad_output, "grad_output", input, "input");
  auto p = make_depthwise_conv2d_params(input.sizes(), grad_output.size(1), kernel_size, stride,
                                        padding, dilation);
  TORCH_CHECK(grad_output.size(0) == p.batch && grad_output.size(2) == p.out_h &&
                  grad_output.size(3) == p.out_w,
              "convext: grad_output has shape ", grad_output.sizes(), ", expected (", p.batch, ", ",
              p.out_channels, ", ", p.out_h, ", ", p.out_w, ")");
  const auto opts = grad_output.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor gw = at::empty({p.out_channels, 1, p.kernel_h, p.kernel_w}, opts);
  at::Tensor gb = compute_bias ? at::empty({p.out_channels}, opts) : at::empty({0}, opts);
  set_strides(p.in_strides, input);
  set_strides(p.out_strides, grad_output);
  const Geometry g = make_geometry(p);
  // channels innermost in both tensors -> vectorise over channels
  const bool cl = p.in_channels > 1 && input.stride(1) == 1 && grad_output.stride(1) == 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "convext_depthwise_conv2d_backward_weight_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t taps = p.kernel_h * p.kernel_w;
    std::vector<acc_t> w(p.out_channels * taps, acc_t(0)), b(p.out_channels, acc_t(0));
    if (p.batch > 0) {
      const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
      const scalar_t* x = input.const_data_ptr<scalar_t>();
      acc_t* bptr = compute_bias ? b.data() : nullptr;
      if (cl) {
        CONVEXT_CPU_CALL(backward_weight_cl, g, go, x, w.data(), bptr);
      } else if (uses_channel_blocks(p, sizeof(acc_t))) {
        CONVEXT_CPU_CALL(backward_weight_nchw_cb, g, go, x, w.data(), bptr);
      } else {
        CONVEXT_CPU_CALL(backward_weight_planes, g, go, x, w.data(), bptr);
      }
    }
    scalar_t* gwp = gw.mutable_data_ptr<scalar_t>();
    for (int64_t i = 0; i < p.out_channels * taps; ++i) gwp[i] = static_cast<scalar_t>(w[i]);
    if (compute_bias) {
      scalar_t* gbp = gb.mutable_data_ptr<scalar_t>();
      for (int64_t i = 0; i < p.out_channels; ++i) gbp[i] = static_cast<scalar_t>(b[i]);
    }
  });
  return {gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(convext, CPU, m) {
  m.impl("depthwise_conv2d", &depthwise_conv2d_cpu);
  m.impl("depthwise_conv2d_backward_input", &depthwise_conv2d_backward_input_cpu);
  m.impl("depthwise_conv2d_backward_weight", &depthwise_conv2d_backward_weight_cpu);
}

}  // namespace cpu
}  // namespace convext
