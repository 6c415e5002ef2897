// Large-kernel depthwise correlation on tensor cores (WMMA, fp16/bf16 operands, fp32 accumulate)
// for the correlation engine of depthwise_conv2d_forward.cu: stride-1 forward and stride-1
// grad-input (flipped kernel, summed over the depth multiplier).
//
// Row-Toeplitz form. For kernel row kh and a 16-wide block of dst columns starting at x0,
//   dst[y, x0 + q] += sum_k A_kh[y, k] * B_kh[k, q],  A_kh[y, k] = src[y - pt + kh*dh, x0 - pl + k],
//   B_kh[k, q] = w[kh', j'] where k = q + j*dw (0 <= j < KW), else 0,
// a [16 x BK] @ [BK x 16] WMMA chain with BK = roundup16(16 + (KW-1)*dw): BK / KW times the direct
// FLOPs (1.5x for 31 taps wide, 2.5x for 13) on units ~15x faster than the FP32 FMA pipe.
// B_kh depends on kh only (Toeplitz), so one B serves every column block and row of a plane.
//
// A block owns one plane (n, cd) x BH = 16*NW dst rows x up to kGroupW (64) dst columns at a time:
// it stages the (BH + (KH-1)*dh) x (64 + BK - 16) source window once per column group (zero
// outside src), then for each kernel row builds B_kh in shared memory and each warp runs its 16
// rows x 4 column blocks. The products of fp16/bf16 values are exact in fp32; only the summation
// order differs from the CUDA-core kernels.
//
// grad-weight: tc_weight_kernel below (band diagonals of X^T GO).
// Opt-in until a GPU has validated it: CONVEXT_CUDA_TC=1 enables it (see run_fwd_tc).
#include "cuda/depthwise_conv2d_common.cuh"
#include "cuda/launch_utils.cuh"
#include "cuda/static_switch.cuh"
#include "depthwise_conv2d.h"

#include <mma.h>


namespace convext {
namespace cuda {
namespace {

constexpr int kGroupW = 64;               // dst columns per group (4 WMMA column blocks)
constexpr int kFragsW = kGroupW / 16;

template <typename T> struct WmmaType;
template <> struct WmmaType<c10::Half> {
  using type = __half;
  static __device__ __forceinline__ type zero() { return __ushort_as_half(0); }
};
template <> struct WmmaType<c10::BFloat16> {
  using type = __nv_bfloat16;
  static __device__ __forceinline__ type zero() { return __ushort_as_bfloat16(0); }
};

// dst[i * ld + k] = src[(iy0 + i) * row_stride + ix0 + k] for i < rows, k < cols; zero outside the
// H x W plane (src rows are contiguous). All threads of the block take part.
template <typename T>
__device__ __forceinline__ void stage_window(typename WmmaType<T>::type* dst, int ld, int rows, int cols, const T* src,
                                             int iy0, int ix0, int H, int W, int row_stride, int tid, int nthr) {
  using WT = typename WmmaType<T>::type;
  for (int e = tid; e < rows * cols; e += nthr) {
    const int i = e / cols;
    const int k = e - i * cols;
    const int iy = iy0 + i;
    const int ix = ix0 + k;
    WT v = WmmaType<T>::zero();
    if (static_cast<unsigned>(iy) < static_cast<unsigned>(H) && static_cast<unsigned>(ix) < static_cast<unsigned>(W))
      v = *reinterpret_cast<const WT*>(src + iy * row_stride + ix);
    dst[i * ld + k] = v;
  }
}

struct TcCfg {
  int KH, KW, dh, dw, pt, pl;
  int H_src, W_src, H_dst, W_dst;
  int C_dst, M, R, flip, reduce_m;
  int BK, LDA, AROWS;          // B rows; A row pitch (elements); A rows = BH + (KH-1)*dh
  int row_blocks;               // ceil(H_dst / BH)
  int64_t ss0, ss1, ds0, ds1;  // image / channel strides (int64 offsets)
  int ss2, ds2;                 // row strides (rows contiguous; in-plane offsets fit int32)
};

template <typename T, int NW>
__global__ void __launch_bounds__(NW * 32)
tc_corr_kernel(const T* __restrict__ src, const T* __restrict__ weight, const T* __restrict__ bias,
               T* __restrict__ dst, const TcCfg g) {
  using namespace nvcuda;
  using WT = typename WmmaType<T>::type;
  constexpr int BH = 16 * NW;
  constexpr int LDB = 16;
  constexpr int LDO = kGroupW + 4;  // float staging pitch
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // layout: [A: AROWS x LDA WT][B: BK x LDB WT][w: KH*KW WT, padded]; output staging reuses A
  WT* As = reinterpret_cast<WT*>(smem_raw);
  WT* Bs = As + g.AROWS * g.LDA;
  WT* Ws = Bs + g.BK * LDB;
  float* Os = reinterpret_cast<float*>(smem_raw);

  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int64_t plane = blockIdx.x;          // n * C_dst + cd
  const int rb = blockIdx.y;                 // row block
  const int64_t n = plane / g.C_dst;
  const int cd = static_cast<int>(plane - n * g.C_dst);
  const int y0 = rb * BH;
  const int KK = g.KH * g.KW;
  const T* src_n = src + n * g.ss0;
  T* dst_p = dst + n * g.ds0 + cd * g.ds1;
  const float b = bias != nullptr ? to_acc(bias[cd]) : 0.f;

  for (int x0 = 0; x0 < g.W_dst; x0 += kGroupW) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kFragsW];
#pragma unroll
    for (int f = 0; f < kFragsW; ++f) wmma::fill_fragment(acc[f], 0.f);
    const int acols = kGroupW - 16 + g.BK;   // A columns the group's 4 blocks read

