"""What every Triton file in convext/triton/ shares: environment flags, jit helpers (inlined into
each kernel that calls them), the autotuner cache and the launcher, and host-side helpers.

Flags are read once, at import: set TRITON_INTERPRET=1 (CPU tensors through the interpreter) and
CONVEXT_TRITON_AUTOTUNE=0 (first config instead of benchmarking them all) before importing
convext.triton.  Callers read the mutable module state through the module (``_common._launcher``,
``_common._TUNERS``), so a tool that swaps the launcher or clears the tuners patches one place
(tools/sass_report.py does).
"""
import os

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# CONVEXT_TRITON_AUTOTUNE=0: take the first config instead of benchmarking them all (tests).
_NO_AUTOTUNE = os.environ.get("CONVEXT_TRITON_AUTOTUNE", "1") == "0"
_I32_LIMIT = 2**31 - 1


# ----------------------------------------------------------------------------------------------
# jit helpers
# ----------------------------------------------------------------------------------------------
@triton.jit
def _udiv(a, b):
    """a // b and a % b for non-negative int32 a, positive b, as unsigned divisions (cheaper in
    SASS than the signed ones: no sign fix-ups). b may be a plain int (an argument equal to 1 is
    specialised to one): ``b + a * 0`` makes it a tensor (folded away; triton 3.6 has no
    tl.to_tensor)."""
    b = b + a * 0
    q = (a.to(tl.uint32) // b.to(tl.uint32)).to(tl.int32)
    return q, a - q * b


@triton.jit
def _int64x4(a, b, c, d):
    """Four strides as int64, for the INT64 kernel variants: every offset computed from them (a
    tap's scalar row / column offset included) is then 64-bit.  tl.cast, not .to(): a stride
    equal to 1 is specialised to a constexpr."""
    return tl.cast(a, tl.int64), tl.cast(b, tl.int64), tl.cast(c, tl.int64), tl.cast(d, tl.int64)


@triton.jit
def _zeros_2d(D0: tl.constexpr, D1: tl.constexpr, ACC_F64: tl.constexpr):
    """A [D0, D1] accumulator: float64 when ACC_F64, else float32."""
    if ACC_F64:
        acc = tl.zeros([D0, D1], dtype=tl.float64)
    else:
        acc = tl.zeros([D0, D1], dtype=tl.float32)
    return acc


@triton.jit
def _zeros_1d(D0: tl.constexpr, ACC_F64: tl.constexpr):
    """A [D0] accumulator: float64 when ACC_F64, else float32."""
    if ACC_F64:
        acc = tl.zeros([D0], dtype=tl.float64)
    else:
        acc = tl.zeros([D0], dtype=tl.float32)
    return acc


# ----------------------------------------------------------------------------------------------
# autotuning and launching
# ----------------------------------------------------------------------------------------------
def _cfg(num_warps, num_stages=1, **kw):
    return triton.Config(kw, num_warps=num_warps, num_stages=num_stages)


_TUNERS: dict = {}


def _tuner(kernel, key, configs_fn, cls):
    """One Autotuner per (kernel, size class) over configs_fn(*cls); only the first config under
    the interpreter or with CONVEXT_TRITON_AUTOTUNE=0."""
    k = (kernel, cls)
    t = _TUNERS.get(k)
    if t is None:
        configs = configs_fn(*cls)
        if _INTERPRET or _NO_AUTOTUNE:
            configs = configs[:1]
        t = triton.autotune(configs=configs, key=key)(kernel)
        _TUNERS[k] = t
    return t


def _launcher(kernel):
    # Under the interpreter (and with fake tensors handled before) launch directly; otherwise
    # wrap_triton so that torch.compile traces the kernel.  (torch < 2.14 wrap_triton rejects
    # interpreted kernels.)
    if _INTERPRET:
        return kernel
    return torch.library.wrap_triton(kernel)


def _traced_interpreted(op, *args):
    """Under TRITON_INTERPRET=1 the kernels cannot be traced (interpreted kernels are not
    wrap_triton-traceable); when AOT dispatch decomposes the op with FunctionalTensors, keep it
    as an opaque op call instead (eager then runs the interpreter).  Returns None otherwise."""
    if not _INTERPRET:
        return None
    from torch._subclasses.functional_tensor import FunctionalTensor

    if not any(isinstance(a, FunctionalTensor) for a in args):
        return None
    cfg = torch._functorch.config
    if not hasattr(cfg, "decompose_custom_triton_ops"):
        return None
    with cfg.patch(decompose_custom_triton_ops=False):
        return op(*args)


def _opaque_when_interpreted(*ops):
    """The other way to the same end, for ops registered with torch.library.triton_op: triton_op
    decomposes into its body under AOTDispatcher (torch.compile) so that Inductor sees the kernels;
    under TRITON_INTERPRET=1 the kernels launch unwrapped (`_launcher`), which cannot be traced, so
    the decomposed graph would lose the launches.  Keeps `ops` opaque to functionalization there."""
    if not _INTERPRET:
        return
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    def _opaque(mode, op, types, args, kwargs):
        return mode.__torch_dispatch__(op, types, args, kwargs)

    for op in ops:
        op.register_torch_dispatch(FunctionalTensorMode, _opaque)


# ----------------------------------------------------------------------------------------------
# host helpers
# ----------------------------------------------------------------------------------------------
def _out_size(size, lo, hi, d, k, s):
    """Conv output size along one dimension (padding lo / hi, dilation d, kernel k, stride s);
    negative when the kernel does not fit (callers clamp with max(., 0))."""
    return (size + lo + hi - d * (k - 1) - 1) // s + 1


def _next_pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


def _pow2_bucket(v, lo, hi):
    # next power of two of v clamped to [lo, hi], by comparisons only (SymInt friendly).
    b = lo
    while b < hi and v > b:
        b *= 2
    return b


def _size_class(v):
    return 8 if v <= 8 else 16 if v <= 16 else 32 if v <= 32 else 64


def _needs_int64(*tensors):
    """Whether an element offset of one of the tensors (its numel or its strided extent) reaches
    2**31: the kernels then take their INT64 variant."""
    for t in tensors:
        if t.numel() > _I32_LIMIT:
            return True
        ext = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()) if s > 0)
        if ext > _I32_LIMIT:
            return True
    return False


def _is_fake(t):
    """t is a FakeTensor or on the meta device (not looking through wrapper subclasses)."""
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor) or t.device.type == "meta"


def _any_fake(*tensors):
    """Any of the tensors (None skipped) is fake, also through wrapper subclasses such as
    FunctionalTensor (torch's is_fake), or on the meta device."""
    from torch._subclasses.fake_tensor import is_fake

    return any(t is not None and (is_fake(t) or t.device.type == "meta") for t in tensors)


def _is_channels_last(t):
    return suggest_memory_format(t) == torch.channels_last


def _alloc_like(shape, like, dtype=None):
    """An empty tensor of `shape` in like's memory format (channels_last or contiguous)."""
    fmt = torch.channels_last if _is_channels_last(like) else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype if dtype is None else dtype, device=like.device,
                       memory_format=fmt)


def _acc_dtype(dtype):
    """The accumulation dtype: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _acc_weights(weight, C_out, KK, taps_major):
    """The weights as a contiguous (C_out, KK) matrix, or (KK, C_out) when taps_major, in the
    accumulation dtype (float32, float64 for float64): the bf16 / fp16 -> float32 conversion is
    exact and done once here instead of by every program."""
    w = weight.reshape(C_out, KK)
    if taps_major:
        w = w.t()
    return torch.empty(w.shape, dtype=_acc_dtype(weight.dtype), device=weight.device).copy_(w)
