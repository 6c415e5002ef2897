"""convext: fast depthwise, dilated and depthwise-separable convolutions for PyTorch.

Public API (see docs/API.md): depthwise_conv2d, depthwise_separable_conv2d, depthwise_conv1d,
depthwise_conv_transpose2d, backends, convert, and the layers in convext.nn.
"""
from . import _ext  # noqa: F401  (loads convext._C if built)
from ._backend import backends
from . import _ops  # noqa: F401  (fake kernels + autograd)
from .functional import (depthwise_conv1d, depthwise_conv2d, depthwise_conv_transpose2d,
                         depthwise_separable_conv2d)
from ._spatial_separable import spatial_separable_conv2d
from . import nn
from .convert import convert

__version__ = "0.1.0"
__all__ = ["depthwise_conv2d", "depthwise_separable_conv2d", "depthwise_conv1d", "depthwise_conv_transpose2d",
           "backends", "convert", "nn", "spatial_separable_conv2d"]

from .analysis import conv_cost, receptive_field  # noqa: E402
from .blocks import multi_grid  # noqa: E402
__all__ += ["conv_cost", "receptive_field", "multi_grid"]
from .streaming import depthwise_conv1d_update  # noqa: E402
__all__ += ["depthwise_conv1d_update"]