    for (int r = 0; r < g.R; ++r) {
      const int cs = g.reduce_m ? cd * g.M + r : cd / g.M;
      const int wrow = g.reduce_m ? cd * g.M + r : cd;
      const T* src_c = src_n + cs * g.ss1;
      __syncthreads();  // previous users of A / W are done
      for (int e = tid; e < KK; e += NW * 32) {
        const int t = g.flip ? KK - 1 - e : e;  // (KH-1-kh)*KW + (KW-1-kw)
        Ws[e] = *reinterpret_cast<const WT*>(weight + static_cast<int64_t>(wrow) * KK + t);
      }
      stage_window<T>(As, g.LDA, g.AROWS, acols, src_c, y0 - g.pt, x0 - g.pl, g.H_src, g.W_src, g.ss2, tid, NW * 32);
      for (int kh = 0; kh < g.KH; ++kh) {
        __syncthreads();  // A / W staged; previous B consumed
        const WT* wr = Ws + kh * g.KW;
        for (int e = tid; e < g.BK * LDB; e += NW * 32) {
          const int k = e / LDB;
          const int q = e - k * LDB;
          const int jd = k - q;
          const int j = jd / g.dw;
          Bs[e] = (jd >= 0 && jd - j * g.dw == 0 && j < g.KW) ? wr[j] : WmmaType<T>::zero();
        }
        __syncthreads();
        const WT* arow = As + (warp * 16 + kh * g.dh) * g.LDA;
        for (int kk = 0; kk < g.BK; kk += 16) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, WT, wmma::row_major> bf;
          wmma::load_matrix_sync(bf, Bs + kk * LDB, LDB);
#pragma unroll
          for (int f = 0; f < kFragsW; ++f) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, WT, wmma::row_major> af;
            wmma::load_matrix_sync(af, arow + f * 16 + kk, g.LDA);
            wmma::mma_sync(acc[f], af, bf, acc[f]);
          }
        }
      }
    }
    __syncthreads();  // A no longer read: reuse it as the fp32 output staging
#pragma unroll
    for (int f = 0; f < kFragsW; ++f)
      wmma::store_matrix_sync(Os + warp * 16 * LDO + f * 16, acc[f], LDO, wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < BH * kGroupW; e += NW * 32) {
      const int i = e / kGroupW;
      const int q = e - i * kGroupW;
      const int y = y0 + i;
      const int x = x0 + q;
      if (y < g.H_dst && x < g.W_dst)
        dst_p[y * g.ds2 + x] = from_acc<T>(Os[i * LDO + q] + b);
    }
  }
}

