"""Action anticipation with the frozen encoder *and* the pretrained predictor (arXiv 2506.09985, action anticipation).

The observed clip is encoded to ``N = T' * H' * W'`` tokens. The predictor then extrapolates the
tokens of ``future_tubelets`` tubelets that start ``offset_tubelets`` tubelets after the clip: its
context is every observed token (indices ``0 .. N-1``), its targets are the token positions
``N + offset * H'W' + (0 .. future * H'W' - 1)`` of a longer token grid. The probe (three queries:
verb, noun, action; focal loss) reads the observed tokens and the predicted ones concatenated.
The metric is class-mean recall@5 (of the action head for model selection); the command returns a
:class:`~vjepa2.evals.probe.ProbeReport`.

EPIC-KITCHENS-100: :func:`read_ek100_csv` reads the public annotation CSVs
(``EPIC_100_train.csv`` / ``EPIC_100_validation.csv``), :func:`ek100_label_space` fixes the
verb / noun / action classes from the training split, and :class:`EK100Videos` serves the
observation clip of every action: ``frames`` frames at ``fps`` ending ``anticipation_time``
seconds before the action starts (the standard anticipation protocol). Validation actions whose
(verb, noun) never occurs in training cannot be predicted by a classifier over training actions;
they are *counted and reported*, not silently dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vjepa2.config import ConfigError, from_dict, to_dict
from vjepa2.data.clips.video import VideoReadError, read_clip
from vjepa2.evals.data import EvalDataError, ToyVideos
from vjepa2.evals.features import ClipConfig, FeatureFunction, module_digest
from vjepa2.evals.probe import (GridConfig, ProbeReport, check_clip_geometry, fit_and_report,
                                load_frozen_encoder, resolve_device)
from vjepa2.evals.toy import ToyConfig, ToyTask
from vjepa2.files import check_output_dir
from vjepa2.models.predictor import Predictor
from vjepa2.models.attentive_probe import ProbeVariant, probe_config

HEAD_NAMES = ("verb", "noun", "action")


class AnticipationFeatures(FeatureFunction):
    """Observed tokens + predicted future tokens: ``(B, 3, T, H, W) -> (B, N + F * H'W', D)``.

    Args:
        encoder / predictor: the frozen pretrained pair.
        future_tubelets: how many tubelets of the future to predict (``F``).
        offset_tubelets: gap between the end of the clip and the first predicted tubelet.
        mask_index: which of the predictor's mask tokens marks the targets.
        use_predictor: False = the encoder's tokens only (ablation).
    """

    def __init__(self, encoder: torch.nn.Module, predictor: Predictor | None, future_tubelets: int = 1,
                 offset_tubelets: int = 0, mask_index: int = 1, use_predictor: bool = True) -> None:
        super().__init__()
        if use_predictor and predictor is None:
            raise ConfigError("use_predictor needs a predictor (a checkpoint that holds one)")
        if future_tubelets < 1 or offset_tubelets < 0:
            raise ConfigError(f"future_tubelets must be >= 1 and offset_tubelets >= 0, got {future_tubelets}, "
                              f"{offset_tubelets}")
        if predictor is not None and not 0 <= mask_index < len(predictor.mask_tokens):
            raise ConfigError(f"mask_index={mask_index} but the predictor has {len(predictor.mask_tokens)} mask tokens")
        self.encoder = encoder.eval()
        self.predictor = predictor.eval() if (predictor is not None and use_predictor) else None
        self.future, self.offset, self.mask_index = future_tubelets, offset_tubelets, mask_index
        self.dim = encoder.config.dim
        self._digest: str | None = None

    def future_indices(self, grid: tuple[int, int, int], batch: int, device) -> tuple[torch.Tensor, tuple]:
        """``(B, F * H'W')`` target indices and the extended grid ``(T' + offset + F, H', W')``."""
        t, h, w = grid
        first = (t + self.offset) * h * w
        targets = torch.arange(first, first + self.future * h * w, device=device)
        return targets.unsqueeze(0).expand(batch, -1), (t + self.offset + self.future, h, w)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, N (+ F * H'W'), D)``."""
        tokens = self.encoder(clips)
        if self.predictor is None:
            return tokens
        B, N, _ = tokens.shape
        context = torch.arange(N, device=tokens.device).unsqueeze(0).expand(B, -1)
        targets, grid = self.future_indices(self.encoder.grid(clips.shape), B, tokens.device)
        future = self.predictor(tokens, context, targets, mask_index=self.mask_index, grid=grid)
        return torch.cat([tokens, future], dim=1)

    def identity(self) -> dict:
        modules = [self.encoder] + ([self.predictor] if self.predictor is not None else [])
        self._digest = self._digest or module_digest(*modules)
        return {"kind": "anticipation", "weights": self._digest, "future": self.future, "offset": self.offset,
                "mask_index": self.mask_index, "predictor": self.predictor is not None,
                "encoder": dataclasses.asdict(self.encoder.config)}


# ------------------------------------------------------------------------------------------------
# EPIC-KITCHENS-100 annotations
# ------------------------------------------------------------------------------------------------

EK100_REQUIRED = ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp",
                  "verb_class", "noun_class")


@dataclass(frozen=True)
class EK100Action:
    """One annotated action of an EPIC-KITCHENS-100 CSV (times in seconds from the video start)."""

    narration_id: str
    participant_id: str
    video_id: str
    start: float
    stop: float
    verb_class: int
    noun_class: int
    verb: str
    noun: str
    origin: str


def parse_timestamp(text: str) -> float:
    """``"HH:MM:SS.fff"`` (or ``"MM:SS.fff"`` / seconds) -> seconds."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"timestamp {text!r} is not HH:MM:SS.fff")
    seconds = 0.0
    try:
        for part in parts:
            seconds = seconds * 60 + float(part)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not HH:MM:SS.fff") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"timestamp {text!r} is not a time >= 0")
    return seconds


