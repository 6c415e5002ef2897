"""backend="auto" that measures (convext/_autotune.py).

The suite runs with CONVEXT_AUTOTUNE=0 (conftest: the static rule, deterministic); these tests turn
measuring on for themselves, with the cache in a temporary folder and, except where the real timer
itself is tested, a fake timer that says which backend is fastest.
"""
import json
import multiprocessing
import os
import subprocess
import sys
import time
import types

import pytest
import torch
from torch import nn

import convext
from convext import _autotune, _backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = _backend.OPS
CPU_ONLY_CANDIDATES = ("cpu", "torch")


class FakeTimer:
    """Stands in for _autotune.time_candidates: runs every candidate once (the real arguments must
    work with each) and answers the given times; refuses to run while torch.compile traces."""

    def __init__(self, **times):
        self.times = times
        self.seen = []  # candidate names of each measurement
        self.results = []

    def __call__(self, calls, device):
        assert not torch.compiler.is_compiling(), "timed inside a trace"
        self.seen.append(tuple(calls))
        for fn in calls.values():
            self.results.append(fn())
        return {n: self.times.get(n, 1.0) for n in calls}

    @property
    def count(self):
        return len(self.seen)


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """Measuring on, a fresh memory, the cache file in tmp_path; a FakeTimer factory."""
    monkeypatch.setattr(_autotune, "ENABLED", True)
    monkeypatch.setattr(_backend, "FORCED", None)
    _autotune.reset(str(tmp_path))

    def install(**times):
        timer = FakeTimer(**times)
        monkeypatch.setattr(_autotune, "time_candidates", timer)
        return timer
    yield install
    _autotune.reset()


@pytest.fixture
def ran(monkeypatch):
    """Which backends the functional layer dispatches to (after the measurement)."""
    from convext import functional
    names = []
    real = functional._call_depthwise_conv2d

    def spy(name, *a, **k):
        names.append(name)
        return real(name, *a, **k)
    monkeypatch.setattr(functional, "_call_depthwise_conv2d", spy)
    return names


def dw_inputs(N=2, C=8, H=12, k=5, grad=False):
    x = torch.randn(N, C, H, H)
    w = torch.randn(C, 1, k, k, requires_grad=grad)
    return x, w


# --------------------------------------------------------------------------- the candidates


def usable(cuda=False, triton=False, cpu=False):
    return {"cuda": cuda, "triton": triton, "cpu": cpu, "torch": True}


@pytest.mark.parametrize("op", OPS)
def test_candidates_are_the_verified_paths(op):
    every = usable(cuda=True, triton=True, cpu=True)
    assert _backend.auto_candidates("cuda", op, every) == ("cuda", "torch")
    assert _backend.auto_candidates("cuda", op, every, unverified=True) == ("cuda", "triton", "torch")
    assert _backend.auto_candidates("cuda", op, usable(triton=True)) == ("torch",)
    assert _backend.auto_candidates("cpu", op, every, unverified=True) == ("cpu", "torch")  # never the interpreter
    assert _backend.auto_candidates("cpu", op, usable(triton=True)) == ("torch",)
    assert _backend.auto_candidates("meta", op, every) == ("torch",)


@pytest.mark.parametrize("op", OPS)
def test_the_static_choice_is_always_a_candidate(op):
    flags = [(c, t, p) for c in (0, 1) for t in (0, 1) for p in (0, 1)]
    for device_type in ("cpu", "cuda", "meta"):
        for c, t, p in flags:
            u = usable(cuda=bool(c), triton=bool(t), cpu=bool(p))
            for unverified in (False, True):
                for ks, cl in (((3, 3), False), ((3, 3), True), ((7, 7), False)):
                    static = _backend.auto_choice(device_type, op, u, unverified=unverified, kernel_size=ks,
                                                  dilation=(1, 1), channels_last=cl)
                    assert static in _backend.auto_candidates(device_type, op, u, unverified=unverified)


