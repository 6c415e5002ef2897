// Kernel bodies of the CPU depthwise conv2d (forward, grad-input, grad-weight).
//
// NOT an ordinary header: csrc/cpu/depthwise_conv2d.cpp includes it once per ISA, inside
// `namespace convext::cpu::<isa>`, with CONVEXT_VEC_BYTES set to that ISA's vector width
// (16 baseline, 32 under `#pragma GCC target("avx2,fma")`, 64 under avx512f), and picks
// one copy at run time. It includes nothing itself (every header is included by the .cpp
// first) and uses the helpers defined there (TapRange, Geometry).
//
// Loop structure (every tensor is read in place through its element strides):
//   * conv_nchw -- output in NCHW: parallel over output planes. The input plane is copied
//     into a zero-padded acc_t buffer (no border cases), then each output row is held in
//     vector registers, blocks of up to 4 x VL columns, while all taps accumulate into it.
//   * conv_cl -- output channels_last: parallel over (n, h) rows; blocks of 4 pixels x
//     2 vectors of channels stay in registers across all taps.
//   Both also serve grad-input at stride 1 (a conv of grad_output with the flipped
//   kernel, Geometry::reduce summing the M output channels of one input channel);
//   grad-input at stride > 1 uses a scatter (NCHW) or gather (channels_last) kernel.
//   * grad-weight: NCHW-ish -> per (channel, batch chunk) vector dot products of padded rows;
//     channels innermost -> per row chunk, per tap, register accumulation over the row.
//     Partials are reduced in a fixed order: deterministic, independent of threads.
// Rows that are not unit-stride or not in the accumulation type are first converted into
// a small contiguous acc_t buffer, so the inner loops always see unit-stride acc_t rows.

#ifndef CONVEXT_VEC_BYTES
#error "depthwise_conv2d_kernel.h: define CONVEXT_VEC_BYTES before including"
#endif

// ------------------------------------------------------------------ vectors

typedef float vfloat_t __attribute__((vector_size(CONVEXT_VEC_BYTES)));
typedef double vdouble_t __attribute__((vector_size(CONVEXT_VEC_BYTES)));

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using type = vfloat_t;
  static constexpr int64_t size = CONVEXT_VEC_BYTES / sizeof(float);
};
template <>
struct Vec<double> {
  using type = vdouble_t;
  static constexpr int64_t size = CONVEXT_VEC_BYTES / sizeof(double);
};

template <typename T>
inline typename Vec<T>::type vload(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void vstore(T* p, const typename Vec<T>::type& v) {
  std::memcpy(p, &v, sizeof(v));
}
template <typename T>
inline typename Vec<T>::type vzero() {
  return typename Vec<T>::type{};
}

// ------------------------------------------------------------------ small helpers

// r[o * s + off] += w * g[o] for o in [lo, hi)   (scatter form)
template <typename acc_t>
inline void axpy_scatter(acc_t* __restrict__ r, const acc_t* __restrict__ g, acc_t w,
                         const TapRange& t, int64_t s) {
  if (s == 1) {
    for (int64_t o = t.lo; o < t.hi; ++o) r[o + t.off] += w * g[o];
  } else {
    for (int64_t o = t.lo; o < t.hi; ++o) r[o * s + t.off] += w * g[o];
  }
}

// A row of `n` elements at `src` with element stride `stride`, as acc_t values: either
// `src` itself (unit stride, already acc_t) or a converted copy in `buf`.
template <typename scalar_t, typename acc_t>
inline const acc_t* row_as_acc(const scalar_t* src, int64_t n, int64_t stride, acc_t* buf) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (stride == 1) return src;
  }
  for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<acc_t>(src[i * stride]);
  return buf;
}

inline int64_t grain_for(int64_t work_per_item) {
  constexpr int64_t kTarget = 16384;  // ~ multiply-adds per task before splitting
  return std::max<int64_t>(1, kTarget / std::max<int64_t>(1, work_per_item));
}

// Input channel and weight row feeding output channel `oc`, term `m` of Geometry::terms().
inline int64_t term_channel(const Geometry& g, int64_t oc, int64_t m) {
  return g.reduce ? oc * g.p.multiplier + m : oc / g.p.multiplier;
}
inline int64_t term_weight(const Geometry& g, int64_t oc, int64_t m) {
  return g.reduce ? oc * g.p.multiplier + m : oc;
}

// ------------------------------------------------------------------ NCHW conv

