"""Every run-time switch (environment variable) of convext, in one registry.

Each switch has one meaning and one read rule:
  "import"    read once, when the module that uses it is imported (later changes are not seen);
  "once"      read once per process, at its first use (C++: a function-local static);
  "per call"  read every time it is needed (so a process can switch it, e.g. to time both paths).
`layer` says who reads it: "python" (through the accessors below), "c++" (csrc/switches.h; what
it read is reported by `cpp_view()`), "triton" (convext/triton/ reads these itself for now: they
are listed here, not yet read through this module), "tests" (the test suite).

A Python switch with a value that is not understood makes the first `backend="auto"` call raise
ValueError naming the variable (import never fails); a C++ switch with such a value warns (a
UserWarning naming the variable, raised where the C++ side reads it) and keeps its default.
The table of docs/SWITCHES.md is this registry; tests/test_switches.py checks that they and
csrc/switches.h agree.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Switch:
    name: str
    type: str  # "bool", "choice", "list", "path"
    values: str  # the values it takes, as documented
    default: str
    read: str  # "import", "once", "per call"
    layer: str  # "python", "c++", "triton", "tests"
    meaning: str


_ALL = (
    Switch("CONVEXT_BACKEND", "choice", "cuda, triton, cpu, torch; auto or unset: no forcing", "unset", "import",
           "python",
           "every backend=\"auto\" choice of the ops becomes that backend (an explicit backend= still wins); "
           "a backend that cannot run the call is a RuntimeError naming the variable"),
    Switch("CONVEXT_AUTOTUNE", "bool", "1/true/yes/on, 0/false/no/off", "1", "import", "python",
           "1: auto times the candidate backends on the first call of each shape and keeps the fastest; "
           "0: the static rule (the test suite's setting)"),
    Switch("CONVEXT_CACHE_DIR", "path", "a folder", "$XDG_CACHE_HOME/convext, else ~/.cache/convext", "per call",
           "python", "where auto keeps its measured choices (autotune.json); read each time the cache file is "
           "located"),
    Switch("CONVEXT_AUTO_UNVERIFIED", "bool", "1/true/yes/on, 0/false/no/off", "0", "import", "python",
           "auto may also choose the GPU paths no GPU run has verified yet (the Triton kernels on CUDA)"),
    Switch("CONVEXT_DISABLE_FAST_PATHS", "list",
           "comma list of gather, colstrip, nhwcbal, nhwc2, wgrad_cl, wgrad_planar, cpu_cblock; all (or 1): every one; "
           "0 or unset: none", "unset (all fast paths on)", "once", "c++",
           "CUDA backend: each token switches off exactly that fast kernel family (forward: gather, colstrip, "
           "nhwcbal, nhwc2; grad-weight: wgrad_cl, wgrad_planar); CPU backend: cpu_cblock, the channel-blocked NCHW "
           "kernels and the channels_last sliding-window forward (the plane / per-pixel kernels instead); all "
           "restores the first-generation kernels"),
    Switch("CONVEXT_CUDA_TC", "bool", "1, 0", "0", "per call", "c++",
           "CUDA backend: the opt-in tensor-core (WMMA) path for stride-1 fp16/bf16 kernels with kH*kW >= 81 "
           "(forward, grad-input, grad-weight)"),
    Switch("CONVEXT_CUDA_NONFINITE", "bool", "1, 0", "0", "per call", "c++",
           "CUDA backend: the fix-up passes that make NaN/inf follow F.conv2d's pattern after the fast forward "
           "and grad-weight kernels (opt-in until a GPU has run them)"),
    Switch("CONVEXT_CPU_ISA", "choice", "default, avx2, avx512; unset: no cap", "unset (widest the CPU supports)",
           "once", "c++",
           "caps the CPU kernel copy: default = baseline, avx2 = AVX2+FMA at most, avx512 = no cap (the spatial "
           "separable kernels have no AVX-512 copy: avx2 there)"),
    Switch("TRITON_INTERPRET", "bool", "1, 0", "0", "import", "python",
           "Triton's own switch: the triton backend runs on CPU tensors through Triton's interpreter (set before "
           "import; convext/triton reads it too)"),
    Switch("CONVEXT_TRITON_TC", "choice", "1, 0, force", "1", "import", "triton",
           "Triton backend: 0 switches its large-kernel tensor-core path (fp16/bf16, kH*kW >= 81) off; force also "
           "uses it for fp32 (tests). Read in convext/triton/depthwise_conv2d_tc.py"),
    Switch("CONVEXT_TRITON_AUTOTUNE", "bool", "1, 0", "1", "import", "triton",
           "Triton backend: 0 takes each kernel's first config instead of autotuning (tests). Read in "
           "convext/triton/_common.py"),
    Switch("CONVEXT_TEST_ALLOW_MISSING", "list", "comma list of backends (cuda, triton)", "unset", "import",
           "tests", "the test suite: a GPU machine may lack these backends without failing (tests/conftest.py)"),
)

SWITCHES: Dict[str, Switch] = {s.name: s for s in _ALL}


def names(layer: Optional[str] = None) -> Tuple[str, ...]:
    return tuple(s.name for s in _ALL if layer is None or s.layer == layer)


def raw(name: str) -> Optional[str]:
    """The variable's value now (None when unset). The one place Python reads a switch."""
    if name not in SWITCHES:
        raise KeyError(f"convext: {name} is not a registered switch (convext/_switches.py)")
    return os.environ.get(name)


