// CUDA grad-weight, channels_last family (C contiguous in both tensors, M == 1, 16-byte aligned
// channel vectors): dw_bwd_weight_cl_kernel and its launcher. Instantiated by
// depthwise_conv2d_bwd_weight_cl.cu for every dtype.
//
// Threads along C with 16-byte vectors (4 fp32 / 8 bf16 / 8 fp16 / 2 fp64 channels), each thread
// owns one kh and KWB consecutive kw taps for its channels and streams over runs of VW output
// columns (window of VW+KWB-1 input vectors reused across taps when sw | dw). The P streams of a
// block are summed by a fixed shared-memory tree before the partial is written.
#pragma once

#include "cuda/depthwise_conv2d_backward_weight.cuh"

namespace convext {
namespace cuda {

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
  constexpr int VC = vec16<scalar_t>();
  constexpr int NA = (KWB + 1) * VC;  // accumulators per thread (taps + bias)
  using V = Vec<scalar_t, VC>;
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
          const V gv = load_vec<scalar_t, VC>(gp + (ow0 + static_cast<int64_t>(v) * a.E) * a.gs3);
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
            const V xv = load_vec<scalar_t, VC>(xr + iw * a.xs3);
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
                const V xv = load_vec<scalar_t, VC>(xr + iw * a.xs3);
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

template <typename scalar_t, int KWB>
void launch_cl(const DepthwiseConv2dParams& p, const BwdWeightIO& io) {
  using acc_t = AccType<scalar_t>;
  constexpr int VC = vec16<scalar_t>();
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
  TORCH_CHECK(gx <= kI32Max && gy <= 65535, "convext: depthwise_conv2d_backward_weight: grid too large");
  const int64_t target = sm_count() * 16;
  const int64_t streams_work = ceil_div<int64_t>(a.units, P);
  int64_t nchunks = imin64(std::max<int64_t>(1, ceil_div(target, gx * gy)), streams_work);
  nchunks = imin64(nchunks, 1024);
  a.units_per_chunk = ceil_div<int64_t>(a.units, nchunks);
  nchunks = ceil_div<int64_t>(a.units, a.units_per_chunk);
  const size_t smem = static_cast<size_t>(P / 2) * cvb * tgb * (KWB + 1) * VC * sizeof(acc_t);
  TORCH_INTERNAL_ASSERT(smem <= static_cast<size_t>(kDefaultSmem));
  acc_t* ws = io.workspace<acc_t>(nchunks, a.C * a.T1);
  dw_bwd_weight_cl_kernel<scalar_t, KWB, VW>
      <<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(nchunks)), block, smem,
         io.stream>>>(static_cast<const scalar_t*>(io.x), static_cast<const scalar_t*>(io.go), ws, a);
  CONVEXT_LAUNCH_CHECK();
  launch_reduce<scalar_t>(ws, nchunks, a.C * a.T1, a.T1, io);
}

template <typename scalar_t>
void run_bwd_weight_cl(const DepthwiseConv2dParams& p, const BwdWeightIO& io) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    launch_cl<scalar_t, 4>(p, io);
  } else {
    const int64_t w3 = ceil_div<int64_t>(p.kernel_w, 3) * 3, w4 = ceil_div<int64_t>(p.kernel_w, 4) * 4;
    if (w3 < w4) {
      launch_cl<scalar_t, 3>(p, io);
    } else {
      launch_cl<scalar_t, 4>(p, io);
    }
  }
}

}  // namespace cuda
}  // namespace convext
