"""toy-vqa: video question answering with the frozen V-JEPA 2 encoder vs its baselines -> a section
of docs/results.md.

    python benchmarks/toy_vqa.py                          # pretrains the tiny recipe first (~25 min)
    python benchmarks/toy_vqa.py --encoder runs/pretrain-tiny/checkpoints/step-00006000.pt
    python benchmarks/toy_vqa.py --seeds 0 1 2            # finished runs in --out are reused
    python benchmarks/toy_vqa.py --second-stage 1000      # + the encoder unfrozen vs kept frozen

Every row is ``vjepa2 train-vqa --config toy`` (a projector and a 2-block LM trained from scratch on
7200 clips x 2 questions, scored by exact match on 480 validation clips x 2 questions) with the
same LM and budget; only what the LM sees of the video differs:

- ``pretrained``: the frozen tiny V-JEPA 2 encoder's tokens;
- ``random-init``: the same architecture with random weights (``encoder.random_init=true``);
- ``image-only``: the pretrained encoder on the middle frame repeated (``data.clips.input=image``);
- ``blind``: no visual tokens (``--encoder none``), the question alone.

The bars (issue "Video question answering"): on temporal questions pretrained >= random-init + 15
and >= blind + 25 points; image-only >= 10 points below pretrained on temporal questions and within
5 on single-frame ones.

``--second-stage N``: the paper's second stage at toy scale. From each pretrained run's last
checkpoint (``init=``), N more steps at a lower learning rate with the encoder unfrozen
(``encoder.trainable=true``, at ``encoder.lr_scale`` x the lr, every clip encoded at every step) and,
as its control, the same N steps with the encoder still frozen.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import machine_line  # noqa: E402

ROWS = {  # row -> overrides of the toy recipe (ENCODER is replaced by the pretrained checkpoint)
    "pretrained": ("encoder.weights=ENCODER",),
    "random-init": ("encoder.weights=ENCODER", "encoder.random_init=true"),
    "image-only": ("encoder.weights=ENCODER", "data.clips.input=image"),
    "blind": ("encoder.weights=none",),
}
# second stage -> overrides added to the pretrained row's (INIT: that seed's last checkpoint)
SECOND_STAGE = {"encoder frozen": ("init=INIT",), "encoder unfrozen": ("init=INIT", "encoder.trainable=true")}
SECOND_STAGE_LR = 3e-4
KINDS = ("temporal", "single-frame", "all")
SECTION_TITLE = "## Video question answering (toy-vqa)"
# (label, kind, row a, row b, least a - b, most a - b): the bars.
BARS = (("pretrained >= random-init + 15 (temporal)", "temporal", "pretrained", "random-init", 15.0, None),
        ("pretrained >= blind + 25 (temporal)", "temporal", "pretrained", "blind", 25.0, None),
        ("image-only >= 10 below pretrained (temporal)", "temporal", "pretrained", "image-only", 10.0, None),
        ("image-only within 5 of pretrained (single-frame)", "single-frame", "pretrained", "image-only", -5.0, 5.0))


def pretrained_encoder(out: Path) -> str:
    """The tiny recipe's final checkpoint, pretrained into ``out/pretrain`` (reused when there)."""
    from vjepa2.evals.report import ToyReportConfig, pretrain_tiny

    checkpoint, _ = pretrain_tiny(ToyReportConfig(out=str(out), pretrain_config="tiny", seed=0), True)
    return str(checkpoint)


def run_row(row: str, seed: int, overrides: list[str], out: Path, extra: list[str]) -> dict:
    """One (row, seed): ``train_vqa`` with ``overrides`` of the toy recipe into ``out/<row>/seed-<seed>``
    unless its eval.json is there. Returns the scores and the run's ``seconds``."""
    from vjepa2.files import atomic_write_text
    from vjepa2.vqa.trainer import load_vqa_config, train_vqa

    run_dir = out / row.replace(" ", "-") / f"seed-{seed}"
    done, timing = run_dir / "eval.json", run_dir / "seconds.txt"
    if done.is_file():
        return {**json.loads(done.read_text()), "seconds": float(timing.read_text()) if timing.is_file() else 0.0}
    overrides = [*overrides, f"seed={seed}", f"output_dir={run_dir}", "log.progress_bar=false",
                 "log.tensorboard=false", f"data.cache_dir={out / 'features'}", *extra]  # features: keyed by encoder
    started = time.time()
    result = train_vqa(load_vqa_config("toy", overrides), resume=(run_dir / "checkpoints").is_dir())
    seconds = time.time() - started
    atomic_write_text(timing, f"{seconds:.1f}\n")
    print(f"{row} seed {seed}: " + ", ".join(f"{k} {v['accuracy']:.1f}" for k, v in result["eval"].items())
          + f" ({seconds:.0f} s)", flush=True)
    return {**result["eval"], "seconds": seconds}


def row_overrides(row: str, encoder: str) -> list[str]:
    return [o.replace("ENCODER", encoder) for o in ROWS[row]]


