"""Metrics of frozen evaluation and the confusion-matrix figure.

Every metric counts every sample it is given: callers pass the whole validation split, so the
denominators are the split's size (``count`` is reported next to each accuracy).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, C)`` scores, ``(N,)`` labels -> ``(N,)`` bool: the label is among the ``k`` best scores."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == labels.unsqueeze(1)).any(dim=1)


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts; row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def class_mean_recall(scores: torch.Tensor, labels: torch.Tensor, k: int = 5) -> float:
    """Mean over the classes present in ``labels`` of the fraction of their samples with the label in
    the top ``k`` (the EPIC-KITCHENS anticipation metric), in percent."""
    hits = topk_hits(scores, labels, k).float()
    present = labels.unique()
    recalls = [hits[labels == c].mean() for c in present]
    return float(100.0 * torch.stack(recalls).mean()) if recalls else float("nan")


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor, k: int = 5) -> dict:
    """Top-1 / top-k accuracy, per-class accuracy, class-mean recall@k and the confusion matrix.

    Args:
        scores: ``(N, C)`` class scores (probabilities averaged over views).
        labels: ``(N,)`` true classes.

    Returns:
        a JSON-ready dict; ``per_class_accuracy[c]`` is None for a class without samples.
    """
    num_classes = scores.shape[1]
    predictions = scores.argmax(dim=1)
    confusion = confusion_matrix(predictions, labels, num_classes)
    support = confusion.sum(dim=1)
    per_class = [float(100.0 * confusion[c, c] / support[c]) if support[c] else None for c in range(num_classes)]
    present = [a for a in per_class if a is not None]
    return {
        "count": int(labels.numel()),
        "top1": float(100.0 * (predictions == labels).float().mean()),
        f"top{min(k, num_classes)}": float(100.0 * topk_hits(scores, labels, k).float().mean()),
        "mean_class_accuracy": float(np.mean(present)) if present else float("nan"),
        f"recall@{k}": class_mean_recall(scores, labels, k),
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),
    }


def save_confusion_png(confusion: list[list[int]] | np.ndarray, class_names: tuple[str, ...] | list[str],
                       path: str | os.PathLike, title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG (written atomically)."""
    from vjepa2.plotting import pyplot, save_png

    counts = np.asarray(confusion, dtype=np.float64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    side = min(max(4.0, 0.3 * n + 2.5), 16.0)
    fig, ax = pyplot().subplots(figsize=(side, side * 0.9))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels=list(class_names), rotation=60, ha="right", fontsize=8 if n <= 30 else 5)
    ax.set_yticks(ticks, labels=list(class_names), fontsize=8 if n <= 30 else 5)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 16:  # counts stay legible (and cheap to draw) on small matrices only
        for r in range(n):
            for c in range(n):
                if counts[r, c]:
                    ax.text(c, r, int(counts[r, c]), ha="center", va="center", fontsize=7,
                            color="white" if rates[r, c] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path, dpi=90)
