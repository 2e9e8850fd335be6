"""Look at imagined latents: decode each by its nearest neighbour among encoded real frames.

The AC predictor works in latent space and has no pixel decoder. To see what it imagines, each
imagined latent is replaced by the real frame (from a bank of encoded trajectories, e.g. the
training set) whose latent is closest in mean L1; an image strip puts the true future frames above
these "decoded" predictions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vjepa2.models.ac_predictor import ACPredictor, normalize_latents
from vjepa2.world_model.feature_cache import read_cached_source, read_features


class LatentBank:
    """Normalised latents ``(M, N, D)`` of every frame of the cached trajectories ``files``, with the
    frames themselves read back from the trajectories on demand."""

    def __init__(self, files: list[Path]) -> None:
        if not files:
            raise ValueError("the latent bank needs at least one cached trajectory")
        self.files = list(files)
        latents, self.index = [], []
        for i, f in enumerate(self.files):
            feats = normalize_latents(read_features(f)["features"].float())
            latents.append(feats)
            self.index += [(i, t) for t in range(len(feats))]
        self.latents = torch.cat(latents)
        self._frames: dict[int, np.ndarray] = {}

    def nearest(self, latents: torch.Tensor, exclude_file: Path | None = None) -> list[tuple[int, int]]:
        """``(file index, step)`` of the bank frame nearest (mean L1) to each of ``latents`` ``(K, N, D)``."""
        distances = torch.stack([(self.latents - q).abs().mean(dim=(1, 2)) for q in latents.float()])
        if exclude_file is not None and exclude_file in self.files:
            own = torch.tensor([self.files[i] == exclude_file for i, _ in self.index])
            distances[:, own] = float("inf")
        return [self.index[int(j)] for j in distances.argmin(dim=1)]

    def frame(self, file_index: int, step: int) -> np.ndarray:
        """``(H, W, 3)`` uint8 frame ``step`` of bank trajectory ``file_index``."""
        if file_index not in self._frames:
            self._frames[file_index] = read_cached_source(self.files[file_index]).frames
        return self._frames[file_index][step]


@torch.no_grad()
def nearest_neighbour_strip(predictor: ACPredictor, bank: LatentBank, query: Path, start: int, horizon: int,
                            out: str | os.PathLike) -> Path:
    """Write a PNG: true frames ``start .. start + horizon`` of the cached trajectory ``query`` (top)
    and, from step ``start`` alone, the imagined frames decoded by nearest neighbour (bottom; the
    query trajectory itself is left out of the bank)."""
    from vjepa2.plotting import pyplot, save_png

    plt = pyplot()
    window = read_features(query, start, start + horizon + 1)
    h = normalize_latents(window["features"].float())[None]
    device = next(predictor.parameters()).device
    imagined = predictor.eval().rollout(h[:, :1].to(device), window["actions"][None, :horizon].to(device),
                                        window["states"][None, :horizon].to(device))[0].cpu()
    real = read_cached_source(query).frames[start:start + horizon + 1]
    decoded = [bank.frame(*ij) for ij in bank.nearest(imagined, exclude_file=query)]
    fig, axes = plt.subplots(2, horizon + 1, figsize=(1.6 * (horizon + 1), 3.6), dpi=100)
    for k in range(horizon + 1):
        axes[0, k].imshow(real[k])
        axes[0, k].set_title(f"t+{k}", fontsize=8)
        axes[1, k].imshow(decoded[k - 1] if k else real[0])
        for row in axes[:, k]:
            row.set_xticks([])
            row.set_yticks([])
    axes[0, 0].set_ylabel("real", fontsize=8)
    axes[1, 0].set_ylabel("imagined (NN)", fontsize=8)
    fig.tight_layout()
    return save_png(fig, out)
