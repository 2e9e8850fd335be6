"""``vjepa2 eval ...``: frozen evaluation from the command line.

Examples::

    vjepa2 eval probe --encoder runs/pretrain-tiny/checkpoints/step-00000300.pt --dataset toy-ssv2 --variant light
    vjepa2 eval probe --encoder vitl.pt --train ssv2_train.txt --val ssv2_val.txt --classes ssv2_classes.txt \\
        clips.frames=16 clips.size=256 clips.segments=2 clips.views=3 grid.epochs=20
    vjepa2 eval probe --encoder random:tiny --dataset toy-ssv2 --input image      # a baseline
    vjepa2 eval anticipation --checkpoint runs/pretrain-tiny/checkpoints/step-00000300.pt --dataset toy-anticipation
    vjepa2 eval anticipation --checkpoint vitl.pt --ek100-train EPIC_100_train.csv \\
        --ek100-val EPIC_100_validation.csv --videos /data/EPIC-KITCHENS clips.fps=8
    vjepa2 eval toy-seg --encoder runs/pretrain-tiny/checkpoints/step-00000300.pt      # dense probe, mIoU
    vjepa2 eval make-dataset --dataset toy-ssv2 --out data/toy-ssv2
    vjepa2 eval toy-report                                  # pretrain + every baseline -> runs/toy-report
    vjepa2 eval toy-report results_md=docs/results.md image_dir=docs/img    # ... and the results page

Settings come from ``--config FILE.yaml`` (optional), then the flags, then dotted ``KEY=VALUE``
overrides (``grid.lrs=[1e-3,3e-4]``); every key is checked before any work.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from vjepa2.config import ConfigError, apply_overrides, load_yaml

if TYPE_CHECKING:  # the commands import torch lazily
    from vjepa2.evals.probe import ProbeReport


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with the settings (flags and KEY=VALUE override it)")
    parser.add_argument("--out", help="output directory")
    parser.add_argument("--variant", choices=["full", "light"],
                        help="full: 3 self-attention blocks + cross-attention (default); light: cross-attention only")
    parser.add_argument("--random-init", action="store_true",
                        help="same architecture, seeded random weights (baseline)")
    parser.add_argument("--no-cache", action="store_true",
                        help="run the encoder at every step instead of caching its features")
    parser.add_argument("--cache-dir", help="feature cache directory (default runs/feature-cache)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. grid.epochs=10 clips.frames=8 toy.train_size=600")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("eval", help="frozen evaluation: attentive probes, anticipation, toy benchmark",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND", required=True)

    probe = sub.add_parser("probe", help="train an attentive-probe grid on a frozen encoder and report the best",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Frozen encoder + attentive probes over an lr x weight-decay grid. Writes "
                                       "results.json, confusion.png and probes.pt to --out.")
    probe.add_argument("--encoder", help="checkpoint (.pt), transformers directory, or random:<size>")
    probe.add_argument("--dataset", choices=["toy-ssv2", "toy-appearance"], help="a built-in task")
    probe.add_argument("--train", help="training list file (path label per line) or labelled folder")
    probe.add_argument("--val", help="validation list file or folder")
    probe.add_argument("--classes", help="class names file (one per line) for list files")
    probe.add_argument("--num-classes", type=int, help="class count for list files (default: from the train list)")
    probe.add_argument("--input", choices=["video", "image", "shuffled"],
                       help="baselines: image = middle frame repeated, shuffled = frames permuted")
    probe.add_argument("--allow-short", action="store_true",
                       help="pad videos shorter than a segment instead of failing")
    _common(probe)
    probe.set_defaults(func=run_probe)

    ant = sub.add_parser("anticipation", help="action anticipation with the encoder and the predictor",
                         description="Encoder + pretrained predictor extrapolating future tokens, a 3-query "
                                     "probe (verb, noun, action) with focal loss; class-mean recall@5.")
    ant.add_argument("--checkpoint", help="pretraining checkpoint with target_encoder and predictor")
    ant.add_argument("--dataset", choices=["toy-anticipation"], help="the built-in anticipation task")
    ant.add_argument("--ek100-train", help="EPIC-KITCHENS-100 training annotations CSV")
    ant.add_argument("--ek100-val", help="EPIC-KITCHENS-100 validation annotations CSV")
    ant.add_argument("--videos", help="EPIC-KITCHENS-100 video root (<root>/<participant>/<video_id>.MP4)")
    ant.add_argument("--no-predictor", action="store_true", help="probe the encoder tokens only (ablation)")
    _common(ant)
    ant.set_defaults(func=run_anticipation)

    seg = sub.add_parser("toy-seg", help="dense probe: a linear head on every frozen token, mIoU on toy-seg",
                         description="Per-token labels from the procedural renderer (shape class, and object vs "
                                     "background); a linear head on the frozen tokens for each; mIoU and "
                                     "token accuracy on held-out scenes.")
    seg.add_argument("--encoder", required=True, help="checkpoint (.pt), transformers directory, or random:<size>")
    seg.add_argument("--random-init", action="store_true", help="same architecture, seeded random weights")
    seg.add_argument("--input", choices=["video", "image"], help="image = the middle frame repeated")
    seg.add_argument("--out", help="write results.json here")
    seg.add_argument("--threads", type=int)
    seg.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train_size=128 frames=4 size=32 object_scale=2")
    seg.set_defaults(func=run_toy_seg)

    make = sub.add_parser("make-dataset", help="export a built-in task as videos + list files",
                          description="Writes <out>/{train,val}/*.mp4, <out>/{train,val}.txt and <out>/classes.txt.")
    make.add_argument("--dataset", required=True, choices=["toy-ssv2", "toy-appearance", "toy-anticipation"])
    make.add_argument("--out", required=True, help="output directory")
    make.add_argument("--frames", type=int, default=16, help="frames per video (default 16)")
    make.add_argument("--size", type=int, default=80, help="frame size in pixels, even (default 80)")
    make.add_argument("--fps", type=float, default=8.0, help="frame rate stored in the videos (default 8)")
    make.add_argument("--train-size", type=int, default=1200)
    make.add_argument("--val-size", type=int, default=480)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--no-progress", action="store_true")
    make.set_defaults(func=run_make_dataset)

    report = sub.add_parser("toy-report", help="pretrain the tiny model, probe it and every baseline on the "
                                               "built-in tasks, write docs/results.md",
                            description="One seeded CPU command: tiny pretraining (resumed if present), features, "
                                        "probes for pretrained / random-init / image-only / shuffled inputs with "
                                        "both probe variants, anticipation; writes the results section.")
    report.add_argument("--config", help="YAML with report settings")
    report.add_argument("--threads", type=int)
    report.add_argument("--no-progress", action="store_true")
    report.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="e.g. pretrain_overrides=[phases.constant.iterations=600] toy.train_size=600")
    report.set_defaults(func=run_toy_report)
    return parser


def _settings(args: argparse.Namespace, flags: dict) -> dict:
    data = load_yaml(args.config) if args.config else {}
    data.update({k: v for k, v in flags.items() if v is not None})
    for key, value in (("out", args.out), ("variant", args.variant), ("device", args.device), ("seed", args.seed),
                       ("cache_dir", args.cache_dir)):
        if value is not None:
            data[key] = value
    if args.random_init:
        data["random_init"] = True
    if args.no_cache:
        data["cache_dir"] = None
    return apply_overrides(data, args.overrides)


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _fail(command: str, err: Exception) -> int:
    print(f"vjepa2 eval {command}: {err}", file=sys.stderr)
    return 2


def _print_best(report: ProbeReport, heads: tuple[str, ...]) -> None:
    best = report.best
    print(f"best probe: lr {best.lr:g}, weight decay {best.weight_decay:g} (of {len(report.grid)}; "
          f"{report.val.count} validation videos)")
    for name in heads:
        m = best.heads[name]
        print(f"  {name}: top-1 {m.top1:.2f}%  top{m.k} {m.top_k:.2f}%  recall@5 {m.recall_at_5:.2f}%")


def run_probe(args: argparse.Namespace) -> int:
    from vjepa2.evals.data import EvalDataError
    from vjepa2.evals.probe import probe_eval_config, run_probe_eval

    _threads(args)
    flags = {"encoder": args.encoder, "dataset": args.dataset, "train": args.train, "val": args.val,
             "classes": args.classes, "num_classes": args.num_classes}
    try:
        data = _settings(args, flags)
        if args.input or args.allow_short:
            clips = dict(data.get("clips") or {})
            if args.input:
                clips["input"] = args.input
            if args.allow_short:
                clips["allow_short"] = True
            data["clips"] = clips
        cfg = probe_eval_config(data)
        report = run_probe_eval(cfg, progress=not args.no_progress)
    except (ConfigError, EvalDataError) as err:
        return _fail("probe", err)
    _print_best(report, ("class",))
    print(f"wrote {cfg.out}/results.json, confusion.png, probes.pt")
    return 0


def run_anticipation(args: argparse.Namespace) -> int:
    from vjepa2.evals.anticipation import HEAD_NAMES, anticipation_eval_config, run_anticipation_eval
    from vjepa2.evals.data import EvalDataError

    _threads(args)
    flags = {"checkpoint": args.checkpoint, "dataset": args.dataset, "ek100_train": args.ek100_train,
             "ek100_val": args.ek100_val, "videos": args.videos}
    try:
        data = _settings(args, flags)
        if args.no_predictor:
            data["use_predictor"] = False
        cfg = anticipation_eval_config(data)
        report = run_anticipation_eval(cfg, progress=not args.no_progress)
    except (ConfigError, EvalDataError) as err:
        return _fail("anticipation", err)
    _print_best(report, HEAD_NAMES)
    if report.val.unseen_actions:
        print(f"  {report.val.unseen_actions} validation actions never occur in training: action recall@5 "
              f"counting them as misses {report.best.heads['action'].recall_at_5_with_unseen:.2f}%")
    print(f"wrote {cfg.out}/results.json, confusion.png, probes.pt")
    return 0


def run_toy_seg(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from vjepa2.config import from_dict
    from vjepa2.evals.dense import ToySegConfig, toy_seg
    from vjepa2.evals.probe import load_frozen_encoder

    _threads(args)
    try:
        data = apply_overrides({"input": args.input} if args.input else {}, args.overrides)
        cfg = from_dict(ToySegConfig, data)
        encoder = load_frozen_encoder(args.encoder, random_init=args.random_init, seed=cfg.seed)
        result = toy_seg(encoder, cfg)
    except (ConfigError, ValueError) as err:
        return _fail("toy-seg", err)
    result["encoder"] = args.encoder + (" (random init)" if args.random_init else "")
    ground = result["figure_ground"]
    print(f"toy-seg ({cfg.input}): shape mIoU {100 * result['miou']:.1f} %, token accuracy "
          f"{100 * result['token_accuracy']:.1f} %; figure-ground mIoU {100 * ground['miou']:.1f} %, object IoU "
          f"{100 * ground['object_iou']:.1f} % ({result['val_tokens']} validation tokens)")
    if args.out:
        from vjepa2.files import atomic_write_text

        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out) / "results.json", json.dumps(result, indent=2))
        print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def run_make_dataset(args: argparse.Namespace) -> int:
    from vjepa2.config import from_dict
    from vjepa2.evals.toy import ToyConfig, export_toy_dataset

    try:
        toy = from_dict(ToyConfig, {"train_size": args.train_size, "val_size": args.val_size, "seed": args.seed})
        written = export_toy_dataset(args.dataset, args.out, toy, args.frames, args.size, args.fps,
                                     progress=not args.no_progress)
    except ConfigError as err:
        return _fail("make-dataset", err)
    print(f"wrote {written['train']}, {written['val']} and {written['classes']}")
    print(f"try: vjepa2 eval probe --encoder random:tiny --train {written['train']} --val {written['val']} "
          f"--classes {written['classes']}")
    return 0


def run_toy_report(args: argparse.Namespace) -> int:
    from vjepa2.evals.report import report_config, run_toy_report as run

    _threads(args)
    try:
        data = load_yaml(args.config) if args.config else {}
        cfg = report_config(apply_overrides(data, args.overrides))
        path = run(cfg, progress=not args.no_progress)
    except ConfigError as err:
        return _fail("toy-report", err)
    print(f"wrote {path}")
    return 0
