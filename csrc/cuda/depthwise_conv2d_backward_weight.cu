// CUDA grad-weight (and grad-bias) of the depthwise conv2d:
//   grad_weight[oc, kh, kw] = sum_{n,oh,ow} go[n,oc,oh,ow] * x[n, oc/M, oh*sh-pt+kh*dh, ow*sw-pl+kw*dw]
//   grad_bias[oc]           = sum_{n,oh,ow} go[n,oc,oh,ow]
//
// One pass over input and grad_output: every thread keeps all taps of its tap block
// (and the bias) in registers while it streams over output positions. No atomics:
// kernel 1 writes one partial sum per (chunk, oc, tap) into a workspace (acc type),
// kernel 2 adds the partials of each (oc, tap) in a fixed order and rounds once, so
// results are bitwise reproducible run to run.
//
// Kernel 1 comes in two layouts:
//  * planar (any strides; coalesced when W is contiguous, e.g. NCHW): a block owns one
//    output channel, one tap block [kh0, kh0+TKH) x [kw0, kw0+TKW) and a chunk of
//    "units"; a unit is up to VH output rows x TWo output columns of one plane. The
//    threads of a group own one output column each and up to VH rows; the input tile of
//    the unit (rows + halo) is staged in shared memory as acc type (zero padding
//    written there), grad_output goes straight to registers. When the row stride
//    divides the row dilation, a thread's rows are E = dh/sh apart so that the staged
//    rows are shared by consecutive (row, kh) pairs and each staged value is loaded
//    once per thread and reused for every kh ("reuse" mode); otherwise each (row, kh)
//    reads its own staged row. Large kernels are split into tap blocks (grid dimension),
//    so no thread holds more than TKH*TKW accumulators.
//  * channels_last (C contiguous, M == 1): threads along C with 16-byte vectors
//    (4 fp32 / 8 bf16 / 8 fp16 / 2 fp64 channels), each thread owns one kh and KWB
//    consecutive kw taps for its channels and streams over runs of VW output columns
//    (window of VW+KWB-1 input vectors reused across taps when sw | dw). The P streams
//    of a block are summed by a fixed shared-memory tree before the partial is written.
//  * planar fast path (square K in {3,5,7}, not fp64, sh | dh or sh == 2): one output
//    column x RV rows per thread, all K*K taps in registers; see the kernel's comment.
//    Falls back to the planar kernel above when not covered; off with
//    CONVEXT_DISABLE_FAST_PATHS=1 like the channels_last fast path.
// Everything else (channels_last with M > 1, odd alignments, sliced views) takes the
// planar kernel, which reads through the strides.
#include "depthwise_conv2d.h"
#include "depthwise_conv2d_common.cuh"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <tuple>

