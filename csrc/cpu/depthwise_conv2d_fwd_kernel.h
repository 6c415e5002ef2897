// Forward kernels of the CPU depthwise conv2d, also grad-input at stride 1 (Geometry::reduce):
//   conv_nchw  output NCHW: one task per output plane, padded acc_t input plane, output rows held
//              in vector registers (blocks of up to 4 x VL columns) while all taps accumulate;
//              planes with a non-finite weight take conv_plane_exact (padding never meets a weight).
//   conv_cl    output channels_last: one task per (n, oh) row, blocks of 4 pixels x 2 vectors of
//              channels in registers across all taps; a generic loop for other strides / dtypes / M.
//
// Per-ISA header (no include guard), part of depthwise_conv2d_kernel.h: uses kernel_vec.h,
// kernel_helpers.h and Geometry (csrc/cpu/depthwise_conv2d.cpp).

// ------------------------------------------------------------------ NCHW conv

// Input channel and weight row feeding output channel `oc`, term `m` of Geometry::terms().
inline int64_t term_channel(const Geometry& g, int64_t oc, int64_t m) {
  return g.reduce ? oc * g.p.multiplier + m : oc / g.p.multiplier;
}
inline int64_t term_weight(const Geometry& g, int64_t oc, int64_t m) {
  return g.reduce ? oc * g.p.multiplier + m : oc;
}

// U x VL consecutive outputs r[ow, ow + U*VL) += sum over taps; xrows[kh] is the padded
// input row of tap row kh (null where that row is padding); column ow of tap kw reads
// xrows[kh][ow + kw * dil_w] (unit stride).
template <typename acc_t, int U>
inline void conv_row_block(acc_t* __restrict__ r, int64_t ow, const acc_t* const* xrows,
                           const acc_t* __restrict__ wk, int64_t KH, int64_t KW, int64_t dil_w) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  V a[U];
  for (int u = 0; u < U; ++u) a[u] = vload(r + ow + u * L);
  for (int64_t kh = 0; kh < KH; ++kh) {
    const acc_t* xr = xrows[kh];
    if (!xr) continue;
    const acc_t* xp = xr + ow;
    for (int64_t kw = 0; kw < KW; ++kw) {
      const acc_t wv = wk[kh * KW + kw];
      const acc_t* q = xp + kw * dil_w;
      for (int u = 0; u < U; ++u) a[u] += wv * vload(q + u * L);
    }
  }
  for (int u = 0; u < U; ++u) vstore(r + ow + u * L, a[u]);
}

// One output plane of conv_nchw computed tap by tap, skipping every tap that falls into the
// padding (no zero-padded buffer): for planes whose weights are not all finite, where the fast
// path's `0 * w` products at padded positions would make NaN (0 * NaN, 0 * inf) that F.conv2d
// does not make (it never multiplies the padding).
template <typename scalar_t, typename acc_t>
void conv_plane_exact(const Geometry& g, const scalar_t* x, const acc_t* w, acc_t b0, int64_t n, int64_t oc,
                      scalar_t* yp) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t terms = g.reduce ? p.multiplier : 1;
  const auto is = p.in_strides;
  for (int64_t oh = 0; oh < Ho; ++oh) {
    for (int64_t ow = 0; ow < Wo; ++ow) {
      acc_t a = b0;
      for (int64_t m = 0; m < terms; ++m) {
        const scalar_t* xp = x + n * is[0] + term_channel(g, oc, m) * is[1];
        const acc_t* wk = w + term_weight(g, oc, m) * KH * KW;
        for (int64_t kh = 0; kh < KH; ++kh) {
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih < 0 || ih >= p.in_h) continue;
          for (int64_t kw = 0; kw < KW; ++kw) {
            const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
            if (iw < 0 || iw >= p.in_w) continue;
            a += wk[kh * KW + kw] * static_cast<acc_t>(xp[ih * is[2] + iw * is[3]]);
          }
        }
      }
      yp[oh * Wo + ow] = static_cast<scalar_t>(a);
    }
  }
}

template <typename acc_t>
inline bool all_finite(const acc_t* v, int64_t n) {
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= std::isfinite(v[i]);
  return ok;
}

