// CUDA forward depthwise conv2d, and the "correlation engine" it is built on, which
// depthwise_conv2d_backward_input.cu reuses for stride-1 grad-input (a correlation of
// grad_output with the flipped kernel, summed over the depth multiplier).
//
// The engine computes, for every dst element (n, cd, y, x),
//   dst = bias[cd] + sum_{r < R} sum_{kh, kw} src[n, cs(cd, r), y*sh - pt + kh*dh, x*sw - pl + kw*dw]
//                                            * w[wrow(cd, r), kh', kw']
// with zero outside src, where
//   forward       : R = 1, cs = cd / M,   wrow = cd,       (kh', kw') = (kh, kw)
//   grad-input s=1: R = M, cs = cd*M + r, wrow = cd*M + r, (kh', kw') = (KH-1-kh, KW-1-kw)
// Padding may be negative (grad-input with padding larger than the dilated kernel).
//
// Kernels:
//  * nchw_tile_kernel<T, KH, KW, S, RH, CW>: a block holds CZ (n, cd) planes x one 2-D output
//    tile; the input tile (+halo) and the plane's weights are staged in shared memory as float,
//    each thread computes an RH x CW register block (rows spaced dh, columns spaced dw, so the
//    register sliding window is indexed by compile-time constants for any dilation).
//    KH = KW = 0: runtime kernel size, taps walked in chunks of 4 with weights read as float4
//    (the large-kernel, FMA-bound path). Window reads are float4 when dw == 1.
//  * nhwc_kernel<T, U, S, CWN>: channels_last; a thread owns 4 consecutive channels (16 B fp32,
//    8 B fp16/bf16 loads) and a strip of CWN outputs along W (spaced dw), register sliding window
//    along W, weights for the block's channels in shared memory; taps in chunks of U.
//  * generic_kernel<T>: one dst element per thread, int64 indices, any strides / stride / M,
//    also does grad-input gather for stride > 1 (mode kGather). Used for float64 too.
#include "cuda/depthwise_conv2d_common.cuh"
#include "depthwise_conv2d.h"

#include <ATen/cuda/CUDAContext.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>

