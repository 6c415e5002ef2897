"""convext benchmarks: `python -m bench [--quick]` runs every op; see bench/harness.py."""
