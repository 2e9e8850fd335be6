"""The one pre-norm transformer block shared by the encoder, predictors and probes."""

from __future__ import annotations

import torch
from torch import nn

from vjepa2.layers.attention import Attention, KVCache
from vjepa2.layers.mlp import MLP


class Block(nn.Module):
    """``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``; LayerNorm eps 1e-6.

    Parameter names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``)
    match the public V-JEPA 2 checkpoints.
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int, qkv_bias: bool = True,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, mlp_hidden)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """``(B, N, dim) -> (B, N, dim)``; see :class:`Attention` for ``rope``/``attn_mask``/``cache``."""
        x = x + self.attn(self.norm1(x), rope=rope, attn_mask=attn_mask, cache=cache)
        return x + self.mlp(self.norm2(x))