namespace convext {
namespace cuda {

// CorrArgs and run_depthwise_engine are declared in depthwise_conv2d_common.cuh.

namespace {

constexpr int kMaxThreads = 256;
constexpr int kMaxSmem = 96 * 1024;

// CONVEXT_DISABLE_FAST_PATHS: unset, "" or "0": all fast paths on; "1" (or anything else
// that names none of them): all off; a comma list of names ("gather", "colstrip", "nhwcbal", "nhwc2")
// switches off only those. Read once per process.
enum FastPath : unsigned { kFpGather = 1u, kFpColstrip = 2u, kFpNhwcBalance = 4u, kFpNhwc2 = 8u };

unsigned fast_paths_mask() {
  static const unsigned mask = [] {
    const char* e = std::getenv("CONVEXT_DISABLE_FAST_PATHS");
    const unsigned all = kFpGather | kFpColstrip | kFpNhwcBalance | kFpNhwc2;
    if (e == nullptr || e[0] == '\0' || std::strcmp(e, "0") == 0) return all;
    unsigned off = 0;
    if (std::strstr(e, "gather") != nullptr) off |= kFpGather;
    if (std::strstr(e, "colstrip") != nullptr) off |= kFpColstrip;
    if (std::strstr(e, "nhwcbal") != nullptr) off |= kFpNhwcBalance;
    if (std::strstr(e, "nhwc2") != nullptr) off |= kFpNhwc2;
    if (off == 0) off = all;  // "1", "all", ...
    return all & ~off;
  }();
  return mask;
}

bool fast_path_enabled(unsigned which) { return (fast_paths_mask() & which) != 0; }

// ---------------------------------------------------------------------------
// NCHW tile kernel
// ---------------------------------------------------------------------------
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

template <typename K>
void set_smem_limit(K kernel, int bytes) {
  if (bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem));
  }
}

// Plans the NCHW tile launch for register block (RH, CW), chunk width U (taps per chunk;
// UP its 4-rounded width), static or not. Returns false if the shape does not fit.
bool plan_tile(const CorrArgs& a, int RH, int CW, int U, bool is_static, int S, TileCfg& g, int& CZ,
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
  if (nplanes * a.M >= std::numeric_limits<int>::max()) return false;
  g.nplanes = static_cast<int>(nplanes);
  g.C_dst = static_cast<int>(a.C_dst);
  g.M = static_cast<int>(a.M);
  int cz = std::max(1, kMaxThreads / (g.TX * g.TY));
  cz = std::min<int64_t>(cz, nplanes);
  cz = std::min(cz, kMaxSmem / per_plane);
  CZ = std::max(cz, 1);
  smem_bytes = CZ * per_plane;
  grid_x = ceil_div<int64_t>(nplanes, CZ);
  if (grid_x > std::numeric_limits<int>::max()) return false;
  return true;
}

template <typename T, int KH, int KW, int S, int RH, int CW>
bool try_tile(const CorrArgs& a, cudaStream_t stream) {
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

template <typename T, int U, int S, int CWN>
bool try_nhwc(const CorrArgs& a, cudaStream_t stream) {
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
  if (nstrips + 1024 * 8 >= std::numeric_limits<int>::max() || a.H_dst >= std::numeric_limits<int>::max()) return false;
  g.spr = static_cast<int>(spr);
  g.nstrips = static_cast<int>(nstrips);
  g.H_dst = static_cast<int>(a.H_dst);
  const int64_t cblocks = ceil_div<int64_t>(a.C_dst, g.CB);
  if (cblocks > 65535) return false;
  // enough blocks to fill the GPU, a few strip groups per block to amortise the weights
  const int64_t groups = ceil_div<int64_t>(nstrips, ty);
  const int64_t target_blocks = 132 * 16;
  const int iters = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(8, groups * cblocks / target_blocks)));
  g.iters = iters;
  const int64_t gx = ceil_div<int64_t>(groups, iters);
  if (gx > std::numeric_limits<int>::max()) return false;
  auto kernel = nhwc_kernel<T, U, S, CWN>;
  set_smem_limit(kernel, smem);
  nhwc_kernel<T, U, S, CWN><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(cblocks)), dim3(tx, ty), smem,
                              stream>>>(a, g);
  CONVEXT_LAUNCH_CHECK();
  return true;
}

bool nhwc_vectorizable(const at::Tensor& src, const at::Tensor& dst, const CorrArgs& a) {
  if (a.M != 1 || a.C_dst % 4 != 0) return false;
  if (a.ss[1] != 1 || a.ds[1] != 1) return false;
  for (int i : {0, 2, 3}) {
    if (a.ss[i] % 4 != 0 || a.ds[i] % 4 != 0) return false;
  }
  const int vb = 4 * static_cast<int>(src.element_size());
  return is_aligned(src.const_data_ptr(), vb) && is_aligned(dst.const_data_ptr(), vb);
}

// ---------------------------------------------------------------------------
// Fast paths (new in v2; all of them can be switched off at run time with
// CONVEXT_DISABLE_FAST_PATHS=1, read once, which restores the v1 dispatch exactly).
// ---------------------------------------------------------------------------

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

constexpr int64_t kI32Max = std::numeric_limits<int>::max();

