// TapRange: the outputs one kernel tap reaches along a dimension, shared by the CPU depthwise and
// spatial separable kernels (computed once per call, outside the per-ISA kernel copies).
#pragma once

#include <algorithm>
#include <cstdint>

namespace convext {
namespace cpu {

// Output indices o in [lo, hi) whose input index o * stride + off lies in [0, in).
struct TapRange {
  int64_t lo = 0, hi = 0, off = 0;
};

inline TapRange tap_range(int64_t out, int64_t in, int64_t stride, int64_t off) {
  TapRange t;
  t.off = off;
  t.lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  const int64_t last = in - 1 - off;  // o * stride <= last
  t.hi = last < 0 ? 0 : std::min(out, last / stride + 1);
  if (t.lo > t.hi) t.lo = t.hi;
  return t;
}

}  // namespace cpu
}  // namespace convext
