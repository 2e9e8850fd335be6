"""toy-seg: a dense probe of frozen features on the built-in procedural videos.

The renderer knows which shape covers every pixel (:func:`vjepa2.data.clips.synthetic.render_labels`),
so every encoder token gets a label: the class covering most of its pixels (``background`` or one
of the 8 shapes), counted over the token's tubelet x patch x patch pixels. A linear head on each
frozen token (standardised with the training tokens' mean and std) is trained with cross-entropy
and scored on held-out clips by **mIoU** (mean over the classes present in the validation tokens
or predicted there) and token accuracy. The dense counterpart of the clip-level toy probes: what
V-JEPA 2.1's dense objective (arXiv 2603.14482) is reported to improve (ADE20K linear mIoU).

::

    vjepa2 eval toy-seg --encoder runs/pretrain-tiny/checkpoints/step-00006000.pt
    vjepa2 eval toy-seg --encoder runs/pretrain-tiny/checkpoints/step-00006000.pt --random-init
    vjepa2 eval toy-seg --encoder ... --input image          # one frame repeated (and its labels)

Splits are separate scene seeds (train and validation never share a scene).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vjepa2.config import ConfigError
from vjepa2.data.clips.synthetic import SHAPES, SyntheticVideos, render, render_labels
from vjepa2.data.clips.transforms import normalize

SEG_CLASSES = ("background", *SHAPES)
#: Scene seeds of the two splits.
SPLIT_SEEDS = {"train": 7101, "val": 7102}


@dataclass(frozen=True)
class ToySegConfig:
    """toy-seg settings: clips per split, their shape, the linear head's training, the input."""

    train_size: int = 256
    val_size: int = 128
    frames: int = 8
    size: int = 64
    steps: int = 300
    lr: float = 1e-2
    weight_decay: float = 1e-4
    input: Literal["video", "image"] = "video"
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("train_size", "val_size", "frames", "size", "steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"toy-seg {key} must be >= 1, got {getattr(self, key)}")
        if self.input not in ("video", "image"):
            raise ConfigError(f"toy-seg input must be video or image, got {self.input!r}")


def split_clips(split: str, cfg: ToySegConfig) -> tuple[np.ndarray, np.ndarray]:
    """uint8 clips ``(N, T, H, W, 3)`` and pixel labels ``(N, T, H, W)`` of ``split``; with
    ``input: image`` the middle frame (and its labels) repeated ``T`` times."""
    count = cfg.train_size if split == "train" else cfg.val_size
    scenes = SyntheticVideos(seed=SPLIT_SEEDS[split])
    clips = np.stack([render(scenes[i], cfg.frames, cfg.size) for i in range(count)])
    labels = np.stack([render_labels(scenes[i], cfg.frames, cfg.size) for i in range(count)])
    if cfg.input == "image":
        middle = cfg.frames // 2
        clips = np.repeat(clips[:, middle:middle + 1], cfg.frames, axis=1)
        labels = np.repeat(labels[:, middle:middle + 1], cfg.frames, axis=1)
    return clips, labels


def token_labels(labels: np.ndarray, patch: int, tubelet: int, classes: int = len(SEG_CLASSES)) -> np.ndarray:
    """Pixel labels ``(N, T, H, W)`` -> token labels ``(N, T/tubelet * H/patch * W/patch)`` int64, in
    the encoder's token order (time, row, column): the class covering most of the token's pixels
    (ties go to the lower class index, i.e. background first)."""
    n, t, h, w = labels.shape
    if t % tubelet or h % patch or w % patch:
        raise ValueError(f"labels {labels.shape} do not tile into tubelet {tubelet} x patch {patch}")
    blocks = labels.reshape(n, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    blocks = blocks.transpose(0, 1, 3, 5, 2, 4, 6).reshape(n, -1, tubelet * patch * patch)
    counts = (blocks[..., None] == np.arange(classes)).sum(axis=2)   # (N, tokens, classes)
    return counts.argmax(axis=-1).astype(np.int64)


@torch.no_grad()
def encode(encoder: nn.Module, clips: np.ndarray, batch: int = 16) -> torch.Tensor:
    """uint8 clips ``(N, T, H, W, 3)`` -> frozen tokens ``(N, tokens, D)`` float32 on the CPU."""
    device = next(encoder.parameters()).device
    out = []
    for start in range(0, len(clips), batch):
        frames = torch.from_numpy(clips[start:start + batch]).permute(0, 1, 4, 2, 3).float() / 255.0  # (B,T,3,H,W)
        x = normalize(frames).permute(0, 2, 1, 3, 4).to(device)    # (B, 3, T, H, W)
        out.append(encoder.eval()(x).float().cpu())
    return torch.cat(out)


def mean_iou(pred: torch.Tensor, target: torch.Tensor, classes: int) -> tuple[float, list[float]]:
    """mIoU over the classes that occur in ``target`` or ``pred`` (1-D int tensors), and the IoU of
    every class (NaN where it occurs in neither)."""
    ious = []
    for c in range(classes):
        p, t = pred == c, target == c
        union = int((p | t).sum())
        ious.append(float((p & t).sum()) / union if union else float("nan"))
    present = [v for v in ious if not np.isnan(v)]
    return float(np.mean(present)) if present else float("nan"), ious


def fit_linear_head(train_x: torch.Tensor, train_y: torch.Tensor, classes: int, cfg: ToySegConfig) -> nn.Module:
    """A linear classifier ``(M, D) -> (M, classes)`` on standardised features, full-batch AdamW."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    torch.manual_seed(cfg.seed)
    head = nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x = (train_x - mean) / std
    for _ in range(cfg.steps):
        loss = F.cross_entropy(head(x), train_y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return nn.Sequential(Standardise(mean, std), head).eval()


class Standardise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def toy_seg(encoder: nn.Module, cfg: ToySegConfig | None = None) -> dict:
    """Probe a frozen ``encoder`` on toy-seg; returns ``{"miou", "token_accuracy", "per_class",
    "train_tokens", "val_tokens", "settings"}`` (IoUs in [0, 1], per class by name, None = absent)."""
    cfg = cfg or ToySegConfig()
    patch, tubelet = encoder.config.patch_size, encoder.config.tubelet_size
    data = {}
    for split in ("train", "val"):
        clips, labels = split_clips(split, cfg)
        tokens = encode(encoder, clips)                                        # (N, L, D)
        y = torch.from_numpy(token_labels(labels, patch, tubelet))              # (N, L)
        if tokens.shape[1] != y.shape[1]:
            raise ValueError(f"the encoder gives {tokens.shape[1]} tokens a clip, the labels {y.shape[1]}")
        data[split] = (tokens.flatten(0, 1), y.flatten())
    head = fit_linear_head(*data["train"], len(SEG_CLASSES), cfg)
    with torch.no_grad():
        pred = head(data["val"][0]).argmax(-1)
    miou, ious = mean_iou(pred, data["val"][1], len(SEG_CLASSES))
    return {"miou": miou, "token_accuracy": float((pred == data["val"][1]).float().mean()),
            "per_class": {name: (None if np.isnan(v) else v) for name, v in zip(SEG_CLASSES, ious)},
            "train_tokens": int(data["train"][1].numel()), "val_tokens": int(data["val"][1].numel()),
            "settings": asdict(cfg)}
