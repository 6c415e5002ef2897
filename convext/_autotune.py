"""`backend="auto"` that measures: the first call on a new key times the candidate backends.

A key is what decides which backend is fastest: the op, the device (and, on CPU, the number of
threads), the dtype, the input's layout, every tensor's shape, the geometry (stride, padding,
dilation, activations, output padding) and the direction (training: some tensor needs a gradient
and grad mode is on, so forward + backward are timed; inference: the forward alone).

On the first call with a new key, each candidate `_backend.auto_candidates` allows (the GPU paths
a GPU run has verified, never the interpreted Triton backend on CPU) runs on the real arguments:
one warm-up call each, then a few interleaved rounds of samples (each sample repeats the call up to
about a millisecond), and each candidate's fastest sample decides (noise only adds time). `torch` (the reference) is kept unless another
backend beats it by more than TIE. The choice is kept in memory and in a JSON file in the cache
folder, which later processes read; entries written under other versions of torch, convext (its
version and the build of convext._C), triton or another device are ignored.

The cache folder is $CONVEXT_CACHE_DIR, else $XDG_CACHE_HOME/convext, else ~/.cache/convext. Writes
are safe with several processes: under a lock file, the current file is read, merged with the new
entries and replaced atomically (a temporary file in the same folder, then os.replace).

Nothing is timed while torch.compile / torch.export trace (nor under jit tracing, a dispatch mode,
functorch transforms, CUDA graph capture, on fake or meta tensors): there the choice is read from
what is already known for that family of shapes (the same key without the input's own shape and the
thread count, so dynamic batch sizes do not specialise the graph), else the static rule
(`_backend.auto_choice`). The look-up is plain Python on module dicts, so fullgraph=True holds.

The cost is reported once per process on stderr: how many shapes were timed, how long it took
and where the cache is (when the first key timed comes round again, i.e. after one full pass of
a model, or at exit). `stats()` gives the running totals.

CONVEXT_AUTOTUNE=0 switches measuring off (the static rule; the test suite's default).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import _switches

ENV_AUTOTUNE = "CONVEXT_AUTOTUNE"
ENV_CACHE_DIR = "CONVEXT_CACHE_DIR"
CACHE_FILE = "autotune.json"
FORMAT = 1

ROUNDS = 5  # interleaved rounds of samples per candidate (plus the calibration call)
SAMPLE_S = 1e-3  # each sample repeats the call until it lasts about this long...
MAX_CALLS = 50  # ...but at most this many calls
TIE = 0.03  # torch is kept unless another backend is faster by more than this fraction


def _read_enabled():
    """(enabled, error): CONVEXT_AUTOTUNE (convext/_switches.py), read once at import; a value not
    understood disables measuring and is an error at the first auto call."""
    enabled, error = _switches.read_bool(ENV_AUTOTUNE)
    return (False, error) if error else (enabled, None)


ENABLED, ENV_ERROR = _read_enabled()

_lock = threading.RLock()
_EXACT: Dict[tuple, str] = {}  # exact key -> backend
_FAMILY: Dict[tuple, str] = {}  # family key -> backend (of the largest input timed in that family)
_FAMILY_WORK: Dict[tuple, int] = {}
_STATS = {"timed": 0, "seconds": 0.0, "loaded": 0, "hits": 0}
_state = {"loaded": False, "first": None, "reported": False, "dir": None, "write_error": None}


# --------------------------------------------------------------------------- where and which versions


def cache_dir() -> str:
    if _state["dir"] is not None:
        return _state["dir"]
    return _switches.cache_dir()


def cache_path() -> str:
    return os.path.join(cache_dir(), CACHE_FILE)


_DEVICE_NAMES: Dict[tuple, str] = {}


def device_name(device_type: str, index) -> str:
    key = (device_type, index)
    name = _DEVICE_NAMES.get(key)
    if name is None:
        if device_type == "cuda":
            name = torch.cuda.get_device_name(index if index is not None else torch.cuda.current_device())
        else:
            name = platform.processor() or platform.machine()
            try:
                with open("/proc/cpuinfo") as f:
                    for line in f:
                        if line.startswith("model name"):
                            name = line.split(":", 1)[1].strip()
                            break
            except OSError:
                pass
        _DEVICE_NAMES[key] = name
    return name


def versions() -> Dict[str, str]:
    """What a cached choice depends on besides the device: entries made under others are ignored."""
    triton = sys.modules.get("triton")
    convext = sys.modules.get("convext")
    ext = sys.modules.get("convext._C")
    build = "-"
    if ext is not None and getattr(ext, "__file__", None):
        with contextlib.suppress(OSError):
            st = os.stat(ext.__file__)
            build = f"{st.st_size}-{int(st.st_mtime)}"
    return {"format": str(FORMAT), "torch": torch.__version__,
            "convext": str(getattr(convext, "__version__", "?")), "convext_C": build,
            "triton": str(getattr(triton, "__version__", "-"))}


# --------------------------------------------------------------------------- keys


def layout_of(x: torch.Tensor) -> str:
    if x.is_contiguous():
        return "contiguous"
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided"


def direction(tensors: Sequence[Optional[torch.Tensor]]) -> str:
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return "train"
    return "infer"


def family_key(op: str, tensors, extra) -> tuple:
    """The key without the input's own shape (and without the thread count): what the look-up under
    torch.compile uses, so a dynamic batch or image size adds no guard on it."""
    x = tensors[0]
    shapes = tuple(None if t is None else tuple(t.shape) for t in tensors[1:])
    return (op, x.device.type, x.device.index, x.dtype, layout_of(x), direction(tensors), shapes, extra)


def _exact_key(fkey: tuple, x: torch.Tensor) -> tuple:
    """The family key plus what it leaves out: the input's own shape and the CPU thread count."""
    return fkey + (tuple(x.shape), _threads(x.device.type))


