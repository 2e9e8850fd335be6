"""Where world-model trajectories come from, behind one interface.

A *source* is a string that names one trajectory:

- a trajectory directory of our format or a DROID raw episode (:mod:`vjepa2.data.trajectories.trajectory`);
- ``<dataset root>#episode=<index>``: one episode of a LeRobot dataset (:mod:`vjepa2.data.trajectories.lerobot`).

:func:`find_sources` lists the sources under a root (a LeRobot dataset when the root has
``meta/info.json``), :func:`read_source` reads one as a :class:`~vjepa2.data.trajectories.trajectory.Trajectory`
and :func:`source_signature` digests its files so that caches notice edits. :class:`Streams` says
which camera / state / action streams to take where a dataset holds several.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from vjepa2.data.trajectories.lerobot import (LeRobotDataset, LeRobotError, Streams, episode_source, is_lerobot_dataset,
                                              split_episode_source)
from vjepa2.data.trajectories.poses import Convention
from vjepa2.data.trajectories.trajectory import Trajectory, find_trajectories, read_trajectory


@dataclass(frozen=True)
class TrajectorySource:
    """One trajectory to read: ``source`` (see the module docstring) and a short ``name``."""

    source: str
    name: str


@functools.lru_cache(maxsize=8)
def _open_dataset(root: str, stamp: tuple[int, ...]) -> LeRobotDataset:
    return LeRobotDataset(root)


def open_dataset(root: str | os.PathLike) -> LeRobotDataset:
    """The LeRobot dataset at ``root``, opened once per process while its metadata is unchanged."""
    meta = Path(root) / "meta"
    stamp = tuple(p.stat().st_mtime_ns for p in sorted(meta.rglob("*")) if p.is_file())
    if not (meta / "info.json").is_file():
        raise LeRobotError(f"{meta / 'info.json'}: missing; a LeRobot dataset describes itself there")
    return _open_dataset(str(Path(root).resolve()), stamp)


def find_sources(root: str | os.PathLike, streams: Streams = Streams()) -> list[TrajectorySource]:
    """Every trajectory under ``root``: a LeRobot dataset's episodes (its ``streams`` checked against
    its features first), or trajectory directories."""
    if is_lerobot_dataset(root):
        dataset = open_dataset(root)
        dataset.resolve(streams)
        return [TrajectorySource(episode_source(dataset.root, e.index), f"episode_{e.index:06d}")
                for e in dataset.episodes]
    return [TrajectorySource(str(path), path.name) for path in find_trajectories(root)]


def _episode(source: str):
    root, index = split_episode_source(source)
    dataset = open_dataset(root)
    return dataset, dataset.episode(index)


def read_source(source: str, fps: float | None = None, convention: Convention = "auto",
                streams: Streams = Streams()) -> Trajectory:
    """Read one source (resampled to ``fps`` when given)."""
    if split_episode_source(source) is None:
        return read_trajectory(source, fps=fps, convention=convention, camera=streams.camera or "left")
    dataset, episode = _episode(source)
    return dataset.read_episode(episode, streams, convention).resampled(fps, convention)


def source_signature(source: str) -> str:
    """Digest of a source's files (names, sizes, modification times)."""
    if split_episode_source(source) is not None:
        dataset, episode = _episode(source)
        return dataset.signature(episode)
    path = Path(source)
    entries = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            entries.append(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("\n".join(entries).encode()).hexdigest()


__all__ = ["Streams", "TrajectorySource", "find_sources", "open_dataset", "read_source", "source_signature"]
