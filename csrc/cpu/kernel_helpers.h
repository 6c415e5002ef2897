// Scalar row helpers shared by the CPU kernel bodies (depthwise conv2d and spatial separable
// conv2d): converted rows, padded rows, the scatter axpy along one tap, the parallel grain.
//
// Per-ISA header (no include guard): included once per ISA copy, inside that copy's namespace
// and `#pragma GCC target` region, so each copy is compiled (and vectorised) for its ISA. Uses
// TapRange (cpu/tap_range.h) and the standard headers the including .cpp provides.

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

// Parallel grain: items per at::parallel_for task for items of `work_per_item` multiply-adds.
inline int64_t grain_for(int64_t work_per_item) {
  constexpr int64_t kTarget = 16384;  // ~ multiply-adds per task before splitting
  return std::max<int64_t>(1, kTarget / std::max<int64_t>(1, work_per_item));
}
