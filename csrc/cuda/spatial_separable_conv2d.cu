// CUDA kernels of convext::spatial_separable_conv2d{,_backward}: a (kH x 1) depthwise conv
// followed by a (1 x kW) depthwise conv, fused; the intermediate never reaches global memory.
//
// STATUS: compile-checked for sm_90 (tools/nvcc_check.sh), never run on a GPU. backend="auto"
// does not choose it (convext/_spatial_separable.py routes CUDA tensors to the torch composite);
// backend="cuda" runs it. tests/test_spatial_separable.py has gpu-marked tests for it.
//
//   z[i, j] = bv + sum_a wv[a] x[i*sh - pt + a*dh, j]        (j in [0, W), real rows only)
//   y[i, q] = bh + sum_b wh[b] z[i, q*sw - pl + b*dw]         (real columns only)
//
// Forward, input with unit column stride (NCHW-like): one block per (image, channel, tile of
//   TH x TW outputs). The tile's intermediate rows (TH x span columns) are computed into shared
//   memory, then each output reads its kW taps from there.
// Forward, other layouts (channels_last): one thread per output, channels fastest (coalesced),
//   recomputing z at each horizontal tap (kH x kW loads, cache-served).
// grad_input: one thread per input element (layout order):
//   gx = sum_m sum_a [i real] wv[a] * sum_b [q real] wh[b] go[i, q].
// grad weights / biases: one block per (channel, chunk of intermediate positions (n, i, j));
//   each thread accumulates gwv[a] += gz x_a, gwh[b] += z go_b, gbv += gz in registers, the
//   block reduces them in a fixed tree into per-chunk partials, summed in chunk order on the
//   host (deterministic); gbh = sum of grad_output.
// Padded taps are skipped, never multiplied (a NaN / inf weight meets only real elements, as in
// F.conv2d). Accumulation and the intermediate: float (double for double).
#include "cuda/depthwise_conv2d_common.cuh"
#include "cuda/launch_utils.cuh"
#include "depthwise_conv2d.h"

#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

namespace convext {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTileH = 8;
constexpr int kTileW = 32;
constexpr int kMaxSlots = 64;  // KH + KW + 1 per-thread accumulators of the weight kernel

struct SSArgs {
  int64_t N = 0, C = 0, Cout = 0, M = 1, H = 0, W = 0, Ho = 0, Wo = 0;
  int64_t KH = 1, KW = 1, sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0;
  int64_t xs[4] = {0, 0, 0, 0};  // input strides
  int64_t ys[4] = {0, 0, 0, 0};  // output / grad_output strides
  int64_t gs[4] = {0, 0, 0, 0};  // grad_input strides
};

template <typename scalar_t>
__device__ __forceinline__ AccType<scalar_t> zval(const scalar_t* __restrict__ xc, const SSArgs& a,
                                                  const scalar_t* __restrict__ wv, AccType<scalar_t> bv,
                                                  int64_t i, int64_t j) {
  using acc_t = AccType<scalar_t>;
  acc_t z = bv;
  for (int64_t t = 0; t < a.KH; ++t) {
    const int64_t r = i * a.sh - a.pt + t * a.dh;
    if (r < 0 || r >= a.H) continue;
    z += to_acc(ldg(wv + t)) * to_acc(ldg(xc + r * a.xs[2] + j * a.xs[3]));
  }
  return z;
}

// ------------------------------------------------------------------ forward, shared-memory tiles
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) ss_fwd_tiled_kernel(const scalar_t* __restrict__ x,
                                                                const scalar_t* __restrict__ wv,
                                                                const scalar_t* __restrict__ bv,
                                                                const scalar_t* __restrict__ wh,
                                                                const scalar_t* __restrict__ bh,
                                                                scalar_t* __restrict__ y, SSArgs a, int64_t span,
                                                                int64_t tiles_h, int64_t tiles_w) {
  using acc_t = AccType<scalar_t>;
  extern __shared__ unsigned char ss_smem_raw[];
  acc_t* zs = reinterpret_cast<acc_t*>(ss_smem_raw);
  int64_t b = blockIdx.x;
  const int64_t tw = b % tiles_w;
  b /= tiles_w;
  const int64_t th = b % tiles_h;
  b /= tiles_h;
  const int64_t oc = b % a.Cout;
  const int64_t n = b / a.Cout;
  const int64_t oh0 = th * kTileH, ow0 = tw * kTileW;
  const int64_t col0 = ow0 * a.sw - a.pl;
  const scalar_t* xc = x + n * a.xs[0] + (oc / a.M) * a.xs[1];
  const scalar_t* wvo = wv + oc * a.KH;
  const scalar_t* who = wh + oc * a.KW;
  const acc_t bvo = bv ? to_acc(ldg(bv + oc)) : acc_t(0);
  const acc_t bho = bh ? to_acc(ldg(bh + oc)) : acc_t(0);
  for (int64_t e = threadIdx.x; e < kTileH * span; e += blockDim.x) {
    const int64_t ti = e / span, s = e % span;
    const int64_t i = oh0 + ti, j = col0 + s;
    acc_t z = 0;
    if (i < a.Ho && j >= 0 && j < a.W) z = zval(xc, a, wvo, bvo, i, j);
    zs[e] = z;
  }
  __syncthreads();
  scalar_t* yc = y + n * a.ys[0] + oc * a.ys[1];
  for (int64_t e = threadIdx.x; e < kTileH * kTileW; e += blockDim.x) {
    const int64_t ti = e / kTileW, tq = e % kTileW;
    const int64_t i = oh0 + ti, q = ow0 + tq;
    if (i >= a.Ho || q >= a.Wo) continue;
    acc_t acc = bho;
    for (int64_t t = 0; t < a.KW; ++t) {
      const int64_t j = q * a.sw - a.pl + t * a.dw;
      if (j < 0 || j >= a.W) continue;
      acc += to_acc(ldg(who + t)) * zs[ti * span + tq * a.sw + t * a.dw];
    }
    yc[i * a.ys[2] + q * a.ys[3]] = from_acc<scalar_t>(acc);
  }
}