def _threads(device_type: str) -> int:
    return torch.get_num_threads() if device_type == "cpu" else 0


# --------------------------------------------------------------------------- when timing is possible


def _measurable(tensors) -> bool:
    """Real tensors in plain eager mode: nothing traces, records or captures this call."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if torch._C._len_torch_dispatch_stack() > 0:  # FakeTensorMode, make_fx, FlopCounterMode, ...
        return False
    functorch = getattr(torch._C, "_are_functorch_transforms_active", None)
    if functorch is not None and functorch():
        return False
    x = tensors[0]
    if x.device.type not in ("cpu", "cuda") or x.numel() == 0:
        return False
    for t in tensors:
        if t is not None and type(t) not in (torch.Tensor, torch.nn.Parameter):
            return False
    if x.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return False
    return True


# --------------------------------------------------------------------------- timing


def clock() -> float:
    return time.perf_counter()


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_candidates(calls: Dict[str, Callable[[], object]], device: torch.device) -> Dict[str, float]:
    """Seconds per call of each zero-argument callable: one warm-up call each, a calibration call,
    then ROUNDS interleaved rounds (the order rotates), each sample repeating the call for about
    SAMPLE_S. The answer is each candidate's fastest sample: other processes and descheduled
    threads only ever add time (on a busy CPU a single call can take 100x its real cost), so the
    minimum is the estimate they disturb least. A callable that raises is left out of the answer."""
    per_call: Dict[str, float] = {}
    for name, fn in calls.items():
        try:
            fn()  # first call: lazy initialisation, allocations, autotuning of the kernels
            _sync(device)
            t0 = clock()
            fn()
            _sync(device)
            per_call[name] = max(clock() - t0, 1e-9)
        except Exception:  # a backend that cannot run this case is simply not chosen
            continue
    names = list(per_call)
    reps = {n: max(1, min(MAX_CALLS, int(SAMPLE_S / per_call[n]))) for n in names}
    samples: Dict[str, List[float]] = {n: [per_call[n]] for n in names}
    for r in range(ROUNDS):
        k = r % max(1, len(names))
        for name in names[k:] + names[:k]:
            fn, n = calls[name], reps[name]
            _sync(device)
            t0 = clock()
            for _ in range(n):
                fn()
            _sync(device)
            samples[name].append((clock() - t0) / n)
    return {n: min(v) for n, v in samples.items()}


def pick(times: Dict[str, float], static: str) -> str:
    """The fastest; `torch` (the reference) when no other backend beats it by more than TIE; the
    static rule's choice when nothing could be timed."""
    if not times:
        return static
    best = min(times, key=times.get)
    if "torch" in times and best != "torch" and times[best] > (1 - TIE) * times["torch"]:
        return "torch"
    return best