namespace convext {
namespace {

using cuda::AccType;
using cuda::ceil_div;
using cuda::from_acc;
using cuda::to_acc;

// Output rows per thread of the planar kernel (register budget: TKH*TKW + VH + TKW live
// accumulators/operands), and the blocks per SM its register cap is sized for.
template <typename acc_t, int TKH, int TKW>
constexpr int planar_vh() {
  return TKH * TKW > 49 ? 4 : ((sizeof(acc_t) == 8 || TKH * TKW > 32) ? 8 : 16);
}
template <typename acc_t, int TKH, int TKW>
constexpr int planar_min_blocks() {
  return (sizeof(acc_t) == 4 && TKH * TKW <= 12) ? 3 : 2;
}
constexpr int kMaxThreads = 256;
constexpr int kDefaultSmem = 48 * 1024;

__host__ __device__ __forceinline__ int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }

// ---------------------------------------------------------------------------
// Planar kernel
// ---------------------------------------------------------------------------
struct PlanarArgs {
  int64_t C_out, M;
  int64_t H, W, Ho, Wo;
  int64_t xs0, xs1, xs2, xs3;  // input strides (elements)
  int64_t gs0, gs1, gs2, gs3;  // grad_output strides
  int KH, KW;
  int sh, sw, dh, dw, pt, pl;
  int reuse;      // 1 when sh divides dh
  int E;          // rows of one thread are E apart (dh/sh in reuse mode, else 1)
  int U;          // output rows per unit (<= VH)
  int nbands;     // row bands per residue class
  int TWo;        // output columns per unit
  int nct;        // column tiles per plane
  int R;          // staged rows per unit
  int XC;         // staged columns per unit (row pitch in shared memory)
  int G;          // units per round (thread groups per block)
  int ntb_w, ntb; // tap blocks along kw, in total
  int T1;         // KH*KW + 1 (bias last)
  int64_t units_per_oc;
  int64_t units_per_chunk;  // multiple of G
};

template <typename scalar_t, int TKH, int TKW, int VH>
__global__ void __launch_bounds__(kMaxThreads, (planar_min_blocks<AccType<scalar_t>, TKH, TKW>()))
dw_bwd_weight_planar_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ go,
                            AccType<scalar_t>* __restrict__ ws, const PlanarArgs a) {
  using acc_t = AccType<scalar_t>;
  constexpr int TT = TKH * TKW;
  extern __shared__ __align__(16) unsigned char planar_smem_raw[];
  acc_t* xs_all = reinterpret_cast<acc_t*>(planar_smem_raw);
  __shared__ acc_t red[kMaxThreads / 32][TT + 1];

  int64_t bid = blockIdx.x;
  const int tb = static_cast<int>(bid % a.ntb);
  bid /= a.ntb;
  const int64_t oc = bid % a.C_out;
  const int64_t chunk = bid / a.C_out;
  const int kh0 = (tb / a.ntb_w) * TKH;
  const int kw0 = (tb % a.ntb_w) * TKW;
  const int khe = min(TKH, a.KH - kh0);  // valid taps of this block
  const int kwe = min(TKW, a.KW - kw0);

  const int tid = threadIdx.x;
  const int grp = tid / a.TWo;
  const int l = tid - grp * a.TWo;
  const bool in_group = grp < a.G;

  const scalar_t* xch = x + (oc / a.M) * a.xs1;
  const scalar_t* gch = go + oc * a.gs1;
  // per group: VH x TWo grad_output values, then R x XC staged input values
  const int64_t unit_elems = static_cast<int64_t>(VH) * a.TWo + static_cast<int64_t>(a.R) * a.XC;
  acc_t* gs = xs_all + static_cast<int64_t>(in_group ? grp : 0) * unit_elems;
  acc_t* xs = gs + VH * a.TWo;

  acc_t acc[TKH][TKW];
#pragma unroll
  for (int i = 0; i < TKH; ++i)
#pragma unroll
    for (int j = 0; j < TKW; ++j) acc[i][j] = acc_t(0);
  acc_t bacc = acc_t(0);

  const int64_t u_begin = chunk * a.units_per_chunk;
  const int64_t u_end = imin64(u_begin + a.units_per_chunk, a.units_per_oc);
  const int64_t xrow_step = a.reuse ? a.dh : 1;

  for (int64_t ub = u_begin; ub < u_end; ub += a.G) {
    const int64_t u = ub + grp;
    const bool uvalid = in_group && u < u_end;
    // unit -> (n, residue r, band qb, column tile ct)
    int64_t t = uvalid ? u : 0;
    const int ct = static_cast<int>(t % a.nct);
    t /= a.nct;
    const int qb = static_cast<int>(t % a.nbands);
    t /= a.nbands;
    const int r = static_cast<int>(t % a.E);
    const int64_t n = t / a.E;
    const int64_t oh_first = static_cast<int64_t>(qb) * a.U * a.E + r;
    const int64_t rem = a.Ho - oh_first;
    const int nvh = uvalid && rem > 0 ? static_cast<int>(imin64(a.U, (rem + a.E - 1) / a.E)) : 0;
    const int64_t ow_first = static_cast<int64_t>(ct) * a.TWo;
    const int ncv = uvalid ? static_cast<int>(imin64(a.TWo, a.Wo - ow_first)) : 0;
    const bool cvalid = l < ncv;

    // staged tile geometry
    const int rows_needed =
        nvh == 0 ? 0 : (a.reuse ? nvh + khe - 1 : (nvh - 1) * a.sh + (khe - 1) * a.dh + 1);
    const int cols_needed = ncv == 0 ? 0 : (ncv - 1) * a.sw + (kwe - 1) * a.dw + 1;
    const int64_t xr0 = oh_first * a.sh - a.pt + static_cast<int64_t>(kh0) * a.dh;
    const int64_t xc0 = ow_first * a.sw - a.pl + static_cast<int64_t>(kw0) * a.dw;
    const scalar_t* xn = xch + n * a.xs0;

    __syncthreads();  // previous round's compute is done with the tile
    if (in_group) {
      {  // grad_output column of this thread: rows oh_first + vh*E
        const scalar_t* gr = gch + n * a.gs0 + (ow_first + l) * a.gs3 + oh_first * a.gs2;
        const int64_t rstep = static_cast<int64_t>(a.E) * a.gs2;
#pragma unroll
        for (int v0 = 0; v0 < VH; v0 += 8) {
          acc_t v[8];
#pragma unroll
          for (int s = 0; s < 8 && v0 + s < VH; ++s) {
            const int vh = v0 + s;
            v[s] = (cvalid && vh < nvh) ? to_acc(cuda::ldg(gr + vh * rstep)) : acc_t(0);
          }
#pragma unroll
          for (int s = 0; s < 8 && v0 + s < VH; ++s) gs[(v0 + s) * a.TWo + l] = v[s];
        }
      }
      for (int t0 = 0; t0 < a.R; t0 += 8) {
        for (int j = l; j < a.XC; j += a.TWo) {
          const int64_t xcol = xc0 + j;
          const bool colok = j < cols_needed && xcol >= 0 && xcol < a.W;
          const scalar_t* xcp = xn + xcol * a.xs3;
          acc_t v[8];
#pragma unroll
          for (int s = 0; s < 8; ++s) {
            const int tr = t0 + s;
            const int64_t xrow = xr0 + tr * xrow_step;
            v[s] = acc_t(0);
            if (colok && tr < rows_needed && xrow >= 0 && xrow < a.H) v[s] = to_acc(cuda::ldg(xcp + xrow * a.xs2));
          }
#pragma unroll
          for (int s = 0; s < 8; ++s) {
            if (t0 + s < a.R) xs[(t0 + s) * a.XC + j] = v[s];
          }
        }
      }
    }
    __syncthreads();

    // Masked taps (kh >= khe, kw >= kwe) are accumulated from in-tile values and
    // never written out; rows vh >= nvh are skipped so that non-finite inputs only
    // reach the taps they belong to.
    if (cvalid) {
      acc_t g[VH];
#pragma unroll
      for (int vh = 0; vh < VH; ++vh) g[vh] = gs[vh * a.TWo + l];
      const acc_t* xp = xs + l * a.sw;
      if (a.reuse) {  // R == VH + TKH - 1: every row below is inside the tile
#pragma unroll
        for (int tr = 0; tr < VH + TKH - 1; ++tr) {
          acc_t w[TKW];
#pragma unroll
          for (int kw = 0; kw < TKW; ++kw) w[kw] = xp[tr * a.XC + kw * a.dw];
#pragma unroll
          for (int vh = 0; vh < VH; ++vh) {
            const int kh = tr - vh;
            if (kh >= 0 && kh < TKH && vh < nvh) {
#pragma unroll
              for (int kw = 0; kw < TKW; ++kw) acc[kh][kw] = fma(g[vh], w[kw], acc[kh][kw]);
            }
          }
        }
      } else {
#pragma unroll
        for (int vh = 0; vh < VH; ++vh) {
          if (vh < nvh) {
#pragma unroll
            for (int kh = 0; kh < TKH; ++kh) {
              const acc_t* rowp = xp + (vh * a.sh + kh * a.dh) * a.XC;
#pragma unroll
              for (int kw = 0; kw < TKW; ++kw) acc[kh][kw] = fma(g[vh], rowp[kw * a.dw], acc[kh][kw]);
            }
          }
        }
      }
#pragma unroll
      for (int vh = 0; vh < VH; ++vh) bacc += g[vh];
    }
  }

  // Block reduction in a fixed order: warp tree, then warps in index order.
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int nwarps = blockDim.x >> 5;  // blockDim.x is a multiple of 32
#pragma unroll
  for (int i = 0; i <= TT; ++i) {
    acc_t v = i < TT ? acc[i / TKW][i % TKW] : bacc;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) red[warp][i] = v;
  }
  __syncthreads();
  acc_t* wsp = ws + (chunk * a.C_out + oc) * a.T1;
  for (int i = tid; i <= TT; i += blockDim.x) {
    acc_t s = acc_t(0);
    for (int w = 0; w < nwarps; ++w) s += red[w][i];
    if (i < TT) {
      const int kh = kh0 + i / TKW, kw = kw0 + i % TKW;
      if (kh < a.KH && kw < a.KW) wsp[kh * a.KW + kw] = s;
    } else if (tb == 0) {
      wsp[a.T1 - 1] = s;
    }
  }
}

// ---------------------------------------------------------------------------
// channels_last kernel (C contiguous in both tensors, M == 1)
// ---------------------------------------------------------------------------
struct CLArgs {
  int64_t C, H, W, Ho, Wo;
  int64_t xs0, xs2, xs3;
  int64_t gs0, gs2, gs3;
  int KH, KW;
  int sh, sw, dh, dw, pt, pl;
  int window;  // 1 when sw divides dw: the VW outputs of a thread are E apart
  int E;
  int nqb;     // column runs per residue
  int nkwb;    // kw blocks
  int ntg;     // KH * nkwb tap groups
  int T1;
  int64_t units;            // N * Ho * E * nqb
  int64_t units_per_chunk;
};

