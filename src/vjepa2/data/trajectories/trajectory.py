"""Robot trajectories: our on-disk format, the DROID raw layout, resampling.

Our format — one directory per trajectory::

    traj_0000/
      frames.mp4              # the camera video, or
      frames/000000.png ...   # one image per step (lossless; what `vjepa2 collect` writes)
      states.npy              # (T, S) float, the proprioceptive state at each frame
      actions.npy             # optional (T-1, A) float, the action taken after frame t
      meta.json               # optional {"fps": 10, ...}; fps is needed to resample PNG frames
      *.npy                   # optional per-step extras, e.g. env_states.npy (T, 5) of toy-push

When ``actions.npy`` is absent, actions are derived from consecutive states (:func:`actions_from_states`).

States and actions follow the ``pose7`` or ``delta`` convention of :mod:`vjepa2.data.trajectories.poses`
(the pose maths, re-exported here).

DROID raw layout — one directory per episode::

    episode/
      trajectory.h5           # observation/robot_state/cartesian_position (T, 6) [xyz + Euler xyz]
                              # observation/robot_state/gripper_position   (T,)
      <anything>.json         # metadata with "left_mp4_path": ".../recordings/MP4/<serial>.mp4"
      recordings/MP4/<serial>.mp4

Video frame ``i`` is taken to show state row ``i`` (the public loader's convention).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vjepa2.errors import InputError
from vjepa2.data.trajectories.poses import Convention, actions_from_states, apply_action, euler_to_matrix, matrix_to_euler
from vjepa2.data.clips.video import read_clip, write_video
from vjepa2.files import atomic_dir

FRAME_DIGITS = 6
_RESERVED_NPY = {"states.npy", "actions.npy"}


class TrajectoryError(InputError):
    """A trajectory directory is malformed; the message names the file and how to fix it."""


# ------------------------------------------------------------------------------------------------
# Resampling
# ------------------------------------------------------------------------------------------------


def resample_indices(num_frames: int, source_fps: float, target_fps: float) -> np.ndarray:
    """Frame indices that sample ``num_frames`` frames at ``source_fps`` at ``target_fps``.

    Sample ``k`` at time ``k / target_fps`` shows frame ``floor(k * source_fps / target_fps)``
    (the frame on screen then, as :func:`vjepa2.data.clips.video.read_clip` samples).
    """
    if source_fps <= 0 or target_fps <= 0:
        raise ValueError(f"frame rates must be positive, got source {source_fps}, target {target_fps}")
    if target_fps > source_fps + 1e-9:
        raise ValueError(f"cannot resample {source_fps} fps up to {target_fps} fps; choose fps <= {source_fps}")
    step = source_fps / target_fps
    count = int(math.floor((num_frames - 1) / step + 1e-9)) + 1 if num_frames else 0
    return np.floor(np.arange(count) * step + 1e-9).astype(np.int64)


def resample_actions(states: np.ndarray, actions: np.ndarray, indices: np.ndarray,
                     convention: Convention = "auto") -> np.ndarray:
    """Actions between the kept frames ``indices`` ``(K,)``: ``(K-1, A)``.

    Each is the composition of the original actions over the skipped interval (integrated from
    the state at its start with :func:`apply_action`, then differenced), which is exact for both
    conventions; for ``delta`` it is the sum. Actions that are not state changes (a width other
    than the state's, e.g. a LeRobot dataset's joint targets) cannot be composed: each interval
    keeps its last command, the one in force when the next kept frame is shown.
    """
    if len(indices) > 1 and actions.shape[1] != states.shape[1]:
        return actions[indices[1:] - 1].astype(np.float32)
    out = []
    for begin, end in zip(indices[:-1], indices[1:]):
        state = states[begin].astype(np.float64)
        for t in range(begin, end):
            state = apply_action(state, actions[t], convention)
        out.append(actions_from_states(np.stack([states[begin].astype(np.float64), state]), convention)[0])
    return np.stack(out).astype(np.float32) if out else np.zeros((0, actions.shape[1]), np.float32)


# ------------------------------------------------------------------------------------------------
# Trajectories
# ------------------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """One trajectory in memory.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        states: ``(T, S)`` float32.
        actions: ``(T-1, A)`` float32.
        fps: frame rate of ``frames`` (None if unknown).
        name: identifier (the directory name).
        source: where it was read from.
        extras: per-step arrays ``(T, ...)`` stored next to the states (e.g. ``env_states``).
        meta: free-form metadata (``meta.json``).
    """

    frames: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    fps: float | None = None
    name: str = ""
    source: Path | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.states)

    def validate(self) -> None:
        where = str(self.source or self.name or "trajectory")
        T = len(self.states)
        if self.states.ndim != 2:
            raise TrajectoryError(f"{where}: states must be (T, S), got shape {self.states.shape}")
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise TrajectoryError(f"{where}: frames must be uint8 (T, H, W, 3), got {self.frames.dtype} {self.frames.shape}")
        if len(self.frames) != T:
            raise TrajectoryError(f"{where}: {len(self.frames)} frames but {T} states; every frame needs a state row")
        if self.actions.ndim != 2 or len(self.actions) != max(T - 1, 0):
            raise TrajectoryError(f"{where}: actions must be (T-1={T - 1}, A), got shape {self.actions.shape}")
        for key, value in self.extras.items():
            if len(value) != T:
                raise TrajectoryError(f"{where}: extra {key!r} has {len(value)} rows for {T} steps")
        for name, array in (("states", self.states), ("actions", self.actions)):
            if not np.all(np.isfinite(array)):
                raise TrajectoryError(f"{where}: {name} hold NaN or infinite values")

    def resampled(self, fps: float | None, convention: Convention = "auto") -> Trajectory:
        """The trajectory at ``fps`` (frames, states and extras subsampled, actions composed)."""
        if fps is None or (self.fps is not None and abs(fps - self.fps) < 1e-9):
            return self
        if self.fps is None:
            raise TrajectoryError(f"{self.source or self.name}: frame rate unknown, cannot resample to {fps} fps; "
                                  f"add \"fps\" to meta.json")
        idx = resample_indices(len(self), self.fps, fps)
        return Trajectory(frames=self.frames[idx], states=self.states[idx],
                          actions=resample_actions(self.states, self.actions, idx, convention), fps=float(fps),
                          name=self.name, source=self.source, extras={k: v[idx] for k, v in self.extras.items()},
                          meta=self.meta)


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":  # else numpy calls any other bytes "pickled data"
                raise TrajectoryError(f"{path}: cannot read {what}: not a .npy file (no NumPy header); write it "
                                      f"with numpy.save")
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise TrajectoryError(f"{path}: cannot read {what} ({err}); write it with numpy.save") from None


def _frame_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise TrajectoryError(f"{directory}: no frame images (expected {'0' * FRAME_DIGITS}.png, ...)")
    return files


def is_trajectory_dir(path: Path) -> bool:
    """Our format (``states.npy``) or a DROID episode (``trajectory.h5``)."""
    return (path / "states.npy").is_file() or (path / "trajectory.h5").is_file()


def read_trajectory(path: str | os.PathLike, fps: float | None = None, convention: Convention = "auto",
                    camera: str = "left") -> Trajectory:
    """Read one trajectory directory (our format or DROID raw, detected by its files).

    Args:
        path: the trajectory directory.
        fps: resample to this rate (None: keep the recorded rate).
        convention: state convention for deriving/composing actions (``auto``: pose7 for 7-D states).
        camera: DROID camera (``left`` reads ``left_mp4_path``).
    """
    path = Path(path)
    if not path.is_dir():
        raise TrajectoryError(f"{path}: not a directory (a trajectory is a directory with states.npy or trajectory.h5)")
    if (path / "trajectory.h5").is_file() and not (path / "states.npy").is_file():
        return read_droid_episode(path, fps=fps, camera=camera)
    states_file = path / "states.npy"
    if not states_file.is_file():
        raise TrajectoryError(f"{path}: no states.npy (T, S) — see vjepa2.data.trajectories.trajectory for the format")
    states = _load_npy(states_file, "states").astype(np.float32)
    if states.ndim != 2 or len(states) < 1:
        raise TrajectoryError(f"{states_file}: states must be a (T, S) array, got shape {states.shape}")
    meta_file = path / "meta.json"
    try:
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    except json.JSONDecodeError as err:
        raise TrajectoryError(f"{meta_file}: invalid JSON ({err})") from None
    T = len(states)
    video = path / "frames.mp4"
    if video.is_file():
        clip, info = read_clip(video, frames=T, fps=None, start=0.0)
        if info.padded:
            raise TrajectoryError(f"{video}: {T - info.padded} frames for {T} states; states.npy and the video "
                                  f"must have one row per frame")
        frames = clip.numpy()
        meta.setdefault("fps", info.video_fps)
    elif (path / "frames").is_dir():
        files = _frame_files(path / "frames")
        if len(files) != T:
            raise TrajectoryError(f"{path / 'frames'}: {len(files)} images for {T} states; they must match")
        frames = np.stack([read_clip(f, frames=1)[0][0].numpy() for f in files])
    else:
        raise TrajectoryError(f"{path}: no frames.mp4 and no frames/ directory of images")
    actions_file = path / "actions.npy"
    if actions_file.is_file():
        actions = _load_npy(actions_file, "actions").astype(np.float32)
    else:
        actions = actions_from_states(states.astype(np.float64), convention).astype(np.float32) if T > 1 \
            else np.zeros((0, states.shape[1]), np.float32)
    extras = {p.stem: _load_npy(p, p.stem) for p in sorted(path.glob("*.npy")) if p.name not in _RESERVED_NPY}
    traj = Trajectory(frames=frames, states=states, actions=actions, fps=meta.get("fps"), name=path.name,
                      source=path, extras=extras, meta=meta)
    traj.validate()
    return traj.resampled(fps, convention)


def read_droid_episode(path: str | os.PathLike, fps: float | None = None, camera: str = "left") -> Trajectory:
    """Read a DROID raw episode directory (see the module docstring) as a :class:`Trajectory`.

    States are ``(T, 7)`` pose7 (cartesian position + gripper position); actions are derived
    from the (resampled) states. With ``fps`` the video is decoded only at the sampled times.
    """
    try:
        import h5py
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("reading DROID episodes needs h5py: pip install h5py") from None
    path = Path(path)
    h5_file = path / "trajectory.h5"
    metadata = None
    for candidate in sorted(path.glob("*.json")):
        try:
            metadata = json.loads(candidate.read_text())
        except json.JSONDecodeError as err:
            raise TrajectoryError(f"{candidate}: invalid JSON ({err})") from None
        break
    key = f"{camera}_mp4_path"
    if metadata is None or key not in metadata:
        raise TrajectoryError(f"{path}: need a metadata .json with {key!r} (DROID layout)")
    video = path / "recordings" / "MP4" / Path(metadata[key].split("recordings/MP4/")[-1]).name
    if not video.is_file():
        raise TrajectoryError(f"{path}: metadata names {metadata[key]!r} but {video} does not exist")
    with h5py.File(h5_file, "r") as h5:
        try:
            robot = h5["observation"]["robot_state"]
            position = np.asarray(robot["cartesian_position"], dtype=np.float64)
            gripper = np.asarray(robot["gripper_position"], dtype=np.float64).reshape(len(position), -1)
        except KeyError as err:
            raise TrajectoryError(f"{h5_file}: missing {err}; DROID episodes hold observation/robot_state/"
                                  f"cartesian_position and gripper_position") from None
    if position.ndim != 2 or position.shape[1] != 6:
        raise TrajectoryError(f"{h5_file}: cartesian_position must be (T, 6), got {position.shape}")
    states = np.concatenate([position, gripper[:, :1]], axis=1)
    T = len(states)
    _, info = read_clip(video, frames=1, fps=None, start=0.0)
    source_fps = info.video_fps
    if fps is not None and source_fps is None:
        raise TrajectoryError(f"{video}: the video reports no frame rate; cannot resample to {fps} fps")
    idx = np.arange(T) if fps is None else resample_indices(T, source_fps, fps)
    clip, info = read_clip(video, frames=len(idx), fps=fps, start=0.0)
    usable = len(idx) - info.padded
    if usable < len(idx):  # the video is shorter than the state log
        idx, clip = idx[:usable], clip[:usable]
    states = states[idx]
    actions = actions_from_states(states, "pose7") if len(states) > 1 else np.zeros((0, 7))
    traj = Trajectory(frames=clip.numpy(), states=states.astype(np.float32), actions=actions.astype(np.float32),
                      fps=fps or source_fps, name=path.name, source=path, meta={"droid_video": str(video)})
    traj.validate()
    return traj


def write_trajectory(path: str | os.PathLike, frames: np.ndarray, states: np.ndarray,
                     actions: np.ndarray | None = None, fps: float | None = None, video: bool = False,
                     extras: dict[str, np.ndarray] | None = None, meta: dict | None = None,
                     overwrite: bool = False) -> Path:
    """Write a trajectory directory in our format, atomically (built aside, then renamed into place).

    Args:
        frames: ``(T, H, W, 3)`` uint8; written as ``frames/000000.png ...`` (lossless) or, with
            ``video=True``, as ``frames.mp4`` (h264, smaller but lossy).
        states: ``(T, S)``; actions: ``(T-1, A)`` or None (derived when read).
        extras: more per-step arrays, saved as ``<name>.npy``.
        meta: saved as ``meta.json`` together with ``fps``.
    """
    path = Path(path)
    frames = np.asarray(frames)
    traj = Trajectory(frames=frames, states=np.asarray(states, np.float32),
                      actions=(np.asarray(actions, np.float32) if actions is not None
                               else np.zeros((max(len(states) - 1, 0), np.asarray(states).shape[-1]), np.float32)),
                      fps=fps, name=path.name, extras=dict(extras or {}))
    traj.validate()
    if video and fps is None:
        raise ValueError("writing frames.mp4 needs fps")
    for name in traj.extras:
        if f"{name}.npy" in _RESERVED_NPY or not name.replace("_", "").isalnum():
            raise ValueError(f"extra name {name!r} is reserved or not a plain identifier")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")
    with atomic_dir(path) as tmp:
        if video:
            write_video(tmp / "frames.mp4", frames, fps=fps)
        else:
            (tmp / "frames").mkdir()
            for i, frame in enumerate(frames):
                write_video(tmp / "frames" / f"{i:0{FRAME_DIGITS}d}.png", frame[None])
        np.save(tmp / "states.npy", traj.states)
        if actions is not None:
            np.save(tmp / "actions.npy", traj.actions)
        for name, value in traj.extras.items():
            np.save(tmp / f"{name}.npy", np.asarray(value))
        (tmp / "meta.json").write_text(json.dumps({**(meta or {}), "fps": fps}, indent=2) + "\n")
    return path


def find_trajectories(root: str | os.PathLike) -> list[Path]:
    """Trajectory directories under ``root`` (``root`` itself if it is one), sorted by path."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such directory")
    if is_trajectory_dir(root):
        return [root]
    found = sorted(p for p in root.rglob("*") if p.is_dir() and not p.name.startswith(".") and is_trajectory_dir(p))
    if not found:
        raise TrajectoryError(f"{root}: no trajectory directories found (each needs states.npy or trajectory.h5)")
    return found


