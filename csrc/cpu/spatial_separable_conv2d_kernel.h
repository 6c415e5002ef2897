// Kernel bodies of the CPU spatial separable conv2d (forward and backward).
//
// NOT an ordinary header: csrc/cpu/spatial_separable_conv2d.cpp includes it once per ISA,
// inside `namespace convext::cpu::ss_<isa>` (baseline, and AVX2+FMA under
// `#pragma GCC target`), and picks one copy at run time. It includes only kernel_helpers.h (the
// row helpers it shares with the depthwise kernels: row_as_acc, axpy_scatter, grain_for) and
// uses SSGeometry from that file and TapRange (tap_range.h).
//
// One task per (image, channel) plane. For each output row i the intermediate row
//   z[j] = bv + sum_a wv[a] * x[i*sh - pt + a*dh, j]          (j in [0, W), valid rows only)
// lives in a W-element buffer on the task's stack of buffers, never in a tensor, and
//   y[i, q] = bh + sum_b wh[b] * z[q*sw - pl + b*dw]          (valid columns only)
// is computed from it. Taps that fall into the zero padding are skipped, never multiplied
// (a NaN / inf weight meets only real input elements, as in F.conv2d's oneDNN kernels).
// The backward recomputes z row by row:
//   gz[j]  = sum_{b, q : q*sw - pl + b*dw = j} wh[b] * go[i, q]
//   gx[r]  += wv[a] * gz           (r = i*sh - pt + a*dh)
//   gwv[a] += <gz, x[r]>, gbv += sum gz, gwh[b] += sum_q go[i, q] z[q*sw - pl + b*dw], gbh += sum go.
// Weight/bias partials go to one slot per (image, out channel), reduced in a fixed order by the
// caller: deterministic, independent of the thread count.

#include "cpu/kernel_helpers.h"

template <typename acc_t>
inline void ss_axpy(acc_t* __restrict__ dst, const acc_t* __restrict__ src, acc_t w, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] += w * src[j];
}

template <typename acc_t>
inline acc_t ss_dot(const acc_t* __restrict__ a, const acc_t* __restrict__ b, int64_t n) {
  acc_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s0 += a[j] * b[j];
    s1 += a[j + 1] * b[j + 1];
    s2 += a[j + 2] * b[j + 2];
    s3 += a[j + 3] * b[j + 3];
  }
  for (; j < n; ++j) s0 += a[j] * b[j];
  return (s0 + s1) + (s2 + s3);
}

template <typename acc_t>
inline acc_t ss_sum(const acc_t* __restrict__ a, int64_t n) {
  acc_t s0 = 0, s1 = 0;
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) {
    s0 += a[j];
    s1 += a[j + 1];
  }
  if (j < n) s0 += a[j];
  return s0 + s1;
}

// acc[q] += w * z[q * s + t.off] for q in [t.lo, t.hi)
template <typename acc_t>
inline void ss_htap(acc_t* __restrict__ acc, const acc_t* __restrict__ z, acc_t w, const TapRange& t,
                    int64_t s) {
  if (s == 1) {
    const acc_t* zz = z + t.off;
    for (int64_t q = t.lo; q < t.hi; ++q) acc[q] += w * zz[q];
  } else {
    for (int64_t q = t.lo; q < t.hi; ++q) acc[q] += w * z[q * s + t.off];
  }
}

// sum_q g[q] * z[q * s + t.off] for q in [t.lo, t.hi)
template <typename acc_t>
inline acc_t ss_htap_dot(const acc_t* __restrict__ g, const acc_t* __restrict__ z, const TapRange& t,
                         int64_t s) {
  if (t.lo >= t.hi) return acc_t(0);
  if (s == 1) return ss_dot(g + t.lo, z + t.lo + t.off, t.hi - t.lo);
  acc_t sum = 0;
  for (int64_t q = t.lo; q < t.hi; ++q) sum += g[q] * z[q * s + t.off];
  return sum;
}

// The intermediate row i of plane (n, oc): z = bv + sum over valid a of wv[a] * x row.
template <typename scalar_t, typename acc_t>
inline void ss_zrow(const SSGeometry& g, const scalar_t* xp, const acc_t* wvo, acc_t bv, int64_t i,
                    acc_t* __restrict__ z, acc_t* xbuf) {
  const auto& p = g.p;
  const int64_t W = p.in_w;
  for (int64_t j = 0; j < W; ++j) z[j] = bv;
  for (int64_t a = 0; a < p.kernel_h; ++a) {
    const int64_t r = i * p.stride_h - p.pad_top + a * p.dilation_h;
    if (r < 0 || r >= p.in_h) continue;
    const acc_t* xr = row_as_acc<scalar_t, acc_t>(xp + r * p.in_strides[2], W, p.in_strides[3], xbuf);
    ss_axpy(z, xr, wvo[a], W);
  }
}