@pytest.mark.parametrize("switch", [False, True])
def test_resolve_hands_the_candidates_to_the_tuner_on_cuda(monkeypatch, switch):
    """No GPU needed: a stand-in CUDA tensor; the tuner sees cuda/torch, and triton only with the switch."""
    monkeypatch.setattr(_autotune, "ENABLED", True)
    monkeypatch.setattr(_backend, "FORCED", None)
    monkeypatch.setitem(_backend._USABLE, "cuda", usable(cuda=True, triton=True))
    monkeypatch.setattr(_backend, "AUTO_UNVERIFIED", switch)
    seen = {}

    def choose(op, tensors, extra, run, candidates, static):
        seen.update(candidates=candidates, static=static)
        return static
    monkeypatch.setattr(_autotune, "choose", choose)
    monkeypatch.setattr(_autotune, "settled", lambda op, tensors, extra: False)
    x = types.SimpleNamespace(device=torch.device("cuda", 0))
    _backend.resolve("auto", x, "depthwise_conv2d", (3, 3), (1, 1), tune=((x,), (), None))
    assert seen["candidates"] == (("cuda", "triton", "torch") if switch else ("cuda", "torch"))
    assert seen["static"] == "cuda"


# --------------------------------------------------------------------------- measuring


@pytest.mark.parametrize("fastest", ["cpu", "torch"])
def test_first_call_times_the_candidates_then_uses_the_fastest(tuning, ran, fastest):
    timer = tuning(**{fastest: 1.0, ({"cpu", "torch"} - {fastest}).pop(): 2.0})
    x, w = dw_inputs()
    ref = torch.nn.functional.conv2d(x, w, padding=2, groups=8)
    for _ in range(3):
        y = convext.depthwise_conv2d(x, w, padding=2)
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    assert timer.seen == [CPU_ONLY_CANDIDATES]  # once, only cpu and torch (never the Triton interpreter)
    assert ran[-2:] == [fastest, fastest]  # the calls after the measurement
    assert "triton" in convext.backends("cpu") or not os.environ.get("TRITON_INTERPRET")


def test_torch_is_kept_on_a_near_tie(tuning, ran):
    tuning(cpu=0.99, torch=1.0)  # 1% faster: within TIE
    x, w = dw_inputs()
    convext.depthwise_conv2d(x, w, padding=2)
    convext.depthwise_conv2d(x, w, padding=2)
    assert ran[-1] == "torch"
    assert _autotune.pick({"cpu": 0.5, "torch": 1.0}, "torch") == "cpu"
    assert _autotune.pick({}, "cpu") == "cpu"  # nothing could be timed: the static rule


def test_key_has_the_direction_shape_layout_and_dtype(tuning):
    timer = tuning(cpu=1.0, torch=2.0)
    x, w = dw_inputs(grad=True)
    convext.depthwise_conv2d(x, w, padding=2)  # training: w needs a gradient
    assert timer.count == 1
    with torch.no_grad():
        convext.depthwise_conv2d(x, w, padding=2)  # inference
    assert timer.count == 2
    convext.depthwise_conv2d(x.detach(), w.detach(), padding=2)  # inference too: nothing needs a gradient
    assert timer.count == 2
    grads = [r for r in timer.results if isinstance(r, tuple)]
    assert len(grads) == 2 and all(g[0].shape == w.shape for g in grads)  # training timed forward + backward
    assert w.grad is None  # ... without touching the caller's tensors
    convext.depthwise_conv2d(x[:1], w, padding=2)  # another batch size
    convext.depthwise_conv2d(x.contiguous(memory_format=torch.channels_last), w, padding=2)  # another layout
    convext.depthwise_conv2d(x, w, padding=1)  # another geometry
    convext.depthwise_conv2d(x.double(), w.double(), padding=2)  # another dtype
    assert timer.count == 6
    directions = {k[5] for k in _autotune._EXACT}
    assert directions == {"train", "infer"}