// Row-contiguous NCHW-like views run in place; others (channels_last, ...) through an NCHW copy.
bool planar_rows(const at::Tensor& t) { return t.stride(3) == 1 && t.stride(2) >= t.size(3); }
at::Tensor planar(const at::Tensor& t) { return planar_rows(t) ? t : t.contiguous(); }

// The kernel geometry both configs carry (all checked < 2^30 by the callers).
template <typename Cfg>
void set_kernel_geometry(Cfg& g, int64_t KH, int64_t KW, int64_t dh, int64_t dw, int64_t pt, int64_t pl) {
  g.KH = static_cast<int>(KH); g.KW = static_cast<int>(KW);
  g.dh = static_cast<int>(dh); g.dw = static_cast<int>(dw);
  g.pt = static_cast<int>(pt); g.pl = static_cast<int>(pl);
}

// Launch with `smem` bytes of dynamic shared memory (callers computed and bounded it).
template <typename Kernel, typename... Args>
void launch_with_smem(Kernel kernel, dim3 grid, int threads, int64_t smem, cudaStream_t stream, Args... args) {
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<grid, threads, static_cast<size_t>(smem), stream>>>(args...);
  CONVEXT_LAUNCH_CHECK();
}

// grad-weight: a block owns output channel oc, image n, BH = 16*NW grad_output rows and one
// 64-column group; it stages that grad_output tile and the input window once, then each warp takes
// kernel rows kh = warp, warp + NW, ...:
//   G_kh[k, q] = sum_{r, f} x[r + kh*dh, f*16 + k] * go[r, f*16 + q]   (WMMA, [BK x 16], fp32)
//   partial[kh, j] = sum_q G_kh[q + j*dw, q]                          (band diagonals, via smem)
// Partials per (n, row block, column group) are summed afterwards in a fixed order.
struct TcWCfg {
  int KH, KW, dh, dw, pt, pl;
  int H, W, H_out, W_out;
  int C_out, M, BK, LDA, AROWS, row_blocks, groups;
  int64_t xs0, xs1, gs0, gs1;
  int xs2, gs2;
};

constexpr int kLdg = kGroupW + 16;

template <typename T, int NW>
__global__ void __launch_bounds__(NW * 32)
tc_weight_kernel(const T* __restrict__ x, const T* __restrict__ go, float* __restrict__ ws, const TcWCfg g) {
  using namespace nvcuda;
  using WT = typename WmmaType<T>::type;
  constexpr int BH = 16 * NW;
  constexpr int kMaxMb = 8;  // BK <= 128
  extern __shared__ __align__(128) unsigned char smem_raw[];
  WT* Xs = reinterpret_cast<WT*>(smem_raw);           // [AROWS x LDA]
  WT* Gs = Xs + g.AROWS * g.LDA;                        // [BH x kLdg]
  float* Ss = reinterpret_cast<float*>(Gs + BH * kLdg);  // [NW][BK x 16]

  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int oc = blockIdx.x;
  const int64_t part = blockIdx.y;
  const int grp = static_cast<int>(part % g.groups);
  const int64_t t = part / g.groups;
  const int rb = static_cast<int>(t % g.row_blocks);
  const int64_t n = t / g.row_blocks;
  const int ic = oc / g.M;
  const int y0 = rb * BH;
  const int x0 = grp * kGroupW;
  const T* xc = x + n * g.xs0 + ic * g.xs1;
  const T* gc = go + n * g.gs0 + oc * g.gs1;
  const int acols = kGroupW - 16 + g.BK;
  stage_window<T>(Xs, g.LDA, g.AROWS, acols, xc, y0 - g.pt, x0 - g.pl, g.H, g.W, g.xs2, tid, NW * 32);
  for (int e = tid; e < BH * kGroupW; e += NW * 32) {
    const int r = e / kGroupW;
    const int q = e - r * kGroupW;
    const int y = y0 + r;
    const int xx = x0 + q;
    WT v = WmmaType<T>::zero();
    if (y < g.H_out && xx < g.W_out) v = *reinterpret_cast<const WT*>(gc + y * g.gs2 + xx);
    Gs[r * kLdg + q] = v;
  }
  __syncthreads();

  const int nmb = g.BK / 16;
  float* Sw = Ss + warp * g.BK * 16;
  float* out = ws + (part * g.C_out + oc) * (g.KH * g.KW);
  for (int kh = warp; kh < g.KH; kh += NW) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kMaxMb];
