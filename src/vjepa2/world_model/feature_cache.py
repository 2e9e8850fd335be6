"""Frozen-encoder features of trajectory frames, cached on disk so AC training never re-runs the encoder.

Each frame is encoded on its own: the frame is duplicated into one tubelet (a ``tubelet_size``-frame
clip), giving ``H' x W'`` tokens per frame (arXiv 2506.09985, V-JEPA 2-AC). Frames are resized (short side) and
centre-cropped to ``img_size``, ImageNet-normalised.

Cache layout: ``<cache_dir>/<encoder fingerprint>/<trajectory key>.safetensors`` holding

- ``features`` ``(T, H'*W', D)`` raw encoder outputs (layer-norm them with
  :func:`vjepa2.models.ac_predictor.normalize_latents` before use, as training does),
- ``states`` ``(T, S)``, ``actions`` ``(T-1, A)`` and ``extra.<name>`` per-step extras,
- metadata: the source (a directory, or a LeRobot episode; :mod:`vjepa2.data.trajectories.sources`), the streams
  read, a signature of its files (size + mtime), fps, grid, encoder info.

The fingerprint hashes the encoder config, its weights and the preprocessing, so a different
encoder never reads another's features; the signature makes an edited trajectory re-encode. Files
are written atomically; an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vjepa2.files import atomic_path
from vjepa2 import precision
from vjepa2.data.trajectories.lerobot import Streams, split_episode_source
from vjepa2.data.trajectories.sources import find_sources, read_source, source_signature
from vjepa2.data.trajectories.trajectory import Convention, Skipped, Trajectory, TrajectoryError
from vjepa2.data.clips.video import VideoReadError
from vjepa2.data.clips.transforms import center_crop, normalize, resize_short_side
from vjepa2.progress import progress_bar
from vjepa2.models.encoder import VisionEncoder

FORMAT = "vjepa2-ac-features/1"


def preprocess_frames(frames: np.ndarray | torch.Tensor, img_size: int) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float32 ``(T, 3, img_size, img_size)``, ImageNet-normalised."""
    x = torch.as_tensor(frames)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float()
    x = center_crop(resize_short_side(x, img_size), img_size)
    return normalize(x / 255.0)


@torch.no_grad()
def encode_frames(encoder: VisionEncoder, frames: np.ndarray | torch.Tensor, img_size: int, batch_size: int = 32,
                  dtype: str = "fp32", device: str | torch.device = "cpu") -> torch.Tensor:
    """Encode each frame separately: uint8 ``(T, H, W, 3)`` -> float32 ``(T, H'*W', D)``.

    Args:
        img_size: side of the square input the frames are resized/cropped to.
        batch_size: frames per encoder call.
        dtype: ``fp32`` or ``bf16`` (autocast; outputs are returned as float32).
    """
    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"dtype must be fp32 or bf16, got {dtype!r}")
    device = torch.device(device)
    tubelet = encoder.config.tubelet_size
    out = []
    autocast = precision.autocast(device, dtype)
    for start in range(0, len(frames), batch_size):
        images = preprocess_frames(frames[start:start + batch_size], img_size).to(device)
        clip = images.unsqueeze(2).expand(-1, -1, tubelet, -1, -1)  # (b, 3, tubelet, H, W): one tubelet per frame
        with autocast:
            out.append(encoder(clip).float().cpu())
    return torch.cat(out)


def encoder_fingerprint(encoder: VisionEncoder, img_size: int) -> str:
    """Hex digest of the encoder's config, weights and the preprocessing (16 characters)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": FORMAT, "img_size": img_size,
                              "config": dataclasses.asdict(encoder.config)}, sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def trajectory_key(name: str, source: str, fps: float | None, streams: Streams = Streams()) -> str:
    """File-name-safe key: the trajectory's name plus a digest of its source, the fps and the streams."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "trajectory"
    if split_episode_source(source) is None:
        source = str(Path(source).resolve())
    digest = hashlib.sha1(f"{source}|{fps}|{streams}".encode()).hexdigest()[:10]
    return f"{safe}-{digest}"


@dataclass
class TrajectoryFeatures:
    """Cached trajectories ready for AC training: one safetensors file each (see the module docstring)."""

    files: list[Path]
    skipped: list[Skipped]
    directory: Path
    fingerprint: str


def read_features(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> dict[str, torch.Tensor]:
    """Steps ``[start, stop)`` of a cached trajectory: ``features (T, N, D)``, ``states (T, S)``,
    ``actions (T-1, A)`` (the actions between those steps), ``extra.*``. Reads only that window."""
    out = {}
    with safe_open(str(path), framework="pt") as f:
        length = f.get_slice("states").get_shape()[0]
        stop = length if stop is None else stop
        if not 0 <= start < stop <= length:
            raise ValueError(f"{path}: window [{start}, {stop}) is outside its {length} steps")
        for key in f.keys():
            end = stop - 1 if key == "actions" else stop
            out[key] = f.get_slice(key)[start:end]
    return out


def feature_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of a cached trajectory (``source``, ``signature``, ``fps``, ``grid``, ``length``...)."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["vjepa2"])


def read_cached_source(path: str | os.PathLike) -> Trajectory:
    """The trajectory a cached feature file was encoded from (same source, fps and streams)."""
    meta = feature_metadata(path)
    return read_source(meta["source"], fps=meta.get("fps"), streams=Streams(**meta.get("streams", {})))


def _save_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"vjepa2": json.dumps(metadata)})