// y (N, Cy, Ho, Wo) contiguous NCHW, x read through p.in_strides. w: (rows, KH*KW) acc_t.
// Per output plane, each contributing input plane is first copied (converted to acc_t)
// into a zero-padded buffer, so every output column is an interior one: rows of Wo
// (rounded up to the vector width) accumulate in registers over all taps. Planes with a
// non-finite weight take conv_plane_exact (the padding must not meet the weight).
template <typename scalar_t, typename acc_t>
void conv_nchw(const Geometry& g, const scalar_t* x, const acc_t* w, const acc_t* bias, scalar_t* y) {
  constexpr int64_t L = Vec<acc_t>::size;
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, Cy = p.out_channels, s = p.stride_w, dw = p.dilation_w;
  const int64_t terms = g.reduce ? p.multiplier : 1;
  const auto is = p.in_strides;
  const int64_t Wo_pad = (Wo + L - 1) / L * L;
  // padded row: column j holds x[j - pad_left] (zero outside [0, W))
  const int64_t Wp = (Wo_pad - 1) * s + (KW - 1) * dw + 1;
  const int64_t plane_work = terms * (Ho * Wo * KH * KW + H * Wp);
  at::parallel_for(0, p.batch * Cy, grain_for(plane_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xpad(H * Wp), acc(Ho * Wo_pad);
    std::vector<const acc_t*> xrows(KH);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / Cy, oc = plane % Cy;
      const acc_t b0 = bias ? bias[oc] : acc_t(0);
      bool finite = true;
      for (int64_t m = 0; m < terms; ++m) finite &= all_finite(w + term_weight(g, oc, m) * KH * KW, KH * KW);
      if (!finite) {
        conv_plane_exact(g, x, w, b0, n, oc, y + plane * Ho * Wo);
        continue;
      }
      std::fill(acc.begin(), acc.end(), b0);
      for (int64_t m = 0; m < terms; ++m) {
        const scalar_t* xp = x + n * is[0] + term_channel(g, oc, m) * is[1];
        const acc_t* wk = w + term_weight(g, oc, m) * KH * KW;
        for (int64_t ih = 0; ih < H; ++ih) pad_row(xpad.data() + ih * Wp, xp + ih * is[2], is[3], W, p.pad_left, Wp);
        for (int64_t oh = 0; oh < Ho; ++oh) {
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
            xrows[kh] = (ih < 0 || ih >= H) ? nullptr : xpad.data() + ih * Wp;
          }
          acc_t* r = acc.data() + oh * Wo_pad;
          if (s == 1) {
            int64_t ow = 0;
            for (; ow + 4 * L <= Wo_pad; ow += 4 * L) conv_row_block<acc_t, 4>(r, ow, xrows.data(), wk, KH, KW, dw);
            for (; ow + 2 * L <= Wo_pad; ow += 2 * L) conv_row_block<acc_t, 2>(r, ow, xrows.data(), wk, KH, KW, dw);
            for (; ow < Wo_pad; ow += L) conv_row_block<acc_t, 1>(r, ow, xrows.data(), wk, KH, KW, dw);
          } else {
            for (int64_t kh = 0; kh < KH; ++kh) {
              const acc_t* xr = xrows[kh];
              if (!xr) continue;
              for (int64_t kw = 0; kw < KW; ++kw) {
                const acc_t wv = wk[kh * KW + kw];
                const acc_t* q = xr + kw * dw;
                for (int64_t o = 0; o < Wo; ++o) r[o] += wv * q[o * s];
              }
            }
          }
        }
      }
      scalar_t* yp = y + plane * Ho * Wo;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const acc_t* r = acc.data() + oh * Wo_pad;
        scalar_t* yr = yp + oh * Wo;
        for (int64_t o = 0; o < Wo; ++o) yr[o] = static_cast<scalar_t>(r[o]);
      }
    }
  });
}

// ------------------------------------------------------------------ channels_last conv

struct ClTap {
  int64_t xoff;  // element offset of the tap's input pixel from the block's base pointer
  int64_t widx;  // tap index into wT rows
};

