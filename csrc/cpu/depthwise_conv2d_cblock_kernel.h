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
// conv_plane_exact (depthwise_conv2d_fwd_kernel.h), TapRange and Geometry.

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

// Per-thread scratch of the block kernels: two buffers per thread, kept between calls (a model
// calls them tens of times per step, and fresh buffers of a few hundred KiB cost page faults on
// every call); a buffer larger than kScratchKeep is allocated for the call and released after it.
// Each task of a parallel region runs on one thread and no kernel runs inside another's task.
template <typename acc_t>
class CbScratch {
 public:
  CbScratch(int64_t n0, int64_t n1) : a_(get(0, n0, own_a_)), b_(get(1, n1, own_b_)) {}
  acc_t* a() const { return a_; }
  acc_t* b() const { return b_; }

 private:
  static constexpr int64_t kScratchKeep = (int64_t(4) << 20) / sizeof(acc_t);
  static acc_t* get(int slot, int64_t n, std::vector<acc_t>& own) {
    if (n > kScratchKeep) {
      own.resize(n);
      return own.data();
    }
    thread_local std::vector<acc_t> kept[2];
    if (static_cast<int64_t>(kept[slot].size()) < n) kept[slot].resize(n);
    return kept[slot].data();
  }
  std::vector<acc_t> own_a_, own_b_;
  acc_t* a_;
  acc_t* b_;
};

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

// w (C, taps) as one (taps, VL) tile per block of VL channels (zero past C): block b's weights for
// tap t are one vector load at (b * taps + t) * VL. Transposed with cb_pack.
template <typename acc_t>
std::vector<acc_t> cb_weights(const acc_t* w, int64_t taps, int64_t C) {
  constexpr int64_t L = Vec<acc_t>::size;
  const int64_t nblk = (C + L - 1) / L;
  std::vector<acc_t> wp(nblk * taps * L);
  for (int64_t b = 0; b < nblk; ++b)
    cb_pack(wp.data() + b * taps * L, 1, taps, w + b * L * taps, std::min(L, C - b * L), taps, taps, 1, 1, taps, 0, 0);
  return wp;
}

// Whether a block's weights (taps x VL) are all finite: w - w is 0 or NaN.
template <typename acc_t>
inline bool cb_finite(const acc_t* wb, int64_t taps) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  V z = vzero<acc_t>();
  for (int64_t t = 0; t < taps; ++t) {
    const V v = vload(wb + t * L);
    z += v - v;
  }
  acc_t lanes[L];
  vstore(lanes, z);
  bool ok = true;
  for (int64_t l = 0; l < L; ++l) ok &= lanes[l] == acc_t(0);
  return ok;
}

// PW output pixels of one block, pixel j reading the buffer at xp[j] + toff[t] for tap t:
// bias + sum over taps, stored at o + j * VL. The pixels may lie in different output rows.
template <typename acc_t, int PW>
inline void cb_conv_pixels(acc_t* __restrict__ o, const acc_t* const* xp, const int64_t* __restrict__ toff,
                           int64_t taps, const acc_t* __restrict__ wb, const typename Vec<acc_t>::type& bias) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  V a[PW];
  for (int j = 0; j < PW; ++j) a[j] = bias;
  for (int64_t t = 0; t < taps; ++t) {
    const V wv = vload(wb + t * L);
    const int64_t off = toff[t];
    for (int j = 0; j < PW; ++j) a[j] += wv * vload(xp[j] + off);
  }
  for (int j = 0; j < PW; ++j) vstore(o + j * L, a[j]);
}

// All Ho x Wo outputs of one block (buffer xb, layout cb_dims), in flat order, groups of 8 pixels
// (then 4, then 1) so that short rows still give independent accumulation chains.
template <typename acc_t>
inline void cb_conv_block(acc_t* __restrict__ ob, const acc_t* xb, const DepthwiseConv2dParams& p, int64_t Wb,
                          const int64_t* toff, int64_t taps, const acc_t* wb, const typename Vec<acc_t>::type& bias) {
  constexpr int64_t L = Vec<acc_t>::size;
  const int64_t Wo = p.out_w, HWo = p.out_h * Wo, xstep = p.stride_w * L, xrow = p.stride_h * Wb * L;
  const acc_t* xp[8];
  int64_t oh = 0, ow = 0, q = 0;
  auto next = [&](int n) {
    for (int j = 0; j < n; ++j) {
      xp[j] = xb + oh * xrow + ow * xstep;
      if (++ow == Wo) ow = 0, ++oh;
    }
  };
  for (; q + 8 <= HWo; q += 8) {
    next(8);
    cb_conv_pixels<acc_t, 8>(ob + q * L, xp, toff, taps, wb, bias);
  }
  for (; q + 4 <= HWo; q += 4) {
    next(4);
    cb_conv_pixels<acc_t, 4>(ob + q * L, xp, toff, taps, wb, bias);
  }
  for (; q < HWo; ++q) {
    next(1);
    cb_conv_pixels<acc_t, 1>(ob + q * L, xp, toff, taps, wb, bias);
  }
}