def build_feature_cache(root: str | os.PathLike, encoder: VisionEncoder, cache_dir: str | os.PathLike, *,
                        img_size: int, fps: float | None = None, min_steps: int = 2,
                        convention: Convention = "auto", batch_size: int = 32, dtype: str = "fp32",
                        store_dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                        progress: bool = True, encoder_info: dict | None = None,
                        streams: Streams = Streams(), widths: tuple[int, int] | None = None) -> TrajectoryFeatures:
    """Encode every trajectory under ``root`` not cached yet (or changed since) into ``cache_dir``.

    ``root`` is a folder of trajectories or a LeRobot dataset (:mod:`vjepa2.data.trajectories.sources`); a
    trajectory that cannot be read is skipped and listed with the reason, never fatal.

    Trajectories with fewer than ``min_steps`` frames at ``fps`` are skipped and listed in the
    result (``TrajectoryFeatures.skipped``) with the reason.

    Args:
        encoder: the frozen encoder (put in eval mode here).
        img_size: encoder input side in pixels.
        fps: resample trajectories to this rate first (None: recorded rate).
        store_dtype: dtype of the stored features (float16/bfloat16 halve the disk use).
        encoder_info: extra JSON stored with each file (e.g. how to rebuild the encoder).
        streams: camera / state / action streams of LeRobot datasets (and the DROID camera).
        widths: ``(action width, state width)`` a trajectory must have (a world model's), checked
            before it is encoded; None: the widths most trajectories share (the others are skipped).
    """
    encoder = encoder.eval().to(device)
    fingerprint = encoder_fingerprint(encoder, img_size)
    directory = Path(cache_dir) / fingerprint
    directory.mkdir(parents=True, exist_ok=True)
    files, skipped = [], []
    sources = find_sources(root, streams)
    for entry in progress_bar(sources, desc="encoding trajectories", unit="traj", disable=not progress):
        path = entry.source
        target = directory / f"{trajectory_key(entry.name, path, fps, streams)}.safetensors"
        try:
            signature = source_signature(path)
        except (TrajectoryError, OSError, ValueError) as err:
            skipped.append(Skipped(Path(path), f"unreadable: {str(err).splitlines()[0][:300]}"))
            continue
        if target.is_file():
            try:
                meta = feature_metadata(target)
            except Exception:  # unreadable (e.g. truncated by a full disk): rebuild it
                meta = {}
            if meta.get("signature") == signature:
                if not _skip_width(path, cached_widths(target), widths, skipped):
                    files.append(target)
                continue
        try:
            traj = read_source(path, fps=fps, convention=convention, streams=streams)
        except (TrajectoryError, VideoReadError, OSError, ValueError) as err:  # one bad episode never stops a run
            skipped.append(Skipped(Path(path), f"unreadable: {str(err).splitlines()[0][:300]}"))
            continue
        if len(traj) < min_steps:
            at = f" at {fps} fps" if fps else ""
            skipped.append(Skipped(Path(path), f"{len(traj)} steps{at} < {min_steps} needed"))
            continue
        if _skip_width(path, (traj.actions.shape[-1], traj.states.shape[-1]), widths, skipped):
            continue
        features = encode_frames(encoder, traj.frames, img_size, batch_size=batch_size, dtype=dtype, device=device)
        _save_atomic(target, _tensors(traj, features.to(store_dtype)), {
            "format": FORMAT, "source": _resolved(path), "streams": dataclasses.asdict(streams), "name": traj.name,
            "signature": signature,
            "fps": traj.fps, "length": len(traj), "grid": _grid(encoder, img_size), "img_size": img_size,
            "encoder_fingerprint": fingerprint, "encoder": encoder_info or {}, "meta": traj.meta})
        files.append(target)
    if widths is None and files:
        found = {f: cached_widths(f) for f in files}
        common = Counter(found.values()).most_common(1)[0][0]
        files = [f for f in files if found[f] == common
                 or not _skip_width(feature_metadata(f).get("source", f), found[f], common, skipped,
                                    "most trajectories'")]
    return TrajectoryFeatures(files=files, skipped=skipped, directory=directory, fingerprint=fingerprint)


def cached_widths(path: str | os.PathLike) -> tuple[int, int]:
    """``(action width, state width)`` of a cached trajectory (read from the file's header)."""
    with safe_open(str(path), framework="pt") as f:
        return f.get_slice("actions").get_shape()[-1], f.get_slice("states").get_shape()[-1]


def _skip_width(path, found: tuple[int, int], wanted: tuple[int, int] | None, skipped: list[Skipped],
                whose: str = "the world model's") -> bool:
    """Add ``path`` to ``skipped`` (and return True) if its widths ``found`` differ from ``wanted``."""
    if wanted is None or tuple(found) == tuple(wanted):
        return False
    skipped.append(Skipped(Path(path), f"{found[0]}-D actions and {found[1]}-D states, but {whose} are "
                                       f"{wanted[0]}-D and {wanted[1]}-D"))
    return True


def _resolved(source: str) -> str:
    return source if split_episode_source(source) is not None else str(Path(source).resolve())


def _grid(encoder: VisionEncoder, img_size: int) -> list[int]:
    side = img_size // encoder.config.patch_size
    return [side, side]


def _tensors(traj: Trajectory, features: torch.Tensor) -> dict[str, torch.Tensor]:
    tensors = {"features": features, "states": torch.from_numpy(np.ascontiguousarray(traj.states, np.float32)),
               "actions": torch.from_numpy(np.ascontiguousarray(traj.actions, np.float32))}
    for name, value in traj.extras.items():
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.number):
            tensors[f"extra.{name}"] = torch.from_numpy(np.ascontiguousarray(array, np.float32))
    return tensors
