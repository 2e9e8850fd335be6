"""Non-finite steps: skip them, stop after too many in a row, and keep the run resumable.

A step whose loss or gradient is not finite changes nothing (the trainers skip the optimiser and
EMA updates). After ``max_nonfinite_steps`` such steps in a row the run stops with
:class:`TrainingDiverged`. Before it does, the checkpoints that led into the divergence are set
aside: the weights of the last finite step before the streak are the ones that produced it (a
huge learning rate gives one finite step with exploding weights, then NaNs), so every checkpoint
from that step on is renamed ``diverged-step-*.pt``; ``--resume`` then continues from the newest
checkpoint before it. No checkpoint is written during a streak, so ``keep_last`` never rotates the
good ones away while a run is failing.
"""

from __future__ import annotations

from vjepa2.errors import RunError
from vjepa2.engine.checkpoint import CheckpointDir

ADVICE = "Lower optim.lr, set optim.clip_grad (e.g. 1.0), try dtype=fp32, or check the data"


class TrainingDiverged(RunError):
    """Too many optimiser steps in a row had a non-finite loss or gradient."""


def stop_if_diverged(in_a_row: int, limit: int, step: int, checkpoints: CheckpointDir, is_main: bool) -> None:
    """Raise :class:`TrainingDiverged` once ``in_a_row`` non-finite steps reach ``limit`` (``step``: the
    0-based index of the step just run), after setting the suspect checkpoints aside (rank 0)."""
    if in_a_row < limit:
        return
    last_good = step + 1 - in_a_row  # completed steps before the streak
    moved = checkpoints.set_aside(from_step=last_good) if is_main else []
    remaining = checkpoints.steps() if is_main else []
    text = (f"stopping: {in_a_row} steps in a row (up to step {step + 1}) had a non-finite loss or gradient "
            f"(max_nonfinite_steps={limit}). {ADVICE}.")
    if moved:
        text += (f" The checkpoints from step {last_good} on, whose weights led into it, were renamed "
                 f"{', '.join(p.name for p in moved)}.")
    if remaining:
        text += f" --resume continues from {remaining[-1][1].name}."
    elif is_main:
        text += " No checkpoint from before the divergence is left; --resume starts from step 0."
    raise TrainingDiverged(text)
