"""The run-time switch registry (convext/_switches.py, csrc/switches.h, docs/SWITCHES.md).

The registry, the C++ header and the documentation list the same switches with the same read
rules; every reader goes through them; each switch testable on CPU does what it says (in child
processes: several are read once); values not understood are an error or a warning naming the
variable."""
import os
import re
import subprocess
import sys

import pytest

import convext
from convext import _ext, _switches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_ext = pytest.mark.skipif(not _ext.compiled_available(), reason="convext._C not built")

ALL_SWITCHES = tuple(_switches.SWITCHES)


def _run(code, **env):
    """Runs `code` in a fresh interpreter with no switch set but `env`; (stdout's last line, stderr)."""
    full = {k: v for k, v in os.environ.items() if k not in ALL_SWITCHES or k in ("TRITON_INTERPRET",)}
    full.update(env)
    full["PYTHONPATH"] = ROOT + os.pathsep + full.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    return (lines[-1] if lines else ""), r.stderr


# --------------------------------------------------------------------------- one list everywhere


def _header_switches():
    text = open(os.path.join(ROOT, "csrc", "switches.h")).read()
    consts = dict(re.findall(r'constexpr const char\* (k\w+Env) = "(\w+)";', text))
    table = re.search(r"kSwitches\[\] = \{(.*?)\};", text, re.S).group(1)
    return {consts[k]: read for k, read in re.findall(r'\{(k\w+Env), "([^"]+)"\}', table)}


def test_registry_and_header_agree_on_names_and_read_rules():
    header = _header_switches()
    registry = {n: _switches.SWITCHES[n].read for n in _switches.names("c++")}
    assert header == registry
    assert len(header) == 4


@needs_ext
def test_compiled_view_agrees_with_registry():
    assert _switches.cpp_names() == {n: _switches.SWITCHES[n].read for n in _switches.names("c++")}
    view = _switches.cpp_view()
    assert set(view) == set(_switches.names("c++"))
    for name, entry in view.items():
        assert entry["read"] == _switches.SWITCHES[name].read


def test_documentation_table_lists_every_switch():
    text = open(os.path.join(ROOT, "docs", "SWITCHES.md")).read()
    rows = re.findall(r"^\| `(\w+)` \|[^|]*\|[^|]*\| ([^|]+?) \|", text, re.M)
    assert {name for name, _ in rows} == set(_switches.SWITCHES)
    for name, read in rows:
        assert read.strip() == _switches.SWITCHES[name].read, name


def test_every_reader_goes_through_the_registry():
    """No direct environment read of a switch outside csrc/switches.h and convext/_switches.py
    (convext/triton/ still reads its own: listed with layer "triton", wired later)."""
    offenders = []
    for base, _, files in os.walk(os.path.join(ROOT, "csrc")):
        for f in files:
            path = os.path.join(base, f)
            if f != "switches.h" and "getenv" in open(path).read():
                offenders.append(path)
    pkg = os.path.join(ROOT, "convext")
    for base, dirs, files in os.walk(pkg):
        dirs[:] = [d for d in dirs if d not in ("triton", "__pycache__")]
        for f in files:
            if f.endswith(".py") and f != "_switches.py":
                text = open(os.path.join(base, f)).read()
                if re.search(r"environ(\.get)?[\[(]\s*[\"'](CONVEXT_|TRITON_)", text):
                    offenders.append(os.path.join(base, f))
    assert offenders == []
    for s in _switches.SWITCHES.values():
        assert s.read in ("import", "once", "per call") and s.layer in ("python", "c++", "triton", "tests")
        assert s.meaning and s.values and s.default


def test_unregistered_name_is_refused():
    with pytest.raises(KeyError, match="CONVEXT_NOPE"):
        _switches.raw("CONVEXT_NOPE")


# --------------------------------------------------------------------------- CONVEXT_DISABLE_FAST_PATHS


