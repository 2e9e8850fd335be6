"""Weight initialisation shared by all transformer models: truncated normal (std 0.02), output
projections rescaled by depth, as in the public release."""

from __future__ import annotations

import math

import torch
from torch import nn


def init_transformer_(module: nn.Module, blocks: nn.ModuleList, std: float = 0.02) -> None:
    """Trunc-normal(std) weights and zero biases for Linear/Conv3d, unit LayerNorms, then the
    out-projection and ``fc2`` of block ``i`` divided by ``sqrt(2 * (i + 1))``."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        for i, block in enumerate(blocks):
            block.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
