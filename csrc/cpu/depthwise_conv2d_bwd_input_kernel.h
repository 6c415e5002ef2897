// Grad-input kernels of the CPU depthwise conv2d at stride > 1 (stride 1 runs the forward
// kernels on grad_output with the flipped weight): backward_input_nchw (scatter, one task per
// input plane) and backward_input_cl (gather, one task per (n, ih) row).
//
// Per-ISA header (no include guard), part of depthwise_conv2d_kernel.h: uses kernel_helpers.h
// and Geometry (csrc/cpu/depthwise_conv2d.cpp).

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