// Residue tables of one dimension (stride s, dilation d, kernel K); false if s > kGS.
bool fill_gather_dim(int64_t s, int64_t d, int64_t K, int* k0, int* off, int* J, int& ks, int& dl) {
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

// Largest element offset reachable through sizes/strides (strides are >= 0 in torch).
int64_t max_offset(const int64_t* sizes, const int64_t* strides) {
  int64_t m = 0;
  for (int i = 0; i < 4; ++i) m += (sizes[i] - 1) * strides[i];
  return m;
}

bool plan_gather(const CorrArgs& a, GatherCfg& g) {
  if (a.bias != nullptr) return false;
  if (!fill_gather_dim(a.sh, a.dh, a.KH, g.tab[0], g.tab[1], g.tab[2], g.ksh, g.dlh)) return false;
  if (!fill_gather_dim(a.sw, a.dw, a.KW, g.tab[3], g.tab[4], g.tab[5], g.ksw, g.dlw)) return false;
  const int64_t ssz[4] = {a.N, a.C_src, a.H_src, a.W_src};
  const int64_t dsz[4] = {a.N, a.C_dst, a.H_dst, a.W_dst};
  for (int i = 0; i < 4; ++i) {
    if (ssz[i] < 1 || dsz[i] < 1 || ssz[i] >= kI32Max || dsz[i] >= kI32Max) return false;
    if (a.ss[i] < 0 || a.ds[i] < 0 || a.ss[i] >= kI32Max || a.ds[i] >= kI32Max) return false;
  }
  if (max_offset(ssz, a.ss) >= kI32Max || max_offset(dsz, a.ds) >= kI32Max) return false;
  if (a.C_src * a.KH * a.KW >= kI32Max) return false;
  if (a.N * a.C_dst * a.H_dst * a.W_dst >= kI32Max / 2) return false;
  if (a.pt < 0 || a.pl < 0 || a.pt + a.H_dst >= kI32Max / 2 || a.pl + a.W_dst >= kI32Max / 2) return false;
  if (a.C_src != a.C_dst * a.M) return false;
  g.sh = static_cast<int>(a.sh); g.sw = static_cast<int>(a.sw);
  g.pt = static_cast<int>(a.pt); g.pl = static_cast<int>(a.pl);
  g.H_src = static_cast<int>(a.H_src); g.W_src = static_cast<int>(a.W_src);
  g.H_dst = static_cast<int>(a.H_dst); g.W_dst = static_cast<int>(a.W_dst);
  g.KH = static_cast<int>(a.KH); g.KW = static_cast<int>(a.KW);
  g.M = static_cast<int>(a.M); g.C_dst = static_cast<int>(a.C_dst);
  g.ss0 = static_cast<int>(a.ss[0]); g.ss1 = static_cast<int>(a.ss[1]);
  g.ss2 = static_cast<int>(a.ss[2]); g.ss3 = static_cast<int>(a.ss[3]);
  g.ds0 = static_cast<int>(a.ds[0]); g.ds1 = static_cast<int>(a.ds[1]);
  g.ds2 = static_cast<int>(a.ds[2]); g.ds3 = static_cast<int>(a.ds[3]);
  g.HG = g.ngroups = g.npos = g.iters = g.CB = 0;
  return true;
}

template <typename T>
bool try_gather_nchw(const CorrArgs& a, cudaStream_t stream) {
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
bool try_gather_nhwc(const CorrArgs& a, cudaStream_t stream) {
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
  const int64_t target_blocks = 132 * 16;
  g.iters = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(8, groups * cblocks / target_blocks)));
  const int64_t gx = ceil_div<int64_t>(groups, g.iters);
  if (gx >= kI32Max) return false;
  auto kernel = gather_nhwc_kernel<T, V>;
  set_smem_limit(kernel, smem);
  kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(cblocks)), dim3(tx, ty), smem, stream>>>(a, g);
  CONVEXT_LAUNCH_CHECK();
  return true;
}

// channels_last vectors of V channels: M == 1, channel stride 1, other strides multiples
// of V, C % V == 0, V*sizeof(T)-aligned pointers.
bool nhwc_vec_ok(const at::Tensor& src, const at::Tensor& dst, const CorrArgs& a, int V) {
  if (a.M != 1 || a.C_dst % V != 0) return false;
  if (a.ss[1] != 1 || a.ds[1] != 1) return false;
  for (int i : {0, 2, 3}) {
    if (a.ss[i] % V != 0 || a.ds[i] % V != 0) return false;
  }
  const int vb = V * static_cast<int>(src.element_size());
  return is_aligned(src.const_data_ptr(), vb) && is_aligned(dst.const_data_ptr(), vb);
}