template <typename scalar_t, int KWB, int VW>
__global__ void __launch_bounds__(kMaxThreads, 2)
dw_bwd_weight_cl_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ go,
                        AccType<scalar_t>* __restrict__ ws, const CLArgs a) {
  using acc_t = AccType<scalar_t>;
  constexpr int VC = cuda::vec16<scalar_t>();
  constexpr int NA = (KWB + 1) * VC;  // accumulators per thread (taps + bias)
  using V = cuda::Vec<scalar_t, VC>;
  extern __shared__ __align__(16) unsigned char cl_smem_raw[];
  acc_t* sm = reinterpret_cast<acc_t*>(cl_smem_raw);

  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VC;
  const int tg = blockIdx.y * blockDim.y + threadIdx.y;
  const bool active = c < a.C && tg < a.ntg;
  const int p = threadIdx.z;
  const int P = blockDim.z;
  const int64_t chunk = blockIdx.z;
  const int kh = active ? tg / a.nkwb : 0;
  const int kw0 = active ? (tg % a.nkwb) * KWB : 0;

  acc_t acc[NA];
#pragma unroll
  for (int i = 0; i < NA; ++i) acc[i] = acc_t(0);

  if (active) {
    const int64_t u_begin = chunk * a.units_per_chunk;
    const int64_t u_end = imin64(u_begin + a.units_per_chunk, a.units);
    const scalar_t* xc = x + c;
    const scalar_t* gc = go + c;
    for (int64_t u = u_begin + p; u < u_end; u += P) {
      int64_t t = u;
      const int qb = static_cast<int>(t % a.nqb);
      t /= a.nqb;
      const int r = static_cast<int>(t % a.E);
      t /= a.E;
      const int64_t oh = t % a.Ho;
      const int64_t n = t / a.Ho;
      const int64_t ow0 = static_cast<int64_t>(qb) * VW * a.E + r;
      const int64_t remw = a.Wo - ow0;
      const int nv = remw > 0 ? static_cast<int>(imin64(VW, (remw + a.E - 1) / a.E)) : 0;

      acc_t g[VW][VC];
      const scalar_t* gp = gc + n * a.gs0 + oh * a.gs2;
#pragma unroll
      for (int v = 0; v < VW; ++v) {
        if (v < nv) {
          const V gv = cuda::load_vec<scalar_t, VC>(gp + (ow0 + static_cast<int64_t>(v) * a.E) * a.gs3);
#pragma unroll
          for (int ci = 0; ci < VC; ++ci) g[v][ci] = to_acc(gv.v[ci]);
        } else {
#pragma unroll
          for (int ci = 0; ci < VC; ++ci) g[v][ci] = acc_t(0);
        }
      }
      if (tg == 0) {
#pragma unroll
        for (int v = 0; v < VW; ++v)
#pragma unroll
          for (int ci = 0; ci < VC; ++ci) acc[KWB * VC + ci] += g[v][ci];
      }

      const int64_t ih = oh * a.sh - a.pt + static_cast<int64_t>(kh) * a.dh;
      if (ih < 0 || ih >= a.H) continue;
      const scalar_t* xr = xc + n * a.xs0 + ih * a.xs2;
      if (a.window) {
        // x column of (v, j) = iw0 + (v + j) * dw
        const int64_t iw0 = ow0 * a.sw - a.pl + static_cast<int64_t>(kw0) * a.dw;
        acc_t w[VW + KWB - 1][VC];
#pragma unroll
        for (int tt = 0; tt < VW + KWB - 1; ++tt) {
          const int64_t iw = iw0 + static_cast<int64_t>(tt) * a.dw;
          if (iw >= 0 && iw < a.W) {
            const V xv = cuda::load_vec<scalar_t, VC>(xr + iw * a.xs3);
#pragma unroll
            for (int ci = 0; ci < VC; ++ci) w[tt][ci] = to_acc(xv.v[ci]);
          } else {
#pragma unroll
            for (int ci = 0; ci < VC; ++ci) w[tt][ci] = acc_t(0);
          }
        }
#pragma unroll
        for (int v = 0; v < VW; ++v) {
          if (v < nv) {
#pragma unroll
            for (int j = 0; j < KWB; ++j) {
              if (kw0 + j < a.KW) {
#pragma unroll
                for (int ci = 0; ci < VC; ++ci)
                  acc[j * VC + ci] = fma(g[v][ci], w[v + j][ci], acc[j * VC + ci]);
              }
            }
          }
        }
      } else {
#pragma unroll
        for (int v = 0; v < VW; ++v) {
          if (v < nv) {
            const int64_t owv = ow0 + static_cast<int64_t>(v) * a.E;
#pragma unroll
            for (int j = 0; j < KWB; ++j) {
              const int64_t iw = owv * a.sw - a.pl + static_cast<int64_t>(kw0 + j) * a.dw;
              if (kw0 + j < a.KW && iw >= 0 && iw < a.W) {
                const V xv = cuda::load_vec<scalar_t, VC>(xr + iw * a.xs3);
#pragma unroll
                for (int ci = 0; ci < VC; ++ci)
                  acc[j * VC + ci] = fma(g[v][ci], to_acc(xv.v[ci]), acc[j * VC + ci]);
              }
            }
          }
        }
      }
    }
  }

  // Sum the P streams of the block with a fixed tree (P is a power of two).
  const int slot = threadIdx.y * blockDim.x + threadIdx.x;
  const int layer = blockDim.x * blockDim.y;
  for (int half = P >> 1; half >= 1; half >>= 1) {
    if (p >= half && p < 2 * half) {
      acc_t* dst = sm + (static_cast<int64_t>(p - half) * layer + slot) * NA;
#pragma unroll
      for (int i = 0; i < NA; ++i) dst[i] = acc[i];
    }
    __syncthreads();
    if (p < half) {
      const acc_t* src = sm + (static_cast<int64_t>(p) * layer + slot) * NA;
#pragma unroll
      for (int i = 0; i < NA; ++i) acc[i] += src[i];
    }
    __syncthreads();
  }

  if (active && p == 0) {
    acc_t* wsp = ws + (chunk * a.C + c) * a.T1;
#pragma unroll
    for (int ci = 0; ci < VC; ++ci) {
#pragma unroll
      for (int j = 0; j < KWB; ++j) {
        if (kw0 + j < a.KW) wsp[ci * a.T1 + kh * a.KW + kw0 + j] = acc[j * VC + ci];
      }
      if (tg == 0) wsp[ci * a.T1 + a.T1 - 1] = acc[KWB * VC + ci];
    }
  }
}

