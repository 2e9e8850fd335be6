"""Attentive-probe training on frozen features: a grid of probes trained at once, then evaluated.

One step of the grid (all probes see the same batch of frozen features)::

    features (B, L, D) --probe_p--> logits_p --loss--> L_p         for every probe p of the grid
    sum_p L_p .backward()        # parameters are disjoint: probe p's gradient is dL_p/dtheta_p
    AdamW step, one parameter group per probe (and per decay / no-decay), each with its own
    learning rate (warm-up then cosine to 0) and weight decay; Adam moments are per parameter.

Every probe starts from the same initial weights (seeded), so the grid compares hyper-parameters
only. Evaluation averages each probe's class probabilities over the views of a video and reports
top-1 / top-5, per-class accuracy and the confusion matrix; the best probe of the grid (by
validation top-1, or class-mean recall@5 for anticipation) is reported with its hyper-parameters,
as in the paper. :func:`run_probe_eval` is the whole ``vjepa2 eval probe`` command.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from vjepa2.config import ConfigError, from_dict, to_dict
from vjepa2.evals.data import LabelledVideos, ToyVideos, open_lists
from vjepa2.evals.features import (ClipConfig, EncoderFeatures, FeatureFunction, FeatureSet, WhitenedFeatures,
                                   build_features)
from vjepa2.evals.metrics import classification_metrics, save_confusion_png
from vjepa2.evals.probe_weights import save_probes
from vjepa2.evals.toy import ToyConfig, ToyTask
from vjepa2.files import check_output_dir, write_json
from vjepa2.models.attentive_probe import AttentiveProbe, ProbeConfig, ProbeVariant, probe_config
from vjepa2.progress import progress_bar, progress_write
from vjepa2.weights import WeightsError, load_encoder

LossKind = Literal["cross_entropy", "focal"]


@dataclass(frozen=True)
class GridConfig:
    """The probes trained together and their optimisation.

    Attributes:
        lrs / weight_decays: the grid is every (lr, weight decay) pair (the paper: 5 x 4).
        epochs: passes over the training videos.
        warmup_epochs: linear warm-up from ``start_lr`` to each probe's lr, then cosine to 0.
        batch_size: videos per step (one cached view each).
        betas: AdamW betas.
        loss: ``cross_entropy`` (classification) or ``focal`` (sigmoid focal loss, anticipation).
        block_lr_scale: learning rate of the full probe's self-attention blocks as a fraction of the
            probe's lr (1 = the paper's single rate). At the high rates that a short CPU run needs
            for the cross-attention, the blocks' small initial weights get scrambled and the probe
            stops learning; 0.01 keeps them near their initial near-identity (docs/results.md).
    """

    lrs: tuple[float, ...] = (5e-3, 3e-3, 1e-3, 3e-4, 1e-4)
    weight_decays: tuple[float, ...] = (0.01, 0.1, 0.4, 0.8)
    epochs: int = 20
    warmup_epochs: float = 1.0
    start_lr: float = 0.0
    batch_size: int = 32
    betas: tuple[float, float] = (0.9, 0.999)
    loss: LossKind = "cross_entropy"
    block_lr_scale: float = 1.0

    def validate(self) -> None:
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise ConfigError(f"grid.lrs must be a non-empty list of positive numbers, got {list(self.lrs)}")
        if not self.weight_decays or any(wd < 0 for wd in self.weight_decays):
            raise ConfigError(f"grid.weight_decays must be a non-empty list of numbers >= 0, got "
                              f"{list(self.weight_decays)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"grid.epochs and grid.batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"grid.warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if self.start_lr < 0:
            raise ConfigError(f"grid.start_lr must be >= 0, got {self.start_lr}")
        if self.block_lr_scale < 0:
            raise ConfigError(f"grid.block_lr_scale must be >= 0, got {self.block_lr_scale}")

    @property
    def hparams(self) -> list[tuple[float, float]]:
        """``(lr, weight_decay)`` of each probe, lr-major."""
        return [(lr, wd) for lr in self.lrs for wd in self.weight_decays]


def scheduled_lr(step: int, total_steps: int, warmup_steps: int, peak: float, start: float = 0.0) -> float:
    """Linear warm-up ``start -> peak`` over ``warmup_steps``, then cosine ``peak -> 0`` at ``total_steps``."""
    if step < warmup_steps:
        return start + (peak - start) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def sigmoid_focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Focal loss on one-vs-all sigmoids (RetinaNet; the paper's anticipation loss).

    ``(B, C)`` logits, ``(B,)`` labels -> scalar: summed over classes, averaged over the batch.
    """
    targets = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_true = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * ce * (1 - p_true) ** gamma).sum(dim=1).mean()


