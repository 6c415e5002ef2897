// Kernel bodies of the CPU depthwise conv2d (forward, grad-input, grad-weight).
//
// NOT an ordinary header: csrc/cpu/depthwise_conv2d.cpp includes it twice, inside
// `namespace convext::cpu::<isa>`, once for the baseline ISA and once under
// `#pragma GCC target("avx2,fma")`, and picks one at run time. It therefore includes
// nothing itself (every header is included by the .cpp before the first copy) and
// relies on the helpers defined there (TapRange, tap_range, Geometry).
//
// Layout strategy (all tensors are read in place through element strides):
//   * output / grad_input in NCHW: parallel over (n, c) planes; each output row is
//     built as a sum of axpy's, one per tap, over a contiguous run of W (the inner
//     loop vectorises when the W-stride x conv stride is 1).
//   * output / grad_input in channels_last: parallel over (n, h) rows; per pixel, an
//     accumulator over channels, one vector FMA per tap (channels innermost).
//   * grad_weight: NCHW-ish inputs -> per (channel, batch chunk) dot products of
//     rows; channels_last inputs -> per (row chunk) outer accumulation over channels.
//     Partials are reduced in a fixed order (deterministic, independent of threads).
// Rows that are not unit-stride or not in the accumulation type are first converted
// into a small contiguous acc_t buffer, so every inner loop is a unit-stride loop.

// ------------------------------------------------------------------ inner loops

// r[o] += w * x[o * s + off] for o in [lo, hi)
template <typename acc_t>
inline void axpy_row(acc_t* __restrict__ r, const acc_t* __restrict__ x, acc_t w, const TapRange& t,
                     int64_t s) {
  if (s == 1) {
    const acc_t* __restrict__ xs = x + (t.lo + t.off);
    acc_t* __restrict__ rs = r + t.lo;
    const int64_t n = t.hi - t.lo;
    for (int64_t o = 0; o < n; ++o) rs[o] += w * xs[o];
  } else {
    for (int64_t o = t.lo; o < t.hi; ++o) r[o] += w * x[o * s + t.off];
  }
}

// r[o * s + off] += w * g[o] for o in [lo, hi)   (transpose of axpy_row)
template <typename acc_t>
inline void axpy_row_scatter(acc_t* __restrict__ r, const acc_t* __restrict__ g, acc_t w,
                             const TapRange& t, int64_t s) {
  if (s == 1) {
    acc_t* __restrict__ rs = r + (t.lo + t.off);
    const acc_t* __restrict__ gs = g + t.lo;
    const int64_t n = t.hi - t.lo;
    for (int64_t o = 0; o < n; ++o) rs[o] += w * gs[o];
  } else {
    for (int64_t o = t.lo; o < t.hi; ++o) r[o * s + t.off] += w * g[o];
  }
}

// sum_o g[o] * x[o * s + off] for o in [lo, hi)
template <typename acc_t>
inline acc_t dot_row(const acc_t* __restrict__ g, const acc_t* __restrict__ x, const TapRange& t,
                     int64_t s) {
  acc_t sum = 0;
  if (s == 1) {
    const acc_t* __restrict__ xs = x + (t.lo + t.off);
    const acc_t* __restrict__ gs = g + t.lo;
    const int64_t n = t.hi - t.lo;
#pragma omp simd reduction(+ : sum)
    for (int64_t o = 0; o < n; ++o) sum += gs[o] * xs[o];
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t o = t.lo; o < t.hi; ++o) sum += g[o] * x[o * s + t.off];
  }
  return sum;
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

template <typename T>
inline int64_t grain_for(int64_t work_per_item) {
  constexpr int64_t kTarget = 16384;  // ~ elementary ops per task before splitting
  return std::max<int64_t>(1, kTarget / std::max<int64_t>(1, work_per_item));
}

// ------------------------------------------------------------------ forward

