// Grad-weight (and grad-bias) kernels of the CPU depthwise conv2d:
//   backward_weight_planes  any layout: one task per (out channel, batch chunk), border-free
//                           vector dot products of padded rows, VL lanes per tap;
//   backward_weight_cl      channels innermost in both tensors: one task per chunk of (n, oh)
//                           rows, per tap register accumulation over the row.
// Partials are reduced in a fixed order: deterministic, independent of the thread count.
//
// Per-ISA header (no include guard), part of depthwise_conv2d_kernel.h: uses kernel_vec.h,
// kernel_helpers.h and Geometry (csrc/cpu/depthwise_conv2d.cpp).

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