@pytest.mark.parametrize("op", OPS + ("depthwise_conv1d",))
def test_every_op_is_measured_and_stays_exact(tuning, op):
    timer = tuning(cpu=1.0, torch=2.0)
    x = torch.randn(2, 6, 9, 9)
    if op == "depthwise_conv2d":
        call = lambda: convext.depthwise_conv2d(x, torch.ones(6, 1, 3, 3), stride=2, padding=1)  # noqa: E731
        ref = torch.nn.functional.conv2d(x, torch.ones(6, 1, 3, 3), stride=2, padding=1, groups=6)
    elif op == "depthwise_separable_conv2d":
        dw, pw = torch.randn(6, 1, 3, 3), torch.randn(4, 6, 1, 1)
        call = lambda: convext.depthwise_separable_conv2d(x, dw, pw, padding=1, pointwise_activation="relu")  # noqa
        ref = torch.relu(torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, dw, padding=1, groups=6), pw))
    elif op == "depthwise_conv_transpose2d":
        wt = torch.randn(6, 2, 3, 3)
        call = lambda: convext.depthwise_conv_transpose2d(x, wt, stride=2)  # noqa: E731
        ref = torch.nn.functional.conv_transpose2d(x, wt, stride=2, groups=6)
    else:
        x1, w1 = torch.randn(2, 6, 30), torch.randn(6, 1, 4)
        call = lambda: convext.depthwise_conv1d(x1, w1, causal=True, dilation=2)  # noqa: E731
        ref = torch.nn.functional.conv1d(torch.nn.functional.pad(x1, (6, 0)), w1, dilation=2, groups=6)
    for _ in range(2):
        torch.testing.assert_close(call(), ref, rtol=1e-4, atol=1e-4)
    assert timer.seen == [CPU_ONLY_CANDIDATES]
    assert {k[0] for k in _autotune._EXACT} == {op if op != "depthwise_conv1d" else "depthwise_conv2d"}


def test_a_cached_choice_that_is_no_longer_a_candidate_is_timed_again(tuning):
    timer = tuning(cpu=1.0, torch=2.0)
    x, w = dw_inputs()
    convext.depthwise_conv2d(x, w, padding=2)
    (key,) = _autotune._EXACT
    _autotune._EXACT[key] = "triton"  # e.g. chosen under CONVEXT_AUTO_UNVERIFIED=1 on another setup
    convext.depthwise_conv2d(x, w, padding=2)
    assert timer.count == 2 and _autotune._EXACT[key] == "cpu"


def test_nothing_is_timed_on_fake_or_meta_tensors(tuning):
    timer = tuning(cpu=1.0, torch=2.0)
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x, w = torch.randn(2, 8, 12, 12), torch.randn(8, 1, 5, 5)
        y = convext.depthwise_conv2d(x, w, padding=2)
    assert y.shape == (2, 8, 12, 12)
    y = convext.depthwise_conv2d(torch.randn(2, 8, 12, 12, device="meta"), torch.randn(8, 1, 5, 5, device="meta"),
                                 padding=2)
    assert y.device.type == "meta" and timer.count == 0


def test_nothing_is_timed_under_a_dispatch_mode(tuning):
    """A mode that sees every op (here the FLOP counter) must see the user's call alone."""
    timer = tuning(cpu=1.0, torch=2.0)
    from torch.utils.flop_counter import FlopCounterMode
    x, w = dw_inputs()
    with FlopCounterMode(display=False) as counter:
        convext.depthwise_conv2d(x, w, padding=2, backend="torch")
    one_call = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        convext.depthwise_conv2d(x, w, padding=2)
    assert timer.count == 0 and counter.get_total_flops() in (0, one_call)


# --------------------------------------------------------------------------- the cache file


def _file(tmp_path):
    with open(tmp_path / _autotune.CACHE_FILE) as f:
        return json.load(f)["entries"]


def test_choices_are_written_and_read_by_the_next_process(tuning, tmp_path, ran):
    timer = tuning(cpu=2.0, torch=1.0)
    x, w = dw_inputs()
    convext.depthwise_conv2d(x, w, padding=2)
    (entry,) = _file(tmp_path).values()
    assert entry["backend"] == "torch" and entry["ms"] == {"cpu": 2000.0, "torch": 1000.0}
    assert entry["versions"] == _autotune.versions() and entry["device"] == _autotune.device_name("cpu", None)
    _autotune.reset(str(tmp_path))  # a new process: empty memory, same cache folder
    convext.depthwise_conv2d(x, w, padding=2)
    assert timer.count == 1 and ran[-1] == "torch" and _autotune.stats()["loaded"] == 1


