// Forward engine, generic family: generic_kernel and its launcher; covers every shape.
//
// generic_kernel<T>: one dst element per thread, int64 indices, any strides / stride / M; also
// does the grad-input gather for stride > 1 (CorrArgs::gather). The only kernel for float64.
// Instantiated by depthwise_conv2d_fwd_generic.cu.
#pragma once

#include "cuda/depthwise_conv2d_forward.cuh"

#include <algorithm>

namespace convext {
namespace cuda {

// ---------------------------------------------------------------------------
// generic kernel: one dst element per thread, int64 everywhere.
// ---------------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
generic_kernel(const CorrArgs a, int64_t total, int channels_last) {
  using acc_t = AccType<T>;
  const T* src = static_cast<const T*>(a.src);
  const T* w = static_cast<const T*>(a.weight);
  T* dst = static_cast<T*>(a.dst);
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n, c, y, x, rest = idx;
    if (channels_last) {
      c = rest % a.C_dst; rest /= a.C_dst;
      x = rest % a.W_dst; rest /= a.W_dst;
      y = rest % a.H_dst; n = rest / a.H_dst;
    } else {
      x = rest % a.W_dst; rest /= a.W_dst;
      y = rest % a.H_dst; rest /= a.H_dst;
      c = rest % a.C_dst; n = rest / a.C_dst;
    }
    acc_t acc = 0;
    if (a.bias != nullptr) acc = to_acc(ldg(static_cast<const T*>(a.bias) + c));
    const int64_t R = (a.reduce_m || a.gather) ? a.M : 1;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t cs = (a.reduce_m || a.gather) ? c * a.M + r : c / a.M;
      const int64_t wrow = (a.reduce_m || a.gather) ? c * a.M + r : c;
      const T* sp = src + n * a.ss[0] + cs * a.ss[1];
      const T* wp = w + wrow * a.KH * a.KW;
      for (int64_t kh = 0; kh < a.KH; ++kh) {
        int64_t sy;
        if (a.gather) {
          const int64_t num = y + a.pt - kh * a.dh;
          if (num < 0 || num % a.sh != 0) continue;
          sy = num / a.sh;
        } else {
          sy = y * a.sh - a.pt + kh * a.dh;
        }
        if (sy < 0 || sy >= a.H_src) continue;
        for (int64_t kw = 0; kw < a.KW; ++kw) {
          int64_t sx;
          if (a.gather) {
            const int64_t num = x + a.pl - kw * a.dw;
            if (num < 0 || num % a.sw != 0) continue;
            sx = num / a.sw;
          } else {
            sx = x * a.sw - a.pl + kw * a.dw;
          }
          if (sx < 0 || sx >= a.W_src) continue;
          const int64_t kh2 = a.flip ? a.KH - 1 - kh : kh;
          const int64_t kw2 = a.flip ? a.KW - 1 - kw : kw;
          acc += to_acc(ldg(sp + sy * a.ss[2] + sx * a.ss[3])) * to_acc(ldg(wp + kh2 * a.KW + kw2));
        }
      }
    }
    dst[n * a.ds[0] + c * a.ds[1] + y * a.ds[2] + x * a.ds[3]] = from_acc<T>(acc);
  }
}

template <typename T>
void launch_generic(const CorrArgs& a, bool channels_last, cudaStream_t stream) {
  const int64_t total = a.N * a.C_dst * a.H_dst * a.W_dst;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>(ceil_div<int64_t>(total, threads), int64_t(1) << 20);
  generic_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(a, total, channels_last ? 1 : 0);
  CONVEXT_LAUNCH_CHECK();
}

template <typename T>
void run_fwd_generic(const CorrArgs& a, bool dst_cl, cudaStream_t stream) {
  launch_generic<T>(a, dst_cl, stream);
}

}  // namespace cuda
}  // namespace convext
