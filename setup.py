"""Builds convext._C: C++ CPU kernels always, CUDA kernels whenever they can be built.

csrc/cuda/ is built whenever torch is a CUDA build and a CUDA toolkit (nvcc) is found; no visible
GPU is needed (a Docker build or a login node has none), as with other CUDA extension libraries.

Environment:
  CONVEXT_SKIP_CUDA=1    build the CPU kernels only
  TORCH_CUDA_ARCH_LIST   CUDA architectures (torch's own variable, e.g. "9.0" or "8.0;9.0+PTX"). Default:
                         the visible GPUs; with none visible, DEFAULT_CUDA_ARCHS (8.0;9.0;10.0;12.0+PTX,
                         less what the toolkit's nvcc cannot build). The kernels use bf16 WMMA, so every
                         architecture must be 8.0 or newer (7.5 and older fail to compile).
  CUDA_HOME              the CUDA toolkit (default /usr/local/cuda when it has bin/nvcc)
  MAX_JOBS               parallel compile jobs (torch's own variable, read by ninja)
  CONVEXT_FORCE_CUDA=1   accepted for older scripts (.ci/run sets it); no effect, CUDA is built anyway

The extension is built for Python's stable ABI (py_limited_api, as PyTorch's extension-cpp does): it uses only
the stable-ABI part of the Python C API, to create the module `convext._C` and its switches view
(csrc/ops.cpp; the ops register through TORCH_LIBRARY), so one build (`convext/_C.abi3.so`, an abi3 wheel: tools/build_wheel.sh) loads on every
CPython >= 3.10 -- the version torch's cpp_extension pins with -DPy_LIMITED_API -- against the torch it was
built with.
"""
import glob
import os
import subprocess
import sys
import sysconfig

from setuptools import find_packages, setup

if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

try:
    import torch  # noqa: E402
    from torch.utils import cpp_extension  # noqa: E402
except ImportError as _e:  # pip's / build's isolated build environment has no torch: say what to run instead
    sys.exit(f"""
[convext] the build needs torch and cannot import it ({_e}).

convext._C compiles against the torch it will run with, so it is built in your environment, not in an
isolated one (pip install . and python -m build isolate the build and hide your torch). Run instead:

    pip install --no-build-isolation -e .         # from the clone, editable (or: pip install --no-build-isolation .)
    python -m build --no-isolation --wheel        # a wheel, with the build package installed

in an environment that already has torch and setuptools>=64, or simply: bash tools/dev.sh build
No torch yet? pip install torch    (a CPU-only machine: pip install torch --index-url https://download.pytorch.org/whl/cpu)
""")

ROOT = os.path.dirname(os.path.abspath(__file__))


# Oldest architecture the kernels compile for (bf16 WMMA fragments in depthwise_conv2d_tc.cu need
# sm_80; sm_75 fails). One cubin per major version covers its minor versions (8.0 runs on 8.6 and
# 8.9, 10.0 on 10.3, 12.0 on 12.1); PTX of the newest lets the driver JIT for later GPUs.
MIN_CUDA_ARCH = (8, 0)
DEFAULT_CUDA_ARCHS = ("8.0", "9.0", "10.0", "12.0")

_UNSET = object()


def _flag(name, env=None):
    env = os.environ if env is None else env
    return env.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _want_cuda(env=None, torch_cuda=_UNSET, cuda_home=_UNSET):
    """(build csrc/cuda?, why). No GPU needed: a CUDA build of torch and a toolkit with nvcc suffice.
    The arguments default to this process's environment, torch and toolkit (tests pass their own)."""
    env = os.environ if env is None else env
    torch_cuda = torch.version.cuda if torch_cuda is _UNSET else torch_cuda
    cuda_home = cpp_extension.CUDA_HOME if cuda_home is _UNSET else cuda_home
    if _flag("CONVEXT_SKIP_CUDA", env):
        return False, "CONVEXT_SKIP_CUDA=1"
    if torch_cuda is None:
        return False, "torch is a CPU-only build"
    if cuda_home is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    if not os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        return False, f"no nvcc in CUDA_HOME={cuda_home}"
    return True, f"torch built with CUDA {torch_cuda}, toolkit at {cuda_home}"


def _parse_arch(entry):
    """'8.6', '9.0a', '12.0+PTX' -> (8, 6) ...; None for a name torch accepts ('Ampere', ...)."""
    head = entry.split("+")[0].strip()
    major, _, minor = head.partition(".")
    if not major.isdigit():
        return None
    digits = "".join(ch for ch in minor if ch.isdigit())
    return int(major), int(digits or 0)