// Copies input row `src` (element stride `stride`, W elements) into dst[0, Wp) so that
// dst[j] = src[j - pad_left], zero outside the row.
template <typename scalar_t, typename acc_t>
inline void pad_row(acc_t* __restrict__ dst, const scalar_t* src, int64_t stride, int64_t W,
                    int64_t pad_left, int64_t Wp) {
  const int64_t j0 = std::clamp<int64_t>(pad_left, 0, Wp);
  const int64_t j1 = std::clamp<int64_t>(pad_left + W, 0, Wp);
  for (int64_t j = 0; j < j0; ++j) dst[j] = acc_t(0);
  if (stride == 1) {
    for (int64_t j = j0; j < j1; ++j) dst[j] = static_cast<acc_t>(src[j - pad_left]);
  } else {
    for (int64_t j = j0; j < j1; ++j) dst[j] = static_cast<acc_t>(src[(j - pad_left) * stride]);
  }
  for (int64_t j = std::max(j0, j1); j < Wp; ++j) dst[j] = acc_t(0);
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
  at::parallel_for(0, p.batch * Ho, grain_for(row_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(Cy), xbuf(Cx);
    std::vector<ClTap> taps(KH * KW);
    std::vector<int64_t> khs(KH);
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
          int64_t ow = 0;
          while (ow < Wo) {
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

// ------------------------------------------------------------------ grad input, stride > 1

// grad_input (N, C, H, W) contiguous NCHW; go read through p.out_strides. Scatter form.
template <typename scalar_t, typename acc_t>
void backward_input_nchw(const Geometry& g, const scalar_t* go, const acc_t* w, scalar_t* gi) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, M = p.multiplier, C = p.in_channels;
  const auto gs = p.out_strides;
  const auto& wr = g.w_ranges;
  const int64_t plane_work = M * Ho * Wo * KH * KW + H * W;
  at::parallel_for(0, p.batch * C, grain_for(plane_work), [&](int64_t begin, int64_t end) {
    constexpr bool in_place = std::is_same_v<scalar_t, acc_t>;
    const int64_t gs_n = gs[0], gs_c = gs[1], gs_h = gs[2], gs_w = gs[3];
    std::vector<acc_t> plane_buf(in_place ? 0 : H * W), gbuf(Wo);
    for (int64_t pi = begin; pi < end; ++pi) {
      const int64_t n = pi / C, c = pi % C;
      acc_t* A;
      if constexpr (in_place) {
        A = gi + pi * H * W;
      } else {
        A = plane_buf.data();
      }
      std::fill(A, A + H * W, acc_t(0));
      for (int64_t m = 0; m < M; ++m) {
        const int64_t oc = c * M + m;
        const scalar_t* gp = go + n * gs_n + oc * gs_c;
        const acc_t* wk = w + oc * KH * KW;
        for (int64_t oh = 0; oh < Ho; ++oh) {
          const acc_t* ga = row_as_acc<scalar_t, acc_t>(gp + oh * gs_h, Wo, gs_w, gbuf.data());
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
            if (ih < 0 || ih >= H) continue;
            acc_t* Ar = A + ih * W;
            for (int64_t kw = 0; kw < KW; ++kw) {
              if (wr[kw].lo >= wr[kw].hi) continue;
              axpy_scatter(Ar, ga, wk[kh * KW + kw], wr[kw], p.stride_w);
            }
          }
        }
      }
      if constexpr (!in_place) {
        scalar_t* out = gi + pi * H * W;
        for (int64_t i = 0; i < H * W; ++i) out[i] = static_cast<scalar_t>(A[i]);
      }
    }
  });
}

// grad_input (N, C, H, W) channels_last (strides p.in_strides); gather form.
template <typename scalar_t, typename acc_t>
void backward_input_cl(const Geometry& g, const scalar_t* go, const acc_t* wT, scalar_t* gi) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, M = p.multiplier, C = p.in_channels, Cout = p.out_channels;
  const auto gs = p.out_strides;
  const auto is = p.in_strides;
  const int64_t row_work = W * KH * KW * Cout;
  at::parallel_for(0, p.batch * H, grain_for(row_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(C), gbuf(Cout);
    std::vector<int64_t> kh_list(KH), oh_list(KH);
    for (int64_t rowi = begin; rowi < end; ++rowi) {
      const int64_t n = rowi / H, ih = rowi % H;
      int64_t nkh = 0;
      for (int64_t kh = 0; kh < KH; ++kh) {
        const int64_t t = ih + p.pad_top - kh * p.dilation_h;
        if (t < 0 || t % p.stride_h != 0) continue;
        const int64_t oh = t / p.stride_h;
        if (oh >= Ho) continue;
        kh_list[nkh] = kh;
        oh_list[nkh] = oh;
        ++nkh;
      }
      for (int64_t iw = 0; iw < W; ++iw) {
        acc_t* __restrict__ a = acc.data();
        for (int64_t c = 0; c < C; ++c) a[c] = acc_t(0);
        for (int64_t j = 0; j < nkh; ++j) {
          const int64_t kh = kh_list[j], oh = oh_list[j];
          for (int64_t kw = 0; kw < KW; ++kw) {
            const int64_t t = iw + p.pad_left - kw * p.dilation_w;
            if (t < 0 || t % p.stride_w != 0) continue;
            const int64_t ow = t / p.stride_w;
            if (ow >= Wo) continue;
            const acc_t* __restrict__ ga =
                row_as_acc<scalar_t, acc_t>(go + n * gs[0] + oh * gs[2] + ow * gs[3], Cout, gs[1], gbuf.data());
            const acc_t* __restrict__ wt = wT + (kh * KW + kw) * Cout;
            if (M == 1) {
              for (int64_t c = 0; c < C; ++c) a[c] += wt[c] * ga[c];
            } else {
              for (int64_t c = 0; c < C; ++c) {
                acc_t s = 0;
                for (int64_t m = 0; m < M; ++m) s += wt[c * M + m] * ga[c * M + m];
                a[c] += s;
              }
            }
          }
        }
        scalar_t* out = gi + n * is[0] + ih * is[2] + iw * is[3];
        for (int64_t c = 0; c < C; ++c) out[c * is[1]] = static_cast<scalar_t>(a[c]);
      }
    }
  });
}

// ------------------------------------------------------------------ grad weight

// Rows of x / go read through strides (any layout); one task per (out channel, batch chunk).
// Per image, the input plane is copied into a zero-padded buffer and each grad_output row
// is zero-extended to a multiple of the vector width, so every (row, tap) product is a
// border-free vector dot product accumulated in VL lanes per tap.
// gw: (Cout, KH*KW) acc_t, gb: Cout acc_t or null.
template <typename scalar_t, typename acc_t>
void backward_weight_planes(const Geometry& g, const scalar_t* go, const scalar_t* x, acc_t* gw,
                            acc_t* gb) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, M = p.multiplier, Cout = p.out_channels, N = p.batch;
  const auto gs = p.out_strides;
  const auto is = p.in_strides;
  const int64_t taps = KH * KW, s = p.stride_w, dw = p.dilation_w;
  const int64_t Wo_pad = (Wo + L - 1) / L * L;
  const int64_t Wp = (Wo_pad - 1) * s + (KW - 1) * dw + 1;
  const int64_t nchunks = Cout >= 16 ? 1 : std::max<int64_t>(1, std::min<int64_t>(N, 16));
  std::vector<acc_t> partial(Cout * nchunks * (taps + 1), acc_t(0));
  const int64_t item_work = ((N + nchunks - 1) / nchunks) * (Ho * Wo * taps + H * Wp);
  at::parallel_for(0, Cout * nchunks, grain_for(item_work), [&](int64_t begin, int64_t end) {
    // per tap: VL lanes of partial sums (plain acc_t storage: std::vector does not promise
    // the alignment of a vector type)
    std::vector<acc_t> xpad(H * Wp), grow(Wo_pad, acc_t(0)), vacc(taps * L);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t oc = item / nchunks, ch = item % nchunks, c = oc / M;
      const int64_t n0 = ch * N / nchunks, n1 = (ch + 1) * N / nchunks;
      std::fill(vacc.begin(), vacc.end(), acc_t(0));
      acc_t bsum = 0;
      for (int64_t n = n0; n < n1; ++n) {
        const scalar_t* gp = go + n * gs[0] + oc * gs[1];
        const scalar_t* xp = x + n * is[0] + c * is[1];
        for (int64_t ih = 0; ih < H; ++ih) pad_row(xpad.data() + ih * Wp, xp + ih * is[2], is[3], W, p.pad_left, Wp);
        for (int64_t oh = 0; oh < Ho; ++oh) {
          acc_t* gr = grow.data();  // columns [Wo, Wo_pad) stay zero
          const scalar_t* gsrc = gp + oh * gs[2];
          for (int64_t o = 0; o < Wo; ++o) gr[o] = static_cast<acc_t>(gsrc[o * gs[3]]);
          acc_t rs = 0;
          for (int64_t o = 0; o < Wo; ++o) rs += gr[o];
          bsum += rs;
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
            if (ih < 0 || ih >= H) continue;
            const acc_t* xr = xpad.data() + ih * Wp;
            for (int64_t kw = 0; kw < KW; ++kw) {
              // Only the outputs [lo, hi) whose tap column is a real input column: a padded
              // column (or a real column past the last output) must not meet grad_output
              // (0 * NaN), as in F.conv2d.
              const TapRange& t = g.w_ranges[kw];
              if (t.lo >= t.hi) continue;
              const acc_t* q = xr + kw * dw;
              acc_t* va = vacc.data() + (kh * KW + kw) * L;
              if (s == 1) {
                V a0 = vzero<acc_t>(), a1 = vzero<acc_t>();
                int64_t o = t.lo;
                for (; o + 2 * L <= t.hi; o += 2 * L) {
                  a0 += vload(gr + o) * vload(q + o);
                  a1 += vload(gr + o + L) * vload(q + o + L);
                }
                for (; o + L <= t.hi; o += L) a0 += vload(gr + o) * vload(q + o);
                acc_t d = 0;
                for (; o < t.hi; ++o) d += gr[o] * q[o];
                vstore(va, vload(va) + a0 + a1);
                va[0] += d;
              } else {
                acc_t d = 0;
                for (int64_t o = t.lo; o < t.hi; ++o) d += gr[o] * q[o * s];
                va[0] += d;
              }
            }
          }
        }
      }
      acc_t* part = partial.data() + item * (taps + 1);
      for (int64_t tap = 0; tap < taps; ++tap) {
        acc_t sum = 0;
        for (int64_t l = 0; l < L; ++l) sum += vacc[tap * L + l];
        part[tap] = sum;
      }
      part[taps] = bsum;
    }
  });
  for (int64_t oc = 0; oc < Cout; ++oc) {
    for (int64_t t = 0; t <= taps; ++t) {
      acc_t sum = 0;
      for (int64_t ch = 0; ch < nchunks; ++ch) sum += partial[(oc * nchunks + ch) * (taps + 1) + t];
      if (t < taps) {
        gw[oc * taps + t] = sum;
      } else if (gb) {
        gb[oc] = sum;
      }
    }
  }
}

