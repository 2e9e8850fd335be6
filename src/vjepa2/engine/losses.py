"""Loss helpers both objectives share (pretraining's ``loss.motion_weight``, the world model's
``loss.change_weight``): weight each predicted token by how much it changes over time."""

from __future__ import annotations

import torch


def change_weights(change: torch.Tensor, strength: float) -> torch.Tensor:
    """Token weights ``1 + strength * c / mean(c)``, rescaled to mean 1, from how much each token
    changed, ``change`` ``(..., N)`` (the mean over the last axis is per group of ``N`` tokens).
    Puts the loss on what moves: in a scene where a small object moves, most tokens barely change
    and, under a plain mean, their errors outweigh the moving object's."""
    weights = 1 + strength * change / change.mean(-1, keepdim=True).clamp_min(1e-6)
    return weights / weights.mean(-1, keepdim=True)


def temporal_change(h: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """``(B, N)``: how much each token of ``h`` ``(B, N, D)`` on ``grid`` ``(T', H', W')`` differs from
    the token at the same place one time step earlier (mean absolute difference over channels; the
    first time step takes the second's)."""
    B, N, D = h.shape
    x = h.reshape(B, grid[0], grid[1] * grid[2], D)
    if grid[0] < 2:
        return h.new_ones(B, N)
    diff = (x[:, 1:] - x[:, :-1]).abs().mean(-1)                     # (B, T'-1, H'W')
    return torch.cat((diff[:, :1], diff), dim=1).reshape(B, N)
