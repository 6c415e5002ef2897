// Forward engine, NCHW shared-memory tile family: nchw_tile_kernel and its launcher.
//
// nchw_tile_kernel<T, KH, KW, S, RH, CW>: a block holds CZ (n, cd) planes x one 2-D output tile;
// the input tile (+halo) and the plane's weights are staged in shared memory as float, each
// thread computes an RH x CW register block (rows spaced dh, columns spaced dw, so the register
// sliding window is indexed by compile-time constants for any dilation). KH = KW = 0: runtime
// kernel size, taps walked in chunks of 4 with weights read as float4 (the large-kernel,
// FMA-bound path). Window reads are float4 when dw == 1.
// Specialisations: kTileConfigs below (instantiated by depthwise_conv2d_fwd_tile.cu).
#pragma once

#include "cuda/depthwise_conv2d_forward.cuh"
#include "cuda/static_switch.cuh"

#include <algorithm>
#include <limits>

namespace convext {
namespace cuda {

struct TileCfg {
  int TX, TY;          // threads per plane along x, y (TX % dw == 0, TY % dh == 0)
  int THo, TWo;        // output tile (RH*TY, CW*TX)
  int tiles_w;         // tiles along W
  int SR, pitch;       // input tile rows, row pitch in floats
  int nchunks, KWP;    // tap chunks along W, padded taps per weight row (nchunks * 4-rounded U)
  int plane_floats;    // shared floats per plane (tile + weights), multiple of 4
  int KH, KW;          // runtime kernel size (for KH = KW = 0 instantiations)
  int dh, dw;
  int nplanes, C_dst, M;  // N * C_dst, C_dst, multiplier (all < 2^31)
};

template <int N_>
__device__ __forceinline__ void lds_vec(const float* p, float (&v)[N_]) {
  // p is 16-byte aligned; N_ % 4 == 0
#pragma unroll
  for (int q = 0; q < N_ / 4; ++q) {
    float4 f = reinterpret_cast<const float4*>(p)[q];
    v[4 * q + 0] = f.x;
    v[4 * q + 1] = f.y;
    v[4 * q + 2] = f.z;
    v[4 * q + 3] = f.w;
  }
}

template <typename T, int KH_, int KW_, int S, int RH, int CW>
__global__ void __launch_bounds__(kMaxThreads, 2)
nchw_tile_kernel(const CorrArgs a, const TileCfg g) {
  constexpr bool kStatic = KH_ > 0;
  constexpr int U = kStatic ? KW_ : 4;                 // taps per chunk
  constexpr int UP = (U + 3) / 4 * 4;                  // padded chunk width in the weight rows
  constexpr int WL = (CW - 1) * S + U;                 // window length
  constexpr int WL4 = (WL + 3) / 4 * 4;

  extern __shared__ float4 smem_f4[];
  float* smem = reinterpret_cast<float*>(smem_f4);

  const int KH = kStatic ? KH_ : g.KH;
  const int KW = kStatic ? KW_ : g.KW;
  const int nchunks = kStatic ? 1 : g.nchunks;
  const int KWP = kStatic ? UP : g.KWP;
  const int dh = g.dh, dw = g.dw;
  const int pitch = g.pitch;

  const int z = threadIdx.y;
  const int tid = threadIdx.x;
  const int nthr = blockDim.x;
  // 32-bit plane math (the host checks N * C_dst * M < 2^31)
  const int plane = static_cast<int>(blockIdx.x) * static_cast<int>(blockDim.y) + z;
  const bool plane_ok = plane < g.nplanes;
  const int n = plane_ok ? plane / g.C_dst : 0;
  const int cd = plane_ok ? plane - n * g.C_dst : 0;

  float* tile = smem + static_cast<int64_t>(z) * g.plane_floats;
  float* wsm = tile + g.SR * pitch;  // SR * pitch is a multiple of 4

  const int th = blockIdx.y / g.tiles_w;
  const int tw = blockIdx.y - th * g.tiles_w;
  const int64_t oh0 = static_cast<int64_t>(th) * g.THo;
  const int64_t ow0 = static_cast<int64_t>(tw) * g.TWo;
  const int64_t ih0 = oh0 * S - a.pt;
  const int64_t iw0 = ow0 * S - a.pl;

  // thread's register block
  const int tx = tid % g.TX, ty = tid / g.TX;
  const int LC0 = (tx / dw) * CW * dw + (tx % dw);
  const int LR0 = (ty / dh) * RH * dh + (ty % dh);
  const bool active = plane_ok && (oh0 + LR0 < a.H_dst) && (ow0 + LC0 < a.W_dst);

  float acc[RH][CW];
  {
    float b0 = 0.f;
    if (a.bias != nullptr && plane_ok) b0 = to_acc(ldg(static_cast<const T*>(a.bias) + cd));
#pragma unroll
    for (int j = 0; j < RH; ++j)
#pragma unroll
      for (int i = 0; i < CW; ++i) acc[j][i] = b0;
  }

  const int R = a.reduce_m ? g.M : 1;
  const int SC = pitch;  // load the full pitch (extra columns read as zeros / in-image values)
  const int tile_elems = g.SR * SC;
  for (int r = 0; r < R; ++r) {
    if (r > 0) __syncthreads();
    if (plane_ok) {
      const int cs = a.reduce_m ? cd * g.M + r : cd / g.M;
      const int wrow = a.reduce_m ? cd * g.M + r : cd;
      const T* src = static_cast<const T*>(a.src) + n * a.ss[0] + cs * a.ss[1];
      // input tile, zero outside the image; 4 independent loads in flight per thread
      constexpr int B = 4;
      int rr = tid / SC, cc = tid - (tid / SC) * SC;
      const int dr = nthr / SC, dc = nthr - dr * SC;
      for (int e0 = tid; e0 < tile_elems; e0 += B * nthr) {
        float v[B];
#pragma unroll
        for (int k = 0; k < B; ++k) {
          const int64_t ih = ih0 + rr, iw = iw0 + cc;
          v[k] = 0.f;
          if (e0 + k * nthr < tile_elems && ih >= 0 && ih < a.H_src && iw >= 0 && iw < a.W_src)
            v[k] = to_acc(ldg(src + ih * a.ss[2] + iw * a.ss[3]));
          rr += dr;
          cc += dc;
          if (cc >= SC) { cc -= SC; ++rr; }
        }
#pragma unroll
        for (int k = 0; k < B; ++k)
          if (e0 + k * nthr < tile_elems) tile[e0 + k * nthr] = v[k];
      }
      // weights: row kh, chunk c, slot u -> tap kw = c*U + u (zero beyond KW)
      const T* wp = static_cast<const T*>(a.weight) + static_cast<int64_t>(wrow) * KH * KW;
      const int welems = KH * KWP;
      for (int e = tid; e < welems; e += nthr) {
        const int kh = e / KWP, rem = e - kh * KWP;
        const int c = rem / UP, u = rem - c * UP;
        const int kw = c * U + u;
        float v = 0.f;
        if (u < U && kw < KW) {
          const int kh2 = a.flip ? KH - 1 - kh : kh;
          const int kw2 = a.flip ? KW - 1 - kw : kw;
          v = to_acc(ldg(wp + kh2 * KW + kw2));
        }
        wsm[e] = v;
      }
    }
    __syncthreads();
    if (!active) continue;

    const float* tbase = tile + LR0 * S * pitch + LC0 * S;
    if constexpr (kStatic) {
      float w[KH_][KW_];
#pragma unroll
      for (int kh = 0; kh < KH_; ++kh) {
        float wv[UP];
        lds_vec<UP>(wsm + kh * UP, wv);
#pragma unroll
        for (int kw = 0; kw < KW_; ++kw) w[kh][kw] = wv[kw];
      }
#pragma unroll
      for (int t = 0; t < (RH - 1) * S + KH_; ++t) {
        const float* rowp = tbase + t * dh * pitch;
        float win[WL4];
        if (dw == 1) {
          lds_vec<WL4>(rowp, win);
        } else {
#pragma unroll
          for (int q = 0; q < WL; ++q) win[q] = rowp[q * dw];
        }
#pragma unroll
        for (int j = 0; j < RH; ++j) {
          const int kh = t - j * S;
          if (kh >= 0 && kh < KH_) {
#pragma unroll
            for (int kw = 0; kw < KW_; ++kw)
#pragma unroll
              for (int i = 0; i < CW; ++i) acc[j][i] = fmaf(w[kh][kw], win[i * S + kw], acc[j][i]);
          }
        }
      }
    } else {
      const int nrows = (RH - 1) * S + KH;
      for (int t = 0; t < nrows; ++t) {
        const float* rowp = tbase + t * dh * pitch;
        for (int c = 0; c < nchunks; ++c) {
          const float* cp = rowp + c * U * dw;
          float win[WL4];
          if (dw == 1) {
            lds_vec<WL4>(cp, win);
          } else {
#pragma unroll
            for (int q = 0; q < WL; ++q) win[q] = cp[q * dw];
          }
          const int ulim = KW - c * U;  // taps beyond KW are skipped (never 0 * inf)
#pragma unroll
          for (int j = 0; j < RH; ++j) {
            const int kh = t - j * S;
            if (kh >= 0 && kh < KH) {
              float wv[4];
              lds_vec<4>(wsm + kh * KWP + c * 4, wv);
#pragma unroll
              for (int u = 0; u < 4; ++u) {
                if (u < ulim) {
#pragma unroll
                  for (int i = 0; i < CW; ++i) acc[j][i] = fmaf(wv[u], win[i * S + u], acc[j][i]);
                }
              }
            }
          }
        }
      }
    }
  }
  if (!active) return;

  // store
  T* dst = static_cast<T*>(a.dst) + n * a.ds[0] + cd * a.ds[1];
#pragma unroll
  for (int j = 0; j < RH; ++j) {
    const int64_t oh = oh0 + LR0 + j * dh;
    if (oh >= a.H_dst) break;
    const int64_t owb = ow0 + LC0;
    T* rowd = dst + oh * a.ds[2];
    constexpr int VB = CW * static_cast<int>(sizeof(T));
    if constexpr (VB == 8 || VB == 16) {
      if (dw == 1 && a.ds[3] == 1 && owb + CW <= a.W_dst && is_aligned(rowd + owb, VB)) {
        Vec<T, CW> v;
#pragma unroll
        for (int i = 0; i < CW; ++i) v.v[i] = from_acc<T>(acc[j][i]);
        store_vec<T, CW>(rowd + owb, v);
        continue;
      }
    }
    if constexpr (CW == 8 && sizeof(T) == 4) {
      if (dw == 1 && a.ds[3] == 1 && owb + CW <= a.W_dst && is_aligned(rowd + owb, 16)) {
        Vec<T, 4> v0, v1;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          v0.v[i] = from_acc<T>(acc[j][i]);
          v1.v[i] = from_acc<T>(acc[j][i + 4]);
        }
        store_vec<T, 4>(rowd + owb, v0);
        store_vec<T, 4>(rowd + owb + 4, v1);
        continue;
      }
    }
#pragma unroll
    for (int i = 0; i < CW; ++i) {
      const int64_t ow = owb + static_cast<int64_t>(i) * dw;
      if (ow < a.W_dst) rowd[ow * a.ds[3]] = from_acc<T>(acc[j][i]);
    }
  }
}

// Plans the NCHW tile launch for register block (RH, CW), chunk width U (taps per chunk;
// UP its 4-rounded width), static or not. Returns false if the shape does not fit.
inline bool plan_tile(const CorrArgs& a, int RH, int CW, int U, bool is_static, int S, TileCfg& g, int& CZ,
               int& smem_bytes, int64_t& grid_x) {
  const int64_t dh = a.dh, dw = a.dw;
  if (dh > 16 || dw > 16 || a.KH > 64 || a.KW > 64) return false;
  auto pick = [](int64_t extent, int per, int64_t dil, int cap, int& T, int& tiles) {
    const int64_t want = ceil_div<int64_t>(extent, per);
    const int64_t ntiles = ceil_div<int64_t>(want, cap);
    int64_t t = ceil_div<int64_t>(want, ntiles);
    t = ceil_div<int64_t>(t, dil) * dil;
    T = static_cast<int>(t);
    tiles = static_cast<int>(ceil_div<int64_t>(extent, t * per));
  };
  int tiles_h, tiles_w;
  pick(a.W_dst, CW, dw, 8, g.TX, tiles_w);
  pick(a.H_dst, RH, dh, 8, g.TY, tiles_h);
  if (g.TX * g.TY > kMaxThreads) return false;
  if (static_cast<int64_t>(tiles_h) * tiles_w > 65535) return false;
  g.THo = RH * g.TY;
  g.TWo = CW * g.TX;
  g.tiles_w = tiles_w;
  g.KH = static_cast<int>(a.KH);
  g.KW = static_cast<int>(a.KW);
  g.dh = static_cast<int>(dh);
  g.dw = static_cast<int>(dw);
  const int UP = (U + 3) / 4 * 4;
  g.nchunks = is_static ? 1 : static_cast<int>(ceil_div<int64_t>(a.KW, U));
  g.KWP = g.nchunks * UP;
  g.SR = (g.THo - 1) * S + static_cast<int>(dh) * (g.KH - 1) + 1;
  int SC = (g.TWo - 1) * S + static_cast<int>(dw) * (g.nchunks * U - 1) + 1 + 3;
  int pitch = (SC + 3) / 4 * 4;
  if (pitch % 32 == 0) pitch += 4;
  g.pitch = pitch;
  g.plane_floats = g.SR * g.pitch + g.KH * g.KWP;  // both multiples of 4
  const int per_plane = g.plane_floats * 4;
  if (per_plane > kMaxSmem) return false;
  const int64_t nplanes = a.N * a.C_dst;
  if (nplanes * a.M >= kI32Max) return false;
  g.nplanes = static_cast<int>(nplanes);
  g.C_dst = static_cast<int>(a.C_dst);
  g.M = static_cast<int>(a.M);
  int cz = std::max(1, kMaxThreads / (g.TX * g.TY));
  cz = std::min<int64_t>(cz, nplanes);
  cz = std::min(cz, kMaxSmem / per_plane);
  CZ = std::max(cz, 1);
  smem_bytes = CZ * per_plane;
  grid_x = ceil_div<int64_t>(nplanes, CZ);
  if (grid_x > kI32Max) return false;
  return true;
}

template <typename T, int KH, int KW, int S, int RH, int CW>
bool launch_tile(const CorrArgs& a, cudaStream_t stream) {
  constexpr bool is_static = KH > 0;
  constexpr int U = is_static ? KW : 4;
  TileCfg g;
  int CZ, smem;
  int64_t gx;
  if (!plan_tile(a, RH, CW, U, is_static, S, g, CZ, smem, gx)) return false;
  auto kernel = nchw_tile_kernel<T, KH, KW, S, RH, CW>;
  set_smem_limit(kernel, smem);
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(ceil_div<int64_t>(a.H_dst, g.THo) * g.tiles_w));
  dim3 block(g.TX * g.TY, CZ);
  kernel<<<grid, block, smem, stream>>>(a, g);
  CONVEXT_LAUNCH_CHECK();
  return true;
}

// One specialisation: square kernel K (0: runtime kernel size), stride S, RH x CW register block.
template <int K_, int S_, int RH_, int CW_>
struct TileConfig {
  static constexpr int K = K_, S = S_, RH = RH_, CW = CW_;
  static bool matches(const CorrArgs& a) { return a.sh == S && (K == 0 || (a.KH == K && a.KW == K)); }
};

// Tried in order (the caller has checked sh == sw, sh in {1, 2}); a runtime-K entry closes each stride.
using TileConfigs = ConfigList<
    TileConfig<3, 1, 4, 4>,
    TileConfig<5, 1, 4, 4>,
    TileConfig<7, 1, 2, 4>,  // RH 2: 49 weights in registers
    TileConfig<0, 1, 4, 8>,
    TileConfig<3, 2, 4, 4>,
    TileConfig<0, 2, 4, 4>>;

template <typename T>
bool run_fwd_tile(const CorrArgs& a, cudaStream_t stream) {
  return first_of(TileConfigs{}, [&](auto cfg) {
    using C = decltype(cfg);
    return C::matches(a) && launch_tile<T, C::K, C::K, C::S, C::RH, C::CW>(a, stream);
  });
}

}  // namespace cuda
}  // namespace convext