// out (N, Cout, Ho, Wo) contiguous NCHW. w: (Cout, KH*KW) acc_t. bias: Cout acc_t or null.
template <typename scalar_t, typename acc_t>
void forward_nchw(const Geometry& g, const scalar_t* x, const acc_t* w, const acc_t* bias,
                  scalar_t* y) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, M = p.multiplier, Cout = p.out_channels;
  const auto is = p.in_strides;
  const auto& wr = g.w_ranges;
  const int64_t plane_work = Ho * Wo * KH * KW;
  at::parallel_for(0, p.batch * Cout, grain_for<acc_t>(plane_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(Wo), xbuf(W);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / Cout, oc = plane % Cout, c = oc / M;
      const scalar_t* xp = x + n * is[0] + c * is[1];
      const acc_t* wk = w + oc * KH * KW;
      const acc_t b0 = bias ? bias[oc] : acc_t(0);
      scalar_t* yp = y + plane * Ho * Wo;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        acc_t* r = row.data();
        for (int64_t o = 0; o < Wo; ++o) r[o] = b0;
        for (int64_t kh = 0; kh < KH; ++kh) {
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih < 0 || ih >= H) continue;
          const acc_t* xa = row_as_acc<scalar_t, acc_t>(xp + ih * is[2], W, is[3], xbuf.data());
          for (int64_t kw = 0; kw < KW; ++kw) {
            if (wr[kw].lo >= wr[kw].hi) continue;
            axpy_row(r, xa, wk[kh * KW + kw], wr[kw], p.stride_w);
          }
        }
        scalar_t* yr = yp + oh * Wo;
        for (int64_t o = 0; o < Wo; ++o) yr[o] = static_cast<scalar_t>(r[o]);
      }
    }
  });
}

// out (N, Cout, Ho, Wo) channels_last. wT: (KH*KW, Cout) acc_t.
template <typename scalar_t, typename acc_t>
void forward_cl(const Geometry& g, const scalar_t* x, const acc_t* wT, const acc_t* bias,
                scalar_t* y) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, M = p.multiplier, C = p.in_channels, Cout = p.out_channels;
  const auto is = p.in_strides;
  const auto os = p.out_strides;
  const bool direct = std::is_same_v<scalar_t, acc_t> && is[1] == 1;
  const int64_t row_work = Wo * KH * KW * Cout;
  at::parallel_for(0, p.batch * Ho, grain_for<acc_t>(row_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(Cout), xbuf(C);
    for (int64_t rowi = begin; rowi < end; ++rowi) {
      const int64_t n = rowi / Ho, oh = rowi % Ho;
      for (int64_t ow = 0; ow < Wo; ++ow) {
        acc_t* __restrict__ a = acc.data();
        if (bias) {
          for (int64_t oc = 0; oc < Cout; ++oc) a[oc] = bias[oc];
        } else {
          for (int64_t oc = 0; oc < Cout; ++oc) a[oc] = acc_t(0);
        }
        for (int64_t kh = 0; kh < KH; ++kh) {
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih < 0 || ih >= H) continue;
          for (int64_t kw = 0; kw < KW; ++kw) {
            const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
            if (iw < 0 || iw >= W) continue;
            const scalar_t* xp = x + n * is[0] + ih * is[2] + iw * is[3];
            const acc_t* __restrict__ wt = wT + (kh * KW + kw) * Cout;
            const acc_t* __restrict__ xa;
            if (direct) {
              xa = reinterpret_cast<const acc_t*>(xp);
            } else {
              xa = row_as_acc<scalar_t, acc_t>(xp, C, is[1], xbuf.data());
            }
            if (M == 1) {
              for (int64_t c = 0; c < C; ++c) a[c] += wt[c] * xa[c];
            } else {
              for (int64_t c = 0; c < C; ++c) {
                const acc_t xv = xa[c];
                for (int64_t m = 0; m < M; ++m) a[c * M + m] += wt[c * M + m] * xv;
              }
            }
          }
        }
        scalar_t* yp = y + n * os[0] + oh * os[2] + ow * os[3];
        for (int64_t oc = 0; oc < Cout; ++oc) yp[oc] = static_cast<scalar_t>(a[oc]);
      }
    }
  });
}

// ------------------------------------------------------------------ grad input

