"""World-model commands: ``vjepa2 collect``, ``vjepa2 train-ac``, ``vjepa2 eval-ac``, ``vjepa2 plan-eval``.

The parsers and what each command does with its arguments; the work is done by plain functions of
:mod:`~vjepa2.world_model.collect`, :mod:`~vjepa2.world_model.train`,
:mod:`~vjepa2.world_model.evaluate` and :mod:`~vjepa2.world_model.plan_eval`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vjepa2.commands import add_config_arguments, add_recipe_option, load_command_config, print_config
from vjepa2.world_model import collect
from vjepa2.world_model.evaluate import STATE_MODES
from vjepa2.world_model.policies import Policy


def add_parser(subparsers) -> None:
    """Add ``collect``, ``train-ac`` and ``eval-ac`` to ``subparsers``."""
    p = subparsers.add_parser("collect", help="write random-action trajectories from the toy world or a Gymnasium env",
                              description=collect.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="toy-push", help="toy-push, or gym:<EnvId> for a Gymnasium env (default toy-push)")
    p.add_argument("--episodes", type=int, required=True, help="number of trajectories")
    p.add_argument("--steps", type=int, required=True, help="actions per trajectory (frames = steps + 1)")
    p.add_argument("--out", required=True, help="output directory (one sub-directory per episode)")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i (default 0)")
    p.add_argument("--repeat-prob", type=float, default=0.8,
                   help="toy-push: probability of repeating the previous random action (default 0.8)")
    p.add_argument("--block-bias", type=float, default=0.5,
                   help="toy-push: probability that a new random action heads roughly towards the block (default 0.5)")
    p.add_argument("--policy", default="random",
                   help="what acts: random (default; toy-push: its sticky walk) or MODULE:NAME, a function "
                        "(info, rng) -> action or a class with get_action(info) (see vjepa2.world_model.policies)")
    p.add_argument("--policy-noise", type=float, default=0.0,
                   help="probability that a step takes a uniform random action instead of the policy's (default 0)")
    p.add_argument("--frameskip", type=int, default=1,
                   help="env steps per recorded step, the action held (default 1; DINO-WM uses 5)")
    p.add_argument("--state-key", help="a Dict observation's entry the world model is conditioned on (e.g. proprio)")
    p.add_argument("--env-state-key", help="a Dict observation's entry success tests read (e.g. state), "
                                           "stored as env_states.npy")
    p.add_argument("--video", action="store_true", help="store frames.mp4 (lossy h264) instead of PNG frames")
    p.add_argument("--format", choices=["folders", "lerobot"], default="folders",
                   help="folders: one trajectory folder per episode (default); lerobot: a LeRobot v3.0 dataset")
    p.add_argument("--overwrite", action="store_true", help="re-record episodes that already exist")
    p.set_defaults(func=_collect)

    p = subparsers.add_parser(
        "train-ac", help="train the action-conditioned predictor (V-JEPA 2-AC) on trajectories",
        description="Encode trajectories with a frozen encoder (cached) and train the AC predictor with the "
                    "teacher-forcing + rollout L1 loss. Example: vjepa2 train-ac --data data/toy_push --out runs/ac "
                    "schedule.iterations=300 model.depth=2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="directory of trajectories or a LeRobot v3.0/v2.1 dataset (sets data.trajectories; "
                                  "data.camera/state/action pick its streams)")
    add_recipe_option(p, "train-ac", fallback="the tiny CPU run")
    p.add_argument("--out", help="output directory (sets output_dir; default runs/ac)")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    add_config_arguments(p, "schedule.iterations=300 encoder.weights=random:small loss.rollout_steps=3")
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "eval-ac", help="L1 error of imagined latents k steps ahead vs copying the current latent",
        description="Roll a trained AC predictor out from every window of held-out trajectories and compare "
                    "its latents with the true ones, next to the copy-the-current-latent baseline.")
    p.add_argument("--run", required=True, help="train-ac output directory or checkpoint file")
    p.add_argument("--data", required=True, help="held-out trajectories or a LeRobot dataset (encoded into the run's "
                                                 "feature cache; its camera/state/action streams as in training)")
    p.add_argument("--horizons", type=int, nargs="+", default=[1, 2, 4, 8], help="steps ahead (default 1 2 4 8)")
    p.add_argument("--stride", type=int, default=1, help="distance between window starts (default 1)")
    p.add_argument("--cache", help="feature cache directory (default <run>/features)")
    p.add_argument("--states", choices=STATE_MODES, default="auto",
                   help="states of the imagined steps: integrate them from the actions (where actions are state "
                        "deltas, as for toy-push and DROID; what a planner must do), target (actions are absolute "
                        "positions of the first state entries, as for PushT), the recorded ones, or hold the "
                        "first; auto (default) integrates where actions and states have the same width, else "
                        "uses the recorded states")
    p.add_argument("--recorded-states", dest="states", action="store_const", const="recorded",
                   help=argparse.SUPPRESS)  # the older spelling of --states recorded
    p.add_argument("--strip", metavar="PNG", help="also draw real frames above imagined ones decoded by nearest "
                                                  "neighbour (first held-out trajectory, longest horizon)")
    p.add_argument("--bank", help="trajectories whose frames decode the imagined latents for --strip "
                                  "(default: the run's training data)")
    p.set_defaults(func=_evaluate)


def add_plan_eval_parser(subparsers) -> None:
    """Add ``plan-eval`` to ``subparsers``."""
    from vjepa2.world_model import plan_eval

    p = subparsers.add_parser("plan-eval", help="success rate of latent planning (CEM + MPC) toward goal images, "
                                                "with random- and zero-action baselines",
                              description=plan_eval.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="train-ac output directory or checkpoint file (the world model)")
    p.add_argument("--env", help="toy-push (default) or gym:<gymnasium id>")
    p.add_argument("--task", choices=["reach", "push", "state"], help="toy-push: reach or push; gym: state")
    p.add_argument("--pairs", type=int, help="start/goal pairs (default 50)")
    p.add_argument("--out", default="runs/plan-eval", help="output directory (default runs/plan-eval)")
    add_recipe_option(p, "plan-eval", fallback="PlanEvalConfig's")
    p.add_argument("--device", default="cpu", help="torch device of the world model (default cpu)")
    add_config_arguments(p, "planner.samples=200 planner.iterations=5 mpc.steps_per_goal=20")
    p.set_defaults(func=_plan_eval)


def _collect(args: argparse.Namespace) -> int:
    try:
        source = collect.make_source(args.env, size=args.size, repeat_prob=args.repeat_prob,
                                     block_bias=args.block_bias, frameskip=args.frameskip,
                                     state_key=args.state_key, env_state_key=args.env_state_key)
        policy = Policy(args.policy, source, args.policy_noise)
    except (ValueError, ImportError) as err:
        print(f"vjepa2 collect: {err}", file=sys.stderr)
        return 2
    kept = 0 if args.overwrite or args.format == "lerobot" else \
        sum(collect.episode_dir(Path(args.out), i).is_dir() for i in range(max(args.episodes, 0)))
    try:
        if args.format == "lerobot":
            collect.collect_lerobot(source, args.out, args.episodes, args.steps, seed=args.seed,
                                    overwrite=args.overwrite, policy=policy)
        else:
            collect.collect(source, args.out, args.episodes, args.steps, seed=args.seed, video=args.video,
                            overwrite=args.overwrite, policy=policy)
    except (ValueError, FileExistsError, ImportError) as err:
        print(f"vjepa2 collect: {err}", file=sys.stderr)
        return 2
    finally:
        source.close()
    what = "a LeRobot v3.0 dataset" if args.format == "lerobot" else "trajectory folders"
    print(f"wrote {args.episodes - kept} episodes to {args.out} ({what})"
          + (f"; kept the {kept} already there: {args.episodes} in all" if kept else ""))
    return 0


def _train(args: argparse.Namespace) -> int:
    from vjepa2.config import ConfigError
    from vjepa2.world_model.config import load_ac_config

    cfg = load_command_config("train-ac", load_ac_config, args.config, args.overrides,
                              **{"data.trajectories": args.data, "output_dir": args.out})
    if cfg is None:
        return 2
    if args.print_config:
        return print_config(cfg)
    from vjepa2.engine.guard import TrainingDiverged
    from vjepa2.world_model.train import train_ac

    try:
        train_ac(cfg, resume=args.resume)
    except (ConfigError, FileExistsError, FileNotFoundError, ImportError, TrainingDiverged, ValueError) as err:
        print(f"vjepa2 train-ac: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from vjepa2.data.trajectories.trajectory import TrajectoryError
    from vjepa2.weights import WeightsError
    from vjepa2.world_model.evaluate import format_errors, imagined_states, rollout_errors
    from vjepa2.world_model.feature_cache import build_feature_cache
    from vjepa2.world_model.model import load_world_model

    if args.stride < 1 or min(args.horizons) < 1:
        print(f"vjepa2 eval-ac: --stride and --horizons must be >= 1, got --stride {args.stride} --horizons "
              f"{' '.join(map(str, args.horizons))}", file=sys.stderr)
        return 2
    try:
        world = load_world_model(args.run)
        run_dir = Path(args.run) if Path(args.run).is_dir() else world.checkpoint.parent.parent
        cache = Path(args.cache) if args.cache else run_dir / "features"
        pcfg = world.predictor.config
        features = build_feature_cache(args.data, world.encoder, cache, img_size=world.img_size, fps=world.fps,
                                       min_steps=max(args.horizons) + 1, streams=world.streams,
                                       widths=(pcfg.action_dim, pcfg.state_dim))
        for skipped in features.skipped:
            print(f"skipped {skipped.path}: {skipped.reason}")
        if not features.files:
            raise TrajectoryError(f"--data {args.data}: no usable trajectory ({len(features.skipped)} skipped"
                                  + (f"; e.g. {features.skipped[0].path}: {features.skipped[0].reason}"
                                     if features.skipped else "") + ")")
        state_update, states_said = imagined_states(args.states, pcfg.state_dim, pcfg.action_dim)
        errors = rollout_errors(world.predictor, features.files, args.horizons, stride=args.stride,
                                state_update=state_update)
        print(f"{len(features.files)} trajectories, checkpoint {world.checkpoint}; imagined steps take {states_said}")
        print(format_errors(errors))
        if args.strip:
            from vjepa2.world_model.strip import LatentBank, nearest_neighbour_strip

            bank = build_feature_cache(args.bank or _training_data(run_dir), world.encoder, cache,
                                       img_size=world.img_size, fps=world.fps, streams=world.streams)
            path = nearest_neighbour_strip(world.predictor, LatentBank(bank.files), features.files[0], 0,
                                           max(args.horizons), args.strip)
            print(f"image strip: {path}")
    except (WeightsError, TrajectoryError, ValueError, FileNotFoundError, ImportError) as err:
        print(f"vjepa2 eval-ac: {err}", file=sys.stderr)
        return 1
    return 0


def _training_data(run_dir: Path) -> str:
    import yaml

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ValueError(f"{run_dir}: no config.yaml to find the training data; pass --bank DIR")
    return yaml.safe_load(config.read_text())["data"]["trajectories"]


def _plan_eval(args: argparse.Namespace) -> int:
    from vjepa2.world_model.plan_eval import load_plan_eval_config, plan_eval

    cfg = load_command_config("plan-eval", load_plan_eval_config, args.config, args.overrides,
                              env=args.env, task=args.task, pairs=args.pairs)
    if cfg is None:
        return 2
    if args.print_config:
        return print_config(cfg)
    from vjepa2.files import check_output_dir
    from vjepa2.weights import WeightsError
    from vjepa2.world_model.model import load_world_model

    try:
        check_output_dir(args.out)
        world = load_world_model(args.run).to(args.device)
        report = plan_eval(world, cfg, args.out)
    except (WeightsError, ValueError, FileNotFoundError, ImportError) as err:
        print(f"vjepa2 plan-eval: {err}", file=sys.stderr)
        return 1
    print(report.markdown())
    print("wrote " + ", ".join(report.files))
    return 0
