"""Backend availability and the "auto" choice (the measuring part: convext/_autotune.py)."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from . import _autotune, _ext, _switches

BACKENDS = ("cuda", "triton", "cpu", "torch")
CHOICES = BACKENDS + ("auto",)

_triton_error: Optional[str] = None
try:
    from . import triton as _triton_backend  # noqa: F401  (registers convext::triton_* ops)
except Exception as e:  # triton missing or incompatible: the backend is just absent
    _triton_error = f"Triton kernels could not be loaded ({type(e).__name__}: {e})"


def _triton_interpret() -> bool:
    return _switches.triton_interpret()


def _availability(name: str, device_type: str) -> Tuple[bool, str]:
    if name == "torch":
        return True, ""
    if name == "cpu":
        if device_type != "cpu":
            return False, f"backend 'cpu' runs on CPU tensors, got a {device_type} tensor"
        if not _ext.compiled_available():
            return False, _ext.COMPILED_ERROR
        return True, ""
    if name == "cuda":
        if device_type != "cuda":
            return False, f"backend 'cuda' runs on CUDA tensors, got a {device_type} tensor"
        if not _ext.compiled_available():
            return False, _ext.COMPILED_ERROR
        if not _ext.compiled_has_kernel("CUDA"):
            return False, "convext._C was built without CUDA kernels (" + _ext.REBUILD_HINT + ")"
        return True, ""
    if name == "triton":
        if _triton_error is not None:
            return False, _triton_error
        if device_type == "cuda":
            return True, ""
        if device_type == "cpu" and _triton_interpret():
            return True, ""
        return False, (f"backend 'triton' runs on CUDA tensors (or on CPU tensors with TRITON_INTERPRET=1 "
                       f"set before import), got a {device_type} tensor")
    raise ValueError(f"convext: backend must be one of {CHOICES}, got {name!r}")


# Computed once at import: the answers cannot change in a process (TRITON_INTERPRET is read by
# Triton at import too), and plain dict look-ups keep torch.compile(fullgraph=True) free of breaks.
_AVAILABILITY = {(b, t): _availability(b, t) for b in BACKENDS for t in ("cpu", "cuda")}


def availability(name: str, device_type: str) -> Tuple[bool, str]:
    """(usable, why not) for backend `name` on tensors of `device_type`."""
    if name not in BACKENDS:
        raise ValueError(f"convext: backend must be one of {CHOICES}, got {name!r}")
    return _AVAILABILITY.get((name, device_type)) or _availability(name, device_type)


def backends(device=None) -> List[str]:
    """Names of the backends usable on this machine for `device` (default: any device present).

    A subset of ["cuda", "triton", "cpu", "torch"] in that order: "cuda" when convext._C has CUDA kernels
    and a GPU is visible, "triton" when Triton loads (on CPU only with TRITON_INTERPRET=1), "cpu" when
    convext._C loaded, "torch" always. `backend="auto"` chooses among the verified ones (docs/API.md).
    """
    if device is None:
        types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        types = [torch.device(device).type]
        if types[0] == "cuda" and not torch.cuda.is_available():
            return []
    return [b for b in BACKENDS if any(availability(b, t)[0] for t in types)]


def resolve(backend, tensor: torch.Tensor, op: str, kernel_size=None, dilation=None, *, tune=None) -> str:
    """Concrete backend for `op` on `tensor`: validates the name and availability.

    For "auto": CONVEXT_BACKEND when set; else, with `tune` = (tensors, extra, run) -- the op's tensor
    arguments (input first, 4-D), the geometry as a tuple of ints / strings, and `run(name, tensors)`
    calling the op with that backend -- the measured choice among `auto_candidates` (convext/_autotune.py);
    without `tune` or with CONVEXT_AUTOTUNE=0, the static rule `auto_choice`.
    """
    return resolve_final(backend, tensor, op, kernel_size, dilation, tune=tune)[0]


def resolve_final(backend, tensor: torch.Tensor, op: str, kernel_size=None, dilation=None, *,
                  tune=None) -> Tuple[str, bool]:
    """(resolve's answer, whether every later call with the same key gets the same answer): False
    only while `auto`'s measured choice is not settled (not timed yet, or its report still due)."""
    if not isinstance(backend, str) or backend not in CHOICES:
        raise ValueError(f"convext: backend must be one of {CHOICES}, got {backend!r}")
    device_type = tensor.device.type
    if backend != "auto":
        ok, why = availability(backend, device_type)
        if not ok:
            raise RuntimeError(f"convext: backend {backend!r} is not available: {why}")
        return backend, True
    if ENV_ERROR is not None:
        raise ValueError(ENV_ERROR)
    if FORCED is not None:
        ok, why = availability(FORCED, device_type)
        if not ok:
            raise RuntimeError(f"convext: {FORCE_ENV}={FORCED} forces backend {FORCED!r} for backend='auto', but it "
                               f"is not available for this {device_type} tensor: {why}")
        return FORCED, True
    static = _auto(tensor, op, kernel_size, dilation)
    if tune is None or not _autotune.ENABLED:
        return static, True
    candidates = auto_candidates(device_type, op, _USABLE.get(device_type, _NONE_USABLE), unverified=AUTO_UNVERIFIED)
    if len(candidates) < 2:
        return static, True
    tensors, extra, run = tune
    name = _autotune.choose(op, tensors, extra, run, candidates, static)
    # (a memo is never kept while torch.compile traces: no need to ask, nor a graph break for it)
    return name, not torch.compiler.is_compiling() and _autotune.settled(op, tensors, extra)


def switches() -> tuple:
    """The Python-side switches `auto` reads, as part of a memo key (convext/_plan.py): tests and
    tools may change them at run time."""
    return FORCED, ENV_ERROR, _autotune.ENABLED, AUTO_UNVERIFIED


# `auto` chooses only paths a GPU run has verified (docs/perf/NOTES.md). On CUDA that is the
# compiled CUDA backend: its depthwise kernels (forward, grad-input, grad-weight) ran on the H100,
# and its separable op is their composite with ATen's 1x1 conv (cuDNN / cuBLAS). The Triton
# kernels and the Triton fused separable kernel were rewritten after the last GPU run, so `auto`
# takes them only with CONVEXT_AUTO_UNVERIFIED=1, which the GPU check sets to exercise them;
# backend="triton" always runs them. Read once, like _AVAILABILITY.
AUTO_UNVERIFIED_ENV = "CONVEXT_AUTO_UNVERIFIED"
AUTO_UNVERIFIED, _UNVERIFIED_ERROR = _switches.read_bool(AUTO_UNVERIFIED_ENV)

OPS = ("depthwise_conv2d", "depthwise_separable_conv2d", "depthwise_conv_transpose2d")

# {device type: {backend: usable}}, from _AVAILABILITY: what auto_choice is given.
_USABLE = {t: {b: _AVAILABILITY[(b, t)][0] for b in BACKENDS} for t in ("cpu", "cuda")}
_NONE_USABLE = {b: b == "torch" for b in BACKENDS}


def auto_choice(device_type: str, op: str, usable, *, unverified: bool = False, kernel_size=None,
                dilation=None, channels_last: bool = False) -> str:
    """The backend `auto` picks, as a pure function: no tensor, no environment, no GPU needed.

    usable: {backend name: bool} for `device_type`; unverified: allow the GPU paths no GPU run
    has verified (CONVEXT_AUTO_UNVERIFIED); kernel_size / dilation / channels_last: the CPU choice.
    """
    if op not in OPS:
        raise ValueError(f"convext: unknown op {op!r} (one of {OPS})")
    if device_type == "cuda":
        if not unverified:
            order = ("cuda",)
        elif op == "depthwise_separable_conv2d":
            # The fused Triton kernel keeps the separable intermediate on chip; the CUDA backend
            # composes the depthwise kernel with a cuBLAS / cuDNN 1x1 conv.
            order = ("triton", "cuda")
        else:
            order = ("cuda", "triton")
        for name in order:
            if usable.get(name, False):
                return name
        return "torch"
    if device_type == "cpu" and usable.get("cpu", False):
        # CPU bench (2 threads, EPYC): the C++ kernels win 1.3-10x forward+backward except on
        # undilated 3x3, where torch's kernels tie or win by up to 1.2x (channels_last depthwise,
        # and the separable pair, whose 1x1 GEMM is the same either way).
        plain_3x3 = tuple(kernel_size or ()) == (3, 3) and tuple(dilation or ()) == (1, 1)
        if plain_3x3 and (op == "depthwise_separable_conv2d" or channels_last):
            return "torch"
        return "cpu"
    return "torch"


def auto_candidates(device_type: str, op: str, usable, *, unverified: bool = False) -> Tuple[str, ...]:
    """The backends `auto` may measure and choose among, as a pure function (see auto_choice).

    CUDA: `cuda` and `torch`, plus `triton` with `unverified` (CONVEXT_AUTO_UNVERIFIED); CPU: `cpu`
    and `torch` (the Triton interpreter never); other devices: `torch`. Only the usable ones;
    auto_choice's answer is always among them.
    """
    if op not in OPS:
        raise ValueError(f"convext: unknown op {op!r} (one of {OPS})")
    if device_type == "cuda":
        order = ("cuda", "triton", "torch") if unverified else ("cuda", "torch")
    elif device_type == "cpu":
        order = ("cpu", "torch")
    else:
        order = ("torch",)
    return tuple(b for b in order if b == "torch" or usable.get(b, False))


# CONVEXT_BACKEND=<name> makes every `auto` choice that backend (an explicit backend= still wins);
# CONVEXT_AUTOTUNE=0 turns measuring off. Read once at import; a bad value is an error at the first
# `auto` call (import itself never fails).
FORCE_ENV = "CONVEXT_BACKEND"


def _read_forced():
    return _switches.read_backend(BACKENDS)


FORCED, _FORCE_ERROR = _read_forced()
ENV_ERROR = _FORCE_ERROR or _autotune.ENV_ERROR or _UNVERIFIED_ERROR


def _auto(tensor: torch.Tensor, op: str, kernel_size=None, dilation=None) -> str:
    device_type = tensor.device.type
    # Only the CPU choice looks at the layout (no layout guards under torch.compile on CUDA).
    channels_last = device_type == "cpu" and tensor.dim() == 4 \
        and tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()
    return auto_choice(device_type, op, _USABLE.get(device_type, _NONE_USABLE), unverified=AUTO_UNVERIFIED,
                       kernel_size=kernel_size, dilation=dilation, channels_last=channels_last)