// ------------------------------------------------------------------ forward, one thread per output
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) ss_fwd_direct_kernel(const scalar_t* __restrict__ x,
                                                                 const scalar_t* __restrict__ wv,
                                                                 const scalar_t* __restrict__ bv,
                                                                 const scalar_t* __restrict__ wh,
                                                                 const scalar_t* __restrict__ bh,
                                                                 scalar_t* __restrict__ y, SSArgs a, bool cl) {
  using acc_t = AccType<scalar_t>;
  const int64_t total = a.N * a.Cout * a.Ho * a.Wo;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n, oc, i, q, r = e;
    if (cl) {
      oc = r % a.Cout; r /= a.Cout;
      q = r % a.Wo; r /= a.Wo;
      i = r % a.Ho; n = r / a.Ho;
    } else {
      q = r % a.Wo; r /= a.Wo;
      i = r % a.Ho; r /= a.Ho;
      oc = r % a.Cout; n = r / a.Cout;
    }
    const scalar_t* xc = x + n * a.xs[0] + (oc / a.M) * a.xs[1];
    const acc_t bvo = bv ? to_acc(ldg(bv + oc)) : acc_t(0);
    acc_t acc = bh ? to_acc(ldg(bh + oc)) : acc_t(0);
    for (int64_t t = 0; t < a.KW; ++t) {
      const int64_t j = q * a.sw - a.pl + t * a.dw;
      if (j < 0 || j >= a.W) continue;
      acc += to_acc(ldg(wh + oc * a.KW + t)) * zval(xc, a, wv + oc * a.KH, bvo, i, j);
    }
    y[n * a.ys[0] + oc * a.ys[1] + i * a.ys[2] + q * a.ys[3]] = from_acc<scalar_t>(acc);
  }
}

