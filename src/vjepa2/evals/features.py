"""Frozen features of a labelled dataset: views, segments, the feature cache and the live path.

For every video ``i`` the probe sees ``V`` *views*, each the concatenation of the tokens of its
``S`` temporal segments: a ``(V, S * N, D)`` tensor (``N`` tokens per segment).

- Evaluation views: 1 centre crop (resize short side to ``size * 256 / 224``, centre crop), or
  ``views > 1`` spatial crops along the long side (:func:`vjepa2.data.clips.transforms.spatial_views`);
  the probe's softmax is averaged over them.
- Training views: view 0 is the evaluation centre crop, views ``1 .. train_views - 1`` are random
  resized crops (no flip by default: a mirror turns "moving left" into "moving right"), each a pure
  function of ``(seed, i, view)``. Caching several views per video is the training augmentation:
  every epoch draws one of them per sample.
- Input modes (baselines): ``image`` repeats the middle frame of each segment; ``shuffled`` permutes
  each segment's frames (seeded per video).

:func:`build_features` either computes everything once and writes a cache file (safetensors
written by :class:`vjepa2.embed.SafetensorsStreamWriter`, read back as one memory-mapped
``(num_videos, V, S * N, D)`` array), or returns :class:`LiveFeatures`, which runs the encoder for
each requested batch (the uncached path, same numbers).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from vjepa2.config import ConfigError
from vjepa2.progress import progress_bar
from vjepa2.data.clips.transforms import EvalTransform, TrainTransform, spatial_views
from vjepa2.embed import SafetensorsStreamWriter
from vjepa2.evals.data import LabelledVideos, labels_tensor

InputMode = Literal["video", "image", "shuffled"]
CACHE_FORMAT = "vjepa2-eval-features/1"
_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16}
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class ClipConfig:
    """What the probe sees of each video.

    Attributes:
        frames: frames per segment (a multiple of the encoder's tubelet size).
        size: crop size in pixels (a multiple of the patch size).
        fps: sampling rate for video files (None = every frame); ignored by built-in tasks.
        segments: temporal segments per video; their tokens are concatenated.
        views: spatial views per segment at evaluation (softmax averaged over views).
        train_views: cached training views per video (view 0 = the centre crop, others augmented).
        aug_scale / aug_ratio: random resized crop of the augmented training views.
        flip_prob: horizontal flip probability of augmented views (0: flips change motion labels).
        input: ``video``, or a baseline: ``image`` (middle frame repeated), ``shuffled`` (frames permuted).
        allow_short: pad videos shorter than a segment (repeat the last frame) instead of failing.
    """

    frames: int = 16
    size: int = 64
    fps: float | None = None
    segments: int = 1
    views: int = 1
    train_views: int = 2
    aug_scale: tuple[float, float] = (0.6, 1.0)
    aug_ratio: tuple[float, float] = (0.75, 1.35)
    flip_prob: float = 0.0
    input: InputMode = "video"
    allow_short: bool = False

    def validate(self) -> None:
        for key in ("frames", "size", "segments", "views", "train_views"):
            if getattr(self, key) < 1:
                raise ConfigError(f"clips.{key} must be >= 1, got {getattr(self, key)}")
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"clips.fps must be positive or null (every frame), got {self.fps}")
        if not 0 < self.aug_scale[0] <= self.aug_scale[1] <= 1:
            raise ConfigError(f"clips.aug_scale must satisfy 0 < min <= max <= 1, got {list(self.aug_scale)}")
        if not 0 < self.aug_ratio[0] <= self.aug_ratio[1]:
            raise ConfigError(f"clips.aug_ratio must satisfy 0 < min <= max, got {list(self.aug_ratio)}")
        if not 0 <= self.flip_prob <= 1:
            raise ConfigError(f"clips.flip_prob must be in [0, 1], got {self.flip_prob}")


def apply_input_mode(segments: list[np.ndarray], mode: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Baseline inputs: ``image`` repeats each segment's middle frame, ``shuffled`` permutes its frames."""
    if mode == "video":
        return segments
    if mode == "image":
        return [np.repeat(seg[len(seg) // 2][None], len(seg), axis=0) for seg in segments]
    if mode == "shuffled":
        return [seg[rng.permutation(len(seg))] for seg in segments]
    raise ConfigError(f"input mode {mode!r} is not one of video, image, shuffled")


def make_views(segments: list[np.ndarray], clips: ClipConfig, training: bool, seed: int, index: int,
               view: int | None = None) -> torch.Tensor:
    """Views of one video, ``(V, S, 3, T, size, size)`` float32 (``V = 1`` when ``view`` is given).

    ``segments`` are the raw uint8 ``(T, H, W, 3)`` segments (after :func:`apply_input_mode`).
    """
    if training:
        wanted = range(clips.train_views) if view is None else [view]
        centre = EvalTransform(clips.size)
        augment = TrainTransform(clips.size, clips.aug_scale, clips.aug_ratio, clips.flip_prob)
        out = []
        for v in wanted:
            if v == 0:
                out.append(torch.stack([centre(s) for s in segments]))
            else:
                rng = np.random.default_rng([seed, index, v])
                out.append(torch.stack([augment(s, rng) for s in segments]))
        return torch.stack(out)
    if clips.views == 1:
        return torch.stack([EvalTransform(clips.size)(s) for s in segments]).unsqueeze(0)
    per_segment = [spatial_views(s, clips.size, clips.views) for s in segments]  # S x (V, 3, T, h, w)
    out = torch.stack(per_segment, dim=1)
    return out if view is None else out[view:view + 1]


def raw_segments(dataset: LabelledVideos, index: int, clips: ClipConfig, seed: int) -> list[np.ndarray]:
    """The uint8 segments of video ``index`` after the input mode (shuffling seeded per video)."""
    segments = dataset.segments(index, clips.frames, clips.size, clips.fps, clips.segments)
    return apply_input_mode(segments, clips.input, np.random.default_rng([seed, index, 7919]))


class FeatureFunction(nn.Module):
    """Frozen clips -> tokens: ``(B, 3, T, H, W) -> (B, N, D)``; ``dim`` is ``D``.

    ``identity()`` describes the function (weights hash and settings) for cache keys.
    """

    dim: int

    def identity(self) -> dict:
        raise TypeError(f"{type(self).__name__} must describe itself for the feature cache")


def module_digest(*modules: nn.Module) -> str:
    """SHA-256 of the modules' parameters and buffers (names, shapes and bytes)."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            t = tensor.detach().to("cpu").contiguous()
            digest.update(str((t.dtype, tuple(t.shape))).encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class EncoderFeatures(FeatureFunction):
    """The frozen encoder's output tokens."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder.eval()
        self.dim = encoder.config.dim
        self._digest: str | None = None

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, N, D)`` (the clips in the encoder's dtype)."""
        return self.encoder(clips.to(next(self.encoder.parameters()).dtype))

    def identity(self) -> dict:
        self._digest = self._digest or module_digest(self.encoder)
        return {"kind": "encoder", "weights": self._digest, "config": dataclasses.asdict(self.encoder.config)}


def _device_of(module: nn.Module) -> torch.device:
    return next(iter(module.parameters()), torch.empty(0)).device


@torch.no_grad()  # not inference_mode: live features feed the probes' autograd graph
def encode_views(fn: FeatureFunction, views: torch.Tensor) -> torch.Tensor:
    """``(B, V, S, 3, T, H, W)`` views -> ``(B, V, S * N, D)`` float32 features on the CPU."""
    B, V, S = views.shape[:3]
    flat = views.flatten(0, 2).to(_device_of(fn))
    tokens = fn(flat).float().cpu()  # (B*V*S, N, D)
    return tokens.view(B, V, S * tokens.shape[1], tokens.shape[2])


class FeatureSet(abc.ABC):
    """Features of a split. ``get(indices, views)``: ``(B,)`` videos and ``(B,)`` view numbers ->
    ``(B, L, D)``; ``get(indices)`` -> all views ``(B, V, L, D)``. ``labels``: ``(num_videos, heads)``."""

    labels: torch.Tensor
    num_views: int

    def __len__(self) -> int:
        return self.labels.shape[0]

    @abc.abstractmethod
    def get(self, indices: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        """Features of videos ``indices`` (one view each, or all views)."""


class TensorFeatures(FeatureSet):
    """Features already in memory: ``features`` ``(num_videos, V, L, D)``, ``labels`` ``(num_videos, heads)``."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if features.ndim != 4 or labels.ndim != 2 or len(features) != len(labels):
            raise ValueError(f"expected features (num_videos, V, L, D) and labels (num_videos, heads), got "
                             f"{tuple(features.shape)} and {tuple(labels.shape)}")
        self.features, self.labels, self.num_views = features, labels.long(), features.shape[1]

    def get(self, indices: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        indices = torch.as_tensor(indices)
        return self.features[indices] if views is None else self.features[indices, torch.as_tensor(views)]


class WhitenedFeatures(FeatureSet):
    """``(x - mean) @ W``: another feature set PCA-whitened with statistics of a training set.

    Not the paper's protocol: a diagnostic. When a few directions hold most of the features'
    variance (partial dimensional collapse), the probe, which starts by layer-norming its tokens,
    barely sees the rest; whitening shows whether the information is there at all.
    """

    def __init__(self, base: FeatureSet, mean: torch.Tensor, whitening: torch.Tensor) -> None:
        self.base, self.mean, self.whitening = base, mean, whitening
        self.labels, self.num_views = base.labels, base.num_views

    @staticmethod
    def fit(train: FeatureSet, max_videos: int = 1024, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean (D,), W (D, D))`` from the tokens of view 0 of up to ``max_videos`` training videos."""
        idx = torch.arange(min(len(train), max_videos))
        tokens = train.get(idx, torch.zeros(len(idx), dtype=torch.long)).double()
        flat = tokens.reshape(-1, tokens.shape[-1])
        mean = flat.mean(dim=0)
        variances, directions = torch.linalg.eigh(torch.cov((flat - mean).T))
        return mean.float(), (directions / variances.clamp_min(eps).sqrt()).float()

    def get(self, indices: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        return (self.base.get(indices, views) - self.mean) @ self.whitening


class CachedFeatures(FeatureSet):
    """A cache file memory-mapped as ``(num_videos, V, L, D)``."""

    def __init__(self, path: str | os.PathLike, labels: torch.Tensor) -> None:
        self.path = Path(path)
        self.array, self.metadata = read_feature_cache(self.path)
        self.labels = labels
        self.num_views = self.array.shape[1]
        if self.array.shape[0] != len(labels):
            raise ValueError(f"{path}: the cache holds {self.array.shape[0]} videos but the dataset has {len(labels)}")

    def get(self, indices: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        if views is None:
            rows = self.array[idx]
        else:
            rows = self.array[idx, np.asarray(views, dtype=np.int64)]
        return torch.from_numpy(np.ascontiguousarray(rows)).float()


class LiveFeatures(FeatureSet):
    """The uncached path: every request decodes / renders the videos and runs the encoder."""

    def __init__(self, dataset: LabelledVideos, fn: FeatureFunction, clips: ClipConfig, training: bool,
                 seed: int) -> None:
        self.dataset, self.fn, self.clips, self.training, self.seed = dataset, fn, clips, training, seed
        self.labels = labels_tensor(dataset)
        self.num_views = clips.train_views if training else clips.views

    def get(self, indices: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        batch = []
        for k, i in enumerate(np.asarray(indices).tolist()):
            segments = raw_segments(self.dataset, i, self.clips, self.seed)
            view = None if views is None else int(views[k])
            batch.append(make_views(segments, self.clips, self.training, self.seed, i, view))
        out = encode_views(self.fn, torch.stack(batch))
        return out if views is None else out[:, 0]


def cache_key(dataset: LabelledVideos, fn: FeatureFunction, clips: ClipConfig, training: bool, seed: int,
              dtype: str) -> dict:
    """Everything the cached numbers depend on (a different key = a different file). The seed only
    where it changes them: augmented training views and shuffled frames (the centre-crop views of
    two seeds are the same numbers, so runs that differ only in seed share one file)."""
    seeded = clips.input == "shuffled" or (training and clips.train_views > 1)
    return {"format": CACHE_FORMAT, "dataset": dataset.identity(), "features": fn.identity(),
            "clips": dataclasses.asdict(clips), "training": training, "seed": seed if seeded else None,
            "dtype": dtype}


def cache_path(cache_dir: str | os.PathLike, dataset: LabelledVideos, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    name = dataset.name if key["dataset"].get("kind") == "toy" else Path(dataset.name).stem
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[-40:].strip("-") or "dataset"
    split = "train" if key["training"] else "eval"
    return Path(cache_dir) / f"{slug}-{split}-{digest}.safetensors"


def write_feature_cache(path: str | os.PathLike, dataset: LabelledVideos, fn: FeatureFunction, clips: ClipConfig,
                        training: bool, seed: int, key: dict, dtype: str = "float32", batch_clips: int = 16,
                        progress: bool = True, describe: str = "") -> Path:
    """Compute every video's views and write them as ``features/<i>`` tensors ``(V, L, D)`` (atomic)."""
    torch_dtype = _TORCH_DTYPES[dtype]
    clips_per_video = (clips.train_views if training else clips.views) * clips.segments
    per_batch = max(1, batch_clips // clips_per_video)
    with SafetensorsStreamWriter(path) as writer:
        bar = progress_bar(range(len(dataset)), desc=f"features {describe or dataset.name}", unit="video",
                           disable=not progress)
        pending: list[tuple[int, torch.Tensor]] = []

        def flush() -> None:
            out = encode_views(fn, torch.stack([v for _, v in pending]))
            for (i, _), features in zip(pending, out):
                writer.add(f"features/{i:08d}", features.to(torch_dtype))
            pending.clear()

        for i in bar:
            pending.append((i, make_views(raw_segments(dataset, i, clips, seed), clips, training, seed, i)))
            if len(pending) >= per_batch:
                flush()
        if pending:
            flush()
        writer.commit({"format": CACHE_FORMAT, "key": json.dumps(key, sort_keys=True, default=str),
                       "count": str(len(dataset))})
    return Path(path)


def read_feature_cache(path: str | os.PathLike) -> tuple[np.memmap, dict]:
    """Memory-map a cache file as ``(num_videos, V, L, D)`` and return it with its metadata.

    The ``features/<i>`` tensors were written one after the other, so their bytes form one
    contiguous array; this is checked against the safetensors header before mapping.
    """
    path = Path(path)
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    metadata = header.pop("__metadata__", {})
    if metadata.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path}: not a feature cache (format {metadata.get('format')!r})")
    names = sorted(k for k in header if k.startswith("features/"))
    if not names:
        raise ValueError(f"{path}: the cache holds no features")
    first = header[names[0]]
    shape, dtype = first["shape"], first["dtype"]
    stride = first["data_offsets"][1] - first["data_offsets"][0]
    for i, name in enumerate(names):
        entry = header[name]
        if (name != f"features/{i:08d}" or entry["shape"] != shape or entry["dtype"] != dtype
                or entry["data_offsets"][0] != first["data_offsets"][0] + i * stride):
            raise ValueError(f"{path}: feature tensors are not one contiguous array (at {name}); delete the file")
    array = np.memmap(path, dtype=_NUMPY_DTYPES[dtype], mode="r", offset=8 + header_len + first["data_offsets"][0],
                      shape=(len(names), *shape))
    return array, metadata


def build_features(dataset: LabelledVideos, fn: FeatureFunction, clips: ClipConfig, training: bool, seed: int,
                   cache_dir: str | os.PathLike | None, dtype: str = "float32", batch_clips: int = 16,
                   progress: bool = True, describe: str = "",
                   log: Callable[[str], None] | None = None) -> FeatureSet:
    """Features of ``dataset``: cached (computed once, reused while the key matches) or live
    (``cache_dir=None``)."""
    if cache_dir is None:
        return LiveFeatures(dataset, fn, clips, training, seed)
    if dtype not in _TORCH_DTYPES:
        raise ConfigError(f"cache dtype {dtype!r} is not one of {list(_TORCH_DTYPES)}")
    key = cache_key(dataset, fn, clips, training, seed, dtype)
    path = cache_path(cache_dir, dataset, key)
    reuse = False
    if path.is_file():
        try:
            _, metadata = read_feature_cache(path)
            reuse = json.loads(metadata.get("key", "null")) == json.loads(json.dumps(key, sort_keys=True, default=str))
        except (ValueError, OSError, KeyError, json.JSONDecodeError):
            reuse = False
    if reuse:
        if log:
            log(f"reusing cached features {path}")
    else:
        write_feature_cache(path, dataset, fn, clips, training, seed, key, dtype, batch_clips, progress, describe)
    return CachedFeatures(path, labels_tensor(dataset))