@dataclass
class Skipped:
    """A trajectory that was left out, and why."""

    path: Path
    reason: str


def load_trajectories(root: str | os.PathLike, min_steps: int = 2, fps: float | None = None,
                      convention: Convention = "auto", progress: bool = True) -> tuple[list[Trajectory], list[Skipped]]:
    """Read every trajectory under ``root``; those with fewer than ``min_steps`` frames (after
    resampling) are skipped and returned with the reason, never silently dropped."""
    from vjepa2.progress import progress_bar

    kept, skipped = [], []
    for path in progress_bar(find_trajectories(root), desc="reading trajectories", disable=not progress,
                             unit="traj"):
        traj = read_trajectory(path, fps=fps, convention=convention)
        if len(traj) < min_steps:
            skipped.append(Skipped(path, f"{len(traj)} steps{f' at {fps} fps' if fps else ''} < {min_steps} needed"))
        else:
            kept.append(traj)
    return kept, skipped


# The pose maths is re-exported: it lives in vjepa2.data.trajectories.poses.
__all__ = ["FRAME_DIGITS", "Convention", "Skipped", "Trajectory", "TrajectoryError", "actions_from_states",
           "apply_action", "euler_to_matrix", "find_trajectories", "is_trajectory_dir", "load_trajectories",
           "matrix_to_euler", "read_droid_episode", "read_trajectory", "resample_actions", "resample_indices",
           "write_trajectory"]
