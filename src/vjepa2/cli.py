"""Command line: ``vjepa2 <command> ...`` (also ``python -m vjepa2``).

Each command's parser is added by a function ``add(subparsers)`` (``add_parser`` of a package's
``cli`` module, or one of the ``add_*_parser`` functions here for ``embed`` and ``demo``); the parser
it adds sets ``func`` (called with the parsed namespace, returns an exit code). Add a command by
listing its function in ``COMMAND_PARSERS``. Only ``cli.py`` modules parse arguments: the modules
that do the work expose plain functions with typed arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from vjepa2.errors import exit_code

# The functions that add the commands, in `vjepa2 --help` order: "module" (its add_parser) or
# "module:function". Imported lazily so `vjepa2 --help` stays fast.
COMMAND_PARSERS: list[str] = [
    "vjepa2.cli:add_embed_parser",
    "vjepa2.world_model.cli",  # collect, train-ac, eval-ac
    "vjepa2.train.cli",  # pretrain
    "vjepa2.world_model.cli:add_plan_eval_parser",
    "vjepa2.cli:add_demo_parser",
    "vjepa2.evals.cli",
    "vjepa2.vqa.cli",  # train-vqa, ask
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vjepa2", description="V-JEPA 2 video world models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in COMMAND_PARSERS:
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function or "add_parser")(sub)
    return parser


def _disk_full(err: BaseException) -> bool:
    from vjepa2.files import is_disk_full

    return is_disk_full(err)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:  # a training run's says where --resume continues (vjepa2.engine.interrupt)
        print(f"vjepa2 {args.command}: {err}" if str(err) else "interrupted", file=sys.stderr)
        return getattr(err, "exit_code", 130)
    except Exception as err:  # an InputError (exit 2) or RunError (exit 1) is one line; anything else is a bug
        code = exit_code(err) or (1 if _disk_full(err) else None)
        if code is None:
            raise
        if _disk_full(err) and "disk full" not in str(err):
            where = getattr(err, "filename", None)
            err = f"disk full{f' while writing {where}' if where else ''}; free space and run again ({err})"
        print(f"vjepa2 {args.command}: {str(err).strip()}", file=sys.stderr)
        return code


# ------------------------------------------------------------------------------------------------
# vjepa2 embed
# ------------------------------------------------------------------------------------------------


def add_embed_parser(subparsers) -> None:
    """Add ``embed`` (:mod:`vjepa2.embed`) to ``subparsers``."""
    parser = subparsers.add_parser(
        "embed", help="encode videos into token features and pooled vectors (safetensors)",
        description="Encode videos (or directories of videos; images count as one-frame videos) with a "
                    "V-JEPA 2 or 2.1 encoder. Writes per-video token features (N, D) and their mean (D,) into "
                    "one safetensors file. Unreadable files are reported and skipped; the exit code is 1 "
                    "if any file failed.")
    parser.add_argument("inputs", nargs="*", metavar="VIDEO_OR_DIR", help="video/image files or directories")
    parser.add_argument("--weights", help="checkpoint (.pt/.pth), transformers directory, or random:<size> "
                                          "(e.g. random:tiny) for a seeded random encoder")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--size", type=int, default=256, help="crop size in pixels (default 256)")
    parser.add_argument("--fps", type=float, default=None,
                        help="sampling rate in frames per second (default: every frame)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                        help="fp32 (default) or bf16 autocast around the encoder")
    parser.add_argument("--out", default="embeddings.safetensors", help="output file (default embeddings.safetensors)")
    parser.add_argument("--batch-size", type=int, default=1, help="clips per encoder call (default 1)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda if available, else cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random:<size> encoder (default 0)")
    parser.add_argument("--demo", action="store_true",
                        help="embed a synthetic video written on the fly (default weights random:tiny)")
    parser.add_argument("--hierarchical", action="store_true",
                        help="V-JEPA 2.1 weights: write the four normalised levels concatenated (N, 4D) instead of "
                             "the last (N, D)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    """The ``vjepa2 embed`` command; returns the exit code."""
    import tempfile

    from vjepa2.data.clips.video import list_videos
    from vjepa2.embed import EXIT_USAGE, EmbedError, demo_video

    try:
        if args.demo:
            if args.inputs:
                raise EmbedError("--demo embeds its own synthetic video; drop the VIDEO_OR_DIR arguments")
            with tempfile.TemporaryDirectory(prefix="vjepa2-demo-") as tmp:
                return _embed(args, [demo_video(tmp)], args.weights or "random:tiny")
        if not args.inputs:
            raise EmbedError("give at least one video file or directory (or --demo)")
        if not args.weights:
            raise EmbedError("--weights is required (a checkpoint, a transformers directory, or random:tiny)")
        try:
            paths = list_videos(args.inputs)
        except FileNotFoundError as err:
            raise EmbedError(str(err)) from None
        if not paths:
            raise EmbedError(f"no video or image files found in {', '.join(args.inputs)}")
        return _embed(args, paths, args.weights)
    except EmbedError as err:
        print(f"vjepa2 embed: error: {err}", file=sys.stderr)
        return EXIT_USAGE


def _embed(args: argparse.Namespace, paths: list[Path], weights: str) -> int:
    """Embed ``paths`` with the encoder ``weights`` and print what was written (and what failed)."""
    import torch

    from vjepa2 import embed
    from vjepa2.weights import RANDOM_PREFIX, WeightsError, load_encoder

    inputs = {str(p): p for p in paths}
    if not weights.startswith(RANDOM_PREFIX):
        inputs["--weights"] = weights
    embed.check_options(args.frames, args.size, args.fps, args.out, inputs)  # before the encoder is loaded
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise embed.EmbedError("--device cuda: CUDA is not available on this machine; use --device cpu")
    try:
        encoder = load_encoder(weights, seed=args.seed)
    except WeightsError as err:
        raise embed.EmbedError(f"--weights: {err}") from None
    if args.hierarchical:
        encoder = embed.with_hierarchical_output(encoder, weights)
    settings = {"weights": weights, "seed": args.seed if weights.startswith(RANDOM_PREFIX) else None}
    report = embed.embed_videos(paths, encoder, args.out, frames=args.frames, size=args.size, fps=args.fps,
                                dtype=args.dtype, batch_size=args.batch_size, device=device, settings=settings,
                                progress=not args.no_progress)
    total = len(report.written) + len(report.failed)
    if report.out is not None:
        n = report.grid[0] * report.grid[1] * report.grid[2]
        print(f"embedded {len(report.written)} of {total} video(s) -> {report.out}  "
              f"(tokens ({n}, {report.dim}) on a {'x'.join(map(str, report.grid))} grid, pooled ({report.dim},))")
    else:
        print(f"embedded 0 of {total} video(s); nothing written")
    if report.failed:
        print(f"{len(report.failed)} file(s) could not be read:", file=sys.stderr)
        for path, reason in report.failed.items():
            print(f"  {path}: {reason}", file=sys.stderr)
        return embed.EXIT_SOME_FAILED
    return embed.EXIT_OK


# ------------------------------------------------------------------------------------------------
# vjepa2 demo
# ------------------------------------------------------------------------------------------------


def add_demo_parser(subparsers) -> None:
    """Add ``demo`` (:mod:`vjepa2.demo`) to ``subparsers``."""
    from vjepa2 import demo

    p = subparsers.add_parser("demo", help="the whole system on built-in data: pretrain, probe, collect, "
                                           "train the world model, plan; writes an HTML report",
                              description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a ~3-minute smoke version with tiny sizes")
    p.add_argument("--fresh", action="store_true", help="redo every stage (deletes the stage outputs in --work)")
    p.add_argument("--work", help="directory of the stage outputs (default runs/demo, or runs/demo-quick)")
    p.add_argument("--report", default="demo-report", help="report directory (default demo-report)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice; 1 is often faster on a "
                                               "machine other jobs keep busy)")
    p.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    """The ``vjepa2 demo`` command; returns the exit code."""
    from vjepa2.config import ConfigError
    from vjepa2.demo import run_demo
    from vjepa2.engine.guard import TrainingDiverged
    from vjepa2.weights import WeightsError

    if args.threads is not None:
        if args.threads < 1:
            print(f"vjepa2 demo: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    try:
        run_demo(args.work, args.report, quick=args.quick, fresh=args.fresh)
    except (ConfigError, FileExistsError, FileNotFoundError, TrainingDiverged, WeightsError, ValueError) as err:
        print(f"vjepa2 demo: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
