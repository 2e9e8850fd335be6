"""LeRobot datasets (codebase versions v3.0 and v2.1) as world-model trajectories, read and written
with pyarrow and PyAV only (no ``lerobot`` import).

v3.0 layout (many episodes share one parquet and one mp4)::

    meta/info.json                       # codebase_version, fps, features, data_path / video_path templates
    meta/episodes/chunk-000/file-000.parquet
        # one row per episode: episode_index, length, tasks, data/chunk_index, data/file_index,
        # dataset_from_index, dataset_to_index (global frame rows, end excluded) and per camera
        # videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp}
    meta/tasks.parquet                   # task_index, with the task string as the (pandas) index
    data/chunk-000/file-000.parquet      # one row per frame: observation.state, action (fixed-size
                                         # lists), timestamp (from the episode start), episode_index, ...
    videos/<camera key>/chunk-000/file-000.mp4   # episodes back to back; an episode's frame k
                                                 # shows at from_timestamp + k / fps

v2.1 layout (one parquet and one mp4 per episode, JSON-lines metadata)::

    meta/info.json  meta/episodes.jsonl  meta/tasks.jsonl
    data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet
    videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4

Which streams make a trajectory (:class:`Streams`): the camera (a video feature's key, or its last
dotted part: ``exterior_1_left`` finds ``observation.images.exterior_1_left``; default the first
video feature), the state (feature keys joined by ``+``, concatenated; default
``observation.state``; DROID's end-effector pose + gripper is
``observation.state.cartesian_position+observation.state.gripper_position``) and the action
(default ``action`` when present; ``derive`` takes actions from consecutive states, as the paper's
AC does). LeRobot stores an action on every frame (the command issued at that frame); the
trajectory keeps the first ``T - 1`` of them, each followed by the next frame.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vjepa2.data.trajectories.poses import Convention, actions_from_states
from vjepa2.data.trajectories.trajectory import Trajectory, TrajectoryError
from vjepa2.data.clips.video import VideoReadError, read_clip

VERSIONS = ("v3.0", "v2.1")
DERIVE = "derive"


class LeRobotError(TrajectoryError):
    """A LeRobot dataset (or one of its episodes) cannot be read; the message names file and field."""


def require_pyarrow():
    """The ``pyarrow`` module (with ``pyarrow.parquet`` and ``pyarrow.compute``), or a one-line ImportError."""
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("LeRobot datasets need pyarrow: pip install pyarrow (or pip install 'vjepa2[lerobot]')") \
            from None
    return pyarrow


@dataclass(frozen=True)
class Streams:
    """Which recorded streams make a trajectory (see the module docstring). None = the default."""

    camera: str | None = None
    state: str | None = None
    action: str | None = None


@dataclass(frozen=True)
class EpisodeFiles:
    """Where one episode lives: its data parquet (rows with its ``episode_index``) and, per camera,
    its mp4 and the time (s) of its first frame in that file."""

    index: int
    length: int
    data_file: Path
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)


def is_lerobot_dataset(path: str | os.PathLike) -> bool:
    """A folder with ``meta/info.json`` (or, broken, with LeRobot's episode metadata but no info.json)."""
    meta = Path(path) / "meta"
    return any((meta / name).exists() for name in ("info.json", "episodes", "episodes.jsonl"))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise LeRobotError(f"{path}: missing; a LeRobot dataset has meta/info.json")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LeRobotError(f"{path}: invalid JSON ({err})") from None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise LeRobotError(f"{path}: missing; a v2.1 LeRobot dataset lists its episodes there")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise LeRobotError(f"{path}:{number}: invalid JSON ({err})") from None
    return rows


def _read_parquet(path: Path, columns: list[str] | None = None):
    pa = require_pyarrow()
    if not path.is_file():
        raise LeRobotError(f"{path}: missing (named by meta/info.json)")
    try:
        table = pa.parquet.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise LeRobotError(f"{path}: not a readable parquet file ({str(err).splitlines()[0]})") from None
    missing = [c for c in columns or () if c not in table.column_names]
    if missing:
        raise LeRobotError(f"{path}: no column {missing[0]!r} (columns: {', '.join(table.column_names)})")
    return table


def column_array(table, name: str, where: Path) -> np.ndarray:
    """A parquet column as ``(rows, width)`` float64: scalar, fixed-size-list or equal-length list columns."""
    pa = require_pyarrow()
    column = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type) \
            or pa.types.is_large_list(column.type):
        lengths = ({column.type.list_size} if pa.types.is_fixed_size_list(column.type)
                   else set(pa.compute.unique(pa.compute.list_value_length(column)).to_pylist()))
        if len(lengths) > 1:
            raise LeRobotError(f"{where}: column {name!r} holds lists of different lengths {sorted(lengths)}")
        width = lengths.pop() if lengths else 0
        values = column.flatten().to_numpy(zero_copy_only=False)
        return values.astype(np.float64).reshape(len(column), width)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
        return column.to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, 1)
    raise LeRobotError(f"{where}: column {name!r} has type {column.type}, not numbers")


