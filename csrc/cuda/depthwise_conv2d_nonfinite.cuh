// NaN / inf propagation of the CUDA depthwise kernels, as in F.conv2d (its oneDNN and ATen CUDA
// kernels): a tap that falls into the zero padding contributes nothing -- it is never 0 * w, which
// is NaN for a NaN or inf weight -- and a grad-weight tap never meets a padded input or a missing
// output (0 * grad). The fast kernels stage zero-filled tiles and multiply them, so (without
// touching their code or registers):
//
//  * forward engine (forward, stride-1 grad-input; tile / nhwc / nhwc2 / colstrip families): their
//    only extra products are zero padding times a weight (taps past the kernel are skipped), which
//    matter only for a non-finite weight. weights_nonfinite_kernel (one block) writes a device flag
//    saying whether any weight is NaN / inf; nonfinite_fixup_kernel then returns at once when the
//    flag is 0, else recomputes every non-finite result with engine_exact (the generic kernel's
//    loop: real taps only). A finite result is exact already (its extra products were 0 * finite).
//    No host synchronisation; two small launches per call.
//  * the opt-in tensor-core forward (band GEMMs: off-band zeros meet the input too): the same fix-up
//    pass, ungated.
//  * grad-weight (every family): gw_nonfinite_fixup_kernel recomputes each non-finite grad_weight
//    entry exactly (a fixed-order block reduction: deterministic); finite entries are left alone.
// The gather kernels (grad-input, stride > 1) and the generic kernel skip padded taps already.
#pragma once

#include "cuda/depthwise_conv2d_device.cuh"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

namespace convext {
namespace cuda {

// One dst element of the engine, exactly (generic_kernel's loop: real taps only).
template <typename T>
__device__ __forceinline__ AccType<T> engine_exact(const CorrArgs& a, int64_t n, int64_t c, int64_t y, int64_t x) {
  using acc_t = AccType<T>;
  const T* src = static_cast<const T*>(a.src);
  const T* w = static_cast<const T*>(a.weight);
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
  return acc;
}

// flag[0] = whether any of the n weights is NaN or inf (one block).
template <typename T>
__global__ void __launch_bounds__(256) weights_nonfinite_kernel(const T* __restrict__ w, int64_t n,
                                                                int* __restrict__ flag) {
  __shared__ int any;
  if (threadIdx.x == 0) any = 0;
  __syncthreads();
  int mine = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) mine |= !isfinite(to_acc(ldg(w + i)));
  if (mine) any = 1;
  __syncthreads();
  if (threadIdx.x == 0) flag[0] = any;
}

// Every non-finite dst element is recomputed exactly; with `gate`, nothing unless gate[0] != 0.
template <typename T>
__global__ void __launch_bounds__(256) nonfinite_fixup_kernel(const CorrArgs a, int64_t total, int channels_last,
                                                              const int* __restrict__ gate) {
  if (gate != nullptr && *gate == 0) return;
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
    T* p = dst + n * a.ds[0] + c * a.ds[1] + y * a.ds[2] + x * a.ds[3];
    if (!isfinite(to_acc(*p))) *p = from_acc<T>(engine_exact<T>(a, n, c, y, x));
  }
}

// After a tensor-core run: every element checked.
template <typename T>
void launch_nonfinite_fixup(const CorrArgs& a, bool channels_last, cudaStream_t stream) {
  const int64_t total = a.N * a.C_dst * a.H_dst * a.W_dst;
  if (total == 0) return;
  const int64_t blocks = std::min<int64_t>(ceil_div<int64_t>(total, 256), int64_t(1) << 20);
  nonfinite_fixup_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(a, total, channels_last ? 1 : 0,
                                                                                  nullptr);
  CONVEXT_LAUNCH_CHECK();
}

