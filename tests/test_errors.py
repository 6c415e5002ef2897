"""Bad arguments raise ValueError / TypeError / RuntimeError naming the argument, before
any kernel runs, for every backend (API.md, "Errors")."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import convext
from conftest import CPU_BACKENDS

ERRORS = (ValueError, TypeError, RuntimeError)
BACKENDS = CPU_BACKENDS + ["auto"]


def dw(x=None, w=None, b=None, stride=1, padding=1, dilation=1, backend="auto"):
    x = torch.randn(2, 4, 8, 8) if x is None else x
    w = torch.randn(8, 1, 3, 3) if w is None else w
    return convext.depthwise_conv2d(x, w, b, stride, padding, dilation, backend=backend)


def sep(x=None, dw_w=None, pw_w=None, dw_b=None, pw_b=None, stride=1, padding=1, dilation=1, backend="auto",
        **kw):
    x = torch.randn(2, 4, 8, 8) if x is None else x
    dw_w = torch.randn(4, 1, 3, 3) if dw_w is None else dw_w
    pw_w = torch.randn(6, 4, 1, 1) if pw_w is None else pw_w
    return convext.depthwise_separable_conv2d(x, dw_w, pw_w, dw_b, pw_b, stride, padding, dilation,
                                              backend=backend, **kw)


class KernelRecorder(TorchDispatchMode):
    """Records every convext op and every convolution dispatched while active: a bad argument must
    raise before any of them runs (API.md: "before any kernel runs"), not from inside a kernel."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if name.startswith("convext::") or "conv" in name:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def raises_before_any_kernel(call, pattern):
    """call() raises one of ERRORS matching `pattern`, with no kernel dispatched first."""
    with KernelRecorder() as rec:
        with pytest.raises(ERRORS, match=pattern):
            call()
    assert not rec.ops, f"kernels ran before the error: {rec.ops}"


