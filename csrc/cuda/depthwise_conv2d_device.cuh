// Device helpers of convext's CUDA kernels and the engine's argument struct, with no ATen
// include (the kernel-family translation units include only this, launch_utils.cuh,
// static_switch.cuh and ../depthwise_conv2d_params.h, so they compile fast).
// depthwise_conv2d_common.cuh adds the ATen-facing parts.
//
//   convext::cuda::AccType<T>          float for float/half/bf16, double for double
//   convext::cuda::to_acc(x)           T -> AccType<T>
//   convext::cuda::from_acc<T>(a)      AccType<T> -> T (one rounding)
//   convext::cuda::load_vec<T, V>      V contiguous elements as one vector load (caller checks alignment)
//   convext::cuda::store_vec<T, V>
//   convext::cuda::is_aligned(ptr, bytes)
//   convext::cuda::ceil_div
//   convext::cuda::CorrArgs            arguments of the forward / grad-input correlation engine
//   CONVEXT_LAUNCH_CHECK()             C10_CUDA_KERNEL_LAUNCH_CHECK()
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
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

}  // namespace cuda
}  // namespace convext

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

}  // namespace cuda
}  // namespace convext
