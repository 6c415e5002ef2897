// Kernel bodies of the CPU spatial separable conv2d (forward and backward).
//
// NOT an ordinary header: csrc/cpu/spatial_separable_conv2d.cpp includes it once per ISA,
// inside `namespace convext::cpu::ss_<isa>` (baseline, and AVX2+FMA under
// `#pragma GCC target`), and picks one copy at run time. It includes nothing itself and uses
// SSGeometry / TapRange from that file.
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

// A row of `n` elements at `src` (element stride `stride`) as acc_t: `src` itself when it
// already is a unit-stride acc_t row, else a converted copy in `buf`.
template <typename scalar_t, typename acc_t>
inline const acc_t* ss_row(const scalar_t* src, int64_t n, int64_t stride, acc_t* buf) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (stride == 1) return src;
  }
  for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<acc_t>(src[i * stride]);
  return buf;
}

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

// gz[q * s + t.off] += w * g[q] for q in [t.lo, t.hi)
template <typename acc_t>
inline void ss_htap_t(acc_t* __restrict__ gz, const acc_t* __restrict__ g, acc_t w, const TapRange& t,
                      int64_t s) {
  if (s == 1) {
    acc_t* zz = gz + t.off;
    for (int64_t q = t.lo; q < t.hi; ++q) zz[q] += w * g[q];
  } else {
    for (int64_t q = t.lo; q < t.hi; ++q) gz[q * s + t.off] += w * g[q];
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

inline int64_t ss_grain(int64_t work_per_item) {
  constexpr int64_t kTarget = 16384;
  return std::max<int64_t>(1, kTarget / std::max<int64_t>(1, work_per_item));
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
    const acc_t* xr = ss_row<scalar_t, acc_t>(xp + r * p.in_strides[2], W, p.in_strides[3], xbuf);
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
  at::parallel_for(0, p.batch * Cy, ss_grain(plane_work), [&](int64_t begin, int64_t end) {
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
  at::parallel_for(0, p.batch * C, ss_grain(plane_work), [&](int64_t begin, int64_t end) {
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
          const acc_t* gr = ss_row<scalar_t, acc_t>(gp + i * gs[2], Wo, gs[3], gbuf.data());
          if (slot) slot[KH + KW + 1] += ss_sum(gr, Wo);
          if (need_gz) {
            std::fill(gz.begin(), gz.end(), acc_t(0));
            for (int64_t b = 0; b < KW; ++b) ss_htap_t(gz.data(), gr, who[b], g.h_ranges[b], p.stride_w);
            if (need_v) slot[KH + KW] += ss_sum(gz.data(), W);
          }
          if (need_h) std::fill(z.begin(), z.end(), b0v);
          for (int64_t a = 0; a < KH; ++a) {
            const int64_t r = i * p.stride_h - p.pad_top + a * p.dilation_h;
            if (r < 0 || r >= H) continue;
            if (need_x) {
              const acc_t* xr = ss_row<scalar_t, acc_t>(xp + r * is[2], W, is[3], xbuf.data());
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
