// CPU kernels of convext::spatial_separable_conv2d{,_backward}: a (kH x 1) depthwise conv
// followed by a (1 x kW) depthwise conv, fused (the intermediate is one row buffer per task,
// never a tensor). Loops in spatial_separable_conv2d_kernel.h, compiled for the baseline ISA
// and for AVX2+FMA, chosen at run time. Any strides (NCHW, channels_last, sliced views) are
// read in place; the result (and grad_input) has input.suggest_memory_format(). float32 and
// float64 natively, float16 / bfloat16 accumulate in float32 (the intermediate too) and round
// once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu/cpu_isa.h"
#include "cpu/tap_range.h"
#include "depthwise_conv2d.h"

namespace convext {
namespace cpu {
namespace {

struct SSGeometry {
  DepthwiseConv2dParams p;          // kernel (kH, kW) = the two 1-D kernels
  std::vector<TapRange> h_ranges;  // per horizontal tap b: output columns reading a real column
};

SSGeometry make_ss_geometry(const DepthwiseConv2dParams& p) {
  SSGeometry g;
  g.p = p;
  g.h_ranges.resize(p.kernel_w);
  for (int64_t b = 0; b < p.kernel_w; ++b) {
    g.h_ranges[b] = tap_range(p.out_w, p.in_w, p.stride_w, b * p.dilation_w - p.pad_left);
  }
  return g;
}

}  // namespace

namespace ss_base {
#include "spatial_separable_conv2d_kernel.h"
}  // namespace ss_base

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CONVEXT_SS_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace ss_avx2 {
#include "spatial_separable_conv2d_kernel.h"
}  // namespace ss_avx2
#pragma GCC pop_options
#endif

namespace {

// AVX2+FMA copy when cpu_isa_level() (the CPU's widest, capped by CONVEXT_CPU_ISA) allows it.
bool ss_use_avx2() {
#ifdef CONVEXT_SS_HAVE_AVX2
  return cpu_isa_level() >= 1;
#else
  return false;
#endif
}

#ifdef CONVEXT_SS_HAVE_AVX2
#define CONVEXT_SS_CALL(fn, ...)       \
  do {                                 \
    if (ss_use_avx2()) {               \
      ss_avx2::fn(__VA_ARGS__);        \
    } else {                           \
      ss_base::fn(__VA_ARGS__);        \
    }                                  \
  } while (0)
#else
#define CONVEXT_SS_CALL(fn, ...) ss_base::fn(__VA_ARGS__)
#endif

void ss_check_tensor(const at::Tensor& t, const char* name, const at::Tensor& input) {
  TORCH_CHECK(t.device().is_cpu(), "convext (CPU kernel): ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), "convext: ", name, " (", t.scalar_type(),
              ") must have the input's dtype (", input.scalar_type(), ")");
}

// Checks the arguments (second line of defence behind convext/_geometry.py) and returns the
// geometry with the input strides filled in.
DepthwiseConv2dParams ss_params(const at::Tensor& input, const at::Tensor& wv, const at::Tensor& wh,
                                const std::optional<at::Tensor>& bv, const std::optional<at::Tensor>& bh,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(input.device().is_cpu(), "convext (CPU kernel): input must be a CPU tensor, got ", input.device());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), "convext: input must be a floating-point tensor, got ",
              input.scalar_type());
  TORCH_CHECK(input.dim() == 4, "convext: input must be 4-D (N, C, H, W), got ", input.dim(), "-D");
  ss_check_tensor(wv, "vertical_weight", input);
  ss_check_tensor(wh, "horizontal_weight", input);
  TORCH_CHECK(wv.dim() == 4 && wv.size(1) == 1 && wv.size(3) == 1 && wv.size(2) >= 1,
              "convext: vertical_weight must have shape (C*M, 1, kH, 1), got ", wv.sizes());
  TORCH_CHECK(wh.dim() == 4 && wh.size(0) == wv.size(0) && wh.size(1) == 1 && wh.size(2) == 1 && wh.size(3) >= 1,
              "convext: horizontal_weight must have shape (", wv.size(0), ", 1, 1, kW), got ", wh.sizes());
  const int64_t cout = wv.size(0);
  for (const auto* b : {&bv, &bh}) {
    if (b->has_value() && (*b)->defined()) {
      const char* name = b == &bv ? "vertical_bias" : "horizontal_bias";
      ss_check_tensor(**b, name, input);
      TORCH_CHECK((*b)->dim() == 1 && (*b)->size(0) == cout, "convext: ", name, " must have shape (", cout,
                  ",), got ", (*b)->sizes());
    }
  }
  TORCH_CHECK((input.size(2) > 0 && input.size(3) > 0) || input.size(0) == 0,
              "convext: input has an empty spatial size (", input.size(2), ", ", input.size(3), ")");
  auto p = make_depthwise_conv2d_params(input.sizes(), cout, {wv.size(2), wh.size(3)}, stride, padding, dilation);
  set_strides(p.in_strides, input);
  return p;
}

// Channels innermost (channels_last and the like): the channel-block kernels.
bool ss_channels_inner(const at::Tensor& input) { return input.size(1) > 1 && input.stride(1) == 1; }

template <typename acc_t>
std::vector<acc_t> ss_transpose(const std::vector<acc_t>& v, int64_t rows, int64_t cols) {
  std::vector<acc_t> t(v.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) t[k * rows + r] = v[r * cols + k];
  return t;
}

template <typename acc_t, typename scalar_t>
std::vector<acc_t> ss_load(const at::Tensor& t, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  std::vector<acc_t> v(rows * cols);
  const scalar_t* src = t.const_data_ptr<scalar_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) v[r * cols + k] = static_cast<acc_t>(src[r * row_stride + k * col_stride]);
  return v;
}

bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

at::Tensor spatial_separable_conv2d_cpu(const at::Tensor& input, const at::Tensor& wv, const at::Tensor& wh,
                                        const std::optional<at::Tensor>& bv, const std::optional<at::Tensor>& bh,
                                        at::IntArrayRef stride, at::IntArrayRef padding,
                                        at::IntArrayRef dilation) {
  auto p = ss_params(input, wv, wh, bv, bh, stride, padding, dilation);
  const auto fmt = output_memory_format(input);
  at::Tensor out = at::empty({p.batch, p.out_channels, p.out_h, p.out_w}, input.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  set_strides(p.out_strides, out);
  const SSGeometry g = make_ss_geometry(p);
  const int64_t C = p.out_channels, KH = p.kernel_h, KW = p.kernel_w;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "convext_spatial_separable_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto wvv = ss_load<acc_t, scalar_t>(wv, C, KH, wv.stride(0), wv.stride(2));
    const auto whv = ss_load<acc_t, scalar_t>(wh, C, KW, wh.stride(0), wh.stride(3));
    std::vector<acc_t> bvv, bhv;
    if (has(bv)) bvv = ss_load<acc_t, scalar_t>(*bv, C, 1, bv->stride(0), 0);
    if (has(bh)) bhv = ss_load<acc_t, scalar_t>(*bh, C, 1, bh->stride(0), 0);
    if (ss_channels_inner(input)) {
      const auto wvT = ss_transpose(wvv, C, KH), whT = ss_transpose(whv, C, KW);
      CONVEXT_SS_CALL(ss_forward_cl, g, input.const_data_ptr<scalar_t>(), wvT.data(),
                      has(bv) ? bvv.data() : nullptr, whT.data(), has(bh) ? bhv.data() : nullptr,
                      out.mutable_data_ptr<scalar_t>());
    } else {
      CONVEXT_SS_CALL(ss_forward, g, input.const_data_ptr<scalar_t>(), wvv.data(), has(bv) ? bvv.data() : nullptr,
                      whv.data(), has(bh) ? bhv.data() : nullptr, out.mutable_data_ptr<scalar_t>());
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> spatial_separable_conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& wv, const at::Tensor& wh,
    const std::optional<at::Tensor>& bv, const std::optional<at::Tensor>& bh, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, std::array<bool, 5> output_mask) {
  auto p = ss_params(input, wv, wh, bv, bh, stride, padding, dilation);
  ss_check_tensor(grad_output, "grad_output", input);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == p.batch && grad_output.size(1) == p.out_channels &&
                  grad_output.size(2) == p.out_h && grad_output.size(3) == p.out_w,
              "convext: grad_output has shape ", grad_output.sizes(), ", expected (", p.batch, ", ",
              p.out_channels, ", ", p.out_h, ", ", p.out_w, ")");
  set_strides(p.out_strides, grad_output);
  const bool want_in = output_mask[0], want_wv = output_mask[1], want_wh = output_mask[2];
  const bool want_bv = output_mask[3] && has(bv), want_bh = output_mask[4] && has(bh);
  const int64_t C = p.out_channels, KH = p.kernel_h, KW = p.kernel_w, N = p.batch, S = KH + KW + 2;
  const auto opts = input.options().memory_format(at::MemoryFormat::Contiguous);
  auto empty = [&] { return at::empty({0}, opts); };
  at::Tensor g_in = want_in ? at::empty(input.sizes(), input.options().memory_format(output_memory_format(input)))
                            : empty();
  at::Tensor g_wv = want_wv ? at::empty(wv.sizes(), opts) : empty();
  at::Tensor g_wh = want_wh ? at::empty(wh.sizes(), opts) : empty();
  at::Tensor g_bv = want_bv ? at::empty({C}, opts) : empty();
  at::Tensor g_bh = want_bh ? at::empty({C}, opts) : empty();
  const bool any_param = want_wv || want_wh || want_bv || want_bh;
  if (!want_in && !any_param) return {g_in, g_wv, g_wh, g_bv, g_bh};
  const SSGeometry g = make_ss_geometry(p);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "convext_spatial_separable_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto wvv = ss_load<acc_t, scalar_t>(wv, C, KH, wv.stride(0), wv.stride(2));
    const auto whv = ss_load<acc_t, scalar_t>(wh, C, KW, wh.stride(0), wh.stride(3));
    std::vector<acc_t> bvv;
    if (has(bv)) bvv = ss_load<acc_t, scalar_t>(*bv, C, 1, bv->stride(0), 0);
    std::vector<acc_t> part(any_param ? N * C * S : 0, acc_t(0));
    std::array<int64_t, 4> gxs{};
    scalar_t* gx = nullptr;
    if (want_in && g_in.numel() > 0) {
      set_strides(gxs, g_in);
      gx = g_in.mutable_data_ptr<scalar_t>();
    }
    if (N > 0 && (gx || any_param) && ss_channels_inner(input)) {
      const auto wvT = ss_transpose(wvv, C, KH), whT = ss_transpose(whv, C, KW);
      CONVEXT_SS_CALL(ss_backward_cl, g, grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
                      wvT.data(), has(bv) ? bvv.data() : nullptr, whT.data(), gx, gxs,
                      any_param ? part.data() : nullptr, want_wh, want_wv || want_bv);
    } else if (N > 0 && (gx || any_param)) {
      CONVEXT_SS_CALL(ss_backward, g, grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
                      wvv.data(), has(bv) ? bvv.data() : nullptr, whv.data(), gx, gxs,
                      any_param ? part.data() : nullptr, want_wh, want_wv || want_bv);
    }
    // Fixed-order reduction over the images (deterministic).
    auto reduce = [&](at::Tensor& dst, int64_t first, int64_t count) {
      scalar_t* d = dst.mutable_data_ptr<scalar_t>();
      for (int64_t oc = 0; oc < C; ++oc) {
        for (int64_t k = 0; k < count; ++k) {
          acc_t s = 0;
          for (int64_t n = 0; n < N; ++n) s += part[(n * C + oc) * S + first + k];
          d[oc * count + k] = static_cast<scalar_t>(s);
        }
      }
    };
    if (want_wv) reduce(g_wv, 0, KH);
    if (want_wh) reduce(g_wh, KH, KW);
    if (want_bv) reduce(g_bv, KH + KW, 1);
    if (want_bh) reduce(g_bh, KH + KW + 1, 1);
  });
  return {g_in, g_wv, g_wh, g_bv, g_bh};
}

}  // namespace

TORCH_LIBRARY_IMPL(convext, CPU, m) {
  m.impl("spatial_separable_conv2d", &spatial_separable_conv2d_cpu);
  m.impl("spatial_separable_conv2d_backward", &spatial_separable_conv2d_backward_cpu);
}

}  // namespace cpu
}  // namespace convext