@needs_ext
@pytest.mark.parametrize("value, disabled, unknown", [
    (None, (), ()),
    ("", (), ()),
    ("0", (), ()),
    ("gather", ("gather",), ()),
    ("colstrip,nhwc2", ("colstrip", "nhwc2"), ()),
    (" NHWCBAL , gather ", ("gather", "nhwcbal"), ()),
    ("wgrad_cl", ("wgrad_cl",), ()),
    ("wgrad_planar,gather", ("gather", "wgrad_planar"), ()),
    ("cpu_cblock", ("cpu_cblock",), ()),
    ("all", ("gather", "colstrip", "nhwcbal", "nhwc2", "wgrad_cl", "wgrad_planar", "cpu_cblock"), ()),
    ("1", ("gather", "colstrip", "nhwcbal", "nhwc2", "wgrad_cl", "wgrad_planar", "cpu_cblock"), ()),
    ("gathr", (), ("gathr",)),  # a typo switches nothing off (it used to switch everything off)
    ("nhwc", (), ("nhwc",)),  # no substring matching
    ("gather,xyz,,colstrip", ("gather", "colstrip"), ("xyz",)),
])
def test_disable_fast_paths_parser(value, disabled, unknown):
    assert _switches.parse_disable_fast_paths(value) == (disabled, unknown)


@needs_ext
def test_disable_fast_paths_is_read_once_and_warns_on_unknown_tokens():
    code = ("import os, convext; from convext import _switches as s; a = s.cpp_view()['CONVEXT_DISABLE_FAST_PATHS'];"
            " os.environ['CONVEXT_DISABLE_FAST_PATHS'] = 'all'; b = s.cpp_view()['CONVEXT_DISABLE_FAST_PATHS'];"
            " print(a['raw'], a['value'], b['raw'], b['value'])")
    out, err = _run(code, CONVEXT_DISABLE_FAST_PATHS="gather,gathr")
    assert out == "gather,gathr ('gather',) gather,gathr ('gather',)"  # the later change is not seen
    assert "CONVEXT_DISABLE_FAST_PATHS=gather,gathr" in err and "'gathr'" in err


# --------------------------------------------------------------------------- CONVEXT_CPU_ISA

_ISA_CODE = """
import hashlib, torch, convext
torch.manual_seed(0)
x = torch.randn(4, 16, 48, 48); g = torch.randn(4, 16, 48, 48)
gw, _ = torch.ops.convext.depthwise_conv2d_backward_weight(g, x, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], False)
ref = torch.nn.grad.conv2d_weight(x.double(), (16, 1, 3, 3), g.double(), padding=1, groups=16)
assert torch.allclose(gw.double(), ref, rtol=1e-4, atol=1e-3)
v = convext._switches.cpp_view()["CONVEXT_CPU_ISA"]
print(v["value"], v["hardware"], hashlib.md5(gw.numpy().tobytes()).hexdigest())
"""


@needs_ext
def test_cpu_isa_selects_the_kernel_copy():
    """Each copy of the plane kernels reduces grad-weight over a different number of vector lanes, so
    the copy that ran shows in the low bits of a large reduction (all of them correct). The channel
    blocks give every copy the same per-channel order (a lane is a channel): switched off here."""
    levels = ("default", "avx2", "avx512")
    results = {}
    for cap in (None, "default", "avx2", "avx512"):
        out, _ = _run(_ISA_CODE, CONVEXT_DISABLE_FAST_PATHS="cpu_cblock", **({"CONVEXT_CPU_ISA": cap} if cap else {}))
        value, hardware, digest = out.split()
        expect = hardware if cap in (None, "avx512") else levels[min(levels.index(cap), levels.index(hardware))]
        assert value == expect, (cap, value, hardware)
        results.setdefault(value, set()).add(digest)
    assert all(len(d) == 1 for d in results.values())  # one copy, one result
    digests = [next(iter(d)) for d in results.values()]
    assert len(set(digests)) == len(digests)  # different copies ran


@needs_ext
def test_cpu_isa_not_understood_warns_and_keeps_the_widest():
    code = ("import torch, convext; convext.depthwise_conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3), "
            "backend='cpu'); v = convext._switches.cpp_view()['CONVEXT_CPU_ISA']; print(v['value'] == v['hardware'])")
    out, err = _run(code, CONVEXT_CPU_ISA="sse9")
    assert out == "True"
    assert "CONVEXT_CPU_ISA=sse9 is not understood" in err


