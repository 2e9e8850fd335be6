"""The pretraining data pipeline: sources -> clips -> augmentation -> masks -> batches.

``build_pretrain_loader(data_cfg, mask_cfg, frames=16, size=256, batch_size=B, seed=s,
start_step=k)`` is an endless iterator of :class:`PretrainBatch`. Its batch for step ``k`` is a
pure function of ``(seed, k, rank, world_size, configs)``; nothing depends on iterator state:

* Step ``k`` has a global batch of ``B * world_size`` *slots* numbered
  ``k * B * world_size + j``; rank ``r`` takes ``j`` in ``[r * B, (r + 1) * B)``. So a
  2-process run sees exactly the clips of a 1-process run with batch ``2B``, and a run resumed at
  step ``k`` sees the batches an uninterrupted run would have.
* Slot ``g``'s sample (which source and file, clip start, crop, flip) is drawn from
  ``numpy.random.default_rng([seed, DATA_STREAM, g, attempt])``. A file that cannot be used
  (missing, vanished since listing, empty, corrupt, too short) is reported in
  :attr:`PretrainBatch.skipped` and the slot tries again with ``attempt + 1``: a deterministic
  replacement. After ``data.max_read_attempts`` failures for one slot the loader raises
  :class:`DataError` listing the failures (e.g. when every listed file is broken).
* Masks come from :func:`vjepa2.masking.step_masks`, keyed by ``(seed, k, slot)``, so a slot's
  masks do not depend on which process builds them either. Equal-count truncation runs over the
  local batch (public release; 1- and 2-process runs then may keep different numbers of tokens)
  unless ``mask.equalize = "global_batch"``, which equalises over the whole global batch and makes
  the masks identical under any process layout.

Batches are built whole inside ``torch.utils.data.DataLoader`` workers (``data.num_workers``; 0 =
in the calling process). Each batch's content depends only on its step number, so the worker
count changes speed, never results.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vjepa2.errors import InputError
from vjepa2.config import ConfigError
from vjepa2.data.clips.lists import Mixture, VideoEntry, read_video_source
from vjepa2.data.clips.synthetic import BACKGROUNDS, MOTIONS, Scene, SyntheticVideos, render
from vjepa2.data.clips.transforms import TrainTransform
from vjepa2.data.clips.video import read_clip
from vjepa2.masking import MaskConfig, step_masks

#: Random-stream tag of the per-slot data draws (kept apart from the mask streams).
DATA_STREAM = 0xDA7A


class DataError(InputError, RuntimeError):
    """The loader cannot produce a sample: every attempt for one slot failed."""


@dataclass(frozen=True)
class SourceConfig:
    """One source of training clips.

    Attributes:
        kind: ``"synthetic"`` (the embedded generator, options in ``data.synthetic``; no path),
            ``"list"`` (a path-label list file), ``"folder"`` (a folder of videos/images), or
            ``"auto"`` (``"folder"`` if ``path`` is a directory, else ``"list"``).
        path: the list file or folder (relative to the working directory).
        weight: mixture weight; each sample of the source has weight ``weight / len(source)``.
    """

    kind: Literal["auto", "list", "folder", "synthetic"] = "auto"
    path: str = ""
    weight: float = 1.0

    def validate(self) -> None:
        if self.kind == "synthetic" and self.path:
            raise ValueError(f"a synthetic source takes no path (got path={self.path!r})")
        if self.kind != "synthetic" and not self.path:
            raise ValueError(f"kind={self.kind!r} needs a path (a list file or folder); use kind: synthetic "
                             "for the embedded generator")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"weight must be a finite number >= 0, got {self.weight}")


@dataclass(frozen=True)
class SyntheticConfig:
    """Options of the embedded generator (:mod:`vjepa2.data.clips.synthetic`).

    Attributes:
        seed: scene seed: scene ``i`` is a pure function of ``(seed, i)`` (independent of the run seed,
            so runs with different seeds can share one fixed synthetic dataset).
        num_videos: distinct scenes; 0 = unbounded (every sample a fresh scene).
        num_objects: ``(min, max)`` moving objects per scene.
        occluder_prob: probability that an occluder crosses the main object.
        motions / backgrounds: the motion kinds and background kinds to draw from.
        render_size: pixel size the scene is drawn at before the random resized crop;
            0 = the clip size.
    """

    seed: int = 0
    num_videos: int = 0
    num_objects: tuple[int, int] = (1, 3)
    occluder_prob: float = 0.25
    motions: tuple[str, ...] = MOTIONS
    backgrounds: tuple[str, ...] = BACKGROUNDS
    render_size: int = 0

    def validate(self) -> None:
        if self.num_videos < 0:
            raise ValueError(f"num_videos must be >= 0 (0 = unbounded), got {self.num_videos}")
        if not 0 <= self.num_objects[0] <= self.num_objects[1]:
            raise ValueError(f"num_objects must be (min, max) with 0 <= min <= max, got {self.num_objects}")
        if not 0 <= self.occluder_prob <= 1:
            raise ValueError(f"occluder_prob must be in [0, 1], got {self.occluder_prob}")
        for name, values, known in (("motions", self.motions, MOTIONS), ("backgrounds", self.backgrounds,
                                                                         BACKGROUNDS)):
            unknown = [v for v in values if v not in known]
            if not values or unknown:
                raise ValueError(f"{name} must be a non-empty subset of {list(known)}, got {list(values)}")
        if self.render_size < 0:
            raise ValueError(f"render_size must be >= 0 (0 = the clip size), got {self.render_size}")

    def videos(self) -> SyntheticVideos:
        return SyntheticVideos(self.seed, self.num_videos or None, num_objects=tuple(self.num_objects),
                               motions=tuple(self.motions), occluder_prob=self.occluder_prob,
                               backgrounds=tuple(self.backgrounds))


@dataclass(frozen=True)
class AugmentConfig:
    """Pretraining augmentation (one box for all frames of a clip, as in arXiv 2506.09985).

    Attributes:
        crop_scale: random resized crop area, as a fraction of the frame.
        crop_aspect: crop width / height (log-uniform).
        flip: probability of a horizontal flip.
    """

    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_aspect: tuple[float, float] = (0.75, 1.35)
    flip: float = 0.5

    def validate(self) -> None:
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if not 0 < self.crop_aspect[0] <= self.crop_aspect[1]:
            raise ValueError(f"crop_aspect must satisfy 0 < min <= max, got {self.crop_aspect}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip must be a probability in [0, 1], got {self.flip}")


@dataclass(frozen=True)
class DataConfig:
    """The ``data:`` section of a pretraining config.

    Attributes:
        sources: what to train on, mixed by weight (default: the embedded synthetic generator).
        synthetic: options of the synthetic source.
        fps: frames per second clips are sampled at from real videos (frame step = video fps / fps);
            None = consecutive frames. Synthetic clips always span their whole scene.
        augment: random resized crop and flip.
        pad_short_videos: a video shorter than a clip is padded by repeating its last frame;
            if False (default) it is skipped and reported as too short.
        num_workers: DataLoader worker processes (0 = build batches in the training process).
        prefetch_batches: batches each worker prepares ahead (with ``num_workers > 0``).
        pin_memory: page-lock batches for faster host-to-GPU copies.
        max_read_attempts: failed files tolerated for one sample before the run stops.
    """

    sources: tuple[SourceConfig, ...] = (SourceConfig(kind="synthetic"),)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    fps: float | None = 4.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pad_short_videos: bool = False
    num_workers: int = 0
    prefetch_batches: int = 2
    pin_memory: bool = False
    max_read_attempts: int = 64

    def validate(self) -> None:
        if not self.sources:
            raise ConfigError("data.sources is empty; give at least one source (kind: synthetic, or a "
                              "list file / folder path)")
        for i, source in enumerate(self.sources):
            try:
                source.validate()
            except ValueError as err:
                raise ConfigError(f"data.sources[{i}]: {err}") from None
        if sum(1 for s in self.sources if s.kind == "synthetic") > 1:
            raise ConfigError("data.sources: at most one synthetic source (its options are in data.synthetic)")
        if sum(s.weight for s in self.sources) <= 0:
            raise ConfigError("data.sources: the weights sum to 0; give one source a positive weight")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ConfigError(f"data.fps must be > 0, or null for consecutive frames; got {self.fps}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.prefetch_batches < 1:
            raise ConfigError(f"data.prefetch_batches must be >= 1, got {self.prefetch_batches}")
        if self.max_read_attempts < 1:
            raise ConfigError(f"data.max_read_attempts must be >= 1, got {self.max_read_attempts}")


@dataclass
class PretrainBatch:
    """One process's batch of one step.

    Attributes:
        step: the optimiser step this batch belongs to.
        clips: ``(B, 3, T, H, W)`` float32, ImageNet-normalised.
        masks: per mask generator, ``(context_idx (B, Nc), target_idx (B, Nt))`` int64 token indices.
        skipped: ``(path, reason)`` of every file that failed while building this batch.
        slots: the global sample slot of each clip, ``(B,)`` (see the module docstring).
        labels: ``(B,)`` int64 label from the list file / folder (-1 for synthetic clips).
    """

    step: int
    clips: torch.Tensor
    masks: list[tuple[torch.Tensor, torch.Tensor]]
    skipped: list[tuple[str, str]]
    slots: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def pin_memory(self) -> "PretrainBatch":
        """Called by the DataLoader when ``pin_memory`` is on."""
        return PretrainBatch(self.step, self.clips.pin_memory(),
                             [(c.pin_memory(), t.pin_memory()) for c, t in self.masks], self.skipped,
                             None if self.slots is None else self.slots.pin_memory(),
                             None if self.labels is None else self.labels.pin_memory())


def build_sources(data: DataConfig, say=None) -> Mixture:
    """The weighted mixture of ``data.sources`` (list files are read here, once); ``say`` (e.g.
    ``print``) is told of run folders left out of a folder source.

    Raises:
        ConfigError: a list file or folder is missing or malformed (message names it and the line).
    """
    sources, names = [], []
    for i, source in enumerate(data.sources):
        if source.kind == "synthetic":
            sources.append(data.synthetic.videos())
            names.append("synthetic")
            continue
        try:
            sources.append(read_video_source(source.path, source.kind))
        except ValueError as err:
            raise ConfigError(f"data.sources[{i}]: {err}") from None
        for run in sources[-1].skipped_runs if say else ():
            say(f"data.sources[{i}]: left out {run}: a training run's folder, not data")
        names.append(source.path)
    return Mixture(sources, [s.weight for s in data.sources], names)


class PretrainDataset(Dataset):
    """Map-style dataset whose item ``k`` is the whole :class:`PretrainBatch` of step ``k`` for one rank."""

    def __init__(self, data: DataConfig, mask: MaskConfig, mixture: Mixture, *, frames: int, size: int,
                 batch_size: int, seed: int, patch_size: int, tubelet_size: int, rank: int,
                 world_size: int) -> None:
        self.data, self.mask, self.mixture = data, mask, mixture
        self.frames, self.size, self.batch_size, self.seed = frames, size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.grid = (frames // tubelet_size, size // patch_size, size // patch_size)
        augment = data.augment
        self.transform = TrainTransform(size, augment.crop_scale, augment.crop_aspect, augment.flip)
        self.render_size = data.synthetic.render_size or size

    def slots(self, step: int) -> tuple[list[int], list[int]]:
        """``(this rank's slots, the global batch's slots)`` of ``step``."""
        per_step = self.batch_size * self.world_size
        first = step * per_step
        global_ids = list(range(first, first + per_step))
        return global_ids[self.rank * self.batch_size:(self.rank + 1) * self.batch_size], global_ids

    def read_slot(self, slot: int) -> tuple[torch.Tensor, int, list[tuple[str, str]]]:
        """Clip ``(3, T, H, W)``, label and skipped files of one slot; raises :class:`DataError`."""
        skipped: list[tuple[str, str]] = []
        for attempt in range(self.data.max_read_attempts):
            rng = np.random.default_rng([self.seed, DATA_STREAM, slot, attempt])
            _, item = self.mixture.sample(rng)
            if isinstance(item, Scene):
                frames = render(item, self.frames, self.render_size)
                return self.transform(torch.from_numpy(frames), rng), -1, skipped
            entry: VideoEntry = item
            try:
                frames, info = read_clip(entry.path, self.frames, self.data.fps, generator=rng)
                if info.padded and not info.is_image and not self.data.pad_short_videos:
                    rate = f"{self.data.fps:g} fps" if self.data.fps else "every frame"
                    raise _TooShort(f"too short: {info.duration:.2f}s gives {self.frames - info.padded} of the "
                                    f"{self.frames} frames needed at {rate}")
                return self.transform(frames, rng), entry.label, skipped
            except Exception as err:  # noqa: BLE001 -- one bad file must never stop a run
                skipped.append((entry.path, _reason(err)))
        listed = "; ".join(f"{path}: {reason}" for path, reason in skipped[-5:])
        raise DataError(f"{len(skipped)} attempts to read a clip for sample slot {slot} all failed "
                        f"(data.max_read_attempts={self.data.max_read_attempts}); last failures: {listed}. "
                        f"Check the files of {', '.join(self.mixture.names)}.")

    def __getitem__(self, step: int) -> PretrainBatch:
        local, global_ids = self.slots(step)
        clips, labels, skipped = [], [], []
        with _single_threaded():
            for slot in local:
                clip, label, failed = self.read_slot(slot)
                clips.append(clip)
                labels.append(label)
                skipped.extend(failed)
            clips = torch.stack(clips)
        masks = step_masks(self.grid, self.mask, seed=self.seed, step=step, sample_ids=local,
                           global_ids=global_ids)
        return PretrainBatch(step=step, clips=clips, masks=masks, skipped=skipped,
                             slots=torch.tensor(local, dtype=torch.int64),
                             labels=torch.tensor(labels, dtype=torch.int64))


@contextlib.contextmanager
def _single_threaded():
    """Run per-clip tensor work on one thread (as DataLoader workers do anyway).

    With ``num_workers = 0`` batches are built in the training process, whose intra-op thread pool
    is sized for the model; on a busy machine the small per-clip operations then spend most of
    their time synchronising threads (10x slower measured on 2 shared cores).
    """
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


class _TooShort(Exception):
    pass


def _reason(err: Exception) -> str:
    """Why a file failed, without repeating its path."""
    reason = getattr(err, "reason", None)
    if isinstance(reason, str):
        return reason
    if isinstance(err, _TooShort):
        return str(err)
    return f"{type(err).__name__}: {err}"


class _Steps(Sampler):
    """``start, start + 1, ...`` forever."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        step = self.start
        while True:
            yield step
            step += 1


