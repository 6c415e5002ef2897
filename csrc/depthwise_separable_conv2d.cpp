// convext::depthwise_separable_conv2d{,_backward} as composites
// (CompositeExplicitAutograd: the same code serves CPU and CUDA tensors).
//
//   z = dwconv(x) + dw_b;  a = act1(z);  pre = pw_w[:, :, 0, 0] @ a + pw_b;  y = act2(pre)
//
// The depthwise part goes through the dispatcher to convext::depthwise_conv2d and its two
// backward ops (CPU or CUDA kernel by device); the pointwise part is a 1x1 convolution,
// i.e. a GEMM, left to ATen (oneDNN / cuDNN). The backward recomputes z, a and pre
// instead of having them saved.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <array>
#include <string>
#include <tuple>

namespace convext {
namespace {

enum class Act { None, Relu, Relu6, Silu, Gelu, Hardswish };

Act parse_activation(c10::string_view name, const char* arg) {
  if (name == "none") return Act::None;
  if (name == "relu") return Act::Relu;
  if (name == "relu6") return Act::Relu6;
  if (name == "silu") return Act::Silu;
  if (name == "gelu") return Act::Gelu;
  if (name == "hardswish") return Act::Hardswish;
  TORCH_CHECK(false, "convext: ", arg, " must be one of \"none\", \"relu\", \"relu6\", \"silu\", "
              "\"gelu\", \"hardswish\", got \"", std::string(name), "\"");
}

at::Tensor apply_act(const at::Tensor& t, Act act) {
  switch (act) {
    case Act::None: return t;
    case Act::Relu: return at::relu(t);
    case Act::Relu6: return at::hardtanh(t, 0.0, 6.0);
    case Act::Silu: return at::silu(t);
    case Act::Gelu: return at::gelu(t);  // approximate="none": exact erf form
    case Act::Hardswish: return at::hardswish(t);  // t * relu6(t + 3) / 6
  }
  return t;
}

// grad * act'(t), with torch's own derivative conventions (relu'(0) = 0, relu6' = 0 at 0 and 6,
// hardswish' = 0 for t <= -3, t/3 + 1/2 on (-3, 3), 1 for t >= 3 in current torch; some older
// releases took t/3 + 1/2 on the closed [-3, 3]).
at::Tensor act_backward(const at::Tensor& grad, const at::Tensor& t, Act act) {
  switch (act) {
    case Act::None: return grad;
    case Act::Relu: return at::threshold_backward(grad, t, 0.0);
    // hardtanh_backward / hardswish_backward element by element (their CUDA kernels and scalar
    // CPU loop): a NaN t passes the gradient. ATen's vectorised CPU loops give 0 (relu6) and NaN
    // (hardswish) there instead, so on CPU the formulas are spelled out (selects, not products).
    case Act::Relu6:
      if (t.is_cpu()) return at::where(t.le(0.0).logical_or_(t.ge(6.0)), at::zeros_like(grad), grad);
      return at::hardtanh_backward(grad, t, 0.0, 6.0);
    case Act::Silu: return at::silu_backward(grad, t);
    case Act::Gelu: return at::gelu_backward(grad, t);
    case Act::Hardswish:
      if (t.is_cpu()) {  // (in float for float16 / bfloat16, rounded once, as ATen's kernel)
        const bool low = t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
        const at::Tensor tf = low ? t.to(at::kFloat) : t, gf = low ? grad.to(at::kFloat) : grad;
        return at::where(tf.le(-3.0), at::zeros_like(gf), at::where(tf.lt(3.0), gf * (tf / 3.0 + 0.5), gf))
            .to(grad.scalar_type());
      }
      return at::hardswish_backward(grad, t);
  }
  return grad;
}

at::Tensor call_depthwise(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("convext::depthwise_conv2d", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&, at::IntArrayRef,
                                         at::IntArrayRef, at::IntArrayRef)>();
  return op.call(input, weight, bias, stride, padding, dilation);
}

at::Tensor call_depthwise_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                         at::IntArrayRef input_size, at::IntArrayRef stride,
                                         at::IntArrayRef padding, at::IntArrayRef dilation) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("convext::depthwise_conv2d_backward_input", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                                         at::IntArrayRef, at::IntArrayRef, at::IntArrayRef)>();
  return op.call(grad_output, weight, input_size, stride, padding, dilation);
}

