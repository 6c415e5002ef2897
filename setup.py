"""Builds convext._C: C++ CPU kernels always, CUDA kernels when they can be built.

Environment:
  CONVEXT_FORCE_CUDA=1   build csrc/cuda/ even without a visible GPU (needs nvcc and a CUDA torch)
  CONVEXT_SKIP_CUDA=1    build the CPU kernels only
  TORCH_CUDA_ARCH_LIST   CUDA architectures (torch's own variable; default: the visible GPU, else 9.0)
  MAX_JOBS               parallel compile jobs (torch's own variable, read by ninja)
"""
import glob
import os
import sys
import sysconfig

from setuptools import find_packages, setup

if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _want_cuda():
    if _flag("CONVEXT_SKIP_CUDA"):
        return False, "CONVEXT_SKIP_CUDA=1"
    if torch.version.cuda is None:
        return False, "torch is a CPU-only build"
    if cpp_extension.CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    if _flag("CONVEXT_FORCE_CUDA"):
        return True, "CONVEXT_FORCE_CUDA=1"
    if torch.cuda.is_available():
        return True, "a GPU is visible"
    return False, "no GPU visible (set CONVEXT_FORCE_CUDA=1 to build anyway)"


def _cuda_wheel_includes():
    # CUDA 13 torch wheels ship the toolkit headers (cuSPARSE, cuBLAS, ...) that
    # torch's own headers include under site-packages/nvidia/cu13/include.
    dirs = []
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        dirs += glob.glob(os.path.join(base, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(base, "nvidia", "*", "include"))
    return sorted(set(d for d in dirs if os.path.isdir(d)))


def make_extension():
    sources = ([os.path.join("csrc", "ops.cpp"), os.path.join("csrc", "depthwise_separable_conv2d.cpp")]
               + sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp"))))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    with_cuda, why = _want_cuda()
    if with_cuda and not cuda_sources:
        with_cuda, why = False, "csrc/cuda/ has no sources"
    if with_cuda and "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"

    cxx = ["-O3", "-fopenmp", "-DNDEBUG"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    extra_link = ["-fopenmp"]
    if with_cuda:
        include_dirs += _cuda_wheel_includes()
        nvcc = ["-O3", "-DNDEBUG", "-lineinfo", "--expt-relaxed-constexpr", "--use_fast_math",
                "-Xptxas=-warn-spills"]
        ext = cpp_extension.CUDAExtension(
            "convext._C", sources + cuda_sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx + ["-DCONVEXT_WITH_CUDA"], "nvcc": nvcc + ["-DCONVEXT_WITH_CUDA"]},
            extra_link_args=extra_link)
    else:
        ext = cpp_extension.CppExtension(
            "convext._C", sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx}, extra_link_args=extra_link)
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "(torch default)") if with_cuda else "-"
    print(f"[convext] building convext._C: CPU kernels ({len(sources)} files) + "
          f"{'CUDA kernels (%d files, arch %s)' % (len(cuda_sources), arch) if with_cuda else 'no CUDA'}"
          f" -- {why}; MAX_JOBS={os.environ.get('MAX_JOBS', '(default)')}", file=sys.stderr)
    return ext


setup(
    name="convext",
    version="0.1.0",
    description="Fast depthwise, dilated and depthwise-separable convolutions for PyTorch",
    packages=find_packages(include=["convext", "convext.*"]),
    ext_modules=[make_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=["torch>=2.11"],
)
