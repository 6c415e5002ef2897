// Vector types and loads/stores of one ISA copy of the CPU kernels: GCC vector extensions
// of CONVEXT_VEC_BYTES bytes (16 baseline, 32 AVX2, 64 AVX-512).
//
// Per-ISA header (no include guard): included once per ISA copy, inside that copy's namespace
// and `#pragma GCC target` region, with CONVEXT_VEC_BYTES defined (see depthwise_conv2d_kernel.h).
// Includes nothing; the including .cpp provides <cstring> and <cstdint>.

#ifndef CONVEXT_VEC_BYTES
#error "kernel_vec.h: define CONVEXT_VEC_BYTES before including"
#endif

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