// ---------------------------------------------------------------------------
// channels_last fast path (square K in {3,5,7}, M == 1, sw | dw or (sw,dw) == (2,1)):
// a thread owns CV channels (one CV-wide vector load), KHB consecutive kernel rows
// and all K kernel columns of them (KHB*K*CV accumulators + CV bias), so grad_output
// is read once per row group (not once per tap group) and every input vector loaded
// into the row window feeds up to K taps. Threads of a block: cvb channel vectors x
// ntg row groups x P streams over units (n, oh, residue, run of VW output columns).
// The P streams are summed in a fixed order (p = 0..P-1) through shared memory, in
// slices of kSlice accumulators. Disabled by CONVEXT_DISABLE_FAST_PATHS=1.
// ---------------------------------------------------------------------------
struct CLFastArgs {
  int64_t C, H, W;
  int64_t xs0, xs2, xs3;
  int64_t gs0, gs2, gs3;
  int Ho, Wo;
  int sh, sw, dh, dw, pt, pl;
  int E;      // outputs of one run are E apart
  int ucol;   // input columns per window step (dw when VS == 1, 1 when VS == 2)
  int nqb;    // runs per residue
  int ntg;    // row groups (ceil(K / KHB))
  int cvb;    // channel vectors per block
  int T1;
  int units;  // N * Ho * E * nqb (< 2^31, checked on the host)
  int units_per_chunk;
};

constexpr int kSlice = 8;

template <typename scalar_t, int K, int CV, int KHB, int VW, int VS>
__global__ void __launch_bounds__(kMaxThreads, 2)
dw_bwd_weight_cl_fast_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ go,
                             AccType<scalar_t>* __restrict__ ws, const CLFastArgs a) {
  using acc_t = AccType<scalar_t>;
  constexpr int NT = KHB * K * CV;   // tap accumulators
  constexpr int NA = NT + CV;        // + bias
  constexpr int NWIN = VS * (VW - 1) + K;
  using V = cuda::Vec<scalar_t, CV>;
  __shared__ acc_t red[kMaxThreads * (kSlice + 1)];

  const int tid = threadIdx.x;
  const int layer = a.cvb * a.ntg;
  const int P = blockDim.x / layer;  // blockDim.x == layer * P
  const int cv = tid % a.cvb;
  const int tg = (tid / a.cvb) % a.ntg;
  const int p = tid / layer;
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * a.cvb + cv) * CV;
  const bool active = c < a.C;
  const int chunk = blockIdx.y;
  const int kh0 = tg * KHB;

  acc_t acc[NA];
#pragma unroll
  for (int i = 0; i < NA; ++i) acc[i] = acc_t(0);

  if (active) {
    const int u_begin = chunk * a.units_per_chunk;
    const int u_end = min(u_begin + a.units_per_chunk, a.units);
    const scalar_t* xc = x + c;
    const scalar_t* gc = go + c;
    for (int u = u_begin + p; u < u_end; u += P) {
      int t = u;
      const int qb = t % a.nqb;
      t /= a.nqb;
      const int r = t % a.E;
      t /= a.E;
      const int oh = t % a.Ho;
      const int n = t / a.Ho;
      const int ow0 = qb * VW * a.E + r;
      const int remw = a.Wo - ow0;
      const int nv = remw > 0 ? min(VW, (remw + a.E - 1) / a.E) : 0;
      if (nv <= 0) continue;

      acc_t g[VW][CV];
      const scalar_t* gp = gc + n * a.gs0 + oh * a.gs2;
#pragma unroll
      for (int v = 0; v < VW; ++v) {
        if (v < nv) {
          const V gv = cuda::load_vec<scalar_t, CV>(gp + static_cast<int64_t>(ow0 + v * a.E) * a.gs3);
#pragma unroll
          for (int ci = 0; ci < CV; ++ci) g[v][ci] = to_acc(gv.v[ci]);
        } else {
#pragma unroll
          for (int ci = 0; ci < CV; ++ci) g[v][ci] = acc_t(0);
        }
      }
#pragma unroll
      for (int v = 0; v < VW; ++v)
#pragma unroll
        for (int ci = 0; ci < CV; ++ci) acc[NT + ci] += g[v][ci];

      // input column of (v, kw) = iw0 + (VS * v + kw) * ucol
      const int64_t iw0 = static_cast<int64_t>(ow0) * a.sw - a.pl;
      const int nwin = VS * (nv - 1) + K;  // window entries used by the valid outputs
      const scalar_t* xn = xc + n * a.xs0;
#pragma unroll
      for (int i = 0; i < KHB; ++i) {
        const int kh = kh0 + i;
        const int64_t ih = static_cast<int64_t>(oh) * a.sh - a.pt + static_cast<int64_t>(kh) * a.dh;
        if (kh < K && ih >= 0 && ih < a.H) {
          const scalar_t* xr = xn + ih * a.xs2;
          acc_t w[NWIN][CV];
#pragma unroll
          for (int j = 0; j < NWIN; ++j) {
            const int64_t iw = iw0 + static_cast<int64_t>(j) * a.ucol;
            if (j < nwin && iw >= 0 && iw < a.W) {
              const V xv = cuda::load_vec<scalar_t, CV>(xr + iw * a.xs3);
#pragma unroll
              for (int ci = 0; ci < CV; ++ci) w[j][ci] = to_acc(xv.v[ci]);
            } else {
#pragma unroll
              for (int ci = 0; ci < CV; ++ci) w[j][ci] = acc_t(0);
            }
          }
#pragma unroll
          for (int v = 0; v < VW; ++v) {
            if (v < nv) {
#pragma unroll
              for (int kw = 0; kw < K; ++kw)
#pragma unroll
                for (int ci = 0; ci < CV; ++ci)
                  acc[(i * K + kw) * CV + ci] = fma(g[v][ci], w[VS * v + kw][ci], acc[(i * K + kw) * CV + ci]);
            }
          }
        }
      }
    }
  }

  // Sum the P streams in the fixed order p = 0..P-1 (p == 0 keeps the result).
#pragma unroll
  for (int s0 = 0; s0 < NA; s0 += kSlice) {
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kSlice; ++i) {
      if (s0 + i < NA) red[tid * (kSlice + 1) + i] = acc[s0 + i];
    }
    __syncthreads();
    if (p == 0) {
#pragma unroll
      for (int i = 0; i < kSlice; ++i) {
        if (s0 + i < NA) {
          acc_t s = acc[s0 + i];
          for (int q = 1; q < P; ++q) s += red[(q * layer + tid) * (kSlice + 1) + i];
          acc[s0 + i] = s;
        }
      }
    }
  }

  if (active && p == 0) {
    acc_t* wsp = ws + (static_cast<int64_t>(chunk) * a.C + c) * a.T1;
#pragma unroll
    for (int ci = 0; ci < CV; ++ci) {
#pragma unroll
      for (int i = 0; i < KHB; ++i) {
        if (kh0 + i < K) {
#pragma unroll
          for (int kw = 0; kw < K; ++kw) wsp[ci * a.T1 + (kh0 + i) * K + kw] = acc[(i * K + kw) * CV + ci];
        }
      }
      if (tg == 0) wsp[ci * a.T1 + a.T1 - 1] = acc[NT + ci];
    }
  }
}

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
      for (int v = 0; v < RV; ++v) g[v] = (cvalid && v < nvh) ? to_acc(cuda::ldg(gp + v * rstep)) : acc_t(0);
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
                       ? to_acc(cuda::ldg(xcp + xrow * a.xs2))
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

