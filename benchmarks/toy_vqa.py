"""toy-vqa: video question answering with the frozen V-JEPA 2 encoder vs its baselines -> a section
of docs/results.md.

    python benchmarks/toy_vqa.py                          # pretrains the tiny recipe first (~25 min)
    python benchmarks/toy_vqa.py --encoder runs/pretrain-tiny/checkpoints/step-00006000.pt
    python benchmarks/toy_vqa.py --seeds 0 1 2            # finished runs in --out are reused

Every row is ``vjepa2 train-vqa --config toy`` (a projector and a 2-block LM trained from scratch on
2400 clips x 2 questions, scored by exact match on 480 validation clips x 2 questions) with the
same LM and budget; only what the LM sees of the video differs:

- ``pretrained``: the frozen tiny V-JEPA 2 encoder's tokens;
- ``random-init``: the same architecture with random weights (``encoder.random_init=true``);
- ``image-only``: the pretrained encoder on the middle frame repeated (``data.clips.input=image``);
- ``blind``: no visual tokens (``--encoder none``), the question alone.

The bars (issue "Video question answering"): on temporal questions pretrained >= random-init + 15
and >= blind + 25 points; image-only >= 10 points below pretrained on temporal questions and within
5 on single-frame ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROWS = {  # row -> overrides of the toy recipe (ENCODER is replaced by the pretrained checkpoint)
    "pretrained": ("encoder.weights=ENCODER",),
    "random-init": ("encoder.weights=ENCODER", "encoder.random_init=true"),
    "image-only": ("encoder.weights=ENCODER", "data.clips.input=image"),
    "blind": ("encoder.weights=none",),
}
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


def run_row(row: str, seed: int, encoder: str, out: Path, extra: list[str]) -> dict:
    """One (row, seed): ``train_vqa`` into ``out/<row>/seed-<seed>`` unless its eval.json is there."""
    from vjepa2.vqa.trainer import load_vqa_config, train_vqa

    run_dir = out / row / f"seed-{seed}"
    done = run_dir / "eval.json"
    if done.is_file():
        return json.loads(done.read_text())
    overrides = [o.replace("ENCODER", encoder) for o in ROWS[row]] + [
        f"seed={seed}", f"output_dir={run_dir}", "log.progress_bar=false", "log.tensorboard=false",
        f"data.cache_dir={out / 'features'}", *extra]  # features are keyed by encoder and input: shared by rows
    started = time.time()
    result = train_vqa(load_vqa_config("toy", overrides), resume=(run_dir / "checkpoints").is_dir())
    print(f"{row} seed {seed}: " + ", ".join(f"{k} {v['accuracy']:.1f}" for k, v in result["eval"].items())
          + f" ({time.time() - started:.0f} s)", flush=True)
    return result["eval"]


def render_section(scores: dict[str, list[dict]], encoder: str, command: str, seconds: float) -> str:
    """The Markdown section: the table (mean ± sd over seeds) and each bar's verdict."""
    from vjepa2.vqa.trainer import load_vqa_config

    def mean_sd(row: str, kind: str) -> tuple[float, float]:
        values = [s[kind]["accuracy"] for s in scores[row]]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    cfg = load_vqa_config("toy")
    seeds = len(next(iter(scores.values())))
    lines = [SECTION_TITLE, "",
             f"Produced by `{command}` ({seconds / 60:.0f} min). Encoder: `{encoder}` (the tiny recipe, frozen). "
             f"Each row: `vjepa2 train-vqa --config toy` ({cfg.schedule.iterations} steps, batch {cfg.batch_size}, "
             f"{cfg.projector.num_queries} visual tokens, a {cfg.lm.depth}-block {cfg.lm.dim}-wide LM from scratch), "
             f"{seeds} seed(s) of the projector and LM; exact match (%) on {cfg.data.toy.val_size} validation clips "
             f"x 2 questions, mean ± sd. Temporal questions: \"what is the red star doing?\" (12 answers, each "
             f"motion's time reversal another answer); single-frame: shape, colour or count.", "",
             "| row | temporal | single-frame | all |", "|---|---:|---:|---:|"]
    for row in ROWS:
        lines.append(f"| {row} | " + " | ".join("{:.1f} ± {:.1f}".format(*mean_sd(row, k)) for k in KINDS) + " |")
    lines += ["", "| bar | difference | met |", "|---|---:|---|"]
    for label, kind, a, b, least, most in BARS:
        diff = mean_sd(a, kind)[0] - mean_sd(b, kind)[0]
        met = diff >= least and (most is None or diff <= most)
        lines.append(f"| {label} | {diff:+.1f} | {'yes' if met else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", help="pretrained encoder checkpoint (default: pretrain the tiny recipe)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="runs/toy-vqa")
    parser.add_argument("--results-md", default="docs/results.md", help="section goes here; 'none' = do not write")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for every row (e.g. threads=2)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.time()
    encoder = args.encoder or pretrained_encoder(out)
    scores = {row: [run_row(row, seed, encoder, out, args.overrides) for seed in args.seeds] for row in ROWS}
    command = " ".join(["python benchmarks/toy_vqa.py", *(argv if argv is not None else sys.argv[1:])])
    section = render_section(scores, encoder, command, time.time() - started)
    print(section)
    if args.results_md.lower() != "none":
        from vjepa2.evals.report import write_section

        write_section(Path(args.results_md), section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
