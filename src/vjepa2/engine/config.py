"""What every training run is configured with, whatever it trains: the optimiser, checkpoints,
logs, the process layout; and how two run configs differ (what a resume may and may not change).
The configs of the methods (:mod:`vjepa2.train.config`, :mod:`vjepa2.world_model.config`) hold these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vjepa2.config import ConfigError


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
