// Channel-blocked kernels of the CPU depthwise conv2d for NCHW tensors (multiplier 1): one task
// per (image, block of VL channels). The block's planes are transposed into a small zero-padded
// acc_t buffer laid out [row][column][VL channels], so every vector lane is a channel and every
// lane does useful work whatever the plane's width; the result is transposed back.
//   conv_nchw_cb             forward, and grad-input at stride 1 (the reduce geometry, M = 1);
//   backward_input_nchw_cb   grad-input at stride > 1 (scatter into the padded buffer, cropped);
//   backward_weight_nchw_cb  grad-weight and grad-bias (per tap, only outputs whose tap is a real
//                            input pixel, as F.conv2d); partials per (block, batch chunk) are
//                            reduced in a fixed order: deterministic, independent of threads.
// The plane kernels (conv_nchw, backward_input_nchw, backward_weight_planes) vectorise along a
// row instead: better on wide planes, where a row fills the vectors, and no transposes. Which
// one runs: use_channel_blocks (csrc/cpu/depthwise_conv2d.cpp).
//
// Per-ISA header (no include guard), part of depthwise_conv2d_kernel.h: uses kernel_vec.h,
// conv_plane_exact and all_finite (depthwise_conv2d_fwd_kernel.h) and Geometry.

// dst[(i * Wb + j) * VL + l] = plane l of src at (i - row0, j - col0) for l < nc, zero where that
// is outside [0, H) x [0, W) and for l >= nc. Plane l starts at src + l * sc; sh, sw: element strides.
// Contiguous acc_t planes move VL pixels at a time (in the plane's flat order, across row ends)
// through an in-register transpose (transpose_tile); the rest element by element.
template <typename scalar_t, typename acc_t>
inline void cb_pack(acc_t* __restrict__ dst, int64_t Hb, int64_t Wb, const scalar_t* src, int64_t nc,
                    int64_t sc, int64_t sh, int64_t sw, int64_t H, int64_t W, int64_t row0, int64_t col0) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  std::memset(dst, 0, sizeof(acc_t) * Hb * Wb * L);
  const int64_t HW = H * W;
  int64_t q = 0;  // flat pixels [0, q) are done
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (sw == 1 && W >= L && row0 >= 0 && col0 >= 0 && row0 + H <= Hb && col0 + W <= Wb) {
      // rows of at least VL pixels, all inside the buffer: tiles along each row
      V v[L];
      const int64_t Wt = W / L * L;
      for (int64_t i = 0; i < H; ++i) {
        acc_t* d = dst + ((i + row0) * Wb + col0) * L;
        for (int64_t j = 0; j < Wt; j += L) {
          for (int64_t l = 0; l < L; ++l) v[l] = l < nc ? vload(src + l * sc + i * sh + j) : vzero<acc_t>();
          transpose_tile<acc_t>(v);
          for (int64_t c = 0; c < L; ++c) vstore(d + (j + c) * L, v[c]);
        }
        for (int64_t j = Wt; j < W; ++j)
          for (int64_t l = 0; l < nc; ++l) d[j * L + l] = src[l * sc + i * sh + j];
      }
      return;
    }
    if (sw == 1 && sh == W) {
      V v[L];
      int64_t i = 0, j = 0;  // the pixel q
      for (; q + L <= HW; q += L) {
        for (int64_t l = 0; l < L; ++l) v[l] = l < nc ? vload(src + l * sc + q) : vzero<acc_t>();
        transpose_tile<acc_t>(v);
        for (int64_t c = 0; c < L; ++c) {
          const int64_t bi = i + row0, bj = j + col0;
          if (bi >= 0 && bi < Hb && bj >= 0 && bj < Wb) vstore(dst + (bi * Wb + bj) * L, v[c]);
          if (++j == W) j = 0, ++i;
        }
      }
    }
  }
  for (; q < HW; ++q) {
    const int64_t i = q / W, j = q % W, bi = i + row0, bj = j + col0;
    if (bi < 0 || bi >= Hb || bj < 0 || bj >= Wb) continue;
    acc_t* d = dst + (bi * Wb + bj) * L;
    for (int64_t l = 0; l < nc; ++l) d[l] = static_cast<acc_t>(src[l * sc + i * sh + j * sw]);
  }
}