# --------------------------------------------------------------------------- typed readers
# Each returns (value, error): error is None or a message naming the variable; the caller decides
# when to raise it (the Python switches: at the first auto call).


def read_bool(name: str) -> Tuple[bool, Optional[str]]:
    """1/true/yes/on or 0/false/no/off (any case, blanks ignored); unset or "": the default."""
    default = SWITCHES[name].default in TRUE
    value = raw(name)
    if value is None or value.strip() == "":
        return default, None
    v = value.strip().lower()
    if v in TRUE:
        return True, None
    if v in FALSE:
        return False, None
    return default, (f"convext: {name}={value!r} is not understood: use 1 or 0 (also true/false, yes/no, on/off), "
                     f"or unset it (default {SWITCHES[name].default})")


def read_backend(backends) -> Tuple[Optional[str], Optional[str]]:
    """CONVEXT_BACKEND: (forced backend or None, error)."""
    name = "CONVEXT_BACKEND"
    value = (raw(name) or "").strip()
    if value in ("", "auto"):
        return None, None
    if value not in backends:
        return None, (f"convext: {name}={value!r} is not a backend: use one of {', '.join(backends)} "
                      f"(or auto / unset for the default choice)")
    return value, None


def cache_dir() -> str:
    """CONVEXT_CACHE_DIR, else $XDG_CACHE_HOME/convext, else ~/.cache/convext (read per call)."""
    d = (raw("CONVEXT_CACHE_DIR") or "").strip()
    if d:
        return d
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "convext")


def triton_interpret() -> bool:
    """TRITON_INTERPRET=1 (Triton's own rule: exactly "1")."""
    return raw("TRITON_INTERPRET") == "1"


# --------------------------------------------------------------------------- the C++ side


def cpp_names() -> Dict[str, str]:
    """{name: read rule} of every switch csrc/switches.h reads (empty without convext._C)."""
    from . import _ext
    if not _ext.compiled_available():
        return {}
    from . import _C
    return dict(_C.switch_names())


def cpp_view() -> Dict[str, dict]:
    """What the C++ side read: {name: {"read", "raw", "value"}} (convext._C.switches()). Asking
    performs the first read of the read-once switches, as the first kernel call would."""
    from . import _ext
    if not _ext.compiled_available():
        return {}
    from . import _C
    return _C.switches()


def parse_disable_fast_paths(value: Optional[str]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """The C++ parser of CONVEXT_DISABLE_FAST_PATHS: (families switched off, unknown tokens)."""
    from . import _C
    disabled, unknown = _C.parse_disable_fast_paths(value)
    return tuple(disabled), tuple(unknown)


def report() -> str:
    """A table of every switch: its value in the environment now and, for the C++ ones, what the
    C++ side read."""
    view = cpp_view()
    rows = []
    for s in _ALL:
        now = os.environ.get(s.name)
        cpp = view.get(s.name, {}).get("value", "") if s.layer == "c++" else ""
        rows.append(f"{s.name:28s} {s.read:9s} {s.layer:7s} env={now!r:12s} {('c++=' + repr(cpp)) if cpp != '' else ''}")
    return "\n".join(rows)
