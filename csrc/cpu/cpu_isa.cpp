// See cpu_isa.h.
#include "cpu/cpu_isa.h"

#include <algorithm>

#include "switches.h"

namespace convext {
namespace cpu {

int cpu_isa_hardware_level() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  static const int level = [] {
    __builtin_cpu_init();
    int l = 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) l = 1;
    if (l == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
      l = 2;
    }
    return l;
  }();
  return level;
#else
  return 0;
#endif
}

int cpu_isa_level() {
  static const int level = std::min(cpu_isa_hardware_level(), switches::cpu_isa_cap());
  return level;
}

const char* cpu_isa_name(int level) {
  return level >= 2 ? "avx512" : level == 1 ? "avx2" : "default";
}

}  // namespace cpu
}  // namespace convext