class LeRobotDataset:
    """An opened LeRobot dataset: its ``info``, ``version``, ``fps`` and :class:`EpisodeFiles` per episode.

    ``LeRobotDataset(root).episodes`` lists episodes; :meth:`read_episode` reads one as a
    :class:`~vjepa2.data.trajectories.trajectory.Trajectory`. Missing or malformed metadata raises
    :class:`LeRobotError` at opening; a bad episode raises it when read (callers skip it).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.info = _read_json(self.root / "meta" / "info.json")
        self.version = str(self.info.get("codebase_version", ""))
        if self.version not in VERSIONS:
            raise LeRobotError(f"{self.root / 'meta/info.json'}: codebase_version {self.version!r} is not one of "
                               f"{', '.join(VERSIONS)}; convert it with LeRobot's converter")
        for key in ("fps", "features", "data_path"):
            if key not in self.info:
                raise LeRobotError(f"{self.root / 'meta/info.json'}: no {key!r}")
        self.fps = float(self.info["fps"])
        self.features: dict = self.info["features"]
        self.video_keys = [k for k, v in self.features.items() if v.get("dtype") == "video"]
        self.episodes = self._episodes_v3() if self.version == "v3.0" else self._episodes_v21()
        self._by_index = {episode.index: episode for episode in self.episodes}
        self._table_cache: tuple[Path, object] | None = None

    def _video_path(self, key: str, **indices) -> Path:
        template = self.info.get("video_path")
        if not template:
            raise LeRobotError(f"{self.root / 'meta/info.json'}: feature {key!r} is a video but there is no video_path")
        return self.root / template.format(video_key=key, **indices)

    def _episodes_v3(self) -> list[EpisodeFiles]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotError(f"{self.root / 'meta/episodes'}: no chunk-*/file-*.parquet (the v3.0 episode table)")
        needed = ["episode_index", "length", "data/chunk_index", "data/file_index"]
        for key in self.video_keys:
            needed += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
        episodes = []
        for path in files:
            rows = _read_parquet(path, needed).select(needed).to_pylist()
            for row in rows:
                data = self.root / self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                                 file_index=row["data/file_index"])
                videos = {key: (self._video_path(key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                 file_index=row[f"videos/{key}/file_index"]),
                                float(row[f"videos/{key}/from_timestamp"])) for key in self.video_keys}
                episodes.append(EpisodeFiles(int(row["episode_index"]), int(row["length"]), data, videos))
        return sorted(episodes, key=lambda e: e.index)

    def _episodes_v21(self) -> list[EpisodeFiles]:
        chunk_size = int(self.info.get("chunks_size", 1000))
        episodes = []
        for row in _read_jsonl(self.root / "meta" / "episodes.jsonl"):
            if "episode_index" not in row or "length" not in row:
                raise LeRobotError(f"{self.root / 'meta/episodes.jsonl'}: a line lacks episode_index or length: {row}")
            index = int(row["episode_index"])
            chunk = index // chunk_size
            data = self.root / self.info["data_path"].format(episode_chunk=chunk, episode_index=index)
            videos = {key: (self._video_path(key, episode_chunk=chunk, episode_index=index), 0.0)
                      for key in self.video_keys}
            episodes.append(EpisodeFiles(index, int(row["length"]), data, videos))
        return sorted(episodes, key=lambda e: e.index)

    def episode(self, index: int) -> EpisodeFiles:
        """The episode with ``episode_index == index``."""
        if index not in self._by_index:
            raise FileNotFoundError(f"{self.root}: no episode {index} in the dataset's metadata")
        return self._by_index[index]

    # -- streams ------------------------------------------------------------------------------

    def camera_key(self, camera: str | None) -> str:
        """The video feature named (fully or by its last dotted part) by ``camera``; default the first."""
        if not self.video_keys:
            raise LeRobotError(f"{self.root / 'meta/info.json'}: no video feature (dtype 'video'); image-only "
                               f"datasets are not supported")
        if camera is None:
            return self.video_keys[0]
        matches = [k for k in self.video_keys if k == camera or k.split(".")[-1] == camera]
        if len(matches) != 1:
            raise LeRobotError(f"{self.root}: camera {camera!r} is not one video feature; choose from "
                               f"{', '.join(self.video_keys)}")
        return matches[0]

    def _numeric_keys(self) -> list[str]:
        return [k for k, v in self.features.items() if v.get("dtype") not in ("video", "image", "string")]

    def state_keys(self, state: str | None) -> list[str]:
        keys = (state or "observation.state").split("+")
        for key in keys:
            if key not in self.features:
                raise LeRobotError(f"{self.root / 'meta/info.json'}: no state feature {key!r}; choose from "
                                   f"{', '.join(self._numeric_keys())} (join several with +)")
        return keys

    def action_key(self, action: str | None) -> str | None:
        """The action feature, or None when actions are derived from the states."""
        if action == DERIVE or (action is None and "action" not in self.features):
            return None
        key = action or "action"
        if key not in self.features:
            raise LeRobotError(f"{self.root / 'meta/info.json'}: no action feature {key!r}; choose from "
                               f"{', '.join(self._numeric_keys())}, or '{DERIVE}' to take actions from the states")
        return key

    # -- reading ------------------------------------------------------------------------------

    def _table(self, path: Path):
        if self._table_cache is None or self._table_cache[0] != path:
            self._table_cache = (path, _read_parquet(path, ["episode_index"]))
        return self._table_cache[1]

    def episode_rows(self, episode: EpisodeFiles, columns: list[str]) -> dict[str, np.ndarray]:
        """``columns`` of the episode's frames, each ``(length, width)`` float64, in frame order."""
        pa = require_pyarrow()
        table = self._table(episode.data_file)
        for name in columns:
            if name not in table.column_names:
                raise LeRobotError(f"{episode.data_file}: no column {name!r} (episode {episode.index})")
        mask = pa.compute.equal(table.column("episode_index"), episode.index)
        rows = table.filter(mask)
        if "frame_index" in rows.column_names:
            rows = rows.take(pa.compute.sort_indices(rows.column("frame_index")))
        if rows.num_rows != episode.length:
            raise LeRobotError(f"{episode.data_file}: episode {episode.index} has {rows.num_rows} rows, its "
                               f"metadata says length {episode.length}")
        return {name: column_array(rows, name, episode.data_file) for name in columns}

    def episode_frames(self, episode: EpisodeFiles, key: str) -> np.ndarray:
        """``(length, H, W, 3)`` uint8: the episode's frames of camera ``key``, decoded by timestamp."""
        video, start = episode.videos[key]
        if not video.is_file():
            raise LeRobotError(f"{video}: missing (episode {episode.index}, camera {key})")
        try:
            clip, info = read_clip(video, frames=episode.length, fps=self.fps, start=start)
        except VideoReadError as err:
            raise LeRobotError(f"{video}: cannot decode episode {episode.index} ({err})") from None
        except ValueError as err:  # the start lies outside the video
            raise LeRobotError(f"{video}: episode {episode.index} starts at {start:.3f} s, outside the video "
                               f"({err})") from None
        if info.padded:
            raise LeRobotError(f"{video}: episode {episode.index} needs {episode.length} frames from {start:.3f} s "
                               f"at {self.fps:g} fps but the video ends after {episode.length - info.padded}")
        return clip.numpy()

    def resolve(self, streams: Streams) -> tuple[str, list[str], str | None]:
        """``(camera key, state keys, action key or None)``; a one-line :class:`LeRobotError` naming the
        missing feature and the choices. Callers check this before any work."""
        return self.camera_key(streams.camera), self.state_keys(streams.state), self.action_key(streams.action)

    def read_episode(self, episode: EpisodeFiles, streams: Streams = Streams(),
                     convention: Convention = "auto") -> Trajectory:
        """One episode as a trajectory: frames ``(T, H, W, 3)``, states ``(T, S)``, actions ``(T-1, A)``."""
        camera, state_keys, action_key = self.resolve(streams)
        rows = self.episode_rows(episode, state_keys + ([action_key] if action_key else []))
        states = np.concatenate([rows[k] for k in state_keys], axis=1)
        if action_key:
            actions = rows[action_key][:-1]
        else:
            actions = actions_from_states(states, convention) if len(states) > 1 else np.zeros((0, states.shape[1]))
        traj = Trajectory(frames=self.episode_frames(episode, camera), states=states.astype(np.float32),
                          actions=actions.astype(np.float32), fps=self.fps, name=f"episode_{episode.index:06d}",
                          source=self.root, meta={"lerobot_episode": episode.index, "camera": camera,
                                                  "state": state_keys, "action": action_key or DERIVE})
        traj.validate()
        return traj

    def signature(self, episode: EpisodeFiles) -> str:
        """Digest of the episode's files (size + mtime), its place in them, and the metadata."""
        parts = [self.version, str(episode.index), str(episode.length)]
        paths = [self.root / "meta" / "info.json", episode.data_file]
        paths += [video for video, _ in episode.videos.values()]
        parts += [f"{start:.6f}" for _, start in episode.videos.values()]
        for path in paths:
            st = path.stat() if path.exists() else None
            parts.append(f"{path.relative_to(self.root)}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}")
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()


EPISODE_SEPARATOR = "#episode="


def episode_source(root: Path, index: int) -> str:
    """The string that names one episode of a dataset (stored with its cached features)."""
    return f"{Path(root).resolve()}{EPISODE_SEPARATOR}{index}"


def split_episode_source(source: str) -> tuple[Path, int] | None:
    """``(root, episode index)`` of a string made by :func:`episode_source`, else None."""
    root, sep, index = str(source).rpartition(EPISODE_SEPARATOR)
    return (Path(root), int(index)) if sep and index.isdigit() else None
