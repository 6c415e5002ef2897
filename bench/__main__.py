"""Runs every op benchmark: python -m bench [--quick] [--device ...] [--dtype ...] [--layout ...] [--mode ...]

`python -m bench models [...]` runs the end-to-end model benchmark instead (bench/models.py).

The arguments are passed to each op's benchmark (bench/depthwise_conv2d.py,
bench/depthwise_separable_conv2d.py); --shapes and --providers must then name cases and
providers that exist in each of them.
"""
import sys
import time

from . import depthwise_conv2d, depthwise_separable_conv2d


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["models"]:
        from . import models
        models.main(argv[1:])
        return
    t0 = time.perf_counter()
    for mod in (depthwise_conv2d, depthwise_separable_conv2d):
        mod.main(argv)
        print()
    print(f"[bench] all benchmarks done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
