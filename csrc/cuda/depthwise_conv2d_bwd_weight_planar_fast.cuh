// CUDA grad-weight, planar fast family (square K in {3,5,7}, not fp64, sh | dh or sh == 2):
// dw_bwd_weight_planar_fast_kernel and its launcher (kernel comment below). Instantiated by
// depthwise_conv2d_bwd_weight_planar_fast.cu (float64 returns false); falls back to the planar
// family when the shape is not covered; off with CONVEXT_DISABLE_FAST_PATHS=1.
#pragma once

#include "cuda/depthwise_conv2d_backward_weight.cuh"

namespace convext {
namespace cuda {

// ---------------------------------------------------------------------------
// Planar fast path (square K in {3,5,7}, fp32/bf16/fp16, stride_h in {1,2} or sh | dh,
// any stride_w / dilation): a block owns one output channel and a chunk of units
// (n, row residue r, row band, column tile). A group of TW threads works on one unit;
// each thread owns one output column and RV output rows of it (E apart), keeps ALL K*K
// taps + bias in registers, reads its RV grad_output values straight from global
// (coalesced across the group) and reads the input from the unit's tile staged in
// shared memory. Staged row of (v, kh) is A*v + kh (rows dh apart in the input):
// A == 1 when sh | dh (E = dh/sh), A == 2 when sh == 2 and dh is odd (E = dh), so each
// staged row is loaded from shared memory once per thread and feeds up to K*min(K,RV)
// FMAs. Partials per (chunk, oc, tap) go to the same workspace / fixed-order reduce.
// ---------------------------------------------------------------------------
struct PlanarFastArgs {
  int64_t C_out, M;
  int64_t xs0, xs1, xs2, xs3;
  int64_t gs0, gs1, gs2, gs3;
  int H, W, Ho, Wo;
  int sw, dw, pt, pl, sh, dh;
  int E;        // rows of one thread are E output rows apart
  int nbands;   // row bands per residue class
  int TW;       // threads (output columns) per unit
  int nct;      // column tiles per row
  int XC;       // staged columns per row (shared-memory pitch)
  int G;        // units per round
  int T1;
  int units_per_oc;     // < 2^31 (host check)
  int units_per_chunk;  // multiple of G
};

// rows per thread and blocks per SM (register cap 64 / 80 / 128), per K and row mode A
// (used by PlanarFastConfig below)
template <int K, int A> constexpr int pf_rv() { return K == 3 ? (A == 1 ? 8 : 6) : (K == 5 ? (A == 1 ? 5 : 4) : 4); }
template <int K, int A> constexpr int pf_min_blocks() { return K == 3 ? (A == 1 ? 4 : 3) : (K == 5 ? (A == 1 ? 3 : 2) : 2); }

template <typename scalar_t, int K, int A>
__global__ void __launch_bounds__(kMaxThreads, pf_min_blocks<K, A>())
dw_bwd_weight_planar_fast_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ go,
                                 AccType<scalar_t>* __restrict__ ws, const PlanarFastArgs a) {
  using acc_t = AccType<scalar_t>;
  constexpr int RV = pf_rv<K, A>();
  constexpr int SR = A * (RV - 1) + K;  // staged rows per unit
  constexpr int TT = K * K;
  extern __shared__ __align__(16) unsigned char pf_smem_raw[];
  acc_t* xs_all = reinterpret_cast<acc_t*>(pf_smem_raw);
  __shared__ acc_t red[kMaxThreads / 32][TT + 1];

  const int64_t oc = static_cast<int64_t>(blockIdx.x) % a.C_out;
  const int chunk = static_cast<int>(static_cast<int64_t>(blockIdx.x) / a.C_out);
  const int tid = threadIdx.x;
  const int grp = tid / a.TW;
  const int l = tid - grp * a.TW;
  const bool in_group = grp < a.G;
  acc_t* xs = xs_all + (in_group ? grp : 0) * (SR * a.XC);

  const scalar_t* xch = x + (oc / a.M) * a.xs1;
  const scalar_t* gch = go + oc * a.gs1;

  acc_t acc[K][K];
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int j = 0; j < K; ++j) acc[i][j] = acc_t(0);
  acc_t bacc = acc_t(0);

