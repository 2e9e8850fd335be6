"""Labelled videos for frozen evaluation: list files / folders, or a built-in task.

Both kinds answer the same questions: how many videos (``len``), the labels of video ``i`` (one int
per probe head), where it came from (``origin(i)``: ``list.txt:12`` or ``toy-ssv2/train#12``), and
its raw frames: ``segments(i, frames, size, fps, num_segments)`` -> ``num_segments`` uint8 clips
``(T, H, W, 3)``.

Errors name the list file and line: a label outside the class set, a file that cannot be decoded,
a video shorter than one segment (unless ``allow_short``, which pads by repeating the last frame).
Nothing is skipped: a bad sample stops the run, so every reported accuracy is over the full list.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
import torch

from vjepa2.errors import InputError
from vjepa2.data.clips.lists import ListError, VideoSource, read_video_source
from vjepa2.data.clips.transforms import EVAL_RESIZE_RATIO
from vjepa2.data.clips.video import VideoReadError, read_segments
from vjepa2.evals.toy import ToyTask


class EvalDataError(InputError):
    """A labelled evaluation sample is unusable; the message names the file and line."""


class LabelledVideos(Protocol):
    """What the feature extractor needs from a dataset."""

    name: str
    head_classes: tuple[tuple[str, ...], ...]

    def __len__(self) -> int: ...

    def labels(self, index: int) -> tuple[int, ...]: ...

    def origin(self, index: int) -> str: ...

    def segments(self, index: int, frames: int, size: int, fps: float | None,
                 num_segments: int) -> list[np.ndarray]: ...

    def identity(self) -> dict: ...


def file_stats(paths) -> list[tuple[int, int] | None]:
    """``(size, modification time in ns)`` of each file (None where it cannot be read): part of a
    file-backed dataset's identity, so that cached features follow edits to the files."""
    stats = []
    for path in paths:
        try:
            st = os.stat(path)
            stats.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append(None)
    return stats


class ListVideos:
    """Videos of a path-label list file (or a labelled folder), single-head classification.

    Args:
        path: list file (``path label`` lines) or folder (labels = sub-folders).
        num_classes: size of the class set; labels must lie in ``[0, num_classes)``. None = one more
            than the largest label of this list (give the training list's count for the val list).
        class_names: optional names (a folder's sub-folders are used by default).
        allow_short: pad videos shorter than one segment instead of refusing them.
    """

    def __init__(self, path: str | os.PathLike, num_classes: int | None = None,
                 class_names: tuple[str, ...] | None = None, allow_short: bool = False) -> None:
        self.source: VideoSource = read_video_source(path)
        self.name = str(path)
        labels = [e.label for e in self.source.entries]
        num_classes = num_classes if num_classes is not None else max(labels) + 1
        for entry in self.source.entries:
            if not 0 <= entry.label < num_classes:
                raise EvalDataError(
                    f"{entry.origin}: label {entry.label} is outside the class set 0..{num_classes - 1} "
                    f"({num_classes} classes, set by the training list or --num-classes); fix the label or "
                    f"raise --num-classes")
        if class_names and self.source.classes and tuple(self.source.classes) != tuple(class_names):
            raise EvalDataError(f"{path}: its class folders {list(self.source.classes)} differ from the training "
                                f"classes {list(class_names)}; give both splits the same sub-folders")
        names = class_names or self.source.classes or tuple(str(c) for c in range(num_classes))
        if len(names) != num_classes:
            raise EvalDataError(f"{path}: {len(names)} class names for {num_classes} classes")
        self.head_classes = (tuple(names),)
        self.allow_short = allow_short

    def __len__(self) -> int:
        return len(self.source)

    def labels(self, index: int) -> tuple[int, ...]:
        return (self.source[index].label,)

    def origin(self, index: int) -> str:
        entry = self.source[index]
        # Folder entries have the folder as origin; name the file too.
        return entry.origin if entry.origin.rsplit(":", 1)[-1].isdigit() else f"{entry.origin}/{entry.path}"

    def segments(self, index: int, frames: int, size: int, fps: float | None,
                 num_segments: int) -> list[np.ndarray]:
        entry = self.source[index]
        try:
            clips = read_segments(entry.path, frames=frames, fps=fps, num_segments=num_segments)
        except VideoReadError as err:
            raise EvalDataError(f"{self.origin(index)}: cannot read {entry.path}: {err.reason}") from None
        info = clips[0][1]
        short = max(i.padded for _, i in clips)
        if short and not info.is_image and not self.allow_short:
            rate = f"{fps:g} fps" if fps else "every frame"
            raise EvalDataError(
                f"{self.origin(index)}: {entry.path} is shorter than one segment: {info.duration:.2f} s gives "
                f"{frames - short} of the {frames} frames ({rate}). Lower --frames / --fps, remove the line, "
                f"or pass --allow-short to pad by repeating the last frame")
        return [clip.numpy() for clip, _ in clips]

    def identity(self) -> dict:
        entries = [(e.path, e.label) for e in self.source.entries]
        return {"kind": "list", "name": self.name, "entries": entries, "stats": file_stats(p for p, _ in entries),
                "allow_short": self.allow_short}


class ToyVideos:
    """A built-in task split (:class:`vjepa2.evals.toy.ToyTask`) as labelled videos.

    Clips are rendered at ``size * 256 / 224`` so that the evaluation resize + centre crop is a
    plain crop; segments are consecutive stretches of one longer render.
    """

    def __init__(self, task: ToyTask) -> None:
        self.task = task
        self.name = task.origin(0).split("#")[0]
        self.head_classes = task.head_classes

    def __len__(self) -> int:
        return len(self.task)

    def labels(self, index: int) -> tuple[int, ...]:
        label = self.task.label(index)
        return tuple(label) if isinstance(label, tuple) else (label,)

    def origin(self, index: int) -> str:
        return self.task.origin(index)

    def segments(self, index: int, frames: int, size: int, fps: float | None,
                 num_segments: int) -> list[np.ndarray]:
        clip = self.task.render(index, frames * num_segments, int(size * EVAL_RESIZE_RATIO))
        return [clip[s * frames:(s + 1) * frames] for s in range(num_segments)]

    def identity(self) -> dict:
        import dataclasses

        return {"kind": "toy", "task": self.task.name, "split": self.task.split,
                "config": dataclasses.asdict(self.task.config)}


def labels_tensor(dataset: LabelledVideos) -> torch.Tensor:
    """``(len(dataset), heads)`` int64 labels."""
    return torch.tensor([dataset.labels(i) for i in range(len(dataset))], dtype=torch.int64).view(len(dataset), -1)


def open_lists(train: str, val: str, num_classes: int | None = None, allow_short: bool = False,
               class_names: tuple[str, ...] | None = None) -> tuple[ListVideos, ListVideos]:
    """Train and val list files with one class set: the training list's (or ``num_classes``)."""
    try:
        train_set = ListVideos(train, num_classes=num_classes, class_names=class_names, allow_short=allow_short)
        classes = train_set.head_classes[0]
        val_set = ListVideos(val, num_classes=len(classes), class_names=classes, allow_short=allow_short)
    except ListError as err:
        raise EvalDataError(str(err)) from None
    return train_set, val_set