// ------------------------------------------------------------------ grad_input
// gz at intermediate (i, j) of channel oc: sum over real outputs q of wh[b] * go[i, q].
template <typename scalar_t>
__device__ __forceinline__ AccType<scalar_t> gzval(const scalar_t* __restrict__ goc, const SSArgs& a,
                                                   const scalar_t* __restrict__ who, int64_t i, int64_t j) {
  using acc_t = AccType<scalar_t>;
  acc_t gz = 0;
  for (int64_t t = 0; t < a.KW; ++t) {
    const int64_t u = j + a.pl - t * a.dw;
    if (u < 0 || u % a.sw != 0) continue;
    const int64_t q = u / a.sw;
    if (q >= a.Wo) continue;
    gz += to_acc(ldg(who + t)) * to_acc(ldg(goc + i * a.ys[2] + q * a.ys[3]));
  }
  return gz;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) ss_bwd_input_kernel(const scalar_t* __restrict__ go,
                                                                const scalar_t* __restrict__ wv,
                                                                const scalar_t* __restrict__ wh,
                                                                scalar_t* __restrict__ gx, SSArgs a, bool cl) {
  using acc_t = AccType<scalar_t>;
  const int64_t total = a.N * a.C * a.H * a.W;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n, c, r, j, rem = e;
    if (cl) {
      c = rem % a.C; rem /= a.C;
      j = rem % a.W; rem /= a.W;
      r = rem % a.H; n = rem / a.H;
    } else {
      j = rem % a.W; rem /= a.W;
      r = rem % a.H; rem /= a.H;
      c = rem % a.C; n = rem / a.C;
    }
    acc_t acc = 0;
    for (int64_t m = 0; m < a.M; ++m) {
      const int64_t oc = c * a.M + m;
      const scalar_t* goc = go + n * a.ys[0] + oc * a.ys[1];
      for (int64_t t = 0; t < a.KH; ++t) {
        const int64_t u = r + a.pt - t * a.dh;
        if (u < 0 || u % a.sh != 0) continue;
        const int64_t i = u / a.sh;
        if (i >= a.Ho) continue;
        acc += to_acc(ldg(wv + oc * a.KH + t)) * gzval(goc, a, wh + oc * a.KW, i, j);
      }
    }
    gx[n * a.gs[0] + c * a.gs[1] + r * a.gs[2] + j * a.gs[3]] = from_acc<scalar_t>(acc);
  }
}

// ------------------------------------------------------------------ grad weights / biases
// ws: (chunks, KH + KW + 1, Cout) acc_t partials [gwv | gwh | gbv].
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) ss_bwd_weight_kernel(const scalar_t* __restrict__ go,
                                                                 const scalar_t* __restrict__ x,
                                                                 const scalar_t* __restrict__ wv,
                                                                 const scalar_t* __restrict__ bv,
                                                                 const scalar_t* __restrict__ wh,
                                                                 AccType<scalar_t>* __restrict__ ws, SSArgs a,
                                                                 int64_t per_chunk, bool need_v, bool need_h) {
  using acc_t = AccType<scalar_t>;
  __shared__ acc_t red[kThreads];
  const int64_t oc = blockIdx.x % a.Cout;
  const int64_t chunk = blockIdx.x / a.Cout;
  const int64_t S = a.KH + a.KW + 1;
  const int64_t total = a.N * a.Ho * a.W;
  const int64_t p0 = chunk * per_chunk;
  const int64_t p1 = p0 + per_chunk < total ? p0 + per_chunk : total;
  const scalar_t* wvo = wv + oc * a.KH;
  const scalar_t* who = wh + oc * a.KW;
  const acc_t bvo = bv ? to_acc(ldg(bv + oc)) : acc_t(0);
  acc_t part[kMaxSlots];
  for (int s = 0; s < kMaxSlots; ++s) part[s] = 0;
  for (int64_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
    const int64_t j = p % a.W;
    const int64_t i = (p / a.W) % a.Ho;
    const int64_t n = p / (a.W * a.Ho);
    const scalar_t* goc = go + n * a.ys[0] + oc * a.ys[1];
    const scalar_t* xc = x + n * a.xs[0] + (oc / a.M) * a.xs[1];
    acc_t gz = 0;
    if (need_v) {
      gz = gzval(goc, a, who, i, j);
      part[a.KH + a.KW] += gz;
    }
    acc_t z = bvo;
    for (int64_t t = 0; t < a.KH; ++t) {
      const int64_t r = i * a.sh - a.pt + t * a.dh;
      if (r < 0 || r >= a.H) continue;
      const acc_t xv = to_acc(ldg(xc + r * a.xs[2] + j * a.xs[3]));
      if (need_h) z += to_acc(ldg(wvo + t)) * xv;
      if (need_v) part[t] += gz * xv;
    }
    if (need_h) {
      for (int64_t t = 0; t < a.KW; ++t) {
        const int64_t u = j + a.pl - t * a.dw;
        if (u < 0 || u % a.sw != 0) continue;
        const int64_t q = u / a.sw;
        if (q >= a.Wo) continue;
        part[a.KH + t] += z * to_acc(ldg(goc + i * a.ys[2] + q * a.ys[3]));
      }
    }
  }
  for (int64_t s = 0; s < S; ++s) {
    red[threadIdx.x] = part[s];
    __syncthreads();
    for (int w = kThreads / 2; w > 0; w >>= 1) {
      if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) ws[(chunk * S + s) * a.Cout + oc] = red[0];
    __syncthreads();
  }
}

