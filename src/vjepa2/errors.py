"""The two kinds of error a user meets, which decide a command's exit code (bottom floor: imports nothing).

* :class:`InputError` (exit 2): something the user gave is wrong (a config key, a file, a weight
  file, an output path); the message names it and says how to fix it.
* :class:`RunError` (exit 1): a run that started could not finish (a full disk, a diverging run);
  the message says what was kept and how to continue.

`vjepa2 <command>` prints either as one line, never a traceback; any other exception is a bug and
keeps its traceback.
"""


class InputError(ValueError):
    """Bad input a user can fix; ``vjepa2`` exits with status 2."""


class RunError(RuntimeError):
    """A run that could not finish; ``vjepa2`` exits with status 1."""


EXIT_INPUT, EXIT_RUN = 2, 1


def exit_code(err: BaseException) -> int | None:
    """2 for an :class:`InputError`, 1 for a :class:`RunError`, None for anything else."""
    return EXIT_INPUT if isinstance(err, InputError) else EXIT_RUN if isinstance(err, RunError) else None