// y (N, C*M, Ho, Wo) through p.out_strides; x through p.in_strides. wv: (C*M, KH), wh: (C*M, KW)
// acc_t; bv / bh: C*M acc_t or null.
template <typename scalar_t, typename acc_t>
void ss_forward(const SSGeometry& g, const scalar_t* x, const acc_t* wv, const acc_t* bv, const acc_t* wh,
                const acc_t* bh, scalar_t* y) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, W = p.in_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t Cy = p.out_channels, M = p.multiplier;
  const auto is = p.in_strides;
  const auto os = p.out_strides;
  const int64_t plane_work = Ho * (KH * W + KW * Wo + W + Wo);
  at::parallel_for(0, p.batch * Cy, grain_for(plane_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> z(W), acc(Wo), xbuf(W);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / Cy, oc = plane % Cy;
      const scalar_t* xp = x + n * is[0] + (oc / M) * is[1];
      scalar_t* yp = y + n * os[0] + oc * os[1];
      const acc_t* wvo = wv + oc * KH;
      const acc_t* who = wh + oc * KW;
      const acc_t b0v = bv ? bv[oc] : acc_t(0), b0h = bh ? bh[oc] : acc_t(0);
      for (int64_t i = 0; i < Ho; ++i) {
        ss_zrow<scalar_t, acc_t>(g, xp, wvo, b0v, i, z.data(), xbuf.data());
        for (int64_t q = 0; q < Wo; ++q) acc[q] = b0h;
        for (int64_t b = 0; b < KW; ++b) ss_htap(acc.data(), z.data(), who[b], g.h_ranges[b], p.stride_w);
        scalar_t* yr = yp + i * os[2];
        if (os[3] == 1) {
          for (int64_t q = 0; q < Wo; ++q) yr[q] = static_cast<scalar_t>(acc[q]);
        } else {
          for (int64_t q = 0; q < Wo; ++q) yr[q * os[3]] = static_cast<scalar_t>(acc[q]);
        }
      }
    }
  });
}

// One task per input plane (n, c), looping over its M output channels.
//   gx: grad_input (N, C, H, W) through gx_strides, or null.
//   part: (N, C*M, KH + KW + 2) acc_t slots [gwv | gwh | gbv | gbh], or null when no weight or
//   bias gradient is wanted. need_h: grad of wh wanted (z is recomputed); need_v: grad of wv or
//   bv wanted.
template <typename scalar_t, typename acc_t>
void ss_backward(const SSGeometry& g, const scalar_t* go, const scalar_t* x, const acc_t* wv, const acc_t* bv,
                 const acc_t* wh, scalar_t* gx, std::array<int64_t, 4> gx_strides, acc_t* part, bool need_h,
                 bool need_v) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, H = p.in_h, W = p.in_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t C = p.in_channels, Cy = p.out_channels, M = p.multiplier;
  const int64_t S = KH + KW + 2;
  const auto is = p.in_strides;
  const auto gs = p.out_strides;
  const bool need_gz = gx != nullptr || need_v;
  const bool need_x = need_h || need_v;
  const int64_t plane_work = M * Ho * (2 * KH * W + 2 * KW * Wo + 2 * W) + H * W;
  at::parallel_for(0, p.batch * C, grain_for(plane_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> gxacc(gx ? H * W : 0), z(need_h ? W : 0), gz(need_gz ? W : 0), gbuf(Wo), xbuf(W);
    for (int64_t pi = begin; pi < end; ++pi) {
      const int64_t n = pi / C, c = pi % C;
      const scalar_t* xp = x + n * is[0] + c * is[1];
      std::fill(gxacc.begin(), gxacc.end(), acc_t(0));
      for (int64_t m = 0; m < M; ++m) {
        const int64_t oc = c * M + m;
        const scalar_t* gp = go + n * gs[0] + oc * gs[1];
        const acc_t* wvo = wv + oc * KH;
        const acc_t* who = wh + oc * KW;
        const acc_t b0v = bv ? bv[oc] : acc_t(0);
        acc_t* slot = part ? part + (n * Cy + oc) * S : nullptr;
        if (slot) std::fill(slot, slot + S, acc_t(0));
        for (int64_t i = 0; i < Ho; ++i) {
          const acc_t* gr = row_as_acc<scalar_t, acc_t>(gp + i * gs[2], Wo, gs[3], gbuf.data());
          if (slot) slot[KH + KW + 1] += ss_sum(gr, Wo);
          if (need_gz) {
            std::fill(gz.begin(), gz.end(), acc_t(0));
            for (int64_t b = 0; b < KW; ++b) axpy_scatter(gz.data(), gr, who[b], g.h_ranges[b], p.stride_w);
            if (need_v) slot[KH + KW] += ss_sum(gz.data(), W);
          }
          if (need_h) std::fill(z.begin(), z.end(), b0v);
          for (int64_t a = 0; a < KH; ++a) {
            const int64_t r = i * p.stride_h - p.pad_top + a * p.dilation_h;
            if (r < 0 || r >= H) continue;
            if (need_x) {
              const acc_t* xr = row_as_acc<scalar_t, acc_t>(xp + r * is[2], W, is[3], xbuf.data());
              if (need_h) ss_axpy(z.data(), xr, wvo[a], W);
              if (need_v) slot[a] += ss_dot(gz.data(), xr, W);
            }
            if (gx) ss_axpy(gxacc.data() + r * W, gz.data(), wvo[a], W);
          }
          if (need_h) {
            for (int64_t b = 0; b < KW; ++b) slot[KH + b] += ss_htap_dot(gr, z.data(), g.h_ranges[b], p.stride_w);
          }
        }
      }
      if (gx) {
        scalar_t* gxp = gx + n * gx_strides[0] + c * gx_strides[1];
        for (int64_t r = 0; r < H; ++r) {
          scalar_t* dst = gxp + r * gx_strides[2];
          const acc_t* src = gxacc.data() + r * W;
          for (int64_t j = 0; j < W; ++j) dst[j * gx_strides[3]] = static_cast<scalar_t>(src[j]);
        }
      }
    }
  });
}