// ---------------------------------------------------------------------------
// Fixed-order reduction of the partials: ws[parts][C_out * T1] -> grad_weight, grad_bias
// ---------------------------------------------------------------------------
template <typename scalar_t>
__global__ void __launch_bounds__(256)
dw_bwd_weight_reduce_kernel(const AccType<scalar_t>* __restrict__ ws, int64_t parts, int64_t per_part,
                            int T1, scalar_t* __restrict__ gw, scalar_t* __restrict__ gb) {
  using acc_t = AccType<scalar_t>;
  __shared__ acc_t sm[8][33];
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  acc_t s = acc_t(0);
  if (idx < per_part) {
    for (int64_t q = threadIdx.y; q < parts; q += 8) s += ws[q * per_part + idx];
  }
  sm[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && idx < per_part) {
    acc_t tsum = acc_t(0);
#pragma unroll
    for (int y = 0; y < 8; ++y) tsum += sm[y][threadIdx.x];
    const int64_t oc = idx / T1;
    const int tap = static_cast<int>(idx - oc * T1);
    if (tap < T1 - 1) {
      gw[oc * (T1 - 1) + tap] = from_acc<scalar_t>(tsum);
    } else if (gb != nullptr) {
      gb[oc] = from_acc<scalar_t>(tsum);
    }
  }
}

// ---------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------
struct TileShape {
  int kh, kw;
};

// Planar tap blocks compiled per dtype (float64 gets the 3x3 one only).
constexpr TileShape kPlanarTiles[] = {{3, 3}, {5, 5}, {7, 7}, {8, 8}, {1, 12}};

// Rough per-output cost of covering a KHxKW kernel with TKHxTKW tap blocks:
// FMAs issued (masked taps included) + staged loads and go/staging overhead per tap block.
double tile_cost(int64_t KH, int64_t KW, int tkh, int tkw) {
  const int64_t nh = ceil_div<int64_t>(KH, tkh), nw = ceil_div<int64_t>(KW, tkw);
  const int vh = tkh * tkw > 49 ? 4 : (tkh * tkw > 32 ? 8 : 16);  // planar_vh<float, tkh, tkw>()
  const double per_block = tkw * double(vh + tkh - 1) / vh + 3.0;
  return double(nh * tkh * nw * tkw) + double(nh * nw) * per_block;
}

template <typename acc_t>
void launch_reduce(const at::Tensor& ws, int64_t parts, int64_t per_part, int T1, at::Tensor& gw,
                   at::Tensor& gb, bool compute_bias, cudaStream_t stream);

template <typename scalar_t, int TKH, int TKW>
void launch_planar(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p,
                   at::Tensor& gw, at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
  using acc_t = AccType<scalar_t>;
  constexpr int VH = planar_vh<acc_t, TKH, TKW>();
  PlanarArgs a{};
  a.C_out = p.out_channels;
  a.M = p.multiplier;
  a.H = p.in_h; a.W = p.in_w; a.Ho = p.out_h; a.Wo = p.out_w;
  a.xs0 = p.in_strides[0]; a.xs1 = p.in_strides[1]; a.xs2 = p.in_strides[2]; a.xs3 = p.in_strides[3];
  a.gs0 = p.out_strides[0]; a.gs1 = p.out_strides[1]; a.gs2 = p.out_strides[2]; a.gs3 = p.out_strides[3];
  a.KH = static_cast<int>(p.kernel_h); a.KW = static_cast<int>(p.kernel_w);
  a.sh = static_cast<int>(p.stride_h); a.sw = static_cast<int>(p.stride_w);
  a.dh = static_cast<int>(p.dilation_h); a.dw = static_cast<int>(p.dilation_w);
  a.pt = static_cast<int>(p.pad_top); a.pl = static_cast<int>(p.pad_left);
  a.reuse = (a.dh % a.sh == 0) ? 1 : 0;
  a.E = a.reuse ? a.dh / a.sh : 1;
  const int64_t nq = ceil_div<int64_t>(p.out_h, a.E);  // rows of the largest residue class
  a.nbands = static_cast<int>(ceil_div<int64_t>(nq, VH));
  a.U = static_cast<int>(ceil_div<int64_t>(nq, a.nbands));
  const int ntw = static_cast<int>(ceil_div<int64_t>(p.out_w, kMaxThreads));
  a.TWo = static_cast<int>(ceil_div<int64_t>(p.out_w, ntw));
  a.ntb_w = static_cast<int>(ceil_div<int64_t>(p.kernel_w, TKW));
  a.ntb = static_cast<int>(ceil_div<int64_t>(p.kernel_h, TKH)) * a.ntb_w;
  a.T1 = a.KH * a.KW + 1;
  a.R = a.reuse ? VH + TKH - 1 : (a.U - 1) * a.sh + (TKH - 1) * a.dh + 1;

  const auto* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t smem_optin = static_cast<int64_t>(prop->sharedMemPerBlockOptin);
  const int64_t static_smem = static_cast<int64_t>(kMaxThreads / 32) * (TKH * TKW + 1) * sizeof(acc_t);
  int64_t unit_bytes = 0;
  for (;;) {
    a.XC = (a.TWo - 1) * a.sw + (TKW - 1) * a.dw + 1;
    unit_bytes = (static_cast<int64_t>(a.R) * a.XC + static_cast<int64_t>(VH) * a.TWo) *
                 static_cast<int64_t>(sizeof(acc_t));
    if (unit_bytes <= kDefaultSmem - static_smem || a.TWo <= 32) break;
    a.TWo = static_cast<int>(ceil_div(a.TWo, 2));
  }
  a.nct = static_cast<int>(ceil_div<int64_t>(p.out_w, a.TWo));
  a.units_per_oc = p.batch * a.E * a.nbands * a.nct;
  int64_t G = std::max<int64_t>(1, kMaxThreads / a.TWo);
  G = imin64(G, std::max<int64_t>(1, (kDefaultSmem - static_smem) / unit_bytes));
  G = imin64(G, a.units_per_oc);
  a.G = static_cast<int>(G);
  const int64_t smem = G * unit_bytes;
  TORCH_CHECK(smem + static_smem <= smem_optin,
              "convext: depthwise_conv2d_backward_weight: dilation/stride too large for the CUDA kernel (",
              smem, " bytes of shared memory needed)");
  auto kernel = dw_bwd_weight_planar_kernel<scalar_t, TKH, TKW, VH>;
  if (smem + static_smem > kDefaultSmem) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
  }
  const int threads = static_cast<int>(ceil_div<int64_t>(G * a.TWo, 32) * 32);

  const int64_t rounds = ceil_div<int64_t>(a.units_per_oc, G);
  const int64_t blocks_per_chunk = a.C_out * a.ntb;
  const int64_t target = static_cast<int64_t>(prop->multiProcessorCount) * 16;
  int64_t nchunks = imin64(std::max<int64_t>(1, ceil_div(target, blocks_per_chunk)), rounds);
  nchunks = imin64(nchunks, 1024);
  const int64_t rounds_per_chunk = ceil_div(rounds, nchunks);
  nchunks = ceil_div(rounds, rounds_per_chunk);
  a.units_per_chunk = rounds_per_chunk * G;
  const int64_t nblocks = nchunks * blocks_per_chunk;
  TORCH_CHECK(nblocks < (int64_t(1) << 31), "convext: depthwise_conv2d_backward_weight: grid too large");

  at::Tensor ws = at::empty({nchunks, a.C_out * a.T1}, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  kernel<<<static_cast<unsigned>(nblocks), threads, static_cast<size_t>(smem), stream>>>(
      x.const_data_ptr<scalar_t>(), go.const_data_ptr<scalar_t>(), ws.mutable_data_ptr<acc_t>(), a);
  CONVEXT_LAUNCH_CHECK();
  launch_reduce<scalar_t>(ws, nchunks, a.C_out * a.T1, a.T1, gw, gb, compute_bias, stream);
}

