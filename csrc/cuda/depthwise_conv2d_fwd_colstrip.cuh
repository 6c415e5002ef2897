// Forward engine, NCHW column-strip family (fast path "colstrip"): colstrip_kernel and its
// launcher. Instantiated by depthwise_conv2d_fwd_colstrip.cu; off with
// CONVEXT_DISABLE_FAST_PATHS=colstrip (or =1), which leaves these shapes to the tile family.
#pragma once

#include "cuda/depthwise_conv2d_forward.cuh"
#include "cuda/static_switch.cuh"

#include <algorithm>

namespace convext {
namespace cuda {

// ---------------------------------------------------------------------------
// NCHW column-strip kernel (fast path, static K in {3,5,7}, S in {1,2}, any dilation, any M,
// forward and stride-1 grad-input): no shared memory, no barriers. Threads are laid out
// along dst columns (consecutive threads = consecutive x, wrapping into the next strip /
// plane, so small planes keep every lane busy and loads stay coalesced); each thread
// computes RH rows of one column, spaced dh (rows of one residue mod dh), from a register
// sliding window over input rows; the K column taps come from L1 (neighbouring lanes load
// the same lines). Weights in registers. 32-bit index math (host checks offsets fit).
// ---------------------------------------------------------------------------
struct ColCfg {
  int Wc, nch;        // columns per chunk (<= 256), chunks per row
  int spr, spp;       // strips per residue, strips per plane (spr * dh)
  int nunits;         // planes * spp * nch (< 2^31)
  int C_dst, M, H_src, W_src, H_dst, W_dst, dh, dw, pt, pl;
  int ss0, ss1, ss2, ss3, ds0, ds1, ds2, ds3;
};

// Block size / register cap per K. ptxas hoists every load of the unrolled window (K = 3:
// ~80 registers, K = 5: ~150, K = 7 (RH 4; RH 2 at S 2): ~200); capping lower spills heavily,
// so K >= 5 runs uncapped with 128-thread blocks (fewer warps, but (RH-1)*S+K rows x K
// independent loads in flight per thread).
template <int K> constexpr int colstrip_threads() { return K <= 3 ? 256 : 128; }
template <int K> constexpr int colstrip_min_blocks() { return K <= 3 ? 3 : 1; }

template <typename T, int K, int S, int RH>
__global__ void __launch_bounds__(colstrip_threads<K>(), colstrip_min_blocks<K>())
colstrip_kernel(const CorrArgs a, const ColCfg g) {
  constexpr int NR = (RH - 1) * S + K;  // window rows
  const int L = static_cast<int>(blockIdx.x) * colstrip_threads<K>() + static_cast<int>(threadIdx.x);
  const int unit = L / g.Wc;
  if (unit >= g.nunits) return;
  const int xc = L - unit * g.Wc;
  int rest = unit, chunk = 0;
  if (g.nch > 1) {
    rest = unit / g.nch;
    chunk = unit - rest * g.nch;
  }
  const int x = chunk * g.Wc + xc;
  if (x >= g.W_dst) return;
  const int plane = rest / g.spp;
  const int strip = rest - plane * g.spp;
  const int sg = strip / g.dh;
  const int rho = strip - sg * g.dh;
  const int base = sg * RH * g.dh + rho;  // first dst row; rows base + j*dh
  if (base >= g.H_dst) return;
  const int n = plane / g.C_dst;
  const int cd = plane - n * g.C_dst;

  float acc[RH];
  {
    float b0 = 0.f;
    if (a.bias != nullptr) b0 = to_acc(ldg(static_cast<const T*>(a.bias) + cd));
#pragma unroll
    for (int j = 0; j < RH; ++j) acc[j] = b0;
  }
  // columns
  const int ix0 = x * S - g.pl;
  int coff[K];
  bool cok[K];
#pragma unroll
  for (int kw = 0; kw < K; ++kw) {
    const int ix = ix0 + kw * g.dw;
    cok[kw] = static_cast<unsigned>(ix) < static_cast<unsigned>(g.W_src);
    coff[kw] = ix * g.ss3;
  }
  const int ihb = base * S - g.pt;
  const int R = a.reduce_m ? g.M : 1;
  for (int r = 0; r < R; ++r) {
    const int cs = a.reduce_m ? cd * g.M + r : cd / g.M;
    const int wrow = a.reduce_m ? cd * g.M + r : cd;
    float w[K][K];
    {
      const T* wp = static_cast<const T*>(a.weight) + wrow * (K * K);
#pragma unroll
      for (int kh = 0; kh < K; ++kh)
#pragma unroll
        for (int kw = 0; kw < K; ++kw) {
          const int e = a.flip ? (K - 1 - kh) * K + (K - 1 - kw) : kh * K + kw;
          w[kh][kw] = to_acc(ldg(wp + e));
        }
    }
    const T* sp = static_cast<const T*>(a.src) + n * g.ss0 + cs * g.ss1;
#pragma unroll
    for (int t = 0; t < NR; ++t) {
      const int ih = ihb + t * g.dh;
      const bool rok = static_cast<unsigned>(ih) < static_cast<unsigned>(g.H_src);
      const T* rowp = sp + (rok ? ih : 0) * g.ss2;
      float v[K];
#pragma unroll
      for (int kw = 0; kw < K; ++kw) v[kw] = (rok && cok[kw]) ? to_acc(ldg(rowp + coff[kw])) : 0.f;
#pragma unroll
      for (int j = 0; j < RH; ++j) {
        const int kh = t - j * S;
        if (kh >= 0 && kh < K) {
#pragma unroll
          for (int kw = 0; kw < K; ++kw) acc[j] = fmaf(w[kh][kw], v[kw], acc[j]);
        }
      }
    }
  }
  T* dp = static_cast<T*>(a.dst) + n * g.ds0 + cd * g.ds1 + x * g.ds3;
#pragma unroll
  for (int j = 0; j < RH; ++j) {
    const int oh = base + j * g.dh;
    if (oh < g.H_dst) dp[oh * g.ds2] = from_acc<T>(acc[j]);
  }
}

template <typename T, int K, int S, int RH>
bool launch_colstrip(const CorrArgs& a, cudaStream_t stream) {
  if (a.KH != K || a.KW != K || a.sh != S || a.sw != S) return false;
  if (!engine_fits_i32(a, kI32Max / 2)) return false;
  if (a.dh < 1 || a.dw < 1 || a.dh > 64 || a.dw > 64) return false;
  if (a.pt < -(kI32Max / 8) || a.pt > kI32Max / 8 || a.pl < -(kI32Max / 8) || a.pl > kI32Max / 8) return false;
  if (a.H_src + a.H_dst * S + 64 * 64 * 8 >= kI32Max / 8 || a.W_src + a.W_dst * S + 64 * 8 >= kI32Max / 8) return false;
  if (a.C_src * a.KH * a.KW >= kI32Max || a.C_dst * a.M * a.KH * a.KW >= kI32Max) return false;
  ColCfg g;
  g.Wc = static_cast<int>(std::min<int64_t>(a.W_dst, 256));
  g.nch = static_cast<int>(ceil_div<int64_t>(a.W_dst, g.Wc));
  const int64_t rows_per_res = ceil_div<int64_t>(a.H_dst, a.dh);
  const int64_t spr = ceil_div<int64_t>(rows_per_res, RH);
  const int64_t spp = spr * a.dh;
  const int64_t nunits = a.N * a.C_dst * spp * g.nch;
  if (nunits * g.Wc >= kI32Max - 512 || spp >= kI32Max) return false;
  g.spr = static_cast<int>(spr);
  g.spp = static_cast<int>(spp);
  g.nunits = static_cast<int>(nunits);
  fill_i32_geometry(g, a);
  g.M = static_cast<int>(a.M);
  g.dh = static_cast<int>(a.dh); g.dw = static_cast<int>(a.dw);
  g.ss1 = static_cast<int>(a.ss[1]); g.ds1 = static_cast<int>(a.ds[1]);
  constexpr int BT = colstrip_threads<K>();
  const int64_t blocks = ceil_div<int64_t>(nunits * g.Wc, BT);
  colstrip_kernel<T, K, S, RH><<<static_cast<unsigned>(blocks), BT, 0, stream>>>(a, g);
  CONVEXT_LAUNCH_CHECK();
  return true;
}

// One specialisation: square kernel K, stride S, RH rows per thread; kDilatedOnly: only when the
// kernel is dilated.
template <int K_, int S_, int RH_, bool kDilatedOnly_ = false>
struct ColstripConfig {
  static constexpr int K = K_, S = S_, RH = RH_;
  static bool matches(const CorrArgs& a) {
    return a.KH == K && a.sh == S && (!kDilatedOnly_ || a.dh > 1 || a.dw > 1);
  }
};

// H100 (v2 bench): colstrip beats the shared-memory tile for 3x3 (1.2-2.2x) and dilated 5x5
// (1.4x), but loses on undilated 5x5 / 7x7 (0.55-0.6x: 190-255 registers, 8-12 warps per SM),
// which keep the tile kernel. Stride-2 5x5 / 7x7 were never timed: tile kernel too.
using ColstripConfigs = ConfigList<
    ColstripConfig<3, 1, 4>,
    ColstripConfig<5, 1, 4, /*kDilatedOnly=*/true>,
    ColstripConfig<3, 2, 4>>;

template <typename T>
bool run_fwd_colstrip(const CorrArgs& a, cudaStream_t stream) {
  // fp16 keeps the v1 paths (compile time: fp32 / bf16 are what the suite and models use)
  if constexpr (std::is_same_v<T, c10::Half>) {
    return false;
  } else {
    if (a.KH != a.KW || a.sh != a.sw) return false;
    return first_of(ColstripConfigs{}, [&](auto cfg) {
      using C = decltype(cfg);
      return C::matches(a) && launch_colstrip<T, C::K, C::S, C::RH>(a, stream);
    });
  }
}

}  // namespace cuda
}  // namespace convext