// ------------------------------------------------------------------ channels innermost
// Inputs whose channel stride is 1 (channels_last): the same algorithm on blocks of channels, every
// buffer [columns][channels] so the inner loops run over contiguous channels. wvT: (KH, C*M) and
// whT: (KW, C*M) acc_t (taps-major). Forward: one task per (image, output row, channel block).
template <typename scalar_t, typename acc_t>
void ss_forward_cl(const SSGeometry& g, const scalar_t* x, const acc_t* wvT, const acc_t* bv, const acc_t* whT,
                   const acc_t* bh, scalar_t* y) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, H = p.in_h, W = p.in_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t Cy = p.out_channels, M = p.multiplier;
  const auto is = p.in_strides;
  const auto os = p.out_strides;
  const int64_t CB = std::min<int64_t>(Cy, 64), nb = (Cy + CB - 1) / CB;
  const int64_t item_work = CB * (KH * W + KW * Wo + W + Wo);
  at::parallel_for(0, p.batch * Ho * nb, grain_for(item_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> z(W * CB), acc(CB);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t cb = item % nb, i = (item / nb) % Ho, n = item / (nb * Ho);
      const int64_t oc0 = cb * CB, nc = std::min(CB, Cy - oc0);
      for (int64_t j = 0; j < W; ++j)
        for (int64_t k = 0; k < nc; ++k) z[j * CB + k] = bv ? bv[oc0 + k] : acc_t(0);
      for (int64_t a = 0; a < KH; ++a) {
        const int64_t r = i * p.stride_h - p.pad_top + a * p.dilation_h;
        if (r < 0 || r >= H) continue;
        const scalar_t* xr = x + n * is[0] + r * is[2];
        const acc_t* __restrict__ w = wvT + a * Cy + oc0;
        for (int64_t j = 0; j < W; ++j) {
          const scalar_t* __restrict__ xp = xr + j * is[3];
          acc_t* __restrict__ zz = z.data() + j * CB;
          if (M == 1 && is[1] == 1) {
            for (int64_t k = 0; k < nc; ++k) zz[k] += w[k] * static_cast<acc_t>(xp[oc0 + k]);
          } else {
            for (int64_t k = 0; k < nc; ++k) zz[k] += w[k] * static_cast<acc_t>(xp[((oc0 + k) / M) * is[1]]);
          }
        }
      }
      for (int64_t q = 0; q < Wo; ++q) {
        acc_t* __restrict__ ac = acc.data();
        for (int64_t k = 0; k < nc; ++k) ac[k] = bh ? bh[oc0 + k] : acc_t(0);
        for (int64_t b = 0; b < KW; ++b) {
          const int64_t j = q * p.stride_w - p.pad_left + b * p.dilation_w;
          if (j < 0 || j >= W) continue;  // padded column: skipped, never 0 * w
          const acc_t* __restrict__ w = whT + b * Cy + oc0;
          const acc_t* __restrict__ zz = z.data() + j * CB;
          for (int64_t k = 0; k < nc; ++k) ac[k] += w[k] * zz[k];
        }
        scalar_t* yq = y + n * os[0] + i * os[2] + q * os[3] + oc0 * os[1];
        if (os[1] == 1) {
          for (int64_t k = 0; k < nc; ++k) yq[k] = static_cast<scalar_t>(ac[k]);
        } else {
          for (int64_t k = 0; k < nc; ++k) yq[k * os[1]] = static_cast<scalar_t>(ac[k]);
        }
      }
    }
  });
}

