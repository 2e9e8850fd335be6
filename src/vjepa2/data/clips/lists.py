"""Where the videos are: path-label list files, plain folders, and weighted mixtures of them.

List files (the public release's format). One sample per line::

    /data/k400/abseiling/0001.mp4 0
    clips/my holiday video.mp4 17

* The line is split at its **last** run of whitespace: everything before is the path (so paths may
  contain spaces; the public format, which splits at every space, reads the same files the same
  way when their paths have none), the last field is an integer label.
* Leading/trailing whitespace is ignored; blank lines and lines starting with ``#`` are skipped.
* A relative path is relative to the directory holding the list file; ``~`` is expanded.
* Files are not opened or even checked for existence here: a missing file is found (and skipped)
  when the loader reads it, so listing millions of videos stays cheap.

Folders. Every video or image file below the folder (extensions of
:data:`vjepa2.data.clips.video.VIDEO_EXTENSIONS` / ``IMAGE_EXTENSIONS``, hidden files skipped, sorted by
path) is a sample. Its label is the index of its first-level sub-folder in the sorted list of
sub-folders (``classes``); files directly in the folder get the class ``""``, which sorts first. A
folder without sub-folders is therefore one class, label 0. Folders inside it that a training run
wrote (:func:`vjepa2.files.is_run_folder`) are left out, and named.

Mixtures. Several sources with weights ``w_i``: a draw picks source ``i`` with probability
``w_i / sum(w)``, then a sample of it uniformly, i.e. each sample of source ``i`` has weight
``w_i / len(source_i)`` (the public release's rule). Sampling is with replacement.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vjepa2.errors import InputError
from vjepa2.data.clips.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_videos
from vjepa2.files import is_run_folder


class ListError(InputError):
    """A list file, folder or mixture is malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class VideoEntry:
    """One sample: a file, its integer label, and where it was listed (``list.txt:12`` or the folder)."""

    path: str
    label: int
    origin: str


@dataclass(frozen=True)
class VideoSource:
    """The samples of one list file or folder.

    Attributes:
        name: the list file or folder, as given.
        entries: the samples, in file order (lists) or path order (folders).
        classes: for folders, the class name of each label; None for list files.
        skipped_runs: for folders, the run folders inside it whose files were left out (a
            training run's plots and logs are not data).
    """

    name: str
    entries: tuple[VideoEntry, ...]
    classes: tuple[str, ...] | None = None
    skipped_runs: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> VideoEntry:
        return self.entries[index]


def parse_list_line(line: str) -> tuple[str, int] | None:
    """``"path with spaces 3"`` -> ``("path with spaces", 3)``; None for blank/comment lines.

    Raises:
        ValueError: the line has no label or the label is not an integer (message says why).
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.rsplit(maxsplit=1)
    if len(parts) != 2:
        raise ValueError(f"expected 'path label' (label an integer), got {text!r}")
    path, label = parts
    try:
        return path, int(label)
    except ValueError:
        raise ValueError(f"the label {label!r} is not an integer (line: {text!r}); lines are "
                         "'path label' with the label last") from None


def read_list(path: str | os.PathLike) -> VideoSource:
    """Read a path-label list file (format in the module docstring).

    Raises:
        ListError: the file is missing or unreadable, a line is malformed (``file:line: reason``),
            or the file lists no samples.
    """
    list_path = Path(path).expanduser()
    if not list_path.is_file():
        raise ListError(f"list file {list_path} does not exist" if not list_path.exists()
                        else f"{list_path} is not a file (give a path-label list file, or use a folder source)")
    base = list_path.parent
    entries = []
    try:
        with open(list_path, encoding="utf-8-sig") as handle:  # -sig: a BOM written by some editors is not a path
            for number, line in enumerate(handle, start=1):
                try:
                    parsed = parse_list_line(line)
                except ValueError as err:
                    raise ListError(f"{list_path}:{number}: {err}") from None
                if parsed is None:
                    continue
                file, label = parsed
                file_path = Path(file).expanduser()
                if not file_path.is_absolute():
                    file_path = base / file_path
                entries.append(VideoEntry(str(file_path), label, f"{list_path}:{number}"))
    except UnicodeDecodeError as err:
        raise ListError(f"{list_path}: not a UTF-8 text list file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ListError(f"{list_path}: cannot read the list file ({err.strerror})") from None
    if not entries:
        raise ListError(f"list file {list_path} lists no samples (expected lines 'path label')")
    return VideoSource(str(path), tuple(entries))


def read_folder(path: str | os.PathLike) -> VideoSource:
    """All video/image files below ``path``, labelled by first-level sub-folder (see module docstring).

    Raises:
        ListError: the folder is missing or holds no video/image files.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ListError(f"folder {root} does not exist" if not root.exists() else f"{root} is not a folder")
    known = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
    loose = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in known)
    groups: list[tuple[str, list[Path]]] = [("", loose)] if loose else []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = list_videos([sub], recursive=True)
        if files:
            groups.append((sub.name, files))
    runs = _run_folders_below(root, [file for _, files in groups for file in files])
    groups = [(name, kept) for name, files in groups
              if (kept := [f for f in files if not any(run in f.parents for run in runs)])]
    if not groups:
        raise ListError(f"folder {root} holds no video or image files (known extensions: "
                        f"{', '.join(sorted(known))})" + (f"; skipped the run folders {', '.join(map(str, runs))}"
                                                         if runs else ""))
    entries = tuple(VideoEntry(str(file), label, str(root))
                    for label, (_, files) in enumerate(groups) for file in files)
    return VideoSource(str(path), entries, tuple(name for name, _ in groups), tuple(str(r) for r in runs))


