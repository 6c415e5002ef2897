// Run-time switches (environment variables) read by the C++ side of convext: the one place
// that reads them. One function per switch, each with one meaning and one read rule. The
// Python registry (convext/_switches.py) lists these and the Python-side switches; the table
// is docs/SWITCHES.md. `convext._C.switches()` (csrc/ops.cpp) reports what this side read.
//
//   switch                       read                       accessor
//   CONVEXT_DISABLE_FAST_PATHS   once, at first use         disabled_fast_paths(), fast_path_enabled()
//   CONVEXT_CUDA_TC              on every call              cuda_tc()
//   CONVEXT_CUDA_NONFINITE       on every call              cuda_nonfinite()
//   CONVEXT_CPU_ISA              once, at first use         cpu_isa_cap()  (cpu/cpu_isa.h applies it)
//
// "Once, at first use": a function-local static of an inline function (one copy per process,
// shared by the CPU and CUDA translation units); later changes of the environment are not seen.
// "On every call": read each time a kernel is chosen, so one process can time both settings.
// A value that is not understood is never an error here: it warns (TORCH_WARN, a Python
// UserWarning when raised inside an op; read-once switches warn once, per-call ones once per
// call site) naming the variable, and the switch keeps its default.
//
// Header only and ATen-free (csrc/cuda/launch_utils.cuh includes it in the fast-compiling
// kernel-family translation units).
#pragma once

#include <c10/util/Exception.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <string>

