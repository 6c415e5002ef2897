// Shared device helpers for convext's CUDA depthwise kernels (forward, grad-input,
// grad-weight). Keep this header stable: several .cu files include it.
//
//   convext::cuda::AccType<T>          float for float/half/bf16, double for double
//   convext::cuda::to_acc(x)           T -> AccType<T>
//   convext::cuda::from_acc<T>(a)      AccType<T> -> T (one rounding)
//   convext::cuda::load_vec<T, V>      V contiguous elements as one vector load (caller checks alignment)
//   convext::cuda::store_vec<T, V>
//   convext::cuda::is_aligned(ptr, bytes)
//   convext::cuda::ceil_div
//   CONVEXT_DISPATCH_FLOATING(scalar_type, name, ...)   scalar_t = float/double/half/bf16
//   CONVEXT_KERNEL_SIZE_SWITCH(kh, kw, KH, KW, fast_body, generic_body)
//   CONVEXT_LAUNCH_CHECK()             C10_CUDA_KERNEL_LAUNCH_CHECK()
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace convext {
namespace cuda {

// ---------------------------------------------------------------------------
// Accumulation types and conversions. The scalar_t given by the dispatch macro
// is float, double, c10::Half or c10::BFloat16; all are bit-compatible with the
// CUDA types, and conversions go through the CUDA intrinsics (no host-only code).
// ---------------------------------------------------------------------------
template <typename T> struct AccTypeOf { using type = float; };
template <> struct AccTypeOf<double> { using type = double; };
template <typename T> using AccType = typename AccTypeOf<T>::type;

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(c10::Half x) {
  return __half2float(__ushort_as_half(x.x));
}
__device__ __forceinline__ float to_acc(c10::BFloat16 x) {
  return __bfloat162float(__ushort_as_bfloat16(x.x));
}

template <typename T> __device__ __forceinline__ T from_acc(AccType<T> a);
template <> __device__ __forceinline__ float from_acc<float>(float a) { return a; }
template <> __device__ __forceinline__ double from_acc<double>(double a) { return a; }
template <> __device__ __forceinline__ c10::Half from_acc<c10::Half>(float a) {
  c10::Half h;
  h.x = __half_as_ushort(__float2half_rn(a));
  return h;
}
template <> __device__ __forceinline__ c10::BFloat16 from_acc<c10::BFloat16>(float a) {
  c10::BFloat16 h;
  h.x = __bfloat16_as_ushort(__float2bfloat16_rn(a));
  return h;
}

// Read-only global load (ld.global.nc) of one element.
template <typename T>
__device__ __forceinline__ T ldg(const T* p) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    return __ldg(p);
  } else {
    T r;
    r.x = __ldg(reinterpret_cast<const unsigned short*>(p));
    return r;
  }
}

// ---------------------------------------------------------------------------
// Vector loads/stores: V elements of T packed in one access of sizeof(T)*V bytes
// (must be 2, 4, 8 or 16 bytes, and the pointer aligned to it: check with is_aligned).
// ---------------------------------------------------------------------------
template <int BYTES> struct VecStorage;
template <> struct VecStorage<2> { using type = unsigned short; };
template <> struct VecStorage<4> { using type = unsigned int; };
template <> struct VecStorage<8> { using type = uint2; };
template <> struct VecStorage<16> { using type = uint4; };

template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Vec<T, V> load_vec(const T* p) {
  using S = typename VecStorage<sizeof(T) * V>::type;
  S s = __ldg(reinterpret_cast<const S*>(p));
  Vec<T, V> r;
  static_assert(sizeof(S) == sizeof(Vec<T, V>), "vector size mismatch");
  memcpy(&r, &s, sizeof(S));
  return r;
}

template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, V>& r) {
  using S = typename VecStorage<sizeof(T) * V>::type;
  S s;
  memcpy(&s, &r, sizeof(S));
  *reinterpret_cast<S*>(p) = s;
}

// Number of elements in one 16-byte vector of T.
template <typename T> constexpr int vec16() { return 16 / static_cast<int>(sizeof(T)); }

__host__ __device__ __forceinline__ bool is_aligned(const void* p, int bytes) {
  return (reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes)) == 0;
}

template <typename I>
__host__ __device__ __forceinline__ constexpr I ceil_div(I a, I b) { return (a + b - 1) / b; }