// ------------------------------------------------------------------ host
bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

void ss_check(const at::Tensor& t, const char* name, const at::Tensor& input) {
  TORCH_CHECK(t.is_cuda() && t.device() == input.device(), "convext (CUDA kernel): ", name,
              " must be on the input's device (", input.device(), "), got ", t.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), "convext: ", name, " (", t.scalar_type(),
              ") must have the input's dtype (", input.scalar_type(), ")");
}

SSArgs ss_args(const at::Tensor& input, const at::Tensor& wv, const at::Tensor& wh,
               const std::optional<at::Tensor>& bv, const std::optional<at::Tensor>& bh, at::IntArrayRef stride,
               at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(input.is_cuda(), "convext (CUDA kernel): input must be a CUDA tensor, got ", input.device());
  TORCH_CHECK(input.dim() == 4, "convext: input must be 4-D (N, C, H, W), got ", input.dim(), "-D");
  ss_check(wv, "vertical_weight", input);
  ss_check(wh, "horizontal_weight", input);
  TORCH_CHECK(wv.dim() == 4 && wv.size(1) == 1 && wv.size(3) == 1 && wv.size(2) >= 1,
              "convext: vertical_weight must have shape (C*M, 1, kH, 1), got ", wv.sizes());
  TORCH_CHECK(wh.dim() == 4 && wh.size(0) == wv.size(0) && wh.size(1) == 1 && wh.size(2) == 1 && wh.size(3) >= 1,
              "convext: horizontal_weight must have shape (", wv.size(0), ", 1, 1, kW), got ", wh.sizes());
  if (has(bv)) {
    ss_check(*bv, "vertical_bias", input);
    TORCH_CHECK(bv->dim() == 1 && bv->size(0) == wv.size(0), "convext: vertical_bias must have shape (",
                wv.size(0), ",), got ", bv->sizes());
  }
  if (has(bh)) {
    ss_check(*bh, "horizontal_bias", input);
    TORCH_CHECK(bh->dim() == 1 && bh->size(0) == wv.size(0), "convext: horizontal_bias must have shape (",
                wv.size(0), ",), got ", bh->sizes());
  }
  TORCH_CHECK((input.size(2) > 0 && input.size(3) > 0) || input.size(0) == 0,
              "convext: input has an empty spatial size (", input.size(2), ", ", input.size(3), ")");
  const auto p = make_depthwise_conv2d_params(input.sizes(), wv.size(0), {wv.size(2), wh.size(3)}, stride, padding,
                                              dilation);
  SSArgs a;
  a.N = p.batch;
  a.C = p.in_channels;
  a.Cout = p.out_channels;
  a.M = p.multiplier;
  a.H = p.in_h;
  a.W = p.in_w;
  a.Ho = p.out_h;
  a.Wo = p.out_w;
  a.KH = p.kernel_h;
  a.KW = p.kernel_w;
  a.sh = p.stride_h;
  a.sw = p.stride_w;
  a.dh = p.dilation_h;
  a.dw = p.dilation_w;
  a.pt = p.pad_top;
  a.pl = p.pad_left;
  for (int d = 0; d < 4; ++d) a.xs[d] = input.stride(d);
  return a;
}