  const int u_begin = chunk * a.units_per_chunk;
  const int u_end = min(u_begin + a.units_per_chunk, a.units_per_oc);
  for (int ub = u_begin; ub < u_end; ub += a.G) {
    const int u = ub + grp;
    const bool uvalid = in_group && u < u_end;
    int t = uvalid ? u : 0;
    const int ct = t % a.nct;
    t /= a.nct;
    const int b = t % a.nbands;
    t /= a.nbands;
    const int r = t % a.E;
    const int n = t / a.E;
    const int oh_first = r + b * RV * a.E;
    const int rem = a.Ho - oh_first;
    const int nvh = (uvalid && rem > 0) ? min(RV, (rem + a.E - 1) / a.E) : 0;
    const int ow_first = ct * a.TW;
    const int ncv = uvalid ? min(a.TW, a.Wo - ow_first) : 0;
    const bool cvalid = l < ncv;
    const int rows_needed = nvh == 0 ? 0 : A * (nvh - 1) + K;
    const int64_t xr0 = static_cast<int64_t>(oh_first) * a.sh - a.pt;  // staged row tr: xr0 + tr*dh
    const int64_t xc0 = static_cast<int64_t>(ow_first) * a.sw - a.pl;

    // grad_output of this thread: rows oh_first + v*E, column ow_first + l
    acc_t g[RV];
    {
      const scalar_t* gp = gch + static_cast<int64_t>(n) * a.gs0 + static_cast<int64_t>(ow_first + l) * a.gs3 +
                           static_cast<int64_t>(oh_first) * a.gs2;
      const int64_t rstep = static_cast<int64_t>(a.E) * a.gs2;
#pragma unroll
      for (int v = 0; v < RV; ++v) g[v] = (cvalid && v < nvh) ? to_acc(ldg(gp + v * rstep)) : acc_t(0);
    }

    __syncthreads();  // previous round's compute is done with the tiles
    if (in_group) {
      const scalar_t* xn = xch + static_cast<int64_t>(n) * a.xs0;
      for (int j = l; j < a.XC; j += a.TW) {
        const int64_t xcol = xc0 + j;
        const bool colok = nvh > 0 && xcol >= 0 && xcol < a.W;
        const scalar_t* xcp = xn + xcol * a.xs3;
        // batches of SB rows in flight (bounded register use next to the K*K accumulators)
        constexpr int SB = 5;
#pragma unroll
        for (int t0 = 0; t0 < SR; t0 += SB) {
          acc_t v[SB];
#pragma unroll
          for (int s = 0; s < SB; ++s) {
            const int tr = t0 + s;
            const int64_t xrow = xr0 + static_cast<int64_t>(tr) * a.dh;
            v[s] = (tr < SR && colok && tr < rows_needed && xrow >= 0 && xrow < a.H)
                       ? to_acc(ldg(xcp + xrow * a.xs2))
                       : acc_t(0);
          }
#pragma unroll
          for (int s = 0; s < SB; ++s) {
            if (t0 + s < SR) xs[(t0 + s) * a.XC + j] = v[s];
          }
        }
      }
    }
    __syncthreads();

    if (cvalid) {
      const acc_t* xp = xs + l * a.sw;
      if (nvh == RV) {
#pragma unroll
        for (int tr = 0; tr < SR; ++tr) {
          acc_t w[K];
#pragma unroll
          for (int kw = 0; kw < K; ++kw) w[kw] = xp[tr * a.XC + kw * a.dw];
#pragma unroll
          for (int v = 0; v < RV; ++v) {
            const int kh = tr - A * v;
            if (kh >= 0 && kh < K) {
#pragma unroll
              for (int kw = 0; kw < K; ++kw) acc[kh][kw] = fma(g[v], w[kw], acc[kh][kw]);
            }
          }
        }
      } else {
        // partial band: rows v >= nvh are skipped so that non-finite inputs only reach
        // the taps they belong to
#pragma unroll
        for (int tr = 0; tr < SR; ++tr) {
          if (tr < rows_needed) {
            acc_t w[K];
#pragma unroll
            for (int kw = 0; kw < K; ++kw) w[kw] = xp[tr * a.XC + kw * a.dw];
#pragma unroll
            for (int v = 0; v < RV; ++v) {
              const int kh = tr - A * v;
              if (kh >= 0 && kh < K && v < nvh) {
#pragma unroll
                for (int kw = 0; kw < K; ++kw) acc[kh][kw] = fma(g[v], w[kw], acc[kh][kw]);
              }
            }
          }
        }
      }
#pragma unroll
      for (int v = 0; v < RV; ++v) bacc += g[v];
    }
  }

