"""Video-QA commands: ``vjepa2 train-vqa`` and ``vjepa2 ask``; the work is done by
:mod:`vjepa2.vqa.trainer`."""

from __future__ import annotations

import argparse
import sys

from vjepa2.commands import add_config_arguments, add_recipe_option, load_command_config, print_config


def add_parser(subparsers) -> None:
    """Add ``train-vqa`` and ``ask`` to ``subparsers``."""
    from vjepa2.vqa import trainer

    p = subparsers.add_parser("train-vqa", help="train a projector + language model to answer questions about videos",
                              description=trainer.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_option(p, "train-vqa")
    p.add_argument("--train", help="toy-vqa (default) or a JSON-lines file of video / question / answer")
    p.add_argument("--val", help="toy-vqa (default), a JSON-lines file, or none")
    p.add_argument("--encoder", help="encoder weights: checkpoint, transformers folder, random:<size>, or none (blind)")
    p.add_argument("--lm", help="a local transformers causal-LM folder (default: a small LM trained from scratch)")
    p.add_argument("--out", help="run folder (default runs/vqa)")
    p.add_argument("--resume", action="store_true", help="continue the newest valid checkpoint in --out")
    add_config_arguments(p, "data.clips.input=image, or init=STAGE1.pt encoder.trainable=true")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("ask", help="answer a question about a video with a train-vqa checkpoint",
                              description="Encode VIDEO with the checkpoint's encoder and answer QUESTION "
                                          "greedily. Example: vjepa2 ask clip.mp4 'what is the red star doing?' "
                                          "--checkpoint runs/vqa/checkpoints/step-00003000.pt")
    p.add_argument("video", help="a video (or image) file")
    p.add_argument("question", help="the question, in quotes")
    p.add_argument("--checkpoint", required=True, help="a train-vqa checkpoint (.pt)")
    p.add_argument("--max-tokens", type=int, default=8, help="longest answer in tokens (default 8)")
    p.set_defaults(func=_ask)


def _train(args: argparse.Namespace) -> int:
    from vjepa2.config import ConfigError
    from vjepa2.vqa.trainer import load_vqa_config

    flags = {"data.train": args.train, "data.val": args.val, "encoder.weights": args.encoder, "lm.path": args.lm,
             "output_dir": args.out}
    if (args.val or "").lower() == "none":
        flags["data.val"] = "null"
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None] + list(args.overrides)
    cfg = load_command_config("train-vqa", load_vqa_config, args.config, overrides)
    if cfg is None:
        return 2
    if args.print_config:
        return print_config(cfg)
    from vjepa2.engine.guard import TrainingDiverged
    from vjepa2.vqa.trainer import train_vqa

    try:
        train_vqa(cfg, resume=args.resume)
    except (ConfigError, FileExistsError, FileNotFoundError, TrainingDiverged) as err:
        print(f"vjepa2 train-vqa: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    return 0


def _ask(args: argparse.Namespace) -> int:
    from vjepa2.config import ConfigError
    from vjepa2.evals.data import EvalDataError

    try:
        from vjepa2.vqa.trainer import answer_video

        print(answer_video(args.checkpoint, args.video, args.question, args.max_tokens))
    except (ConfigError, EvalDataError) as err:
        print(f"vjepa2 ask: {err}", file=sys.stderr)
        return 2
    return 0
