// Every op schema of convext, once. Device files (cpu/, cuda/) only register
// implementations; fake kernels and autograd are registered from Python
// (convext/_ops.py). Triton kernels live in their own `convext::triton_*` ops
// with the same signatures (convext/triton/).
//
// Conventions shared by all ops:
//   input / grad_output are 4-D (N, C, H, W) in any strides; the Python wrapper
//   unsqueezes unbatched inputs. padding is explicit and possibly asymmetric:
//   [top, bottom, left, right] (how "same" with an even effective kernel is
//   expressed). Outputs follow input.suggest_memory_format().
//   Activation names: "none", "relu", "relu6", "silu", "gelu" (erf form), "hardswish"
//   (x * relu6(x + 3) / 6, as F.hardswish).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(convext, m) {
  m.def(
      "depthwise_conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, "
      "int[4] padding, int[2] dilation) -> Tensor");
  m.def(
      "depthwise_conv2d_backward_input(Tensor grad_output, Tensor weight, int[4] input_size, "
      "int[2] stride, int[4] padding, int[2] dilation) -> Tensor");
  // grad_bias is a (0,)-shaped tensor when compute_bias is false.
  m.def(
      "depthwise_conv2d_backward_weight(Tensor grad_output, Tensor input, int[2] kernel_size, "
      "int[2] stride, int[4] padding, int[2] dilation, bool compute_bias) "
      "-> (Tensor grad_weight, Tensor grad_bias)");
  m.def(
      "depthwise_separable_conv2d(Tensor input, Tensor depthwise_weight, Tensor pointwise_weight, "
      "Tensor? depthwise_bias, Tensor? pointwise_bias, int[2] stride, int[4] padding, "
      "int[2] dilation, str depthwise_activation, str pointwise_activation) -> Tensor");
  // output_mask: (input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias).
  // A masked-out gradient, or the gradient of an absent bias, is a (0,)-shaped tensor.
  m.def(
      "depthwise_separable_conv2d_backward(Tensor grad_output, Tensor input, "
      "Tensor depthwise_weight, Tensor pointwise_weight, Tensor? depthwise_bias, "
      "Tensor? pointwise_bias, int[2] stride, int[4] padding, int[2] dilation, "
      "str depthwise_activation, str pointwise_activation, bool[5] output_mask) "
      "-> (Tensor grad_input, Tensor grad_depthwise_weight, Tensor grad_pointwise_weight, "
      "Tensor grad_depthwise_bias, Tensor grad_pointwise_bias)");
  // Spatial separable: a (kH x 1) depthwise conv (stride (sh, 1), padding (top, bottom),
  // dilation (dh, 1)) then a (1 x kW) depthwise conv (stride (1, sw), padding (left, right),
  // dilation (1, dw)); vertical_weight (C*M, 1, kH, 1), horizontal_weight (C*M, 1, 1, kW).
  // The intermediate is never written to memory (csrc/cpu/spatial_separable_conv2d.cpp).
  m.def(
      "spatial_separable_conv2d(Tensor input, Tensor vertical_weight, Tensor horizontal_weight, "
      "Tensor? vertical_bias, Tensor? horizontal_bias, int[2] stride, int[4] padding, "
      "int[2] dilation) -> Tensor");
  // output_mask: (input, vertical_weight, horizontal_weight, vertical_bias, horizontal_bias);
  // masked-out gradients and those of absent biases are (0,)-shaped tensors.
  m.def(
      "spatial_separable_conv2d_backward(Tensor grad_output, Tensor input, Tensor vertical_weight, "
      "Tensor horizontal_weight, Tensor? vertical_bias, Tensor? horizontal_bias, int[2] stride, "
      "int[4] padding, int[2] dilation, bool[5] output_mask) -> (Tensor grad_input, "
      "Tensor grad_vertical_weight, Tensor grad_horizontal_weight, Tensor grad_vertical_bias, "
      "Tensor grad_horizontal_bias)");
  // Streaming causal depthwise conv1d, one decoding step (csrc/depthwise_conv1d_update.h):
  // x (N, C, T), conv_state (N, C, dilation*(k-1)) the past inputs (oldest first), updated in
  // place to the last dilation*(k-1) inputs; weight (C*M, 1, k). Returns (N, C*M, T).
  m.def(
      "depthwise_conv1d_update(Tensor x, Tensor(a!) conv_state, Tensor weight, Tensor? bias, "
      "int dilation) -> Tensor");
}

// `import convext._C` loads this library, which runs the registrations above.
static PyModuleDef convext_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&convext_module);
}
