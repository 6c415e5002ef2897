// CUDA grad-weight, channels_last fast family (square K in {3,5,7}, M == 1, not fp64):
// dw_bwd_weight_cl_fast_kernel and its launcher (kernel comment below). Instantiated by
// depthwise_conv2d_bwd_weight_cl_fast.cu (float64 returns false); falls back to the cl family when
// the shape is not covered; off with CONVEXT_DISABLE_FAST_PATHS=1.
#pragma once

#include "cuda/depthwise_conv2d_backward_weight.cuh"

namespace convext {
namespace cuda {

// ---------------------------------------------------------------------------
// channels_last fast path (square K in {3,5,7}, M == 1, sw | dw or (sw,dw) == (2,1)):
// a thread owns CV channels (one CV-wide vector load), KHB consecutive kernel rows
// and all K kernel columns of them (KHB*K*CV accumulators + CV bias), so grad_output
// is read once per row group (not once per tap group) and every input vector loaded
// into the row window feeds up to K taps. Threads of a block: cvb channel vectors x
// ntg row groups x P streams over units (n, oh, residue, run of VW output columns).
// The P streams are summed in a fixed order (p = 0..P-1) through shared memory, in
// slices of kSlice accumulators. Disabled by CONVEXT_DISABLE_FAST_PATHS=1.
// Specialisations: ClFastConfigs below.
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
  using V = Vec<scalar_t, CV>;
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
          const V gv = load_vec<scalar_t, CV>(gp + static_cast<int64_t>(ow0 + v * a.E) * a.gs3);
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
              const V xv = load_vec<scalar_t, CV>(xr + iw * a.xs3);
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

template <typename scalar_t, int K, int CV, int KHB, int VW, int VS>
void launch_cl_fast(const DepthwiseConv2dParams& p, const BwdWeightIO& io) {
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
  const int64_t target = sm_count() * 4;
  int64_t nchunks = std::max<int64_t>(1, ceil_div<int64_t>(target, gx));
  nchunks = imin64(nchunks, ceil_div<int64_t>(a.units, P));
  nchunks = std::max<int64_t>(1, imin64(nchunks, 4096));
  a.units_per_chunk = static_cast<int>(ceil_div<int64_t>(a.units, nchunks));
  nchunks = ceil_div<int64_t>(a.units, a.units_per_chunk);
  TORCH_CHECK(gx <= kI32Max, "convext: depthwise_conv2d_backward_weight: grid too large");
  acc_t* ws = io.workspace<acc_t>(nchunks, a.C * a.T1);
  dw_bwd_weight_cl_fast_kernel<scalar_t, K, CV, KHB, VW, VS>
      <<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(nchunks)), threads, 0, io.stream>>>(
          static_cast<const scalar_t*>(io.x), static_cast<const scalar_t*>(io.go), ws, a);
  CONVEXT_LAUNCH_CHECK();
  launch_reduce<scalar_t>(ws, nchunks, a.C * a.T1, a.T1, io);
}

// Fast channels_last path; false when the shape is not covered (caller falls back).
// Per dtype and K: CV channels per thread, KHB kernel rows per thread, VW outputs per run

// One specialisation: square kernel K, CV channels per thread, KHB kernel rows per thread, VW
// outputs per run, VS window step (1: sw | dw; 2: (sw, dw) == (2, 1)). Register budget ~128 at 2
// blocks of 256 threads per SM.
template <int K_, int CV_, int KHB_, int VW_, int VS_>
struct ClFastConfig {
  static constexpr int K = K_, CV = CV_, KHB = KHB_, VW = VW_, VS = VS_;
  static bool matches(int64_t k, int vs) { return k == K && vs == VS; }
};

template <typename scalar_t>
using ClFastConfigs = ConfigList<
    ClFastConfig<3, 4, 3, 4, 1>,
    ClFastConfig<3, 4, 3, 4, 2>,
    ClFastConfig<5, 2, 5, 4, 1>,
    std::conditional_t<std::is_same_v<scalar_t, float>, ClFastConfig<7, 1, 7, 8, 1>, ClFastConfig<7, 2, 4, 4, 1>>>;

// Fast channels_last path; false when the shape is not covered (caller falls back).
template <typename scalar_t>
bool run_bwd_weight_cl_fast(const DepthwiseConv2dParams& p, const BwdWeightIO& io) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return false;
  } else {
    if (!fast_path_enabled(kFpWeightCl)) return false;
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
    return first_of(ClFastConfigs<scalar_t>{}, [&](auto cfg) {
      using C = decltype(cfg);
      if (!C::matches(K, vs)) return false;
      launch_cl_fast<scalar_t, C::K, C::CV, C::KHB, C::VW, C::VS>(p, io);
      return true;
    });
  }
}

}  // namespace cuda
}  // namespace convext