// Floor division / modulo for possibly negative numerators (positive divisor).
__host__ __device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

}  // namespace cuda
}  // namespace convext

// ---------------------------------------------------------------------------
// Dtype dispatch: float32, float64, float16, bfloat16; defines scalar_t.
// ---------------------------------------------------------------------------
#define CONVEXT_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, TYPE, NAME, __VA_ARGS__)

// Kernel-size switch: runs FAST(KH, KW) as a compile-time instantiation for the
// common square sizes 3, 5, 7 (KH, KW become constexpr int inside the lambda-like
// body), else GENERIC. Usage:
//   CONVEXT_KERNEL_SIZE_SWITCH(kh, kw, [&](auto KH_, auto KW_) { constexpr int KH = KH_; ... },
//                              [&]() { ... });
#define CONVEXT_KERNEL_SIZE_SWITCH(KH_RT, KW_RT, FAST, GENERIC)                                   \
  do {                                                                                            \
    const int64_t _cx_kh = (KH_RT), _cx_kw = (KW_RT);                                             \
    if (_cx_kh == 3 && _cx_kw == 3) {                                                             \
      (FAST)(std::integral_constant<int, 3>{}, std::integral_constant<int, 3>{});                 \
    } else if (_cx_kh == 5 && _cx_kw == 5) {                                                      \
      (FAST)(std::integral_constant<int, 5>{}, std::integral_constant<int, 5>{});                 \
    } else if (_cx_kh == 7 && _cx_kw == 7) {                                                      \
      (FAST)(std::integral_constant<int, 7>{}, std::integral_constant<int, 7>{});                 \
    } else {                                                                                      \
      (GENERIC)();                                                                                \
    }                                                                                             \
  } while (0)

#define CONVEXT_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()

// ---------------------------------------------------------------------------
// The depthwise "correlation engine" of depthwise_conv2d_forward.cu (used by the forward
// and grad-input ops; see that file for the semantics of each field).
// ---------------------------------------------------------------------------
namespace convext {
namespace cuda {

struct CorrArgs {
  const void* src = nullptr;
  void* dst = nullptr;
  const void* weight = nullptr;  // contiguous (Cw, 1, KH, KW), dtype of src
  const void* bias = nullptr;    // (C_dst,) or null
  int64_t N = 0, C_src = 0, C_dst = 0, H_src = 0, W_src = 0, H_dst = 0, W_dst = 0;
  int64_t KH = 1, KW = 1, sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0;
  int64_t M = 1;
  int reduce_m = 0;  // grad-input correlation: sum over multiplier
  int flip = 0;      // use the spatially flipped weight
  int gather = 0;    // generic kernel only: grad-input gather (any stride), src = grad_output
  int64_t ss[4] = {0, 0, 0, 0};
  int64_t ds[4] = {0, 0, 0, 0};
};

// src/dst: 4-D CUDA tensors of one dtype (any strides); weight: contiguous (Cw, 1, KH, KW) of
// that dtype; bias: contiguous (C_dst,) or null. Fills pointers, sizes and strides of `a`
// from the tensors; the caller sets KH, KW, sh, sw, dh, dw, pt, pl, M, reduce_m, flip, gather.
// Launches on the current stream of src's device; no-op when dst is empty.
void run_depthwise_engine(const at::Tensor& src, const at::Tensor& weight, const at::Tensor* bias,
                          const at::Tensor& dst, CorrArgs a);

// Large-kernel stride-1 correlation on tensor cores (depthwise_conv2d_tc.cu): true when it ran.
// fp16 / bf16 only, opt-in with CONVEXT_CUDA_TC=1 until validated on a GPU.
template <typename T>
bool try_tensor_core(const at::Tensor& src, const at::Tensor& dst, const CorrArgs& a, cudaStream_t stream);

}  // namespace cuda
struct DepthwiseConv2dParams;
namespace cuda {
// grad-weight (+ grad-bias) counterpart, same conditions (depthwise_conv2d_tc.cu).
template <typename T>
bool try_tensor_core_weight(const at::Tensor& input, const at::Tensor& grad_output, const DepthwiseConv2dParams& p,
                            at::Tensor& gw, at::Tensor& gb, bool compute_bias, cudaStream_t stream);

}  // namespace cuda
}  // namespace convext