// The inverse: contiguous planes dst + l * H * W (l < nc) of H x W get buffer pixel
// (i + row0, j + col0) of src (Hb x Wb x VL), zero where that is outside the buffer.
template <typename scalar_t, typename acc_t>
inline void cb_unpack(scalar_t* __restrict__ dst, int64_t H, int64_t W, const acc_t* __restrict__ src,
                      int64_t Hb, int64_t Wb, int64_t row0, int64_t col0, int64_t nc) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  const int64_t HW = H * W;
  int64_t q = 0;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    V v[L];
    if (W >= L && row0 >= 0 && col0 >= 0 && row0 + H <= Hb && col0 + W <= Wb) {
      // rows of at least VL pixels, all inside the buffer: tiles along each row
      const int64_t Wt = W / L * L;
      for (int64_t i = 0; i < H; ++i) {
        const acc_t* s = src + ((i + row0) * Wb + col0) * L;
        for (int64_t j = 0; j < Wt; j += L) {
          for (int64_t c = 0; c < L; ++c) v[c] = vload(s + (j + c) * L);
          transpose_tile<acc_t>(v);
          for (int64_t l = 0; l < nc; ++l) vstore(dst + l * HW + i * W + j, v[l]);
        }
        for (int64_t j = Wt; j < W; ++j)
          for (int64_t l = 0; l < nc; ++l) dst[l * HW + i * W + j] = s[j * L + l];
      }
      return;
    }
    int64_t i = 0, j = 0;
    for (; q + L <= HW; q += L) {
      for (int64_t c = 0; c < L; ++c) {
        const int64_t bi = i + row0, bj = j + col0;
        v[c] = (bi >= 0 && bi < Hb && bj >= 0 && bj < Wb) ? vload(src + (bi * Wb + bj) * L) : vzero<acc_t>();
        if (++j == W) j = 0, ++i;
      }
      transpose_tile<acc_t>(v);
      for (int64_t l = 0; l < nc; ++l) vstore(dst + l * HW + q, v[l]);
    }
  }
  for (; q < HW; ++q) {
    const int64_t bi = q / W + row0, bj = q % W + col0;
    const bool in = bi >= 0 && bi < Hb && bj >= 0 && bj < Wb;
    for (int64_t l = 0; l < nc; ++l)
      dst[l * HW + q] = in ? static_cast<scalar_t>(src[(bi * Wb + bj) * L + l]) : scalar_t(0);
  }
}

// Buffer size of the padded input of a channel block: every tap of every output is inside.
struct CbDims {
  int64_t Hb, Wb;
};
inline CbDims cb_dims(const DepthwiseConv2dParams& p) {
  return {(p.out_h - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1,
          (p.out_w - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1};
}

// Tap t of output pixel (0, 0) as an element offset into the buffer.
inline void cb_tap_offsets(const DepthwiseConv2dParams& p, int64_t Wb, int64_t L, std::vector<int64_t>& toff) {
  toff.resize(p.kernel_h * p.kernel_w);
  for (int64_t kh = 0; kh < p.kernel_h; ++kh)
    for (int64_t kw = 0; kw < p.kernel_w; ++kw)
      toff[kh * p.kernel_w + kw] = (kh * p.dilation_h * Wb + kw * p.dilation_w) * L;
}

// Weight rows c0 .. c0 + nc of wT (taps, Cw) as (taps, VL), zero past nc; bias likewise.
template <typename acc_t>
inline void cb_weights(acc_t* __restrict__ wb, const acc_t* wT, int64_t taps, int64_t Cw, int64_t c0, int64_t nc) {
  constexpr int64_t L = Vec<acc_t>::size;
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t l = 0; l < L; ++l) wb[t * L + l] = l < nc ? wT[t * Cw + c0 + l] : acc_t(0);
}

// PW output pixels (buffer pixel step xstep elements) of one block: bias + sum over taps.
template <typename acc_t, int PW>
inline void cb_conv_pixels(acc_t* __restrict__ o, const acc_t* __restrict__ x0, int64_t xstep,
                           const int64_t* __restrict__ toff, int64_t taps, const acc_t* __restrict__ wb,
                           const typename Vec<acc_t>::type& bias) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  V a[PW];
  for (int j = 0; j < PW; ++j) a[j] = bias;
  for (int64_t t = 0; t < taps; ++t) {
    const V wv = vload(wb + t * L);
    const acc_t* q = x0 + toff[t];
    for (int j = 0; j < PW; ++j) a[j] += wv * vload(q + j * xstep);
  }
  for (int j = 0; j < PW; ++j) vstore(o + j * L, a[j]);
}

