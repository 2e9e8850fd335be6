"""Video question answering data: ``(video, question, answer)`` items over a set of videos.

Two sources, one shape (:class:`QAData`: the videos as :class:`~vjepa2.evals.data.LabelledVideos`, so
that their frozen-encoder features are computed and cached like a probe's, and the items that point
into them):

``toy-vqa`` (built in)
    The toy-SSv2 clips (:mod:`vjepa2.evals.toy`: a main object moving one of 12 ways, each class the
    exact time reversal of another, on varied backgrounds with 0-2 static distractors), two questions
    per clip. A *temporal* one, ``"what is the red star doing?"`` -> ``"moving left"`` (12 answers;
    a single frame, or the unordered set of frames, is distributed the same for a motion and its
    reversal, so only the order of frames answers it), and a *single-frame* one, cycling over
    ``"what shape is the red object?"`` -> ``"star"``, ``"what colour is the star?"`` -> ``"red"`` and
    ``"how many objects are there?"`` -> ``"two"``. The split (``train`` / ``val``) and ``toy.seed``
    fix every clip and question.
JSON lines (your data)
    One ``{"video": PATH, "question": TEXT, "answer": TEXT}`` object per line (optional ``"kind"``:
    a label the evaluation groups accuracies by); relative paths are read from the file's folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vjepa2.config import ConfigError
from vjepa2.data.clips.synthetic import Scene
from vjepa2.evals.data import EvalDataError, LabelledVideos, ToyVideos, file_stats
from vjepa2.evals.toy import TOY_SSV2_CLASSES, ToyConfig, ToyTask

TOY_VQA = "toy-vqa"
TEMPORAL, SINGLE_FRAME = "temporal", "single-frame"
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")


@dataclass(frozen=True)
class QAItem:
    """One question about video ``video`` (an index into :attr:`QAData.videos`)."""

    video: int
    question: str
    answer: str
    kind: str = ""


@dataclass
class QAData:
    """Videos and the questions asked about them."""

    videos: LabelledVideos
    items: list[QAItem]

    def kinds(self) -> list[str]:
        """The item kinds, in order of first appearance."""
        return list(dict.fromkeys(item.kind for item in self.items))


def normalise_answer(text: str) -> str:
    """What exact match compares: lower case, single spaces, no surrounding punctuation."""
    return " ".join(text.lower().replace("?", " ").replace(".", " ").replace(",", " ").split())


# ------------------------------------------------------------------------------------------------
# toy-vqa
# ------------------------------------------------------------------------------------------------


def toy_vqa_questions(scene: Scene, motion_class: int, index: int) -> list[QAItem]:
    """The temporal and the single-frame question about toy-SSv2 clip ``index`` (``scene``, class
    ``motion_class``)."""
    main = scene.main_object()
    visible = [o for o in scene.objects if o.role != "occluder"]
    temporal = QAItem(index, f"what is the {main.colour} {main.shape} doing?", TOY_SSV2_CLASSES[motion_class],
                      TEMPORAL)
    shape_unique = sum(o.shape == main.shape for o in visible) == 1
    covered = any(o.role == "occluder" for o in scene.objects)  # the occluder would make counting ambiguous
    options = [("shape", True), ("colour", shape_unique), ("count", not covered)]
    kind = options[(index // len(TOY_SSV2_CLASSES)) % len(options)]
    if not kind[1]:
        kind = options[0]
    if kind[0] == "shape":
        single = QAItem(index, f"what shape is the {main.colour} object?", main.shape, SINGLE_FRAME)
    elif kind[0] == "colour":
        single = QAItem(index, f"what colour is the {main.shape}?", main.colour, SINGLE_FRAME)
    else:
        single = QAItem(index, "how many objects are there?", NUMBER_WORDS[len(visible)], SINGLE_FRAME)
    return [temporal, single]


def toy_vqa(split: str, config: ToyConfig | None = None) -> QAData:
    """The ``split`` of toy-vqa: ``config.train_size`` / ``val_size`` clips, two questions each."""
    task = ToyTask("toy-ssv2", split, config)
    items = [item for i in range(len(task)) for item in toy_vqa_questions(task.scene(i), task.label(i), i)]
    return QAData(ToyVideos(task), items)


# ------------------------------------------------------------------------------------------------
# JSON lines
# ------------------------------------------------------------------------------------------------


class VideoFiles:
    """Video files as :class:`~vjepa2.evals.data.LabelledVideos` without labels (a short video is
    padded by repeating its last frame)."""

    def __init__(self, paths: list[str], name: str) -> None:
        self.paths, self.name = paths, name
        self.head_classes = (("-",),)

    def __len__(self) -> int:
        return len(self.paths)

    def labels(self, index: int) -> tuple[int, ...]:
        return (0,)

    def origin(self, index: int) -> str:
        return self.paths[index]

    def segments(self, index: int, frames: int, size: int, fps: float | None, num_segments: int) -> list[np.ndarray]:
        from vjepa2.data.clips.video import VideoReadError, read_segments

        try:
            clips = read_segments(self.paths[index], frames=frames, fps=fps, num_segments=num_segments)
        except VideoReadError as err:
            raise EvalDataError(f"{self.name}: cannot read {self.paths[index]}: {err.reason}") from None
        return [clip.numpy() for clip, _ in clips]

    def identity(self) -> dict:
        return {"kind": "files", "paths": self.paths, "stats": file_stats(self.paths)}


def read_qa_jsonl(path: str | os.PathLike) -> QAData:
    """The items of a JSON-lines file (see the module docstring); every line is checked first."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such question file (JSON lines: video, question, answer)")
    videos: dict[str, int] = {}
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalDataError(f"{path}:{number}: not JSON ({err.msg})") from None
        missing = [k for k in ("video", "question", "answer") if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            raise EvalDataError(f"{path}:{number}: needs non-empty text for {', '.join(missing)}")
        video = Path(row["video"]) if Path(row["video"]).is_absolute() else path.parent / row["video"]
        if not video.is_file():
            raise EvalDataError(f"{path}:{number}: video {video} does not exist")
        index = videos.setdefault(str(video), len(videos))
        items.append(QAItem(index, row["question"], row["answer"], str(row.get("kind", ""))))
    if not items:
        raise EvalDataError(f"{path}: no questions")
    return QAData(VideoFiles(list(videos), str(path)), items)


def open_qa_data(source: str, split: str, toy: ToyConfig) -> QAData:
    """``toy-vqa`` (its ``split``) or a JSON-lines file."""
    return toy_vqa(split, toy) if source == TOY_VQA else read_qa_jsonl(source)