@pytest.mark.parametrize("field", ["torch", "convext", "convext_C", "triton", "device"])
def test_entries_of_other_versions_or_devices_are_ignored(tuning, tmp_path, field):
    timer = tuning(cpu=2.0, torch=1.0)
    x, w = dw_inputs()
    convext.depthwise_conv2d(x, w, padding=2)
    path = tmp_path / _autotune.CACHE_FILE
    data = json.loads(path.read_text())
    for e in data["entries"].values():
        if field == "device":
            e["device"] = "Some Other CPU"
        else:
            e["versions"][field] = "0.0.0-other"
    path.write_text(json.dumps(data))
    _autotune.reset(str(tmp_path))
    convext.depthwise_conv2d(x, w, padding=2)
    assert timer.count == 2  # stale: timed again
    # the new entry replaces the stale one of this device; another device's entry stays
    assert len(_file(tmp_path)) == (2 if field == "device" else 1)


def test_writes_merge_with_what_other_processes_wrote(tuning, tmp_path):
    tuning(cpu=1.0, torch=2.0)
    other = {"device": "Other machine", "key": ["depthwise_conv2d", "cpu", {"dtype": "float32"}], "backend": "torch",
             "ms": {}, "work": 1, "versions": {"torch": "x"}, "time": "-"}
    assert _autotune._save([other])
    x, w = dw_inputs()
    convext.depthwise_conv2d(x, w, padding=2)
    entries = _file(tmp_path)
    assert len(entries) == 2 and any(e["device"] == "Other machine" for e in entries.values())
    assert sorted(os.listdir(tmp_path)) == [_autotune.CACHE_FILE, _autotune.CACHE_FILE + ".lock"]  # no temp left


def _writer(directory, worker, n):
    _autotune.reset(directory)
    for i in range(n):
        e = {"device": f"worker{worker}", "key": ["op", i], "backend": "torch", "ms": {}, "work": 0,
             "versions": {}, "time": "-"}
        assert _autotune._save([e])


def test_several_processes_writing_at_once_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k, 12)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    entries = _file(tmp_path)
    assert len(entries) == 36
    assert {e["device"] for e in entries.values()} == {"worker0", "worker1", "worker2"}


def test_an_unwritable_cache_keeps_choices_in_memory(tuning, tmp_path, capfd):
    fake = tuning(cpu=1.0, torch=2.0)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    _autotune.reset(str(blocker / "cache"))
    x, w = dw_inputs()
    convext.depthwise_conv2d(x, w, padding=2)
    convext.depthwise_conv2d(x, w, padding=2)
    x2, w2 = dw_inputs(C=4)
    convext.depthwise_conv2d(x2, w2, padding=2)
    err = capfd.readouterr().err
    assert err.count("cannot write the autotune cache") == 1 and "CONVEXT_CACHE_DIR" in err
    assert fake.count == 2 and len(_autotune._EXACT) == 2


