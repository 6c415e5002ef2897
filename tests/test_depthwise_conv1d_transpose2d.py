"""depthwise_conv1d (incl. causal) and depthwise_conv_transpose2d, and their layers, on every backend:
outputs and gradients vs float64 torch.nn.functional."""
import copy

import pytest
import torch
import torch.nn.functional as F

import convext
from conftest import assert_matches, device_backend_params

DEVICE_BACKENDS = device_backend_params()


def _check(fn, ref, tensors):
    out, expected = fn(*tensors), ref(*tensors)
    assert out.shape == expected.shape
    go = torch.randn_like(expected)
    got = torch.autograd.grad(out, tensors, go)
    want = torch.autograd.grad(expected, tensors, go)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def _f64(*shape, device):
    return torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("mult,stride,padding,output_padding,dilation",
                         [(1, 2, 1, 1, 1), (2, 2, 0, 0, 1), (1, 1, 1, 0, 2), (3, 3, 2, 2, 1), (1, 2, 1, 1, 3)])
def test_conv_transpose2d(device, backend, mult, stride, padding, output_padding, dilation):
    x, w, b = _f64(2, 3, 5, 6, device=device), _f64(3, mult, 3, 2, device=device), _f64(3 * mult, device=device)
    _check(lambda x, w, b: convext.depthwise_conv_transpose2d(x, w, b, stride, padding, output_padding, dilation,
                                                              backend=backend),
           lambda x, w, b: F.conv_transpose2d(x, w, b, stride, padding, output_padding, 3, dilation), (x, w, b))


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("causal,padding,stride,dilation", [(False, "same", 1, 2), (False, 2, 2, 1),
                                                            (True, 0, 1, 3), (True, 0, 2, 1)])
def test_conv1d(device, backend, causal, padding, stride, dilation):
    x, w, b = _f64(2, 4, 17, device=device), _f64(8, 1, 3, device=device), _f64(8, device=device)
    if causal:
        def ref(x, w, b):
            return F.conv1d(F.pad(x, (dilation * 2, 0)), w, b, stride, 0, dilation, 4)
    else:
        def ref(x, w, b):
            return F.conv1d(x, w, b, stride, padding, dilation, 4)
    _check(lambda x, w, b: convext.depthwise_conv1d(x, w, b, stride, padding, dilation, causal=causal,
                                                    backend=backend), ref, (x, w, b))
    if causal and stride == 1:  # WaveNet / TCN: output length = input length
        assert convext.depthwise_conv1d(x, w, b, dilation=dilation, causal=True, backend=backend).shape[-1] == 17


def test_causal_rejects_padding():
    with pytest.raises(ValueError, match="padding"):
        convext.depthwise_conv1d(torch.randn(1, 2, 8), torch.randn(2, 1, 3), padding=1, causal=True)


def _close64(out, ref_module, x, name, **kwargs):
    """out vs ref_module(x) in float64, ref_module at x's dtype as the yardstick."""
    with torch.no_grad():
        ref64 = copy.deepcopy(ref_module).double()(x.double(), **kwargs)
        assert_matches(out, ref64, ref_module(x, **kwargs), name=name)


def test_layers_load_torch_state_dicts():
    torch.manual_seed(0)
    ref1 = torch.nn.Conv1d(4, 8, 5, padding=2, groups=4)
    layer1 = convext.nn.DepthwiseConv1d(4, 5, padding=2, depth_multiplier=2)
    layer1.load_state_dict(ref1.state_dict())
    x = torch.randn(2, 4, 19)
    with torch.no_grad():
        _close64(layer1(x), ref1, x, "DepthwiseConv1d")

    # causal: the values, not just the length, of a left-padded dilated conv
    causal = convext.nn.DepthwiseConv1d(4, 3, dilation=2, causal=True)
    ref_causal = torch.nn.Conv1d(4, 4, 3, dilation=2, groups=4)
    ref_causal.load_state_dict(causal.state_dict())
    with torch.no_grad():
        y = causal(x)
    assert y.shape == x.shape
    _close64(y, torch.nn.Sequential(torch.nn.ConstantPad1d((4, 0), 0.0), ref_causal), x, "causal DepthwiseConv1d")
    with torch.no_grad():  # causal: output t never sees inputs after t
        x2 = x.clone()
        x2[..., 10:] = torch.randn(2, 4, 9)
        torch.testing.assert_close(causal(x2)[..., :10], y[..., :10], rtol=0, atol=0)

    ref2 = torch.nn.ConvTranspose2d(3, 6, 3, stride=2, padding=1, output_padding=1, groups=3)
    layer2 = convext.nn.DepthwiseConvTranspose2d(3, 3, stride=2, padding=1, output_padding=1, depth_multiplier=2)
    layer2.load_state_dict(ref2.state_dict())
    assert isinstance(layer2, torch.nn.ConvTranspose2d) and isinstance(layer1, torch.nn.Conv1d)
    y = torch.randn(2, 3, 7, 5)
    with torch.no_grad():
        _close64(layer2(y), ref2, y, "DepthwiseConvTranspose2d")
        _close64(layer2(y, output_size=[13, 9]), ref2, y, "DepthwiseConvTranspose2d(output_size)",
                 output_size=[13, 9])
