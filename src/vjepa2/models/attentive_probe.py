"""The attentive probe of frozen evaluation (arXiv 2506.09985: 4 blocks, the last with cross-attention queries).

``AttentiveProbe`` reads the tokens ``(B, N, D)`` of a frozen encoder (several segments' tokens
concatenated along ``N``) and returns one logit vector per learnable query:

    tokens -> ``depth`` self-attention :class:`~vjepa2.layers.block.Block` s (no RoPE: the encoder
    already encoded positions) -> :class:`~vjepa2.layers.cross_attention.CrossBlock` with ``Q``
    learnable queries -> one ``Linear`` head per query.

Two variants: ``full`` (the V-JEPA 2 probe: 3 self-attention blocks, 16 heads, MLP ratio 4, width =
encoder width) and ``light`` (the cross-attention block alone, as V-JEPA 1 evaluated). Action
anticipation uses 3 queries (verb, noun, action), each with its own head.

Parameter names: ``query_tokens`` ``(1, Q, D)``, ``blocks.<i>.*`` (the shared Block names),
``cross_block.{norm1, xattn.q, xattn.kv, norm2, mlp.fc1, mlp.fc2}``, ``heads.<q>.{weight, bias}``.
:mod:`vjepa2.evals.probe_weights` converts the public and ``transformers`` formats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vjepa2.config import ConfigError, from_dict
from vjepa2.layers.block import Block
from vjepa2.layers.cross_attention import CrossBlock
from vjepa2.models.init import init_transformer_

ProbeVariant = Literal["full", "light"]
# Self-attention blocks before the cross-attention block, per variant.
VARIANT_DEPTH = {"full": 3, "light": 0}


@dataclass(frozen=True)
class ProbeConfig:
    """An attentive probe.

    Attributes:
        dim: token width (= the encoder's width).
        num_classes: classes of each head; one learnable query per head (``(C,)`` for classification,
            ``(verbs, nouns, actions)`` for anticipation).
        depth: self-attention blocks before the cross-attention (3 = full probe, 0 = light probe).
        heads: attention heads of every block (16 in the paper).
        mlp_hidden: MLP width (``4 * dim`` in the paper); None = ``4 * dim``.
        qkv_bias: biases on the q/k/v projections.
        norm_eps: LayerNorm epsilon (the public probes use PyTorch's default 1e-5, transformers 1e-6).
    """

    dim: int = 1024
    num_classes: tuple[int, ...] = (174,)
    depth: int = 3
    heads: int = 16
    mlp_hidden: int | None = None
    qkv_bias: bool = True
    norm_eps: float = 1e-6

    @property
    def num_queries(self) -> int:
        return len(self.num_classes)

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 4 * self.dim

    def validate(self) -> None:
        if self.dim <= 0 or self.heads <= 0 or self.depth < 0:
            raise ConfigError(f"probe needs dim > 0, heads > 0, depth >= 0; got dim={self.dim}, "
                              f"heads={self.heads}, depth={self.depth}")
        if self.dim % self.heads:
            raise ConfigError(f"probe width {self.dim} is not divisible by heads={self.heads}; pick a head "
                              f"count that divides the encoder width")
        if not self.num_classes or any(c < 1 for c in self.num_classes):
            raise ConfigError(f"num_classes must list at least one head with >= 1 class, got {self.num_classes}")
        if self.mlp_hidden is not None and self.mlp_hidden <= 0:
            raise ConfigError(f"mlp_hidden must be positive, got {self.mlp_hidden}")


def probe_config(dim: int, num_classes: int | tuple[int, ...], variant: ProbeVariant = "full",
                 **overrides) -> ProbeConfig:
    """The paper's probe (``full``) or the cross-attention-only one (``light``) for width ``dim``.

    >>> probe_config(192, 10, "light").depth
    0
    """
    if variant not in VARIANT_DEPTH:
        raise ConfigError(f"probe variant {variant!r} is not one of {list(VARIANT_DEPTH)}")
    classes = (num_classes,) if isinstance(num_classes, int) else tuple(num_classes)
    return from_dict(ProbeConfig, {"dim": dim, "num_classes": classes, "depth": VARIANT_DEPTH[variant],
                                   **overrides})


class AttentiveProbe(nn.Module):
    """Self-attention blocks + cross-attention with learnable queries + one Linear head per query."""

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.query_tokens = nn.Parameter(torch.zeros(1, c.num_queries, c.dim))
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.hidden, c.qkv_bias, c.norm_eps) for _ in range(c.depth))
        self.cross_block = CrossBlock(c.dim, c.heads, c.hidden, c.qkv_bias, c.norm_eps)
        self.heads = nn.ModuleList(nn.Linear(c.dim, n) for n in c.num_classes)
        init_transformer_(self, self.blocks)
        nn.init.trunc_normal_(self.query_tokens, std=0.02)
        with torch.no_grad():
            # The cross block continues the depth-scaled init of the blocks before it.
            self.cross_block.mlp.fc2.weight.div_(math.sqrt(2.0 * max(c.depth, 1)))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim)`` tokens -> ``(B, Q, dim)`` pooled query features."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.config.dim:
            raise ValueError(f"probe expects tokens (B, N, {self.config.dim}), got {tuple(tokens.shape)}")
        x = tokens
        for block in self.blocks:
            x = block(x)
        queries = self.query_tokens.expand(x.shape[0], -1, -1).to(x.dtype)
        return self.cross_block(queries, x)

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """``(B, N, dim)`` -> one ``(B, num_classes[q])`` logit tensor per query ``q``."""
        pooled = self.pool(tokens)
        return [head(pooled[:, q]) for q, head in enumerate(self.heads)]
