"""Multi-head self-attention with a fused ``qkv`` projection, 3D-RoPE and an optional KV cache.

Attention itself runs through :func:`torch.nn.functional.scaled_dot_product_attention`, which picks
the fastest kernel of the device (flash / memory-efficient on CUDA, a fused kernel on CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vjepa2.layers.rope import apply_rope


class KVCache:
    """Keys and values of earlier tokens for one attention layer (autoregressive rollout).

    ``keys`` / ``values`` are ``(B, heads, N_cached, head_dim)``; :meth:`extend` appends the new
    tokens' keys and values and returns the full tensors to attend over.
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys is not None:
            k = torch.cat((self.keys, k), dim=2)
            v = torch.cat((self.values, v), dim=2)
        self.keys, self.values = k, v
        return k, v

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]


def head_width(dim: int, heads: int) -> int:
    """Width of one attention head; a width that does not split evenly into ``heads`` is an error."""
    if dim % heads:
        raise ValueError(f"width {dim} is not divisible by the number of heads {heads}")
    return dim // heads


class Attention(nn.Module):
    """Self-attention. Parameters: ``qkv`` (dim -> 3*dim, bias) and ``proj`` (dim -> dim)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_width(dim, heads)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """
        Args:
            x: ``(B, N, dim)`` tokens.
            rope: ``(cos, sin)`` tables, each ``(B or 1, N, head_dim)``, or None (no rotation).
            attn_mask: boolean ``(N, N_keys)`` (True = may attend) or additive float mask, or None.
            cache: keys/values of earlier tokens; the new ones are appended to it.

        Returns:
            ``(B, N, dim)``.
        """
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            cos, sin = (t.unsqueeze(-3).to(qkv.dtype) for t in rope)  # (B|1, 1, N, hd)
            q, k = apply_rope(qkv[:2], cos, sin).unbind(0)  # rotate q and k in one pass
            v = qkv[2]
        else:
            q, k, v = qkv.unbind(0)
        if cache is not None:
            k, v = cache.extend(k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))
