"""Clip transforms on torch tensors; every frame of a clip gets the same geometric operation.

Input clips are what :func:`vjepa2.data.clips.video.read_clip` returns: uint8 ``(T, H, W, 3)``.
Outputs are float32 ``(C, T, H, W)``, ImageNet-normalised, ready to stack into the encoder's
``(B, C, T, H, W)``.

- :class:`EvalTransform`: resize the short side to ``crop * 256 / 224`` (bilinear, antialiased),
  centre crop ``crop``, normalise.
- :class:`TrainTransform`: random resized crop (area scale 0.3-1.0, aspect 0.75-1.35, one box for
  the whole clip) to ``size``, horizontal flip with probability 0.5, normalise; all randomness
  comes from an explicit ``numpy.random.Generator``, so a seed fixes the result.
- :func:`spatial_views`: 3 crops along the long side (left/centre/right or top/centre/bottom) for
  multi-view evaluation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Evaluation resizes the short side to crop * 256 / 224 before the centre crop (the ImageNet habit).
EVAL_RESIZE_RATIO = 256 / 224


def _as_frames(clip: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` clip -> float32 ``(T, 3, H, W)`` in ``[0, 255]``."""
    clip = torch.as_tensor(clip)
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected a clip of shape (T, H, W, 3), got {tuple(clip.shape)}")
    if clip.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 clip (values 0-255), got dtype {clip.dtype}")
    return clip.permute(0, 3, 1, 2).float()


def _to_output(frames: torch.Tensor) -> torch.Tensor:
    """float ``(T, 3, H, W)`` in ``[0, 255]`` -> normalised ``(3, T, H, W)`` float32."""
    return normalize(frames / 255.0).permute(1, 0, 2, 3).contiguous()


def normalize(frames: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """``(..., 3, H, W)`` values in ``[0, 1]`` -> ``(x - mean) / std`` per channel (ImageNet stats)."""
    mean_t = torch.tensor(mean, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    return (frames - mean_t) / std_t


def resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear, antialiased resize of float ``(T, C, H, W)`` to ``(T, C, height, width)``."""
    if frames.shape[-2:] == (height, width):
        return frames
    return F.interpolate(frames, size=(height, width), mode="bilinear", antialias=True, align_corners=False)


def resize_short_side(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Resize float ``(T, C, H, W)`` so that ``min(H, W) == size``, keeping the aspect ratio."""
    h, w = frames.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = (size, max(size, round(w * scale))) if h <= w else (max(size, round(h * scale)), size)
    return resize(frames, new_h, new_w)


def crop(frames: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The box ``[top:top+height, left:left+width]`` of every frame of ``(..., H, W)``."""
    return frames[..., top:top + height, left:left + width]


def center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size x size`` crop of ``(..., H, W)`` (offset ``(H - size) // 2``, same for W)."""
    h, w = frames.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {size}x{size} from frames of {h}x{w}")
    return crop(frames, (h - size) // 2, (w - size) // 2, size, size)


def random_resized_crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                            generator: np.random.Generator, attempts: int = 10) -> tuple[int, int, int, int]:
    """A random box ``(top, left, box_h, box_w)`` inside a ``height x width`` frame.

    Area is uniform in ``scale`` times the frame area and the aspect ratio ``box_w / box_h`` is
    log-uniform in ``ratio``. After ``attempts`` boxes that do not fit, the largest centred box with
    an aspect ratio clamped to ``ratio`` is used.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * generator.uniform(scale[0], scale[1])
        aspect = math.exp(generator.uniform(*log_ratio))
        box_w = round(math.sqrt(target_area * aspect))
        box_h = round(math.sqrt(target_area / aspect))
        if 0 < box_w <= width and 0 < box_h <= height:
            top = int(generator.integers(0, height - box_h + 1))
            left = int(generator.integers(0, width - box_w + 1))
            return top, left, box_h, box_w
    aspect = width / height
    if aspect < ratio[0]:
        box_w, box_h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        box_h, box_w = height, round(height * ratio[1])
    else:
        box_h, box_w = height, width
    return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w


class EvalTransform:
    """Evaluation preprocessing: short side -> ``int(crop * 256 / 224)``, centre crop, normalise.

    ``EvalTransform(256)(clip)``: uint8 ``(T, H, W, 3)`` -> float32 ``(3, T, 256, 256)``.
    """

    def __init__(self, crop: int = 256) -> None:
        if crop < 1:
            raise ValueError(f"crop must be positive, got {crop}")
        self.crop = crop
        self.resize_to = int(crop * EVAL_RESIZE_RATIO)

    def __call__(self, clip: torch.Tensor | np.ndarray) -> torch.Tensor:
        frames = resize_short_side(_as_frames(clip), self.resize_to)
        return _to_output(center_crop(frames, self.crop))

    def __repr__(self) -> str:
        return f"EvalTransform(crop={self.crop}, resize_to={self.resize_to})"


class TrainTransform:
    """Pretraining augmentation: one random resized crop for the whole clip, random flip, normalise.

    ``TrainTransform(256)(clip, generator)``: uint8 ``(T, H, W, 3)`` -> float32 ``(3, T, 256, 256)``.
    The generator draws the box, then the flip coin (always both, so changing ``flip_prob`` does not
    shift later draws).
    """

    def __init__(self, size: int = 256, scale: tuple[float, float] = (0.3, 1.0),
                 ratio: tuple[float, float] = (0.75, 1.35), flip_prob: float = 0.5) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        if not 0 <= flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.size, self.scale, self.ratio, self.flip_prob = size, tuple(scale), tuple(ratio), flip_prob

    def __call__(self, clip: torch.Tensor | np.ndarray, generator: np.random.Generator) -> torch.Tensor:
        if not isinstance(generator, np.random.Generator):
            raise TypeError("TrainTransform needs a numpy.random.Generator (np.random.default_rng(seed))")
        frames = _as_frames(clip)
        top, left, box_h, box_w = random_resized_crop_box(frames.shape[-2], frames.shape[-1], self.scale,
                                                          self.ratio, generator)
        frames = resize(crop(frames, top, left, box_h, box_w), self.size, self.size)
        if generator.random() < self.flip_prob:
            frames = frames.flip(-1)
        return _to_output(frames)

    def __repr__(self) -> str:
        return (f"TrainTransform(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"flip_prob={self.flip_prob})")


def spatial_views(clip: torch.Tensor | np.ndarray, crop_size: int, num_views: int = 3) -> torch.Tensor:
    """Multi-view evaluation crops: short side -> ``crop_size``, then ``num_views`` square crops
    evenly spaced along the long side (3 views: left/centre/right, or top/centre/bottom).

    uint8 ``(T, H, W, 3)`` -> float32 ``(V, 3, T, crop_size, crop_size)``, normalised.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    frames = resize_short_side(_as_frames(clip), crop_size)
    h, w = frames.shape[-2:]
    long_extra = max(h, w) - crop_size
    offsets = [long_extra // 2] if num_views == 1 else [round(i * long_extra / (num_views - 1))
                                                         for i in range(num_views)]
    views = [crop(frames, o, 0, crop_size, crop_size) if h > w else crop(frames, 0, o, crop_size, crop_size)
             for o in offsets]
    return torch.stack([_to_output(v) for v in views])