#pragma unroll
    for (int mb = 0; mb < kMaxMb; ++mb) wmma::fill_fragment(acc[mb], 0.f);
    for (int rr = 0; rr < BH; rr += 16) {
#pragma unroll
      for (int f = 0; f < kFragsW; ++f) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, WT, wmma::row_major> bf;
        wmma::load_matrix_sync(bf, Gs + rr * kLdg + f * 16, kLdg);
        const WT* xa = Xs + (rr + kh * g.dh) * g.LDA + f * 16;
#pragma unroll
        for (int mb = 0; mb < kMaxMb; ++mb) {
          if (mb < nmb) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, WT, wmma::col_major> af;
            wmma::load_matrix_sync(af, xa + mb * 16, g.LDA);
            wmma::mma_sync(acc[mb], af, bf, acc[mb]);
          }
        }
      }
    }
#pragma unroll
    for (int mb = 0; mb < kMaxMb; ++mb)
      if (mb < nmb) wmma::store_matrix_sync(Sw + mb * 256, acc[mb], 16, wmma::mem_row_major);
    __syncwarp();
    for (int j = lane; j < g.KW; j += 32) {
      float sum = 0.f;
#pragma unroll
      for (int q = 0; q < 16; ++q) {
        const int k = q + j * g.dw;
        if (k < g.BK) sum += Sw[k * 16 + q];
      }
      out[kh * g.KW + j] = sum;
    }
    __syncwarp();
  }
}


}  // namespace