// pt[c..] += sum over o in [lo, hi) of g(o)[c..] * x(o)[c..], CV vectors of channels,
// two pixels per step for independent FMA chains.
template <typename acc_t, int CV>
inline void cl_wgrad_block(acc_t* __restrict__ pt, const acc_t* __restrict__ g0, int64_t gstep,
                           const acc_t* __restrict__ x0, int64_t xstep, int64_t lo, int64_t hi) {
  using V = typename Vec<acc_t>::type;
  constexpr int64_t L = Vec<acc_t>::size;
  V a[2][CV];
  for (int v = 0; v < CV; ++v) a[0][v] = a[1][v] = vzero<acc_t>();
  int64_t o = lo;
  for (; o + 2 <= hi; o += 2) {
    for (int j = 0; j < 2; ++j) {
      const acc_t* gp = g0 + (o + j) * gstep;
      const acc_t* xp = x0 + (o + j) * xstep;
      for (int v = 0; v < CV; ++v) a[j][v] += vload(gp + v * L) * vload(xp + v * L);
    }
  }
  if (o < hi) {
    const acc_t* gp = g0 + o * gstep;
    const acc_t* xp = x0 + o * xstep;
    for (int v = 0; v < CV; ++v) a[0][v] += vload(gp + v * L) * vload(xp + v * L);
  }
  for (int v = 0; v < CV; ++v) vstore(pt + v * L, vload(pt + v * L) + a[0][v] + a[1][v]);
}

