"""Learning curve of pretraining at toy scale: does the encoder keep improving with steps?

    python benchmarks/learning_curve.py --jobs 2                  # 2 seeds, steps 300 1000 3000 6000
    python benchmarks/learning_curve.py --seeds 0 --steps 300 1000 loss.regularizer=none   # any recipe override

One pretraining run per seed (recipe ``tiny`` plus the overrides; its ``constant`` phase stretched so
that the run ends at the last step; checkpoints at every step of ``--steps`` kept), then, for each of
those checkpoints and for a random-init encoder of the same architecture and seed: the light probe
on toy-SSv2 and toy-appearance (best of the lr grid on validation) and the effective rank of the
encoder's toy-SSv2 validation tokens. Writes ``OUT/summary.json``, the table as the section
"## Learning curve (toy scale)" of docs/results.md (``--results-md none`` to skip) and
docs/img/learning_curve.png. Finished runs and probes in ``OUT`` are reused; an interrupted
pretraining resumes; ``OUT/settings.json`` refuses to mix in runs made with other settings.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine_line  # noqa: E402

from vjepa2.evals.features import ClipConfig  # noqa: E402
from vjepa2.evals.probe import GridConfig, load_frozen_encoder  # noqa: E402
from vjepa2.files import write_json  # noqa: E402
from vjepa2.evals.report import probe_toy_task, write_section  # noqa: E402
from vjepa2.evals.dense import ToySegConfig, toy_seg  # noqa: E402
from vjepa2.evals.toy import ToyConfig  # noqa: E402

SECTION_TITLE = "## Learning curve (toy scale)"
FIGURE = "learning_curve.png"
TASKS = ("toy-ssv2", "toy-appearance")
CHANCE = {"toy-ssv2": 100 / 12, "toy-appearance": 100 / 8}
# The light probe of `vjepa2 eval toy-report`; one cached training view per clip.
GRID = GridConfig(lrs=(1e-2, 3e-3), weight_decays=(0.01,), epochs=8, batch_size=16)
CLIPS = ClipConfig(frames=8, size=64, train_views=1)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/learning-curve", help="run directory (reused when re-run)")
    parser.add_argument("--recipe", default="tiny", help="pretraining recipe (shipped name or YAML)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 1000, 3000, 6000])
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained and probed at once (1 thread each)")
    parser.add_argument("--train-size", type=int, default=2400)
    parser.add_argument("--val-size", type=int, default=480)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--toy-seg", type=int, default=0, metavar="TRAIN_SCENES",
                        help="also the dense probe (vjepa2 eval toy-seg) with this many training scenes "
                             "(0: skip; its default is 256)")
    parser.add_argument("--results-md", default="docs/results.md", help="Markdown file for the section ('none': skip)")
    parser.add_argument("--image-dir", default="docs/img")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="pretraining overrides")
    args = parser.parse_args(argv)
    args.steps = sorted(set(args.steps))
    if args.steps[0] < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def pretrain_config(args: argparse.Namespace, seed: int):
    """The recipe with its ``constant`` phase stretched to end the run at ``max(steps)``."""
    from vjepa2.config import ConfigError
    from vjepa2.train.config import load_pretrain_config

    base = load_pretrain_config(args.recipe, args.overrides)
    others = sum(p.iterations for p in base.phases if p.name != "constant")
    if all(p.name != "constant" for p in base.phases) or args.steps[-1] <= others:
        raise ConfigError(f"the recipe needs a 'constant' phase and the last step ({args.steps[-1]}) must exceed "
                          f"the other phases' {others} steps")
    out = Path(args.out) / f"seed-{seed}" / "pretrain"
    return load_pretrain_config(args.recipe, list(args.overrides) + [
        f"phases.constant.iterations={args.steps[-1] - others}", f"checkpoint.keep_steps={args.steps}",
        "checkpoint.every=500", f"seed={seed}", f"output_dir={out}", "threads=1",
        "log.tensorboard=false", "log.progress_bar=false"])


def run_seed(args: argparse.Namespace, seed: int) -> list[dict]:
    """Pretrain one seed (or reuse it), probe each kept checkpoint and the random-init encoder."""
    from vjepa2.engine.checkpoint import CheckpointDir
    from vjepa2.train.pretrain import pretrain

    torch.set_num_threads(1)
    cfg = pretrain_config(args, seed)
    run_dir = Path(cfg.output_dir).parent
    checkpoints = CheckpointDir(Path(cfg.output_dir) / "checkpoints")
    started = time.time()
    if args.steps[-1] not in dict(checkpoints.steps()):
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "pretrain.log", "a") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            pretrain(cfg, resume=True)
    pretrain_seconds = _pretrain_seconds(Path(cfg.output_dir))
    toy = ToyConfig(train_size=args.train_size, val_size=args.val_size)
    records = []
    for point in [*args.steps, "random-init"]:
        probe_dir = run_dir / "probes" / str(point)
        done = probe_dir / "result.json"
        checkpoint = checkpoints.path(args.steps[-1] if point == "random-init" else point)
        changed = not done.is_file()
        if not changed:
            record = json.loads(done.read_text())
        else:
            tick = time.time()
            encoder = load_frozen_encoder(str(checkpoint), random_init=point == "random-init", seed=seed)
            tasks = {task: probe_toy_task(encoder, task, clips=CLIPS, toy=toy, grid=GRID, seed=seed,
                                          out=probe_dir).as_dict() for task in args.tasks}
            shutil.rmtree(probe_dir / "features", ignore_errors=True)
            record = {"seed": seed, "step": point, "tasks": tasks, "probe_seconds": round(time.time() - tick, 1),
                      "pretrain_seconds": pretrain_seconds}
        if args.toy_seg and (record.get("toy_seg_scenes") != args.toy_seg or SEG_KEYS - set(record)):
            encoder = load_frozen_encoder(str(checkpoint), random_init=point == "random-init", seed=seed)
            record.update(toy_seg_record(encoder, args.toy_seg, seed))
            changed = True  # also added to finished points
        if changed:
            write_json(record, done)
        records.append(record)
    print(f"seed {seed}: done in {time.time() - started:.0f} s", flush=True)
    return records


def _pretrain_seconds(pretrain_dir: Path) -> float | None:
    """Training time of the run from its log (the last row's ``elapsed_s``; a resumed run restarts it)."""
    log = pretrain_dir / "log.csv"
    if not log.is_file():
        return None
    rows = log.read_text().strip().splitlines()
    header = rows[0].split(",")
    return float(rows[-1].split(",")[header.index("elapsed_s")]) if len(rows) > 1 else None


def check_settings(args: argparse.Namespace) -> None:
    """Refuse to reuse runs of ``args.out`` that were made with other settings. The pretraining is
    compared as the resolved config, so ``optim.lr=1e-3`` given explicitly equals a recipe whose
    default it is."""
    from vjepa2.config import to_dict

    pretraining = to_dict(pretrain_config(args, 0))
    for key in ("output_dir", "seed", "threads", "log"):
        pretraining.pop(key)
    settings = {"pretraining": pretraining, "steps": args.steps, "train_size": args.train_size,
                "val_size": args.val_size, "grid": GRID.hparams, "epochs": GRID.epochs,
                "clips": [CLIPS.frames, CLIPS.size]}
    settings = json.loads(json.dumps(settings))
    path = Path(args.out) / "settings.json"
    if path.is_file() and json.loads(path.read_text()) != settings:
        raise SystemExit(f"{args.out} holds runs made with other settings ({path}); choose another --out")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_json(settings, path)


# ------------------------------------------------------------------------------------------------
# Table and figure
# ------------------------------------------------------------------------------------------------


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


SEG_KEYS = {"toy_seg_miou", "toy_seg_figure_ground", "toy_seg_object_iou", "toy_seg_image_figure_ground"}


def toy_seg_record(encoder, scenes: int, seed: int) -> dict:
    """toy-seg of ``encoder`` (``scenes`` training scenes, half as many for validation) on the video and
    on its middle frame repeated: the record's ``toy_seg_*`` fields, in %."""
    cfg = ToySegConfig(train_size=scenes, val_size=max(scenes // 2, 1), seed=seed)
    video, image = (toy_seg(encoder, dataclasses.replace(cfg, input=mode)) for mode in ("video", "image"))
    return {"toy_seg_miou": 100 * video["miou"], "toy_seg_figure_ground": 100 * video["figure_ground"]["miou"],
            "toy_seg_object_iou": 100 * video["figure_ground"]["object_iou"],
            "toy_seg_image_figure_ground": 100 * image["figure_ground"]["miou"], "toy_seg_scenes": scenes}


def table(records: list[dict], args: argparse.Namespace) -> list[str]:
    """Markdown rows: per step, each task's top-1 (mean ± sd over seeds), the gap to random-init, rank."""
    by = {(r["seed"], r["step"]): r for r in records}
    header = (["step"] + [f"{t} top-1" for t in args.tasks] + ["toy-ssv2 − random-init", "feature rank"]
              + (["toy-seg shape mIoU", "toy-seg figure-ground mIoU", "figure-ground, image input"]
                 if args.toy_seg else []))
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    random = {t: [by[s, "random-init"]["tasks"][t]["top1"] for s in args.seeds] for t in args.tasks}
    for point in [*args.steps, "random-init"]:
        rows = [by[s, point]["tasks"] for s in args.seeds]
        cells = [str(point)] + [_mean_sd([r[t]["top1"] for r in rows]) for t in args.tasks]
        if "toy-ssv2" in args.tasks and point != "random-init":
            gaps = [r["toy-ssv2"]["top1"] - g for r, g in zip(rows, random["toy-ssv2"])]
            cells.append(f"{statistics.mean(gaps):+.1f}")
        else:
            cells.append("–")
        cells.append(_mean_sd([r[args.tasks[0]]["effective_rank"] for r in rows]))
        if args.toy_seg:
            cells += [_mean_sd([by[s, point][key] for s in args.seeds])
                      for key in ("toy_seg_miou", "toy_seg_figure_ground", "toy_seg_image_figure_ground")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def figure(records: list[dict], args: argparse.Namespace, path: Path) -> Path:
    """Top-1 per task and feature rank against steps: one line per seed, random-init dashed."""
    from vjepa2.plotting import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(1, len(args.tasks) + 1, figsize=(4.2 * (len(args.tasks) + 1), 3.4))
    panels = [(t, "top1", f"{t} top-1 (%)") for t in args.tasks]
    panels.append((args.tasks[0], "effective_rank", f"feature rank ({args.tasks[0]} tokens)"))
    for ax, (task, key, label) in zip(axes, panels):
        for i, seed in enumerate(args.seeds):
            ys = [next(r for r in records if r["seed"] == seed and r["step"] == s)["tasks"][task][key]
                  for s in args.steps]
            rnd = next(r for r in records if r["seed"] == seed and r["step"] == "random-init")["tasks"][task][key]
            ax.plot(args.steps, ys, marker="o", color=f"C{i}", label=f"pretrained, seed {seed}")
            ax.axhline(rnd, color=f"C{i}", linestyle="--", linewidth=1, label=f"random-init, seed {seed}")
        if key == "top1":
            ax.axhline(CHANCE[task], color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_xscale("log")
        ax.set_xticks(args.steps, [str(s) for s in args.steps])
        ax.minorticks_off()
        ax.set_xlabel("pretraining step")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=7)
    return save_png(fig, path, tight=True)


def section(records: list[dict], args: argparse.Namespace) -> str:
    command = "python benchmarks/learning_curve.py " + " ".join(
        [f"--seeds {' '.join(map(str, args.seeds))}", f"--steps {' '.join(map(str, args.steps))}",
         *(["--tasks " + " ".join(args.tasks)] if list(args.tasks) != list(TASKS) else []),
         *([f"--toy-seg {args.toy_seg}"] if args.toy_seg else []), *args.overrides])
    pre = [r["pretrain_seconds"] for r in records if r["step"] == args.steps[-1] and r["pretrain_seconds"]]
    probe_minutes = sum(r["probe_seconds"] for r in records) / 60 / len(args.seeds)
    lines = [SECTION_TITLE, "", "```bash", command.strip(), "```", "",
             f"Recipe `{args.recipe}`" + (f" with `{' '.join(args.overrides)}`" if args.overrides else "")
             + f", one run of {args.steps[-1]} steps per seed (seeds {', '.join(map(str, args.seeds))}); light probe, "
             f"{args.train_size} / {args.val_size} clips, {CLIPS.frames} frames at {CLIPS.size} px, best of lr "
             f"{{{', '.join(f'{lr:g}' for lr in GRID.lrs)}}} on validation; random-init = the same architecture "
             f"and seed untrained. Top-1 in %, mean ± sd over seeds; feature rank = effective rank of the "
             f"encoder's toy-SSv2 validation tokens"
             + (f"; toy-seg = linear heads on every frozen token ({args.toy_seg} training scenes), mIoU of the "
                f"shape task and of figure-ground, the latter also on the middle frame repeated" if args.toy_seg else "")
             + f". {machine_line()}. Each seed on one thread: pretraining "
             + (f"{statistics.mean(pre) / 60:.1f} min" if pre else "(time not recorded)")
             + f", probes {probe_minutes:.1f} min.", "", *table(records, args), "",
             f"![accuracy and feature rank against pretraining steps](img/{FIGURE})", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_settings(args)
    for seed in args.seeds:
        pretrain_config(args, seed)  # a bad override fails here, before any work
    started = time.time()
    print(machine_line(), flush=True)
    if args.jobs > 1 and len(args.seeds) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(args.jobs, len(args.seeds)), mp_context=context) as pool:
            records = [r for part in pool.map(run_seed, [args] * len(args.seeds), args.seeds) for r in part]
    else:
        records = [r for seed in args.seeds for r in run_seed(args, seed)]
    seconds = time.time() - started
    write_json({"records": records, "machine": {"platform": platform.platform(), "torch": torch.__version__},
                "seconds": round(seconds, 1)}, Path(args.out) / "summary.json")
    print("\n".join(table(records, args)))
    if args.results_md != "none":
        figure(records, args, Path(args.image_dir) / FIGURE)
        write_section(Path(args.results_md), section(records, args))
        print(f"wrote the section '{SECTION_TITLE}' of {args.results_md} and {Path(args.image_dir) / FIGURE}")
    else:
        print(f"figure: {figure(records, args, Path(args.out) / FIGURE)}")


if __name__ == "__main__":
    main()