# (id, call, argument-name regex)
DEPTHWISE_CASES = [
    ("input-2d", dict(x=torch.randn(4, 8)), r"input"),
    ("input-5d", dict(x=torch.randn(1, 2, 4, 8, 8)), r"input"),
    ("weight-3d", dict(w=torch.randn(8, 3, 3)), r"weight"),
    ("weight-dim1-not-1", dict(w=torch.randn(8, 2, 3, 3)), r"weight"),
    ("weight-not-multiple", dict(w=torch.randn(6, 1, 3, 3)), r"weight|channel"),
    ("weight-fewer-than-C", dict(w=torch.randn(2, 1, 3, 3)), r"weight|channel"),
    ("bias-shape", dict(b=torch.randn(7)), r"bias"),
    ("bias-2d", dict(b=torch.randn(8, 1)), r"bias"),
    ("stride-0", dict(stride=0), r"stride"),
    ("stride-neg", dict(stride=(1, -1)), r"stride"),
    ("stride-len3", dict(stride=(1, 1, 1)), r"stride"),
    ("dilation-0", dict(dilation=0), r"dilation"),
    ("dilation-tuple-0", dict(dilation=(2, 0)), r"dilation"),
    ("padding-neg", dict(padding=-1), r"padding"),
    ("padding-tuple-neg", dict(padding=(0, -2)), r"padding"),
    ("padding-bad-string", dict(padding="full"), r"padding"),
    ("padding-len3", dict(padding=(1, 1, 1)), r"padding"),
    ("same-stride2", dict(padding="same", stride=2), r"padding|same|stride"),
    ("dtype-mismatch", dict(w=torch.randn(8, 1, 3, 3, dtype=torch.float64)), r"weight|dtype"),
    ("bias-dtype-mismatch", dict(b=torch.randn(8, dtype=torch.float64)), r"bias|dtype"),
    ("device-mismatch", dict(w=torch.randn(8, 1, 3, 3, device="meta")), r"weight|device"),
    ("int-input", dict(x=torch.ones(2, 4, 8, 8, dtype=torch.int64), w=torch.ones(8, 1, 3, 3, dtype=torch.int64)),
     r"input|dtype|float"),
    ("bool-input", dict(x=torch.ones(2, 4, 8, 8, dtype=torch.bool), w=torch.ones(8, 1, 3, 3, dtype=torch.bool)),
     r"input|dtype|float"),
    ("kernel-too-big", dict(x=torch.randn(2, 4, 2, 2), padding=0), r"input|weight|kernel|size|output"),
    ("input-not-tensor", dict(x=[[1.0]]), r"input|[Tt]ensor"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=[c[0] for c in DEPTHWISE_CASES])
def test_depthwise_conv2d_bad_arguments(backend, case):
    _, kwargs, pattern = case
    raises_before_any_kernel(lambda: dw(backend=backend, **kwargs), pattern)


SEPARABLE_CASES = [
    ("input-3d-wrong", dict(x=torch.randn(4, 8)), r"input"),
    ("dw-weight-mismatch", dict(dw_w=torch.randn(6, 1, 3, 3)), r"depthwise_weight|weight|channel"),
    ("pw-weight-in-channels", dict(pw_w=torch.randn(6, 5, 1, 1)), r"pointwise_weight"),
    ("pw-weight-not-1x1", dict(pw_w=torch.randn(6, 4, 3, 3)), r"pointwise_weight"),
    ("pw-weight-3d", dict(pw_w=torch.randn(6, 4, 1)), r"pointwise_weight"),
    ("dw-bias-shape", dict(dw_b=torch.randn(6)), r"depthwise_bias"),
    ("pw-bias-shape", dict(pw_b=torch.randn(4)), r"pointwise_bias"),
    ("pw-dtype", dict(pw_w=torch.randn(6, 4, 1, 1, dtype=torch.float64)), r"pointwise_weight|dtype"),
    ("pw-device", dict(pw_w=torch.randn(6, 4, 1, 1, device="meta")), r"pointwise_weight|device"),
    ("stride-0", dict(stride=0), r"stride"),
    ("dilation-0", dict(dilation=0), r"dilation"),
    ("padding-neg", dict(padding=-2), r"padding"),
    ("same-stride2", dict(padding="same", stride=2), r"padding|same|stride"),
    ("dw-activation", dict(depthwise_activation="tanh"), r"depthwise_activation"),
    ("pw-activation", dict(pointwise_activation="swish"), r"pointwise_activation"),
    ("activation-none-string", dict(depthwise_activation=3), r"depthwise_activation"),
    ("int-input", dict(x=torch.ones(2, 4, 8, 8, dtype=torch.int32), dw_w=torch.ones(4, 1, 3, 3, dtype=torch.int32),
                       pw_w=torch.ones(6, 4, 1, 1, dtype=torch.int32)), r"input|dtype|float"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SEPARABLE_CASES, ids=[c[0] for c in SEPARABLE_CASES])
def test_depthwise_separable_conv2d_bad_arguments(backend, case):
    _, kwargs, pattern = case
    raises_before_any_kernel(lambda: sep(backend=backend, **kwargs), pattern)


@pytest.mark.parametrize("fn", [dw, sep], ids=["depthwise", "separable"])
@pytest.mark.parametrize("backend", ["fast", "CUDA", "", None, 3])
def test_unknown_backend(fn, backend):
    with pytest.raises(ERRORS, match=r"backend"):
        fn(backend=backend)


@pytest.mark.parametrize("fn", [dw, sep], ids=["depthwise", "separable"])
def test_cuda_backend_on_cpu_tensor(fn):
    """The "cuda" backend never serves CPU tensors, with or without a GPU."""
    with pytest.raises(RuntimeError, match=r"cuda"):
        fn(backend="cuda")


@pytest.mark.parametrize("fn", [dw, sep], ids=["depthwise", "separable"])
def test_unavailable_backend_raises_runtime_error(fn):
    """Whatever is not in convext.backends('cpu') must refuse CPU tensors with RuntimeError."""
    missing = [b for b in ("cuda", "triton", "cpu", "torch") if b not in convext.backends("cpu")]
    for b in missing:
        with pytest.raises(RuntimeError, match=b):
            fn(backend=b)


def test_the_recorder_sees_kernels():
    """KernelRecorder (which the bad-argument tests rely on) does see a valid call's kernels, on
    every backend: an empty record there means "nothing ran", not "nothing recorded"."""
    for backend in CPU_BACKENDS:
        with KernelRecorder() as rec:
            dw(backend=backend)
            sep(backend=backend)
        assert len(rec.ops) >= 2, (backend, rec.ops)


def test_layer_bad_arguments():
    with pytest.raises(ERRORS, match=r"depth_multiplier"):
        convext.nn.DepthwiseConv2d(4, 3, depth_multiplier=0)
    with pytest.raises(ERRORS, match=r"backend"):
        convext.nn.DepthwiseConv2d(4, 3, backend="fastest")
    with pytest.raises(ERRORS, match=r"depthwise_activation"):
        convext.nn.DepthwiseSeparableConv2d(4, 8, 3, depthwise_activation="tanh")
    with pytest.raises(ERRORS, match=r"pointwise_activation"):
        convext.nn.DepthwiseSeparableConv2d(4, 8, 3, pointwise_activation="leaky_relu")


def test_convert_bad_backend():
    with pytest.raises(ERRORS, match=r"backend"):
        convext.convert(torch.nn.Conv2d(4, 4, 3, groups=4), backend="gpu")