def _identity(batch: PretrainBatch) -> PretrainBatch:
    return batch


def _seed_worker(worker_id: int) -> None:
    # Batches only use explicitly seeded generators; this makes any library-level randomness
    # in a worker (e.g. inside a decoder) repeatable as well.
    info = torch.utils.data.get_worker_info()
    seed = int(info.seed % 2**32) if info is not None else worker_id
    random.seed(seed)
    np.random.seed(seed)
    # Ctrl-C reaches the whole process group: the training process finishes its step and checkpoints
    # (vjepa2.engine.interrupt), then stops the workers; a worker dying first would fail that step.
    # (SIGTERM stays: DataLoader stops a stuck worker with it.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PretrainLoader:
    """Endless iterator of :class:`PretrainBatch` (steps ``start_step``, ``start_step + 1``, ...).

    ``next(loader)``; ``loader.close()`` stops its worker processes. ``loader.dataset`` builds any
    step's batch directly (``loader.dataset[k]``), which is what the iterator returns at step ``k``.
    """

    def __init__(self, dataset: PretrainDataset, start_step: int, data: DataConfig, seed: int) -> None:
        self.dataset = dataset
        self.next_step = start_step
        workers = data.num_workers
        generator = torch.Generator().manual_seed(seed)  # fixes the workers' base seed
        self._loader = DataLoader(dataset, batch_size=None, sampler=_Steps(start_step), num_workers=workers,
                                  collate_fn=_identity, pin_memory=data.pin_memory, worker_init_fn=_seed_worker,
                                  generator=generator, persistent_workers=False,
                                  prefetch_factor=data.prefetch_batches if workers else None)
        self._iterator = None

    def __iter__(self) -> "PretrainLoader":
        return self

    def __next__(self) -> PretrainBatch:
        if self._iterator is None:
            self._iterator = iter(self._loader)
        batch = next(self._iterator)
        if batch.step != self.next_step:  # guards the in-order delivery the determinism relies on
            raise RuntimeError(f"data loader returned step {batch.step}, expected {self.next_step}")
        self.next_step += 1
        return batch

    def close(self) -> None:
        """Stop the worker processes (also done when the loader is garbage-collected)."""
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def describe(self) -> list[str]:
        """One line per source: name, size and weight, for the run log."""
        mixture = self.dataset.mixture
        lines = []
        for name, size, prob in zip(mixture.names, mixture.sizes, mixture.probabilities):
            lines.append(f"{name}: {'unbounded' if size is None else f'{size} samples'}, weight {prob:.3f}")
        return lines