int64_t grid_for(int64_t total) {
  const int64_t blocks = ceil_div<int64_t>(total, kThreads);
  return blocks < 65535 * 32 ? (blocks > 0 ? blocks : 1) : 65535 * 32;
}

template <typename T>
const T* opt_ptr(const std::optional<at::Tensor>& t, at::Tensor& keep) {
  if (!has(t)) return nullptr;
  keep = t->contiguous();
  return keep.const_data_ptr<T>();
}

at::Tensor spatial_separable_conv2d_cuda(const at::Tensor& input, const at::Tensor& wv, const at::Tensor& wh,
                                         const std::optional<at::Tensor>& bv, const std::optional<at::Tensor>& bh,
                                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  c10::cuda::CUDAGuard guard(input.device());
  SSArgs a = ss_args(input, wv, wh, bv, bh, stride, padding, dilation);
  const auto fmt = input.suggest_memory_format();
  at::Tensor y = at::empty({a.N, a.Cout, a.Ho, a.Wo}, input.options().memory_format(fmt));
  if (y.numel() == 0) return y;
  for (int d = 0; d < 4; ++d) a.ys[d] = y.stride(d);
  const at::Tensor wvc = wv.contiguous(), whc = wh.contiguous();
  at::Tensor bvk, bhk;
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const int64_t span = (kTileW - 1) * a.sw + (a.KW - 1) * a.dw + 1;
  auto stream = at::cuda::getCurrentCUDAStream();
  CONVEXT_DISPATCH_FLOATING(input.scalar_type(), "convext_spatial_separable_cuda", [&] {
    using acc_t = AccType<scalar_t>;
    const size_t smem = static_cast<size_t>(kTileH * span) * sizeof(acc_t);
    const scalar_t* bvp = opt_ptr<scalar_t>(bv, bvk);
    const scalar_t* bhp = opt_ptr<scalar_t>(bh, bhk);
    if (!cl && smem <= static_cast<size_t>(kDefaultSmem)) {
      const int64_t tiles_h = ceil_div<int64_t>(a.Ho, kTileH), tiles_w = ceil_div<int64_t>(a.Wo, kTileW);
      const int64_t blocks = a.N * a.Cout * tiles_h * tiles_w;
      TORCH_CHECK(blocks <= kI32Max, "convext: spatial_separable_conv2d CUDA kernel: too many tiles");
      ss_fwd_tiled_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(
          input.const_data_ptr<scalar_t>(), wvc.const_data_ptr<scalar_t>(), bvp, whc.const_data_ptr<scalar_t>(),
          bhp, y.mutable_data_ptr<scalar_t>(), a, span, tiles_h, tiles_w);
    } else {
      ss_fwd_direct_kernel<scalar_t><<<static_cast<unsigned>(grid_for(y.numel())), kThreads, 0, stream>>>(
          input.const_data_ptr<scalar_t>(), wvc.const_data_ptr<scalar_t>(), bvp, whc.const_data_ptr<scalar_t>(),
          bhp, y.mutable_data_ptr<scalar_t>(), a, cl);
    }
    CONVEXT_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> spatial_separable_conv2d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& wv, const at::Tensor& wh,
    const std::optional<at::Tensor>& bv, const std::optional<at::Tensor>& bh, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, std::array<bool, 5> output_mask) {
  c10::cuda::CUDAGuard guard(input.device());
  SSArgs a = ss_args(input, wv, wh, bv, bh, stride, padding, dilation);
  ss_check(grad_output, "grad_output", input);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == a.N && grad_output.size(1) == a.Cout &&
                  grad_output.size(2) == a.Ho && grad_output.size(3) == a.Wo,
              "convext: grad_output has shape ", grad_output.sizes(), ", expected (", a.N, ", ", a.Cout, ", ", a.Ho,
              ", ", a.Wo, ")");
  for (int d = 0; d < 4; ++d) a.ys[d] = grad_output.stride(d);
  const bool want_in = output_mask[0], want_wv = output_mask[1], want_wh = output_mask[2];
  const bool want_bv = output_mask[3] && has(bv), want_bh = output_mask[4] && has(bh);
  const auto opts = input.options().memory_format(at::MemoryFormat::Contiguous);
  auto empty = [&] { return at::empty({0}, opts); };
  const auto fmt = input.suggest_memory_format();
  at::Tensor g_in = want_in ? at::empty(input.sizes(), input.options().memory_format(fmt)) : empty();
  at::Tensor g_wv = empty(), g_wh = empty(), g_bv = empty(), g_bh = empty();
  const at::Tensor wvc = wv.contiguous(), whc = wh.contiguous();
  at::Tensor bvk;
  const at::ScalarType acc_type = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto stream = at::cuda::getCurrentCUDAStream();
  if (want_in && g_in.numel() > 0) {
    for (int d = 0; d < 4; ++d) a.gs[d] = g_in.stride(d);
    CONVEXT_DISPATCH_FLOATING(input.scalar_type(), "convext_spatial_separable_bwd_in_cuda", [&] {
      ss_bwd_input_kernel<scalar_t><<<static_cast<unsigned>(grid_for(g_in.numel())), kThreads, 0, stream>>>(
          grad_output.const_data_ptr<scalar_t>(), wvc.const_data_ptr<scalar_t>(), whc.const_data_ptr<scalar_t>(),
          g_in.mutable_data_ptr<scalar_t>(), a, fmt == at::MemoryFormat::ChannelsLast);
      CONVEXT_LAUNCH_CHECK();
    });
  }
  if (want_wv || want_wh || want_bv) {
    const int64_t S = a.KH + a.KW + 1;
    TORCH_CHECK(S <= kMaxSlots, "convext: the CUDA spatial_separable_conv2d backward supports kH + kW <= ",
                kMaxSlots - 1, ", got ", a.KH, " + ", a.KW, " (use backend='torch')");
    const int64_t total = a.N * a.Ho * a.W;
    const int64_t target_chunks = std::max<int64_t>(1, ceil_div<int64_t>(1024, a.Cout));
    const int64_t per_chunk = std::max<int64_t>(kThreads, ceil_div<int64_t>(std::max<int64_t>(total, 1), target_chunks));
    const int64_t chunks = total > 0 ? ceil_div<int64_t>(total, per_chunk) : 0;
    at::Tensor ws = at::zeros({std::max<int64_t>(chunks, 1), S, a.Cout}, opts.dtype(acc_type));
    if (chunks > 0) {
      CONVEXT_DISPATCH_FLOATING(input.scalar_type(), "convext_spatial_separable_bwd_w_cuda", [&] {
        using acc_t = AccType<scalar_t>;
        const scalar_t* bvp = opt_ptr<scalar_t>(bv, bvk);
        ss_bwd_weight_kernel<scalar_t><<<static_cast<unsigned>(a.Cout * chunks), kThreads, 0, stream>>>(
            grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(), wvc.const_data_ptr<scalar_t>(),
            bvp, whc.const_data_ptr<scalar_t>(), ws.mutable_data_ptr<acc_t>(), a, per_chunk, want_wv || want_bv,
            want_wh);
        CONVEXT_LAUNCH_CHECK();
      });
    }
    const at::Tensor red = ws.sum(0);  // chunk order: deterministic
    if (want_wv) g_wv = red.narrow(0, 0, a.KH).t().to(input.scalar_type()).reshape({a.Cout, 1, a.KH, 1}).contiguous();
    if (want_wh) {
      g_wh = red.narrow(0, a.KH, a.KW).t().to(input.scalar_type()).reshape({a.Cout, 1, 1, a.KW}).contiguous();
    }
    if (want_bv) g_bv = red.select(0, a.KH + a.KW).to(input.scalar_type()).contiguous();
  }
  if (want_bh) g_bh = grad_output.sum({0, 2, 3}, false, acc_type).to(input.scalar_type());
  return {g_in, g_wv, g_wh, g_bv, g_bh};
}

}  // namespace
}  // namespace cuda
}  // namespace convext

TORCH_LIBRARY_IMPL(convext, CUDA, m) {
  m.impl("spatial_separable_conv2d", &convext::cuda::spatial_separable_conv2d_cuda);
  m.impl("spatial_separable_conv2d_backward", &convext::cuda::spatial_separable_conv2d_backward_cuda);
}