// y (N, C, Ho, Wo) contiguous; x through p.in_strides; w (C, taps); M = 1 (with g.reduce:
// grad-input at stride 1, the weight already flipped). A block with a non-finite weight runs
// conv_plane_exact per plane (the padding must not meet that weight).
template <typename scalar_t, typename acc_t>
void conv_nchw_cb(const Geometry& g, const scalar_t* x, const acc_t* w, const acc_t* bias, scalar_t* y) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  const auto& p = g.p;
  const int64_t Ho = p.out_h, Wo = p.out_w, C = p.out_channels, taps = p.kernel_h * p.kernel_w;
  const auto is = p.in_strides;
  const CbDims dims = cb_dims(p);
  const int64_t Hb = dims.Hb, Wb = dims.Wb;
  const int64_t nblk = (C + L - 1) / L;
  const std::vector<acc_t> wp = cb_weights(w, taps, C);
  std::vector<acc_t> bp(nblk * L, acc_t(0));
  if (bias) std::copy(bias, bias + C, bp.begin());
  const int64_t block_work = L * (Ho * Wo * taps + Hb * Wb);
  at::parallel_for(0, p.batch * nblk, grain_for(block_work), [&](int64_t begin, int64_t end) {
    const CbScratch<acc_t> scratch(Hb * Wb * L, Ho * Wo * L);
    acc_t* const xb = scratch.a();
    acc_t* const ob = scratch.b();
    std::vector<int64_t> toff;
    cb_tap_offsets(p, Wb, L, toff);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / nblk, blk = item % nblk, c0 = blk * L, nc = std::min(L, C - c0);
      scalar_t* yb = y + (n * C + c0) * Ho * Wo;
      const acc_t* wb = wp.data() + blk * taps * L;
      if (!cb_finite(wb, taps)) {
        for (int64_t l = 0; l < nc; ++l)
          conv_plane_exact(g, x, w, bp[c0 + l], n, c0 + l, yb + l * Ho * Wo);
        continue;
      }
      const V bv = vload(bp.data() + c0);
      cb_pack(xb, Hb, Wb, x + n * is[0] + c0 * is[1], nc, is[1], is[2], is[3], p.in_h, p.in_w, p.pad_top,
              p.pad_left);
      cb_conv_block(ob, xb, p, Wb, toff.data(), taps, wb, bv);
      cb_unpack(yb, Ho, Wo, ob, Ho, Wo, 0, 0, nc);
    }
  });
}