// Serves the engine's call when the geometry suits the tensor-core path; false otherwise.
// src / dst of any layout: channels_last (or otherwise non-row-contiguous) ones go through an NCHW
// copy, the conv being compute-bound at these kernel sizes.
template <typename T>
bool run_fwd_tc(const at::Tensor& src, const at::Tensor& dst, const CorrArgs& a, cudaStream_t stream) {
  if constexpr (!(std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>)) {
    return false;
  } else {
    if (!cuda_tc_enabled() || a.gather || a.sh != 1 || a.sw != 1) return false;
    if (a.KH * a.KW < 81 || a.KW < 7 || (a.KW - 1) * a.dw > 112) return false;
    const int64_t planes = a.N * a.C_dst;
    if (planes < 1 || planes >= kI32Max || a.H_dst < 1 || a.W_dst < 1) return false;
    const int64_t lim = int64_t(1) << 30;
    if (a.H_src >= lim || a.W_src >= lim || a.H_dst >= lim || a.W_dst >= lim) return false;
    if (a.pt <= -lim || a.pt >= lim || a.pl <= -lim || a.pl >= lim || a.KH * a.dh >= lim) return false;
    TcCfg g;
    g.BK = static_cast<int>(ceil_div<int64_t>(16 + (a.KW - 1) * a.dw, 16) * 16);
    g.LDA = static_cast<int>(ceil_div<int64_t>(kGroupW - 16 + g.BK, 16) * 16 + 16);
    const int NW = a.H_dst <= 16 ? 1 : a.H_dst <= 32 ? 2 : 4;
    g.AROWS = static_cast<int>(16 * NW + (a.KH - 1) * a.dh);
    // [A window | fp32 output staging (aliased)] + [B band: BK x 16] + [weights, 16-byte padded]
    const int64_t smem = std::max<int64_t>(int64_t(g.AROWS) * g.LDA * 2, 16 * NW * (kGroupW + 4) * 4) +
                         g.BK * 16 * 2 + ceil_div<int64_t>(a.KH * a.KW, 8) * 16;
    if (smem > kMaxSmem) return false;
    const at::Tensor s = planar(src);
    const at::Tensor d = planar_rows(dst) ? dst : at::empty(dst.sizes(), dst.options().memory_format(at::MemoryFormat::Contiguous));
    // image and channel offsets are int64 in the kernel, in-plane offsets int32
    if (s.stride(2) * a.H_src + a.W_src >= kI32Max || d.stride(2) * a.H_dst + a.W_dst >= kI32Max) return false;
    set_kernel_geometry(g, a.KH, a.KW, a.dh, a.dw, a.pt, a.pl);
    g.H_src = static_cast<int>(a.H_src); g.W_src = static_cast<int>(a.W_src);
    g.H_dst = static_cast<int>(a.H_dst); g.W_dst = static_cast<int>(a.W_dst);
    g.C_dst = static_cast<int>(a.C_dst); g.M = static_cast<int>(a.M);
    g.reduce_m = a.reduce_m; g.flip = a.flip;
    g.R = a.reduce_m ? static_cast<int>(a.M) : 1;
    g.row_blocks = static_cast<int>(ceil_div<int64_t>(a.H_dst, 16 * NW));
    if (g.row_blocks > 65535) return false;
    g.ss0 = s.stride(0); g.ss1 = s.stride(1); g.ss2 = static_cast<int>(s.stride(2));
    g.ds0 = d.stride(0); g.ds1 = d.stride(1); g.ds2 = static_cast<int>(d.stride(2));
    const T* sp = static_cast<const T*>(s.const_data_ptr());
    T* dp = static_cast<T*>(d.data_ptr());
    const T* wp = static_cast<const T*>(a.weight);
    const T* bp = static_cast<const T*>(a.bias);
    const dim3 grid(static_cast<unsigned>(planes), static_cast<unsigned>(g.row_blocks));
    if (NW == 1) launch_with_smem(tc_corr_kernel<T, 1>, grid, 32, smem, stream, sp, wp, bp, dp, g);
    else if (NW == 2) launch_with_smem(tc_corr_kernel<T, 2>, grid, 64, smem, stream, sp, wp, bp, dp, g);
    else launch_with_smem(tc_corr_kernel<T, 4>, grid, 128, smem, stream, sp, wp, bp, dp, g);
    if (!d.is_same(dst)) dst.copy_(d);
    return true;
  }
}