def read_ek100_csv(path: str | os.PathLike) -> list[EK100Action]:
    """Read an EPIC-KITCHENS-100 annotation CSV (the public files' columns; extra columns ignored).

    Raises:
        EvalDataError: missing file or columns, a malformed row (``file:line: reason``), no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalDataError(f"annotation file {path} does not exist")
    actions = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in EK100_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise EvalDataError(f"{path}:1: missing column(s) {', '.join(missing)}; an EPIC-KITCHENS-100 CSV has "
                                f"{', '.join(EK100_REQUIRED)} (and narration, verb, noun, ...)")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            values = {}
            for column, parse in (("start_timestamp", parse_timestamp), ("stop_timestamp", parse_timestamp),
                                  ("verb_class", int), ("noun_class", int)):
                try:
                    values[column] = parse(row[column])
                except (ValueError, TypeError, AttributeError) as err:
                    raise EvalDataError(f"{where}: column {column}: {err}") from None
            start, stop = values["start_timestamp"], values["stop_timestamp"]
            verb_class, noun_class = values["verb_class"], values["noun_class"]
            if stop < start:
                raise EvalDataError(f"{where}: stop_timestamp {row['stop_timestamp']} is before start_timestamp "
                                    f"{row['start_timestamp']}")
            if verb_class < 0 or noun_class < 0:
                raise EvalDataError(f"{where}: class ids must be >= 0, got verb {verb_class}, noun {noun_class}")
            if not row["video_id"] or not row["participant_id"]:
                raise EvalDataError(f"{where}: empty video_id or participant_id")
            actions.append(EK100Action(row["narration_id"], row["participant_id"], row["video_id"], start, stop,
                                       verb_class, noun_class, row.get("verb") or str(verb_class),
                                       row.get("noun") or str(noun_class), where))
    if not actions:
        raise EvalDataError(f"annotation file {path} holds no actions")
    return actions


@dataclass(frozen=True)
class EK100LabelSpace:
    """Classes fixed by the training annotations (original class ids, sorted)."""

    verbs: tuple[int, ...]
    nouns: tuple[int, ...]
    actions: tuple[tuple[int, int], ...]
    verb_names: tuple[str, ...]
    noun_names: tuple[str, ...]

    def labels(self, action: EK100Action) -> tuple[int, int, int] | None:
        """``(verb, noun, action)`` indices, or None when the (verb, noun) pair is not a training action."""
        verb_index, noun_index, action_index = self._indices
        pair = (action.verb_class, action.noun_class)
        if pair not in action_index:
            return None
        return verb_index[action.verb_class], noun_index[action.noun_class], action_index[pair]

    @functools.cached_property
    def _indices(self) -> tuple[dict, dict, dict]:
        # Built once: EPIC-KITCHENS has ~3800 actions and ~67k training samples.
        return ({v: i for i, v in enumerate(self.verbs)}, {n: i for i, n in enumerate(self.nouns)},
                {a: i for i, a in enumerate(self.actions)})


def ek100_label_space(train: list[EK100Action]) -> EK100LabelSpace:
    """Verb, noun and action classes that occur in the training annotations."""
    verbs = sorted({a.verb_class for a in train})
    nouns = sorted({a.noun_class for a in train})
    verb_name = {a.verb_class: a.verb for a in train}
    noun_name = {a.noun_class: a.noun for a in train}
    return EK100LabelSpace(tuple(verbs), tuple(nouns), tuple(sorted({(a.verb_class, a.noun_class) for a in train})),
                           tuple(verb_name[v] for v in verbs), tuple(noun_name[n] for n in nouns))


class EK100Videos:
    """The observation clips of EPIC-KITCHENS-100 actions (a :class:`~vjepa2.evals.data.LabelledVideos`).

    Args:
        actions: annotations (all must be in ``space``; see :func:`split_by_label_space`).
        space: the training label space.
        root: video directory: ``root/<participant>/<video_id>.MP4`` (``layout="flat"``) or
            ``root/<participant>/videos/<video_id>.MP4`` (``layout="videos"``).
        anticipation_time: seconds between the end of the observed clip and the action start.
        name: a name for messages and cache keys.
    """

    def __init__(self, actions: list[EK100Action], space: EK100LabelSpace, root: str | os.PathLike,
                 anticipation_time: float = 1.0, layout: Literal["flat", "videos"] = "flat",
                 name: str = "ek100") -> None:
        self.actions, self.space, self.root = actions, space, Path(root)
        self.anticipation_time, self.layout, self.name = anticipation_time, layout, name
        for action in actions:
            if space.labels(action) is None:
                raise EvalDataError(f"{action.origin}: (verb {action.verb_class}, noun {action.noun_class}) is not "
                                    f"a training action")
        self.head_classes = (space.verb_names, space.noun_names,
                             tuple(f"{space.verb_names[space.verbs.index(v)]} / "
                                   f"{space.noun_names[space.nouns.index(n)]}" for v, n in space.actions))

    def __len__(self) -> int:
        return len(self.actions)

    def labels(self, index: int) -> tuple[int, ...]:
        return self.space.labels(self.actions[index])

    def origin(self, index: int) -> str:
        return self.actions[index].origin

    def video_path(self, action: EK100Action) -> Path:
        folder = self.root / action.participant_id
        if self.layout == "videos":
            folder = folder / "videos"
        return folder / f"{action.video_id}.MP4"

    def observation_start(self, index: int, frames: int, fps: float) -> float:
        """Start (s) of the observed clip: it ends ``anticipation_time`` before the action; clamped at 0."""
        end = self.actions[index].start - self.anticipation_time
        return max(0.0, end - frames / fps)

    def segments(self, index: int, frames: int, size: int, fps: float | None, num_segments: int) -> list[np.ndarray]:
        if fps is None:
            raise ConfigError("EPIC-KITCHENS anticipation needs clips.fps (e.g. 8): the clip is placed in time")
        if num_segments != 1:
            raise ConfigError("anticipation observes one segment before the action: set clips.segments=1")
        action = self.actions[index]
        path = self.video_path(action)
        try:
            clip, _ = read_clip(path, frames=frames, fps=fps, start=self.observation_start(index, frames, fps))
        except (VideoReadError, ValueError) as err:
            reason = err.reason if isinstance(err, VideoReadError) else str(err)
            raise EvalDataError(f"{action.origin}: cannot read the observation clip from {path}: {reason}") from None
        return [clip.numpy()]

    def identity(self) -> dict:
        return {"kind": "ek100", "name": self.name, "root": str(self.root), "layout": self.layout,
                "anticipation_time": self.anticipation_time,
                "actions": [(a.video_id, a.start, a.verb_class, a.noun_class) for a in self.actions]}


def split_by_label_space(actions: list[EK100Action], space: EK100LabelSpace
                         ) -> tuple[list[EK100Action], list[EK100Action]]:
    """``(predictable, unseen)``: validation actions whose (verb, noun) is / is not a training action."""
    kept = [a for a in actions if space.labels(a) is not None]
    return kept, [a for a in actions if space.labels(a) is None]


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnticipationEvalConfig:
    """``vjepa2 eval anticipation``: encoder + predictor + a 3-query probe (verb, noun, action).

    Attributes:
        checkpoint: a pretraining checkpoint holding ``target_encoder`` and ``predictor``.
        random_init: same architectures with seeded random weights (baseline).
        dataset: ``toy-anticipation``, or null with ``ek100_train`` / ``ek100_val`` / ``videos``.
        ek100_train / ek100_val: EPIC-KITCHENS-100 annotation CSVs; ``videos``: their video root.
        ek100_layout: ``flat`` (``root/P01/P01_01.MP4``) or ``videos`` (``root/P01/videos/P01_01.MP4``).
        anticipation_time: seconds between the observed clip and the action (EPIC-KITCHENS only).
        future_tubelets / offset_tubelets / mask_index / use_predictor: see :class:`AnticipationFeatures`.
    """

    checkpoint: str = ""
    random_init: bool = False
    dataset: Literal["toy-anticipation"] | None = None
    ek100_train: str | None = None
    ek100_val: str | None = None
    videos: str | None = None
    ek100_layout: Literal["flat", "videos"] = "flat"
    anticipation_time: float = 1.0
    future_tubelets: int = 1
    offset_tubelets: int = 0
    mask_index: int = 1
    use_predictor: bool = True
    variant: ProbeVariant = "full"
    heads: int = 16
    clips: ClipConfig = field(default_factory=ClipConfig)
    grid: GridConfig = field(default_factory=lambda: GridConfig(loss="focal"))
    toy: ToyConfig = field(default_factory=ToyConfig)
    seed: int = 0
    cache_dir: str | None = "runs/feature-cache"
    cache_dtype: Literal["float32", "float16"] = "float32"
    encode_batch: int = 16
    device: Literal["auto", "cpu", "cuda"] = "auto"
    out: str = "runs/eval-anticipation"

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("--checkpoint is required: a pretraining checkpoint with target_encoder and predictor")
        ek = (self.ek100_train, self.ek100_val, self.videos)
        if self.dataset is None and not all(ek):
            raise ConfigError("give --dataset toy-anticipation, or --ek100-train CSV --ek100-val CSV --videos DIR")
        if self.dataset is not None and any(ek):
            raise ConfigError("--dataset toy-anticipation is built in: drop --ek100-train/--ek100-val/--videos")
        if self.dataset is None and self.toy != ToyConfig():
            raise ConfigError("toy.* settings are only read with --dataset toy-anticipation")
        if self.dataset is not None and (self.anticipation_time != 1.0 or self.ek100_layout != "flat"):
            raise ConfigError("anticipation_time / ek100_layout are only read with EPIC-KITCHENS data")
        if self.anticipation_time < 0:
            raise ConfigError(f"anticipation_time must be >= 0 seconds, got {self.anticipation_time}")


def load_predictor_pair(checkpoint: str, random_init: bool, seed: int):
    """``(encoder, predictor)`` of a pretraining checkpoint, frozen; random weights with ``random_init``."""
    from vjepa2.weights import WeightsError, load_predictor

    encoder = load_frozen_encoder(checkpoint, random_init, seed)
    try:
        predictor = load_predictor(checkpoint)
    except WeightsError as err:
        raise ConfigError(f"--checkpoint {checkpoint}: {err}") from None
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            predictor = Predictor(predictor.config)
    return encoder, predictor.eval().requires_grad_(False)


def run_anticipation_eval(cfg: AnticipationEvalConfig, progress: bool = True) -> ProbeReport:
    """The ``vjepa2 eval anticipation`` command; returns the report written to ``out/results.json``."""
    check_output_dir(cfg.out)
    device = resolve_device(cfg.device)
    unseen_actions: list[EK100Action] = []
    if cfg.dataset is not None:
        train_data = ToyVideos(ToyTask(cfg.dataset, "train", cfg.toy))
        val_data = ToyVideos(ToyTask(cfg.dataset, "val", cfg.toy))
    else:
        train_actions = read_ek100_csv(cfg.ek100_train)
        space = ek100_label_space(train_actions)
        val_actions, unseen_actions = split_by_label_space(read_ek100_csv(cfg.ek100_val), space)
        if not val_actions:
            raise EvalDataError(f"{cfg.ek100_val}: none of its actions occurs in {cfg.ek100_train}")
        train_data = EK100Videos(train_actions, space, cfg.videos, cfg.anticipation_time, cfg.ek100_layout,
                                 name=Path(cfg.ek100_train).stem)
        val_data = EK100Videos(val_actions, space, cfg.videos, cfg.anticipation_time, cfg.ek100_layout,
                               name=Path(cfg.ek100_val).stem)
    encoder, predictor = load_predictor_pair(cfg.checkpoint, cfg.random_init, cfg.seed)
    check_clip_geometry(cfg.clips, encoder.config)
    fn = AnticipationFeatures(encoder.to(device), predictor.to(device), cfg.future_tubelets, cfg.offset_tubelets,
                              cfg.mask_index, cfg.use_predictor)
    num_classes = tuple(len(c) for c in train_data.head_classes)
    report = fit_and_report(
        train_data=train_data, val_data=val_data, fn=fn, clips=cfg.clips,
        probe_cfg=probe_config(encoder.config.dim, num_classes, cfg.variant, heads=cfg.heads), grid=cfg.grid,
        seed=cfg.seed, cache_dir=cfg.cache_dir, cache_dtype=cfg.cache_dtype, encode_batch=cfg.encode_batch,
        out=cfg.out, head_names=HEAD_NAMES, selection=("recall@5", 2), settings=to_dict(cfg), device=device,
        progress=progress, describe=cfg.dataset or "ek100")
    if unseen_actions:
        report = count_unseen_actions(report, unseen_actions)
        report.write(Path(cfg.out) / "results.json")
    return report


def count_unseen_actions(report: ProbeReport, unseen_actions: list[EK100Action]) -> ProbeReport:
    """``report`` with the numbers that count the validation actions never seen in training.

    A probe over training actions cannot name an unseen one: its samples count as misses and its
    classes as classes of recall 0. Adds ``val.unseen_actions`` / ``val.unseen_action_classes`` and,
    on the best probe's action head, ``recall_at_5_with_unseen`` / ``top1_with_unseen`` (%), next to
    the numbers over the predictable samples.
    """
    action = report.best.heads["action"]
    present = [a for a in action.per_class_accuracy if a is not None]
    unseen_classes = len({(a.verb_class, a.noun_class) for a in unseen_actions})
    action = dataclasses.replace(
        action, recall_at_5_with_unseen=action.recall_at_5 * len(present) / (len(present) + unseen_classes),
        top1_with_unseen=action.top1 * action.count / (action.count + len(unseen_actions)))
    best = dataclasses.replace(report.best, heads={**report.best.heads, "action": action})
    val = dataclasses.replace(report.val, unseen_actions=len(unseen_actions), unseen_action_classes=unseen_classes)
    return dataclasses.replace(report, best=best, val=val)


def anticipation_eval_config(data: dict) -> AnticipationEvalConfig:
    """Typed config from plain data (YAML + overrides); errors name the key."""
    return from_dict(AnticipationEvalConfig, data)
