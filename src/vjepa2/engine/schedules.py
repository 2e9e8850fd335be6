"""Where a global step falls: its phase, its learning rate, its EMA momentum.

Steps count optimiser updates from 0. Phase ``i`` covers the half-open range
``[sum(iterations[:i]), sum(iterations[:i + 1]))``. Inside a phase of ``n`` steps, step ``k`` is at
progress ``k / n``: a warm-up starts exactly at ``lr_start`` and reaches ``optim.lr`` when the next
phase begins; a decay starts exactly at ``optim.lr`` and approaches ``lr_end``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Protocol
from itertools import accumulate



class Phase(Protocol):
    """A stretch of a schedule: pretraining's :class:`~vjepa2.train.config.PhaseConfig` (which also
    has a clip shape) or AC training's :class:`LrSegment`."""

    name: str
    iterations: int
    lr_schedule: str
    lr_start: float | None
    lr_end: float | None


@dataclass(frozen=True)
class LrSegment:
    """A stretch of ``iterations`` steps with one learning-rate shape, for schedules without clip
    shapes (AC training); ``lr_schedule``, ``lr_start`` and ``lr_end`` as in
    :class:`~vjepa2.train.config.PhaseConfig`."""

    name: str
    iterations: int
    lr_schedule: str = "constant"
    lr_start: float | None = None
    lr_end: float | None = None


@dataclass(frozen=True)
class PhasePosition:
    """Step ``step`` is step ``step_in_phase`` of phase number ``index`` (``phase``)."""

    index: int
    phase: Phase
    start: int
    step_in_phase: int


def phase_starts(phases: list[Phase]) -> list[int]:
    """Global step at which each phase begins: ``[0, n0, n0 + n1, ...]`` (one entry per phase)."""
    return [0, *accumulate(p.iterations for p in phases)][:-1]


def phase_at(phases: list[Phase], step: int) -> PhasePosition:
    """The phase that global ``step`` belongs to; raises past the end of the schedule."""
    total = sum(p.iterations for p in phases)
    if not 0 <= step < total:
        raise ValueError(f"step {step} is outside the schedule of {total} iterations")
    starts = phase_starts(phases)
    index = bisect.bisect_right(starts, step) - 1
    return PhasePosition(index, phases[index], starts[index], step - starts[index])


def phase_lr(phase: Phase, peak_lr: float, step_in_phase: int) -> float:
    """Learning rate at step ``step_in_phase`` of ``phase`` (see :class:`~vjepa2.train.config.PhaseConfig`)."""
    progress = step_in_phase / phase.iterations
    if phase.lr_schedule == "constant":
        return peak_lr
    if phase.lr_schedule == "warmup":
        start = phase.lr_start or 0.0
        return start + (peak_lr - start) * progress
    end = phase.lr_end or 0.0
    if phase.lr_schedule == "linear":
        return peak_lr + (end - peak_lr) * progress
    if phase.lr_schedule == "cosine":
        return end + (peak_lr - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_schedule {phase.lr_schedule!r}")


def lr_at(cfg, step: int) -> float:
    """Learning rate of global ``step`` of a config with ``phases`` and ``optim.lr`` (pretraining's)."""
    where = phase_at(cfg.phases, step)
    return phase_lr(where.phase, cfg.optim.lr, where.step_in_phase)


def ema_momentum_at(cfg, step: int) -> float:
    """EMA momentum of global ``step``: linear from ``ema[0]`` to ``ema[1]`` over the whole run."""
    start, end = cfg.ema
    return start + (end - start) * step / max(cfg.total_iterations, 1)


def context_weight_at(cfg, step: int) -> float:
    """V-JEPA 2.1's ``lambda_t`` on the context loss at global ``step`` (0 for other objectives): 0
    until the fraction ``loss.context_warmup[0]`` of the run, then linear up to ``loss.context_weight``
    at ``loss.context_warmup[1]``, held after."""
    loss = cfg.loss
    if loss.objective != "vjepa2_1":
        return 0.0
    start, end = (fraction * cfg.total_iterations for fraction in loss.context_warmup)
    if step >= end:
        return loss.context_weight
    return loss.context_weight * max(step - start, 0.0) / max(end - start, 1e-9)