// grad_input (N, C, H, W) contiguous; go through p.out_strides; w (C, taps); M = 1, any stride.
// Scatter form: grad_output times each tap is added into the padded buffer, which is cropped.
template <typename scalar_t, typename acc_t>
void backward_input_nchw_cb(const Geometry& g, const scalar_t* go, const acc_t* w, scalar_t* gi) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  const auto& p = g.p;
  const int64_t Ho = p.out_h, Wo = p.out_w, H = p.in_h, W = p.in_w, C = p.in_channels;
  const int64_t taps = p.kernel_h * p.kernel_w;
  const auto gs = p.out_strides;
  const CbDims dims = cb_dims(p);
  const int64_t Hb = dims.Hb, Wb = dims.Wb;
  const int64_t nblk = (C + L - 1) / L;
  const std::vector<acc_t> wp = cb_weights(w, taps, C);
  const int64_t block_work = L * (Ho * Wo * taps + Hb * Wb + H * W);
  at::parallel_for(0, p.batch * nblk, grain_for(block_work), [&](int64_t begin, int64_t end) {
    const CbScratch<acc_t> scratch(Ho * Wo * L, Hb * Wb * L);
    acc_t* const gb = scratch.a();
    acc_t* const ib = scratch.b();
    std::vector<int64_t> toff;
    cb_tap_offsets(p, Wb, L, toff);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / nblk, blk = item % nblk, c0 = blk * L, nc = std::min(L, C - c0);
      const acc_t* wb = wp.data() + blk * taps * L;
      cb_pack(gb, Ho, Wo, go + n * gs[0] + c0 * gs[1], nc, gs[1], gs[2], gs[3], Ho, Wo, 0, 0);
      std::fill(ib, ib + Hb * Wb * L, acc_t(0));
      for (int64_t oh = 0; oh < Ho; ++oh) {
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const V gv = vload(gb + (oh * Wo + ow) * L);
          acc_t* base = ib + (oh * p.stride_h * Wb + ow * p.stride_w) * L;
          for (int64_t t = 0; t < taps; ++t) {
            acc_t* q = base + toff[t];
            vstore(q, vload(q) + vload(wb + t * L) * gv);
          }
        }
      }
      cb_unpack(gi + (n * C + c0) * H * W, H, W, ib, Hb, Wb, p.pad_top, p.pad_left, nc);
    }
  });
}

// One tap of one block and image into pt[0, VL): over the outputs whose input pixel is real (rows
// th, columns tw), four accumulators along the row. x0: buffer pixel of this tap for output (0, 0).
template <typename acc_t>
inline void cb_wgrad_tap(acc_t* __restrict__ pt, const acc_t* __restrict__ gb, const acc_t* __restrict__ x0,
                         const TapRange& th, const TapRange& tw, int64_t Wo, int64_t xrow, int64_t xstep) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  if (tw.lo >= tw.hi) return;
  V a0 = vzero<acc_t>(), a1 = vzero<acc_t>(), a2 = vzero<acc_t>(), a3 = vzero<acc_t>();
  for (int64_t oh = th.lo; oh < th.hi; ++oh) {
    const acc_t* gr = gb + oh * Wo * L;
    const acc_t* xr = x0 + oh * xrow;
    int64_t ow = tw.lo;
    for (; ow + 4 <= tw.hi; ow += 4) {
      a0 += vload(gr + ow * L) * vload(xr + ow * xstep);
      a1 += vload(gr + (ow + 1) * L) * vload(xr + (ow + 1) * xstep);
      a2 += vload(gr + (ow + 2) * L) * vload(xr + (ow + 2) * xstep);
      a3 += vload(gr + (ow + 3) * L) * vload(xr + (ow + 3) * xstep);
    }
    for (; ow < tw.hi; ++ow) a0 += vload(gr + ow * L) * vload(xr + ow * xstep);
  }
  vstore(pt, vload(pt) + ((a0 + a1) + (a2 + a3)));
}