template <typename scalar_t>
void launch_reduce_impl(const at::Tensor& ws, int64_t parts, int64_t per_part, int T1, at::Tensor& gw,
                        at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
  using acc_t = AccType<scalar_t>;
  const dim3 block(32, 8);
  const int64_t nb = ceil_div<int64_t>(per_part, 32);
  TORCH_CHECK(nb < (int64_t(1) << 31), "convext: depthwise_conv2d_backward_weight: too many channels");
  dw_bwd_weight_reduce_kernel<scalar_t><<<static_cast<unsigned>(nb), block, 0, stream>>>(
      ws.const_data_ptr<acc_t>(), parts, per_part, T1, gw.mutable_data_ptr<scalar_t>(),
      compute_bias ? gb.mutable_data_ptr<scalar_t>() : nullptr);
  CONVEXT_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_reduce(const at::Tensor& ws, int64_t parts, int64_t per_part, int T1, at::Tensor& gw,
                   at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
  launch_reduce_impl<scalar_t>(ws, parts, per_part, T1, gw, gb, compute_bias, stream);
}

template <typename scalar_t, int KWB>
void launch_cl(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
               at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
  using acc_t = AccType<scalar_t>;
  constexpr int VC = cuda::vec16<scalar_t>();
  constexpr int VW = sizeof(scalar_t) == 2 ? 2 : 4;
  CLArgs a{};
  a.C = p.out_channels;
  a.H = p.in_h; a.W = p.in_w; a.Ho = p.out_h; a.Wo = p.out_w;
  a.xs0 = p.in_strides[0]; a.xs2 = p.in_strides[2]; a.xs3 = p.in_strides[3];
  a.gs0 = p.out_strides[0]; a.gs2 = p.out_strides[2]; a.gs3 = p.out_strides[3];
  a.KH = static_cast<int>(p.kernel_h); a.KW = static_cast<int>(p.kernel_w);
  a.sh = static_cast<int>(p.stride_h); a.sw = static_cast<int>(p.stride_w);
  a.dh = static_cast<int>(p.dilation_h); a.dw = static_cast<int>(p.dilation_w);
  a.pt = static_cast<int>(p.pad_top); a.pl = static_cast<int>(p.pad_left);
  a.window = (a.dw % a.sw == 0) ? 1 : 0;
  a.E = a.window ? a.dw / a.sw : 1;
  a.nqb = static_cast<int>(ceil_div<int64_t>(ceil_div<int64_t>(p.out_w, a.E), VW));
  a.nkwb = static_cast<int>(ceil_div<int64_t>(p.kernel_w, KWB));
  a.ntg = a.KH * a.nkwb;
  a.T1 = a.KH * a.KW + 1;
  a.units = p.batch * p.out_h * a.E * a.nqb;

  const int64_t nvec = p.out_channels / VC;
  const int cvb = static_cast<int>(imin64(nvec, 32));
  const int tgb = std::min(a.ntg, 8);
  int P = 1;
  while (P * 2 * cvb * tgb <= kMaxThreads && P * 2 <= 64) P *= 2;
  const dim3 block(cvb, tgb, P);
  const int64_t gx = ceil_div<int64_t>(nvec, cvb), gy = ceil_div<int64_t>(a.ntg, tgb);
  TORCH_CHECK(gx < (int64_t(1) << 31) && gy <= 65535, "convext: depthwise_conv2d_backward_weight: grid too large");
  const auto* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t target = static_cast<int64_t>(prop->multiProcessorCount) * 16;
  const int64_t streams_work = ceil_div<int64_t>(a.units, P);
  int64_t nchunks = imin64(std::max<int64_t>(1, ceil_div(target, gx * gy)), streams_work);
  nchunks = imin64(nchunks, 1024);
  a.units_per_chunk = ceil_div<int64_t>(a.units, nchunks);
  nchunks = ceil_div<int64_t>(a.units, a.units_per_chunk);
  const size_t smem = static_cast<size_t>(P / 2) * cvb * tgb * (KWB + 1) * VC * sizeof(acc_t);
  TORCH_INTERNAL_ASSERT(smem <= static_cast<size_t>(kDefaultSmem));
  at::Tensor ws = at::empty({nchunks, a.C * a.T1}, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  dw_bwd_weight_cl_kernel<scalar_t, KWB, VW>
      <<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(nchunks)), block, smem,
         stream>>>(x.const_data_ptr<scalar_t>(), go.const_data_ptr<scalar_t>(), ws.mutable_data_ptr<acc_t>(), a);
  CONVEXT_LAUNCH_CHECK();
  launch_reduce<scalar_t>(ws, nchunks, a.C * a.T1, a.T1, gw, gb, compute_bias, stream);
}

// CONVEXT_DISABLE_FAST_PATHS=1 (read once) turns the fast paths off.
bool fast_paths_enabled() {
  static const bool enabled = [] {
    const char* e = std::getenv("CONVEXT_DISABLE_FAST_PATHS");
    return !(e != nullptr && e[0] != '\0' && std::strcmp(e, "0") != 0);
  }();
  return enabled;
}

template <typename scalar_t, int K, int CV, int KHB, int VW, int VS>
void launch_cl_fast(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
                    at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
  using acc_t = AccType<scalar_t>;
  CLFastArgs a{};
  a.C = p.out_channels;
  a.H = p.in_h; a.W = p.in_w;
  a.Ho = static_cast<int>(p.out_h); a.Wo = static_cast<int>(p.out_w);
  a.xs0 = p.in_strides[0]; a.xs2 = p.in_strides[2]; a.xs3 = p.in_strides[3];
  a.gs0 = p.out_strides[0]; a.gs2 = p.out_strides[2]; a.gs3 = p.out_strides[3];
  a.sh = static_cast<int>(p.stride_h); a.sw = static_cast<int>(p.stride_w);
  a.dh = static_cast<int>(p.dilation_h); a.dw = static_cast<int>(p.dilation_w);
  a.pt = static_cast<int>(p.pad_top); a.pl = static_cast<int>(p.pad_left);
  if (VS == 1) {
    a.E = a.dw / a.sw;
    a.ucol = a.dw;
  } else {
    a.E = 1;
    a.ucol = 1;
  }
  a.nqb = static_cast<int>(ceil_div<int64_t>(ceil_div<int64_t>(p.out_w, a.E), VW));
  a.ntg = ceil_div(K, KHB);
  a.T1 = K * K + 1;
  a.units = static_cast<int>(p.batch * p.out_h * a.E * a.nqb);  // < 2^31: checked by the caller

  const int64_t nvec = p.out_channels / CV;
  const int64_t gx = ceil_div<int64_t>(nvec, 32);
  a.cvb = static_cast<int>(ceil_div<int64_t>(nvec, gx));
  const int layer = a.cvb * a.ntg;
  const int P = std::max(1, kMaxThreads / layer);
  const int threads = layer * P;
  const auto* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t target = static_cast<int64_t>(prop->multiProcessorCount) * 4;
  int64_t nchunks = std::max<int64_t>(1, ceil_div<int64_t>(target, gx));
  nchunks = imin64(nchunks, ceil_div<int64_t>(a.units, P));
  nchunks = std::max<int64_t>(1, imin64(nchunks, 4096));
  a.units_per_chunk = static_cast<int>(ceil_div<int64_t>(a.units, nchunks));
  nchunks = ceil_div<int64_t>(a.units, a.units_per_chunk);
  TORCH_CHECK(gx < (int64_t(1) << 31), "convext: depthwise_conv2d_backward_weight: grid too large");
  at::Tensor ws = at::empty({nchunks, a.C * a.T1}, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  dw_bwd_weight_cl_fast_kernel<scalar_t, K, CV, KHB, VW, VS>
      <<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(nchunks)), threads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), go.const_data_ptr<scalar_t>(), ws.mutable_data_ptr<acc_t>(), a);
  CONVEXT_LAUNCH_CHECK();
  launch_reduce<scalar_t>(ws, nchunks, a.C * a.T1, a.T1, gw, gb, compute_bias, stream);
}

