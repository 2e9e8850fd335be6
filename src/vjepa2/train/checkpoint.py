"""Checkpoints that survive crashes: atomic writes, keep-last-K, and a newest-valid finder.

A checkpoint is written to a temporary file in the destination directory, flushed and fsync'ed,
then renamed over its final name (``os.replace`` is atomic on POSIX), and the directory entry is
fsync'ed too. A process killed at any moment therefore leaves either the previous checkpoints
untouched or the new one complete; at worst a stale ``.*.tmp`` file, which
:meth:`CheckpointDir.remove_partial` deletes. :meth:`CheckpointDir.latest_valid` also skips a
final-named file that cannot be read (e.g. copied half-way by hand or cut off by a full disk).

Files are named ``step-00001234.pt`` after the number of completed optimiser steps.

Test hook: with ``VJEPA2_TEST_PAUSE_BEFORE_RENAME="<file name>=<seconds>"`` in the environment, the
writer sleeps between the fsync of the temporary file and the rename when it writes that file, so a
test can kill the process exactly there.
"""

from __future__ import annotations

import os
import random
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import numpy as np
import torch

PAUSE_ENV = "VJEPA2_TEST_PAUSE_BEFORE_RENAME"
_NAME = re.compile(r"^step-(\d{8,})\.pt$")


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory (Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _test_pause(path: Path) -> None:
    spec = os.environ.get(PAUSE_ENV)
    if not spec or "=" not in spec:
        return
    name, seconds = spec.rsplit("=", 1)
    if name == path.name:
        print(f"[{PAUSE_ENV}] pausing {seconds}s before renaming {path.name}", file=sys.stderr, flush=True)
        time.sleep(float(seconds))


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _test_pause(path)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (UTF-8)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


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
    """``directory/step-XXXXXXXX.pt`` files: atomic save, keep the newest ``keep_last``, find the newest valid."""

    def __init__(self, directory: str | os.PathLike, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

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
        """Write ``state`` as the checkpoint of ``step`` atomically, then delete all but the newest ``keep_last``."""
        path = atomic_save(state, self.path(step))
        # Files named after later steps are left alone: they are not part of this run's history
        # (e.g. an unreadable one that a resume skipped), so they neither count nor get deleted.
        history = [p for s, p in self.steps() if s <= step]
        for old in history[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def latest_valid(self, required_keys: Iterable[str] = (),
                     warn: Callable[[str], None] | None = None) -> tuple[Path, dict] | None:
        """Newest checkpoint that loads and holds ``required_keys``: ``(path, state)``, or None.

        Unreadable or incomplete files are skipped with a message through ``warn`` (default:
        :func:`warnings.warn`), never deleted: a human may want to look at them.
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
            return path, state
        return None