def test_cache_dir_default_and_env(monkeypatch):
    _autotune.reset()
    monkeypatch.setenv("CONVEXT_CACHE_DIR", "/some/where")
    assert _autotune.cache_path() == os.path.join("/some/where", _autotune.CACHE_FILE)
    monkeypatch.delenv("CONVEXT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert _autotune.cache_dir() == os.path.join("/xdg", "convext")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _autotune.cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "convext")


# --------------------------------------------------------------------------- reporting


def test_the_cost_is_reported_once(tuning, capfd, tmp_path):
    tuning(cpu=1.0, torch=2.0)
    a, wa = dw_inputs()
    b, wb = dw_inputs(C=4)
    c, wc = dw_inputs(C=2)
    for _ in range(3):  # a "model" of four layers (two alike), three forward passes
        convext.depthwise_conv2d(a, wa, padding=2)
        convext.depthwise_conv2d(b, wb, padding=2)
        convext.depthwise_conv2d(b, wb, padding=2)
        convext.depthwise_conv2d(c, wc, padding=2)
    err = capfd.readouterr().err
    assert err.count("convext: backend='auto' timed") == 1
    assert "on 3 new shapes in" in err and str(tmp_path / _autotune.CACHE_FILE) in err  # after the first pass
    assert _autotune.report() is None  # said once: not again at exit


def test_the_cost_is_reported_at_exit_when_nothing_came_round_again(tuning):
    tuning(cpu=1.0, torch=2.0)
    x, w = dw_inputs()
    convext.depthwise_conv2d(x, w, padding=2)
    msg = _autotune.report(file=open(os.devnull, "w"))  # what atexit calls
    assert msg is not None and "on 1 new shape in" in msg


# --------------------------------------------------------------------------- the real timer


def test_real_timer_takes_each_candidates_fastest_sample():
    """Rounds interleave; a candidate slowed down in most rounds (another process, a descheduled thread)
    still wins on its fastest sample when that is its real cost; a candidate that raises is left out."""
    calls = {"spiky": 0, "steady": 0, "broken": 0}
    order = []

    def spiky():
        calls["spiky"] += 1
        order.append("spiky")
        time.sleep(0.1 if calls["spiky"] in (3, 4, 5) else 0.002)  # the first three rounds disturbed

    def steady():
        calls["steady"] += 1
        order.append("steady")
        time.sleep(0.02)

    def broken():
        calls["broken"] += 1
        raise RuntimeError("this backend cannot run this case")
    times = _autotune.time_candidates({"spiky": spiky, "steady": steady, "broken": broken}, torch.device("cpu"))
    assert set(times) == {"spiky", "steady"} and times["spiky"] < 0.02 <= times["steady"]
    assert calls == {"spiky": 2 + _autotune.ROUNDS, "steady": 2 + _autotune.ROUNDS, "broken": 1}
    rounds = order[4:]  # after warm-up and calibration: one call each per round, the order rotating
    assert rounds[:4] == ["spiky", "steady", "steady", "spiky"]
    assert _autotune.pick(times, "steady") == "spiky"


def test_real_measurement_on_a_converted_model_gives_the_same_function(tmp_path, monkeypatch):
    monkeypatch.setattr(_autotune, "ENABLED", True)
    monkeypatch.setattr(_backend, "FORCED", None)
    _autotune.reset(str(tmp_path))
    try:
        model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 16, 1),
                              nn.Conv2d(16, 16, 5, padding=2, groups=16)).eval()
        fast = convext.convert(model)
        x = torch.randn(2, 8, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
        loss = fast(x).square().mean()
        loss.backward()
        assert _autotune.stats()["timed"] >= 2 and os.path.exists(_autotune.cache_path())
        assert set(_autotune._EXACT.values()) <= {"cpu", "torch"}
    finally:
        _autotune.reset()


# --------------------------------------------------------------------------- torch.compile


class GraphRecorder:
    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append([str(n.target) for n in gm.graph.nodes if n.op == "call_function"])
        return gm.forward


def _uses_convext_op(graph):
    return any("convext" in t for t in graph)


def test_compile_fullgraph_uses_the_known_choice_and_never_times(tuning):
    timer = tuning(cpu=2.0, torch=1.0)  # torch is faster: the static rule (k5, NCHW: cpu) is overridden
    x, w = dw_inputs()

    def f(x, w):
        return convext.depthwise_conv2d(x, w, padding=2) * 2

    f(x, w)  # eager: measured
    assert timer.count == 1
    torch._dynamo.reset()
    rec = GraphRecorder()
    cf = torch.compile(f, fullgraph=True, backend=rec)
    torch.testing.assert_close(cf(x, w), f(x, w))
    assert len(rec.graphs) == 1 and not _uses_convext_op(rec.graphs[0])  # torch's conv, as measured
    assert timer.count == 1


def test_compile_without_a_known_choice_takes_the_static_rule(tuning):
    timer = tuning(cpu=2.0, torch=1.0)
    x, w = dw_inputs()
    torch._dynamo.reset()
    rec = GraphRecorder()
    cf = torch.compile(lambda x, w: convext.depthwise_conv2d(x, w, padding=2), fullgraph=True, backend=rec)
    cf(x, w)
    assert timer.count == 0 and _uses_convext_op(rec.graphs[0])  # static rule: cpu (k5, NCHW)


def test_compile_reads_the_cache_file_when_tracing(tuning, tmp_path):
    tuning(cpu=2.0, torch=1.0)
    x, w = dw_inputs()
    convext.depthwise_conv2d(x, w, padding=2)
    _autotune.reset(str(tmp_path))  # a fresh process with a warm cache
    timer = tuning(cpu=2.0, torch=1.0)
    torch._dynamo.reset()
    rec = GraphRecorder()
    cf = torch.compile(lambda x, w: convext.depthwise_conv2d(x, w, padding=2), fullgraph=True, backend=rec)
    cf(x, w)
    assert timer.count == 0 and not _uses_convext_op(rec.graphs[0]) and _autotune.stats()["loaded"] == 1


def test_compile_dynamic_batch_does_not_specialise_on_the_choice(tuning):
    tuning(cpu=2.0, torch=1.0)
    x, w = dw_inputs(N=2)
    convext.depthwise_conv2d(x, w, padding=2)
    torch._dynamo.reset()
    rec = GraphRecorder()
    cf = torch.compile(lambda x, w: convext.depthwise_conv2d(x, w, padding=2), fullgraph=True, backend=rec,
                       dynamic=True)
    for n in (3, 5, 7):
        cf(torch.randn(n, 8, 12, 12), w)
    assert len(rec.graphs) == 1 and not _uses_convext_op(rec.graphs[0])


# --------------------------------------------------------------------------- environment


def _run_python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("CONVEXT_AUTOTUNE", "CONVEXT_BACKEND")}
    full_env.update(env)
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True,
                       timeout=300)
    return r.returncode, r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "", r.stderr


