"""The exponential-moving-average (EMA) target network.

The target encoder is never trained by gradients: after every optimiser step its weights move a
small fraction towards the online encoder, ``target = m * target + (1 - m) * online`` with momentum
``m`` close to 1 (0.99925 in V-JEPA 2). Predicting a slowly moving target is what keeps the
representation from collapsing to a constant.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_target(online: nn.Module) -> nn.Module:
    """A frozen deep copy of ``online`` (same weights, ``requires_grad=False``)."""
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * online`` for every parameter, in place.

    Works on plain tensors and on sharded (FSDP2 ``DTensor``) parameters alike, because each rank
    updates the shard it holds. Both modules must have the same parameter names and shapes.
    """
    target_params = list(target.parameters())
    online_params = [p.detach() for p in online.parameters()]
    if len(target_params) != len(online_params):
        raise ValueError(f"target has {len(target_params)} parameters, online has {len(online_params)}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must lie in [0, 1], got {momentum}")
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)