// grad_input (N, C, H, W) contiguous NCHW; go read through p.out_strides.
template <typename scalar_t, typename acc_t>
void backward_input_nchw(const Geometry& g, const scalar_t* go, const acc_t* w, scalar_t* gi) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, M = p.multiplier, C = p.in_channels;
  const auto gs = p.out_strides;
  const auto& wr = g.w_ranges;
  const int64_t plane_work = M * Ho * Wo * KH * KW + H * W;
  at::parallel_for(0, p.batch * C, grain_for<acc_t>(plane_work), [&](int64_t begin, int64_t end) {
    constexpr bool in_place = std::is_same_v<scalar_t, acc_t>;
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
        const scalar_t* gp = go + n * gs[0] + oc * gs[1];
        const acc_t* wk = w + oc * KH * KW;
        for (int64_t oh = 0; oh < Ho; ++oh) {
          const acc_t* ga = row_as_acc<scalar_t, acc_t>(gp + oh * gs[2], Wo, gs[3], gbuf.data());
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
            if (ih < 0 || ih >= H) continue;
            acc_t* Ar = A + ih * W;
            for (int64_t kw = 0; kw < KW; ++kw) {
              if (wr[kw].lo >= wr[kw].hi) continue;
              axpy_row_scatter(Ar, ga, wk[kh * KW + kw], wr[kw], p.stride_w);
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

// grad_input (N, C, H, W) channels_last (strides p.in_strides); gather formulation.
template <typename scalar_t, typename acc_t>
void backward_input_cl(const Geometry& g, const scalar_t* go, const acc_t* wT, scalar_t* gi) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, M = p.multiplier, C = p.in_channels, Cout = p.out_channels;
  const auto gs = p.out_strides;
  const auto is = p.in_strides;
  const bool direct = std::is_same_v<scalar_t, acc_t> && gs[1] == 1;
  const int64_t row_work = W * KH * KW * Cout;
  at::parallel_for(0, p.batch * H, grain_for<acc_t>(row_work), [&](int64_t begin, int64_t end) {
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
            const scalar_t* gp = go + n * gs[0] + oh * gs[2] + ow * gs[3];
            const acc_t* __restrict__ wt = wT + (kh * KW + kw) * Cout;
            const acc_t* __restrict__ ga;
            if (direct) {
              ga = reinterpret_cast<const acc_t*>(gp);
            } else {
              ga = row_as_acc<scalar_t, acc_t>(gp, Cout, gs[1], gbuf.data());
            }
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
        for (int64_t c = 0; c < C; ++c) out[c] = static_cast<scalar_t>(a[c]);
      }
    }
  });
}

// ------------------------------------------------------------------ grad weight

// Rows of x / go read through strides (any layout); one task per (out channel, batch chunk).
// gw: (Cout, KH*KW) acc_t, gb: Cout acc_t or null. Partials reduced in chunk order.
template <typename scalar_t, typename acc_t>
void backward_weight_planes(const Geometry& g, const scalar_t* go, const scalar_t* x, acc_t* gw,
                            acc_t* gb) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, M = p.multiplier, Cout = p.out_channels, N = p.batch;
  const auto gs = p.out_strides;
  const auto is = p.in_strides;
  const auto& wr = g.w_ranges;
  const int64_t taps = KH * KW;
  const int64_t nchunks = Cout >= 16 ? 1 : std::max<int64_t>(1, std::min<int64_t>(N, 16));
  std::vector<acc_t> partial(Cout * nchunks * (taps + 1), acc_t(0));
  const int64_t item_work = ((N + nchunks - 1) / nchunks) * Ho * Wo * taps;
  at::parallel_for(0, Cout * nchunks, grain_for<acc_t>(item_work), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> gbuf(Wo), xbuf(W);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t oc = item / nchunks, ch = item % nchunks, c = oc / M;
      const int64_t n0 = ch * N / nchunks, n1 = (ch + 1) * N / nchunks;
      acc_t* part = partial.data() + item * (taps + 1);
      acc_t bsum = 0;
      for (int64_t n = n0; n < n1; ++n) {
        const scalar_t* gp = go + n * gs[0] + oc * gs[1];
        const scalar_t* xp = x + n * is[0] + c * is[1];
        for (int64_t oh = 0; oh < Ho; ++oh) {
          const acc_t* ga = row_as_acc<scalar_t, acc_t>(gp + oh * gs[2], Wo, gs[3], gbuf.data());
          acc_t rs = 0;
#pragma omp simd reduction(+ : rs)
          for (int64_t o = 0; o < Wo; ++o) rs += ga[o];
          bsum += rs;
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
            if (ih < 0 || ih >= H) continue;
            const acc_t* xa = row_as_acc<scalar_t, acc_t>(xp + ih * is[2], W, is[3], xbuf.data());
            for (int64_t kw = 0; kw < KW; ++kw) {
              if (wr[kw].lo >= wr[kw].hi) continue;
              part[kh * KW + kw] += dot_row(ga, xa, wr[kw], p.stride_w);
            }
          }
        }
      }
      part[taps] = bsum;
    }
  });
  for (int64_t oc = 0; oc < Cout; ++oc) {
    for (int64_t t = 0; t <= taps; ++t) {
      acc_t s = 0;
      for (int64_t ch = 0; ch < nchunks; ++ch) s += partial[(oc * nchunks + ch) * (taps + 1) + t];
      if (t < taps) {
        gw[oc * taps + t] = s;
      } else if (gb) {
        gb[oc] = s;
      }
    }
  }
}

