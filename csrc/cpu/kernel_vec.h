// Vector types and loads/stores of one ISA copy of the CPU kernels: GCC vector extensions
// of CONVEXT_VEC_BYTES bytes (16 baseline, 32 AVX2, 64 AVX-512).
//
// Per-ISA header (no include guard): included once per ISA copy, inside that copy's namespace
// and `#pragma GCC target` region, with CONVEXT_VEC_BYTES defined (see depthwise_conv2d_kernel.h).
// Includes nothing; the including .cpp provides <cstring>, <cstdint> and <utility>.

#ifndef CONVEXT_VEC_BYTES
#error "kernel_vec.h: define CONVEXT_VEC_BYTES before including"
#endif

typedef float vfloat_t __attribute__((vector_size(CONVEXT_VEC_BYTES)));
typedef double vdouble_t __attribute__((vector_size(CONVEXT_VEC_BYTES)));
// lane indices of the same width (the masks of transpose_tile's shuffles)
typedef int32_t vint32_t __attribute__((vector_size(CONVEXT_VEC_BYTES)));
typedef int64_t vint64_t __attribute__((vector_size(CONVEXT_VEC_BYTES)));

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using type = vfloat_t;
  using index = vint32_t;
  static constexpr int64_t size = CONVEXT_VEC_BYTES / sizeof(float);
};
template <>
struct Vec<double> {
  using type = vdouble_t;
  using index = vint64_t;
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

// In-register transpose of a VL x VL tile (v[r] holds row r): afterwards v[c] holds column c.
// One stage per bit of the lane index swaps the off-diagonal halves of every 2h x 2h block with
// two-source shuffles (vpermt2ps / vpermt2pd on AVX-512); the stages commute.
constexpr int transpose_lo(int L, int h, int c) { return (c & h) ? L + c - h : c; }
constexpr int transpose_hi(int L, int h, int c) { return (c & h) ? L + c : c + h; }

template <typename T, int h, size_t... c>
inline void transpose_stage(typename Vec<T>::type* v, std::index_sequence<c...>) {
  using I = typename Vec<T>::index;
  constexpr int L = static_cast<int>(Vec<T>::size);
  const I lo = {transpose_lo(L, h, static_cast<int>(c))...};
  const I hi = {transpose_hi(L, h, static_cast<int>(c))...};
  for (int r = 0; r < L; ++r) {
    if (r & h) continue;
    const auto a = v[r], b = v[r + h];
    v[r] = __builtin_shuffle(a, b, lo);
    v[r + h] = __builtin_shuffle(a, b, hi);
  }
}

template <typename T>
inline void transpose_tile(typename Vec<T>::type* v) {
  constexpr int L = static_cast<int>(Vec<T>::size);
  using Idx = std::make_index_sequence<L>;
  if constexpr (L >= 16) transpose_stage<T, 8>(v, Idx{});
  if constexpr (L >= 8) transpose_stage<T, 4>(v, Idx{});
  if constexpr (L >= 4) transpose_stage<T, 2>(v, Idx{});
  if constexpr (L >= 2) transpose_stage<T, 1>(v, Idx{});
}
