"""World-model commands: ``vjepa2 collect``, ``vjepa2 train-ac``, ``vjepa2 eval-ac``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vjepa2.world_model import collect


def add_parser(subparsers) -> None:
    collect.add_parser(subparsers)

    p = subparsers.add_parser(
        "train-ac", help="train the action-conditioned predictor (V-JEPA 2-AC) on trajectories",
        description="Encode trajectories with a frozen encoder (cached) and train the AC predictor with the "
                    "teacher-forcing + rollout L1 loss. Example: vjepa2 train-ac --data data/toy_push --out runs/ac "
                    "schedule.iterations=300 model.depth=2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="directory of trajectories (sets data.trajectories)")
    p.add_argument("--config", help="YAML file with the run's settings (defaults: tiny CPU run)")
    p.add_argument("--out", help="output directory (sets output_dir; default runs/ac)")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. schedule.iterations=300 encoder.weights=random:small loss.rollout_steps=3")
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "eval-ac", help="L1 error of imagined latents k steps ahead vs copying the current latent",
        description="Roll a trained AC predictor out from every window of held-out trajectories and compare "
                    "its latents with the true ones, next to the copy-the-current-latent baseline.")
    p.add_argument("--run", required=True, help="train-ac output directory or checkpoint file")
    p.add_argument("--data", required=True, help="held-out trajectories (encoded into the run's feature cache)")
    p.add_argument("--horizons", type=int, nargs="+", default=[1, 2, 4, 8], help="steps ahead (default 1 2 4 8)")
    p.add_argument("--stride", type=int, default=1, help="distance between window starts (default 1)")
    p.add_argument("--cache", help="feature cache directory (default <run>/features)")
    p.add_argument("--recorded-states", action="store_true",
                   help="feed the recorded states of the imagined steps (default: integrate them from the actions "
                        "with the pose7/delta convention, as a planner must)")
    p.add_argument("--strip", metavar="PNG", help="also draw real frames above imagined ones decoded by nearest "
                                                  "neighbour (first held-out trajectory, longest horizon)")
    p.add_argument("--bank", help="trajectories whose frames decode the imagined latents for --strip "
                                  "(default: the run's training data)")
    p.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from vjepa2.config import ConfigError
    from vjepa2.world_model.train_ac import load_ac_config

    try:
        cfg = load_ac_config(args.config, args.overrides, **{"data.trajectories": args.data, "output_dir": args.out})
    except ConfigError as err:
        print(f"vjepa2 train-ac: config error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        from vjepa2.config import to_dict

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    from vjepa2.train.guard import TrainingDiverged
    from vjepa2.world_model.train_ac import train_ac

    try:
        train_ac(cfg, resume=args.resume)
    except (ConfigError, FileExistsError, FileNotFoundError, TrainingDiverged, ValueError) as err:
        print(f"vjepa2 train-ac: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from vjepa2.data.trajectories import TrajectoryError
    from vjepa2.weights import WeightsError
    from vjepa2.world_model.features import build_feature_cache
    from vjepa2.world_model.train_ac import format_errors, load_world_model, rollout_errors

    try:
        world = load_world_model(args.run)
        run_dir = Path(args.run) if Path(args.run).is_dir() else world.checkpoint.parent.parent
        cache = Path(args.cache) if args.cache else run_dir / "features"
        features = build_feature_cache(args.data, world.encoder, cache, img_size=world.img_size, fps=world.fps,
                                       min_steps=max(args.horizons) + 1)
        for skipped in features.skipped:
            print(f"skipped {skipped.path}: {skipped.reason}")
        state_update = None
        if not args.recorded_states:
            from vjepa2.data.trajectories import apply_action

            state_update = apply_action
        errors = rollout_errors(world.predictor, features.files, args.horizons, stride=args.stride,
                                state_update=state_update)
        print(f"{len(features.files)} trajectories, checkpoint {world.checkpoint}")
        print(format_errors(errors))
        if args.strip:
            from vjepa2.world_model.strip import LatentBank, nearest_neighbour_strip

            bank = build_feature_cache(args.bank or _training_data(run_dir), world.encoder, cache,
                                       img_size=world.img_size, fps=world.fps)
            path = nearest_neighbour_strip(world.predictor, LatentBank(bank.files), features.files[0], 0,
                                           max(args.horizons), args.strip)
            print(f"image strip: {path}")
    except (WeightsError, TrajectoryError, ValueError, FileNotFoundError) as err:
        print(f"vjepa2 eval-ac: {err}", file=sys.stderr)
        return 1
    return 0


def _training_data(run_dir: Path) -> str:
    import yaml

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ValueError(f"{run_dir}: no config.yaml to find the training data; pass --bank DIR")
    return yaml.safe_load(config.read_text())["data"]["trajectories"]
