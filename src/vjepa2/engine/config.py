"""What every training run is configured with, whatever it trains: the optimiser, checkpoints,
logs, the process layout; and how two run configs differ (what a resume may and may not change).
The configs of the methods (:mod:`vjepa2.train.config`, :mod:`vjepa2.world_model.config`) hold these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vjepa2.config import ConfigError
from vjepa2.engine.schedules import LrSegment


@dataclass(frozen=True)
class OptimConfig:
    """AdamW. ``lr`` is the peak rate that the phases' schedules rise to / decay from.

    Weight decay applies to matrices only: biases, norms and every 1-D parameter are exempt.
    ``clip_grad`` is a max global gradient norm (None = no clipping).
    """

    lr: float = 5.25e-4
    weight_decay: float = 0.04
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float | None = None
    grad_accumulation: int = 1

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must lie in [0, 1), got {list(self.betas)}")
        if self.eps <= 0:
            raise ConfigError(f"optim.eps must be positive, got {self.eps}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ConfigError(f"optim.clip_grad must be positive or null, got {self.clip_grad}")
        if self.grad_accumulation < 1:
            raise ConfigError(f"optim.grad_accumulation must be >= 1, got {self.grad_accumulation}")


@dataclass(frozen=True)
class StepScheduleConfig:
    """A schedule without clip shapes (AC and video-QA training): ``iterations`` optimiser steps,
    linear warm-up from ``lr_start`` over ``warmup`` steps, constant ``optim.lr``, then a linear
    cool-down to ``lr_end`` over the last ``cooldown`` steps."""

    iterations: int = 2500
    warmup: int = 50
    cooldown: int = 500
    lr_start: float = 0.0
    lr_end: float = 0.0

    def validate(self) -> None:
        if self.iterations < 1 or self.warmup < 0 or self.cooldown < 0:
            raise ConfigError("schedule: iterations must be >= 1, warmup and cooldown >= 0")
        if self.warmup + self.cooldown > self.iterations:
            raise ConfigError(f"schedule: warmup ({self.warmup}) + cooldown ({self.cooldown}) exceed "
                              f"iterations ({self.iterations})")

    def segments(self) -> list[LrSegment]:
        """The schedule as learning-rate segments (warm-up, main, cool-down; empty ones left out)."""
        parts = [("warmup", self.warmup, "warmup", {"lr_start": self.lr_start}),
                 ("main", self.iterations - self.warmup - self.cooldown, "constant", {}),
                 ("cooldown", self.cooldown, "linear", {"lr_end": self.lr_end})]
        return [LrSegment(name=name, iterations=n, lr_schedule=kind, **extra)
                for name, n, kind, extra in parts if n > 0]


@dataclass(frozen=True)
class CheckpointConfig:
    """Write a checkpoint every ``every`` optimiser steps (and at the end); keep the newest ``keep_last``.
    ``keep_steps``: steps whose checkpoints are also written and never deleted (a learning curve)."""

    every: int = 1000
    keep_last: int = 3
    keep_steps: tuple[int, ...] = ()

    def validate(self) -> None:
        if self.every < 1:
            raise ConfigError(f"checkpoint.every must be >= 1, got {self.every}")
        if self.keep_last < 1:
            raise ConfigError(f"checkpoint.keep_last must be >= 1, got {self.keep_last}")
        if any(step < 1 for step in self.keep_steps):
            raise ConfigError(f"checkpoint.keep_steps must be steps >= 1, got {list(self.keep_steps)}")


@dataclass(frozen=True)
class LogConfig:
    """CSV row / TensorBoard scalars every ``every`` steps; ``tensorboard`` needs the package."""

    every: int = 10
    tensorboard: bool = True
    progress_bar: bool = True

    def validate(self) -> None:
        if self.every < 1:
            raise ConfigError(f"log.every must be >= 1, got {self.every}")


@dataclass(frozen=True)
class DistributedConfig:
    """Multi-process training under ``torchrun``. ``ddp`` replicates the model on every process;
    ``fsdp`` shards parameters, gradients and optimiser state (FSDP2, per transformer block) for
    models that do not fit one device. ``backend: auto`` = NCCL on CUDA, gloo on CPU."""

    strategy: Literal["ddp", "fsdp"] = "ddp"
    backend: Literal["auto", "nccl", "gloo"] = "auto"


def changed_config_keys(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """``(dotted key, old value, new value)`` of every setting that differs between two plain config
    dicts (nested dicts are walked; lists are compared whole), in sorted key order."""
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            changes += changed_config_keys(a, b, name + ".")
        elif a != b:
            changes.append((name, a, b))
    return changes


def check_same_model(saved: dict, current: dict, checkpoint: object) -> None:
    """Refuse to resume ``checkpoint`` (whose run config is ``saved``) with other ``model`` settings:
    its weights would not fit. Both are plain config dicts."""
    changed = changed_config_keys(saved.get("model", {}), current.get("model", {}), "model.")
    if changed:
        listing = "; ".join(f"{name}: {a!r} -> {b!r}" for name, a, b in changed)
        raise ConfigError(f"cannot resume {checkpoint}: its model settings differ from this config's ({listing}); "
                          f"resume with the run's own settings, or start a new run with another --out")


def config_differences(old: dict, new: dict) -> list[str]:
    """Human-readable ``key: old -> new`` lines between two plain config dicts."""
    return [f"{name}: {a!r} -> {b!r}" for name, a, b in changed_config_keys(old, new)]


@dataclass(frozen=True)
class RunSettings:
    """The run settings of a trainer that is not pretraining (AC, video QA): its config class
    inherits these keys (and may change a default, e.g. ``output_dir``). ``threads``: PyTorch CPU
    threads per process (null = PyTorch's default); ``max_nonfinite_steps``: stop after that many
    non-finite steps in a row (:mod:`vjepa2.engine.guard`)."""

    dtype: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = 1
    seed: int = 0
    output_dir: str = "runs/train"
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(every=500, keep_last=2))
    log: LogConfig = field(default_factory=LogConfig)
    max_nonfinite_steps: int = 20
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def check_run_settings(self) -> None:
        if self.max_nonfinite_steps < 1:
            raise ConfigError(f"max_nonfinite_steps must be >= 1, got {self.max_nonfinite_steps}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 or null (PyTorch's default), got {self.threads}")
