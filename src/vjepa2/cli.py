"""Command line: ``vjepa2 <command> ...`` (also ``python -m vjepa2``).

Each command lives in its own module that exposes ``add_parser(subparsers)``; the parser it adds
sets ``func`` (called with the parsed namespace, returns an exit code). Add a command by listing
its module in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that each define add_parser(subparsers). Imported lazily so `vjepa2 --help` stays fast.
COMMAND_MODULES: list[str] = [
    "vjepa2.embed",
    "vjepa2.world_model.cli",
    "vjepa2.train.cli",
    "vjepa2.world_model.plan_eval", "vjepa2.demo",
    "vjepa2.evals.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vjepa2", description="V-JEPA 2 video world models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


# Errors whose message says what is wrong and how to fix it: a command that raises one ends with that
# message on one line and exit code 2 (bad input) or 1 (a run that failed), never a traceback.
# Named, not imported, so that `vjepa2 --help` stays fast.
INPUT_ERRORS = {"vjepa2.config.ConfigError", "vjepa2.weights.WeightsError", "vjepa2.files.OutputPathError",
                "vjepa2.files.RunLockedError", "vjepa2.data.dataset.DataError", "vjepa2.data.lists.ListError",
                "vjepa2.data.trajectories.TrajectoryError", "vjepa2.evals.data.EvalDataError",
                "vjepa2.embed.EmbedError"}
RUN_ERRORS = {"vjepa2.files.DiskFullError", "vjepa2.train.guard.TrainingDiverged"}


def _error_kind(err: BaseException) -> int | None:
    """2 for an input error, 1 for a failed run, None for anything else (a bug: keep its traceback)."""
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(err).__mro__}
    return 2 if names & INPUT_ERRORS else 1 if names & RUN_ERRORS or _disk_full(err) else None


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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        code = _error_kind(err)
        if code is None:
            raise
        if _disk_full(err) and "disk full" not in str(err):
            where = getattr(err, "filename", None)
            err = f"disk full{f' while writing {where}' if where else ''}; free space and run again ({err})"
        print(f"vjepa2 {args.command}: {str(err).strip()}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