// y (N, Cy, Ho, Wo) contiguous; x through p.in_strides; w (Cy, taps) and wT (taps, Cy); M = 1
// (with g.reduce: grad-input at stride 1, the weight already flipped). A block with a non-finite
// weight runs conv_plane_exact per plane (the padding must not meet that weight).
template <typename scalar_t, typename acc_t>
void conv_nchw_cb(const Geometry& g, const scalar_t* x, const acc_t* w, const acc_t* wT, const acc_t* bias,
                  scalar_t* y) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  const auto& p = g.p;
  const int64_t Ho = p.out_h, Wo = p.out_w, C = p.out_channels, taps = p.kernel_h * p.kernel_w;
  const auto is = p.in_strides;
  const CbDims dims = cb_dims(p);
  const int64_t Hb = dims.Hb, Wb = dims.Wb;
  const int64_t nblk = (C + L - 1) / L;
  const int64_t block_work = L * (Ho * Wo * taps + Hb * Wb);
  at::parallel_for(0, p.batch * nblk, grain_for(block_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xb(Hb * Wb * L), ob(Ho * Wo * L), wb(taps * L), bb(L, acc_t(0));
    std::vector<int64_t> toff;
    cb_tap_offsets(p, Wb, L, toff);
    const int64_t xstep = p.stride_w * L, xrow = p.stride_h * Wb * L;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / nblk, c0 = (item % nblk) * L, nc = std::min(L, C - c0);
      scalar_t* yb = y + (n * C + c0) * Ho * Wo;
      bool finite = true;
      for (int64_t l = 0; l < nc; ++l) finite &= all_finite(w + (c0 + l) * taps, taps);
      if (!finite) {
        for (int64_t l = 0; l < nc; ++l)
          conv_plane_exact(g, x, w, bias ? bias[c0 + l] : acc_t(0), n, c0 + l, yb + l * Ho * Wo);
        continue;
      }
      cb_weights(wb.data(), wT, taps, C, c0, nc);
      if (bias)
        for (int64_t l = 0; l < nc; ++l) bb[l] = bias[c0 + l];
      const V bv = vload(bb.data());
      cb_pack(xb.data(), Hb, Wb, x + n * is[0] + c0 * is[1], nc, is[1], is[2], is[3], p.in_h, p.in_w, p.pad_top,
              p.pad_left);
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const acc_t* xr = xb.data() + oh * xrow;
        acc_t* orow = ob.data() + oh * Wo * L;
        int64_t ow = 0;
        for (; ow + 4 <= Wo; ow += 4)
          cb_conv_pixels<acc_t, 4>(orow + ow * L, xr + ow * xstep, xstep, toff.data(), taps, wb.data(), bv);
        for (; ow < Wo; ++ow)
          cb_conv_pixels<acc_t, 1>(orow + ow * L, xr + ow * xstep, xstep, toff.data(), taps, wb.data(), bv);
      }
      cb_unpack(yb, Ho, Wo, ob.data(), Ho, Wo, 0, 0, nc);
    }
  });
}

// grad_input (N, C, H, W) contiguous; go through p.out_strides; wT (taps, C); M = 1, any stride.
// Scatter form: grad_output times each tap is added into the padded buffer, which is cropped.
template <typename scalar_t, typename acc_t>
void backward_input_nchw_cb(const Geometry& g, const scalar_t* go, const acc_t* wT, scalar_t* gi) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  const auto& p = g.p;
  const int64_t Ho = p.out_h, Wo = p.out_w, H = p.in_h, W = p.in_w, C = p.in_channels;
  const int64_t taps = p.kernel_h * p.kernel_w;
  const auto gs = p.out_strides;
  const CbDims dims = cb_dims(p);
  const int64_t Hb = dims.Hb, Wb = dims.Wb;
  const int64_t nblk = (C + L - 1) / L;
  const int64_t block_work = L * (Ho * Wo * taps + Hb * Wb + H * W);
  at::parallel_for(0, p.batch * nblk, grain_for(block_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> gb(Ho * Wo * L), ib(Hb * Wb * L), wb(taps * L);
    std::vector<int64_t> toff;
    cb_tap_offsets(p, Wb, L, toff);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / nblk, c0 = (item % nblk) * L, nc = std::min(L, C - c0);
      cb_weights(wb.data(), wT, taps, C, c0, nc);
      cb_pack(gb.data(), Ho, Wo, go + n * gs[0] + c0 * gs[1], nc, gs[1], gs[2], gs[3], Ho, Wo, 0, 0);
      std::fill(ib.begin(), ib.end(), acc_t(0));
      for (int64_t oh = 0; oh < Ho; ++oh) {
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const V gv = vload(gb.data() + (oh * Wo + ow) * L);
          acc_t* base = ib.data() + (oh * p.stride_h * Wb + ow * p.stride_w) * L;
          for (int64_t t = 0; t < taps; ++t) {
            acc_t* q = base + toff[t];
            vstore(q, vload(q) + vload(wb.data() + t * L) * gv);
          }
        }
      }
      cb_unpack(gi + (n * C + c0) * H * W, H, W, ib.data(), Hb, Wb, p.pad_top, p.pad_left, nc);
    }
  });
}

