// Forward engine, grad-input gather family (fast path "gather": stride > 1 grad-input): the NCHW
// and channels_last gather kernels and their launchers. Instantiated by
// depthwise_conv2d_fwd_gather.cu; off with CONVEXT_DISABLE_FAST_PATHS=gather (or =1), which
// leaves stride > 1 grad-input to the generic kernel.
#pragma once

#include "cuda/depthwise_conv2d_forward.cuh"

#include <algorithm>
#include <numeric>

namespace convext {
namespace cuda {

// ---------------------------------------------------------------------------
// Grad-input gather for stride > 1 (replaces the int64 generic kernel there).
// For a dst row y, the taps kh with (y + pt - kh*dh) % sh == 0 form the progression
// kh = k0(r) + j*ksh (r = (y + pt) % sh, ksh = sh / gcd(sh, dh)), and the source row is
// sy = (y + pt) / sh - off(r) - j*dlh (dlh = dh / gcd(sh, dh)); same along W. The
// per-residue (k0, off, J) tables are built on the host, copied to shared memory, so each
// output walks only its valid taps, with 32-bit index math (host checks every offset fits).
// Summation order (r, kh, kw ascending) is the generic kernel's.
// ---------------------------------------------------------------------------
constexpr int kGS = 8;  // max stride handled by the gather fast path

struct GatherCfg {
  int tab[6][kGS];  // k0_h, off_h, J_h, k0_w, off_w, J_w (indexed by residue)
  int ksh, ksw, dlh, dlw;
  int sh, sw, pt, pl;
  int H_src, W_src, H_dst, W_dst, KH, KW, M, C_dst;
  int ss0, ss1, ss2, ss3, ds0, ds1, ds2, ds3;
  int HG, ngroups;       // nchw: row groups per plane, planes * HG
  int npos, iters, CB;   // nhwc: N * H_dst * W_dst, positions per thread, channels per block
};

__device__ __forceinline__ void load_gather_tab(const GatherCfg& g, int* stab, int tid) {
  if (tid == 0) {
#pragma unroll
    for (int i = 0; i < 6; ++i)
#pragma unroll
      for (int j = 0; j < kGS; ++j) stab[i * kGS + j] = g.tab[i][j];
  }
}

// NCHW (any strides): thread = one dst column x of RY consecutive rows of one plane.
template <typename T, int RY>
__global__ void __launch_bounds__(256)
gather_nchw_kernel(const CorrArgs a, const GatherCfg g) {
  __shared__ int stab[6 * kGS];
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  load_gather_tab(g, stab, tid);
  __syncthreads();
  const int x = static_cast<int>(blockIdx.y) * static_cast<int>(blockDim.x) + static_cast<int>(threadIdx.x);
  const int grp = static_cast<int>(blockIdx.x) * static_cast<int>(blockDim.y) + static_cast<int>(threadIdx.y);
  if (x >= g.W_dst || grp >= g.ngroups) return;  // no barrier below
  const int plane = grp / g.HG;
  const int y0 = (grp - plane * g.HG) * RY;
  const int n = plane / g.C_dst;
  const int c = plane - n * g.C_dst;
  const int xs = x + g.pl;
  const int xq = xs / g.sw, xr = xs - (xs / g.sw) * g.sw;
  const int kw0 = stab[3 * kGS + xr];
  const int sx0 = xq - stab[4 * kGS + xr];
  const int Jw = stab[5 * kGS + xr];
  const int KHW = g.KH * g.KW;
  const T* src = static_cast<const T*>(a.src) + n * g.ss0;
  const T* wbase = static_cast<const T*>(a.weight) + kw0;
  T* dst = static_cast<T*>(a.dst) + n * g.ds0 + c * g.ds1 + x * g.ds3;
  const int ys = y0 + g.pt;
  int yq = ys / g.sh;
  int yr = ys - yq * g.sh;
#pragma unroll 1
  for (int i = 0; i < RY; ++i) {
    const int y = y0 + i;
    if (y >= g.H_dst) break;
    const int kh0 = stab[yr];
    const int sy0 = yq - stab[kGS + yr];
    const int Jh = stab[2 * kGS + yr];
    float acc = 0.f;
    for (int r = 0; r < g.M; ++r) {
      const int cs = c * g.M + r;
      const T* sp = src + cs * g.ss1;
      const T* wp = wbase + cs * KHW;
      for (int jh = 0; jh < Jh; ++jh) {
        const int sy = sy0 - jh * g.dlh;
        if (sy < 0) break;
        if (sy >= g.H_src) continue;
        const T* rowp = sp + sy * g.ss2;
        const T* wrow = wp + (kh0 + jh * g.ksh) * g.KW;
        for (int jw = 0; jw < Jw; ++jw) {
          const int sx = sx0 - jw * g.dlw;
          if (sx < 0) break;
          if (sx >= g.W_src) continue;
          acc = fmaf(to_acc(ldg(rowp + sx * g.ss3)), to_acc(ldg(wrow + jw * g.ksw)), acc);
        }
      }
    }
    dst[y * g.ds2] = from_acc<T>(acc);
    if (++yr == g.sh) {
      yr = 0;
      ++yq;
    }
  }
}

// channels_last (M == 1, V-channel vectors): thread = V channels x `iters` positions;
// block = CB channels, their weights staged in shared memory as [tap][CB] floats.
template <typename T, int V>
__global__ void __launch_bounds__(256)
gather_nhwc_kernel(const CorrArgs a, const GatherCfg g) {
  extern __shared__ float4 smem_f4[];
  float* wsm = reinterpret_cast<float*>(smem_f4);
  __shared__ int stab[6 * kGS];
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int nthr = blockDim.x * blockDim.y;
  const int c0 = static_cast<int>(blockIdx.y) * g.CB;
  const int KHW = g.KH * g.KW;
  load_gather_tab(g, stab, tid);
  {
    const T* wp = static_cast<const T*>(a.weight);
    const int total = KHW * g.CB;
    for (int e = tid; e < total; e += nthr) {
      const int tap = e / g.CB;
      const int cl = e - tap * g.CB;
      const int ch = c0 + cl;
      wsm[e] = ch < g.C_dst ? to_acc(ldg(wp + ch * KHW + tap)) : 0.f;
    }
  }
  __syncthreads();
  const int cl = static_cast<int>(threadIdx.x) * V;
  const int ch = c0 + cl;
  if (ch >= g.C_dst) return;  // no barrier below
  const T* srcc = static_cast<const T*>(a.src) + ch;
  T* dstc = static_cast<T*>(a.dst) + ch;
  const float* wcl = wsm + cl;
#pragma unroll 1
  for (int it = 0; it < g.iters; ++it) {
    const int p = (static_cast<int>(blockIdx.x) * g.iters + it) * static_cast<int>(blockDim.y) +
                  static_cast<int>(threadIdx.y);
    if (p >= g.npos) break;
    const int nrow = p / g.W_dst;
    const int x = p - nrow * g.W_dst;
    const int n = nrow / g.H_dst;
    const int y = nrow - n * g.H_dst;
    const int ys = y + g.pt, xs = x + g.pl;
    const int yq = ys / g.sh, yr = ys - (ys / g.sh) * g.sh;
    const int xq = xs / g.sw, xr = xs - (xs / g.sw) * g.sw;
    const int kh0 = stab[yr], sy0 = yq - stab[kGS + yr], Jh = stab[2 * kGS + yr];
    const int kw0 = stab[3 * kGS + xr], sx0 = xq - stab[4 * kGS + xr], Jw = stab[5 * kGS + xr];
    float acc[V];
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] = 0.f;
    const T* sp = srcc + n * g.ss0;
    for (int jh = 0; jh < Jh; ++jh) {
      const int sy = sy0 - jh * g.dlh;
      if (sy < 0) break;
      if (sy >= g.H_src) continue;
      const T* rowp = sp + sy * g.ss2;
      const float* wrow = wcl + ((kh0 + jh * g.ksh) * g.KW + kw0) * g.CB;
      for (int jw = 0; jw < Jw; ++jw) {
        const int sx = sx0 - jw * g.dlw;
        if (sx < 0) break;
        if (sx >= g.W_src) continue;
        const Vec<T, V> xv = load_vec<T, V>(rowp + sx * g.ss3);
        const float* wv = wrow + jw * g.ksw * g.CB;
#pragma unroll
        for (int q = 0; q < V / 4; ++q) {
          const float4 w4 = *reinterpret_cast<const float4*>(wv + 4 * q);
          acc[4 * q + 0] = fmaf(to_acc(xv.v[4 * q + 0]), w4.x, acc[4 * q + 0]);
          acc[4 * q + 1] = fmaf(to_acc(xv.v[4 * q + 1]), w4.y, acc[4 * q + 1]);
          acc[4 * q + 2] = fmaf(to_acc(xv.v[4 * q + 2]), w4.z, acc[4 * q + 2]);
          acc[4 * q + 3] = fmaf(to_acc(xv.v[4 * q + 3]), w4.w, acc[4 * q + 3]);
        }
      }
    }
    Vec<T, V> o;
#pragma unroll
    for (int v = 0; v < V; ++v) o.v[v] = from_acc<T>(acc[v]);
    store_vec<T, V>(dstc + n * g.ds0 + y * g.ds2 + x * g.ds3, o);
  }
}

// Residue tables of one dimension (stride s, dilation d, kernel K); false if s > kGS.
inline bool fill_gather_dim(int64_t s, int64_t d, int64_t K, int* k0, int* off, int* J, int& ks, int& dl) {
  if (s < 1 || s > kGS || d < 1 || K < 1 || K > kI32Max / 2 || d > kI32Max / (2 * K)) return false;
  const int64_t gg = std::gcd(s, d);
  ks = static_cast<int>(s / gg);
  dl = static_cast<int>(d / gg);
  for (int r = 0; r < kGS; ++r) k0[r] = off[r] = J[r] = 0;
  for (int64_t r = 0; r < s; ++r) {
    for (int64_t k = 0; k < ks; ++k) {
      if ((k * d) % s == r) {
        if (k < K) {
          k0[r] = static_cast<int>(k);
          off[r] = static_cast<int>((k * d - r) / s);  // k*d >= r, exact
          J[r] = static_cast<int>(ceil_div<int64_t>(K - k, ks));
        }
        break;
      }
    }
  }
  return true;
}


inline bool plan_gather(const CorrArgs& a, GatherCfg& g) {
  if (a.bias != nullptr) return false;
  if (!fill_gather_dim(a.sh, a.dh, a.KH, g.tab[0], g.tab[1], g.tab[2], g.ksh, g.dlh)) return false;
  if (!fill_gather_dim(a.sw, a.dw, a.KW, g.tab[3], g.tab[4], g.tab[5], g.ksw, g.dlw)) return false;
  if (!engine_fits_i32(a, kI32Max)) return false;
  if (a.C_src * a.KH * a.KW >= kI32Max) return false;
  if (a.N * a.C_dst * a.H_dst * a.W_dst >= kI32Max / 2) return false;
  if (a.pt < 0 || a.pl < 0 || a.pt + a.H_dst >= kI32Max / 2 || a.pl + a.W_dst >= kI32Max / 2) return false;
  if (a.C_src != a.C_dst * a.M) return false;
  fill_i32_geometry(g, a);
  g.sh = static_cast<int>(a.sh); g.sw = static_cast<int>(a.sw);
  g.KH = static_cast<int>(a.KH); g.KW = static_cast<int>(a.KW);
  g.M = static_cast<int>(a.M);
  g.ss1 = static_cast<int>(a.ss[1]); g.ds1 = static_cast<int>(a.ds[1]);
  g.HG = g.ngroups = g.npos = g.iters = g.CB = 0;
  return true;
}

template <typename T>
bool launch_gather_nchw(const CorrArgs& a, cudaStream_t stream) {
  GatherCfg g;
  if (!plan_gather(a, g)) return false;
  constexpr int RY = 4;
  g.HG = static_cast<int>(ceil_div<int64_t>(a.H_dst, RY));
  const int64_t ngroups = a.N * a.C_dst * g.HG;
  if (ngroups >= kI32Max / 2) return false;
  g.ngroups = static_cast<int>(ngroups);
  const int bx = static_cast<int>(std::min<int64_t>(256, ceil_div<int64_t>(a.W_dst, 32) * 32));
  const int by = 256 / bx;
  const int64_t gx = ceil_div<int64_t>(ngroups, by);
  const int64_t gy = ceil_div<int64_t>(a.W_dst, bx);
  if (gx >= kI32Max || gy > 65535) return false;
  gather_nchw_kernel<T, RY><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(bx, by), 0, stream>>>(a, g);
  CONVEXT_LAUNCH_CHECK();
  return true;
}

template <typename T, int V>
bool launch_gather_nhwc(const CorrArgs& a, cudaStream_t stream) {
  GatherCfg g;
  if (a.M != 1 || !plan_gather(a, g)) return false;
  const int64_t cvec = a.C_dst / V;
  const int64_t wbytes_per_vec = a.KH * a.KW * V * 4;
  const int tx = static_cast<int>(std::min<int64_t>({cvec, 32, kMaxSmem / wbytes_per_vec}));
  if (tx < 1) return false;
  g.CB = tx * V;
  const int smem = static_cast<int>(a.KH * a.KW * g.CB * 4);
  if (smem > kMaxSmem) return false;
  const int ty = std::max(1, 256 / tx);
  const int64_t npos = a.N * a.H_dst * a.W_dst;
  if (npos + int64_t(256) * 64 >= kI32Max / 2) return false;
  g.npos = static_cast<int>(npos);
  const int64_t cblocks = ceil_div<int64_t>(a.C_dst, g.CB);
  if (cblocks > 65535) return false;
  const int64_t groups = ceil_div<int64_t>(npos, ty);
  const int64_t target_blocks = sm_count() * 16;
  g.iters = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(8, groups * cblocks / target_blocks)));
  const int64_t gx = ceil_div<int64_t>(groups, g.iters);
  if (gx >= kI32Max) return false;
  auto kernel = gather_nhwc_kernel<T, V>;
  set_smem_limit(kernel, smem);
  kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(cblocks)), dim3(tx, ty), smem, stream>>>(a, g);
  CONVEXT_LAUNCH_CHECK();
  return true;
}


template <typename T>
bool run_fwd_gather(const CorrArgs& a, bool dst_cl, cudaStream_t stream) {
  if (dst_cl) {
    if constexpr (sizeof(T) == 2) {
      if (engine_nhwc_vec_ok(a, 8, sizeof(T)) && launch_gather_nhwc<T, 8>(a, stream)) return true;
    }
    if (engine_nhwc_vec_ok(a, 4, sizeof(T)) && launch_gather_nhwc<T, 4>(a, stream)) return true;
  }
  return launch_gather_nchw<T>(a, stream);
}

}  // namespace cuda
}  // namespace convext
