// Forward engine, channels_last family: nhwc_kernel and its launcher.
//
// nhwc_kernel<T, U, S, CWN>: a thread owns 4 consecutive channels (16 B fp32, 8 B fp16/bf16
// loads) and a strip of CWN outputs along W (spaced dw), register sliding window along W,
// weights for the block's channels in shared memory; taps in chunks of U.
// Specialisations: NhwcConfigs below (instantiated by depthwise_conv2d_fwd_nhwc.cu).
#pragma once

#include "cuda/depthwise_conv2d_forward.cuh"
#include "cuda/static_switch.cuh"

#include <algorithm>
#include <limits>

namespace convext {
namespace cuda {

// ---------------------------------------------------------------------------
// channels_last kernel: 4 channels per thread, strip of CWN outputs along W.
// Requires M == 1, channel stride 1, the other strides multiples of 4, 4*sizeof(T)
// aligned pointers, C % 4 == 0, sh == sw == S.
// ---------------------------------------------------------------------------
struct NhwcCfg {
  int CB;            // channels per block (4 * blockDim.x)
  int KWP;           // padded taps per weight row (nchunks * U)
  int nchunks;
  int iters;         // strip groups per block
  int spr;           // strips per output row
  int nstrips;       // N * H_dst * spr (< 2^31)
  int H_dst;
};

template <typename T, int U, int S, int CWN>
__global__ void __launch_bounds__(kMaxThreads, 2)
nhwc_kernel(const CorrArgs a, const NhwcCfg g) {
  constexpr int V = 4;
  constexpr int WL = (CWN - 1) * S + U;
  extern __shared__ float4 smem_f4[];
  float* wsm = reinterpret_cast<float*>(smem_f4);  // [(kh*KWP + kw) * CB + cl]

  const int KH = static_cast<int>(a.KH), KW = static_cast<int>(a.KW);
  const int dh = static_cast<int>(a.dh), dw = static_cast<int>(a.dw);
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * g.CB;
  const int nthr = blockDim.x * blockDim.y;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;

  // stage weights for channels [c0, c0 + CB): weight row = channel (M == 1)
  {
    const T* wp = static_cast<const T*>(a.weight);
    const int total = KH * g.KWP * g.CB;
    for (int e = tid; e < total; e += nthr) {
      const int cl = e % g.CB;
      const int tap = e / g.CB;
      const int kh = tap / g.KWP, kw = tap - kh * g.KWP;
      const int64_t ch = c0 + cl;
      float v = 0.f;
      if (kw < KW && ch < a.C_dst) {
        const int kh2 = a.flip ? KH - 1 - kh : kh;
        const int kw2 = a.flip ? KW - 1 - kw : kw;
        v = to_acc(ldg(wp + ch * KH * KW + kh2 * KW + kw2));
      }
      wsm[e] = v;
    }
  }
  __syncthreads();

  const int cl = threadIdx.x * V;
  const int64_t ch = c0 + cl;
  if (ch >= a.C_dst) return;  // no barrier below
  float bias[V] = {0.f, 0.f, 0.f, 0.f};
  if (a.bias != nullptr) {
#pragma unroll
    for (int v = 0; v < V; ++v) bias[v] = to_acc(ldg(static_cast<const T*>(a.bias) + ch + v));
  }
  const T* srcc = static_cast<const T*>(a.src) + ch;
  T* dstc = static_cast<T*>(a.dst) + ch;

  for (int it = 0; it < g.iters; ++it) {
    // 32-bit strip math (the host checks nstrips < 2^31)
    const int q = (static_cast<int>(blockIdx.x) * g.iters + it) * static_cast<int>(blockDim.y) + threadIdx.y;
    if (q >= g.nstrips) break;
    const int nrow = q / g.spr;
    const int sidx = q - nrow * g.spr;
    const int n = nrow / g.H_dst;
    const int oh = nrow - n * g.H_dst;
    const int sg = sidx / dw;
    const int owb = sg * CWN * dw + (sidx - sg * dw);

    float acc[CWN][V];
#pragma unroll
    for (int i = 0; i < CWN; ++i)
#pragma unroll
      for (int v = 0; v < V; ++v) acc[i][v] = bias[v];

    const int64_t iwb = owb * S - a.pl;
    for (int kh = 0; kh < KH; ++kh) {
      const int64_t ih = oh * a.sh - a.pt + static_cast<int64_t>(kh) * dh;
      if (ih < 0 || ih >= a.H_src) continue;
      const T* rowp = srcc + n * a.ss[0] + ih * a.ss[2];
      for (int c = 0; c < g.nchunks; ++c) {
        float win[WL][V];
#pragma unroll
        for (int qq = 0; qq < WL; ++qq) {
          const int64_t iw = iwb + static_cast<int64_t>(c * U + qq) * dw;
          if (iw >= 0 && iw < a.W_src) {
            Vec<T, V> x = load_vec<T, V>(rowp + iw * a.ss[3]);
#pragma unroll
            for (int v = 0; v < V; ++v) win[qq][v] = to_acc(x.v[v]);
          } else {
#pragma unroll
            for (int v = 0; v < V; ++v) win[qq][v] = 0.f;
          }
        }
        const float* wrow = wsm + (kh * g.KWP + c * U) * g.CB + cl;
        const int ulim = KW - c * U;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (u < ulim) {
            const float4 w4 = *reinterpret_cast<const float4*>(wrow + u * g.CB);
            const float wv[V] = {w4.x, w4.y, w4.z, w4.w};
#pragma unroll
            for (int i = 0; i < CWN; ++i)
#pragma unroll
              for (int v = 0; v < V; ++v) acc[i][v] = fmaf(wv[v], win[i * S + u][v], acc[i][v]);
          }
        }
      }
    }
    T* drow = dstc + n * a.ds[0] + oh * a.ds[2];
#pragma unroll
    for (int i = 0; i < CWN; ++i) {
      const int64_t ow = owb + static_cast<int64_t>(i) * dw;
      if (ow < a.W_dst) {
        Vec<T, V> o;
#pragma unroll
        for (int v = 0; v < V; ++v) o.v[v] = from_acc<T>(acc[i][v]);
        store_vec<T, V>(drow + ow * a.ds[3], o);
      }
    }
  }
}

template <typename T, int U, int S, int CWN>
bool launch_nhwc(const CorrArgs& a, cudaStream_t stream) {
  NhwcCfg g;
  const int64_t cvec = a.C_dst / 4;
  g.nchunks = static_cast<int>(ceil_div<int64_t>(a.KW, U));
  g.KWP = g.nchunks * U;
  // channel vectors per block: up to a warp, fewer for large kernels so the weights fit in smem
  const int64_t wbytes_per_vec = a.KH * g.KWP * 16;
  int tx = static_cast<int>(std::min<int64_t>({cvec, 32, kMaxSmem / wbytes_per_vec}));
  if (tx < 1) return false;
  if (fast_path_enabled(kFpNhwcBalance) && cvec > tx) {
    // balance the channel blocks (C = 144: 2 x 72 channels instead of 128 + 16)
    const int64_t nb = ceil_div<int64_t>(cvec, tx);
    tx = static_cast<int>(ceil_div<int64_t>(cvec, nb));
  }
  g.CB = tx * 4;
  const int64_t smem64 = static_cast<int64_t>(a.KH) * g.KWP * g.CB * 4;
  if (smem64 > kMaxSmem) return false;
  const int smem = static_cast<int>(smem64);
  const int ty = std::max(1, 128 / tx);
  const int64_t spr = ceil_div<int64_t>(a.W_dst, CWN * a.dw) * a.dw;
  const int64_t nstrips = a.N * a.H_dst * spr;
  if (nstrips + 1024 * 8 >= kI32Max || a.H_dst >= kI32Max) return false;
  g.spr = static_cast<int>(spr);
  g.nstrips = static_cast<int>(nstrips);
  g.H_dst = static_cast<int>(a.H_dst);
  const int64_t cblocks = ceil_div<int64_t>(a.C_dst, g.CB);
  if (cblocks > 65535) return false;
  // enough blocks to fill the GPU, a few strip groups per block to amortise the weights
  const int64_t groups = ceil_div<int64_t>(nstrips, ty);
  const int64_t target_blocks = sm_count() * 16;
  const int iters = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(8, groups * cblocks / target_blocks)));
  g.iters = iters;
  const int64_t gx = ceil_div<int64_t>(groups, iters);
  if (gx > kI32Max) return false;
  auto kernel = nhwc_kernel<T, U, S, CWN>;
  set_smem_limit(kernel, smem);
  nhwc_kernel<T, U, S, CWN><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(cblocks)), dim3(tx, ty), smem,
                              stream>>>(a, g);
  CONVEXT_LAUNCH_CHECK();
  return true;
}

// One specialisation: kernel width KW (0: any), taps per chunk U, stride S, CWN outputs per strip.
template <int KW_, int U_, int S_, int CWN_>
struct NhwcConfig {
  static constexpr int KW = KW_, U = U_, S = S_, CWN = CWN_;
  static bool matches(const CorrArgs& a) { return a.sh == S && (KW == 0 || a.KW == KW); }
};

// Tried in order (the caller has checked sh == sw, sh in {1, 2} and 4-channel vectors).
using NhwcConfigs = ConfigList<
    NhwcConfig<3, 3, 1, 4>,
    NhwcConfig<5, 5, 1, 8>,
    NhwcConfig<7, 7, 1, 8>,
    NhwcConfig<0, 4, 1, 8>,
    NhwcConfig<3, 3, 2, 4>,
    NhwcConfig<0, 4, 2, 4>>;

template <typename T>
bool run_fwd_nhwc(const CorrArgs& a, cudaStream_t stream) {
  return first_of(NhwcConfigs{}, [&](auto cfg) {
    using C = decltype(cfg);
    return C::matches(a) && launch_nhwc<T, C::U, C::S, C::CWN>(a, stream);
  });
}

}  // namespace cuda
}  // namespace convext