// Backward with channels innermost: one task per (image, block of input channels), rows in order
// (grad_input rows are shared by neighbouring output rows; a block's are its own). Same slots as
// ss_backward.
template <typename scalar_t, typename acc_t, bool kOneM>
void ss_backward_cl_m(const SSGeometry& g, const scalar_t* go, const scalar_t* x, const acc_t* wvT, const acc_t* bv,
                      const acc_t* whT, scalar_t* gx, std::array<int64_t, 4> gx_strides, acc_t* part, bool need_h,
                      bool need_v) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, H = p.in_h, W = p.in_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t C = p.in_channels, Cy = p.out_channels, M = kOneM ? 1 : p.multiplier;
  const int64_t S = KH + KW + 2;
  const auto is = p.in_strides;
  const auto gs = p.out_strides;
  const bool need_gz = gx != nullptr || need_v;
  const bool need_x = need_h || need_v;
  const int64_t CBi = std::min<int64_t>(C, std::max<int64_t>(1, 32 / M)), nb = (C + CBi - 1) / CBi;
  const int64_t CBo = CBi * M;
  const int64_t item_work = CBo * Ho * (2 * KH * W + 2 * KW * Wo + 2 * W) + CBi * H * W;
  at::parallel_for(0, p.batch * nb, grain_for(item_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> gxacc(gx ? H * W * CBi : 0), z(need_h ? W * CBo : 0), gz(need_gz ? W * CBo : 0),
        gr(Wo * CBo), xr(W * CBi), dots(CBo);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t cb = item % nb, n = item / nb;
      const int64_t c0 = cb * CBi, nci = std::min(CBi, C - c0), oc0 = c0 * M, nco = nci * M;
      std::fill(gxacc.begin(), gxacc.end(), acc_t(0));
      acc_t* slots = part ? part + (n * Cy + oc0) * S : nullptr;  // slot of oc0 + k at slots + k * S
      if (slots) std::fill(slots, slots + nco * S, acc_t(0));
      for (int64_t i = 0; i < Ho; ++i) {
        for (int64_t q = 0; q < Wo; ++q) {
          const scalar_t* src = go + n * gs[0] + i * gs[2] + q * gs[3] + oc0 * gs[1];
          for (int64_t k = 0; k < nco; ++k) gr[q * CBo + k] = static_cast<acc_t>(src[k * gs[1]]);
        }
        if (slots) {
          for (int64_t k = 0; k < nco; ++k) {
            acc_t s = 0;
            for (int64_t q = 0; q < Wo; ++q) s += gr[q * CBo + k];
            slots[k * S + KH + KW + 1] += s;
          }
        }
        if (need_gz) {
          std::fill(gz.begin(), gz.end(), acc_t(0));
          for (int64_t b = 0; b < KW; ++b) {
            const TapRange& t = g.h_ranges[b];
            const acc_t* __restrict__ w = whT + b * Cy + oc0;
            for (int64_t q = t.lo; q < t.hi; ++q) {
              acc_t* __restrict__ gzz = gz.data() + (q * p.stride_w + t.off) * CBo;
              const acc_t* __restrict__ gq = gr.data() + q * CBo;
              for (int64_t k = 0; k < nco; ++k) gzz[k] += w[k] * gq[k];
            }
          }
          if (need_v) {
            for (int64_t k = 0; k < nco; ++k) {
              acc_t s = 0;
              for (int64_t j = 0; j < W; ++j) s += gz[j * CBo + k];
              slots[k * S + KH + KW] += s;
            }
          }
        }
        if (need_h) {
          for (int64_t j = 0; j < W; ++j)
            for (int64_t k = 0; k < nco; ++k) z[j * CBo + k] = bv ? bv[oc0 + k] : acc_t(0);
        }
        for (int64_t a = 0; a < KH; ++a) {
          const int64_t r = i * p.stride_h - p.pad_top + a * p.dilation_h;
          if (r < 0 || r >= H) continue;
          const acc_t* __restrict__ w = wvT + a * Cy + oc0;
          if (need_x) {
            for (int64_t j = 0; j < W; ++j) {
              const scalar_t* src = x + n * is[0] + r * is[2] + j * is[3] + c0 * is[1];
              for (int64_t kk = 0; kk < nci; ++kk) xr[j * CBi + kk] = static_cast<acc_t>(src[kk * is[1]]);
            }
            if (need_h) {
              for (int64_t j = 0; j < W; ++j) {
                acc_t* __restrict__ zz = z.data() + j * CBo;
                const acc_t* __restrict__ xx = xr.data() + j * CBi;
                if constexpr (kOneM) {
                  for (int64_t k = 0; k < nco; ++k) zz[k] += w[k] * xx[k];
                } else {
                  for (int64_t k = 0; k < nco; ++k) zz[k] += w[k] * xx[k / M];
                }
              }
            }
            if (need_v) {
              std::fill(dots.begin(), dots.end(), acc_t(0));
              for (int64_t j = 0; j < W; ++j) {
                const acc_t* __restrict__ gzz = gz.data() + j * CBo;
                const acc_t* __restrict__ xx = xr.data() + j * CBi;
                if constexpr (kOneM) {
                  for (int64_t k = 0; k < nco; ++k) dots[k] += gzz[k] * xx[k];
                } else {
                  for (int64_t k = 0; k < nco; ++k) dots[k] += gzz[k] * xx[k / M];
                }
              }
              for (int64_t k = 0; k < nco; ++k) slots[k * S + a] += dots[k];
            }
          }
          if (gx) {
            for (int64_t j = 0; j < W; ++j) {
              acc_t* __restrict__ gxa = gxacc.data() + (r * W + j) * CBi;
              const acc_t* __restrict__ gzz = gz.data() + j * CBo;
              if constexpr (kOneM) {
                for (int64_t kk = 0; kk < nci; ++kk) gxa[kk] += w[kk] * gzz[kk];
              } else {
                for (int64_t kk = 0; kk < nci; ++kk) {
                  acc_t s = 0;
                  for (int64_t m = 0; m < M; ++m) s += w[kk * M + m] * gzz[kk * M + m];
                  gxa[kk] += s;
                }
              }
            }
          }
        }
        if (need_h) {
          for (int64_t b = 0; b < KW; ++b) {
            const TapRange& t = g.h_ranges[b];
            std::fill(dots.begin(), dots.end(), acc_t(0));
            for (int64_t q = t.lo; q < t.hi; ++q) {
              const acc_t* __restrict__ zz = z.data() + (q * p.stride_w + t.off) * CBo;
              const acc_t* __restrict__ gq = gr.data() + q * CBo;
              for (int64_t k = 0; k < nco; ++k) dots[k] += gq[k] * zz[k];
            }
            for (int64_t k = 0; k < nco; ++k) slots[k * S + KH + b] += dots[k];
          }
        }
      }
      if (gx) {
        for (int64_t r = 0; r < H; ++r) {
          for (int64_t j = 0; j < W; ++j) {
            scalar_t* dst = gx + n * gx_strides[0] + r * gx_strides[2] + j * gx_strides[3] + c0 * gx_strides[1];
            const acc_t* src = gxacc.data() + (r * W + j) * CBi;
            for (int64_t kk = 0; kk < nci; ++kk) dst[kk * gx_strides[1]] = static_cast<scalar_t>(src[kk]);
          }
        }
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void ss_backward_cl(const SSGeometry& g, const scalar_t* go, const scalar_t* x, const acc_t* wvT, const acc_t* bv,
                    const acc_t* whT, scalar_t* gx, std::array<int64_t, 4> gx_strides, acc_t* part, bool need_h,
                    bool need_v) {
  if (g.p.multiplier == 1) {
    ss_backward_cl_m<scalar_t, acc_t, true>(g, go, x, wvT, bv, whT, gx, gx_strides, part, need_h, need_v);
  } else {
    ss_backward_cl_m<scalar_t, acc_t, false>(g, go, x, wvT, bv, whT, gx, gx_strides, part, need_h, need_v);
  }
}