std::tuple<at::Tensor, at::Tensor> call_depthwise_backward_weight(
    const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef kernel_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool compute_bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("convext::depthwise_conv2d_backward_weight", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                           at::IntArrayRef, at::IntArrayRef, bool)>();
  return op.call(grad_output, input, kernel_size, stride, padding, dilation, compute_bias);
}

bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

void check_separable_args(const at::Tensor& input, const at::Tensor& dw_w, const at::Tensor& pw_w,
                          const std::optional<at::Tensor>& dw_b, const std::optional<at::Tensor>& pw_b) {
  TORCH_CHECK(input.dim() == 4, "convext: input must be 4-D (N, C, H, W), got ", input.dim(), "-D");
  TORCH_CHECK(dw_w.dim() == 4 && dw_w.size(1) == 1,
              "convext: depthwise_weight must have shape (C*M, 1, kH, kW), got ", dw_w.sizes());
  TORCH_CHECK(pw_w.dim() == 4 && pw_w.size(1) == dw_w.size(0) && pw_w.size(2) == 1 && pw_w.size(3) == 1,
              "convext: pointwise_weight must have shape (C_out, ", dw_w.size(0), ", 1, 1), got ",
              pw_w.sizes());
  TORCH_CHECK(pw_w.scalar_type() == input.scalar_type() && pw_w.device() == input.device(),
              "convext: pointwise_weight must have the input's dtype and device (", input.scalar_type(),
              ", ", input.device(), "), got ", pw_w.scalar_type(), ", ", pw_w.device());
  if (has(dw_b)) {
    TORCH_CHECK(dw_b->dim() == 1 && dw_b->size(0) == dw_w.size(0),
                "convext: depthwise_bias must have shape (", dw_w.size(0), ",), got ", dw_b->sizes());
  }
  if (has(pw_b)) {
    TORCH_CHECK(pw_b->dim() == 1 && pw_b->size(0) == pw_w.size(0),
                "convext: pointwise_bias must have shape (", pw_w.size(0), ",), got ", pw_b->sizes());
    TORCH_CHECK(pw_b->scalar_type() == input.scalar_type() && pw_b->device() == input.device(),
                "convext: pointwise_bias must have the input's dtype and device");
  }
}

