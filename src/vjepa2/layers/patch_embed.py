"""Tubelet patch embedding: a Conv3d with kernel = stride = (tubelet, patch, patch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed3D(nn.Module):
    """``(B, C, T, H, W)`` clip -> ``(B, T/ts * H/p * W/p, dim)`` tokens in (t, h, w) raster order.

    The weight is stored as the Conv3d the public checkpoints hold (``proj.weight``
    ``(dim, C, ts, p, p)``) but applied as one matrix product over non-overlapping tubelets,
    which is the same arithmetic and much faster than a strided convolution on CPU.
    """

    def __init__(self, dim: int, patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=(tubelet_size, patch_size, patch_size),
                              stride=(tubelet_size, patch_size, patch_size))

    def grid(self, clip_shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid ``(T', H', W')`` of a ``(B, C, T, H, W)`` clip; raises on bad sizes."""
        if len(clip_shape) != 5:
            raise ValueError(f"expected a clip of shape (B, C, T, H, W), got {tuple(clip_shape)}")
        _, c, t, h, w = clip_shape
        if c != self.proj.in_channels:
            raise ValueError(f"clip has {c} channels, the model expects {self.proj.in_channels} "
                             f"(shape must be (B, C, T, H, W))")
        ts, p = self.tubelet_size, self.patch_size
        bad = [f"{name}={v} is not a multiple of {m}" for name, v, m in
               (("frames", t, ts), ("height", h, p), ("width", w, p)) if v % m or v == 0]
        if bad:
            raise ValueError("clip size does not tile into tubelets: " + "; ".join(bad)
                             + ". Resize/crop the clip or change the frame count.")
        return t // ts, h // p, w // p

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, N, dim)``."""
        B, C, _, _, _ = clip.shape
        gt, gh, gw = self.grid(clip.shape)
        ts, p = self.tubelet_size, self.patch_size
        tubes = clip.reshape(B, C, gt, ts, gh, p, gw, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        tubes = tubes.reshape(B, gt * gh * gw, C * ts * p * p)
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)
        return F.linear(tubes.to(weight.dtype), weight, self.proj.bias)
