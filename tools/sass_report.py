#!/usr/bin/env python3
"""Static SASS report for the Triton depthwise kernels (no GPU needed).

For representative variants (NCHW / channels_last; forward, grad-input, grad-weight; 3x3 s1,
3x3 s2, 5x5, 7x7, 3x3 dilation 2; fp32 and bf16) this runs the real op function with the kernel
launch intercepted, so the kernel, its arguments and its autotune configs are exactly what the
op would launch.  Each config is then compiled for sm_90 (Triton's own specialisation mirrored:
integers equal to 1 become constants, integers and pointers divisible by 16 get
``tt.divisibility``), disassembled with cuobjdump, and summarised:

* registers, spill bytes (cuobjdump -res-usage: STACK / LOCAL) and LDL/STL count;
* static SASS instruction count, by opcode class;
* the control flow: if the reachable CFG has no back edge the kernel is straight-line and the
  report gives the shortest and the longest entry-to-EXIT path (a runtime interior/border
  branch shows up as two different numbers); with a loop only the static count is meaningful;
* thread-instructions per output element = path length x 32 x num_warps / outputs per program
  (for straight-line kernels).  Grad-weight kernels (loops over a chunk of tiles): per path
  through one trip of the tile loop (natural loop of a DFS back edge; inner loops counted once),
  trip length x 32 x num_warps x kernel-row passes / outputs per trip, plus every reachable
  instruction outside the loop amortised over the program's outputs (an upper bound); outputs
  are grad_output elements.  Other loop kernels: "loop" and the static count.

These are static proxies for speed, not GPU timings.

    python tools/sass_report.py                 # first config of every variant
    python tools/sass_report.py --all-configs   # every autotune config
    python tools/sass_report.py --filter fwd    # variants whose name contains "fwd"
    python tools/sass_report.py --markdown      # a markdown table
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter, OrderedDict

os.environ.pop("TRITON_INTERPRET", None)  # compile for real, never interpret
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import convext.triton._common as common  # noqa: E402
import convext.triton.depthwise_conv2d as dw  # noqa: E402
import convext.triton.depthwise_separable_conv2d as sep  # noqa: E402

_BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
CUOBJDUMP = os.path.join(_BIN, "cuobjdump")
TARGET = GPUTarget("cuda", 90, 32)

_TY = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


# ------------------------------------------------------------------------------------ capture
class _Captured(Exception):
    pass


class _Capture:
    def __init__(self, kern):
        self.kern = kern

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            _Capture.last = (self.kern, grid, args, kwargs)
            raise _Captured()
        return launch


def capture(call):
    """Runs `call` (an op call) with the launch intercepted: (autotuner, grid, args, kwargs)."""
    saved = common._launcher, common._INTERPRET, common._NO_AUTOTUNE
    common._launcher, common._INTERPRET, common._NO_AUTOTUNE = _Capture, False, False
    common._TUNERS.clear()
    try:
        call()
    except _Captured:
        return _Capture.last
    finally:
        common._launcher, common._INTERPRET, common._NO_AUTOTUNE = saved
        common._TUNERS.clear()
    raise RuntimeError("the op launched no kernel")


# ------------------------------------------------------------------------------------ variants
def variants(N=32, C=144, H=56, W=56):
    """(name, op thunk) for every representative variant."""
    geoms = [  # name, k, stride, pad, dilation
        ("3x3s1", 3, 1, 1, 1),
        ("3x3s2", 3, 2, 1, 1),
        ("5x5", 5, 1, 2, 1),
        ("7x7", 7, 1, 3, 1),
        ("3x3d2", 3, 1, 2, 2),
    ]
    out = []
    for op in ("fwd", "bwd_in", "bwd_w"):
        for layout in ("nchw", "nhwc"):
            for gname, k, s, p, d in geoms:
                for dtype in (torch.float32, torch.bfloat16):
                    name = f"{op}-{layout}-{gname}-{_TY[dtype]}"
                    out.append((name, _thunk(op, layout, N, C, H, W, k, s, p, d, dtype)))
    return out


def _thunk(op, layout, N, C, H, W, k, s, p, d, dtype):
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    Ho = common._out_size(H, p, p, d, k, s)
    Wo = common._out_size(W, p, p, d, k, s)
    st, pad, dil = [s, s], [p, p, p, p], [d, d]

    def call():
        w = torch.empty(C, 1, k, k, dtype=dtype)
        if op == "fwd":
            x = torch.empty(N, C, H, W, dtype=dtype, memory_format=fmt)
            dw._triton_depthwise_conv2d(x, w, torch.empty(C, dtype=dtype), st, pad, dil)
        elif op == "bwd_in":
            g = torch.empty(N, C, Ho, Wo, dtype=dtype, memory_format=fmt)
            dw._triton_depthwise_conv2d_backward_input(g, w, [N, C, H, W], st, pad, dil)
        else:
            g = torch.empty(N, C, Ho, Wo, dtype=dtype, memory_format=fmt)
            x = torch.empty(N, C, H, W, dtype=dtype, memory_format=fmt)
            dw._triton_depthwise_conv2d_backward_weight(g, x, [k, k], st, pad, dil, True)
    return call


# ------------------------------------------------------------------------------------ separable
class _SepCaptured(Exception):
    pass


def capture_sep(call):
    """Runs a separable op call with its first launch intercepted: (autotuner or kernel, grid,
    args, kwargs)."""
    saved = common._launcher

    def fake_wrap(kern):
        class _L:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    capture_sep.last = (kern, grid, args, kwargs)
                    raise _SepCaptured()
                return launch
        return _L()

    common._launcher = fake_wrap
    try:
        call()
    except _SepCaptured:
        return capture_sep.last
    finally:
        common._launcher = saved
    raise RuntimeError("the op launched no kernel")


# (name, N, Cin, Cout, H=W, k, dilation) of the issue-4 suite rows reported
SEP_SHAPES = [("mbv1", 64, 256, 256, 56, 3, 1), ("mbv2p", 64, 144, 24, 56, 3, 1)]


def sep_variants():
    """(name, op thunk) for the fused separable kernels: forward (act1=relu, act2=none), grad of
    the intermediate (act1=relu, so the depthwise tile is recomputed there) and the pointwise
    weight / bias gradient (sepgw, the depthwise tile recomputed too)."""
    out = []
    for op in ("sepfwd", "sepgz", "sepgw"):
        for layout in ("nchw", "nhwc"):
            for sname, N, C, CO, H, k, d in SEP_SHAPES:
                for dtype in (torch.float32, torch.bfloat16):
                    name = f"{op}-{layout}-{sname}-{_TY[dtype]}"
                    out.append((name, _sep_thunk(op, layout, N, C, CO, H, k, d, dtype)))
    return out


def _sep_thunk(op, layout, N, C, CO, H, k, d, dtype):
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    p = d * (k - 1) // 2
    st, pad, dil = [1, 1], [p, p, p, p], [d, d]

    def call():
        x = torch.empty(N, C, H, H, dtype=dtype, memory_format=fmt)
        dww = torch.empty(C, 1, k, k, dtype=dtype)
        pww = torch.empty(CO, C, 1, 1, dtype=dtype)
        dwb, pwb = torch.empty(C, dtype=dtype), torch.empty(CO, dtype=dtype)
        if op == "sepfwd":
            sep._triton_depthwise_separable_conv2d(x, dww, pww, dwb, pwb, st, pad, dil, "relu",
                                                   "none")
        else:
            g = torch.empty(N, CO, H, H, dtype=dtype, memory_format=fmt)
            mask = [True, False, False, False, False] if op == "sepgz" else [False, False, True, False, True]
            sep._triton_depthwise_separable_conv2d_backward(
                g, x, dww, pww, dwb, pwb, st, pad, dil, "relu", "none", mask)
    return call


def sep_configs(tuner, args, kwargs):
    """The autotune configs the op would try (pruned as at launch time)."""
    named = dict(zip(tuner.fn.arg_names, args))
    return sep._prune(tuner.configs, named, **kwargs)


def _dw_stub_kernel(fn):
    """A copy of the Triton kernel `fn` (a JITFunction) whose depthwise tile is a stub: the
    depthwise bias broadcast over the pixels (one small load per trip, so the tile still varies
    with the K block and nothing downstream is hoisted or folded).  Compiling both and
    subtracting gives the instructions of the depthwise-tile part."""
    import types

    import importlib.util
    import inspect

    py = fn.fn
    g = dict(py.__globals__)
    # the tile helper the kernels call: _dw_tile_paths (after the path rewrite) or _dw_tile
    name = "_dw_tile_paths" if "_dw_tile_paths" in g else "_dw_tile"
    params = list(inspect.signature(g[name].fn).parameters.values())
    plist = ", ".join(p.name + (": tl.constexpr" if p.annotation is not inspect.Parameter.empty
                                else "") for p in params)
    mask = "k_mask" if "k_mask" in [p.name for p in params] else "offs_k < CM"
    src = (f"import triton\nimport triton.language as tl\n"
           f"from convext.triton._common import _zeros_2d\n\n\n"
           f"@triton.jit\ndef _dw_stub({plist}):\n"
           f"    z = _zeros_2d(BLOCK_P, BLOCK_K, IS_F64)\n"
           f"    b = tl.load(dwb_ptr + offs_k, mask={mask}, other=0.0)\n"
           f"    return z + b.to(z.dtype)[None, :]\n")
    path = os.path.join(tempfile.mkdtemp(), "_sass_dw_stub.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("_sass_dw_stub", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    g[name] = mod._dw_stub
    clone = types.FunctionType(py.__code__, g, py.__name__, py.__defaults__, py.__closure__)
    clone.__module__ = py.__module__
    clone.__qualname__ = py.__qualname__
    clone.__doc__ = py.__doc__
    clone.__annotations__ = dict(py.__annotations__)
    return triton.jit(clone)


def dag_paths(insns):
    """Distinct entry-to-EXIT path lengths of the reachable CFG with the back edges cut (each
    loop body counted once, for one trip), sorted."""
    succ = _succ_fn(insns)
    _, order, back = _dfs(succ, len(insns))
    return _entry_lengths(succ, order, back)


def sep_report(name, tuner, args, kwargs, config):
    """Compile the kernel and its stub twin; the depthwise-tile part per intermediate element.

    Forward (K loop): per trip path, (trip - stub trip) x threads / (BLOCK_P x BLOCK_K), plus the
    difference of everything outside the loop amortised over the K trips.  Grad-z (no K loop:
    the tile follows the CO loop): (entry-to-EXIT path, loops counted once - stub's) x threads
    / (BLOCK_P x BLOCK_K)."""
    sass, res = compile_sass(tuner, args, kwargs, config)
    r = analyse(sass, res)
    stub = _dw_stub_kernel(tuner.fn)
    sass0, res0 = compile_sass(type("T", (), {"fn": stub}), args, kwargs, config)
    r0 = analyse(sass0, res0)
    ops = Counter(op.split(".")[0] for _, op, _ in parse_sass(sass))
    r["mma"] = ops["HGMMA"] + ops["HMMA"]
    r["mma_kind"] = "HGMMA" if ops["HGMMA"] else ("HMMA" if ops["HMMA"] else "-")
    vals = dict(zip(tuner.fn.arg_names, args))
    vals.update(kwargs)
    vals.update(config.kwargs)
    thr = 32 * config.num_warps
    elems = config.kwargs["BLOCK_P"] * config.kwargs["BLOCK_K"]
    if name.startswith("sepfwd"):
        main = max(r["loops"], key=lambda l: l[3])
        main0 = max(r0["loops"], key=lambda l: l[3])
        trips = -(-vals["CM"] // config.kwargs["BLOCK_K"])
        rest = r["reachable"] - main[3]
        rest0 = r0["reachable"] - main0[3]
        t0 = main0[2][0]
        diffs = [v - t0 for v in main[2] if 4 * v >= main[2][-1]]
        amort = (rest - rest0) * thr / (elems * trips)
        r["dw_note"] = (f"trip={'/'.join(map(str, main[2]))} stub trip={'/'.join(map(str, main0[2]))}"
                        f"; outside loop {rest} vs stub {rest0} over {trips} trips")
        r["dw_trip"] = "/".join(str(v) for v in diffs)
        r["dw_per"] = "/".join(f"{d * thr / elems + amort:.1f}" for d in diffs)
        r["dw_per_trip_only"] = "/".join(f"{d * thr / elems:.1f}" for d in diffs)
    else:
        paths, paths0 = dag_paths(parse_sass(sass)), dag_paths(parse_sass(sass0))
        paths = [v for v in paths if 4 * v >= paths[-1]]
        p0 = [v for v in paths0 if 4 * v >= paths0[-1]][0]
        diffs = [v - p0 for v in paths]
        r["dw_note"] = f"paths={'/'.join(map(str, paths))} stub={'/'.join(map(str, paths0))}"
        r["dw_trip"] = "/".join(str(v) for v in diffs)
        r["dw_per"] = "/".join(f"{d * thr / elems:.1f}" for d in diffs)
        r["dw_per_trip_only"] = r["dw_per"]
    r["stub_regs"] = r0["regs"]
    return r


def sep_main(a, filt):
    if a.markdown:
        print("| variant | config | regs (spill B) | MMA | dw part / trip (thread insns) | "
              "dw insn / intermediate element |")
        print("|---|---|---|---|---|---|")
    for name, call in sep_variants():
        if not all(f in name for f in filt):
            continue
        tuner, grid, args, kwargs = capture_sep(call)
        configs = sep_configs(tuner, args, kwargs)
        configs = configs if a.all_configs else configs[:1]
        for config in configs:
            r = sep_report(name, tuner, args, kwargs, config)
            spill = r["stack"] + r["local"]
            cfg = (f"P={config.kwargs['BLOCK_P']},CO={config.kwargs['BLOCK_CO']},"
                   f"K={config.kwargs['BLOCK_K']},w{config.num_warps},s{config.num_stages}")
            if a.markdown:
                sp = f" ({spill})" if spill else ""
                print(f"| {name} | {cfg} | {r['regs']}{sp} | {r['mma']} {r['mma_kind']} | "
                      f"{r['dw_trip']} | {r['dw_per']} |")
            else:
                print(f"{name:<24} {cfg:<26} regs={r['regs']:<3} spill={spill:<4} "
                      f"mma={r['mma']} {r['mma_kind']} static={r['static']} "
                      f"dw/trip={r['dw_trip']} dw/elem={r['dw_per']}")
                print(f"    {r['dw_note']}; stub regs={r['stub_regs']}")
                if a.classes:
                    cls = r["classes"]
                    print("    " + " ".join(f"{k}={cls[k]}" for k in list(CLASSES) + ["other"]
                                            if cls[k]))
            sys.stdout.flush()


# ------------------------------------------------------------------------------------ compile
def _spec(fn, args, kwargs, config):
    """ASTSource pieces mirroring Triton's launch-time specialisation."""
    names = fn.arg_names
    vals = dict(zip(names, args))
    vals.update(kwargs)
    vals.update(config.kwargs)
    sig, constexprs, attrs = {}, {}, {}
    for i, (name, p) in enumerate(zip(names, fn.params)):
        v = vals[name]
        if p.is_constexpr:
            sig[name] = "constexpr"
            constexprs[(i,)] = v
        elif isinstance(v, torch.Tensor):
            sig[name] = "*" + _TY[v.dtype]
            if v.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(v, bool):
            sig[name] = "i1"
        elif isinstance(v, int):
            if v == 1:
                sig[name] = "constexpr"
                constexprs[(i,)] = 1
            else:
                sig[name] = "i32" if -2**31 <= v < 2**31 else "i64"
                if v % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            raise TypeError(f"{name}: {type(v)}")
    return ASTSource(fn, signature=sig, constexprs=constexprs, attrs=attrs)


def compile_sass(autotuner, args, kwargs, config):
    fn = autotuner.fn
    src = _spec(fn, args, kwargs, config)
    ck = triton.compile(src, target=TARGET,
                        options=dict(num_warps=config.num_warps, num_stages=config.num_stages))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        sass = subprocess.run([CUOBJDUMP, "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout
        res = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    return sass, res


# ------------------------------------------------------------------------------------ analysis
_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")

CLASSES = OrderedDict([
    ("ldg", lambda o: o.startswith(("LDG", "LD.", "LDC", "LDL"))),
    ("stg", lambda o: o.startswith(("STG", "ST.", "STL", "RED", "ATOM"))),
    ("smem", lambda o: o.startswith(("LDS", "STS", "LDSM", "BAR"))),
    ("fma", lambda o: o.startswith(("FFMA", "FMUL", "FADD", "DFMA", "DMUL", "DADD", "HFMA2", "HMUL2",
                                    "HADD2", "FMNMX"))),
    ("cvt", lambda o: o.startswith(("F2F", "F2FP", "I2F", "F2I", "PRMT"))),
    ("pred", lambda o: o.startswith(("ISETP", "PLOP3", "FSETP", "DSETP", "P2R", "R2P", "SEL",
                                     "FSEL"))),
    ("int", lambda o: o.startswith(("IMAD", "IADD", "LEA", "SHF", "LOP", "IMNMX", "IABS", "SHL",
                                    "SHR", "MOV", "I2I", "FLO", "POPC", "VIADD", "VIMNMX"))),
    ("ctrl", lambda o: o.startswith(("BRA", "EXIT", "BSSY", "BSYNC", "CALL", "RET", "WARPSYNC",
                                     "BMOV", "NOP", "YIELD", "JMP"))),
])


def parse_sass(sass):
    """[(addr, opcode, text)] of the first kernel in the dump."""
    out = []
    for m in _INSN.finditer(sass):
        text = m.group(2).strip()
        body = re.sub(r"^@!?U?P[T0-9]+\s+", "", text)
        op = body.split()[0] if body else ""
        out.append((int(m.group(1), 16), op, text))
    return out


def classify(op):
    for k, f in CLASSES.items():
        if f(op):
            return k
    return "other"


def _succ_fn(insns):
    idx = {a: i for i, (a, _, _) in enumerate(insns)}
    n = len(insns)

    def succ(i):
        a, op, text = insns[i]
        pred = text.startswith("@")
        if op == "EXIT":
            return [] if not pred else [i + 1]
        if op in ("BRA", "JMP"):
            m = re.search(r"0x([0-9a-f]+)", text.split(None, 2)[-1] if pred else text)
            tgt = idx.get(int(m.group(1), 16)) if m else None
            out = [tgt] if tgt is not None else []
            if pred:
                out.append(i + 1)
            return out
        if op == "RET":
            return []
        return [i + 1] if i + 1 < n else []
    return succ


def _dfs(succ, n):
    """Iterative DFS of the CFG from instruction 0: (visited flags, post-order, back edges)."""
    color = [0] * n
    order, back = [], []
    stack = [(0, iter(succ(0)))]
    color[0] = 1
    while stack:
        node, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            color[node] = 2
            order.append(node)
            stack.pop()
        elif color[nxt] == 1:
            back.append((node, nxt))
        elif color[nxt] == 0:
            color[nxt] = 1
            stack.append((nxt, iter(succ(nxt))))
    return color, order, back


def _thin(acc):
    """Keep at most ~34 of a set of path lengths: the extremes and a spread."""
    if len(acc) <= 64:
        return acc
    v = sorted(acc)
    return set(v[:: max(1, len(v) // 32)]) | {v[0], v[-1]}


def _entry_lengths(succ, order, back):
    """Distinct entry-to-EXIT path lengths with the back edges cut (a loop body counts once),
    from the DFS post-order (successors before their predecessors once back edges are cut)."""
    back = set(back)
    lens = {}
    for node in order:
        s = [x for x in succ(node) if (node, x) not in back]
        acc = set()
        if not s:
            acc = {0} if not succ(node) else set()
        for x in s:
            acc |= lens[x]
        lens[node] = {1 + v for v in _thin(acc)}
    return sorted(lens[0])


def _dag_lengths(nodes, succ, sink_edge):
    """Distinct lengths (instructions) of the paths from each node of an acyclic sub-CFG to its
    end; a node ends a path when sink_edge(node, successor) holds for one of its successors or
    when it has no successor inside `nodes`.  Returns {node: set of lengths}."""
    memo = {}

    def visit(start):
        stack = [(start, False)]
        while stack:
            v, done = stack.pop()
            if v in memo:
                continue
            inner = [x for x in succ(v) if x in nodes and not sink_edge(v, x)]
            if not done:
                stack.append((v, True))
                stack.extend((x, False) for x in inner if x not in memo)
                continue
            acc = set()
            if len(inner) < len([x for x in succ(v) if x in nodes]) or not inner:
                acc.add(0)
            for x in inner:
                acc |= memo[x]
            memo[v] = {1 + a for a in _thin(acc)}
    for v in nodes:
        visit(v)
    return memo


def loop_paths(insns):
    """For the innermost loops of the CFG: [(header, latch, iteration path lengths, body size)].
    A loop is the natural loop of a back edge latch -> header (found by DFS); an iteration
    path runs from the header to the latch inside the body, so its length is the instructions
    one trip executes (each distinct branch combination inside gives its own length)."""
    succ = _succ_fn(insns)
    n = len(insns)
    color, _, back = _dfs(succ, n)
    pred = [[] for _ in range(n)]
    for i in range(n):
        if color[i]:
            for x in succ(i):
                pred[x].append(i)
    loops = []
    for latch, header in back:
        body = {header}
        work = [latch]
        while work:
            v = work.pop()
            if v in body:
                continue
            body.add(v)
            work.extend(pred[v])
        loops.append((header, latch, body))
    out = []
    backset = set(back)
    for header, latch, body in loops:
        depth = sum(1 for h, _, b in loops if h != header and h in body)  # loops inside
        # paths from the header that end at the latch (the others leave the loop); the back
        # edges of inner loops are cut, so an inner loop counts once (one trip)
        ends = _dag_lengths(body, succ, lambda v, x: (x == header and v == latch)
                            or (v, x) in backset)
        out.append((header, latch, sorted(ends[header]), len(body), depth))
    return out


def cfg_paths(insns):
    """(straight_line, path lengths, reachable): the distinct lengths in instructions of the
    entry-to-EXIT paths of the reachable CFG (sorted); None when it has a cycle."""
    succ = _succ_fn(insns)
    color, order, back = _dfs(succ, len(insns))
    reachable = sum(1 for c in color if c)
    if back:
        return False, None, reachable
    return True, _entry_lengths(succ, order, back), reachable


def analyse(sass, res):
    insns = parse_sass(sass)
    straight, paths, reach = cfg_paths(insns)
    loops = [] if straight else loop_paths(insns)
    live = insns  # count every instruction up to the end padding
    cls = Counter()
    for _, op, _ in live:
        if op == "NOP":
            continue
        cls[classify(op)] += 1
    m = re.search(r"REG:(\d+)", res)
    stack = re.search(r"STACK:(\d+)", res)
    local = re.search(r"LOCAL:(\d+)", res)
    spill_ops = sum(1 for _, op, _ in insns if op.startswith(("LDL", "STL")))
    return dict(regs=int(m.group(1)) if m else -1,
                stack=int(stack.group(1)) if stack else 0,
                local=int(local.group(1)) if local else 0,
                spill_ops=spill_ops, static=sum(cls.values()), classes=cls,
                straight=straight, paths=paths, loops=loops, reachable=reach)


def outputs_per_program(name, config, kwargs):
    k = config.kwargs
    if "BLOCK_H" in k:
        return k["BLOCK_H"] * k["BLOCK_W"]
    if "TILE_H" in k:
        return k["TILE_H"] * k["TILE_W"] * k["BLOCK_C"]
    return None  # grad-weight: loops over a chunk


def loop_work(fn, args, kwargs, config):
    """Grad-weight kernels: (outputs one trip of the tile loop covers, trips per tile (kernel-row
    passes), tiles per program) from the launch arguments; None for other kernels."""
    vals = dict(zip(fn.arg_names, args))
    vals.update(kwargs)
    vals.update(config.kwargs)
    if "TAP_BLOCK" in vals:  # the kernels before the tile rewrite (for the before column)
        passes = -(-vals["KH"] * vals["KW"] // vals["TAP_BLOCK"])
        if "BLOCK_W" in vals:  # trip of the row loop: one output row (its one column block)
            assert vals["W_out"] <= vals["BLOCK_W"]
            return vals["W_out"], passes, vals["per_chunk"], 1
        return vals["BLOCK_C"], passes, vals["per_chunk"], 0  # trip: one pixel
    if "KR" not in vals:
        return None
    if "BH" in vals:
        per_trip = vals["BH"] * vals["BW"]
    else:
        per_trip = vals["TH"] * vals["TW"] * vals["BLOCK_C"]
    passes = -(-vals["KH"] // vals["KR"])
    return per_trip, passes, vals["per_chunk"], 0


def cfg_str(config):
    kw = ",".join(f"{k}={v}" for k, v in config.kwargs.items())
    return f"{kw},w{config.num_warps},s{config.num_stages}"


# ------------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all-configs", action="store_true")
    ap.add_argument("--filter", default="", help="comma-separated substrings; all must match")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--classes", action="store_true", help="print the opcode classes")
    ap.add_argument("--dump", default=None, help="folder to write each variant's SASS into")
    ap.add_argument("--sep", action="store_true",
                    help="the fused separable kernels instead (forward, grad of the intermediate)")
    a = ap.parse_args()
    filt = [f for f in a.filter.split(",") if f]
    if a.sep:
        return sep_main(a, filt)
    rows = []
    for name, call in variants():
        if not all(f in name for f in filt):
            continue
        tuner, grid, args, kwargs = capture(call)
        configs = tuner.configs if a.all_configs else tuner.configs[:1]
        for ci, config in enumerate(configs):
            sass, res = compile_sass(tuner, args, kwargs, config)
            if a.dump:
                os.makedirs(a.dump, exist_ok=True)
                with open(os.path.join(a.dump, f"{name}-c{ci}.sass"), "w") as f:
                    f.write(sass)
            r = analyse(sass, res)
            opp = outputs_per_program(name, config, kwargs)
            thr = 32 * config.num_warps
            lw = loop_work(tuner.fn, args, kwargs, config)
            if lw and r["loops"]:
                # the tile loop: the loop with the largest body among those with `depth`
                # loops inside (0: innermost).  Per output = trip path x threads x passes /
                # outputs per trip; the rest of the kernel (prologue, reductions, stores: every
                # reachable instruction outside the loop, an upper bound) is amortised over the
                # program's outputs (per_chunk tiles) and added.
                per_trip, passes, tiles, depth = lw
                _, _, lens, body, _ = max((l for l in r["loops"] if l[4] == depth),
                                          key=lambda l: l[3])
                main_paths = [v for v in lens if 4 * v >= lens[-1]]
                rest = (r["reachable"] - body) * passes
                amort = rest * thr / (per_trip * tiles)
                path = "/".join(str(v) for v in main_paths)
                per = "/".join(f"{v * thr * passes / per_trip + amort:.1f}" for v in main_paths)
                r["loop_note"] = (f"trip={path} x{thr} thr x{passes} pass / {per_trip} out; "
                                  f"rest<={rest} over {tiles} tiles (+{amort:.1f})")
            elif r["straight"] and opp:
                # short paths (< 1/4 of the longest) are early exits, not tile paths
                main_paths = [v for v in r["paths"] if 4 * v >= r["paths"][-1]]
                path = "/".join(str(v) for v in main_paths)
                per = "/".join(f"{v * thr / opp:.1f}" for v in main_paths)
            else:
                per, path = "loop", "loop"
            row = dict(name=name, cfg=cfg_str(config), per=per, path=path, **r)
            rows.append(row)
            emit(row, a)
            sys.stdout.flush()


_HEADER_DONE = [False]


def emit(r, a):
    cls = r["classes"]
    if a.markdown:
        if not _HEADER_DONE[0]:
            print("| variant | config | regs | spill | static SASS | path | thread-insn/output | "
                  "ldg | fma | int | pred | cvt |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|")
            _HEADER_DONE[0] = True
        spill = r["stack"] + r["local"]
        print(f"| {r['name']} | {r['cfg']} | {r['regs']} | {spill} | {r['static']} | {r['path']} | "
              f"{r['per']} | {cls['ldg']} | {cls['fma']} | {cls['int']} | {cls['pred']} | "
              f"{cls['cvt']} |")
        return
    print(f"{r['name']:<26} {r['cfg']:<34} regs={r['regs']:<3} spill={r['stack'] + r['local']:<4} "
          f"static={r['static']:<5} path={r['path']:<9} insn/out={r['per']}")
    if r.get("loop_note"):
        print("    " + r["loop_note"])
    if a.classes:
        print("    " + " ".join(f"{k}={cls[k]}" for k in list(CLASSES) + ["other"] if cls[k]))


if __name__ == "__main__":
    main()