# --------------------------------------------------------------------------- CUDA flags (read per call)


@needs_ext
def test_cuda_flags_are_read_per_call(monkeypatch):
    for name in ("CONVEXT_CUDA_TC", "CONVEXT_CUDA_NONFINITE"):
        monkeypatch.delenv(name, raising=False)
        assert _switches.cpp_view()[name]["value"] is False
        monkeypatch.setenv(name, "1")
        assert _switches.cpp_view()[name] == {"read": "per call", "raw": "1", "value": True}
        monkeypatch.setenv(name, "0")
        assert _switches.cpp_view()[name]["value"] is False


@needs_ext
def test_cuda_flag_not_understood_warns():
    out, err = _run("import convext; print(convext._switches.cpp_view()['CONVEXT_CUDA_TC']['value'])",
                    CONVEXT_CUDA_TC="yes")
    assert out == "False" and "CONVEXT_CUDA_TC=yes is not understood" in err


# --------------------------------------------------------------------------- Python switches

_RESOLVE = ("import torch, convext; from convext import _backend; x = torch.randn(1, 4, 9, 9); "
            "print(_backend.resolve('auto', x, 'depthwise_conv2d', kernel_size=(5, 5), dilation=(1, 1)))")


@needs_ext
def test_backend_forces_auto():
    assert _run(_RESOLVE, CONVEXT_AUTOTUNE="0")[0] == "cpu"
    assert _run(_RESOLVE, CONVEXT_AUTOTUNE="0", CONVEXT_BACKEND="torch")[0] == "torch"
    # an explicit backend still wins
    code = _RESOLVE.replace("resolve('auto'", "resolve('cpu'")
    assert _run(code, CONVEXT_BACKEND="torch")[0] == "cpu"


def test_backend_not_understood_is_an_error_naming_it():
    code = ("import torch, convext\ntry:\n    convext.depthwise_conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3))\n"
            "except ValueError as e:\n    print(e)")
    assert "CONVEXT_BACKEND='cudaa' is not a backend" in _run(code, CONVEXT_BACKEND="cudaa")[0]


@needs_ext
def test_autotune_switch_times_or_not(tmp_path):
    code = ("import torch, convext; from convext import _autotune; "
            "convext.depthwise_conv2d(torch.randn(1, 4, 9, 9), torch.randn(4, 1, 5, 5), padding=2); "
            "import os; print(_autotune.ENABLED, _autotune.stats()['timed'], os.path.exists(_autotune.cache_path()))")
    on, _ = _run(code, CONVEXT_AUTOTUNE="1", CONVEXT_CACHE_DIR=str(tmp_path / "on"))
    off, _ = _run(code, CONVEXT_AUTOTUNE="0", CONVEXT_CACHE_DIR=str(tmp_path / "off"))
    assert on == "True 1 True"  # timed once, choice written under CONVEXT_CACHE_DIR
    assert off == "False 0 False"
    assert os.path.exists(tmp_path / "on" / "autotune.json")


@pytest.mark.parametrize("name", ["CONVEXT_AUTOTUNE", "CONVEXT_AUTO_UNVERIFIED"])
def test_bool_switch_not_understood_is_an_error_naming_it(name):
    code = ("import torch, convext\ntry:\n    convext.depthwise_conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3))\n"
            "except ValueError as e:\n    print(e)")
    assert f"{name}='maybe' is not understood" in _run(code, **{name: "maybe"})[0]


@pytest.mark.parametrize("raw, value", [("", False), ("1", True), ("TRUE", True), (" on ", True), ("0", False),
                                        ("no", False)])
def test_read_bool(monkeypatch, raw, value):
    monkeypatch.setenv("CONVEXT_AUTO_UNVERIFIED", raw)
    assert _switches.read_bool("CONVEXT_AUTO_UNVERIFIED") == (value, None)


def test_cache_dir_is_read_per_call(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVEXT_CACHE_DIR", str(tmp_path))
    assert convext._autotune.cache_dir() == str(tmp_path)
    monkeypatch.setenv("CONVEXT_CACHE_DIR", str(tmp_path / "b"))
    assert convext._autotune.cache_dir() == str(tmp_path / "b")