def build_pretrain_loader(data: DataConfig, mask: MaskConfig, *, frames: int, size: int, batch_size: int,
                          seed: int, start_step: int, patch_size: int = 16, tubelet_size: int = 2,
                          rank: int = 0, world_size: int = 1) -> PretrainLoader:
    """The endless pretraining batch iterator (see the module docstring for its guarantees).

    Args:
        data / mask: the ``data:`` and ``mask:`` config sections.
        frames / size: clip length ``T`` and side ``H = W`` in pixels (multiples of the tubelet and
            patch sizes).
        batch_size: clips per process ``B``; the global batch is ``B * world_size``.
        seed: the run seed; with ``start_step`` it fixes every batch.
        start_step: the step of the first batch (resume = the step to continue from).
        rank / world_size: this process's share of the global batch.

    Returns:
        A :class:`PretrainLoader`; ``next()`` gives :class:`PretrainBatch` es with
        ``clips (B, 3, T, size, size)`` and masks on the ``(T / tubelet, size / patch, size / patch)`` grid.
    """
    problems = [f"{name}={value} is not a positive multiple of {unit}"
                for name, value, unit in (("frames", frames, tubelet_size), ("size", size, patch_size))
                if value < unit or value % unit]
    if problems:
        raise ValueError("clip shape does not tile into tubelets: " + "; ".join(problems))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    data.validate()
    mask.validate()
    dataset = PretrainDataset(data, mask, build_sources(data), frames=frames, size=size, batch_size=batch_size,
                              seed=seed, patch_size=patch_size, tubelet_size=tubelet_size, rank=rank,
                              world_size=world_size)
    return PretrainLoader(dataset, start_step, data, seed)


__all__ = ["AugmentConfig", "DATA_STREAM", "DataConfig", "DataError", "PretrainBatch", "PretrainDataset",
           "PretrainLoader", "SourceConfig", "SyntheticConfig", "build_pretrain_loader", "build_sources"]