def test_environment_is_read_at_import():
    code = "import convext; print(convext._backend.FORCED, convext._autotune.ENABLED)"
    assert _run_python(code, CONVEXT_BACKEND="torch", CONVEXT_AUTOTUNE="0")[1] == "torch False"


def test_environment_values(monkeypatch):
    for raw, forced in (("", None), ("auto", None), ("torch", "torch"), (" cpu ", "cpu"), ("cuda", "cuda")):
        monkeypatch.setenv("CONVEXT_BACKEND", raw)
        assert _backend._read_forced() == (forced, None)
    monkeypatch.setenv("CONVEXT_BACKEND", "cudaa")
    forced, error = _backend._read_forced()
    assert forced is None and "CONVEXT_BACKEND='cudaa' is not a backend" in error and "cpu" in error
    for raw, enabled in (("", True), ("1", True), ("on", True), ("0", False), ("false", False), ("OFF", False)):
        monkeypatch.setenv("CONVEXT_AUTOTUNE", raw)
        assert _autotune._read_enabled() == (enabled, None)
    monkeypatch.delenv("CONVEXT_AUTOTUNE")
    assert _autotune._read_enabled() == (True, None)  # measuring is the default outside the tests
    monkeypatch.setenv("CONVEXT_AUTOTUNE", "maybe")
    assert "CONVEXT_AUTOTUNE='maybe' is not understood" in _autotune._read_enabled()[1]


def test_a_bad_setting_is_an_error_at_the_first_auto_call(monkeypatch):
    monkeypatch.setattr(_backend, "ENV_ERROR", "convext: CONVEXT_BACKEND='cudaa' is not a backend: ...")
    x, w = dw_inputs()
    with pytest.raises(ValueError, match="CONVEXT_BACKEND='cudaa'"):
        convext.depthwise_conv2d(x, w)
    convext.depthwise_conv2d(x, w, backend="torch")  # an explicit backend does not read it


def test_a_forced_backend_that_cannot_run_says_so(monkeypatch):
    monkeypatch.setattr(_backend, "FORCED", "cuda")
    x, w = dw_inputs()
    with pytest.raises(RuntimeError, match="CONVEXT_BACKEND=cuda forces backend 'cuda'.*not available for this cpu"):
        convext.depthwise_conv2d(x, w)


def test_forced_backend_replaces_auto_everywhere_but_not_an_explicit_choice(tuning, monkeypatch, ran):
    timer = tuning(cpu=1.0, torch=2.0)
    monkeypatch.setattr(_backend, "FORCED", "torch")
    x, w = dw_inputs()
    convext.depthwise_conv2d(x, w, padding=2)
    convext.nn.DepthwiseConv2d(8, 3, padding=1)(x)
    convext.depthwise_conv2d(x, w, padding=2, backend="cpu")
    assert ran == ["torch", "torch", "cpu"] and timer.count == 0
