"""Where a pretraining step's time goes: ``vjepa2 pretrain`` itself under ``torch.profiler``.

    python benchmarks/step_profile.py                                # the default recipe (tiny), 120 steps
    python benchmarks/step_profile.py --steps 60 data.num_workers=1  # any recipe override, as on the CLI
    python benchmarks/step_profile.py --config vitl model.size=small 'phases=[...]' --steps 10

Runs the recipe for ``--skip`` + ``--steps`` steps (the first ``--skip`` unprofiled: start-up, first
phase) into a temporary folder and prints, per step, the parts the loop names in the trace (``batch``:
the loader's clips and masks; ``forward``; ``backward``; ``optimizer``: gradient norm and AdamW;
``ema``; ``log``: the log row and the collapse monitor) and what is left (the loop itself), then the
operators with the most self time. The same run with ``--no-profile`` gives the plain seconds per step
(a profiler adds its own cost to every operator).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import tempfile
import time

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(__file__))
from common import machine_line, print_table  # noqa: E402

from vjepa2.train.config import load_pretrain_config  # noqa: E402
from vjepa2.train.pretrain import pretrain  # noqa: E402

PARTS = ("batch", "forward", "backward", "optimizer", "ema", "log")


def run_config(args, out_dir: str, steps: int):
    """The recipe with the overrides, cut to its longest phase for ``steps`` steps, quiet, into ``out_dir``."""
    cfg = load_pretrain_config(args.config, args.overrides)
    phase = max(cfg.phases, key=lambda p: p.iterations)
    phase = dataclasses.replace(phase, iterations=steps, lr_schedule="constant")
    return dataclasses.replace(cfg, phases=[phase], output_dir=out_dir,
                               checkpoint=dataclasses.replace(cfg.checkpoint, every=10**9),
                               log=dataclasses.replace(cfg.log, tensorboard=False, progress_bar=False))


def quiet_pretrain(cfg, resume: bool = False) -> None:
    """:func:`pretrain` without its banner and summary on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        pretrain(cfg, resume=resume)


def seconds_per_step(args) -> float:
    """Plain seconds per step over ``--steps`` steps after ``--skip`` (the run resumed, no profiler)."""
    with tempfile.TemporaryDirectory() as tmp:
        quiet_pretrain(run_config(args, tmp, args.skip))
        start = time.perf_counter()
        quiet_pretrain(run_config(args, tmp, args.skip + args.steps), resume=True)
        return (time.perf_counter() - start) / args.steps


def profiled(args):
    with tempfile.TemporaryDirectory() as tmp:
        quiet_pretrain(run_config(args, tmp, args.skip))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            quiet_pretrain(run_config(args, tmp, args.skip + args.steps), resume=True)
            wall = time.perf_counter() - start
    return prof, wall


def part_rows(prof, wall: float, steps: int) -> list[list]:
    totals = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages() if e.key in PARTS}
    rows = [[part, round(1e3 * totals.get(part, 0.0) / steps, 2), f"{100 * totals.get(part, 0.0) / wall:.0f} %"]
            for part in PARTS]
    rest = wall - sum(totals.values())
    rows.append(["rest (loop, resume, checkpoint)", round(1e3 * rest / steps, 2), f"{100 * rest / wall:.0f} %"])
    rows.append(["whole step (profiled)", round(1e3 * wall / steps, 2), "100 %"])
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny", help="recipe name or YAML path")
    p.add_argument("--steps", type=int, default=120, help="steps profiled")
    p.add_argument("--skip", type=int, default=20, help="steps run first, unprofiled")
    p.add_argument("--ops", type=int, default=15, help="operators listed")
    p.add_argument("--no-profile", action="store_true", help="plain seconds per step only")
    p.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    print(machine_line())
    print(f"recipe {args.config} {' '.join(args.overrides)}: {seconds_per_step(args):.4f} s per step "
          f"(no profiler, {args.steps} steps)", flush=True)
    if args.no_profile:
        return
    prof, wall = profiled(args)
    print_table(["part", "ms / step", "share"], part_rows(prof, wall, args.steps))
    print()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops, max_name_column_width=40))


if __name__ == "__main__":
    main()
