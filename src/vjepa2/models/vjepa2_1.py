"""V-JEPA 2.1: the encoder and predictor of the 2026-03 release (facebookresearch/vjepa2,
``app/vjepa_2_1``), built from the same layers as V-JEPA 2.

What differs from V-JEPA 2 (:class:`~vjepa2.models.encoder.VisionEncoder`):

- two tokenizers: ``patch_embed`` (tubelet 2) for clips, ``patch_embed_img`` (tubelet 1) for a
  single frame (``T == 1``), each followed by a learned modality embedding (``video_mod_embed`` /
  ``img_mod_embed``, ``(1, 1, D)``, added to every token);
- no final ``norm``: ``norms_block.{0..3}`` normalise the outputs of four hierarchical layers
  (``[5, 11, 17, 23]`` at depth 24, see :func:`hierarchical_layers`); the default output is the
  last of them ``(B, N, D)``, the hierarchical output all four concatenated ``(B, N, 4D)``,
  shallow to deep;
- RoPE is a true rotation (adjacent pairs share one angle: ``rope_rotary``), and the encoder
  rescales height / width positions onto the 16-patch grid it was trained on:
  ``h' = h * (16 - 1) / (H' - 1)`` (``interpolate_rope``; time is not rescaled);
- the predictor has 8 mask tokens, modality embeddings, an input embedding from ``levels * D``
  (a Linear for one level; ``Linear(4D, D) -> GELU -> Linear(D, P)`` for four), and two output
  projections to ``levels * out_dim``: ``predictor_proj`` for the masked tokens and
  ``predictor_proj_context`` for the context tokens. Its RoPE positions are not rescaled.

The released checkpoints (384 px, patch 16, 64 frames): ViT-B 768/12/12 and ViT-L 1024/24/16
distilled from ViT-G (encoder under ``ema_encoder``, predictor 12 deep predicting the teacher's
1664-D features from one level), ViT-g 1408/40/22 and ViT-G 1664/48/26 (``target_encoder``,
predictor 24 deep on four levels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from vjepa2.layers.block import Block
from vjepa2.layers.patch_embed import PatchEmbed3D
from vjepa2.layers.rope import grid_positions, rope_tables
from vjepa2.models.encoder import check_indices, gather_tokens
from vjepa2.models.init import init_transformer_
from vjepa2.models.predictor import Predictor
from vjepa2.models.sizes import EncoderConfig, PredictorConfig

#: Hierarchical layers of the released depths (48 is not evenly spaced).
RELEASED_LAYERS = {12: (2, 5, 8, 11), 24: (5, 11, 17, 23), 40: (9, 19, 29, 39), 48: (11, 23, 37, 47)}


def hierarchical_layers(depth: int, count: int = 4) -> tuple[int, ...]:
    """Block indices whose outputs ``norms_block`` normalise: the release's for its depths, else
    ``count`` evenly spaced ending at the last block (``[2, 5, 8, 11]`` for 12)."""
    if count == 4 and depth in RELEASED_LAYERS:
        return RELEASED_LAYERS[depth]
    return tuple(round((k + 1) * depth / count) - 1 for k in range(count))


@dataclass(frozen=True)
class Encoder21Config(EncoderConfig):
    """A V-JEPA 2.1 encoder (defaults: ViT-L at 384 px, 64 frames).

    ``output``: ``last`` = ``norms_block[-1]`` of the last block ``(B, N, D)``; ``hierarchical`` =
    the four normalised layers concatenated ``(B, N, 4D)``. ``rope_grid``: the patch grid whose
    position range height / width are rescaled onto (``interpolate_rope``).
    """

    img_size: int = 384
    num_frames: int = 64
    position: Literal["rope_rotary"] = "rope_rotary"
    levels: int = 4
    output: Literal["last", "hierarchical"] = "last"
    interpolate_rope: bool = True
    rope_grid: int = 16

    POSITIVE: ClassVar[tuple[str, ...]] = EncoderConfig.POSITIVE + ("levels", "rope_grid")

    @property
    def layers(self) -> tuple[int, ...]:
        return hierarchical_layers(self.depth, self.levels)


class VisionEncoder21(nn.Module):
    """The V-JEPA 2.1 encoder: ``(B, 3, T, H, W)`` -> ``(B, N, D)`` (or ``(B, N, levels * D)`` with
    ``output="hierarchical"``); ``T == 1`` uses the image tokenizer (``N = H/16 * W/16``), otherwise
    ``N = T/2 * H/16 * W/16``. ``keep`` ``(B, K)`` runs the blocks on those tokens only."""

    def __init__(self, config: Encoder21Config | None = None) -> None:
        super().__init__()
        self.config = config = config or Encoder21Config()
        self.patch_embed = PatchEmbed3D(config.dim, config.patch_size, config.tubelet_size, config.in_chans)
        self.patch_embed_img = PatchEmbed3D(config.dim, config.patch_size, 1, config.in_chans)
        self.img_mod_embed = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.video_mod_embed = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_hidden, config.qkv_bias, config.norm_eps)
            for _ in range(config.depth))
        self.norms_block = nn.ModuleList(nn.LayerNorm(config.dim, eps=config.norm_eps) for _ in range(config.levels))
        init_transformer_(self, self.blocks)

    @property
    def dim(self) -> int:
        return self.config.dim

    def tokenizer(self, clip_shape) -> tuple[PatchEmbed3D, nn.Parameter]:
        """The tokenizer and modality embedding of a clip shape: the image ones for ``T == 1``."""
        if len(clip_shape) == 5 and clip_shape[2] == 1:
            return self.patch_embed_img, self.img_mod_embed
        return self.patch_embed, self.video_mod_embed

    def grid(self, clip_shape) -> tuple[int, int, int]:
        """Token grid ``(T', H', W')`` of a clip shape ``(B, C, T, H, W)``."""
        return self.tokenizer(clip_shape)[0].grid(clip_shape)

    def embed(self, clip: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Tokens ``(B, N, D)`` with their modality embedding, and the token grid."""
        tokenizer, modality = self.tokenizer(clip.shape)
        return tokenizer(clip) + modality.to(clip.dtype), tokenizer.grid(clip.shape)

    def rope(self, indices: torch.Tensor, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` tables for flat token ``indices`` ``(B, K)``, heights / widths rescaled."""
        positions = grid_positions(indices, grid)
        cfg = self.config
        if cfg.interpolate_rope:
            scale = torch.tensor([1.0, (cfg.rope_grid - 1) / max(grid[1] - 1, 1),
                                  (cfg.rope_grid - 1) / max(grid[2] - 1, 1)], device=positions.device)
            positions = positions * scale
        return rope_tables(positions, cfg.head_dim, "rotary")

    def forward(self, clip: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        tokens, grid = self.embed(clip)
        if keep is not None:
            keep = check_indices(keep, tokens.shape[0], tokens.shape[1], "keep")
            tokens = gather_tokens(tokens, keep)
        indices = keep if keep is not None else torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        rope = self.rope(indices, grid)
        layers = self.config.layers
        outputs, x = [], tokens
        for i, block in enumerate(self.blocks):
            x = block(x, rope)
            if i in layers:
                outputs.append(self.norms_block[layers.index(i)](x))
        return torch.cat(outputs, dim=-1) if self.config.output == "hierarchical" else outputs[-1]


@dataclass(frozen=True)
class Predictor21Config(PredictorConfig):
    """A V-JEPA 2.1 predictor: ``enc_dim`` is the encoder width ``D``; it reads ``levels * D`` and
    writes ``levels * out_dim`` per token (``out_dim`` None: ``D``). Defaults: ViT-L's (one level,
    the ViT-G teacher's 1664-D output)."""

    img_size: int = 384
    num_frames: int = 64
    num_mask_tokens: int = 8
    position: Literal["rope_rotary"] = "rope_rotary"
    levels: int = 1
    out_dim: int | None = 1664

    POSITIVE: ClassVar[tuple[str, ...]] = PredictorConfig.POSITIVE + ("levels",)

    @property
    def output_width(self) -> int:
        return self.levels * (self.out_dim or self.enc_dim)


class Predictor21(Predictor):
    """The V-JEPA 2.1 predictor; ``forward`` returns ``(predictions (B, Nt, W), context (B, Nc, W))``
    with ``W = levels * out_dim``."""

    def __init__(self, config: Predictor21Config | None = None) -> None:
        config = config or Predictor21Config()
        super().__init__(config)
        levels, width, dim = config.levels, config.enc_dim, config.dim
        self.predictor_embed = (nn.Linear(width, dim) if levels == 1 else
                                nn.Sequential(nn.Linear(levels * width, width), nn.GELU(), nn.Linear(width, dim)))
        self.img_mod_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.video_mod_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.predictor_proj = nn.Linear(dim, config.output_width)
        self.predictor_proj_context = nn.Linear(dim, config.output_width)

    def forward(self, context_tokens: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor,
                mask_index: int = 0, grid: tuple[int, int, int] | None = None,
                modality: Literal["video", "image"] = "video") -> tuple[torch.Tensor, torch.Tensor]:
        """Predict the target tokens and re-project the context ones.

        Args:
            context_tokens: ``(B, Nc, levels * D)`` encoder outputs (hierarchical for ``levels > 1``).
            context_idx / target_idx: ``(B, Nc)`` / ``(B, Nt)`` flat token indices.
            mask_index: which of the mask tokens marks the targets.
            grid: the token grid of the indices (default: the configured one, as the release does).
            modality: which modality embedding to add.
        """
        B, Nc, _ = context_tokens.shape
        context_idx, target_idx, grid = self.check_inputs(context_idx, target_idx, (B, Nc), mask_index, grid)
        context = self.predictor_embed(context_tokens)
        targets = self.mask_tokens[mask_index].to(context.dtype).expand(B, target_idx.shape[1], -1)
        modality_embed = self.img_mod_embed if modality == "image" else self.video_mod_embed
        x = torch.cat((context, targets), dim=1) + modality_embed.to(context.dtype)
        x = self.run_blocks(x, torch.cat((context_idx, target_idx), dim=1), grid)
        return self.predictor_proj(x[:, Nc:]), self.predictor_proj_context(x[:, :Nc])