  // Block reduction in a fixed order: warp tree, then warps in index order.
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int nwarps = blockDim.x >> 5;
#pragma unroll
  for (int i = 0; i <= TT; ++i) {
    acc_t v = i < TT ? acc[i / K][i % K] : bacc;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) red[warp][i] = v;
  }
  __syncthreads();
  acc_t* wsp = ws + (static_cast<int64_t>(chunk) * a.C_out + oc) * a.T1;
  for (int i = tid; i <= TT; i += blockDim.x) {
    acc_t s = acc_t(0);
    for (int w = 0; w < nwarps; ++w) s += red[w][i];
    wsp[i] = s;  // T1 == TT + 1: taps then bias
  }
}

template <typename scalar_t, int K, int A>
bool launch_planar_fast(const DepthwiseConv2dParams& p, const BwdWeightIO& io) {
  using acc_t = AccType<scalar_t>;
  constexpr int RV = pf_rv<K, A>();
  constexpr int SR = A * (RV - 1) + K;
  PlanarFastArgs a{};
  a.C_out = p.out_channels;
  a.M = p.multiplier;
  a.xs0 = p.in_strides[0]; a.xs1 = p.in_strides[1]; a.xs2 = p.in_strides[2]; a.xs3 = p.in_strides[3];
  a.gs0 = p.out_strides[0]; a.gs1 = p.out_strides[1]; a.gs2 = p.out_strides[2]; a.gs3 = p.out_strides[3];
  a.H = static_cast<int>(p.in_h); a.W = static_cast<int>(p.in_w);
  a.Ho = static_cast<int>(p.out_h); a.Wo = static_cast<int>(p.out_w);
  a.sh = static_cast<int>(p.stride_h); a.sw = static_cast<int>(p.stride_w);
  a.dh = static_cast<int>(p.dilation_h); a.dw = static_cast<int>(p.dilation_w);
  a.pt = static_cast<int>(p.pad_top); a.pl = static_cast<int>(p.pad_left);
  a.E = A == 1 ? a.dh / a.sh : a.dh;
  const int64_t nq = ceil_div<int64_t>(p.out_h, a.E);
  a.nbands = static_cast<int>(ceil_div<int64_t>(nq, RV));
  const int ntw = static_cast<int>(ceil_div<int64_t>(p.out_w, kMaxThreads));
  a.TW = static_cast<int>(ceil_div<int64_t>(p.out_w, ntw));
  a.T1 = K * K + 1;
  const int64_t static_smem = static_cast<int64_t>(kMaxThreads / 32) * (K * K + 1) * sizeof(acc_t);
  const int64_t budget = kDefaultSmem - static_smem;
  int64_t unit_bytes = 0;
  for (;;) {
    const int64_t xc = static_cast<int64_t>(a.TW - 1) * a.sw + static_cast<int64_t>(K - 1) * a.dw + 1;
    unit_bytes = static_cast<int64_t>(SR) * xc * static_cast<int64_t>(sizeof(acc_t));
    a.XC = static_cast<int>(imin64(xc, int64_t(1) << 30));
    if (unit_bytes <= budget || a.TW <= 32) break;
    a.TW = static_cast<int>(ceil_div(a.TW, 2));
  }
  if (unit_bytes > budget) return false;  // large dilation / stride: generic kernel
  a.nct = static_cast<int>(ceil_div<int64_t>(p.out_w, a.TW));
  const int64_t units = p.batch * a.E * a.nbands * a.nct;
  if (units >= (int64_t(1) << 30)) return false;
  a.units_per_oc = static_cast<int>(units);
  int64_t G = std::max<int64_t>(1, kMaxThreads / a.TW);
  G = imin64(G, budget / unit_bytes);
  G = imin64(G, units);
  a.G = static_cast<int>(G);
  const int threads = static_cast<int>(ceil_div<int64_t>(G * a.TW, 32) * 32);
  const int64_t smem = G * unit_bytes;

  const int64_t rounds = ceil_div<int64_t>(units, G);
  const int64_t min_rounds = K == 7 ? 6 : 4;  // amortise the per-block reduction
  const int64_t target = sm_count() * pf_min_blocks<K, A>() * 4;
  int64_t nchunks = std::max<int64_t>(1, ceil_div<int64_t>(target, a.C_out));
  nchunks = imin64(nchunks, std::max<int64_t>(1, rounds / min_rounds));
  nchunks = imin64(nchunks, 4096);
  const int64_t rpc = ceil_div(rounds, nchunks);
  nchunks = ceil_div(rounds, rpc);
  a.units_per_chunk = static_cast<int>(rpc * G);
  const int64_t nblocks = nchunks * a.C_out;
  if (nblocks > kI32Max) return false;

  acc_t* ws = io.workspace<acc_t>(nchunks, a.C_out * a.T1);
  dw_bwd_weight_planar_fast_kernel<scalar_t, K, A>
      <<<static_cast<unsigned>(nblocks), threads, static_cast<size_t>(smem), io.stream>>>(
          static_cast<const scalar_t*>(io.x), static_cast<const scalar_t*>(io.go), ws, a);
  CONVEXT_LAUNCH_CHECK();
  launch_reduce<scalar_t>(ws, nchunks, a.C_out * a.T1, a.T1, io);
  return true;
}


