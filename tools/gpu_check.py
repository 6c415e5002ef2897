"""The Python side of tools/gpu_check.sh (issue 11): one budgeted GPU check, results in one folder.

Subcommands (tools/gpu_check.sh calls them in order; each updates <out>/summary.json):
  source-hash                 hash of what the compiled extension is built from (csrc/, setup.py)
  sync-tree SRC DST           copy the working tree (git's tracked + untracked-not-ignored files, as the
                              device tool sends it) to DST, rewriting only files whose content changed
  wheel-info WHEEL            check a built wheel (stable ABI, sm_90 cubins, size) and write its sidecar JSON
  record KEY JSON             merge one section into the summary
  env                         step 1: versions, device, measured copy bandwidth, backends
  correctness                 step 2: every CUDA and Triton kernel path against float64 (parallel shards)
  shard KIND I N              one shard of step 2 (run by `correctness`)
  tests-report LOG            step 3: parse the pytest log into the summary
  bench                       step 4: the depthwise and separable suites in order of value, the summary
  finish                      validate the summary JSON, print the closing table, exit status

The correctness checks are the sweeps of tests/cuda_cases.py (their fixed / random cases and float64
checkers, imported, not copied; tests/test_cuda_sweeps.py runs them under pytest) run against the CUDA ops
and, with the op swapped, the Triton ops of the same signature; the separable sweep uses the tests' float64 references (tests/conftest.py: check_op,
torch_separable). With --stub (tools/gpu_check.sh --dry-run) the same code runs on CPU tensors (the CPU
kernels stand in for the GPU ones), on a few small cases.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = 1
HASHED = ("csrc", "setup.py")  # what convext._C is built from
SYNC_SKIP_DIRS = {".git", "build", "__pycache__", ".whl", ".triton_cache", ".pytest_cache", ".gl"}


# --------------------------------------------------------------------------- no torch needed


def tree_files(root):
    """Relative paths of the working tree as the device tool sends it: git's tracked files plus the
    untracked ones it does not ignore; without git, every file outside build folders and caches."""
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, check=True).stdout.decode()
        files = [f for f in out.split("\0") if f and os.path.isfile(os.path.join(root, f))]
        if files:
            return sorted(files)
    except (OSError, subprocess.CalledProcessError):
        pass
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if x not in SYNC_SKIP_DIRS and not x.endswith(".egg-info")]
        files += [os.path.relpath(os.path.join(d, n), root) for n in names if not n.endswith((".so", ".pyc"))]
    return sorted(files)


def source_hash(root=ROOT):
    """sha256 over the paths and contents of csrc/** and setup.py (the files of tree_files)."""
    h = hashlib.sha256()
    for rel in tree_files(root):
        if rel.split("/")[0] in HASHED:
            h.update(rel.encode() + b"\0")
            with open(os.path.join(root, rel), "rb") as f:
                h.update(f.read())
            h.update(b"\0")
    return h.hexdigest()


def sync_tree(src, dst, keep=("build",)):
    """Make dst hold exactly src's tree files (plus the `keep` folders): a file whose content is
    unchanged keeps its old modification time, so ninja's incremental build in dst stays valid."""
    files = tree_files(src)
    os.makedirs(dst, exist_ok=True)
    wanted = set(files)
    copied = 0
    for rel in files:
        s, d = os.path.join(src, rel), os.path.join(dst, rel)
        with open(s, "rb") as f:
            data = f.read()
        try:
            with open(d, "rb") as f:
                same = f.read() == data
        except OSError:
            same = False
        if not same:
            os.makedirs(os.path.dirname(d), exist_ok=True)
            with open(d, "wb") as f:
                f.write(data)
            copied += 1
        os.chmod(d, os.stat(s).st_mode & 0o777)
    removed = 0
    for d, dirs, names in os.walk(dst, topdown=True):
        rel_d = os.path.relpath(d, dst)
        if rel_d == ".":
            dirs[:] = [x for x in dirs if x not in keep and x != ".git"]
        for n in names:
            rel = os.path.normpath(os.path.join(rel_d, n))
            if rel not in wanted:
                os.remove(os.path.join(d, n))
                removed += 1
    return len(files), copied, removed


def _cuobjdump():
    """The toolkit's cuobjdump, else the one Triton's package carries (this machine's toolkit has none)."""
    import glob
    import shutil
    cands = [os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "cuobjdump"), shutil.which("cuobjdump")]
    for prefix in {sys.prefix, os.environ.get("VENV", "/tmp/convext-v211")}:
        cands += glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages", "triton", "backends", "nvidia",
                                        "bin", "cuobjdump"))
    try:
        import triton
        cands.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except ImportError:
        pass
    return next((c for c in cands if c and os.path.isfile(c) and os.access(c, os.X_OK)), "cuobjdump")


def wheel_info(wheel, out_json, max_mib=64.0):
    """Checks a built wheel and writes its sidecar JSON; returns the info dict. Fails (SystemExit) when the
    extension is not a stable-ABI build, links libtorch_python, uses Python API beyond module creation,
    lacks sm_90 code or CUDA kernels, or the wheel is over max_mib."""
    import tempfile
    import zipfile

    info = dict(wheel=os.path.basename(wheel), bytes=os.path.getsize(wheel), source_hash=source_hash(ROOT),
                built_at=time.strftime("%Y-%m-%dT%H:%M:%S"), problems=[])
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        sos = [n for n in names if n.startswith("convext/_C") and n.endswith(".so")]
        wheel_meta = next((n for n in names if n.endswith(".dist-info/WHEEL")), None)
        info["tags"] = [l.split(":", 1)[1].strip() for l in z.read(wheel_meta).decode().splitlines()
                        if l.startswith("Tag:")] if wheel_meta else []
        if len(sos) != 1:
            raise SystemExit(f"wheel-info: expected one convext/_C*.so in {wheel}, found {sos}")
        info["extension"] = sos[0]
        tmp = tempfile.mkdtemp()
        so = z.extract(sos[0], tmp)
    info["so_bytes"] = os.path.getsize(so)
    if not sos[0].endswith(".abi3.so"):
        info["problems"].append(f"{sos[0]} is not a stable-ABI (.abi3.so) build")
    if not any("abi3" in t for t in info["tags"]):
        info["problems"].append(f"wheel tags {info['tags']} are not abi3")

    def tool(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            return f"<{cmd[0]} failed: {e}>"
    needed = [l.split("[", 1)[1].rstrip("]") for l in tool("readelf", "-d", so).splitlines() if "(NEEDED)" in l]
    info["needed"] = needed
    if any("torch_python" in n for n in needed):
        info["problems"].append("links libtorch_python (not a py_limited_api build)")
    py_syms = sorted({l.split()[-1] for l in tool("nm", "-D", "--undefined-only", so).splitlines()
                      if l.split() and l.split()[-1].startswith(("Py", "_Py"))})
    info["python_symbols"] = py_syms
    # csrc/ops.cpp: the module, plus the switches view (_C.switches() / switch_names()), all from the
    # stable ABI (it compiles with -DPy_LIMITED_API); anything else means a non-limited build.
    stable = {"PyModule_Create2", "PyArg_ParseTuple", "PyBool_FromLong", "PyDict_New", "PyDict_SetItemString",
              "PyErr_SetString", "PyExc_RuntimeError", "PyList_Append", "PyList_New", "PyTuple_New",
              "PyTuple_SetItem", "PyUnicode_FromString", "Py_BuildValue", "_Py_Dealloc", "_Py_NoneStruct"}
    extra = [s for s in py_syms if s not in stable]
    if extra:
        info["problems"].append(f"uses Python C API symbols outside the known stable-ABI set: {extra}")
    glibc = sorted({w.strip("()") for l in tool("objdump", "-T", so).splitlines() for w in l.split()
                    if w.strip("()").startswith(("GLIBC_", "GLIBCXX_", "CXXABI_"))})
    info["symbol_versions_max"] = {p: max((w for w in glibc if w.startswith(p + "_")),
                                          key=lambda w: [int(x) for x in w.split("_", 1)[1].split(".") if x.isdigit()],
                                          default=None) for p in ("GLIBC", "GLIBCXX", "CXXABI")}
    elfs = tool(_cuobjdump(), "--list-elf", so)
    info["cubin_archs"] = sorted({w.split(".")[-2] for w in elfs.split() if w.endswith(".cubin") and ".sm_" in w})
    if not elfs.startswith("<"):
        if "sm_90" not in info["cubin_archs"]:
            info["problems"].append(f"no sm_90 cubin (found {info['cubin_archs']})")
    else:
        info["cubin_archs"] = [elfs]
    mib = info["bytes"] / 2**20
    info["mib"] = round(mib, 2)
    if mib > max_mib:
        info["problems"].append(f"wheel is {mib:.1f} MiB > {max_mib} MiB")
    with open(out_json, "w") as f:
        json.dump(info, f, indent=1)
    return info


# --------------------------------------------------------------------------- the summary JSON


def _summary_path(out):
    return os.path.join(out, "summary.json")


def load_summary(out):
    try:
        with open(_summary_path(out)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"schema": SCHEMA, "steps": []}


def save_summary(out, data):
    tmp = _summary_path(out) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_sanitize(data), f, indent=1, sort_keys=False, default=str, allow_nan=False)
    os.replace(tmp, _summary_path(out))


def record(out, key, value):
    """Merge `value` into the summary: dicts are updated key by key, `steps` entries appended."""
    data = load_summary(out)
    if key == "steps":
        data.setdefault("steps", []).append(value)
    elif isinstance(value, dict) and isinstance(data.get(key), dict):
        data[key].update(value)
    else:
        data[key] = value
    save_summary(out, data)
    return data


def say(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------- step 1: environment


def _import_paths():
    for p in (os.path.join(ROOT, "tests"), ROOT):
        if p not in sys.path:
            sys.path.insert(0, p)


def step_env(out, stub):
    """Versions, device, copy bandwidth, backends. Exit status 3 (and a loud banner) when the CUDA
    backend is missing: every CUDA result of this check would then be vacuous."""
    _import_paths()
    import platform

    import torch

    from bench import harness
    import convext
    from convext import _backend, _ext

    dev = "cpu" if stub else "cuda"
    env = dict(harness.versions(), python=platform.python_version(), device=harness.device_name(dev),
               stub=stub, convext_file=convext.__file__)
    so = [f for f in os.listdir(os.path.dirname(convext.__file__)) if f.startswith("_C") and f.endswith(".so")]
    env["extension"] = so
    env["compiled_error"] = _ext.COMPILED_ERROR
    env["cuda_kernels_compiled"] = _ext.compiled_has_kernel("CUDA")
    env["backends_cpu"] = convext.backends("cpu")
    env["backends_cuda"] = convext.backends("cuda")
    env["availability_cuda"] = {b: _backend.availability(b, "cuda")[1] or "ok" for b in ("cuda", "triton")}
    if not stub:
        props = torch.cuda.get_device_properties(0)
        env.update(sm=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1))
        try:
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.sm",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            env["nvidia_smi"] = f"failed: {e}"
    t = time.time()
    env["copy_bw_gbps"] = round(harness.copy_bandwidth_gbps(dev), 1)
    env["copy_bw_seconds"] = round(time.time() - t, 2)
    missing = []
    if stub:
        if not env["cuda_kernels_compiled"]:
            missing.append("cuda (the extension has no CUDA kernels)")
    else:
        missing = [b for b in ("cuda", "triton") if b not in env["backends_cuda"]]
    env["missing_backends"] = missing
    record(out, "env", env)
    for k in ("torch", "cuda", "triton", "python", "device", "sm", "nvidia_smi", "extension", "backends_cuda",
              "cuda_kernels_compiled", "copy_bw_gbps"):
        if k in env:
            say(f"[env] {k}: {env[k]}")
    if missing:
        banner = (f"FATAL: backend(s) {missing} MISSING on {'this stub' if stub else 'the GPU'} "
                  f"({env['availability_cuda']}; compiled_error={env['compiled_error']}): every result for them "
                  f"below is void")
        say("\n" + "!" * 100 + "\n" + banner + "\n" + "!" * 100 + "\n")
        record(out, "fatal", banner)
        return 3
    return 0


# --------------------------------------------------------------------------- step 2: correctness

# kind: (check, backend, environment, shards on a GPU; 20 processes with `big` and the pytest one). fb: forward + grad-input sweep of
# tests/cuda_cases.py (its fixed cases include the undilated 5x5 / 7x7 NCHW forward routing shapes, FB_ROUTING);
# bw: its grad-weight sweep;
# *-tc: only large kernels (kH*kW >= 81, where the tensor-core paths run); api: the tests' random sweeps
# (tests/test_depthwise*_conv2d.py) through the public functions and autograd, Triton and auto with
# CONVEXT_AUTO_UNVERIFIED=1 (the fused separable kernel); big: the >= 2^31-element self-checks.
AUTOTUNE_OFF = {"CONVEXT_TRITON_AUTOTUNE": "0"}
KINDS = {
    "cuda-fb": ("fb", "cuda", {}, 1),
    "cuda-bw": ("bw", "cuda", {}, 1),
    "cuda-fb-nofast": ("fb", "cuda", {"CONVEXT_DISABLE_FAST_PATHS": "1"}, 1),
    "cuda-bw-nofast": ("bw", "cuda", {"CONVEXT_DISABLE_FAST_PATHS": "1"}, 1),
    "cuda-fb-tc": ("fb", "cuda", {"CONVEXT_CUDA_TC": "1"}, 1),
    "cuda-bw-tc": ("bw", "cuda", {"CONVEXT_CUDA_TC": "1"}, 1),
    # the opt-in non-finite fix-up passes (inf / NaN propagation as torch): must leave finite results alone
    "cuda-fb-nonfinite": ("fb", "cuda", {"CONVEXT_CUDA_NONFINITE": "1"}, 1),
    "cuda-bw-nonfinite": ("bw", "cuda", {"CONVEXT_CUDA_NONFINITE": "1"}, 1),
    "big": ("big", "cuda", {}, 1),
    "triton-fb": ("fb", "triton", AUTOTUNE_OFF, 3),
    "triton-bw": ("bw", "triton", AUTOTUNE_OFF, 2),
    "triton-fb-tc": ("fb", "triton", dict(AUTOTUNE_OFF, CONVEXT_TRITON_TC="force"), 1),
    "triton-bw-tc": ("bw", "triton", dict(AUTOTUNE_OFF, CONVEXT_TRITON_TC="force"), 1),
    # auto's static rule (CONVEXT_AUTOTUNE=0: no measured choice), which CONVEXT_AUTO_UNVERIFIED=1 sends to Triton
    "api": ("api", "triton", dict(AUTOTUNE_OFF, CONVEXT_AUTO_UNVERIFIED="1", CONVEXT_AUTOTUNE="0"), 3),
}
TC_TAPS = 81
STUB_NUMEL = {"cuda": 20000, "triton": 1500}  # dry run: CPU kernels / the Triton interpreter
STUB_CASES = 4  # dry run: cases per shard (the plumbing, not a sweep)


_PARTIAL = {"path": None, "last": 0.0}


def _dump_partial(res, final=False):
    """Write the shard's result so far (every 2 s at most; `final`: the complete result): a shard killed at
    the deadline still reports what it checked."""
    now = time.time()
    if _PARTIAL["path"] and (final or now - _PARTIAL["last"] > 2.0):
        _PARTIAL["last"] = now
        with open(_PARTIAL["path"] + ".tmp", "w") as f:
            json.dump(dict(res, partial=not final), f)
        os.replace(_PARTIAL["path"] + ".tmp", _PARTIAL["path"])


class Gate:
    """Which cases this shard runs: every n-th (from i), before the deadline, passing the filter."""

    def __init__(self, i, n, deadline, min_taps=0, max_numel=None, max_cases=None):
        self.i, self.n, self.deadline, self.min_taps, self.max_numel = i, n, deadline, min_taps, max_numel
        self.max_cases = max_cases
        self.index = self.ran = self.unrun = 0

    def __call__(self, taps, numel):
        k = self.index
        self.index += 1
        if k % self.n != self.i or taps < self.min_taps or (self.max_numel and numel > self.max_numel):
            return False
        if time.time() > self.deadline or (self.max_cases is not None and self.ran >= self.max_cases):
            self.unrun += 1
            return False
        self.ran += 1
        return True


def _take(res, results, echo=False):
    """Counts (ok, message) results into the shard's result; prints failures (every line with `echo`)."""
    for ok, msg in results:
        res["passed" if ok else "failed"] += 1
        if not ok and len(res["failures"]) < 20:
            res["failures"].append(msg)
        if echo or not ok:
            say(("PASS " if ok else "FAIL ") + msg)
    _dump_partial(res)


def _shard_fb(backend, gate, dev, res):
    import cuda_cases as cc
    fwd, bwd, _ = cc.ops(backend)
    for case in cc.fb_cases(20000, seed=0):  # the fixed cases (FB_FIXED + FB_ROUTING), then random ones
        if gate(case.taps, case.numel):
            res["cases_run"] = gate.ran
            _take(res, cc.check_fb(fwd, bwd, case, dev))
    _take(res, cc.fb_nonfinite_checks(fwd, dev))


def _shard_bw(backend, gate, dev, res):
    import cuda_cases as cc
    _, _, bw = cc.ops(backend)
    for case in cc.bw_cases(20000, seed=1234):  # BW_FIXED, BW_PLANAR_FAST, then random ones
        if gate(case.taps, case.numel):
            res["cases_run"] = gate.ran
            _take(res, [cc.check_bw(bw, case, dev)], echo=True)
    _take(res, cc.bw_special_checks(bw, dev), echo=True)


def _shard_big(dev, stub, res):
    if stub:
        res["note"] = "stub: the >= 2^31-element checks need ~20 GB of GPU memory; skipped"
        return
    import cuda_cases as cc
    fwd, bwd, bw = cc.ops("cuda")
    try:
        _take(res, cc.fb_big_checks(fwd, bwd, dev), echo=True)
    except Exception as e:  # noqa: BLE001  (an out-of-memory here must not hide the grad-weight result)
        _take(res, [(False, f"fwd / grad-input big case: {e!r}")])
    try:
        _take(res, [cc.bw_big_check(bw, dev)], echo=True)
    except Exception as e:  # noqa: BLE001
        _take(res, [(False, f"bwd-weight big case: {e!r}")])


def _shard_api(i, n, deadline, dev, stub, res):
    import random

    import torch

    import test_depthwise_conv2d as tdw
    import test_depthwise_separable_conv2d as tsep
    from convext import _backend
    x = torch.empty(1, 2, 4, 4, device=dev)
    res["auto_separable"] = _backend.resolve("auto", x, "depthwise_separable_conv2d", (3, 3), (1, 1))
    res["auto_depthwise"] = _backend.resolve("auto", x, "depthwise_conv2d", (3, 3), (1, 1))
    if not stub and res["auto_separable"] != "triton":
        res["failed"] += 1
        res["failures"].append(f"auto on CUDA with CONVEXT_AUTO_UNVERIFIED=1 chose {res['auto_separable']!r} "
                               f"for the separable op, not the fused Triton kernel")
    variants = ([(tsep, "triton"), (tsep, "auto"), (tdw, "triton"), (tsep, "cuda")] if not stub else
                [(tsep, "triton"), (tsep, "auto"), (tdw, "triton"), (tdw, "cpu")])
    dtypes = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
    rng = random.Random(2024)
    k = 0
    res["by_variant"] = {}
    while time.time() < deadline and not (stub and res["passed"] + res["failed"] >= STUB_CASES):
        mod, backend = variants[k % len(variants)]
        case = mod._random_case(rng, stub)
        if not stub:
            case["dtype"] = rng.choice(dtypes)
        k += 1
        if (k - 1) % n != i:
            continue
        name = f"{mod.__name__[5:]}[{backend}]"
        torch.manual_seed(k)
        v = res["by_variant"].setdefault(name, [0, 0])
        try:
            mod.test_random_sweep(dev, backend, case)
            res["passed"] += 1
            v[0] += 1
        except Exception as e:  # noqa: BLE001
            res["failed"] += 1
            v[1] += 1
            msg = f"{name} {case}: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
            say("FAIL " + msg)
            if len(res["failures"]) < 20:
                res["failures"].append(msg)
        _dump_partial(res)


def run_shard(kind, i, n, deadline, stub, result_path):
    """One shard of the correctness step; writes its result JSON (also when it fails)."""
    what, backend, _, _ = KINDS[kind]
    res = dict(kind=kind, shard=f"{i}/{n}", passed=0, failed=0, failures=[], error=None)
    t0 = time.time()
    _PARTIAL["path"] = result_path
    try:
        _import_paths()
        import torch

        if stub:
            torch.cuda.synchronize = lambda *a, **k: None  # CPU tensors here: nothing may synchronize a GPU
        torch.backends.cudnn.allow_tf32 = False  # IEEE fp32 on both sides, as tests/conftest.py
        torch.backends.cuda.matmul.allow_tf32 = False
        import convext  # noqa: F401
        dev = "cpu" if stub else "cuda"
        if backend == "triton" and not hasattr(torch.ops.convext, "triton_depthwise_conv2d"):
            raise RuntimeError("the Triton ops are not registered: " + str(convext._backend.availability("triton", dev)))
        gate = Gate(i, n, deadline, TC_TAPS if kind.endswith("-tc") else 0,
                    STUB_NUMEL[backend] if stub else None, STUB_CASES if stub else None)
        if what == "fb":
            _shard_fb(backend, gate, dev, res)
        elif what == "bw":
            _shard_bw(backend, gate, dev, res)
        elif what == "big":
            _shard_big(dev, stub, res)
        else:
            _shard_api(i, n, deadline, dev, stub, res)
        if what in ("fb", "bw"):
            res.update(cases_run=gate.ran, cases_left_out=gate.unrun)
    except BaseException as e:  # noqa: BLE001
        import traceback
        res["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    res["seconds"] = round(time.time() - t0, 1)
    _dump_partial(res, final=True)
    say(f"[shard {kind} {i}/{n}] {res['passed']} passed, {res['failed']} failed"
        + (f", error {res['error']}" if res["error"] else "") + f" in {res['seconds']} s")
    return 1 if (res["failed"] or res["error"]) else 0


def run_jobs(jobs, max_parallel, deadline, log, nice=0):
    """jobs: [(name, argv, env)] -> {name: rc}; at most max_parallel at once, every job killed at the
    deadline (rc 124) or when this process is terminated. Each job's output goes to its own file, appended
    to `log` (when given) in job order at the end."""
    import shutil
    import signal
    import tempfile

    tmp = tempfile.mkdtemp(prefix="gpu_check_jobs_")
    pending, running, rcs, files = list(jobs), {}, {}, {}

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        while pending or running:
            while pending and len(running) < max_parallel and time.time() < deadline:
                name, argv, env = pending.pop(0)
                files[name] = os.path.join(tmp, name.replace("/", "_") + ".log")
                fh = open(files[name], "w")
                cmd = (["nice", "-n", str(nice)] if nice else []) + argv
                running[name] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                                  start_new_session=True), fh)
            if time.time() >= deadline:
                for name in [j[0] for j in pending]:
                    rcs[name] = "not started (deadline)"
                pending = []
                for name in list(running):
                    rcs[name] = 124
                break
            for name, (p, fh) in list(running.items()):
                if p.poll() is not None:
                    rcs[name] = p.returncode
                    fh.close()
                    del running[name]
            time.sleep(0.2)
    finally:
        for name, (p, fh) in running.items():
            _kill(p)
            rcs.setdefault(name, 124)
            fh.close()
        signal.signal(signal.SIGTERM, old)
        if log:
            with open(log, "a") as out:
                for name, _, _ in jobs:
                    if name in files:
                        out.write(f"\n----- {name} (rc {rcs.get(name)}) -----\n")
                        with open(files[name], errors="replace") as f:
                            shutil.copyfileobj(f, out)
        shutil.rmtree(tmp, ignore_errors=True)
    return rcs


def _kill(p):
    import signal
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=5)
    except Exception:  # noqa: BLE001
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except Exception:  # noqa: BLE001
            pass


def step_correctness(out, stub, seconds, max_parallel, log, python):
    """Every kernel path against float64, sharded over parallel processes until `seconds` have passed."""
    t0 = time.time()
    deadline = t0 + seconds
    import tempfile
    work = tempfile.mkdtemp(prefix="gpu_check_correctness_")  # outside --out: only its 8 files come back
    jobs = []
    for kind, (what, backend, env, shards) in KINDS.items():
        n = 1 if stub else shards
        for i in range(n):
            e = dict(os.environ, **env)
            if stub and backend == "triton":
                e["TRITON_INTERPRET"] = "1"
            # each shard stops starting cases `margin` s before the step's end (a Triton case compiles its
            # kernel first), to report in time; one killed at the end still left its partial counts
            margin = 25 if stub else 15
            jobs.append((f"{kind}-{i}", [python, os.path.abspath(__file__), "shard", kind, str(i), str(n),
                                         "--deadline", str(deadline - margin), "--json",
                                         os.path.join(work, f"{kind}-{i}.json")] + (["--stub"] if stub else []), e))
    # the tests' own >= 2^31-element test (cuda and triton backends; grad-weight in float64), beside the shards
    jobs.append(("pytest-2pow31", [python, "-m", "pytest", "tests/test_depthwise_conv2d.py", "-m", "gpu", "-k",
                                   "more_than_2pow31", "-v", "-rfEs", "-p", "no:cacheprovider"], dict(os.environ)))
    if not stub:  # every shard is sized to the step's time: all must start now (the GPU machine has 16 cores)
        max_parallel = max(max_parallel, len(jobs))
    say(f"[correctness] {len(jobs)} processes, at most {max_parallel} at once, {seconds:.0f} s")
    rcs = run_jobs(jobs, max_parallel, deadline, log)
    summary = {}
    for name, _, _ in jobs:
        if name == "pytest-2pow31":
            continue
        kind = name.rsplit("-", 1)[0]
        agg = summary.setdefault(kind, dict(passed=0, failed=0, errors=[], failures=[], shards=0, cases_run=0,
                                            cases_left_out=0, seconds=0.0, killed_at_deadline=0))
        agg["shards"] += 1
        try:
            with open(os.path.join(work, name + ".json")) as f:
                r = json.load(f)
        except (OSError, ValueError):
            agg["errors"].append(f"{name}: no result (rc {rcs.get(name)})")
            continue
        for k in ("passed", "failed", "cases_run", "cases_left_out"):
            agg[k] += r.get(k, 0)
        if r.get("partial"):
            agg["killed_at_deadline"] += 1
        agg["seconds"] = max(agg["seconds"], r.get("seconds", 0))
        agg["failures"] += r.get("failures", [])[: 20 - len(agg["failures"])]
        if r.get("error"):
            agg["errors"].append(f"{name}: {r['error']}")
        for k in ("note", "auto_separable", "auto_depthwise", "by_variant"):
            if k in r:
                if k == "by_variant":
                    bv = agg.setdefault(k, {})
                    for v, (p_, f_) in r[k].items():
                        bv[v] = [bv.get(v, [0, 0])[0] + p_, bv.get(v, [0, 0])[1] + f_]
                else:
                    agg[k] = r[k]
    pt = _pytest_counts(log, "pytest-2pow31")
    pt["rc"] = rcs.get("pytest-2pow31")
    summary["pytest-2pow31"] = pt
    ok = all(a.get("failed", 0) == 0 and not a.get("errors") for k, a in summary.items() if k != "pytest-2pow31")
    ok = ok and pt.get("failed", 0) == 0 and pt.get("errors", 0) == 0 and pt["rc"] in (0, 5)
    for kind, a in summary.items():
        if kind == "pytest-2pow31":
            say(f"[correctness] {kind:15s} {a}")
            continue
        say(f"[correctness] {kind:15s} {a['passed']:6d} passed {a['failed']:4d} failed  ({a['shards']} shards, "
            f"{a['seconds']:.0f} s{', killed at the deadline: %d' % a['killed_at_deadline'] if a['killed_at_deadline'] else ''})"
            + (f"  ERRORS {a['errors']}" if a["errors"] else "") + (f"  note: {a['note']}" if a.get("note") else ""))
        for msg in a["failures"][:5]:
            say(f"    FAIL {msg[:300]}")
    record(out, "correctness", dict(summary, ok=ok, seconds=round(time.time() - t0, 1)))
    import shutil
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def _pytest_counts(log, section=None):
    """passed / failed / skipped / errors counted from pytest -v lines (of one section of the log, or all),
    and the failed test ids: usable when the run was cut short and printed no summary line."""
    import re

    text = open(log, errors="replace").read() if log and os.path.exists(log) else ""
    if section is not None:
        start = text.rfind(f"----- {section} ")
        text = text[start:] if start >= 0 else ""
        end = text.find("\n----- ", 10)
        text = text[:end] if end > 0 else text
    counts = dict(passed=0, failed=0, skipped=0, errors=0, xfailed=0)
    failed = []
    # one line per test with -v: "path::test PASSED [ 5%]", or with xdist "[gw3] [ 5%] PASSED path::test"
    # (not the -r summary's "FAILED path::test - ..." lines, which repeat them)
    for m in re.finditer(r"^\[gw\d+\] \[\s*\d+%\] (PASSED|FAILED|SKIPPED|ERROR|XFAIL) (\S+)"
                         r"|^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL)", text, re.M):
        word = m.group(1) or m.group(4)
        test = m.group(2) or m.group(3)
        key = {"PASSED": "passed", "FAILED": "failed", "SKIPPED": "skipped", "ERROR": "errors", "XFAIL": "xfailed"}[word]
        counts[key] += 1
        if word in ("FAILED", "ERROR") and len(failed) < 40:
            failed.append(test)
    final = re.findall(r"^=+ (.*(?:passed|failed|skipped|error|deselected|no tests ran).*) in [\d.]+s", text, re.M)
    counts["final_line"] = final[-1] if final else None
    if final:  # a finished run: its own totals (the -v lines above count a run cut short)
        names = {"passed": "passed", "failed": "failed", "skipped": "skipped", "error": "errors", "errors": "errors",
                 "xfailed": "xfailed", "deselected": "deselected"}
        for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors|error|xfailed|deselected)\b", final[-1]):
            counts[names[word]] = int(n)
    counts["failed_tests"] = failed
    return counts


# --------------------------------------------------------------------------- step 3: the GPU-marked tests


def step_tests_report(out, log_path):
    c = _pytest_counts(log_path)
    ok = c["failed"] == 0 and c["errors"] == 0 and (c["passed"] > 0 or c["skipped"] > 0)
    record(out, "tests", dict(c, ok=ok))
    say(f"[tests] {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped, {c['errors']} errors"
        f" -- pytest's last line: {c['final_line']}")
    for t in c["failed_tests"][:20]:
        say(f"    FAILED {t}")
    return 0 if ok else 1


# --------------------------------------------------------------------------- step 4: warm-up and benchmarks

DW, SEP = "depthwise_conv2d", "depthwise_separable_conv2d"
ROUTING_SHAPES = ("effnet", "convnext", "convnext-deep")  # undilated 5x5 / 7x7: timed first
# torch.nn, the backends, the opt-in CUDA tensor-core path, and harness.SANITY_PROVIDER (convext:torch: torch's
# own computation through convext, which must read 1.00x: the harness's check of its own timing)
GPU_PROVIDERS = ["torch", "convext:cuda", "convext:triton", "convext:cuda-tc", "convext:torch"]


def _suite_order(mod):
    names = list(mod.GPU_SUITE)
    return [n for n in ROUTING_SHAPES if n in names] + [n for n in names if n not in ROUTING_SHAPES]


def step_warm(out, stub, deadline, max_parallel, python):
    """Compiles every Triton kernel the benchmark suites use, one process per (suite, shape) in parallel
    (niced: the checks before the benchmarks come first), so that the timed runs only load kernels from
    Triton's cache. The autotune timings measured here are thrown away."""
    _import_paths()
    import importlib

    common = ["--quick", "--csv", os.devnull, "--no-plot", "--no-progress"]
    jobs = []
    for op in (DW, SEP):
        mod = importlib.import_module(f"bench.{op}")
        if stub:
            shape = next(iter(mod.CPU_SUITE))
            jobs.append((f"warm-{op}-{shape}", [python, "-m", f"bench.{op}", "--device", "cpu", "--shapes", shape,
                                                 "--providers", "convext:cpu", "--dtype", "fp32", "--layout", "nchw",
                                                 "--mode", "fwd"] + common, dict(os.environ)))
            continue
        for shape in _suite_order(mod):
            jobs.append((f"warm-{op}-{shape}", [python, "-m", f"bench.{op}", "--shapes", shape, "--providers",
                                                 "convext:triton", "--dtype", "fp32,bf16", "--layout",
                                                 "nchw,channels_last", "--mode", "fwd,bwd,fwd+bwd"] + common,
                         dict(os.environ)))
    t0 = time.time()
    rcs = run_jobs(jobs, max_parallel, deadline, None, nice=19)
    bad = {k: v for k, v in rcs.items() if v != 0}
    record(out, "warm", dict(jobs=len(jobs), seconds=round(time.time() - t0, 1), failed=bad))
    say(f"[warm] {len(jobs)} jobs in {time.time() - t0:.0f} s" + (f"; not clean: {bad}" if bad else ""))
    return 0 if not bad else 1


def step_bench(out, stub, deadline, quick):
    """Both suites in order of value, one (case, mode) at a time so that every finished row is already in
    the CSVs if the budget runs out: depthwise forward (the 5x5 / 7x7 routing shapes first), separable
    forward, depthwise fwd+bwd, separable fwd+bwd, then the backward passes alone."""
    _import_paths()
    import torch

    from bench import depthwise_conv2d as dw, depthwise_separable_conv2d as sep, harness
    dev = "cpu" if stub else "cuda"
    if not stub:
        torch.backends.cudnn.benchmark = False
    passes = [(dw, "fwd"), (sep, "fwd"), (dw, "fwd+bwd"), (sep, "fwd+bwd"), (dw, "bwd"), (sep, "bwd")]
    if stub:
        passes = passes[:4]
    dtypes = ["fp32"] if stub else ["fp32", "bf16"]
    layouts = ["nchw", "channels_last"]
    done, cut = 0, []
    last = {}
    import inspect
    # dry run: one round per row on CPU (the harness interleaves several there; one on CUDA anyway)
    extra = {"rounds": 1} if stub and "rounds" in inspect.signature(harness.run_benchmark).parameters else {}
    for mod, mode in passes:
        op = mod.__name__.split(".")[-1]
        if stub:
            cases = mod.cases_for("cpu", quick=True)
            provs = [p for p in mod.providers_for("cpu") if p.name in ("torch", "convext:cpu", "convext:torch")]
        else:
            byname = {c.name: c for c in mod.cases_for("cuda", quick=False)}
            cases = [byname[n] for n in _suite_order(mod)]
            provs = [p for p in mod.providers_for("cuda") if p.name in GPU_PROVIDERS]
        for case in cases:
            left = deadline - time.time()
            if left < max(3.0, 1.3 * last.get((op, mode), 0.0)):
                cut.append(f"{op} {case.name} {mode}")
                continue
            t = time.time()
            say(f"[bench] {op} {case.name} {mode} ({left:.0f} s left)")
            harness.run_benchmark(op, [case], provs, dtypes, layouts, [mode], dev, quick=quick,
                                  measure_memory=mod is sep, csv_path=os.path.join(out, f"{op}.csv"), plot=False,
                                  progress=False, **extra)
            last[(op, mode)] = time.time() - t
            done += 1
    record(out, "bench_run", dict(groups_done=done, groups_cut_by_budget=cut, quick_timing=quick))
    say(f"[bench] {done} (case, mode) groups timed; {len(cut)} left out for lack of time" +
        (f": {cut[:8]}{' ...' if len(cut) > 8 else ''}" if cut else ""))
    return 0


def _all_rows(out):
    """Every row of every run in <out>/*.csv (this check's CSVs), numbers as floats."""
    import csv

    from bench import harness
    rows = []
    for op in (DW, SEP):
        path = os.path.join(out, f"{op}.csv")
        if not os.path.exists(path):
            continue
        with open(path, newline="") as f:
            ids = list(dict.fromkeys(r["run_id"] for r in csv.DictReader(f)))
        for run_id in ids:
            rows += harness.read_run(path, run_id)
    return rows


def step_bench_report(out):
    """The closing summary of bench/summary.py over every row of this check, and its targets as JSON."""
    _import_paths()
    from bench import summary
    rows = _all_rows(out)
    if rows:
        say(summary.summarize(rows))
    targets = []
    for t in summary.TARGETS:
        c = summary.check(rows, t) if rows else dict(status="no data", value=None, gap=None, where="-")
        targets.append(dict(op=t.op, provider=f"convext:{t.backend}", check=t.what,
                            target=f"{t.cmp} {t.target:g}{t.unit}", **c))
    stats = summary.provider_stats(rows) if rows else []
    sanity = summary.sanity_line(rows) if rows and hasattr(summary, "sanity_line") else None
    record(out, "bench", dict(rows=len(rows), targets=targets, provider_stats=stats, sanity=sanity,
                              csv=sorted(f for f in os.listdir(out) if f.endswith(".csv"))))
    return 0


# --------------------------------------------------------------------------- the end: validate, print, exit

REQUIRED = {
    "schema": int, "started": str, "budget_s": (int, float), "dry_run": bool, "install": dict, "env": dict,
    "steps": list, "correctness": dict, "tests": dict, "bench": dict,
}
STEP_STATUS = ("PASS", "FAIL", "TIMEOUT", "SKIPPED", "ERROR")


def validate(data, complete):
    """Problems with the summary's shape (empty list: well formed). `complete`: every section present."""
    problems = []
    for key, typ in REQUIRED.items():
        if key not in data:
            if complete or key in ("schema", "started", "budget_s", "dry_run", "steps"):
                problems.append(f"missing {key!r}")
        elif not isinstance(data[key], typ):
            problems.append(f"{key!r} is {type(data[key]).__name__}, not {typ}")
    for s in data.get("steps", []):
        if not (isinstance(s, dict) and isinstance(s.get("name"), str) and s.get("status") in STEP_STATUS
                and isinstance(s.get("seconds"), (int, float))):
            problems.append(f"bad step entry {s!r}")
    if isinstance(data.get("install"), dict) and data["install"].get("method") not in ("wheel", "build"):
        problems.append(f"install.method is {data['install'].get('method')!r}")
    env = data.get("env", {})
    for k in ("torch", "cuda", "triton", "device", "copy_bw_gbps"):
        if isinstance(env, dict) and "env" in data and k not in env:
            problems.append(f"env.{k} missing")
    if isinstance(data.get("correctness"), dict) and "correctness" in data and "ok" not in data["correctness"]:
        problems.append("correctness.ok missing")
    if isinstance(data.get("tests"), dict) and "tests" in data:
        for k in ("passed", "failed", "skipped", "errors"):
            if not isinstance(data["tests"].get(k), int):
                problems.append(f"tests.{k} missing")
    if isinstance(data.get("bench"), dict) and "bench" in data:
        t = data["bench"].get("targets")
        if not isinstance(t, list) or not all(isinstance(x, dict) and "status" in x for x in t):
            problems.append("bench.targets malformed")
    try:
        json.loads(json.dumps(data, allow_nan=False))
    except ValueError as e:
        problems.append(f"not strict JSON: {e}")
    return problems


def step_finish(out, dry_run):
    data = load_summary(out)
    steps = {s["name"]: s for s in data.get("steps", [])}
    corr, tests, bench, env, inst = (data.get(k, {}) for k in ("correctness", "tests", "bench", "env", "install"))
    ok = not data.get("fatal") and corr.get("ok", False) and tests.get("ok", False)
    problems = validate(data, complete=dry_run)
    findings = []
    if dry_run:
        # The dry run checks the plumbing: every step ran to its end, every shard reported, the summary is
        # well formed. Cases that fail on the CPU stand-ins (CPU kernels, Triton's interpreter) are findings
        # to look at, reported loudly, not plumbing failures.
        harness = [f"step {n}: {s['status']}" for n, s in steps.items() if s["status"] not in ("PASS", "FAIL")]
        harness += [f"step {n}: missing" for n in ("install", "env", "correctness", "tests", "bench", "bench-report",
                                                   "models") if n not in steps]
        for kind, a in corr.items():
            if isinstance(a, dict) and a.get("errors"):
                harness.append(f"correctness {kind}: {a['errors']}")
        pt = corr.get("pytest-2pow31", {})
        if pt.get("rc") not in (0, 5):
            harness.append(f"correctness pytest-2pow31: rc {pt.get('rc')}")
        if tests.get("errors") or not tests.get("final_line"):
            harness.append(f"tests: errors {tests.get('errors')}, last line {tests.get('final_line')!r}")
        if not bench.get("rows"):
            harness.append("bench: no rows")
        findings = [f"correctness {k}: {a.get('failed')} failed, e.g. {a.get('failures', [])[:2]}"
                    for k, a in corr.items() if isinstance(a, dict) and a.get("failed")]
        findings += [f"tests: {tests.get('failed')} failed {tests.get('failed_tests', [])[:5]}"] if tests.get("failed") else []
        ok = not problems and not harness
        problems = problems + harness
        data["findings"] = findings
    data["result"] = "PASS" if ok else "FAIL"
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    data["summary_problems"] = problems
    save_summary(out, data)
    line = "=" * 100
    say(line)
    say(f"convext GPU check{' (DRY RUN: CPU stub)' if dry_run else ''}: {env.get('device', '?')}; torch "
        f"{env.get('torch', '?')}, CUDA {env.get('cuda', '?')}, triton {env.get('triton', '?')}, python "
        f"{env.get('python', '?')}; copy {env.get('copy_bw_gbps', '?')} GB/s")
    say(f"extension: {inst.get('method', '?')} -- {inst.get('detail', '')}")
    if data.get("fatal"):
        say(f"!!! {data['fatal']}")
    for s in data.get("steps", []):
        say(f"  {s['name']:12s} {s['status']:8s} {s['seconds']:6.0f} s  {s.get('note', '')}")
    for kind, a in corr.items():
        if isinstance(a, dict):
            if kind == "pytest-2pow31":
                say(f"  correctness {kind:15s} {a.get('passed')} passed {a.get('failed')} failed "
                    f"{a.get('skipped')} skipped (rc {a.get('rc')})")
            else:
                say(f"  correctness {kind:15s} {a.get('passed', 0):6d} passed {a.get('failed', 0):4d} failed"
                    + (f"  errors: {a['errors']}" if a.get("errors") else ""))
    if tests:
        say(f"  tests (-m gpu): {tests.get('passed')} passed, {tests.get('failed')} failed, {tests.get('skipped')} "
            f"skipped, {tests.get('errors')} errors")
        for t in tests.get("failed_tests", [])[:10]:
            say(f"      FAILED {t}")
    for t in bench.get("targets", []):
        v = t.get("value")
        say(f"  target {t['status']:8s} {t['provider']:15s} {t['op'][:20]:20s} {t['check'][:50]:50s} {t['target']:>8s} "
            f"measured {('%.2f' % v) if isinstance(v, (int, float)) else '-'}  {t.get('where', '')}")
    if problems:
        say(f"PROBLEMS: {problems}")
    for f in findings:
        say(f"FINDING (the CPU stand-ins disagree with float64 or torch; look at it): {f[:400]}")
    say(f"RESULT: {data['result']}{' (dry run: plumbing)' if dry_run else ''}  ({os.path.join(out, 'summary.json')}; "
        f"log {os.path.join(out, 'gpu_check.log')})")
    say(line)
    return 0 if ok else 1


# --------------------------------------------------------------------------- CLI


def _sanitize(v):
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return None
    if isinstance(v, dict):
        return {k: _sanitize(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_sanitize(x) for x in v]
    return v


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("source-hash")
    s = sub.add_parser("sync-tree")
    s.add_argument("src")
    s.add_argument("dst")
    s = sub.add_parser("wheel-info")
    s.add_argument("wheel")
    s.add_argument("--json", required=True)
    s.add_argument("--max-mib", type=float, default=64.0)
    s = sub.add_parser("record")
    s.add_argument("key")
    s.add_argument("value", help="JSON")
    for name in ("env", "correctness", "warm", "bench", "bench-report", "tests-report", "finish"):
        s = sub.add_parser(name)
        s.add_argument("--out", required=True)
        s.add_argument("--stub", action="store_true", help="dry run: CPU tensors stand in for the GPU")
        s.add_argument("--seconds", type=float, default=60)
        s.add_argument("--deadline", type=float, default=None, help="absolute time (epoch seconds)")
        s.add_argument("--jobs", type=int, default=16)
        s.add_argument("--log", default=None)
        s.add_argument("--quick", action="store_true")
        s.add_argument("--pytest-log", default=None)
    s = sub.add_parser("shard")
    s.add_argument("kind", choices=sorted(KINDS))
    s.add_argument("i", type=int)
    s.add_argument("n", type=int)
    s.add_argument("--deadline", type=float, required=True)
    s.add_argument("--json", required=True)
    s.add_argument("--stub", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "source-hash":
        print(source_hash(ROOT))
        return 0
    if args.cmd == "sync-tree":
        n, copied, removed = sync_tree(os.path.abspath(args.src), os.path.abspath(args.dst))
        say(f"[sync-tree] {n} files in {args.dst}: {copied} written, {removed} stale removed")
        return 0
    if args.cmd == "wheel-info":
        info = wheel_info(args.wheel, args.json, args.max_mib)
        say(json.dumps({k: info[k] for k in ("wheel", "mib", "tags", "needed", "python_symbols",
                                             "symbol_versions_max", "cubin_archs", "problems")}, indent=1))
        if info["problems"]:
            raise SystemExit("wheel-info: " + "; ".join(info["problems"]))
        return 0
    if args.cmd == "shard":
        return run_shard(args.kind, args.i, args.n, args.deadline, args.stub, args.json)
    if args.cmd == "record":
        record(os.environ.get("GPU_CHECK_OUT", "."), args.key, json.loads(args.value))
        return 0
    out = args.out
    os.makedirs(out, exist_ok=True)
    deadline = args.deadline if args.deadline is not None else time.time() + args.seconds
    if args.cmd == "env":
        return step_env(out, args.stub)
    if args.cmd == "correctness":
        return step_correctness(out, args.stub, deadline - time.time(), args.jobs, args.log, sys.executable)
    if args.cmd == "warm":
        return step_warm(out, args.stub, deadline, args.jobs, sys.executable)
    if args.cmd == "bench":
        return step_bench(out, args.stub, deadline, args.quick)
    if args.cmd == "bench-report":
        return step_bench_report(out)
    if args.cmd == "tests-report":
        return step_tests_report(out, args.pytest_log)
    if args.cmd == "finish":
        return step_finish(out, args.stub)
    return 2


if __name__ == "__main__":
    sys.exit(main())