// Fast channels_last path; false when the shape is not covered (caller falls back).
// Per dtype and K: CV channels per thread, KHB kernel rows per thread, VW outputs per run
// (register budget ~128 at 2 blocks of 256 threads per SM).
template <typename scalar_t>
bool try_cl_fast(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
                 at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return false;
  } else {
    if (!fast_paths_enabled()) return false;
    const int64_t K = p.kernel_h;
    if (p.kernel_w != K || (K != 3 && K != 5 && K != 7)) return false;
    int vs = 0;
    if (p.dilation_w % p.stride_w == 0) {
      vs = 1;
    } else if (K == 3 && p.stride_w == 2 && p.dilation_w == 1) {
      vs = 2;
    } else {
      return false;
    }
    // 32-bit unit / row / column indices inside the kernel
    const int64_t E = vs == 1 ? p.dilation_w / p.stride_w : 1;
    const int64_t units_max = p.batch * p.out_h * E * (ceil_div<int64_t>(p.out_w, E) + 1);
    if (units_max >= (int64_t(1) << 30) || p.out_w * p.stride_w + p.pad_left >= (int64_t(1) << 30) ||
        p.out_h >= (int64_t(1) << 30)) {
      return false;
    }
    constexpr bool f32 = std::is_same_v<scalar_t, float>;
    if (K == 3) {
      if (vs == 1) {
        launch_cl_fast<scalar_t, 3, 4, 3, 4, 1>(x, go, p, gw, gb, compute_bias, stream);
      } else {
        launch_cl_fast<scalar_t, 3, 4, 3, 4, 2>(x, go, p, gw, gb, compute_bias, stream);
      }
    } else if (K == 5) {
      if (vs != 1) return false;
      launch_cl_fast<scalar_t, 5, 2, 5, 4, 1>(x, go, p, gw, gb, compute_bias, stream);
    } else {
      if (vs != 1) return false;
      if constexpr (f32) {
        launch_cl_fast<scalar_t, 7, 1, 7, 8, 1>(x, go, p, gw, gb, compute_bias, stream);
      } else {
        launch_cl_fast<scalar_t, 7, 2, 4, 4, 1>(x, go, p, gw, gb, compute_bias, stream);
      }
    }
    return true;
  }
}

template <typename scalar_t, int K, int A>
bool launch_planar_fast(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
                        at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
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

  const auto* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t rounds = ceil_div<int64_t>(units, G);
  const int64_t min_rounds = K == 7 ? 6 : 4;  // amortise the per-block reduction
  const int64_t target = static_cast<int64_t>(prop->multiProcessorCount) * pf_min_blocks<K, A>() * 4;
  int64_t nchunks = std::max<int64_t>(1, ceil_div<int64_t>(target, a.C_out));
  nchunks = imin64(nchunks, std::max<int64_t>(1, rounds / min_rounds));
  nchunks = imin64(nchunks, 4096);
  const int64_t rpc = ceil_div(rounds, nchunks);
  nchunks = ceil_div(rounds, rpc);
  a.units_per_chunk = static_cast<int>(rpc * G);
  const int64_t nblocks = nchunks * a.C_out;
  if (nblocks >= (int64_t(1) << 31)) return false;

  at::Tensor ws = at::empty({nchunks, a.C_out * a.T1}, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  dw_bwd_weight_planar_fast_kernel<scalar_t, K, A>
      <<<static_cast<unsigned>(nblocks), threads, static_cast<size_t>(smem), stream>>>(
          x.const_data_ptr<scalar_t>(), go.const_data_ptr<scalar_t>(), ws.mutable_data_ptr<acc_t>(), a);
  CONVEXT_LAUNCH_CHECK();
  launch_reduce<scalar_t>(ws, nchunks, a.C_out * a.T1, a.T1, gw, gb, compute_bias, stream);
  return true;
}

// Fast planar path; false when the shape is not covered (caller falls back).
template <typename scalar_t>
bool try_planar_fast(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
                     at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return false;
  } else {
    if (!fast_paths_enabled()) return false;
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
    if (K == 3) {
      return A == 1 ? launch_planar_fast<scalar_t, 3, 1>(x, go, p, gw, gb, compute_bias, stream)
                    : launch_planar_fast<scalar_t, 3, 2>(x, go, p, gw, gb, compute_bias, stream);
    } else if (K == 5) {
      return A == 1 ? launch_planar_fast<scalar_t, 5, 1>(x, go, p, gw, gb, compute_bias, stream)
                    : launch_planar_fast<scalar_t, 5, 2>(x, go, p, gw, gb, compute_bias, stream);
    } else {
      return A == 1 ? launch_planar_fast<scalar_t, 7, 1>(x, go, p, gw, gb, compute_bias, stream)
                    : launch_planar_fast<scalar_t, 7, 2>(x, go, p, gw, gb, compute_bias, stream);
    }
  }
}