// One specialisation: square kernel K, row mode A (1: sh | dh; 2: sh == 2, dh odd).
template <int K_, int A_>
struct PlanarFastConfig {
  static constexpr int K = K_, A = A_;
  static bool matches(int64_t k, int a) { return k == K && a == A; }
};

using PlanarFastConfigs = ConfigList<PlanarFastConfig<3, 1>, PlanarFastConfig<3, 2>, PlanarFastConfig<5, 1>,
                                     PlanarFastConfig<5, 2>, PlanarFastConfig<7, 1>, PlanarFastConfig<7, 2>>;

// Fast planar path; false when the shape is not covered (caller falls back).
template <typename scalar_t>
bool run_bwd_weight_planar_fast(const DepthwiseConv2dParams& p, const BwdWeightIO& io) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return false;
  } else {
    if (!fast_path_enabled(kFpWeightPlanar)) return false;
    const int64_t K = p.kernel_h;
    if (p.kernel_w != K || (K != 3 && K != 5 && K != 7)) return false;
    // 32-bit row / column / unit indices inside the kernel (element offsets stay 64-bit)
    const int64_t lim = int64_t(1) << 30;
    if (p.in_h >= lim || p.in_w >= lim || p.out_h >= lim || p.out_w >= lim || p.batch >= lim) return false;
    if (p.out_w * p.stride_w + p.pad_left + K * p.dilation_w >= lim) return false;
    int A = 0;
    if (p.dilation_h % p.stride_h == 0) {
      A = 1;
    } else if (p.stride_h == 2) {
      A = 2;  // dilation_h odd
    } else {
      return false;
    }
    return first_of(PlanarFastConfigs{}, [&](auto cfg) {
      using C = decltype(cfg);
      return C::matches(K, A) && launch_planar_fast<scalar_t, C::K, C::A>(p, io);
    });
  }
}

}  // namespace cuda
}  // namespace convext
