"""Loads the compiled extension; its absence is recorded, never raised at import."""
import torch

try:
    from . import _C  # noqa: F401  (registers the convext:: ops and their CPU/CUDA kernels)

    COMPILED_ERROR = None
except ImportError as e:  # not built, or built against another torch
    COMPILED_ERROR = f"the compiled extension convext._C could not be loaded ({e})"


def compiled_available() -> bool:
    return COMPILED_ERROR is None


def compiled_has_kernel(dispatch_key: str) -> bool:
    if COMPILED_ERROR is not None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("convext::depthwise_conv2d", dispatch_key)