template <typename T>
bool try_gather_fast(const at::Tensor& src, const at::Tensor& dst, const CorrArgs& a, bool dst_cl,
                     cudaStream_t stream) {
  if (dst_cl) {
    if constexpr (sizeof(T) == 2) {
      if (nhwc_vec_ok(src, dst, a, 8) && try_gather_nhwc<T, 8>(a, stream)) return true;
    }
    if (nhwc_vec_ok(src, dst, a, 4) && try_gather_nhwc<T, 4>(a, stream)) return true;
  }
  return try_gather_nchw<T>(a, stream);
}

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
bool try_colstrip(const CorrArgs& a, cudaStream_t stream) {
  if (a.KH != K || a.KW != K || a.sh != S || a.sw != S) return false;
  const int64_t ssz[4] = {a.N, a.C_src, a.H_src, a.W_src};
  const int64_t dsz[4] = {a.N, a.C_dst, a.H_dst, a.W_dst};
  for (int i = 0; i < 4; ++i) {
    if (ssz[i] < 1 || dsz[i] < 1 || ssz[i] >= kI32Max || dsz[i] >= kI32Max) return false;
    if (a.ss[i] < 0 || a.ds[i] < 0 || a.ss[i] >= kI32Max || a.ds[i] >= kI32Max) return false;
  }
  if (max_offset(ssz, a.ss) >= kI32Max / 2 || max_offset(dsz, a.ds) >= kI32Max / 2) return false;
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
  g.C_dst = static_cast<int>(a.C_dst); g.M = static_cast<int>(a.M);
  g.H_src = static_cast<int>(a.H_src); g.W_src = static_cast<int>(a.W_src);
  g.H_dst = static_cast<int>(a.H_dst); g.W_dst = static_cast<int>(a.W_dst);
  g.dh = static_cast<int>(a.dh); g.dw = static_cast<int>(a.dw);
  g.pt = static_cast<int>(a.pt); g.pl = static_cast<int>(a.pl);
  g.ss0 = static_cast<int>(a.ss[0]); g.ss1 = static_cast<int>(a.ss[1]);
  g.ss2 = static_cast<int>(a.ss[2]); g.ss3 = static_cast<int>(a.ss[3]);
  g.ds0 = static_cast<int>(a.ds[0]); g.ds1 = static_cast<int>(a.ds[1]);
  g.ds2 = static_cast<int>(a.ds[2]); g.ds3 = static_cast<int>(a.ds[3]);
  constexpr int BT = colstrip_threads<K>();
  const int64_t blocks = ceil_div<int64_t>(nunits * g.Wc, BT);
  colstrip_kernel<T, K, S, RH><<<static_cast<unsigned>(blocks), BT, 0, stream>>>(a, g);
  CONVEXT_LAUNCH_CHECK();
  return true;
}

template <typename T>
bool try_colstrip_any(const CorrArgs& a, cudaStream_t stream) {
  // fp16 keeps the v1 paths (compile time: fp32 / bf16 are what the suite and models use)
  if constexpr (std::is_same_v<T, c10::Half>) {
    return false;
  } else {
    // H100 (v2 bench): colstrip beats the shared-memory tile for 3x3 (1.2-2.2x) and dilated 5x5
    // (1.4x), but loses on undilated 5x5 / 7x7 (0.55-0.6x: 190-255 registers, 8-12 warps per SM),
    // which keep the tile kernel. Stride-2 5x5 / 7x7 were never timed: tile kernel too.
    if (a.KH != a.KW || a.sh != a.sw) return false;
    if (a.sh == 1) {
      if (a.KH == 3) return try_colstrip<T, 3, 1, 4>(a, stream);
      if (a.KH == 5 && (a.dh > 1 || a.dw > 1)) return try_colstrip<T, 5, 1, 4>(a, stream);
    } else if (a.sh == 2) {
      if (a.KH == 3) return try_colstrip<T, 3, 2, 4>(a, stream);
    }
    return false;
  }
}

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
bool try_nhwc2(const CorrArgs& a, cudaStream_t stream) {
  if (a.KH != K || a.KW != K || a.sh != S || a.sw != S || a.M != 1) return false;  // reduce_m with M == 1 is a plain correlation
  const int64_t ssz[4] = {a.N, a.C_src, a.H_src, a.W_src};
  const int64_t dsz[4] = {a.N, a.C_dst, a.H_dst, a.W_dst};
  for (int i = 0; i < 4; ++i) {
    if (ssz[i] < 1 || dsz[i] < 1 || ssz[i] >= kI32Max || dsz[i] >= kI32Max) return false;
    if (a.ss[i] < 0 || a.ds[i] < 0 || a.ss[i] >= kI32Max || a.ds[i] >= kI32Max) return false;
  }
  if (max_offset(ssz, a.ss) >= kI32Max / 2 || max_offset(dsz, a.ds) >= kI32Max / 2) return false;
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
  const int64_t target_blocks = 132 * 16;
  g.iters = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(8, groups * cblocks / target_blocks)));
  const int64_t gx = ceil_div<int64_t>(groups, g.iters);
  if (gx >= kI32Max) return false;
  g.spr = static_cast<int>(spr);
  g.nstrips = static_cast<int>(nstrips);
  g.C_dst = static_cast<int>(a.C_dst);
  g.H_src = static_cast<int>(a.H_src); g.W_src = static_cast<int>(a.W_src);
  g.H_dst = static_cast<int>(a.H_dst); g.W_dst = static_cast<int>(a.W_dst);
  g.dh = static_cast<int>(a.dh); g.dw = static_cast<int>(a.dw);
  g.pt = static_cast<int>(a.pt); g.pl = static_cast<int>(a.pl);
  g.flip = a.flip ? 1 : 0;
  g.ss0 = static_cast<int>(a.ss[0]); g.ss2 = static_cast<int>(a.ss[2]); g.ss3 = static_cast<int>(a.ss[3]);
  g.ds0 = static_cast<int>(a.ds[0]); g.ds2 = static_cast<int>(a.ds[2]); g.ds3 = static_cast<int>(a.ds[3]);
  auto kernel = nhwc2_kernel<T, V, K, S, CWN>;
  set_smem_limit(kernel, smem);
  kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(cblocks)), dim3(tx, ty), smem, stream>>>(a, g);
  CONVEXT_LAUNCH_CHECK();
  return true;
}