def probe_loss(logits: list[torch.Tensor], labels: torch.Tensor, kind: LossKind) -> torch.Tensor:
    """Sum over heads of the loss of head ``h``'s ``(B, C_h)`` logits against ``labels[:, h]``."""
    if kind == "focal":
        return sum(sigmoid_focal_loss(out, labels[:, h]) for h, out in enumerate(logits))
    return sum(F.cross_entropy(out, labels[:, h]) for h, out in enumerate(logits))


def head_scores(logits: torch.Tensor, kind: LossKind) -> torch.Tensor:
    """Class scores to average over views: softmax (cross-entropy probes) or sigmoid (focal probes)."""
    return torch.sigmoid(logits) if kind == "focal" else logits.softmax(dim=-1)


class ProbeGrid:
    """``len(grid.hparams)`` probes with identical initial weights and one AdamW holding a group per
    probe (weights decay, biases / norms / 1-D parameters do not)."""

    def __init__(self, config: ProbeConfig, grid: GridConfig, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.config, self.grid, self.seed = config, grid, seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            base = AttentiveProbe(config)
        self.probes = [copy.deepcopy(base).to(device) for _ in grid.hparams]
        groups = []
        for probe, (lr, wd) in zip(self.probes, grid.hparams):
            blocks = list(probe.blocks.parameters())  # empty for the light probe
            in_blocks = {id(p) for p in blocks}
            others = [p for p in probe.parameters() if id(p) not in in_blocks]
            for params, peak in ((others, lr), (blocks, lr * grid.block_lr_scale)):
                decay = [p for p in params if p.ndim >= 2]
                no_decay = [p for p in params if p.ndim < 2]
                for group, group_wd in ((decay, wd), (no_decay, 0.0)):
                    if group:
                        groups.append({"params": group, "lr": peak, "weight_decay": group_wd, "peak_lr": peak})
        self.optimizer = torch.optim.AdamW(groups, betas=grid.betas)
        self.device = torch.device(device)
        self.train_losses: list[float] = [float("nan")] * len(self.probes)

    def train(self, features: FeatureSet, progress: bool = True, describe: str = "") -> list[float]:
        """Train every probe for ``grid.epochs`` on ``features``; returns each probe's mean loss
        over the last epoch."""
        grid, n = self.grid, len(features)
        steps_per_epoch = math.ceil(n / grid.batch_size)
        total = steps_per_epoch * grid.epochs
        warmup = round(grid.warmup_epochs * steps_per_epoch)
        generator = torch.Generator().manual_seed(self.seed)
        labels = features.labels
        step = 0
        for probe in self.probes:
            probe.train()
        bar = progress_bar(range(grid.epochs), desc=f"probes {describe}".strip(), unit="epoch",
                           disable=not progress)
        for _ in bar:
            order = torch.randperm(n, generator=generator)
            views = torch.randint(features.num_views, (n,), generator=generator)
            epoch_loss = torch.zeros(len(self.probes))
            for start in range(0, n, grid.batch_size):
                batch = order[start:start + grid.batch_size]
                x = features.get(batch, views[start:start + grid.batch_size]).to(self.device)
                y = labels[batch].to(self.device)
                for group in self.optimizer.param_groups:
                    group["lr"] = scheduled_lr(step, total, warmup, group["peak_lr"], grid.start_lr)
                losses = torch.stack([probe_loss(probe(x), y, grid.loss) for probe in self.probes])
                self.optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                self.optimizer.step()
                epoch_loss += losses.detach().cpu() * len(batch)
                step += 1
            epoch_loss /= n
            if not torch.isfinite(epoch_loss).all():
                bad = [self.grid.hparams[i] for i in range(len(self.probes)) if not math.isfinite(epoch_loss[i])]
                progress_write(f"warning: non-finite training loss for (lr, wd) = {bad}")
            bar.set_postfix_str(f"loss min {float(epoch_loss.nan_to_num(float('inf')).min()):.3f}", refresh=False)
        self.train_losses = epoch_loss.tolist()
        return self.train_losses

    @torch.no_grad()
    def scores(self, features: FeatureSet, batch_size: int = 64) -> list[list[torch.Tensor]]:
        """``scores[p][h]``: probe ``p``'s ``(num_videos, C_h)`` scores of head ``h``, averaged over views."""
        for probe in self.probes:
            probe.eval()
        out: list[list[list[torch.Tensor]]] = [[[] for _ in self.config.num_classes] for _ in self.probes]
        n = len(features)
        for start in range(0, n, batch_size):
            batch = torch.arange(start, min(n, start + batch_size))
            x = features.get(batch).to(self.device)  # (B, V, L, D)
            B, V = x.shape[:2]
            flat = x.flatten(0, 1)
            for p, probe in enumerate(self.probes):
                for h, logits in enumerate(probe(flat)):
                    out[p][h].append(head_scores(logits.float(), self.grid.loss).view(B, V, -1).mean(dim=1).cpu())
        return [[torch.cat(chunks) for chunks in per_head] for per_head in out]


# ------------------------------------------------------------------------------------------------
# The evaluation command
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeEvalConfig:
    """``vjepa2 eval probe``: frozen encoder + attentive probe grid on one labelled dataset.

    Attributes:
        encoder: checkpoint (``.pt``, ``target_encoder`` is used), ``transformers`` directory, or
            ``random:<size>`` (seeded random weights).
        random_init: keep the architecture of ``encoder`` but use seeded random weights (baseline).
        dataset: a built-in task (``toy-ssv2``, ``toy-appearance``) instead of list files.
        train / val: path-label list files or labelled folders.
        num_classes: class count for list files (default: from the training list's labels).
        classes: text file of class names for list files, one per line (line ``k`` names label ``k - 1``).
        variant: ``full`` (3 self-attention blocks + cross-attention) or ``light`` (cross-attention only).
        heads: attention heads of the probe.
        cache_dir: feature cache directory; null = the uncached path (encoder run at every step).
        cache_dtype: storage type of cached features (``float16`` halves the disk / memory).
        encode_batch: clips per encoder call while extracting features.
        device: ``auto`` = CUDA when available.
        whiten: PCA-whiten the features with training statistics before the probe. Not the paper's
            protocol: a diagnostic for encoders whose features concentrate on a few directions.
        out: output directory (``results.json``, ``confusion.png``, ``probes.pt``).
    """

    encoder: str = "random:tiny"
    random_init: bool = False
    dataset: Literal["toy-ssv2", "toy-appearance"] | None = None
    train: str | None = None
    val: str | None = None
    num_classes: int | None = None
    classes: str | None = None
    variant: ProbeVariant = "full"
    heads: int = 16
    clips: ClipConfig = field(default_factory=ClipConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    toy: ToyConfig = field(default_factory=ToyConfig)
    seed: int = 0
    cache_dir: str | None = "runs/feature-cache"
    cache_dtype: Literal["float32", "float16"] = "float32"
    encode_batch: int = 16
    device: Literal["auto", "cpu", "cuda"] = "auto"
    whiten: bool = False
    out: str = "runs/eval-probe"

    def validate(self) -> None:
        lists = self.train is not None or self.val is not None
        if self.dataset is None and not (self.train and self.val):
            raise ConfigError("give --train LIST and --val LIST, or --dataset toy-ssv2|toy-appearance")
        if self.dataset is not None and lists:
            raise ConfigError(f"--dataset {self.dataset} is built in: drop --train/--val (or drop --dataset)")
        if self.dataset is not None and (self.num_classes is not None or self.classes is not None):
            raise ConfigError("num_classes / classes are only read with --train/--val list files; built-in tasks "
                              "fix them")
        if self.dataset is None and self.toy != ToyConfig():
            raise ConfigError("toy.* settings are only read with --dataset toy-ssv2|toy-appearance")
        if self.encode_batch < 1:
            raise ConfigError(f"encode_batch must be >= 1, got {self.encode_batch}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no CUDA device is available")
    return torch.device(name)


def load_frozen_encoder(spec: str, random_init: bool = False, seed: int = 0):
    """The encoder ``spec`` names (:attr:`ProbeEvalConfig.encoder`, read by
    :func:`vjepa2.weights.load_encoder`); with ``random_init`` its architecture with seeded random
    weights. Eval mode, gradients off."""
    try:
        return load_encoder(spec, seed=seed, random_init=random_init).requires_grad_(False)
    except WeightsError as err:
        raise ConfigError(f"--encoder: {err}") from None


# ------------------------------------------------------------------------------------------------
# The report of a probe grid (what ``results.json`` holds)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadMetrics:
    """Validation metrics of one classification head of one probe (accuracies in percent).

    Attributes:
        count: validation videos scored (the denominator of every accuracy).
        top1: top-1 accuracy (%).
        k / top_k: top-``k`` accuracy (%), ``k = min(5, number of classes)``; JSON key ``top{k}``.
        mean_class_accuracy: mean over the classes with validation videos of their top-1 accuracy (%).
        recall_at_5: class-mean recall@5 (%), the anticipation metric; JSON key ``recall@5``.
        per_class_accuracy: top-1 accuracy (%) of each class, None for a class without validation videos.
            None in the rows of :attr:`ProbeReport.grid` (results.json keeps it for the best probe only).
        confusion: ``(C, C)`` counts, row = true class, column = predicted class; None like
            ``per_class_accuracy``.
        recall_at_5_with_unseen / top1_with_unseen: EPIC-KITCHENS anticipation only, on the action head
            of the best probe: recall@5 / top-1 (%) counting the validation actions never seen in
            training as misses (their classes as classes of recall 0). None otherwise.
    """

    count: int
    top1: float
    k: int
    top_k: float
    mean_class_accuracy: float
    recall_at_5: float
    per_class_accuracy: list[float | None] | None = None
    confusion: list[list[int]] | None = None
    recall_at_5_with_unseen: float | None = None
    top1_with_unseen: float | None = None

    @property
    def top5(self) -> float | None:
        """Top-5 accuracy (%); None for a head of fewer than 5 classes."""
        return self.top_k if self.k == 5 else None

    def summary(self) -> HeadMetrics:
        """The numbers of a grid row: without the per-class accuracies and the confusion matrix."""
        return HeadMetrics(self.count, self.top1, self.k, self.top_k, self.mean_class_accuracy, self.recall_at_5)

    def value(self, key: str) -> float:
        """A metric by its results.json key (``"top1"``, ``"recall@5"``, ...)."""
        return self.to_json()[key]

    def to_json(self) -> dict:
        """The results.json entry (keys in the order :func:`classification_metrics` gives them)."""
        data = {"count": self.count, "top1": self.top1, f"top{self.k}": self.top_k,
                "mean_class_accuracy": self.mean_class_accuracy, "recall@5": self.recall_at_5}
        optional = (("per_class_accuracy", self.per_class_accuracy), ("confusion", self.confusion),
                    ("recall@5_with_unseen", self.recall_at_5_with_unseen), ("top1_with_unseen", self.top1_with_unseen))
        data.update((key, value) for key, value in optional if value is not None)
        return data

    @classmethod
    def from_json(cls, data: dict) -> HeadMetrics:
        """From a results.json entry or the dict of :func:`classification_metrics`."""
        top_keys = [key for key in data if re.fullmatch(r"top\d+", key) and key != "top1"]
        k = int(top_keys[0][3:]) if top_keys else 1  # a one-class head has only "top1"
        return cls(data["count"], data["top1"], k, data[f"top{k}"], data["mean_class_accuracy"], data["recall@5"],
                   data.get("per_class_accuracy"), data.get("confusion"), data.get("recall@5_with_unseen"),
                   data.get("top1_with_unseen"))


@dataclass(frozen=True)
class GridPoint:
    """One probe of the grid: its hyper-parameters, training loss and validation metrics.

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW weight decay of the weight matrices.
        train_loss: mean training loss over the last epoch (NaN when training diverged).
        heads: head name (``"class"``, or ``"verb"`` / ``"noun"`` / ``"action"``) -> its metrics.
    """

    lr: float
    weight_decay: float
    train_loss: float
    heads: dict[str, HeadMetrics]

    def to_json(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay, "train_loss": self.train_loss,
                "heads": {name: m.to_json() for name, m in self.heads.items()}}

    @classmethod
    def from_json(cls, data: dict) -> GridPoint:
        return cls(data["lr"], data["weight_decay"], data["train_loss"],
                   {name: HeadMetrics.from_json(m) for name, m in data["heads"].items()})


@dataclass(frozen=True)
class SplitInfo:
    """A data split of the evaluation.

    Attributes:
        name: the dataset's name (built-in task, list file or annotation file stem).
        count: videos (samples) in the split.
        unseen_actions / unseen_action_classes: EPIC-KITCHENS validation only: actions whose (verb,
            noun) never occurs in training, and how many such (verb, noun) classes; they are not in
            ``count``. None otherwise.
    """

    name: str
    count: int
    unseen_actions: int | None = None
    unseen_action_classes: int | None = None

    def to_json(self) -> dict:
        data = {"name": self.name, "count": self.count}
        if self.unseen_actions is not None:
            data["unseen_actions"] = self.unseen_actions
        if self.unseen_action_classes is not None:
            data["unseen_action_classes"] = self.unseen_action_classes
        return data

    @classmethod
    def from_json(cls, data: dict) -> SplitInfo:
        return cls(data["name"], data["count"], data.get("unseen_actions"), data.get("unseen_action_classes"))


@dataclass(frozen=True)
class ProbeReport:
    """What a probe evaluation found: returned by :func:`fit_and_report` and written as ``results.json``.

    Attributes:
        settings: the command's settings (JSON-ready), recorded as given.
        train / val: the two splits.
        classes: head name -> its class names (label ``i`` is ``classes[head][i]``).
        selection: how the best probe was chosen, in words (e.g. ``"top1 of head 'class' on the
            validation set"``).
        best_index: position of the best probe in :attr:`grid`.
        best_score: its value of the selection metric (%).
        best: the best probe with every metric (per-class accuracies and confusion matrices included).
        grid: every probe, lr-major (``GridConfig.hparams`` order), with summary metrics.
        seconds: wall-clock time of the evaluation (features, training, metrics).
    """

    settings: dict
    train: SplitInfo
    val: SplitInfo
    classes: dict[str, list[str]]
    selection: str
    best_index: int
    best_score: float
    best: GridPoint
    grid: list[GridPoint]
    seconds: float

    def to_json(self) -> dict:
        """The content of ``results.json``."""
        best = {"index": self.best_index, "lr": self.best.lr, "weight_decay": self.best.weight_decay,
                "train_loss": self.best.train_loss, "score": self.best_score,
                "heads": {name: m.to_json() for name, m in self.best.heads.items()}}
        return {"settings": self.settings, "train": self.train.to_json(), "val": self.val.to_json(),
                "classes": self.classes, "selection": self.selection, "best": best,
                "grid": [point.to_json() for point in self.grid], "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict) -> ProbeReport:
        """From the content of a ``results.json``."""
        best = data["best"]
        return cls(data["settings"], SplitInfo.from_json(data["train"]), SplitInfo.from_json(data["val"]),
                   data["classes"], data["selection"], best["index"], best["score"], GridPoint.from_json(best),
                   [GridPoint.from_json(point) for point in data["grid"]], data["seconds"])

    @classmethod
    def read(cls, path: str | os.PathLike) -> ProbeReport:
        """Read a ``results.json`` written by :func:`fit_and_report`."""
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    def write(self, path: str | os.PathLike) -> Path:
        """Write ``results.json`` (atomically)."""
        return write_json(self.to_json(), path)


def grid_points(scores: list[list[torch.Tensor]], labels: torch.Tensor, grid: GridConfig, train_losses: list[float],
                head_names: tuple[str, ...]) -> list[GridPoint]:
    """Every probe's validation metrics (full, per-class included) from its ``scores[p][h]``
    ``(N, C_h)`` and the ``(N, heads)`` labels."""
    return [GridPoint(lr, wd, train_losses[p],
                      {name: HeadMetrics.from_json(classification_metrics(scores[p][h], labels[:, h]))
                       for h, name in enumerate(head_names)})
            for p, (lr, wd) in enumerate(grid.hparams)]


def fit_and_report(*, train_data: LabelledVideos, val_data: LabelledVideos, fn: FeatureFunction,
                   clips: ClipConfig, probe_cfg: ProbeConfig, grid: GridConfig, seed: int,
                   cache_dir: str | None, cache_dtype: str, encode_batch: int, out: str | os.PathLike,
                   head_names: tuple[str, ...], selection: tuple[str, int], settings: dict,
                   device: torch.device, progress: bool = True, describe: str = "",
                   whiten: bool = False) -> ProbeReport:
    """Features -> probe grid -> validation metrics -> ``results.json``, ``confusion.png``, ``probes.pt``.

    ``selection = (metric, head)`` picks the reported probe (e.g. ``("top1", 0)``; the metric by its
    results.json key); ``whiten`` PCA-whitens both splits with training statistics
    (:class:`WhitenedFeatures`, a diagnostic).
    """
    out = Path(out)
    started = time.time()
    log = progress_write if progress else None
    train_features = build_features(train_data, fn, clips, True, seed, cache_dir, cache_dtype, encode_batch,
                                    progress, f"{describe} train".strip(), log)
    val_features = build_features(val_data, fn, clips, False, seed, cache_dir, cache_dtype, encode_batch,
                                  progress, f"{describe} val".strip(), log)
    if whiten:
        mean, whitening = WhitenedFeatures.fit(train_features)
        train_features = WhitenedFeatures(train_features, mean, whitening)
        val_features = WhitenedFeatures(val_features, mean, whitening)
    probes = ProbeGrid(probe_cfg, grid, seed, device)
    probes.train(train_features, progress, describe)
    scores = probes.scores(val_features, batch_size=max(grid.batch_size, 64))
    points = grid_points(scores, val_features.labels, grid, probes.train_losses, head_names)
    metric, main_head = selection[0], head_names[selection[1]]
    values = [point.heads[main_head].value(metric) for point in points]
    best = int(np.nanargmax(values)) if not all(math.isnan(v) for v in values) else 0
    classes = {name: list(classes) for name, classes in zip(head_names, train_data.head_classes)}
    report = ProbeReport(
        settings=settings, train=SplitInfo(train_data.name, len(train_data)),
        val=SplitInfo(val_data.name, len(val_data)), classes=classes,
        selection=f"{metric} of head '{main_head}' on the validation set", best_index=best,
        best_score=values[best], best=points[best],
        grid=[replace(p, heads={n: m.summary() for n, m in p.heads.items()}) for p in points],
        seconds=round(time.time() - started, 1))
    out.mkdir(parents=True, exist_ok=True)
    report.write(out / "results.json")
    best_main = report.best.heads[main_head]
    save_confusion_png(best_main.confusion, classes[main_head], out / "confusion.png",
                       title=f"{describe or val_data.name}: best probe (lr {report.best.lr:g}, "
                             f"wd {report.best.weight_decay:g}), top-1 {best_main.top1:.1f}%")
    save_probes(out / "probes.pt", probes.probes, grid=[{"lr": lr, "weight_decay": wd} for lr, wd in grid.hparams],
                best=best, heads=list(head_names))
    return report


def run_probe_eval(cfg: ProbeEvalConfig, progress: bool = True) -> ProbeReport:
    """The ``vjepa2 eval probe`` command: returns the report also written to ``out/results.json``."""
    check_output_dir(cfg.out)
    device = resolve_device(cfg.device)
    if cfg.dataset is not None:
        train_data = ToyVideos(ToyTask(cfg.dataset, "train", cfg.toy))
        val_data = ToyVideos(ToyTask(cfg.dataset, "val", cfg.toy))
    else:
        names = read_class_names(cfg.classes) if cfg.classes else None
        if names and cfg.num_classes is not None and cfg.num_classes != len(names):
            raise ConfigError(f"num_classes={cfg.num_classes} but {cfg.classes} names {len(names)} classes")
        train_data, val_data = open_lists(cfg.train, cfg.val, len(names) if names else cfg.num_classes,
                                          cfg.clips.allow_short, names)
    encoder = load_frozen_encoder(cfg.encoder, cfg.random_init, cfg.seed).to(device)
    check_clip_geometry(cfg.clips, encoder.config)
    num_classes = len(train_data.head_classes[0])
    probe_cfg = probe_config(encoder.config.dim, num_classes, cfg.variant, heads=cfg.heads)
    return fit_and_report(
        train_data=train_data, val_data=val_data, fn=EncoderFeatures(encoder), clips=cfg.clips,
        probe_cfg=probe_cfg, grid=cfg.grid, seed=cfg.seed, cache_dir=cfg.cache_dir, cache_dtype=cfg.cache_dtype,
        encode_batch=cfg.encode_batch, out=cfg.out, head_names=("class",), selection=("top1", 0),
        settings=to_dict(cfg), device=device, progress=progress, describe=cfg.dataset or "", whiten=cfg.whiten)


def read_class_names(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names, one per line (blank lines are an error: they would shift every later label)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"classes file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if not lines or blank:
        raise ConfigError(f"{path}: " + (f"line {blank[0]} is blank" if blank else "no class names")
                          + "; write one class name per line, line k naming label k-1")
    return tuple(line.strip() for line in lines)


def check_clip_geometry(clips: ClipConfig, encoder_config) -> None:
    """Frames and crop size must tile into the encoder's tubelets and patches (fail before any work)."""
    problems = []
    if clips.frames % encoder_config.tubelet_size:
        problems.append(f"clips.frames={clips.frames} is not a multiple of the tubelet size {encoder_config.tubelet_size}")
    if clips.size % encoder_config.patch_size:
        problems.append(f"clips.size={clips.size} is not a multiple of the patch size {encoder_config.patch_size}")
    if problems:
        raise ConfigError("; ".join(problems))


def probe_eval_config(data: dict) -> ProbeEvalConfig:
    """Typed config from plain data (YAML + overrides); errors name the key."""
    return from_dict(ProbeEvalConfig, data)


__all__ = ["GridConfig", "GridPoint", "HeadMetrics", "ProbeEvalConfig", "ProbeGrid", "ProbeReport", "SplitInfo",
           "check_clip_geometry", "fit_and_report", "grid_points", "load_frozen_encoder", "probe_eval_config",
           "probe_loss", "resolve_device", "run_probe_eval", "scheduled_lr", "sigmoid_focal_loss", "write_json"]