// grad-weight (+ grad-bias) of a stride-1 large fp16/bf16 kernel on tensor cores; false when the
// geometry does not suit (then the CUDA-core kernels run).
template <typename T>
bool run_bwd_weight_tc(const at::Tensor& input, const at::Tensor& grad_output, const DepthwiseConv2dParams& p,
                       at::Tensor& gw, at::Tensor& gb, bool compute_bias, cudaStream_t stream) {
  if constexpr (!(std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>)) {
    return false;
  } else {
    if (!cuda_tc_enabled() || p.stride_h != 1 || p.stride_w != 1) return false;
    if (p.kernel_h * p.kernel_w < 81 || p.kernel_w < 7 || (p.kernel_w - 1) * p.dilation_w > 112) return false;
    const int64_t lim = int64_t(1) << 30;
    if (p.in_h >= lim || p.in_w >= lim || p.out_h < 1 || p.out_w < 1 || p.out_channels >= lim) return false;
    TcWCfg g;
    g.BK = static_cast<int>(ceil_div<int64_t>(16 + (p.kernel_w - 1) * p.dilation_w, 16) * 16);
    g.LDA = static_cast<int>(ceil_div<int64_t>(kGroupW - 16 + g.BK, 16) * 16 + 16);
    const int NW = p.out_h <= 16 ? 1 : p.out_h <= 32 ? 2 : 4;
    g.AROWS = static_cast<int>(16 * NW + (p.kernel_h - 1) * p.dilation_h);
    const int64_t smem = int64_t(g.AROWS) * g.LDA * 2 + 16 * NW * kLdg * 2 + int64_t(NW) * g.BK * 16 * 4;
    if (smem > kMaxSmem) return false;
    g.row_blocks = static_cast<int>(ceil_div<int64_t>(p.out_h, 16 * NW));
    g.groups = static_cast<int>(ceil_div<int64_t>(p.out_w, kGroupW));
    const int64_t parts = p.batch * g.row_blocks * g.groups;
    const int64_t KK = p.kernel_h * p.kernel_w;
    if (parts > 65535 || parts * p.out_channels * KK > (int64_t(1) << 28)) return false;
    const at::Tensor x = planar(input);
    const at::Tensor go = planar(grad_output);
    if (x.stride(2) * p.in_h + p.in_w >= kI32Max || go.stride(2) * p.out_h + p.out_w >= kI32Max) return false;
    set_kernel_geometry(g, p.kernel_h, p.kernel_w, p.dilation_h, p.dilation_w, p.pad_top, p.pad_left);
    g.H = static_cast<int>(p.in_h); g.W = static_cast<int>(p.in_w);
    g.H_out = static_cast<int>(p.out_h); g.W_out = static_cast<int>(p.out_w);
    g.C_out = static_cast<int>(p.out_channels); g.M = static_cast<int>(p.multiplier);
    g.xs0 = x.stride(0); g.xs1 = x.stride(1); g.xs2 = static_cast<int>(x.stride(2));
    g.gs0 = go.stride(0); g.gs1 = go.stride(1); g.gs2 = static_cast<int>(go.stride(2));
    at::Tensor ws = at::empty({parts, p.out_channels, KK}, input.options().dtype(at::kFloat));
    const T* xp = static_cast<const T*>(x.const_data_ptr());
    const T* gp = static_cast<const T*>(go.const_data_ptr());
    float* wsp = ws.data_ptr<float>();
    const dim3 grid(static_cast<unsigned>(g.C_out), static_cast<unsigned>(parts));
    if (NW == 1) launch_with_smem(tc_weight_kernel<T, 1>, grid, 32, smem, stream, xp, gp, wsp, g);
    else if (NW == 2) launch_with_smem(tc_weight_kernel<T, 2>, grid, 64, smem, stream, xp, gp, wsp, g);
    else launch_with_smem(tc_weight_kernel<T, 4>, grid, 128, smem, stream, xp, gp, wsp, g);
    gw.copy_(ws.sum(0).view(gw.sizes()));  // fixed-order reduction of the partials
    if (compute_bias) gb.copy_(at::sum(go, {0, 2, 3}, false, at::kFloat));
    return true;
  }
}

CONVEXT_INSTANTIATE_FLOATING(bool, run_bwd_weight_tc, const at::Tensor&, const at::Tensor&, const DepthwiseConv2dParams&,
                             at::Tensor&, at::Tensor&, bool, cudaStream_t);
CONVEXT_INSTANTIATE_FLOATING(bool, run_fwd_tc, const at::Tensor&, const at::Tensor&, const CorrArgs&, cudaStream_t);

}  // namespace cuda
}  // namespace convext
