// Which ISA copy of the CPU kernels runs (depthwise conv2d: baseline / AVX2+FMA / AVX-512;
// spatial separable: baseline / AVX2+FMA): what the CPU supports, capped by CONVEXT_CPU_ISA
// (csrc/switches.h). Both are read once per process; one definition (cpu_isa.cpp) serves every
// CPU translation unit and convext._C.switches().
#pragma once

namespace convext {
namespace cpu {

// Levels: 2 = AVX-512 (F, VL, BW, DQ) with AVX2+FMA, 1 = AVX2+FMA, 0 = baseline.
int cpu_isa_hardware_level();
// min(cpu_isa_hardware_level(), the CONVEXT_CPU_ISA cap).
int cpu_isa_level();
// "avx512", "avx2" or "default" (the names CONVEXT_CPU_ISA takes).
const char* cpu_isa_name(int level);

}  // namespace cpu
}  // namespace convext