// 16-bit types: V = 8 (16-byte vectors) when C % 8 == 0 and aligned; fp32: V = 4.
template <typename T>
bool try_nhwc2_any(const at::Tensor& src, const at::Tensor& dst, const CorrArgs& a, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, c10::Half>) {
    return false;
  } else {
    if (a.KH != a.KW || a.sh != a.sw || a.M != 1) return false;
    if constexpr (sizeof(T) == 2) {
      if (!nhwc_vec_ok(src, dst, a, 8)) return false;
      if (a.sh == 1) {
        if (a.KH == 3) return try_nhwc2<T, 8, 3, 1, 4>(a, stream);
        if (a.KH == 5) return try_nhwc2<T, 8, 5, 1, 4>(a, stream);
        if (a.KH == 7) return try_nhwc2<T, 8, 7, 1, 4>(a, stream);
      }
    } else {
      if (!nhwc_vec_ok(src, dst, a, 4)) return false;
      if (a.sh == 1) {
        if (a.KH == 3) return try_nhwc2<T, 4, 3, 1, 8>(a, stream);
        if (a.KH == 5) return try_nhwc2<T, 4, 5, 1, 8>(a, stream);
        if (a.KH == 7) return try_nhwc2<T, 4, 7, 1, 8>(a, stream);
      }
    }
    return false;
  }
}

template <typename T>
void run_engine_typed(const at::Tensor& src, const at::Tensor& dst, const CorrArgs& a, cudaStream_t stream) {
  const bool dst_cl = dst.suggest_memory_format() == at::MemoryFormat::ChannelsLast && a.C_dst > 1;
  if constexpr (!std::is_same_v<T, double>) {
    if (a.gather && fast_path_enabled(kFpGather) && try_gather_fast<T>(src, dst, a, dst_cl, stream)) return;
    if (!a.gather && try_tensor_core<T>(src, dst, a, stream)) return;
    if (!a.gather && a.sh == a.sw && (a.sh == 1 || a.sh == 2)) {
      const bool k3 = a.KH == 3 && a.KW == 3, k5 = a.KH == 5 && a.KW == 5, k7 = a.KH == 7 && a.KW == 7;
      if (dst_cl) {
        if (nhwc_vectorizable(src, dst, a)) {
          if (fast_path_enabled(kFpNhwc2) && try_nhwc2_any<T>(src, dst, a, stream)) return;
          if (a.sh == 1) {
            if (a.KW == 3 && try_nhwc<T, 3, 1, 4>(a, stream)) return;
            if (a.KW == 5 && try_nhwc<T, 5, 1, 8>(a, stream)) return;
            if (a.KW == 7 && try_nhwc<T, 7, 1, 8>(a, stream)) return;
            if (try_nhwc<T, 4, 1, 8>(a, stream)) return;
          } else {
            if (a.KW == 3 && try_nhwc<T, 3, 2, 4>(a, stream)) return;
            if (try_nhwc<T, 4, 2, 4>(a, stream)) return;
          }
        }
      } else {
        if (fast_path_enabled(kFpColstrip) && try_colstrip_any<T>(a, stream)) return;
        if (a.sh == 1) {
          if (k3 && try_tile<T, 3, 3, 1, 4, 4>(a, stream)) return;
          if (k5 && try_tile<T, 5, 5, 1, 4, 4>(a, stream)) return;
          if (k7 && try_tile<T, 7, 7, 1, 2, 4>(a, stream)) return;  // RH 2: 49 weights in registers
          if (try_tile<T, 0, 0, 1, 4, 8>(a, stream)) return;
        } else {
          if (k3 && try_tile<T, 3, 3, 2, 4, 4>(a, stream)) return;
          if (try_tile<T, 0, 0, 2, 4, 4>(a, stream)) return;
        }
      }
    }
  }
  launch_generic<T>(a, dst_cl, stream);
}

}  // namespace