// After a fast engine family: only when a weight is not finite (device flag, no host sync). The
// weight rows are C_src (grad-input: summed over the multiplier) or C_dst.
template <typename T>
void launch_weight_gated_fixup(const CorrArgs& a, bool channels_last, const at::Tensor& like, cudaStream_t stream) {
  const int64_t total = a.N * a.C_dst * a.H_dst * a.W_dst;
  if (total == 0) return;
  const int64_t nw = (a.reduce_m ? a.C_src : a.C_dst) * a.KH * a.KW;
  at::Tensor flag = at::empty({1}, like.options().dtype(at::kInt));
  weights_nonfinite_kernel<T><<<1, 256, 0, stream>>>(static_cast<const T*>(a.weight), nw, flag.mutable_data_ptr<int>());
  CONVEXT_LAUNCH_CHECK();
  // Enough blocks to cover the output with grid-stride loops when the flag is set; each returns
  // after one load otherwise.
  const int64_t blocks = std::min<int64_t>(ceil_div<int64_t>(total, 256), 2048);
  nonfinite_fixup_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(a, total, channels_last ? 1 : 0,
                                                                                  flag.const_data_ptr<int>());
  CONVEXT_LAUNCH_CHECK();
}

// Geometry of the grad-weight fix-up (element strides of x (N, C, H, W) and go (N, C*M, Ho, Wo)).
struct GwFixArgs {
  int64_t N = 0, C_out = 0, M = 1, H = 0, W = 0, Ho = 0, Wo = 0, KH = 1, KW = 1;
  int64_t sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0;
  int64_t xs[4] = {0, 0, 0, 0};
  int64_t gs[4] = {0, 0, 0, 0};
};

// Blocks stride over the grad_weight elements (oc, kh, kw): a finite one is left alone (one load),
// a non-finite one is replaced by the exact sum over the outputs whose tap meets a real input.
template <typename T>
__global__ void __launch_bounds__(256) gw_nonfinite_fixup_kernel(const T* __restrict__ x, const T* __restrict__ go,
                                                                 T* __restrict__ gw, int64_t entries,
                                                                 const GwFixArgs g) {
  using acc_t = AccType<T>;
  __shared__ acc_t red[256];
  const int64_t taps = g.KH * g.KW;
  const int64_t total = g.N * g.Ho * g.Wo;
  for (int64_t e = blockIdx.x; e < entries; e += gridDim.x) {
    if (isfinite(to_acc(gw[e]))) continue;  // uniform over the block
    const int64_t oc = e / taps, t = e - oc * taps;
    const int64_t kh = t / g.KW, kw = t - kh * g.KW;
    const T* xc = x + (oc / g.M) * g.xs[1];
    const T* gc = go + oc * g.gs[1];
    acc_t s = 0;
    for (int64_t p = threadIdx.x; p < total; p += blockDim.x) {
      const int64_t ow = p % g.Wo, oh = (p / g.Wo) % g.Ho, n = p / (g.Wo * g.Ho);
      const int64_t ih = oh * g.sh - g.pt + kh * g.dh, iw = ow * g.sw - g.pl + kw * g.dw;
      if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
      s += to_acc(ldg(gc + n * g.gs[0] + oh * g.gs[2] + ow * g.gs[3])) *
           to_acc(ldg(xc + n * g.xs[0] + ih * g.xs[2] + iw * g.xs[3]));
    }
    __syncthreads();  // red[] of the previous entry fully read
    red[threadIdx.x] = s;
    __syncthreads();
    for (int w = 128; w > 0; w >>= 1) {
      if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) gw[e] = from_acc<T>(red[0]);
  }
}

template <typename T>
void launch_gw_nonfinite_fixup(const at::Tensor& x, const at::Tensor& go, at::Tensor& gw, const GwFixArgs& g,
                               cudaStream_t stream) {
  const int64_t entries = gw.numel();
  if (entries == 0 || g.N == 0) return;
  const int64_t blocks = std::min<int64_t>(entries, 1024);
  gw_nonfinite_fixup_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      x.const_data_ptr<T>(), go.const_data_ptr<T>(), gw.mutable_data_ptr<T>(), entries, g);
  CONVEXT_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace convext
