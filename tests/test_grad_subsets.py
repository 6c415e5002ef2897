"""Each subset of the inputs requiring grad, for every op on every backend (issue 10).

Training freezes things: a frozen backbone (weights with requires_grad=False, input requiring
grad for an adversarial or feature-visualisation step), a frozen input (the usual case: only
the parameters learn), bias-only fine-tuning (BitFit), a frozen depthwise half of a separable
block. Autograd then asks the backward for a subset of the gradients (`ctx.needs_input_grad`,
the separable op's `output_mask`), and the kernels take branches that "everything requires
grad" never reaches: the separable backward computes the depthwise bias gradient on its own when
the depthwise weight is frozen, skips recomputing the intermediate when nothing needs it, and so
on. Every subset (including none: then the output must not require grad) is checked against the
float64 torch reference with the suite's torch-relative bound (conftest.check_op), with
nonlinear activations in the separable op so that the gradient before and after the depthwise
activation differ.
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

import convext
from conftest import check_op, device_backend_params, interpreted, make_inputs, to_layout, torch_separable

DEVICE_BACKENDS = device_backend_params()


def _masks(names):
    """(mask, id) for every subset of `names` requiring grad, the empty one included."""
    out = []
    for mask in itertools.product((False, True), repeat=len(names)):
        mid = "+".join(n for n, r in zip(names, mask) if r) or "frozen"
        out.append((mask, mid))
    return out


def _params(names, extra=((None, ""),), interpreted_extra=None, torch_extra=None):
    """(device, backend, mask, extra) params: every mask on every backend, with each of `extra`; the
    interpreter gets `interpreted_extra` (default: the first of `extra`), the torch composite (whose
    backward is torch's own autograd) `torch_extra` (default: all of `extra`)."""
    params = []
    for p in DEVICE_BACKENDS:
        device, backend = p.values
        if interpreted(device, backend):
            extras = interpreted_extra or extra[:1]
        elif backend == "torch":
            extras = torch_extra or extra
        else:
            extras = extra
        for mask, mid in _masks(names):
            for value, eid in extras:
                params.append(pytest.param(device, backend, mask, value,
                                           id=f"{p.id}-{mid}" + (f"-{eid}" if eid else ""), marks=p.marks))
    return params


# --------------------------------------------------------------------------- depthwise_conv2d

DW_NAMES = ("input", "weight", "bias")
LAYOUTS2 = (("contiguous", "nchw"), ("channels_last", "cl"))


@pytest.mark.parametrize("device,backend,mask,layout", _params(DW_NAMES, LAYOUTS2, interpreted_extra=LAYOUTS2))
def test_depthwise_conv2d(device, backend, mask, layout):
    N, C = (1, 2) if interpreted(device, backend) else (2, 3)
    x, w, b = make_inputs(N, C, 7, 8, (3, 2), 2, True, torch.float32, device)
    # (dilation is left to the grids: torch's own CPU reference is ~100x slower with it)
    check_depthwise_args = dict(stride=(2, 1), padding=(1, 0), dilation=1)

    def ours(x_, w_, b_):
        return convext.depthwise_conv2d(x_, w_, b_, **check_depthwise_args, backend=backend)

    def theirs(x_, w_, b_):
        return F.conv2d(x_, w_, b_, groups=C, **check_depthwise_args)

    check_op(device, ours, theirs, (to_layout(x, layout), w, b), ("grad_input", "grad_weight", "grad_bias"),
             grad_layout=layout, requires=mask)


# --------------------------------------------------------------------------- separable

SEP_NAMES = ("input", "dw_weight", "pw_weight", "dw_bias", "pw_bias")
# Activation pairs: none (the C++ backward then skips recomputing the intermediate for some masks),
# one on either side, both.
ACT_PAIRS = ((None, None), ("silu", None), (None, "gelu"), ("relu6", "hardswish"))
SEP_EXTRA = tuple(((a, layout), f"{a[0]}-{a[1]}-{lid}") for a in ACT_PAIRS for layout, lid in LAYOUTS2
                  if layout == "contiguous" or a == ACT_PAIRS[0])
# The interpreter (and the torch composite, whose backward is torch's autograd): every subset with both
# activations (every gradient branch of the Triton backward differs from its neighbours only in the
# mask), NCHW.
SEP_INTERPRETED = (((("relu6", "hardswish"), "contiguous"), "relu6-hardswish-nchw"),)


def _separable(N, C, H, W, k, M, Cout, device, biases=True):
    x, dw_w, dw_b = make_inputs(N, C, H, W, k, M, biases, torch.float32, device)
    dw_w = dw_w * 3  # the depthwise output crosses the activations' kinks (relu6 at 0 and 6)
    pw_w = torch.randn(Cout, C * M, 1, 1, device=device) / (C * M) ** 0.5
    pw_b = torch.randn(Cout, device=device) if biases else None
    return x, dw_w, pw_w, dw_b, pw_b


def _check_separable(device, backend, tensors, mask, acts, layout):
    stride, padding, dilation = 1, (1, 2), 1

    def ours(*t):
        return convext.depthwise_separable_conv2d(*t, stride, padding, dilation, backend=backend,
                                                  depthwise_activation=acts[0], pointwise_activation=acts[1])

    def theirs(*t):
        return torch_separable(*t, stride, padding, dilation, *acts)

    t = list(tensors)
    t[0] = to_layout(t[0], layout)
    check_op(device, ours, theirs, t, tuple(f"grad_{n}" for n in SEP_NAMES), grad_layout=layout,
             requires=mask)


@pytest.mark.parametrize("device,backend,mask,config",
                         _params(SEP_NAMES, SEP_EXTRA, interpreted_extra=SEP_INTERPRETED, torch_extra=SEP_INTERPRETED))
def test_depthwise_separable_conv2d(device, backend, mask, config):
    acts, layout = config
    shape = (1, 2, 5, 6, 3, 2, 3) if interpreted(device, backend) else (2, 3, 6, 7, 3, 2, 5)
    _check_separable(device, backend, _separable(*shape, device), mask, acts, layout)


@pytest.mark.parametrize("device,backend,mask,acts",
                         _params(SEP_NAMES[:3], (((None, None), "plain"), (("gelu", "silu"), "gelu-silu")),
                                 interpreted_extra=((("gelu", "silu"), "gelu-silu"),)))
def test_depthwise_separable_conv2d_without_biases(device, backend, mask, acts):
    shape = (1, 2, 5, 6, 3, 1, 3) if interpreted(device, backend) else (2, 3, 6, 7, 3, 1, 5)
    x, dw_w, pw_w, _, _ = _separable(*shape, device, biases=False)
    _check_separable(device, backend, (x, dw_w, pw_w, None, None), tuple(mask) + (False, False), acts,
                     "contiguous")


# --------------------------------------------------------------------------- depthwise_conv1d


@pytest.mark.parametrize("device,backend,mask,causal",
                         _params(DW_NAMES, ((True, "causal"), (False, "s2")), interpreted_extra=((True, "causal"),)))
def test_depthwise_conv1d(device, backend, mask, causal):
    C = 2 if interpreted(device, backend) else 3
    x = torch.randn(2, C, 13, device=device)
    w = torch.randn(2 * C, 1, 3, device=device) / 3 ** 0.5
    b = torch.randn(2 * C, device=device)
    stride, padding, dilation = (1, 0, 2) if causal else (2, 1, 1)

    def ours(x_, w_, b_):
        return convext.depthwise_conv1d(x_, w_, b_, stride, padding, dilation, causal=causal, backend=backend)

    def theirs(x_, w_, b_):
        if causal:
            x_ = F.pad(x_, (dilation * (w_.shape[-1] - 1), 0))
        return F.conv1d(x_, w_, b_, stride, padding, dilation, groups=C)

    check_op(device, ours, theirs, (x, w, b), ("grad_input", "grad_weight", "grad_bias"), requires=mask)


# --------------------------------------------------------------------------- depthwise_conv_transpose2d


@pytest.mark.parametrize("device,backend,mask,mult", _params(DW_NAMES, ((2, "M2"), (1, "M1")),
                                                            interpreted_extra=((2, "M2"),)))
def test_depthwise_conv_transpose2d(device, backend, mask, mult):
    C = 2 if interpreted(device, backend) else 3
    x = torch.randn(2, C, 5, 6, device=device)
    w = torch.randn(C, mult, 3, 2, device=device) / 6 ** 0.5
    b = torch.randn(C * mult, device=device)
    stride, padding, output_padding, dilation = (2, 1), (1, 0), (1, 0), 1

    def ours(x_, w_, b_):
        return convext.depthwise_conv_transpose2d(x_, w_, b_, stride, padding, output_padding, dilation,
                                                  backend=backend)

    def theirs(x_, w_, b_):
        return F.conv_transpose2d(x_, w_, b_, stride, padding, output_padding, C, dilation)

    check_op(device, ours, theirs, (x, w, b), ("grad_input", "grad_weight", "grad_bias"), requires=mask)
