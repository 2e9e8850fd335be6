"""``vjepa2 pretrain``: self-supervised pretraining from a recipe, with dotted overrides.

Examples::

    vjepa2 pretrain                                   # tiny model, synthetic videos, CPU, minutes
    vjepa2 pretrain --out runs/tiny --resume          # continue from the newest valid checkpoint
    vjepa2 pretrain optim.lr=5e-4 mask.mode=noise phases.cooldown.resolution=128
    vjepa2 pretrain --config vitl --print-config > my_vitl.yaml   # copy a paper recipe, edit data.sources
    torchrun --nproc_per_node=8 -m vjepa2 pretrain --config my_vitl.yaml --out runs/vitl --resume
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from vjepa2.commands import add_config_arguments, add_recipe_option, load_command_config, print_config
from vjepa2.config import ConfigError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "pretrain", help="self-supervised V-JEPA 2 pretraining (default: tiny model on synthetic videos)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_option(parser, "pretrain", default="tiny")
    parser.add_argument("--out", help="output directory (checkpoints, logs, config.yaml); overrides output_dir")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest valid checkpoint in the output directory "
                             "(starts from step 0 if there is none)")
    add_config_arguments(parser, "optim.lr=1e-4 batch_size=16 phases.main.iterations=200 (phases are addressed "
                                 "by name)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from vjepa2.train.config import load_pretrain_config

    cfg = load_command_config("pretrain", load_pretrain_config, args.config, args.overrides)
    if cfg is None:
        return 2
    if args.out:
        cfg = dataclasses.replace(cfg, output_dir=args.out)
    if args.print_config:
        return print_config(cfg)
    from vjepa2.engine.guard import TrainingDiverged
    from vjepa2.train.pretrain import pretrain

    try:
        pretrain(cfg, resume=args.resume)
    except (ConfigError, FileExistsError, TrainingDiverged) as err:
        print(f"vjepa2 pretrain: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    return 0