def _calls(run, tensors, train: bool) -> Callable[[str], Callable[[], object]]:
    """name -> a zero-argument callable running `run(name, tensors)` once in the key's direction."""
    if not train:
        def infer(name):
            def call():
                with torch.no_grad():
                    return run(name, tensors)
            return call
        return infer
    leaves = tuple(None if t is None else t.detach().requires_grad_(t.requires_grad) for t in tensors)
    diff = [t for t in leaves if t is not None and t.requires_grad]
    grads: Dict[str, torch.Tensor] = {}

    def train_(name):
        def call():
            with torch.enable_grad():
                out = run(name, leaves)
                g = grads.get("out")
                if g is None or g.shape != out.shape or g.dtype != out.dtype:
                    g = grads["out"] = torch.ones_like(out)
                return torch.autograd.grad(out, diff, g, allow_unused=True)
        return call
    return train_


# --------------------------------------------------------------------------- the choice


def choose(op: str, tensors, extra, run, candidates: Sequence[str], static: str) -> str:
    """The backend for this call: known (memory, cache file), else timed now when possible, else the
    family's or the static rule's choice. Only `candidates` are ever returned."""
    fkey = family_key(op, tensors, extra)
    if torch.compiler.is_compiling():
        _load_once_when_tracing()
        hit = _FAMILY.get(fkey)
        return hit if hit is not None and hit in candidates else static
    x = tensors[0]
    key = _exact_key(fkey, x)
    hit = _EXACT.get(key)
    if hit is not None and hit in candidates:
        _STATS["hits"] += 1
        if key == _state["first"] and not _state["reported"]:
            report()
        return hit
    if not _measurable(tensors):
        hit = _FAMILY.get(fkey)
        return hit if hit is not None and hit in candidates else static
    with _lock:
        load()
        hit = _EXACT.get(key)
        if hit is not None and hit in candidates:
            return hit
        t0 = time.perf_counter()
        make = _calls(run, tensors, fkey[5] == "train")
        times = time_candidates({name: make(name) for name in candidates}, x.device)
        choice = pick(times, static)
        spent = time.perf_counter() - t0
        _STATS["timed"] += 1
        _STATS["seconds"] += spent
        if _state["first"] is None:
            _state["first"] = key
        _remember(key, choice, x.numel())
        _save([_entry(key, choice, times, x.numel())])
        return choice


def settled(op: str, tensors, extra) -> bool:
    """Whether `choose` answers this call from its exact-key memory from now on, with no report
    left to print: what a memo of its answer (convext/_plan.py) may rely on."""
    key = _exact_key(family_key(op, tensors, extra), tensors[0])
    return key in _EXACT and (_state["reported"] or key != _state["first"])


def _remember(key: tuple, choice: str, work: int):
    _EXACT[key] = choice
    fkey = key[:-2]
    if work >= _FAMILY_WORK.get(fkey, -1):
        _FAMILY[fkey] = choice
        _FAMILY_WORK[fkey] = work


# --------------------------------------------------------------------------- the cache file


def _plain(v):
    """A key as JSON values (dtypes as their names)."""
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).rsplit(".", 1)[-1]}
    if isinstance(v, (tuple, list)):
        return [_plain(e) for e in v]
    return v


def _unplain(v):
    if isinstance(v, dict) and set(v) == {"dtype"}:
        return getattr(torch, v["dtype"])
    if isinstance(v, list):
        return tuple(_unplain(e) for e in v)
    return v