// PW pixels (x pixel step xstep, y pixel step ystep) x CV vectors of channels from c.
template <typename acc_t, int PW, int CV>
inline void cl_block(acc_t* __restrict__ y0, int64_t ystep, const acc_t* __restrict__ x0,
                     int64_t xstep, const ClTap* taps, int64_t ntaps, const acc_t* __restrict__ wT,
                     int64_t Cw, const acc_t* __restrict__ bias, int64_t c) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  V a[PW][CV];
  for (int v = 0; v < CV; ++v) {
    const V b = bias ? vload(bias + c + v * L) : vzero<acc_t>();
    for (int j = 0; j < PW; ++j) a[j][v] = b;
  }
  for (int64_t t = 0; t < ntaps; ++t) {
    const acc_t* wp = wT + taps[t].widx * Cw + c;
    const acc_t* xp = x0 + taps[t].xoff + c;
    V wv[CV];
    for (int v = 0; v < CV; ++v) wv[v] = vload(wp + v * L);
    for (int j = 0; j < PW; ++j) {
      for (int v = 0; v < CV; ++v) a[j][v] += wv[v] * vload(xp + j * xstep + v * L);
    }
  }
  for (int j = 0; j < PW; ++j) {
    for (int v = 0; v < CV; ++v) vstore(y0 + j * ystep + c + v * L, a[j][v]);
  }
}

// PW pixels, all channels (vector blocks, then a scalar tail).
template <typename acc_t, int PW>
inline void cl_pixels(acc_t* y0, int64_t ystep, const acc_t* x0, int64_t xstep, const ClTap* taps,
                      int64_t ntaps, const acc_t* wT, int64_t C, const acc_t* bias) {
  constexpr int64_t L = Vec<acc_t>::size;
  int64_t c = 0;
  if constexpr (PW == 1) {  // one pixel: 4 vectors of channels for 4 independent FMA chains
    for (; c + 4 * L <= C; c += 4 * L) cl_block<acc_t, 1, 4>(y0, ystep, x0, xstep, taps, ntaps, wT, C, bias, c);
  }
  for (; c + 2 * L <= C; c += 2 * L) cl_block<acc_t, PW, 2>(y0, ystep, x0, xstep, taps, ntaps, wT, C, bias, c);
  for (; c + L <= C; c += L) cl_block<acc_t, PW, 1>(y0, ystep, x0, xstep, taps, ntaps, wT, C, bias, c);
  for (; c < C; ++c) {
    for (int j = 0; j < PW; ++j) {
      acc_t s = bias ? bias[c] : acc_t(0);
      for (int64_t t = 0; t < ntaps; ++t) s += wT[taps[t].widx * C + c] * x0[taps[t].xoff + j * xstep + c];
      y0[j * ystep + c] = s;
    }
  }
}

// Sliding window along a row (stride 1, dilation 1 along W): PW consecutive output pixels x one
// vector of channels from c. Per kernel row the KW weight vectors stay in registers and each of the
// PW + KW - 1 input pixels is loaded once and feeds every accumulator it reaches (one load per up to
// KW FMAs, against about one per FMA in cl_block). Taps are summed in the same order as cl_block
// (bias, then kh, then kw), so the two give identical results. xrows[r]: input row khs[r] at the
// column of output pixel 0 (kw = 0), pixel step xstep; window pixels j outside [jlo, jhi) are
// padding and skipped, so border pixels take this kernel too.
template <typename acc_t, int PW, int KW>
inline void cl_slide_block(acc_t* __restrict__ y0, int64_t ystep, const acc_t* const* xrows, const int64_t* khs,
                           int64_t nkh, int64_t ow0, int64_t jlo, int64_t jhi, int64_t xstep,
                           const acc_t* __restrict__ wT, int64_t C, const acc_t* __restrict__ bias, int64_t c) {
  using V = typename Vec<acc_t>::type;
  V a[PW];
  const V b = bias ? vload(bias + c) : vzero<acc_t>();
  for (int q = 0; q < PW; ++q) a[q] = b;
  for (int64_t r = 0; r < nkh; ++r) {
    const acc_t* xp = xrows[r] + ow0 * xstep + c;
    const acc_t* wp = wT + khs[r] * KW * C + c;
    V wv[KW];
    for (int kw = 0; kw < KW; ++kw) wv[kw] = vload(wp + kw * C);
#pragma GCC unroll 16
    for (int j = 0; j < PW + KW - 1; ++j) {
      if (j < jlo || j >= jhi) continue;  // a padded column: never multiplied (as F.conv2d)
      const V xv = vload(xp + j * xstep);
#pragma GCC unroll 8
      for (int kw = 0; kw < KW; ++kw) {
        const int q = j - kw;
        if (q >= 0 && q < PW) a[q] += wv[kw] * xv;
      }
    }
  }
  for (int q = 0; q < PW; ++q) vstore(y0 + q * ystep + c, a[q]);
}

