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

#include <exception>
#include <string>

#include "cpu/cpu_isa.h"
#include "depthwise_conv2d_params.h"
#include "switches.h"

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

// ---------------------------------------------------------------------------
// The switches view: what the C++ side read (csrc/switches.h), for convext/_switches.py.
//   switches() -> {name: {"read": "once" | "per call", "raw": str | None, "value": ...}}
//     CONVEXT_DISABLE_FAST_PATHS value: tuple of the fast-path families switched off;
//     CONVEXT_CUDA_TC / CONVEXT_CUDA_NONFINITE value: bool (now);
//     CONVEXT_CPU_ISA value: the CPU kernel copy in use ("avx512", "avx2", "default"), plus
//     "hardware": the widest copy the CPU supports.
//   Asking performs the first read of a read-once switch (as the first kernel call would).
//   parse_disable_fast_paths(str) -> (disabled families, unknown tokens): the parser alone.
// ---------------------------------------------------------------------------
namespace {

namespace sw = convext::switches;

PyObject* str_or_none(bool set, const std::string& raw) {
  if (!set) Py_RETURN_NONE;
  return PyUnicode_FromString(raw.c_str());
}

PyObject* fast_path_tuple(unsigned disabled) {
  int n = 0;
  for (const auto& f : sw::kFastPathNames) n += (disabled & f.bits) != 0;
  PyObject* t = PyTuple_New(n);
  if (t == nullptr) return nullptr;
  int i = 0;
  for (const auto& f : sw::kFastPathNames) {
    if (disabled & f.bits) PyTuple_SetItem(t, i++, PyUnicode_FromString(f.token));
  }
  return t;
}

// d[key] = value, stealing the reference to value; false on error.
bool set_item(PyObject* d, const char* key, PyObject* value) {
  if (value == nullptr) return false;
  const int rc = PyDict_SetItemString(d, key, value);
  Py_DECREF(value);
  return rc == 0;
}

PyObject* entry(const char* read, PyObject* raw, PyObject* value) {
  PyObject* d = PyDict_New();
  if (d == nullptr || !set_item(d, "read", PyUnicode_FromString(read)) || !set_item(d, "raw", raw) ||
      !set_item(d, "value", value)) {
    Py_XDECREF(d);
    return nullptr;
  }
  return d;
}

PyObject* flag_entry(const char* name, bool value) {
  const char* e = sw::current_value(name);
  return entry("per call", e ? PyUnicode_FromString(e) : (Py_INCREF(Py_None), Py_None), PyBool_FromLong(value));
}

PyObject* switches_view(PyObject*, PyObject*) {
  PyObject* d = PyDict_New();
  if (d == nullptr) return nullptr;
  try {
    const unsigned disabled = sw::disabled_fast_paths();
    const auto& fp = sw::disable_fast_paths_read();
    const int isa = convext::cpu::cpu_isa_level();
    const auto& ir = sw::cpu_isa_read();
    PyObject* isa_entry = entry("once", str_or_none(ir.set, ir.raw), PyUnicode_FromString(convext::cpu::cpu_isa_name(isa)));
    const bool ok =
        set_item(d, sw::kDisableFastPathsEnv, entry("once", str_or_none(fp.set, fp.raw), fast_path_tuple(disabled))) &&
        set_item(d, sw::kCudaTcEnv, flag_entry(sw::kCudaTcEnv, sw::cuda_tc())) &&
        set_item(d, sw::kCudaNonfiniteEnv, flag_entry(sw::kCudaNonfiniteEnv, sw::cuda_nonfinite())) &&
        isa_entry != nullptr &&
        set_item(isa_entry, "hardware",
                 PyUnicode_FromString(convext::cpu::cpu_isa_name(convext::cpu::cpu_isa_hardware_level()))) &&
        set_item(d, sw::kCpuIsaEnv, isa_entry);
    if (!ok) {
      Py_DECREF(d);
      return nullptr;
    }
  } catch (const std::exception& e) {
    Py_DECREF(d);
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
  return d;
}

PyObject* switch_names(PyObject*, PyObject*) {
  PyObject* d = PyDict_New();
  if (d == nullptr) return nullptr;
  for (const auto& s : sw::kSwitches) {
    if (!set_item(d, s.name, PyUnicode_FromString(s.read))) {
      Py_DECREF(d);
      return nullptr;
    }
  }
  return d;
}

PyObject* parse_disable_fast_paths(PyObject*, PyObject* args) {
  const char* value = nullptr;
  if (!PyArg_ParseTuple(args, "z", &value)) return nullptr;
  const auto r = sw::parse_disable_fast_paths(value);
  PyObject* unknown = PyList_New(0);
  if (unknown == nullptr) return nullptr;
  std::string rest = r.unknown;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    PyObject* tok = PyUnicode_FromString(rest.substr(0, comma).c_str());
    if (tok == nullptr || PyList_Append(unknown, tok) != 0) {
      Py_XDECREF(tok);
      Py_DECREF(unknown);
      return nullptr;
    }
    Py_DECREF(tok);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
  }
  PyObject* disabled = fast_path_tuple(r.disabled);
  if (disabled == nullptr) {
    Py_DECREF(unknown);
    return nullptr;
  }
  PyObject* out = Py_BuildValue("(NN)", disabled, unknown);
  return out;
}

// cpu_channel_blocks(out_channels, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, dilation_h,
// dilation_w, multiplier, acc_bytes) -> bool: the CPU backend's NCHW kernel choice for that geometry.
PyObject* cpu_channel_blocks(PyObject*, PyObject* args) {
  convext::DepthwiseConv2dParams p;
  long long v[11];
  if (!PyArg_ParseTuple(args, "LLLLLLLLLLL", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9],
                        &v[10]))
    return nullptr;
  p.out_channels = v[0];
  p.out_h = v[1];
  p.out_w = v[2];
  p.kernel_h = v[3];
  p.kernel_w = v[4];
  p.stride_h = v[5];
  p.stride_w = v[6];
  p.dilation_h = v[7];
  p.dilation_w = v[8];
  p.multiplier = v[9];
  try {
    return PyBool_FromLong(convext::cpu::uses_channel_blocks(p, v[10]));
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

PyMethodDef convext_methods[] = {
    {"switches", switches_view, METH_NOARGS,
     "What the C++ side read from its run-time switches: {name: {'read', 'raw', 'value'}} (csrc/switches.h)."},
    {"switch_names", switch_names, METH_NOARGS, "{name: read rule} of every switch csrc/switches.h reads."},
    {"parse_disable_fast_paths", parse_disable_fast_paths, METH_VARARGS,
     "parse_disable_fast_paths(value or None) -> (families switched off, unknown tokens): the parser alone."},
    {"cpu_channel_blocks", cpu_channel_blocks, METH_VARARGS,
     "cpu_channel_blocks(out_channels, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, dilation_h, "
     "dilation_w, multiplier, acc_bytes) -> whether the CPU backend runs its channel-blocked NCHW kernels."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

// `import convext._C` loads this library, which runs the registrations above.
static PyModuleDef convext_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, convext_methods};

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&convext_module);
}
