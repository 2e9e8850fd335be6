"""Checkpoints that survive crashes: atomic writes, keep-last-K, and a newest-valid finder.

A checkpoint is written with :func:`vjepa2.files.atomic_write` (temporary file, fsync, rename), so a
process killed at any moment leaves either the previous checkpoints untouched or the new one
complete; at worst a stale ``.*.tmp`` file, which :meth:`CheckpointDir.remove_partial` deletes.
:meth:`CheckpointDir.latest_valid` also skips a final-named file that cannot be read (e.g. copied
half-way by hand or cut off by a full disk) or whose weights are not finite (a diverged run).

Files are named ``step-00001234.pt`` after the number of completed optimiser steps.
"""

from __future__ import annotations

import errno
import os
import random
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from vjepa2.files import DiskFullError, atomic_torch_save
from vjepa2.weights import first_non_finite

_NAME = re.compile(r"^step-(\d{8,})\.pt$")


# ------------------------------------------------------------------------------------------------
# RNG state: stored as tensors / plain numbers so that checkpoints load with weights_only=True
# ------------------------------------------------------------------------------------------------


def capture_rng_state() -> dict:
    """The state of Python's, NumPy's, torch's CPU and every CUDA device's global generator."""
    np_key, np_state, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"key": np_key, "state": torch.from_numpy(np_state.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            warnings.warn(f"checkpoint holds CUDA RNG states of {len(state['cuda'])} devices, this machine has "
                          f"{torch.cuda.device_count()}: CUDA generators are not restored", stacklevel=2)


# ------------------------------------------------------------------------------------------------
# A directory of step checkpoints
# ------------------------------------------------------------------------------------------------


class CheckpointDir:
    """``directory/step-XXXXXXXX.pt`` files: atomic save, keep the newest ``keep_last`` (and every
    step in ``keep_steps``, e.g. the points of a learning curve), find the newest valid."""

    def __init__(self, directory: str | os.PathLike, keep_last: int = 3, keep_steps: Iterable[int] = ()) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.keep_steps = frozenset(keep_steps)

    def path(self, step: int) -> Path:
        return self.directory / f"step-{step:08d}.pt"

    def steps(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every final-named checkpoint file, oldest first (validity not checked)."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return sorted(found)

    def partial_files(self) -> list[Path]:
        """Temporary files left behind by a writer that was killed before its rename."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.startswith(".step-") and p.name.endswith(".tmp"))

    def remove_partial(self) -> list[Path]:
        """Delete :meth:`partial_files` (call only when no writer is running); returns what was deleted."""
        removed = self.partial_files()
        for p in removed:
            p.unlink(missing_ok=True)
        return removed

    def save(self, state: dict, step: int) -> Path:
        """Write ``state`` as the checkpoint of ``step`` atomically, then delete all but the newest
        ``keep_last`` (those of ``keep_steps`` stay and do not count)."""
        try:
            path = atomic_torch_save(state, self.path(step))
        except DiskFullError:
            previous = [p for s, p in self.steps() if s < step]
            then = f"it continues from {previous[-1]}, which is intact" if previous else "no earlier checkpoint exists"
            raise DiskFullError(errno.ENOSPC, f"disk full while writing {self.path(step)}; free space and run "
                                              f"again with --resume ({then})") from None
        # Files named after later steps are left alone: they are not part of this run's history
        # (e.g. an unreadable one that a resume skipped), so they neither count nor get deleted.
        history = [p for s, p in self.steps() if s <= step and s not in self.keep_steps]
        for old in history[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def set_aside(self, from_step: int) -> list[Path]:
        """Rename the checkpoints of ``from_step`` and later to ``diverged-step-*.pt`` (kept for a human
        to look at, never resumed from); returns the new paths."""
        moved = []
        for step, path in self.steps():
            if step >= from_step:
                target, n = path.with_name(f"diverged-{path.name}"), 2
                while target.exists():  # an earlier divergence's file stays
                    target, n = path.with_name(f"diverged-{path.stem}-{n}.pt"), n + 1
                path.replace(target)
                moved.append(target)
        return moved

    def latest_valid(self, required_keys: Iterable[str] = (),
                     warn: Callable[[str], None] | None = None) -> tuple[Path, dict] | None:
        """Newest checkpoint that loads, holds ``required_keys`` and has finite tensors: ``(path, state)``,
        or None.

        Unreadable, incomplete or non-finite files are skipped with a message through ``warn``
        (default: :func:`warnings.warn`), never deleted: a human may want to look at them.
        """
        warn = warn or (lambda msg: warnings.warn(msg, stacklevel=3))
        for step, path in reversed(self.steps()):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # any failure to read means "not a usable checkpoint"
                warn(f"skipping unreadable checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                continue
            missing = [k for k in required_keys if not (isinstance(state, dict) and k in state)]
            if missing:
                warn(f"skipping incomplete checkpoint {path}: missing {', '.join(missing)}")
                continue
            bad = first_non_finite(state)
            if bad:
                warn(f"skipping checkpoint {path}: {bad} holds non-finite values")
                continue
            return path, state
        return None
