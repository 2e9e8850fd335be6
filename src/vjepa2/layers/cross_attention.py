"""Cross-attention of a few learnable queries over a token sequence (the attentive probe's pooling).

Layout and arithmetic follow the public V-JEPA 2 attentive pooler: the queries get a ``q`` Linear,
the tokens a fused ``kv`` Linear (``dim -> 2*dim``), and the attention output is used as is, with
**no output projection** (``transformers``' ``VJEPA2PoolerCrossAttention`` makes the same choice).
In :class:`CrossBlock` only the tokens are layer-normed before the attention, not the queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vjepa2.layers.attention import head_width
from vjepa2.layers.mlp import MLP


class CrossAttention(nn.Module):
    """Multi-head attention of ``queries`` over ``tokens``. Parameters: ``q`` (dim -> dim), ``kv`` (dim -> 2*dim)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_width(dim, heads)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            queries: ``(B, Q, dim)``.
            tokens: ``(B, N, dim)`` keys/values source.
            attn_mask: optional boolean ``(B, 1, Q, N)`` / ``(Q, N)`` (True = may attend) or additive mask.

        Returns:
            ``(B, Q, dim)``.
        """
        B, Q, D = queries.shape
        N = tokens.shape[1]
        q = self.q(queries).view(B, Q, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(tokens).view(B, N, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return out.transpose(1, 2).reshape(B, Q, D)


class CrossBlock(nn.Module):
    """``q + xattn(q, norm1(tokens))`` then ``q + mlp(norm2(q))``.

    Parameter names (``norm1``, ``xattn.q``, ``xattn.kv``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) match
    the public ``CrossAttentionBlock``.
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int, qkv_bias: bool = True,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.xattn = CrossAttention(dim, heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, mlp_hidden)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, Q, dim)`` queries, ``(B, N, dim)`` tokens -> ``(B, Q, dim)``."""
        queries = queries + self.xattn(queries, self.norm1(tokens), attn_mask=attn_mask)
        return queries + self.mlp(self.norm2(queries))
