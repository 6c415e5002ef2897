// Host-side helpers and limits shared by convext's CUDA launchers (forward engine, grad-weight,
// tensor-core path). Device helpers (AccType, vector loads, CorrArgs) are in
// depthwise_conv2d_device.cuh; this header is for the code that plans and launches kernels. It
// includes no ATen header, so the kernel-family translation units compile fast.
//
//   kMaxThreads, kMaxSmem, kDefaultSmem, kI32Max   limits every launcher plans against
//   max_offset / engine_fits_i32                    int32 index-range checks of strided 4-D views
//   fill_i32_geometry(cfg, a)                       the int32 geometry fields shared by the configs
//   set_smem_limit(kernel, bytes)                   opt in to > 48 KiB of dynamic shared memory
//   sm_count()                                      SMs of the current device (cached per device)
//   fast_path_enabled(FastPath)                     CONVEXT_DISABLE_FAST_PATHS, read once per process
//   cuda_tc_enabled(), cuda_nonfinite_enabled()     CONVEXT_CUDA_TC / _NONFINITE, read on every call
//                                                   (all three read in csrc/switches.h)
#pragma once

#include "cuda/depthwise_conv2d_device.cuh"
#include "switches.h"

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace convext {
namespace cuda {

constexpr int kMaxThreads = 256;             // threads per block of every tiled kernel (launch bounds)
constexpr int kMaxSmem = 96 * 1024;          // dynamic shared memory a forward launcher may ask for
constexpr int kDefaultSmem = 48 * 1024;      // shared memory available without the opt-in attribute
constexpr int64_t kI32Max = std::numeric_limits<int>::max();

// Largest element offset reachable through sizes/strides (strides are >= 0 in torch).
inline int64_t max_offset(const int64_t* sizes, const int64_t* strides) {
  int64_t m = 0;
  for (int i = 0; i < 4; ++i) m += (sizes[i] - 1) * strides[i];
  return m;
}

// Both views of the correlation engine (src and dst) fit 32-bit index math.
inline bool engine_fits_i32(const CorrArgs& a, int64_t offset_limit) {
  const int64_t ssz[4] = {a.N, a.C_src, a.H_src, a.W_src};
  const int64_t dsz[4] = {a.N, a.C_dst, a.H_dst, a.W_dst};
  // both loops run first (as the original per-kernel checks), then both offsets
  for (int i = 0; i < 4; ++i) {
    if (ssz[i] < 1 || dsz[i] < 1 || ssz[i] >= kI32Max || dsz[i] >= kI32Max) return false;
    if (a.ss[i] < 0 || a.ds[i] < 0 || a.ss[i] >= kI32Max || a.ds[i] >= kI32Max) return false;
  }
  return max_offset(ssz, a.ss) < offset_limit && max_offset(dsz, a.ds) < offset_limit;
}

// The int32 geometry every 32-bit engine config (GatherCfg, ColCfg, Nhwc2Cfg) carries; the caller
// has checked the ranges (engine_fits_i32 and the kernel's own bounds).
template <typename Cfg>
void fill_i32_geometry(Cfg& g, const CorrArgs& a) {
  g.C_dst = static_cast<int>(a.C_dst);
  g.H_src = static_cast<int>(a.H_src); g.W_src = static_cast<int>(a.W_src);
  g.H_dst = static_cast<int>(a.H_dst); g.W_dst = static_cast<int>(a.W_dst);
  g.pt = static_cast<int>(a.pt); g.pl = static_cast<int>(a.pl);
  g.ss0 = static_cast<int>(a.ss[0]); g.ss2 = static_cast<int>(a.ss[2]); g.ss3 = static_cast<int>(a.ss[3]);
  g.ds0 = static_cast<int>(a.ds[0]); g.ds2 = static_cast<int>(a.ds[2]); g.ds3 = static_cast<int>(a.ds[3]);
}

// Kernels planned with more than the default 48 KiB of dynamic shared memory must opt in.
template <typename Kernel>
void set_smem_limit(Kernel kernel, int bytes) {
  if (bytes > kDefaultSmem) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem));
  }
}

// Streaming multiprocessors of the current device (the launchers run under a device guard), queried
// once per device and cached. No ATen include: the kernel-family translation units stay light.
inline int64_t sm_count() {
  constexpr int kCachedDevices = 64;
  static std::atomic<int> cache[kCachedDevices] = {};  // 0: not queried yet
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev >= 0 && dev < kCachedDevices) {
    const int known = cache[dev].load(std::memory_order_relaxed);
    if (known > 0) return known;
  }
  int n = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  if (dev >= 0 && dev < kCachedDevices) cache[dev].store(n, std::memory_order_relaxed);
  return n;
}

// ---------------------------------------------------------------------------
// Run-time switches: read in csrc/switches.h (meanings and read rules there and in
// docs/SWITCHES.md); the launchers use these names.
//   CONVEXT_DISABLE_FAST_PATHS  fast_path_enabled(kFp...)  read once per process
//   CONVEXT_CUDA_TC             cuda_tc_enabled()          read on every call
//   CONVEXT_CUDA_NONFINITE      cuda_nonfinite_enabled()   read on every call
// ---------------------------------------------------------------------------
using switches::FastPath;
using switches::kFpGather;
using switches::kFpColstrip;
using switches::kFpNhwcBalance;
using switches::kFpNhwc2;
using switches::kFpWeightCl;
using switches::kFpWeightPlanar;
using switches::fast_path_enabled;

inline bool cuda_nonfinite_enabled() { return switches::cuda_nonfinite(); }
inline bool cuda_tc_enabled() { return switches::cuda_tc(); }

}  // namespace cuda
}  // namespace convext
