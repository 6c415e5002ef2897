"""Loads the compiled extension; its absence is recorded, never raised at import."""
import warnings

import torch

try:
    from . import _C  # noqa: F401  (registers the convext:: ops and their CPU/CUDA kernels)

    COMPILED_ERROR = None
except ImportError as e:  # not built, or built against another torch
    COMPILED_ERROR = f"the compiled extension convext._C could not be loaded ({e})"

# How to get the CUDA kernels: setup.py builds csrc/cuda whenever torch is a CUDA build and a CUDA
# toolkit is found (no GPU needed), unless CONVEXT_SKIP_CUDA=1.
REBUILD_HINT = ("rebuild with a CUDA build of torch and a CUDA toolkit present and CONVEXT_SKIP_CUDA unset: "
                "CUDA_HOME=/usr/local/cuda python setup.py build_ext --inplace (or pip install "
                "--no-build-isolation -e .; TORCH_CUDA_ARCH_LIST picks the GPU architectures)")


def compiled_available() -> bool:
    return COMPILED_ERROR is None


def compiled_has_kernel(dispatch_key: str) -> bool:
    if COMPILED_ERROR is not None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("convext::depthwise_conv2d", dispatch_key)


def missing_cuda_kernels_message():
    """Why this process has a GPU but no convext CUDA kernels, with the fix; None when all is well.

    Asks torch.cuda.is_available() only when the kernels are missing and torch is a CUDA build, so
    a normal import does not touch the CUDA driver."""
    if compiled_has_kernel("CUDA") or torch.version.cuda is None or not torch.cuda.is_available():
        return None
    why = COMPILED_ERROR if COMPILED_ERROR is not None else "convext._C was built without CUDA kernels"
    return (f"convext: a GPU is visible but {why}, so the 'cuda' backend is absent and backend='auto' "
            f"falls back to torch's own ops on CUDA tensors. To get the CUDA kernels, {REBUILD_HINT}.")


_warned = False


def warn_if_gpu_without_cuda_kernels(stacklevel: int = 2) -> bool:
    """Warns (UserWarning), once per process, when missing_cuda_kernels_message() has something to say.
    Called at import (below); True when it warned."""
    global _warned
    if _warned:
        return False
    msg = missing_cuda_kernels_message()
    if msg is None:
        return False
    _warned = True
    warnings.warn(msg, UserWarning, stacklevel=stacklevel + 1)
    return True


warn_if_gpu_without_cuda_kernels()
