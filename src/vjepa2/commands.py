"""What every config-driven command shares: ``--print-config``, the ``KEY=VALUE`` overrides, and
loading its config with a one-line error. The ``cli`` modules (top floor) import this; it imports
only :mod:`vjepa2.config`."""

from __future__ import annotations

import sys


def add_recipe_option(parser, command: str, default: str | None = None, fallback: str = "the defaults") -> None:
    """``--config NAME|FILE``: a recipe shipped for ``command`` (listed in the help) or a YAML file."""
    from vjepa2.config import recipe_names

    names = ", ".join(recipe_names(command))
    parser.add_argument("--config", default=default,
                        help=f"recipe shipped with the package ({names}) or a YAML file (default: {default or fallback})")


def add_config_arguments(parser, overrides_example: str) -> None:
    """Add ``--print-config`` and the positional ``KEY=VALUE`` overrides of a config-driven command
    to its ``argparse`` ``parser`` (read back by :func:`load_command_config` / :func:`print_config`)."""
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"dotted overrides, e.g. {overrides_example}")


def load_command_config(command: str, load, *args, **kwargs):
    """``load(*args, **kwargs)`` (a config loader); on a config error print one line naming
    ``command`` and return None (the command then exits with status 2)."""
    from vjepa2.config import ConfigError

    try:
        return load(*args, **kwargs)
    except ConfigError as err:
        print(f"vjepa2 {command}: config error: {err}", file=sys.stderr)
        return None


def print_config(cfg) -> int:
    """``--print-config``: the resolved config as YAML on stdout; exit status 0."""
    from vjepa2.config import config_yaml

    print(config_yaml(cfg), end="")
    return 0