// Taps (kh, kw0 .. kw0 + KC) of one block and image into pt[(kw0 + k) * VL]: pixel-outer, so each
// grad_output vector is loaded once for KC taps (two loads per FMA become (1 + KC) / KC) and the
// buffers are read once per chunk instead of once per tap. Outputs in every tap's TapRange go
// through the shared loop (even / odd pixels in separate accumulators), the rest tap by tap: a tap
// only ever meets outputs whose input pixel is real. x0: buffer pixel of tap (kh, 0) for output
// (0, 0); output (oh, ow) of tap kw reads x0 + oh * xrow + ow * xstep + kw * dwL.
template <typename acc_t, int KC>
inline void cb_wgrad_taps(acc_t* __restrict__ pt, const acc_t* __restrict__ gb, const acc_t* __restrict__ x0,
                          const TapRange& th, const TapRange* wr, int64_t kw0, int64_t Wo, int64_t xrow,
                          int64_t xstep, int64_t dwL) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  int64_t lo = 0, hi = Wo;
  for (int k = 0; k < KC; ++k) {
    lo = std::max(lo, wr[kw0 + k].lo);
    hi = std::min(hi, wr[kw0 + k].hi);
  }
  if (hi < lo) hi = lo;  // no shared range: the per-tap loops below split each range at lo
  V a[KC][2];
  for (int k = 0; k < KC; ++k) a[k][0] = a[k][1] = vzero<acc_t>();
  for (int64_t oh = th.lo; oh < th.hi; ++oh) {
    const acc_t* gr = gb + oh * Wo * L;
    const acc_t* xr = x0 + oh * xrow + kw0 * dwL;
    int64_t ow = lo;
    for (; ow + 2 <= hi; ow += 2) {
      const V g0 = vload(gr + ow * L), g1 = vload(gr + (ow + 1) * L);
      const acc_t* xp = xr + ow * xstep;
      for (int k = 0; k < KC; ++k) {
        a[k][0] += g0 * vload(xp + k * dwL);
        a[k][1] += g1 * vload(xp + xstep + k * dwL);
      }
    }
    if (ow < hi) {
      const V g0 = vload(gr + ow * L);
      for (int k = 0; k < KC; ++k) a[k][0] += g0 * vload(xr + ow * xstep + k * dwL);
    }
    for (int k = 0; k < KC; ++k) {
      const TapRange& t = wr[kw0 + k];
      const int64_t e0 = std::min(t.hi, lo), e1 = std::max(t.lo, hi);
      for (int64_t o = t.lo; o < e0; ++o) a[k][0] += vload(gr + o * L) * vload(xr + o * xstep + k * dwL);
      for (int64_t o = e1; o < t.hi; ++o) a[k][0] += vload(gr + o * L) * vload(xr + o * xstep + k * dwL);
    }
  }
  for (int k = 0; k < KC; ++k) {
    acc_t* q = pt + (kw0 + k) * L;
    vstore(q, vload(q) + (a[k][0] + a[k][1]));
  }
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
    const CbScratch<acc_t> scratch(Hb * Wb * L, Ho * Wo * L);
    acc_t* const xb = scratch.a();
    acc_t* const gb = scratch.b();
    std::vector<int64_t> toff;
    cb_tap_offsets(p, Wb, L, toff);
    const int64_t xstep = p.stride_w * L, xrow = p.stride_h * Wb * L, dwL = p.dilation_w * L;
    // rows of >= 16 outputs: pixel-outer over a kernel row's taps (20x20 to 80x80 planes: 1.2-1.4x);
    // shorter rows: tap by tap (the per-tap edge loops of the pixel-outer form cost more there)
    const bool pixel_outer = Wo >= 16;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t blk = item / nchunks, ch = item % nchunks, c0 = blk * L, nc = std::min(L, C - c0);
      const int64_t n0 = ch * N / nchunks, n1 = (ch + 1) * N / nchunks;
      acc_t* part = partial.data() + item * part_size;
      for (int64_t n = n0; n < n1; ++n) {
        cb_pack(xb, Hb, Wb, x + n * is[0] + c0 * is[1], nc, is[1], is[2], is[3], p.in_h, p.in_w, p.pad_top,
                p.pad_left);
        cb_pack(gb, Ho, Wo, go + n * gs[0] + c0 * gs[1], nc, gs[1], gs[2], gs[3], Ho, Wo, 0, 0);
        V bs = vzero<acc_t>();
        for (int64_t i = 0; i < Ho * Wo; ++i) bs += vload(gb + i * L);
        vstore(part + taps * L, vload(part + taps * L) + bs);
        for (int64_t kh = 0; kh < KH; ++kh) {
          const TapRange& th = hr[kh];
          if (th.lo >= th.hi) continue;
          const acc_t* x0 = xb + toff[kh * KW];  // buffer pixel of tap (kh, 0) for output (0, 0)
          acc_t* pt = part + kh * KW * L;
          if (!pixel_outer) {
            for (int64_t kw = 0; kw < KW; ++kw) cb_wgrad_tap(pt + kw * L, gb, x0 + kw * dwL, th, wr[kw], Wo, xrow, xstep);
            continue;
          }
          int64_t kw = 0;
          for (; kw + 4 <= KW; kw += 4) cb_wgrad_taps<acc_t, 4>(pt, gb, x0, th, wr.data(), kw, Wo, xrow, xstep, dwL);
          if (KW - kw == 3) cb_wgrad_taps<acc_t, 3>(pt, gb, x0, th, wr.data(), kw, Wo, xrow, xstep, dwL);
          if (KW - kw == 2) cb_wgrad_taps<acc_t, 2>(pt, gb, x0, th, wr.data(), kw, Wo, xrow, xstep, dwL);
          if (KW - kw == 1) cb_wgrad_taps<acc_t, 1>(pt, gb, x0, th, wr.data(), kw, Wo, xrow, xstep, dwL);
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
