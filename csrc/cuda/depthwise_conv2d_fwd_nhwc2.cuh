// Forward engine, channels_last strip family (fast path "nhwc2"): nhwc2_kernel and its launcher.
// Instantiated by depthwise_conv2d_fwd_nhwc2.cu; off with CONVEXT_DISABLE_FAST_PATHS=nhwc2 (or =1),
// which leaves these shapes to the nhwc family.
#pragma once

#include "cuda/depthwise_conv2d_forward.cuh"
#include "cuda/static_switch.cuh"

#include <algorithm>

namespace convext {
namespace cuda {

// ---------------------------------------------------------------------------
// channels_last strip kernel (fast path "nhwc2": M == 1, static K in {3,5,7}, S in {1,2}, any
// dilation): a thread owns V channels (16-byte vectors: V = 4 fp32, V = 8 fp16/bf16) and CWN
// dst columns of one row (spaced dw); per kernel row it loads the (CWN-1)*S + K input vectors
// of its window once (converted to float once) and reuses them from registers; weights of the
// block's channels in shared memory as [tap][CB] floats; 32-bit index math.
// ---------------------------------------------------------------------------
struct Nhwc2Cfg {
  int CB, iters, spr, nstrips;
  int C_dst, H_src, W_src, H_dst, W_dst, dh, dw, pt, pl, flip;
  int ss0, ss2, ss3, ds0, ds2, ds3;
};

template <typename T, int V, int K, int S, int CWN>
__global__ void __launch_bounds__(256)
nhwc2_kernel(const CorrArgs a, const Nhwc2Cfg g) {
  constexpr int WL = (CWN - 1) * S + K;
  extern __shared__ float4 smem_f4[];
  float* wsm = reinterpret_cast<float*>(smem_f4);  // [(kh*K + kw) * CB + cl]
  const int nthr = blockDim.x * blockDim.y;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int c0 = static_cast<int>(blockIdx.y) * g.CB;
  {
    const T* wp = static_cast<const T*>(a.weight);
    for (int e = tid; e < K * K * g.CB; e += nthr) {
      const int tap = e / g.CB;
      const int cl = e - tap * g.CB;
      const int ch = c0 + cl;
      const int tap2 = g.flip ? K * K - 1 - tap : tap;  // (KH-1-kh)*KW + (KW-1-kw)
      wsm[e] = ch < g.C_dst ? to_acc(ldg(wp + ch * (K * K) + tap2)) : 0.f;
    }
  }
  __syncthreads();
  const int cl = static_cast<int>(threadIdx.x) * V;
  const int ch = c0 + cl;
  if (ch >= g.C_dst) return;  // no barrier below
  float bias[V];
#pragma unroll
  for (int v = 0; v < V; ++v) bias[v] = a.bias != nullptr ? to_acc(ldg(static_cast<const T*>(a.bias) + ch + v)) : 0.f;
  const T* srcc = static_cast<const T*>(a.src) + ch;
  T* dstc = static_cast<T*>(a.dst) + ch;
  const float* wcl = wsm + cl;
#pragma unroll 1
  for (int it = 0; it < g.iters; ++it) {
    const int q = (static_cast<int>(blockIdx.x) * g.iters + it) * static_cast<int>(blockDim.y) +
                  static_cast<int>(threadIdx.y);
    if (q >= g.nstrips) break;
    const int nrow = q / g.spr;
    const int sidx = q - nrow * g.spr;
    const int n = nrow / g.H_dst;
    const int oh = nrow - n * g.H_dst;
    const int sg = sidx / g.dw;
    const int owb = sg * CWN * g.dw + (sidx - sg * g.dw);
    float acc[CWN][V];
#pragma unroll
    for (int i = 0; i < CWN; ++i)
#pragma unroll
      for (int v = 0; v < V; ++v) acc[i][v] = bias[v];
    const int iwb = owb * S - g.pl;
    const T* sp = srcc + n * g.ss0;
#pragma unroll 1
    for (int kh = 0; kh < K; ++kh) {
      const int ih = oh * S - g.pt + kh * g.dh;
      if (static_cast<unsigned>(ih) >= static_cast<unsigned>(g.H_src)) continue;
      const T* rowp = sp + ih * g.ss2;
      float win[WL][V];
#pragma unroll
      for (int qq = 0; qq < WL; ++qq) {
        const int iw = iwb + qq * g.dw;
        if (static_cast<unsigned>(iw) < static_cast<unsigned>(g.W_src)) {
          const Vec<T, V> x = load_vec<T, V>(rowp + iw * g.ss3);
#pragma unroll
          for (int v = 0; v < V; ++v) win[qq][v] = to_acc(x.v[v]);
        } else {
#pragma unroll
          for (int v = 0; v < V; ++v) win[qq][v] = 0.f;
        }
      }
      const float* wrow = wcl + kh * K * g.CB;
#pragma unroll
      for (int kw = 0; kw < K; ++kw) {
        float wv[V];
#pragma unroll
        for (int q4 = 0; q4 < V / 4; ++q4) {
          const float4 w4 = *reinterpret_cast<const float4*>(wrow + kw * g.CB + 4 * q4);
          wv[4 * q4 + 0] = w4.x; wv[4 * q4 + 1] = w4.y; wv[4 * q4 + 2] = w4.z; wv[4 * q4 + 3] = w4.w;
        }
#pragma unroll
        for (int i = 0; i < CWN; ++i)
#pragma unroll
          for (int v = 0; v < V; ++v) acc[i][v] = fmaf(wv[v], win[i * S + kw][v], acc[i][v]);
      }
    }
    T* drow = dstc + n * g.ds0 + oh * g.ds2;
#pragma unroll
    for (int i = 0; i < CWN; ++i) {
      const int ow = owb + i * g.dw;
      if (ow < g.W_dst) {
        Vec<T, V> o;
#pragma unroll
        for (int v = 0; v < V; ++v) o.v[v] = from_acc<T>(acc[i][v]);
        store_vec<T, V>(drow + ow * g.ds3, o);
      }
    }
  }
}

template <typename T, int V, int K, int S, int CWN>
bool launch_nhwc2(const CorrArgs& a, cudaStream_t stream) {
  if (a.KH != K || a.KW != K || a.sh != S || a.sw != S || a.M != 1) return false;  // reduce_m with M == 1 is a plain correlation
  if (!engine_fits_i32(a, kI32Max / 2)) return false;
  if (a.dh < 1 || a.dw < 1 || a.dh > 64 || a.dw > 64) return false;
  if (a.pt < -(kI32Max / 8) || a.pt > kI32Max / 8 || a.pl < -(kI32Max / 8) || a.pl > kI32Max / 8) return false;
  if (a.H_src + a.H_dst * S + 64 * 8 >= kI32Max / 8 || a.W_src + (a.W_dst + CWN * 64) * S + 64 * 8 >= kI32Max / 8) return false;
  if (a.C_dst * K * K >= kI32Max) return false;
  Nhwc2Cfg g;
  const int64_t cvec = a.C_dst / V;
  int tx = static_cast<int>(std::min<int64_t>({cvec, 32, kMaxSmem / (K * K * V * 4)}));
  if (tx < 1) return false;
  if (cvec > tx) tx = static_cast<int>(ceil_div<int64_t>(cvec, ceil_div<int64_t>(cvec, tx)));
  g.CB = tx * V;
  const int smem = K * K * g.CB * 4;
  if (smem > kMaxSmem) return false;
  const int ty = std::max(1, 128 / tx);
  const int64_t spr = ceil_div<int64_t>(a.W_dst, CWN * a.dw) * a.dw;
  const int64_t nstrips = a.N * a.H_dst * spr;
  if (nstrips + 1024 * 8 >= kI32Max / 2) return false;
  const int64_t cblocks = ceil_div<int64_t>(a.C_dst, g.CB);
  if (cblocks > 65535) return false;
  const int64_t groups = ceil_div<int64_t>(nstrips, ty);
  const int64_t target_blocks = sm_count() * 16;
  g.iters = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(8, groups * cblocks / target_blocks)));
  const int64_t gx = ceil_div<int64_t>(groups, g.iters);
  if (gx >= kI32Max) return false;
  g.spr = static_cast<int>(spr);
  g.nstrips = static_cast<int>(nstrips);
  fill_i32_geometry(g, a);
  g.dh = static_cast<int>(a.dh); g.dw = static_cast<int>(a.dw);
  g.flip = a.flip ? 1 : 0;
  auto kernel = nhwc2_kernel<T, V, K, S, CWN>;
  set_smem_limit(kernel, smem);
  kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(cblocks)), dim3(tx, ty), smem, stream>>>(a, g);
  CONVEXT_LAUNCH_CHECK();
  return true;
}


