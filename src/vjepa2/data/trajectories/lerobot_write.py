"""Write trajectories as a LeRobot v3.0 dataset (the layout in :mod:`vjepa2.data.trajectories.lerobot`), so that
LeRobot's own tools open what ``vjepa2 collect --format lerobot`` records.

Everything goes to one data parquet, one mp4 per camera (h264, constant frame rate, episodes back to
back: an episode's frame ``k`` is shown at ``from_timestamp + k / fps``) and one episode table; LeRobot
splits files at 100 MB / 500 MB, which its reader does not require. The dataset is built in a
temporary folder and moved into place when :meth:`LeRobotWriter.close` succeeds, so a crash never
leaves a half-written dataset under the final name.

Per frame the parquet holds ``observation.state`` and ``action`` (fixed-size float32 lists), the
extras (``env_states`` becomes LeRobot's ``observation.environment_state``), ``timestamp`` (seconds
from the episode start), ``frame_index``, ``episode_index``, ``index`` and ``task_index``. A
trajectory has ``T - 1`` actions for ``T`` frames; LeRobot wants one per frame, so the last frame
carries a zero action (the reader drops it again).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vjepa2.data.trajectories.lerobot import require_pyarrow
from vjepa2.files import atomic_dir

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
DEFAULT_CAMERA = "observation.images.camera"
EXTRA_NAMES = {"env_states": "observation.environment_state"}


class _Stats:
    """Running min / max / sum / sum of squares of a ``(rows, width)`` stream (float64)."""

    def __init__(self) -> None:
        self.count, self.sum, self.sq, self.min, self.max = 0, 0.0, 0.0, None, None

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64).reshape(len(values), -1)
        self.count += len(values)
        self.sum = self.sum + values.sum(0)
        self.sq = self.sq + (values ** 2).sum(0)
        low, high = values.min(0), values.max(0)
        self.min = low if self.min is None else np.minimum(self.min, low)
        self.max = high if self.max is None else np.maximum(self.max, high)

    def as_dict(self, shape: tuple[int, ...] | None = None) -> dict:
        mean = self.sum / max(self.count, 1)
        std = np.sqrt(np.maximum(self.sq / max(self.count, 1) - mean ** 2, 0.0))

        def shaped(x):
            x = np.asarray(x, np.float64)
            return (x.reshape(shape) if shape else x).tolist()

        return {"min": shaped(self.min), "max": shaped(self.max), "mean": shaped(mean), "std": shaped(std),
                "count": [int(self.count)]}


def _fps_value(fps: float):
    return int(fps) if float(fps).is_integer() else float(fps)


class LeRobotWriter:
    """Append episodes, then :meth:`close` (or use as a context manager) to write the dataset.

    Args:
        root: the dataset folder to create (replaced only if ``overwrite``).
        fps: frame rate of every episode.
        camera: the video feature's key.
        robot_type: ``info.json``'s ``robot_type``.
        state_names / action_names: per-entry names stored in the features (None: none).
    """

    def __init__(self, root: str | os.PathLike, fps: float, camera: str = DEFAULT_CAMERA,
                 robot_type: str | None = None, state_names: list[str] | None = None,
                 action_names: list[str] | None = None, overwrite: bool = False) -> None:
        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()) and not overwrite:
            raise FileExistsError(f"{self.root} exists and is not empty; choose another --out or pass --overwrite")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps, self.camera, self.robot_type = float(fps), camera, robot_type
        self.names = {"observation.state": state_names, "action": action_names}
        self._stack = contextlib.ExitStack()
        self.tmp = self._stack.enter_context(atomic_dir(self.root))
        (self.tmp / "meta").mkdir()
        self._video = None
        self._columns: dict[str, list[np.ndarray]] = {}
        self._episodes: list[dict] = []
        self._tasks: dict[str, int] = {}
        self._stats: dict[str, _Stats] = {}
        self._frames_written = 0
        self._shape: tuple[int, int] | None = None

    # -- episodes ------------------------------------------------------------------------------

    def add_episode(self, frames: np.ndarray, states: np.ndarray, actions: np.ndarray, task: str = "",
                    extras: dict[str, np.ndarray] | None = None) -> None:
        """One episode: frames ``(T, H, W, 3)`` uint8, states ``(T, S)``, actions ``(T-1, A)``,
        optional per-step ``extras`` ``(T, k)``."""
        frames, states, actions = np.asarray(frames), np.asarray(states, np.float32), np.asarray(actions, np.float32)
        T = len(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or T < 1:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        if states.shape[:1] != (T,) or actions.ndim != 2 or len(actions) != T - 1:
            raise ValueError(f"need states (T={T}, S) and actions (T-1, A), got {states.shape} and {actions.shape}")
        self._encode(frames)
        per_frame = {"observation.state": states.reshape(T, -1),
                     "action": np.concatenate([actions, np.zeros((1, actions.shape[1]), np.float32)])}
        for name, value in (extras or {}).items():
            per_frame[EXTRA_NAMES.get(name, f"observation.{name}")] = np.asarray(value, np.float32).reshape(T, -1)
        task_index = self._tasks.setdefault(task, len(self._tasks))
        start = self._frames_written - T
        per_frame.update({"timestamp": (np.arange(T) / self.fps).astype(np.float32),
                          "frame_index": np.arange(T), "episode_index": np.full(T, len(self._episodes)),
                          "index": np.arange(start, start + T), "task_index": np.full(T, task_index)})
        if self._columns and set(per_frame) != set(self._columns):
            raise ValueError(f"episode {len(self._episodes)} has streams {sorted(per_frame)}, earlier ones "
                             f"{sorted(self._columns)}")
        for name, value in per_frame.items():
            self._columns.setdefault(name, []).append(value)
            self._stats.setdefault(name, _Stats()).add(value)
        self._episodes.append({"episode_index": len(self._episodes), "tasks": [task], "length": T,
                               "dataset_from_index": start, "dataset_to_index": start + T,
                               "from_timestamp": start / self.fps, "to_timestamp": (start + T) / self.fps})

    def _encode(self, frames: np.ndarray) -> None:
        if self._video is None:
            path = self.tmp / VIDEO_PATH.format(video_key=self.camera, chunk_index=0, file_index=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            container = self._stack.enter_context(av.open(str(path), "w", format="mp4"))
            stream = container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = 10
            stream.codec_context.time_base = Fraction(1, 1) / Fraction(self.fps).limit_denominator(1001)
            self._video, self._shape = (container, stream), tuple(frames.shape[1:3])
        if tuple(frames.shape[1:3]) != self._shape:
            raise ValueError(f"every episode needs {self._shape} frames (one mp4), got {frames.shape[1:3]}")
        container, stream = self._video
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = self._frames_written, stream.codec_context.time_base
            self._frames_written += 1
            for packet in stream.encode(frame):
                container.mux(packet)
        self._stats.setdefault(self.camera, _Stats()).add(frames.reshape(-1, 3) / 255.0)

    # -- finishing -----------------------------------------------------------------------------

    def close(self) -> Path:
        """Write the tables and ``meta/info.json``, then move the dataset into place."""
        try:
            if not self._episodes:
                raise ValueError("no episode was added; nothing to write")
            container, stream = self._video
            for packet in stream.encode():
                container.mux(packet)
            self._write_data()
            self._write_episodes()
            self._write_tasks()
            (self.tmp / "meta" / "info.json").write_text(json.dumps(self.info(), indent=4) + "\n")
            stats = {name: s.as_dict((3, 1, 1) if name == self.camera else None) for name, s in self._stats.items()}
            (self.tmp / "meta" / "stats.json").write_text(json.dumps(stats, indent=4) + "\n")
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        self._stack.close()
        return self.root

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
        else:
            self._stack.__exit__(kind, error, trace)

    def _arrow_column(self, name: str):
        pa = require_pyarrow()
        values = np.concatenate(self._columns[name])
        if name in ("timestamp",):
            return pa.array(values.astype(np.float32))
        if values.ndim == 1:
            return pa.array(values.astype(np.int64))
        flat = pa.array(values.astype(np.float32).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])

    def _write_data(self) -> None:
        pa = require_pyarrow()
        order = [n for n in self._columns if n not in DEFAULT_FEATURES] + list(DEFAULT_FEATURES)
        table = pa.table({name: self._arrow_column(name) for name in order})
        path = self.tmp / DATA_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pa.parquet.write_table(table, path)

    def _write_episodes(self) -> None:
        pa = require_pyarrow()
        key = f"videos/{self.camera}"
        rows = {"episode_index": [], "tasks": [], "length": [], "data/chunk_index": [], "data/file_index": [],
                "dataset_from_index": [], "dataset_to_index": [], f"{key}/chunk_index": [], f"{key}/file_index": [],
                f"{key}/from_timestamp": [], f"{key}/to_timestamp": [], "meta/episodes/chunk_index": [],
                "meta/episodes/file_index": []}
        for ep in self._episodes:
            values = {**ep, f"{key}/from_timestamp": ep["from_timestamp"], f"{key}/to_timestamp": ep["to_timestamp"]}
            for name in rows:
                rows[name].append(values.get(name, 0))
        types = {"tasks": pa.list_(pa.string()), f"{key}/from_timestamp": pa.float64(),
                 f"{key}/to_timestamp": pa.float64()}
        table = pa.table({name: pa.array(v, type=types.get(name, pa.int64())) for name, v in rows.items()})
        path = self.tmp / EPISODES_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        pa.parquet.write_table(table, path)

    def _write_tasks(self) -> None:
        """``task_index`` with the task string as the pandas index named ``task`` (how LeRobot reads it)."""
        pa = require_pyarrow()
        tasks = sorted(self._tasks, key=self._tasks.get)
        pandas_meta = {"index_columns": ["task"], "column_indexes": [], "pandas_version": "2.2.0", "creator": {},
                       "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                    "numpy_type": "int64", "metadata": None},
                                   {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                    "numpy_type": "object", "metadata": None}]}
        table = pa.table({"task_index": pa.array([self._tasks[t] for t in tasks], pa.int64()),
                          "task": pa.array(tasks, pa.string())})
        table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
        pa.parquet.write_table(table, self.tmp / "meta" / "tasks.parquet")

    def info(self) -> dict:
        """``meta/info.json``."""
        height, width = self._shape
        features = {}
        for name in self._columns:
            if name in DEFAULT_FEATURES:
                continue
            features[name] = {"dtype": "float32", "shape": [int(self._columns[name][0].shape[1])],
                              "names": self.names.get(name)}
        features[self.camera] = {
            "dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": height, "video.width": width, "video.codec": "h264", "video.pix_fmt": "yuv420p",
                     "video.is_depth_map": False, "video.fps": _fps_value(self.fps), "video.channels": 3,
                     "has_audio": False}}
        features.update({name: dict(spec) for name, spec in DEFAULT_FEATURES.items()})
        return {"codebase_version": "v3.0", "robot_type": self.robot_type, "total_episodes": len(self._episodes),
                "total_frames": self._frames_written, "total_tasks": len(self._tasks), "chunks_size": 1000,
                "data_files_size_in_mb": 100, "video_files_size_in_mb": 500, "fps": _fps_value(self.fps),
                "splits": {"train": f"0:{len(self._episodes)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
                "features": features}


#: The per-frame bookkeeping features every LeRobot dataset has.
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
