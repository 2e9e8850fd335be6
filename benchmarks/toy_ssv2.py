"""Toy-SSv2 frozen-evaluation report: tiny pretraining + probes + baselines -> docs/results.md.

    python benchmarks/toy_ssv2.py                      # the documented run (seed 0, CPU, 1 thread)
    python benchmarks/toy_ssv2.py --threads 2 toy.train_size=480 light_grid.epochs=10

Same as ``vjepa2 eval toy-report`` but with one torch thread by default: on a shared 2-core machine
a second OpenMP thread made the tiny model's steps several times *slower* (busy-waiting on a
core another process holds). Settings and their defaults: :class:`vjepa2.evals.report.ToyReportConfig`.
"""

import sys

from vjepa2.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a == "--threads" or a.startswith("--threads=") for a in args):
        args = ["--threads", "1", *args]
    sys.exit(main(["eval", "toy-report", *args]))