// One specialisation: square kernel K, stride S; the vector width V and strip length CWN follow
// from the dtype (16-byte vectors: V = 8 for fp16/bf16, 4 for fp32).
template <int K_, int S_>
struct Nhwc2Config {
  static constexpr int K = K_, S = S_;
  template <typename T> static constexpr int V = sizeof(T) == 2 ? 8 : 4;
  template <typename T> static constexpr int CWN = sizeof(T) == 2 ? 4 : 8;
  static bool matches(const CorrArgs& a) { return a.KH == K && a.sh == S; }
};

using Nhwc2Configs = ConfigList<Nhwc2Config<3, 1>, Nhwc2Config<5, 1>, Nhwc2Config<7, 1>>;

template <typename T>
bool run_fwd_nhwc2(const CorrArgs& a, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, c10::Half>) {
    return false;
  } else {
    if (a.KH != a.KW || a.sh != a.sw || a.M != 1) return false;
    constexpr int V = sizeof(T) == 2 ? 8 : 4;
    if (!engine_nhwc_vec_ok(a, V, sizeof(T))) return false;
    return first_of(Nhwc2Configs{}, [&](auto cfg) {
      using C = decltype(cfg);
      return C::matches(a) && launch_nhwc2<T, C::template V<T>, C::K, C::S, C::template CWN<T>>(a, stream);
    });
  }
}

}  // namespace cuda
}  // namespace convext