// gw (C, taps) and gb (C or null), acc_t; go through p.out_strides, x through p.in_strides; M = 1.
// Per tap only the outputs whose tap reads a real input pixel (TapRange in both dimensions):
// the padding never meets grad_output (0 * NaN), as in F.conv2d.
template <typename scalar_t, typename acc_t>
void backward_weight_nchw_cb(const Geometry& g, const scalar_t* go, const scalar_t* x, acc_t* gw, acc_t* gbias) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w, C = p.out_channels, N = p.batch;
  const int64_t taps = KH * KW;
  const auto gs = p.out_strides;
  const auto is = p.in_strides;
  const CbDims dims = cb_dims(p);
  const int64_t Hb = dims.Hb, Wb = dims.Wb;
  const int64_t nblk = (C + L - 1) / L;
  // Batch chunks from the shape alone (never the thread count): enough items to share out.
  const int64_t nchunks = std::max<int64_t>(1, std::min<int64_t>(N, (32 + nblk - 1) / nblk));
  const int64_t part_size = (taps + 1) * L;
  std::vector<acc_t> partial(nblk * nchunks * part_size, acc_t(0));
  std::vector<TapRange> hr(KH);
  for (int64_t kh = 0; kh < KH; ++kh) hr[kh] = tap_range(Ho, p.in_h, p.stride_h, kh * p.dilation_h - p.pad_top);
  const auto& wr = g.w_ranges;
  const int64_t item_work = ((N + nchunks - 1) / nchunks) * L * (Ho * Wo * (taps + 1) + Hb * Wb);
  at::parallel_for(0, nblk * nchunks, grain_for(item_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xb(Hb * Wb * L), gb(Ho * Wo * L);
    std::vector<int64_t> toff;
    cb_tap_offsets(p, Wb, L, toff);
    const int64_t xstep = p.stride_w * L, xrow = p.stride_h * Wb * L;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t blk = item / nchunks, ch = item % nchunks, c0 = blk * L, nc = std::min(L, C - c0);
      const int64_t n0 = ch * N / nchunks, n1 = (ch + 1) * N / nchunks;
      acc_t* part = partial.data() + item * part_size;
      for (int64_t n = n0; n < n1; ++n) {
        cb_pack(xb.data(), Hb, Wb, x + n * is[0] + c0 * is[1], nc, is[1], is[2], is[3], p.in_h, p.in_w, p.pad_top,
                p.pad_left);
        cb_pack(gb.data(), Ho, Wo, go + n * gs[0] + c0 * gs[1], nc, gs[1], gs[2], gs[3], Ho, Wo, 0, 0);
        V bs = vzero<acc_t>();
        for (int64_t i = 0; i < Ho * Wo; ++i) bs += vload(gb.data() + i * L);
        vstore(part + taps * L, vload(part + taps * L) + bs);
        for (int64_t kh = 0; kh < KH; ++kh) {
          for (int64_t kw = 0; kw < KW; ++kw) {
            const TapRange &th = hr[kh], &tw = wr[kw];
            if (th.lo >= th.hi || tw.lo >= tw.hi) continue;
            const int64_t t = kh * KW + kw;
            V a0 = vzero<acc_t>(), a1 = vzero<acc_t>(), a2 = vzero<acc_t>(), a3 = vzero<acc_t>();
            for (int64_t oh = th.lo; oh < th.hi; ++oh) {
              const acc_t* gr = gb.data() + oh * Wo * L;
              const acc_t* xr = xb.data() + oh * xrow + toff[t];
              int64_t ow = tw.lo;
              for (; ow + 4 <= tw.hi; ow += 4) {
                a0 += vload(gr + ow * L) * vload(xr + ow * xstep);
                a1 += vload(gr + (ow + 1) * L) * vload(xr + (ow + 1) * xstep);
                a2 += vload(gr + (ow + 2) * L) * vload(xr + (ow + 2) * xstep);
                a3 += vload(gr + (ow + 3) * L) * vload(xr + (ow + 3) * xstep);
              }
              for (; ow < tw.hi; ++ow) a0 += vload(gr + ow * L) * vload(xr + ow * xstep);
            }
            vstore(part + t * L, vload(part + t * L) + ((a0 + a1) + (a2 + a3)));
          }
        }
      }
    }
  });
  for (int64_t blk = 0; blk < nblk; ++blk) {
    const int64_t c0 = blk * L, nc = std::min(L, C - c0);
    for (int64_t t = 0; t <= taps; ++t) {
      for (int64_t l = 0; l < nc; ++l) {
        acc_t sum = 0;
        for (int64_t ch = 0; ch < nchunks; ++ch) sum += partial[(blk * nchunks + ch) * part_size + t * L + l];
        if (t < taps) {
          gw[(c0 + l) * taps + t] = sum;
        } else if (gbias) {
          gbias[c0 + l] = sum;
        }
      }
    }
  }
}