def _nvcc_archs(cuda_home):
    """The real architectures nvcc can build, as (major, minor); None if it cannot say."""
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--list-gpu-arch"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    archs = set()
    for word in out.split():
        if word.startswith("compute_") and word[8:].isdigit():
            n = int(word[8:])
            archs.add((n // 10, n % 10))
    return archs or None


def _cuda_arch_list(env=None, visible=_UNSET, supported=_UNSET):
    """(TORCH_CUDA_ARCH_LIST value, why). visible: the visible GPUs' (major, minor) capabilities;
    supported: what nvcc builds (None: unknown). Raises SystemExit for an architecture below 8.0."""
    env = os.environ if env is None else env
    given = env.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if given:
        entries = [e for e in given.replace(",", ";").replace(" ", ";").split(";") if e]
        old = [e for e in entries if (_parse_arch(e) or MIN_CUDA_ARCH) < MIN_CUDA_ARCH]
        if old:
            raise SystemExit(f"[convext] TORCH_CUDA_ARCH_LIST={given!r} names {', '.join(old)}: convext's CUDA "
                             f"kernels need compute capability {MIN_CUDA_ARCH[0]}.{MIN_CUDA_ARCH[1]} or newer "
                             f"(bf16 WMMA). Drop them, or set CONVEXT_SKIP_CUDA=1 for a CPU-only build.")
        return given, "TORCH_CUDA_ARCH_LIST"
    if visible is _UNSET:
        visible = ([torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
                   if torch.cuda.is_available() else [])
    if supported is _UNSET:
        supported = _nvcc_archs(cpp_extension.CUDA_HOME) if cpp_extension.CUDA_HOME else None
    if visible:
        archs = sorted({tuple(c) for c in visible if tuple(c) >= MIN_CUDA_ARCH
                        and (supported is None or tuple(c) in supported)})
        if not archs:
            return None, (f"no visible GPU (compute capability {', '.join('%d.%d' % tuple(c) for c in visible)}) "
                          f"is both {MIN_CUDA_ARCH[0]}.{MIN_CUDA_ARCH[1]} or newer (the kernels need it) and "
                          f"buildable by this nvcc; set TORCH_CUDA_ARCH_LIST to build for others")
        why = "the visible GPUs"
    else:
        archs = [_parse_arch(a) for a in DEFAULT_CUDA_ARCHS]
        if supported is not None:
            archs = [a for a in archs if a in supported]
        if not archs:
            return None, f"nvcc builds none of the default architectures {';'.join(DEFAULT_CUDA_ARCHS)}"
        why = "default list (no GPU visible)"
    return ";".join("%d.%d" % a for a in archs) + "+PTX", why


def _cuda_wheel_includes():
    # CUDA 13 torch wheels ship the toolkit headers (cuSPARSE, cuBLAS, ...) that
    # torch's own headers include under site-packages/nvidia/cu13/include.
    dirs = []
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        dirs += glob.glob(os.path.join(base, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(base, "nvidia", "*", "include"))
    return sorted(set(d for d in dirs if os.path.isdir(d)))


# Stable ABI: torch's BuildExtension compiles py_limited_api extensions with -DPy_LIMITED_API=0x030A0000
# (3.10) and links them without libtorch_python; the wheel is tagged to match.
PY_LIMITED_API = "cp310"


class BuildExtension(cpp_extension.BuildExtension):
    """torch's BuildExtension, plus: an in-place build removes the other builds of each extension that
    would shadow it (`_C.cpython-311-x86_64-linux-gnu.so` from before the stable-ABI switch is found
    before `_C.abi3.so` by the import system)."""

    def copy_extensions_to_source(self):
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            fullname = self.get_ext_fullname(ext.name)
            modpath = fullname.split(".")
            package_dir = build_py.get_package_dir(".".join(modpath[:-1]))
            keep = os.path.join(package_dir, os.path.basename(self.get_ext_filename(fullname)))
            for old in glob.glob(os.path.join(package_dir, modpath[-1] + ".*.so")):
                if os.path.abspath(old) != os.path.abspath(keep):
                    print(f"[convext] removing {old} (would shadow {os.path.basename(keep)})", file=sys.stderr)
                    os.remove(old)


def make_extension():
    sources = ([os.path.join("csrc", "ops.cpp"), os.path.join("csrc", "depthwise_separable_conv2d.cpp")]
               + sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp"))))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    with_cuda, why = _want_cuda()
    if with_cuda and not cuda_sources:
        with_cuda, why = False, "csrc/cuda/ has no sources"
    arch = "-"
    if with_cuda:
        arch, arch_why = _cuda_arch_list()
        if arch is None:
            with_cuda, why = False, arch_why
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = arch  # read by torch's BuildExtension
            arch = f"{arch} ({arch_why})"

    cxx = ["-O3", "-fopenmp", "-DNDEBUG"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    extra_link = ["-fopenmp"]
    if with_cuda:
        include_dirs += _cuda_wheel_includes()
        nvcc = ["-O3", "-DNDEBUG", "-lineinfo", "--expt-relaxed-constexpr", "--use_fast_math",
                "-Xptxas=-warn-spills"]
        ext = cpp_extension.CUDAExtension(
            "convext._C", sources + cuda_sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=extra_link, py_limited_api=True)
    else:
        ext = cpp_extension.CppExtension(
            "convext._C", sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx}, extra_link_args=extra_link, py_limited_api=True)
    print(f"[convext] building convext._C: CPU kernels ({len(sources)} files) + "
          f"{'CUDA kernels (%d files, arch %s)' % (len(cuda_sources), arch) if with_cuda else 'no CUDA'}"
          f" -- {why}; MAX_JOBS={os.environ.get('MAX_JOBS', '(default)')}", file=sys.stderr)
    return ext


# Guarded so that tests can import this file (_want_cuda, _cuda_arch_list); `python setup.py`, pip
# and setuptools.build_meta all run it as __main__.
if __name__ == "__main__":
    setup(
        name="convext",
        version="0.1.0",
        description="Fast depthwise, dilated and depthwise-separable convolutions for PyTorch",
        packages=find_packages(include=["convext", "convext.*"]),
        ext_modules=[make_extension()],
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        options={"bdist_wheel": {"py_limited_api": PY_LIMITED_API}},
        python_requires=">=3.9",
        install_requires=["torch>=2.11"],
    )
