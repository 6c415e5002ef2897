"""Triton backend: `convext::triton_*` ops, same signatures as the compiled ops (csrc/ops.cpp).

With TRITON_INTERPRET=1 in the environment (set before import) they also run on CPU tensors.
"""
from . import _compat  # noqa: F401  (interpreter version fixes, before any kernel runs)
from . import depthwise_conv2d, depthwise_separable_conv2d  # noqa: F401  (register the ops)
from . import spatial_separable_conv2d  # noqa: F401,E402  (registers convext::triton_spatial_separable_*)
