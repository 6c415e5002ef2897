// CUDA grad-weight, planar family (any strides: NCHW, channels_last with M > 1, sliced views,
// odd alignments; coalesced when W is contiguous): dw_bwd_weight_planar_kernel and its launcher.
// Instantiated by depthwise_conv2d_bwd_weight_planar.cu for every dtype.
//
// A block owns one output channel, one tap block [kh0, kh0+TKH) x [kw0, kw0+TKW) and a chunk of
// "units"; a unit is up to VH output rows x TWo output columns of one plane. The threads of a
// group own one output column each and up to VH rows; the input tile of the unit (rows + halo) is
// staged in shared memory as acc type (zero padding written there), grad_output goes straight to
// registers. When the row stride divides the row dilation, a thread's rows are E = dh/sh apart so
// that the staged rows are shared by consecutive (row, kh) pairs and each staged value is loaded
// once per thread and reused for every kh ("reuse" mode); otherwise each (row, kh) reads its own
// staged row. Large kernels are split into tap blocks (grid dimension), so no thread holds more
// than TKH*TKW accumulators; the tap block is chosen by a cost model (PlanarTapBlocks below).
#pragma once

#include "cuda/depthwise_conv2d_backward_weight.cuh"

namespace convext {
namespace cuda {

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
            v[s] = (cvalid && vh < nvh) ? to_acc(ldg(gr + vh * rstep)) : acc_t(0);
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
            if (colok && tr < rows_needed && xrow >= 0 && xrow < a.H) v[s] = to_acc(ldg(xcp + xrow * a.xs2));
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
// Host side
// ---------------------------------------------------------------------------

// Rough per-output cost of covering a KHxKW kernel with TKHxTKW tap blocks:
// FMAs issued (masked taps included) + staged loads and go/staging overhead per tap block.
inline double tile_cost(int64_t KH, int64_t KW, int tkh, int tkw) {
  const int64_t nh = ceil_div<int64_t>(KH, tkh), nw = ceil_div<int64_t>(KW, tkw);
  const int vh = tkh * tkw > 49 ? 4 : (tkh * tkw > 32 ? 8 : 16);  // planar_vh<float, tkh, tkw>()
  const double per_block = tkw * double(vh + tkh - 1) / vh + 3.0;
  return double(nh * tkh * nw * tkw) + double(nh * nw) * per_block;
}

template <typename scalar_t, int TKH, int TKW>
void launch_planar(const DepthwiseConv2dParams& p, const BwdWeightIO& io) {
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

  const int64_t smem_optin = io.smem_optin;
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
  const int64_t target = sm_count() * 16;
  int64_t nchunks = imin64(std::max<int64_t>(1, ceil_div(target, blocks_per_chunk)), rounds);
  nchunks = imin64(nchunks, 1024);
  const int64_t rounds_per_chunk = ceil_div(rounds, nchunks);
  nchunks = ceil_div(rounds, rounds_per_chunk);
  a.units_per_chunk = rounds_per_chunk * G;
  const int64_t nblocks = nchunks * blocks_per_chunk;
  TORCH_CHECK(nblocks <= kI32Max, "convext: depthwise_conv2d_backward_weight: grid too large");

  acc_t* ws = io.workspace<acc_t>(nchunks, a.C_out * a.T1);
  kernel<<<static_cast<unsigned>(nblocks), threads, static_cast<size_t>(smem), io.stream>>>(
      static_cast<const scalar_t*>(io.x), static_cast<const scalar_t*>(io.go), ws, a);
  CONVEXT_LAUNCH_CHECK();
  launch_reduce<scalar_t>(ws, nchunks, a.C_out * a.T1, a.T1, io);
}

// Tap blocks compiled per dtype, in the order the cost model breaks ties (float64: 3x3 only).
template <int TKH_, int TKW_>
struct PlanarTapBlock {
  static constexpr int TKH = TKH_, TKW = TKW_;
};
using PlanarTapBlocks = ConfigList<PlanarTapBlock<3, 3>, PlanarTapBlock<5, 5>, PlanarTapBlock<7, 7>,
                                   PlanarTapBlock<8, 8>, PlanarTapBlock<1, 12>>;

template <typename scalar_t>
void run_bwd_weight_planar(const DepthwiseConv2dParams& p, const BwdWeightIO& io) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    launch_planar<scalar_t, 3, 3>(p, io);
  } else {
    int best = 0, i = 0;
    double best_cost = 0;
    for_each_config(PlanarTapBlocks{}, [&](auto cfg) {
      using C = decltype(cfg);
      const double c = tile_cost(p.kernel_h, p.kernel_w, C::TKH, C::TKW);
      if (i == 0 || c < best_cost) {
        best = i;
        best_cost = c;
      }
      ++i;
    });
    visit_at(PlanarTapBlocks{}, best, [&](auto cfg) {
      using C = decltype(cfg);
      launch_planar<scalar_t, C::TKH, C::TKW>(p, io);
    });
  }
}

}  // namespace cuda
}  // namespace convext