// Runs the engine: src/dst 4-D CUDA tensors of one dtype, weight contiguous (Cw,1,KH,KW) of the same
// dtype, bias contiguous or undefined; a.* geometry filled by the caller (pointers/strides here).
void run_depthwise_engine(const at::Tensor& src, const at::Tensor& weight, const at::Tensor* bias,
                          const at::Tensor& dst, CorrArgs a) {
  if (dst.numel() == 0) return;
  a.src = src.const_data_ptr();
  a.dst = dst.data_ptr();
  a.weight = weight.const_data_ptr();
  a.bias = (bias != nullptr && bias->defined()) ? bias->const_data_ptr() : nullptr;
  for (int i = 0; i < 4; ++i) {
    a.ss[i] = src.stride(i);
    a.ds[i] = dst.stride(i);
  }
  a.N = src.size(0);
  a.C_src = src.size(1);
  a.H_src = src.size(2);
  a.W_src = src.size(3);
  a.C_dst = dst.size(1);
  a.H_dst = dst.size(2);
  a.W_dst = dst.size(3);
  c10::cuda::CUDAGuard guard(src.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  CONVEXT_DISPATCH_FLOATING(src.scalar_type(), "convext_depthwise_conv2d_cuda", [&] {
    run_engine_typed<scalar_t>(src, dst, a, stream);
  });
}

namespace {

at::Tensor depthwise_conv2d_cuda(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(input.is_cuda(), "convext: depthwise_conv2d CUDA kernel got a non-CUDA input");
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == 1, "convext: weight must be (C*M, 1, kH, kW)");
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), "convext: weight dtype must match input");
  TORCH_CHECK(weight.device() == input.device(), "convext: weight must be on the input's device");
  auto p = make_depthwise_conv2d_params(input.sizes(), weight.size(0), {weight.size(2), weight.size(3)},
                                        stride, padding, dilation);
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->numel() == p.out_channels, "convext: bias must have ", p.out_channels, " elements");
    TORCH_CHECK(bias->scalar_type() == input.scalar_type() && bias->device() == input.device(),
                "convext: bias dtype/device must match input");
    b = bias->contiguous();
  }
  auto out = at::empty({p.batch, p.out_channels, p.out_h, p.out_w},
                       input.options().memory_format(input.suggest_memory_format()));
  if (out.numel() == 0) return out;
  const at::Tensor w = weight.contiguous();
  CorrArgs a;
  a.KH = p.kernel_h; a.KW = p.kernel_w;
  a.sh = p.stride_h; a.sw = p.stride_w;
  a.dh = p.dilation_h; a.dw = p.dilation_w;
  a.pt = p.pad_top; a.pl = p.pad_left;
  a.M = p.multiplier;
  run_depthwise_engine(input, w, b.defined() ? &b : nullptr, out, a);
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace convext

TORCH_LIBRARY_IMPL(convext, CUDA, m) {
  m.impl("depthwise_conv2d", &convext::cuda::depthwise_conv2d_cuda);
}
