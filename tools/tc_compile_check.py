"""Compiles the Triton tensor-core kernels (convext/triton/depthwise_conv2d_tc.py) for sm_90 without a
GPU and prints their SASS summary: instruction count, tensor-core instructions (HGMMA / HMMA), global
loads, shared memory. A quick check that they build (and still use tensor cores) under a given
triton version; tools/triton_versions.sh runs it under each supported one.

    python tools/tc_compile_check.py [--k 31] [--dtype bf16]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from convext.triton import depthwise_conv2d_tc as tc  # noqa: E402

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_kernel(kern, consts, ptr_type, unit_strides, num_warps=4, num_stages=3):
    names = kern.arg_names
    consts = dict(consts, **{n: 1 for n in unit_strides})
    sig = {n: "constexpr" if n in consts else
           (("*fp32" if n in ("ws_ptr", "scratch_ptr") else ptr_type) if n.endswith("_ptr") else "i32")
           for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names
             if n not in consts and (n.endswith("_ptr") or n.startswith("s"))}
    src = ASTSource(kern, sig, constexprs={(names.index(n),): v for n, v in consts.items()}, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                        options=dict(num_warps=num_warps, num_stages=num_stages))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        sass = subprocess.run([CUOBJDUMP, "-sass", f.name], capture_output=True, text=True).stdout
    ops = Counter(m.group(2) for m in (re.search(r"\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_]+)", line)
                                       for line in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", line))
                  if m)
    mma = {k: v for k, v in ops.items() if "MMA" in k}
    print(f"{kern.fn.__name__ if hasattr(kern, 'fn') else kern.__name__:18s} instr {sum(ops.values()):5d}  "
          f"tensor-core {mma}  LDG {ops.get('LDG', 0)}  shared {ck.metadata.shared} B")
    return mma


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=31)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    args = ap.parse_args()
    print(f"triton {triton.__version__}: {args.k}x{args.k} {args.dtype}, stride 1, 56x56 planes")
    bq, bk = tc._pick_block_q(56, lambda q: tc._band_k(q, 1, args.k, 1))
    geo = dict(KH=args.k, KW=args.k, SH=1, SW=1, DH=1, DW=1, DOT_F32=False, BLOCK_Q=bq, BLOCK_K=bk)
    ptr = "*" + args.dtype
    found = [compile_kernel(tc._tc_fwd_kernel, dict(geo, HAS_BIAS=True, BLOCK_H=64), ptr, ("sxw", "syw")),
             compile_kernel(tc._tc_bwd_in_kernel, dict(geo, BLOCK_H=64), ptr, ("sgw", "siw")),
             compile_kernel(tc._tc_bwd_w_kernel, dict(geo, KW_P=triton.next_power_of_2(args.k), BLOCK_R=64),
                            ptr, ("sgw", "sxw"))]
    if not all(found):
        sys.exit("a kernel compiled without tensor-core instructions")


if __name__ == "__main__":
    main()
