"""toy-seg: a dense probe of frozen features on the built-in procedural videos.

The renderer knows which shape covers every pixel (:func:`vjepa2.data.clips.synthetic.render_labels`),
so every encoder token gets two labels, each the majority over its tubelet x patch x patch pixels:

- **shape**: ``background`` or which of the 8 shapes covers it (9 classes);
- **figure-ground**: object or background (2 classes).

For each, a linear head on every frozen token (standardised with the training tokens' mean and std)
is trained with cross-entropy and scored on held-out clips by **mIoU** (mean over the classes
present in the validation tokens or predicted there) and token accuracy. The dense counterpart of
the clip-level toy probes: what V-JEPA 2.1's dense objective (arXiv 2603.14482) is reported to
improve (ADE20K linear mIoU). At the tiny recipe's 4 x 4 token grid the shape task sits at its
floor for every encoder (the heads predict background almost everywhere); figure-ground separates a
pretrained encoder from a random-init one (docs/results.md, "V-JEPA 2.1 objective").
``object_scale`` draws the scenes' objects larger (1 = the pretraining distribution).

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
    object_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("train_size", "val_size", "frames", "size", "steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"toy-seg {key} must be >= 1, got {getattr(self, key)}")
        if self.object_scale <= 0:
            raise ConfigError(f"toy-seg object_scale must be positive, got {self.object_scale}")
        if self.input not in ("video", "image"):
            raise ConfigError(f"toy-seg input must be video or image, got {self.input!r}")


def split_clips(split: str, cfg: ToySegConfig) -> tuple[np.ndarray, np.ndarray]:
    """uint8 clips ``(N, T, H, W, 3)`` and pixel labels ``(N, T, H, W)`` of ``split``; with
    ``input: image`` the middle frame (and its labels) repeated ``T`` times."""
    count = cfg.train_size if split == "train" else cfg.val_size
    scenes = SyntheticVideos(seed=SPLIT_SEEDS[split], object_scale=cfg.object_scale)
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


def fit_and_score(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                  classes: int, cfg: ToySegConfig) -> dict:
    """A linear head fitted on ``train`` = (tokens ``(M, D)``, labels ``(M,)``), scored on ``val``:
    ``{"miou", "token_accuracy", "ious"}`` (IoU per class, NaN = absent)."""
    head = fit_linear_head(*train, classes, cfg)
    with torch.no_grad():
        pred = head(val[0]).argmax(-1)
    miou, ious = mean_iou(pred, val[1], classes)
    return {"miou": miou, "token_accuracy": float((pred == val[1]).float().mean()), "ious": ious}


def toy_seg(encoder: nn.Module, cfg: ToySegConfig | None = None) -> dict:
    """Probe a frozen ``encoder`` on toy-seg; returns ``{"miou", "token_accuracy", "per_class",
    "figure_ground", "train_tokens", "val_tokens", "settings"}``: the shape task's mIoU, accuracy and
    IoU per class by name (None = absent), and ``figure_ground = {"miou", "object_iou",
    "token_accuracy"}``; IoUs in [0, 1]."""
    cfg = cfg or ToySegConfig()
    patch, tubelet = encoder.config.patch_size, encoder.config.tubelet_size
    shape, figure = {}, {}
    for split in ("train", "val"):
        clips, labels = split_clips(split, cfg)
        tokens = encode(encoder, clips)                                        # (N, L, D)
        y = torch.from_numpy(token_labels(labels, patch, tubelet))              # (N, L)
        if tokens.shape[1] != y.shape[1]:
            raise ValueError(f"the encoder gives {tokens.shape[1]} tokens a clip, the labels {y.shape[1]}")
        is_object = torch.from_numpy(token_labels((labels > 0).astype(np.uint8), patch, tubelet, classes=2))
        shape[split] = (tokens.flatten(0, 1), y.flatten())
        figure[split] = (shape[split][0], is_object.flatten())
    scored = fit_and_score(shape["train"], shape["val"], len(SEG_CLASSES), cfg)
    ground = fit_and_score(figure["train"], figure["val"], 2, cfg)
    return {"miou": scored["miou"], "token_accuracy": scored["token_accuracy"],
            "per_class": {name: (None if np.isnan(v) else v) for name, v in zip(SEG_CLASSES, scored["ious"])},
            "figure_ground": {"miou": ground["miou"], "object_iou": ground["ious"][1],
                              "token_accuracy": ground["token_accuracy"]},
            "train_tokens": int(shape["train"][1].numel()), "val_tokens": int(shape["val"][1].numel()),
            "settings": asdict(cfg)}