template <typename scalar_t>
bool cl_eligible(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p) {
  constexpr int VC = cuda::vec16<scalar_t>();
  if (p.multiplier != 1 || p.in_channels % VC != 0) return false;
  if (x.stride(1) != 1 || go.stride(1) != 1) return false;
  // W-contiguous planes with more than one column go to the planar kernel.
  if (x.stride(3) == 1 && p.in_w > 1) return false;
  for (int d : {0, 2, 3}) {
    if (x.stride(d) % VC != 0 || go.stride(d) % VC != 0) return false;
  }
  return cuda::is_aligned(x.const_data_ptr(), 16) && cuda::is_aligned(go.const_data_ptr(), 16);
}

template <typename scalar_t>
void dispatch(const at::Tensor& x, const at::Tensor& go, const DepthwiseConv2dParams& p, at::Tensor& gw,
              at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
  if (cuda::try_tensor_core_weight<scalar_t>(x, go, p, gw, gb, compute_bias, stream)) return;
  if (cl_eligible<scalar_t>(x, go, p)) {
    if (try_cl_fast<scalar_t>(x, go, p, gw, gb, compute_bias, stream)) return;
    if constexpr (std::is_same_v<scalar_t, double>) {
      launch_cl<scalar_t, 4>(x, go, p, gw, gb, compute_bias, stream);
    } else {
      const int64_t w3 = ceil_div<int64_t>(p.kernel_w, 3) * 3, w4 = ceil_div<int64_t>(p.kernel_w, 4) * 4;
      if (w3 < w4) {
        launch_cl<scalar_t, 3>(x, go, p, gw, gb, compute_bias, stream);
      } else {
        launch_cl<scalar_t, 4>(x, go, p, gw, gb, compute_bias, stream);
      }
    }
    return;
  }
  if (try_planar_fast<scalar_t>(x, go, p, gw, gb, compute_bias, stream)) return;
  if constexpr (std::is_same_v<scalar_t, double>) {
    launch_planar<scalar_t, 3, 3>(x, go, p, gw, gb, compute_bias, stream);
  } else {
    int best = 0;
    double best_cost = 0;
    for (int i = 0; i < static_cast<int>(sizeof(kPlanarTiles) / sizeof(kPlanarTiles[0])); ++i) {
      const double c = tile_cost(p.kernel_h, p.kernel_w, kPlanarTiles[i].kh, kPlanarTiles[i].kw);
      if (i == 0 || c < best_cost) {
        best = i;
        best_cost = c;
      }
    }
    switch (best) {
      case 0: launch_planar<scalar_t, 3, 3>(x, go, p, gw, gb, compute_bias, stream); break;
      case 1: launch_planar<scalar_t, 5, 5>(x, go, p, gw, gb, compute_bias, stream); break;
      case 2: launch_planar<scalar_t, 7, 7>(x, go, p, gw, gb, compute_bias, stream); break;
      case 3: launch_planar<scalar_t, 8, 8>(x, go, p, gw, gb, compute_bias, stream); break;
      default: launch_planar<scalar_t, 1, 12>(x, go, p, gw, gb, compute_bias, stream); break;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_backward_weight_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool compute_bias) {
  TORCH_CHECK(input.is_cuda() && grad_output.is_cuda(),
              "convext: depthwise_conv2d_backward_weight: tensors must be CUDA tensors");
  TORCH_CHECK(input.device() == grad_output.device(),
              "convext: depthwise_conv2d_backward_weight: input and grad_output on different devices");
  TORCH_CHECK(input.dim() == 4 && grad_output.dim() == 4,
              "convext: depthwise_conv2d_backward_weight: input and grad_output must be 4-D");
  TORCH_CHECK(input.scalar_type() == grad_output.scalar_type(),
              "convext: depthwise_conv2d_backward_weight: input and grad_output dtypes differ (",
              input.scalar_type(), " vs ", grad_output.scalar_type(), ")");
  DepthwiseConv2dParams p = make_depthwise_conv2d_params(input.sizes(), grad_output.size(1), kernel_size, stride,
                                                         padding, dilation);
  TORCH_CHECK(grad_output.size(0) == p.batch && grad_output.size(2) == p.out_h && grad_output.size(3) == p.out_w,
              "convext: depthwise_conv2d_backward_weight: grad_output has shape ", grad_output.sizes(),
              ", expected (", p.batch, ", ", p.out_channels, ", ", p.out_h, ", ", p.out_w, ")");
  for (int64_t v : {p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.pad_top,
                    p.pad_left}) {
    TORCH_CHECK(v < (int64_t(1) << 20), "convext: depthwise_conv2d_backward_weight: geometry too large");
  }
  TORCH_CHECK(p.kernel_h * p.kernel_w < (int64_t(1) << 24), "convext: kernel too large");
  set_strides(p.in_strides, input);
  set_strides(p.out_strides, grad_output);

  c10::cuda::CUDAGuard guard(input.device());
  const auto opts = input.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor gw = at::empty({p.out_channels, 1, p.kernel_h, p.kernel_w}, opts);
  at::Tensor gb = compute_bias ? at::empty({p.out_channels}, opts) : at::empty({0}, opts);
  if (p.batch == 0) {
    gw.zero_();
    if (compute_bias) gb.zero_();
    return {gw, gb};
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  CONVEXT_DISPATCH_FLOATING(input.scalar_type(), "convext_depthwise_conv2d_backward_weight", [&] {
    dispatch<scalar_t>(input, grad_output, p, gw, gb, compute_bias, stream);
  });
  return {gw, gb};
}

}  // namespace
}  // namespace convext

TORCH_LIBRARY_IMPL(convext, CUDA, m) {
  m.impl("depthwise_conv2d_backward_weight", &convext::depthwise_conv2d_backward_weight_cuda);
}