def second_stage_overrides(stage: str, encoder: str, out: Path, seed: int, steps: int) -> list[str]:
    """The pretrained row's settings, started from its run's last checkpoint, ``steps`` more steps."""
    init = sorted((out / "pretrained" / f"seed-{seed}" / "checkpoints").glob("step-*.pt"))[-1]
    schedule = [f"schedule.iterations={steps}", f"schedule.warmup={max(1, steps // 20)}",
                f"schedule.cooldown={max(1, steps // 4)}", f"optim.lr={SECOND_STAGE_LR}"]
    return row_overrides("pretrained", encoder) + [o.replace("INIT", str(init)) for o in SECOND_STAGE[stage]] + schedule


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def render_section(scores: dict[str, list[dict]], encoder: str, command: str, machine: str,
                   second: dict[str, list[dict]] | None = None, second_steps: int = 0) -> str:
    """The Markdown section: the table (mean ± sd over seeds), each bar's verdict (on the means, with
    the per-seed differences), and the second stage's table when it ran."""
    from vjepa2.vqa.trainer import load_vqa_config

    def accuracies(table: dict[str, list[dict]], row: str, kind: str) -> list[float]:
        return [s[kind]["accuracy"] for s in table[row]]

    def cells(table: dict[str, list[dict]], row: str) -> str:
        return " | ".join("{:.1f} ± {:.1f}".format(*mean_sd(accuracies(table, row, k))) for k in KINDS)

    cfg = load_vqa_config("toy")
    seeds = len(next(iter(scores.values())))
    minutes = [sum(s["seconds"] for row in table.values() for s in row) / 60 for table in (scores, second or {})]
    lines = [SECTION_TITLE, "",
             f"Produced by `{command}` ({minutes[0]:.0f} min of runs for the four rows"
             + (f", {minutes[1]:.0f} for the second stage" if second else "") + f"; {machine}). "
             f"Encoder: `{encoder}` (the tiny recipe, frozen). "
             f"Each row: `vjepa2 train-vqa --config toy` ({cfg.schedule.iterations} steps, batch {cfg.batch_size}, "
             f"{cfg.projector.num_queries} visual tokens, a {cfg.lm.depth}-block {cfg.lm.dim}-wide LM from scratch), "
             f"{seeds} seed(s) of the projector and LM; exact match (%) on {cfg.data.toy.val_size} validation clips "
             f"x 2 questions, mean ± sd. Temporal questions: \"what is the red star doing?\" (12 answers, each "
             f"motion's time reversal another answer); single-frame: shape, colour or count.", "",
             "| row | temporal | single-frame | all |", "|---|---:|---:|---:|"]
    for row in ROWS:
        lines.append(f"| {row} | {cells(scores, row)} |")
    lines += ["", "| bar | difference of the means | per seed | met |", "|---|---:|---:|---|"]
    for label, kind, a, b, least, most in BARS:
        per_seed = [x - y for x, y in zip(accuracies(scores, a, kind), accuracies(scores, b, kind))]
        diff = statistics.mean(per_seed)
        met = diff >= least and (most is None or diff <= most)
        lines.append(f"| {label} | {diff:+.1f} | {', '.join(f'{d:+.1f}' for d in per_seed)} | "
                     f"{'yes' if met else '**no**'} |")
    if second:
        lines += ["", f"Second stage: from each pretrained run's last checkpoint, {second_steps} more steps at lr "
                      f"{SECOND_STAGE_LR:g} (the encoder unfrozen at {cfg.encoder.lr_scale:g} x that, or kept "
                      f"frozen as the control):", "",
                  "| from the pretrained row | temporal | single-frame | all |", "|---|---:|---:|---:|"]
        lines += [f"| {stage} | {cells(second, stage)} |" for stage in SECOND_STAGE]
        gain = [u - f for u, f in zip(accuracies(second, "encoder unfrozen", "temporal"),
                                      accuracies(second, "encoder frozen", "temporal"))]
        lines += ["", "Unfrozen minus frozen on temporal questions: {:+.1f} ± {:.1f} (per seed: {}).".format(
            *mean_sd(gain), ", ".join(f"{g:+.1f}" for g in gain))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", help="pretrained encoder checkpoint (default: pretrain the tiny recipe)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="runs/toy-vqa")
    parser.add_argument("--results-md", default="docs/results.md", help="section goes here; 'none' = do not write")
    parser.add_argument("--second-stage", type=int, default=0, metavar="STEPS",
                        help="also continue each pretrained run STEPS steps with the encoder unfrozen vs frozen")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for every row (e.g. threads=2)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    encoder = args.encoder or pretrained_encoder(out)
    scores = {row: [run_row(row, seed, row_overrides(row, encoder), out, args.overrides) for seed in args.seeds]
              for row in ROWS}
    second = {stage: [run_row(stage, seed, second_stage_overrides(stage, encoder, out, seed, args.second_stage), out,
                              args.overrides) for seed in args.seeds]
              for stage in SECOND_STAGE} if args.second_stage > 0 else None
    command = " ".join(["python benchmarks/toy_vqa.py", *(argv if argv is not None else sys.argv[1:])])
    section = render_section(scores, encoder, command, machine_line(), second, args.second_stage)
    print(section)
    if args.results_md.lower() != "none":
        from vjepa2.evals.report import write_section

        write_section(Path(args.results_md), section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
