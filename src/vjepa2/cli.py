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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