// Channels-innermost inputs: one task per chunk of (n, oh) rows, accumulating
// (KH*KW, Cout) + Cout partials, reduced in chunk order.
template <typename scalar_t, typename acc_t>
void backward_weight_cl(const Geometry& g, const scalar_t* go, const scalar_t* x, acc_t* gw,
                        acc_t* gb) {
  const auto& p = g.p;
  const int64_t KH = p.kernel_h, KW = p.kernel_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t H = p.in_h, W = p.in_w, M = p.multiplier, C = p.in_channels, Cout = p.out_channels;
  const auto gs = p.out_strides;
  const auto is = p.in_strides;
  const int64_t taps = KH * KW;
  const int64_t rows = p.batch * Ho;
  const int64_t nchunks = std::max<int64_t>(1, std::min<int64_t>(rows, 32));
  const int64_t stride_part = (taps + 1) * Cout;
  std::vector<acc_t> partial(nchunks * stride_part, acc_t(0));
  const bool gdirect = std::is_same_v<scalar_t, acc_t> && gs[1] == 1;
  const bool xdirect = std::is_same_v<scalar_t, acc_t> && is[1] == 1;
  at::parallel_for(0, nchunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> gbuf(Cout), xbuf(C);
    for (int64_t ch = begin; ch < end; ++ch) {
      acc_t* part = partial.data() + ch * stride_part;
      acc_t* __restrict__ bpart = part + taps * Cout;
      const int64_t r0 = ch * rows / nchunks, r1 = (ch + 1) * rows / nchunks;
      for (int64_t rowi = r0; rowi < r1; ++rowi) {
        const int64_t n = rowi / Ho, oh = rowi % Ho;
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const scalar_t* gp = go + n * gs[0] + oh * gs[2] + ow * gs[3];
          const acc_t* __restrict__ ga = gdirect ? reinterpret_cast<const acc_t*>(gp)
                                                 : row_as_acc<scalar_t, acc_t>(gp, Cout, gs[1], gbuf.data());
          for (int64_t oc = 0; oc < Cout; ++oc) bpart[oc] += ga[oc];
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
            if (ih < 0 || ih >= H) continue;
            for (int64_t kw = 0; kw < KW; ++kw) {
              const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
              if (iw < 0 || iw >= W) continue;
              const scalar_t* xp = x + n * is[0] + ih * is[2] + iw * is[3];
              const acc_t* __restrict__ xa = xdirect ? reinterpret_cast<const acc_t*>(xp)
                                                     : row_as_acc<scalar_t, acc_t>(xp, C, is[1], xbuf.data());
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
      acc_t s = 0;
      for (int64_t ch = 0; ch < nchunks; ++ch) s += partial[ch * stride_part + t * Cout + oc];
      if (t < taps) {
        gw[oc * taps + t] = s;
      } else if (gb) {
        gb[oc] = s;
      }
    }
  }
}