def _entry(key: tuple, choice: str, times: Dict[str, float], work: int) -> dict:
    return {"device": device_name(key[1], key[2]), "key": _plain((key[0], key[1]) + key[3:]),
            "backend": choice, "ms": {k: round(v * 1e3, 6) for k, v in times.items()}, "work": work,
            "versions": versions(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _entry_id(e: dict) -> str:
    return json.dumps([e.get("device"), e.get("key")], sort_keys=True)


def _read_file(path: str) -> Dict[str, dict]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        return {}
    return {_entry_id(e): e for e in entries.values() if isinstance(e, dict)}  # keyed by what they say


@contextlib.contextmanager
def _file_lock(directory: str):
    """An exclusive advisory lock on <dir>/autotune.lock (POSIX; elsewhere os.replace alone)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(os.path.join(directory, CACHE_FILE + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _save(entries: List[dict]) -> bool:
    """Merges `entries` into the cache file: read under the lock, update, write a temporary file in
    the same folder, os.replace it. An unwritable folder keeps the choices in memory only (said once)."""
    directory = cache_dir()
    try:
        os.makedirs(directory, exist_ok=True)
        with _file_lock(directory):
            path = os.path.join(directory, CACHE_FILE)
            merged = _read_file(path)
            for e in entries:
                merged[_entry_id(e)] = e
            fd, tmp = tempfile.mkstemp(prefix=CACHE_FILE + ".", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"format": FORMAT, "entries": merged}, f, separators=(",", ":"), sort_keys=True)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise
        return True
    except OSError as e:
        if _state["write_error"] is None:
            _state["write_error"] = str(e)
            print(f"convext: cannot write the autotune cache in {directory} ({e}); the choices are kept in "
                  f"memory for this process only (set {ENV_CACHE_DIR} to a writable folder)", file=sys.stderr)
        return False


def load(force: bool = False) -> int:
    """Reads the cache file into memory once (entries of these versions and of this machine's devices)."""
    if _state["loaded"] and not force:
        return 0
    _state["loaded"] = True
    entries = _read_file(cache_path())
    if not entries:
        return 0
    now = versions()
    devices = {("cpu", None): device_name("cpu", None)}
    if any(e.get("key", [None, None])[1] == "cuda" for e in entries.values() if isinstance(e, dict)) \
            and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            devices[("cuda", i)] = device_name("cuda", i)
    n = 0
    for e in entries.values():
        try:
            if e["versions"] != now or e["backend"] not in ("cuda", "triton", "cpu", "torch"):
                continue
            op, device_type, *rest = _unplain(e["key"])
            for (t, index), name in devices.items():
                if t == device_type and name == e["device"]:
                    key = (op, t, index) + tuple(rest)
                    if key not in _EXACT:
                        _remember(key, e["backend"], int(e.get("work", 0)))
                        n += 1
        except (KeyError, TypeError, ValueError, AttributeError):
            continue  # an entry of another format
    _STATS["loaded"] += n
    return n


@torch.compiler.assume_constant_result
def _load_once_when_tracing() -> bool:
    # Runs eagerly while torch.compile traces (a constant to the graph): a compiled model in a fresh
    # process can use the choices cached by earlier ones.
    with _lock:
        load()
    return True


# --------------------------------------------------------------------------- reporting


def stats() -> dict:
    """Running totals: shapes timed, seconds spent timing, choices loaded from the cache, hits."""
    return dict(_STATS, cache=cache_path())


def report(file=None) -> Optional[str]:
    """The one-time message (printed once per process; None when nothing was timed or already said)."""
    if _state["reported"] or _STATS["timed"] == 0:
        return None
    _state["reported"] = True
    n, s = _STATS["timed"], _STATS["seconds"]
    where = cache_path() if _state["write_error"] is None else "memory only (the cache folder is not writable)"
    msg = (f"convext: backend='auto' timed the usable backends on {n} new shape{'s' if n != 1 else ''} in {s:.2f} s "
           f"(once per shape; later runs read the choices from {where}). {ENV_AUTOTUNE}=0 uses the static rule, "
           f"CONVEXT_BACKEND=<name> forces one backend.")
    print(msg, file=file or sys.stderr)
    return msg


atexit.register(report)


def reset(directory: Optional[str] = None):
    """Forgets every choice and the report (tests; `directory` replaces the cache folder)."""
    from . import _plan
    with _lock:
        _plan.clear()
        _EXACT.clear()
        _FAMILY.clear()
        _FAMILY_WORK.clear()
        _STATS.update(timed=0, seconds=0.0, loaded=0, hits=0)
        _state.update(loaded=False, first=None, reported=False, dir=directory, write_error=None)