// Channels innermost in both tensors: one task per chunk of (n, oh) rows, accumulating
// (KH*KW, Cout) + Cout partials, reduced in chunk order.
template <typename scalar_t, typename acc_t>
void backward_weight_cl(const Geometry& g, const scalar_t* go, const scalar_t* x, acc_t* gw,
                        acc_t* gb) {
  constexpr int64_t L = Vec<acc_t>::size;
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, M = p.multiplier, C = p.in_channels, Cout = p.out_channels;
  const auto gs = p.out_strides;
  const auto is = p.in_strides;
  const auto& wr = g.w_ranges;
  const int64_t taps = KH * KW;
  const int64_t rows = p.batch * Ho;
  const int64_t nchunks = std::max<int64_t>(1, std::min<int64_t>(rows, 32));
  const int64_t stride_part = (taps + 1) * Cout;
  std::vector<acc_t> partial(nchunks * stride_part, acc_t(0));
  const bool gdirect = std::is_same_v<scalar_t, acc_t> && gs[1] == 1;
  const bool xdirect = std::is_same_v<scalar_t, acc_t> && is[1] == 1;
  const bool fast = gdirect && xdirect && M == 1;
  at::parallel_for(0, nchunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> gbuf(Cout), xbuf(C);
    for (int64_t ch = begin; ch < end; ++ch) {
      acc_t* part = partial.data() + ch * stride_part;
      acc_t* __restrict__ bpart = part + taps * Cout;
      const int64_t r0 = ch * rows / nchunks, r1 = (ch + 1) * rows / nchunks;
      for (int64_t rowi = r0; rowi < r1; ++rowi) {
        const int64_t n = rowi / Ho, oh = rowi % Ho;
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          if (fast) {
            const acc_t* grow = go + n * gs[0] + oh * gs[2];
            for (int64_t ow = 0; ow < Wo; ++ow) {
              const acc_t* gp = grow + ow * gs[3];
              for (int64_t c = 0; c < Cout; ++c) bpart[c] += gp[c];
            }
            for (int64_t kh = 0; kh < KH; ++kh) {
              const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
              if (ih < 0 || ih >= H) continue;
              const acc_t* xrow = x + n * is[0] + ih * is[2];
              for (int64_t kw = 0; kw < KW; ++kw) {
                const TapRange& t = wr[kw];
                if (t.lo >= t.hi) continue;
                acc_t* pt = part + (kh * KW + kw) * Cout;
                const acc_t* x0 = xrow + t.off * is[3];  // x pixel of ow = 0 (may be out of range)
                const int64_t xstep = p.stride_w * is[3];
                int64_t c = 0;
                for (; c + 4 * L <= C; c += 4 * L)
                  cl_wgrad_block<acc_t, 4>(pt + c, grow + c, gs[3], x0 + c, xstep, t.lo, t.hi);
                for (; c + 2 * L <= C; c += 2 * L)
                  cl_wgrad_block<acc_t, 2>(pt + c, grow + c, gs[3], x0 + c, xstep, t.lo, t.hi);
                for (; c + L <= C; c += L)
                  cl_wgrad_block<acc_t, 1>(pt + c, grow + c, gs[3], x0 + c, xstep, t.lo, t.hi);
                for (; c < C; ++c) {
                  acc_t sum = 0;
                  for (int64_t o = t.lo; o < t.hi; ++o) sum += grow[o * gs[3] + c] * x0[o * xstep + c];
                  pt[c] += sum;
                }
              }
            }
            continue;
          }
        }
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const acc_t* __restrict__ ga =
              row_as_acc<scalar_t, acc_t>(go + n * gs[0] + oh * gs[2] + ow * gs[3], Cout, gs[1], gbuf.data());
          for (int64_t oc = 0; oc < Cout; ++oc) bpart[oc] += ga[oc];
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
            if (ih < 0 || ih >= H) continue;
            for (int64_t kw = 0; kw < KW; ++kw) {
              const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
              if (iw < 0 || iw >= W) continue;
              const acc_t* __restrict__ xa =
                  row_as_acc<scalar_t, acc_t>(x + n * is[0] + ih * is[2] + iw * is[3], C, is[1], xbuf.data());
              acc_t* __restrict__ pt = part + (kh * KW + kw) * Cout;
              if (M == 1) {
                for (int64_t c = 0; c < C; ++c) pt[c] += ga[c] * xa[c];
              } else {
                for (int64_t c = 0; c < C; ++c) {
                  const acc_t xv = xa[c];
                  for (int64_t m = 0; m < M; ++m) pt[c * M + m] += ga[c * M + m] * xv;
                }
              }
            }
          }
        }
      }
    }
  });
  for (int64_t oc = 0; oc < Cout; ++oc) {
    for (int64_t t = 0; t <= taps; ++t) {
      acc_t sum = 0;
      for (int64_t ch = 0; ch < nchunks; ++ch) sum += partial[ch * stride_part + t * Cout + oc];
      if (t < taps) {
        gw[oc * taps + t] = sum;
      } else if (gb) {
        gb[oc] = sum;
      }
    }
  }
}
