"""The memoised argument check: a cached success never lets a bad call through."""
import pytest
import torch

import convext


def test_cached_geometry_still_rejects_bad_arguments():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 1, 3, 3)
    ref = torch.nn.functional.conv2d(x, w, None, 1, 1, 1, 4)
    for _ in range(2):  # the second call is served from the cache
        torch.testing.assert_close(convext.depthwise_conv2d(x, w, None, 1, 1, backend="cpu"), ref)
    with pytest.raises(TypeError, match="stride"):
        convext.depthwise_conv2d(x, w, None, True, 1, backend="cpu")  # True == 1, yet not an int
    with pytest.raises(TypeError, match="stride"):
        convext.depthwise_conv2d(x, w, None, 1.0, 1, backend="cpu")
    with pytest.raises(TypeError, match="weight"):
        convext.depthwise_conv2d(x, w.double(), None, 1, 1, backend="cpu")
    with pytest.raises(ValueError, match="padding"):
        convext.depthwise_conv2d(x, w, None, 1, -1, backend="cpu")
    # another shape with the same arguments is checked afresh
    with pytest.raises(ValueError, match="weight"):
        convext.depthwise_conv2d(x, torch.randn(3, 1, 3, 3), None, 1, 1, backend="cpu")