at::Tensor depthwise_separable_conv2d(const at::Tensor& input, const at::Tensor& dw_w,
                                      const at::Tensor& pw_w, const std::optional<at::Tensor>& dw_b,
                                      const std::optional<at::Tensor>& pw_b, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      c10::string_view dw_act_name, c10::string_view pw_act_name) {
  const Act dw_act = parse_activation(dw_act_name, "depthwise_activation");
  const Act pw_act = parse_activation(pw_act_name, "pointwise_activation");
  check_separable_args(input, dw_w, pw_w, dw_b, pw_b);
  const auto fmt = input.suggest_memory_format();
  at::Tensor a = apply_act(call_depthwise(input, dw_w, dw_b, stride, padding, dilation), dw_act);
  at::Tensor y = apply_act(at::conv2d(a, pw_w, pw_b), pw_act);
  return y.contiguous(fmt);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> depthwise_separable_conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& dw_w,
    const at::Tensor& pw_w, const std::optional<at::Tensor>& dw_b, const std::optional<at::Tensor>& pw_b,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    c10::string_view dw_act_name, c10::string_view pw_act_name, std::array<bool, 5> output_mask) {
  const Act dw_act = parse_activation(dw_act_name, "depthwise_activation");
  const Act pw_act = parse_activation(pw_act_name, "pointwise_activation");
  check_separable_args(input, dw_w, pw_w, dw_b, pw_b);
  TORCH_CHECK(grad_output.dim() == 4, "convext: grad_output must be 4-D, got ", grad_output.dim(), "-D");

  const bool want_input = output_mask[0];
  const bool want_dw_w = output_mask[1];
  const bool want_pw_w = output_mask[2];
  const bool want_dw_b = output_mask[3] && has(dw_b);
  const bool want_pw_b = output_mask[4] && has(pw_b);
  const bool want_dw_side = want_input || want_dw_w || want_dw_b;

  auto empty = [&](const at::Tensor& like) { return at::empty({0}, like.options()); };
  at::Tensor g_in = empty(input), g_dw_w = empty(dw_w), g_pw_w = empty(pw_w);
  at::Tensor g_dw_b = has(dw_b) ? empty(*dw_b) : empty(dw_w);
  at::Tensor g_pw_b = has(pw_b) ? empty(*pw_b) : empty(pw_w);
  if (!want_dw_side && !want_pw_w && !want_pw_b) {
    return {g_in, g_dw_w, g_pw_w, g_dw_b, g_pw_b};
  }

  // Recompute what the requested gradients need.
  const bool need_a = want_pw_w || pw_act != Act::None;
  const bool need_z = need_a || (want_dw_side && dw_act != Act::None);
  at::Tensor z, a;
  if (need_z) {
    z = call_depthwise(input, dw_w, dw_b, stride, padding, dilation);
    a = apply_act(z, dw_act);
  }
  at::Tensor grad_pre = grad_output;
  if (pw_act != Act::None) {
    const at::Tensor pre = at::conv2d(a, pw_w, pw_b);
    grad_pre = act_backward(grad_output, pre, pw_act);
  }

  // Pointwise 1x1 conv backward: grad_a = pw^T grad_pre, grad_pw = sum grad_pre (x) a, grad_pb.
  at::Tensor grad_a;
  if (want_dw_side || want_pw_w || want_pw_b) {
    const std::array<bool, 3> mask{want_dw_side, want_pw_w, want_pw_b};
    // `a` is only needed by the weight gradient; otherwise any tensor of the right shape.
    const at::Tensor a_or_shape = a.defined() ? a
        : at::empty({grad_pre.size(0), pw_w.size(1), grad_pre.size(2), grad_pre.size(3)},
                    grad_pre.options().memory_format(grad_pre.suggest_memory_format()));
    auto res = at::convolution_backward(grad_pre, a_or_shape, pw_w,
                                        at::OptionalIntArrayRef(at::IntArrayRef{pw_w.size(0)}),
                                        /*stride=*/{1, 1}, /*padding=*/{0, 0}, /*dilation=*/{1, 1},
                                        /*transposed=*/false, /*output_padding=*/{0, 0},
                                        /*groups=*/1, mask);
    grad_a = std::get<0>(res);
    if (want_pw_w) g_pw_w = std::get<1>(res);
    if (want_pw_b) g_pw_b = std::get<2>(res);
  }

  if (want_dw_side) {
    const at::Tensor grad_z = dw_act == Act::None ? grad_a : act_backward(grad_a, z, dw_act);
    if (want_input) {
      g_in = call_depthwise_backward_input(grad_z, dw_w, input.sizes(), stride, padding, dilation);
    }
    if (want_dw_w) {
      auto wb = call_depthwise_backward_weight(grad_z, input, {dw_w.size(2), dw_w.size(3)}, stride,
                                               padding, dilation, want_dw_b);
      g_dw_w = std::get<0>(wb);
      if (want_dw_b) g_dw_b = std::get<1>(wb);
    } else if (want_dw_b) {
      g_dw_b = grad_z.sum({0, 2, 3});
    }
  }
  return {g_in, g_dw_w, g_pw_w, g_dw_b, g_pw_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(convext, CompositeExplicitAutograd, m) {
  m.impl("depthwise_separable_conv2d", &depthwise_separable_conv2d);
  m.impl("depthwise_separable_conv2d_backward", &depthwise_separable_conv2d_backward);
}

}  // namespace convext