namespace convext {
namespace switches {

constexpr const char* kDisableFastPathsEnv = "CONVEXT_DISABLE_FAST_PATHS";
constexpr const char* kCudaTcEnv = "CONVEXT_CUDA_TC";
constexpr const char* kCudaNonfiniteEnv = "CONVEXT_CUDA_NONFINITE";
constexpr const char* kCpuIsaEnv = "CONVEXT_CPU_ISA";

// Every switch this header reads, in the order of the table above (the Python registry is
// checked against this list by tests/test_switches.py).
struct SwitchInfo {
  const char* name;
  const char* read;  // "once" (at first use) or "per call"
};
inline constexpr SwitchInfo kSwitches[] = {
    {kDisableFastPathsEnv, "once"},
    {kCudaTcEnv, "per call"},
    {kCudaNonfiniteEnv, "per call"},
    {kCpuIsaEnv, "once"},
};

// ------------------------------------------------------------------ CONVEXT_DISABLE_FAST_PATHS
// The fast kernel families (CUDA backend, and the CPU backend's channel blocks). Unset, "" or "0": all on. Otherwise a comma list of
// tokens (case and surrounding blanks ignored); each family token switches off exactly that
// family, "all" (or "1") switches off every one, which restores the first-generation kernels.
// An unknown token warns and switches off nothing.
enum FastPath : unsigned {
  kFpGather = 1u,         // "gather":       forward engine: grad-input gather for stride > 1
  kFpColstrip = 2u,       // "colstrip":     forward engine: NCHW column strips
  kFpNhwcBalance = 4u,    // "nhwcbal":      forward engine: balanced channel blocks of the channels_last kernel
  kFpNhwc2 = 8u,          // "nhwc2":        forward engine: channels_last strips with 16-byte vectors
  kFpWeightCl = 16u,      // "wgrad_cl":     grad-weight: channels_last fast kernel
  kFpWeightPlanar = 32u,  // "wgrad_planar": grad-weight: planar fast kernel
  kFpCpuBlocks = 64u,     // "cpu_cblock":   CPU backend: channel-blocked NCHW kernels (all three directions)
                          //                 and the channels_last forward's sliding window
};
constexpr unsigned kFpAll =
    kFpGather | kFpColstrip | kFpNhwcBalance | kFpNhwc2 | kFpWeightCl | kFpWeightPlanar | kFpCpuBlocks;

struct FastPathName {
  const char* token;
  unsigned bits;
};
// The family tokens, in bit order (the view lists disabled families in this order).
inline constexpr FastPathName kFastPathNames[] = {
    {"gather", kFpGather},     {"colstrip", kFpColstrip}, {"nhwcbal", kFpNhwcBalance},
    {"nhwc2", kFpNhwc2},       {"wgrad_cl", kFpWeightCl}, {"wgrad_planar", kFpWeightPlanar},
    {"cpu_cblock", kFpCpuBlocks},
};

struct FastPathParse {
  unsigned disabled = 0;
  std::string unknown;  // the tokens not understood, comma-separated ("" when all were)
};

// The parser alone (no environment, no warning): unit-tested through convext._C.
inline FastPathParse parse_disable_fast_paths(const char* value) {
  FastPathParse r;
  if (value == nullptr) return r;
  const char* p = value;
  while (true) {
    const char* end = std::strchr(p, ',');
    if (end == nullptr) end = p + std::strlen(p);
    const char* a = p;
    const char* b = end;
    while (a < b && std::isspace(static_cast<unsigned char>(*a))) ++a;
    while (b > a && std::isspace(static_cast<unsigned char>(b[-1]))) --b;
    std::string tok(a, b);
    for (auto& c : tok) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (tok.empty() || tok == "0") {
      // nothing
    } else if (tok == "all" || tok == "1") {
      r.disabled |= kFpAll;
    } else {
      bool known = false;
      for (const auto& f : kFastPathNames) {
        if (tok == f.token) {
          r.disabled |= f.bits;
          known = true;
        }
      }
      if (!known) r.unknown += (r.unknown.empty() ? "" : ",") + tok;
    }
    if (*end == '\0') break;
    p = end + 1;
  }
  return r;
}

// What a read-once switch saw at its one read.
struct ReadOnce {
  bool set = false;  // the variable was present at the read
  std::string raw;   // its value then
  const char* value() const { return set ? raw.c_str() : nullptr; }
};

inline ReadOnce read_now(const char* name) {
  ReadOnce o;
  if (const char* e = std::getenv(name)) {
    o.set = true;
    o.raw = e;
  }
  return o;
}

inline const ReadOnce& disable_fast_paths_read() {
  static const ReadOnce r = read_now(kDisableFastPathsEnv);
  return r;
}

// The families switched off, read once per process (at the first launch that asks).
inline unsigned disabled_fast_paths() {
  static const unsigned disabled = [] {
    const ReadOnce& r = disable_fast_paths_read();
    const FastPathParse f = parse_disable_fast_paths(r.value());
    if (!f.unknown.empty()) {
      TORCH_WARN("convext: ", kDisableFastPathsEnv, "=", r.raw, ": unknown token(s) '", f.unknown,
                 "' ignored (known: gather, colstrip, nhwcbal, nhwc2, wgrad_cl, wgrad_planar, cpu_cblock, all)");
    }
    return f.disabled;
  }();
  return disabled;
}

inline bool fast_path_enabled(FastPath which) {
  return (disabled_fast_paths() & which) == 0;
}

// The current value of a per-call switch (nullptr when unset), for the view in csrc/ops.cpp.
inline const char* current_value(const char* name) {
  return std::getenv(name);
}

// ------------------------------------------------------------------ on/off switches read per call
// "1": on; unset, "" or "0": off; anything else: off, with a warning (once per call site).
enum class Flag { kOff, kOn, kInvalid };

inline Flag parse_flag(const char* v) {
  if (v == nullptr || v[0] == '\0' || std::strcmp(v, "0") == 0) return Flag::kOff;
  if (std::strcmp(v, "1") == 0) return Flag::kOn;
  return Flag::kInvalid;
}

// CONVEXT_CUDA_TC=1: the opt-in tensor-core (WMMA) path of the CUDA backend (stride-1 fp16/bf16,
// kH*kW >= 81). Per call: bench/depthwise_conv2d.py's "convext:cuda-tc" provider sets it around
// its calls.
inline bool cuda_tc() {
  const char* e = current_value(kCudaTcEnv);
  const Flag f = parse_flag(e);
  if (f == Flag::kInvalid) {
    TORCH_WARN_ONCE("convext: ", kCudaTcEnv, "=", e, " is not understood (use 1 or 0); the tensor-core path stays off");
  }
  return f == Flag::kOn;
}

// CONVEXT_CUDA_NONFINITE=1: the CUDA backend's non-finite fix-up passes after the fast forward
// families and the grad-weight families (NaN/inf follow F.conv2d's pattern). Opt-in until a GPU
// has run them; per call, so a test can switch it. The tensor-core forward always runs its fix-up.
inline bool cuda_nonfinite() {
  const char* e = current_value(kCudaNonfiniteEnv);
  const Flag f = parse_flag(e);
  if (f == Flag::kInvalid) {
    TORCH_WARN_ONCE("convext: ", kCudaNonfiniteEnv, "=", e, " is not understood (use 1 or 0); the fix-up passes stay off");
  }
  return f == Flag::kOn;
}

// ------------------------------------------------------------------ CONVEXT_CPU_ISA
// Caps the CPU kernel copy (cpu/cpu_isa.h takes the minimum with what the CPU supports):
// unset or "": no cap; "avx512": no cap (the widest copy, AVX-512, where supported);
// "avx2": AVX2+FMA at most; "default": the baseline copy. Levels: 2 AVX-512, 1 AVX2, 0 baseline.
// Anything else warns (once) and caps nothing.
constexpr int kCpuIsaNoCap = 2;

inline int parse_cpu_isa(const char* v, bool* ok = nullptr) {
  if (ok) *ok = true;
  if (v == nullptr || v[0] == '\0' || std::strcmp(v, "avx512") == 0) return kCpuIsaNoCap;
  if (std::strcmp(v, "avx2") == 0) return 1;
  if (std::strcmp(v, "default") == 0) return 0;
  if (ok) *ok = false;
  return kCpuIsaNoCap;
}

inline const ReadOnce& cpu_isa_read() {
  static const ReadOnce r = read_now(kCpuIsaEnv);
  return r;
}

// Read once per process (at the first CPU kernel call).
inline int cpu_isa_cap() {
  static const int cap = [] {
    const ReadOnce& r = cpu_isa_read();
    bool ok = true;
    const int c = parse_cpu_isa(r.value(), &ok);
    if (!ok) {
      TORCH_WARN("convext: ", kCpuIsaEnv, "=", r.raw,
                 " is not understood (use default, avx2 or avx512); the widest kernel copy the CPU supports is used");
    }
    return c;
  }();
  return cap;
}

}  // namespace switches
}  // namespace convext