def _run_folders_below(root: Path, files: list[Path]) -> list[Path]:
    """The folders between ``root`` and ``files`` that a training run wrote (their plots are not data)."""
    checked: dict[Path, bool] = {}
    for file in files:
        for folder in file.parents:
            if folder == root or root not in folder.parents:
                break
            if folder not in checked:
                checked[folder] = is_run_folder(folder)
    return sorted(folder for folder, is_run in checked.items() if is_run)


def read_video_source(path: str | os.PathLike, kind: str = "auto") -> VideoSource:
    """A list file (``kind="list"``), a folder (``"folder"``), or whichever ``path`` is (``"auto"``)."""
    if kind == "auto":
        kind = "folder" if Path(path).expanduser().is_dir() else "list"
    if kind == "list":
        return read_list(path)
    if kind == "folder":
        return read_folder(path)
    raise ListError(f"source kind {kind!r} is not one of 'auto', 'list', 'folder'")


def _size(source) -> int | None:
    """Number of samples of a source; None for an unbounded one (e.g. an endless synthetic stream)."""
    try:
        return len(source)
    except TypeError:
        return None


class Mixture:
    """Weighted mixture of sources; sample ``j`` of source ``i`` has weight ``w_i / len(source_i)``.

    A source is anything indexable with a length (a :class:`VideoSource`; a bounded
    :class:`vjepa2.data.clips.synthetic.SyntheticVideos`) or unbounded (``len()`` raises ``TypeError``:
    its index is drawn from ``[0, 2**62)``).

    ``Mixture([read_list("k710.txt"), read_list("ssv2.txt")], [0.335, 0.1]).sample(rng)``
    """

    def __init__(self, sources: Sequence, weights: Sequence[float] | None = None,
                 names: Sequence[str] | None = None) -> None:
        sources = list(sources)
        weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
        names = [getattr(s, "name", f"source {i}") for i, s in enumerate(sources)] if names is None else list(names)
        if not sources:
            raise ListError("a mixture needs at least one source")
        if len(weights) != len(sources) or len(names) != len(sources):
            raise ListError(f"got {len(weights)} weights and {len(names)} names for {len(sources)} sources")
        self.sizes = [_size(s) for s in sources]
        for name, size, weight in zip(names, self.sizes, weights):
            if not (math.isfinite(weight) and weight >= 0):
                raise ListError(f"{name}: weight must be a finite number >= 0, got {weight}")
            if size == 0:
                raise ListError(f"{name}: the source has no samples")
        total = sum(weights)
        if total <= 0:
            raise ListError("the mixture weights sum to 0; give at least one source a positive weight")
        self.sources, self.names = sources, names
        self.probabilities = np.asarray(weights) / total          # (num_sources,)
        self._cumulative = np.cumsum(self.probabilities)

    def __len__(self) -> int:
        if None in self.sizes:
            raise TypeError("the mixture holds an unbounded source")
        return sum(self.sizes)

    def sample_weight(self, source_index: int) -> float:
        """Probability of drawing one given sample of source ``source_index`` (0 if unbounded)."""
        size = self.sizes[source_index]
        return 0.0 if size is None else float(self.probabilities[source_index] / size)

    def sample(self, rng: np.random.Generator) -> tuple[int, object]:
        """Draw ``(source_index, sample)`` with the mixture's weights (two draws from ``rng``)."""
        u = float(rng.random())
        # side="right" never lands on a zero-weight source; the clamp and the loop only matter
        # when rounding leaves the last cumulative value just below 1.
        source_index = min(int(np.searchsorted(self._cumulative, u, side="right")), len(self.sources) - 1)
        while self.probabilities[source_index] == 0:
            source_index -= 1
        size = self.sizes[source_index]
        index = int(rng.integers(2**62 if size is None else size))
        return source_index, self.sources[source_index][index]


__all__ = ["ListError", "Mixture", "VideoEntry", "VideoSource", "parse_list_line", "read_folder", "read_list",
           "read_video_source"]