// Output pixels [ow0, ow0 + PW) of one row, every vector of channels (C a multiple of VL).
template <typename acc_t, int PW>
inline void cl_slide_pixels(acc_t* y0, int64_t ystep, const acc_t* const* xrows, const int64_t* khs, int64_t nkh,
                            int64_t ow0, int64_t jlo, int64_t jhi, int64_t xstep, const acc_t* wT, int64_t C,
                            int64_t KW, const acc_t* bias) {
  constexpr int64_t L = Vec<acc_t>::size;
  for (int64_t c = 0; c < C; c += L) {
    switch (KW) {
      case 3: cl_slide_block<acc_t, PW, 3>(y0, ystep, xrows, khs, nkh, ow0, jlo, jhi, xstep, wT, C, bias, c); break;
      case 5: cl_slide_block<acc_t, PW, 5>(y0, ystep, xrows, khs, nkh, ow0, jlo, jhi, xstep, wT, C, bias, c); break;
      default: cl_slide_block<acc_t, PW, 7>(y0, ystep, xrows, khs, nkh, ow0, jlo, jhi, xstep, wT, C, bias, c); break;
    }
  }
}

// y (N, Cy, Ho, Wo) channels_last (p.out_strides), x through p.in_strides. wT: (KH*KW, rows).
template <typename scalar_t, typename acc_t>
void conv_cl(const Geometry& g, const scalar_t* x, const acc_t* wT, const acc_t* bias, scalar_t* y) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, M = p.multiplier, Cx = p.in_channels, Cy = p.out_channels;
  const auto is = p.in_strides;
  const auto os = p.out_strides;
  const int64_t Cw = g.reduce ? Cx : Cy;  // rows of the weight
  const int64_t row_work = Wo * KH * KW * Cw;
  // Fast path: one input channel per output channel, both channel-contiguous, acc_t data.
  const bool fast = std::is_same_v<scalar_t, acc_t> && M == 1 && is[1] == 1 && os[1] == 1;
  // ... and the sliding window of cl_slide_block: stride 1 and dilation 1 along W, KW 3 / 5 / 7,
  // whole vectors of channels.
  constexpr int kSlidePW = CONVEXT_VEC_BYTES >= 64 ? 8 : 4;
  const bool slide = fast && p.stride_w == 1 && p.dilation_w == 1 && (KW == 3 || KW == 5 || KW == 7) &&
                     Cy % Vec<acc_t>::size == 0 && switches::fast_path_enabled(switches::kFpCpuBlocks);
  at::parallel_for(0, p.batch * Ho, grain_for(row_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(Cy), xbuf(Cx);
    std::vector<ClTap> taps(KH * KW);
    std::vector<int64_t> khs(KH);
    std::vector<const acc_t*> xrows(KH);
    for (int64_t rowi = begin; rowi < end; ++rowi) {
      const int64_t n = rowi / Ho, oh = rowi % Ho;
      int64_t nkh = 0;
      for (int64_t kh = 0; kh < KH; ++kh) {
        const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
        if (ih >= 0 && ih < H) khs[nkh++] = kh;
      }
      if constexpr (std::is_same_v<scalar_t, acc_t>) {
        if (fast) {
          const acc_t* xn = x + n * is[0];
          acc_t* yrow = y + n * os[0] + oh * os[2];
          const int64_t xstep = p.stride_w * is[3];
          // taps of a pixel ow, as offsets from x(n, 0, ih0, ow * stride_w - pad_left)
          auto build_taps = [&](int64_t ow, bool interior) {
            int64_t nt = 0;
            for (int64_t j = 0; j < nkh; ++j) {
              const int64_t kh = khs[j];
              const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
              for (int64_t kw = 0; kw < KW; ++kw) {
                const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
                if (!interior && (iw < 0 || iw >= W)) continue;
                taps[nt++] = {ih * is[2] + (kw * p.dilation_w) * is[3], kh * KW + kw};
              }
            }
            return nt;
          };
          auto base = [&](int64_t ow) { return xn + (ow * p.stride_w - p.pad_left) * is[3]; };
          if (slide) {
            for (int64_t j = 0; j < nkh; ++j) {
              const int64_t ih = oh * p.stride_h - p.pad_top + khs[j] * p.dilation_h;
              xrows[j] = xn + ih * is[2] - p.pad_left * is[3];
            }
          }
          int64_t ow = 0;
          if (slide) {  // whole row, borders included, in blocks of kSlidePW then 4 pixels
            for (; ow + kSlidePW <= Wo; ow += kSlidePW) {
              cl_slide_pixels<acc_t, kSlidePW>(yrow + ow * os[3], os[3], xrows.data(), khs.data(), nkh, ow,
                                               p.pad_left - ow, W + p.pad_left - ow, is[3], wT, Cy, KW, bias);
            }
            for (; ow + 4 <= Wo; ow += 4) {
              cl_slide_pixels<acc_t, 4>(yrow + ow * os[3], os[3], xrows.data(), khs.data(), nkh, ow, p.pad_left - ow,
                                        W + p.pad_left - ow, is[3], wT, Cy, KW, bias);
            }
          }
          while (ow < Wo) {  // (after the sliding blocks: the last 0-3 pixels, one by one)
            if (ow >= g.w_int_lo && ow + 4 <= g.w_int_hi) {
              const int64_t nt = build_taps(ow, true);
              for (; ow + 4 <= g.w_int_hi; ow += 4) {
                cl_pixels<acc_t, 4>(yrow + ow * os[3], os[3], base(ow), xstep, taps.data(), nt, wT, Cy, bias);
              }
            } else {
              const int64_t nt = build_taps(ow, false);
              cl_pixels<acc_t, 1>(yrow + ow * os[3], os[3], base(ow), xstep, taps.data(), nt, wT, Cy, bias);
              ++ow;
            }
          }
          continue;
        }
      }
      // Generic: any channel strides / dtypes / multiplier.
      for (int64_t ow = 0; ow < Wo; ++ow) {
        acc_t* __restrict__ a = acc.data();
        for (int64_t oc = 0; oc < Cy; ++oc) a[oc] = bias ? bias[oc] : acc_t(0);
        for (int64_t j = 0; j < nkh; ++j) {
          const int64_t kh = khs[j];
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          for (int64_t kw = 0; kw < KW; ++kw) {
            const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
            if (iw < 0 || iw >= W) continue;
            const acc_t* __restrict__ xa =
                row_as_acc<scalar_t, acc_t>(x + n * is[0] + ih * is[2] + iw * is[3], Cx, is[1], xbuf.data());
            const acc_t* __restrict__ wt = wT + (kh * KW + kw) * Cw;
            if (g.reduce) {  // Cx = Cy * M
              for (int64_t c = 0; c < Cy; ++c) {
                acc_t s = 0;
                for (int64_t m = 0; m < M; ++m) s += wt[c * M + m] * xa[c * M + m];
                a[c] += s;
              }
            } else if (M == 1) {
              for (int64_t c = 0; c < Cy; ++c) a[c] += wt[c] * xa[c];
            } else {
              for (int64_t c = 0; c < Cx; ++c) {
                const acc_t xv = xa[c];
                for (int64_t m = 0; m < M; ++m) a[c * M + m] += wt[c * M + m] * xv;
              }
            }
          }
        }
        scalar_t* yp = y + n * os[0] + oh * os[2] + ow * os[3];
        for (int64_t oc = 0; oc < Cy; ++oc) yp[oc * os[1]] = static_cast<scalar_t>(a[oc]);
      }
    }
  });
}
