// Compile-time configuration tables for the CUDA launchers.
//
// A kernel family that is compiled for a few (kernel size, stride, vector width, ...) choices lists
// them once, in the order they are tried, as a ConfigList of traits types; each traits type says
// which shapes it serves (a static `matches`) and carries the template arguments of its kernel:
//
//   template <int K, int S, int RH, int CW> struct TileConfig { ... static bool matches(const CorrArgs&); };
//   using TileConfigs = ConfigList<TileConfig<3, 1, 4, 4>, TileConfig<0, 1, 4, 8>, ...>;
//
//   return first_of(TileConfigs{}, [&](auto cfg) {
//     using C = decltype(cfg);
//     return C::matches(a) && launch_tile<T, C::K, C::S, C::RH, C::CW>(a, stream);
//   });
//
// first_of calls the lambda on each entry in order and stops at the first that returns true (a
// fold over ||): the if-ladder it replaces, as a table, and each entry is one instantiation.
// Adding a specialisation is adding a line to the table (and, if its kernel is new, nothing else:
// the family's instantiation file instantiates the launcher, which instantiates every entry).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace convext {
namespace cuda {

template <typename... Cfgs>
struct ConfigList {};

template <typename... Cfgs, typename F>
bool first_of(ConfigList<Cfgs...>, F&& try_one) {
  return (try_one(Cfgs{}) || ...);
}

// Calls f(Cfg{}) for every entry, in order.
template <typename... Cfgs, typename F>
void for_each_config(ConfigList<Cfgs...>, F&& f) {
  (f(Cfgs{}), ...);
}

// Calls f(Cfg{}) for entry `index` of the list (no call when out of range).
template <typename... Cfgs, typename F>
void visit_at(ConfigList<Cfgs...>, int index, F&& f) {
  int i = 0;
  ((i++ == index ? (f(Cfgs{}), true) : false) || ...);
}

}  // namespace cuda
}  // namespace convext

// Explicit instantiation of a launcher template `FN<T>` declared as `RET FN(ARGS)`, for the dtypes
// the family runs (one line per dtype in the family's instantiation file would do the same).
#define CONVEXT_INSTANTIATE_FLOAT_HALF_BF16(RET, FN, ...) \
  template RET FN<float>(__VA_ARGS__);                      \
  template RET FN<c10::Half>(__VA_ARGS__);                  \
  template RET FN<c10::BFloat16>(__VA_ARGS__)

#define CONVEXT_INSTANTIATE_FLOATING(RET, FN, ...)           \
  CONVEXT_INSTANTIATE_FLOAT_HALF_BF16(RET, FN, __VA_ARGS__); \
  template RET FN<double>(__VA_ARGS__)
