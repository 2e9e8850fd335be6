"""The V-JEPA 2 video encoder: tubelet embedding, pre-norm ViT blocks with 3D-RoPE, final LayerNorm."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vjepa2.layers.block import Block
from vjepa2.layers.patch_embed import PatchEmbed3D
from vjepa2.layers.rope import resize_sincos_table, sincos_table_3d, token_rope
from vjepa2.models.init import init_transformer_
from vjepa2.models.sizes import EncoderConfig


def check_indices(indices: torch.Tensor, batch: int, num_tokens: int | None, name: str) -> torch.Tensor:
    """Validate a ``(B, K)`` integer tensor of token indices in ``[0, num_tokens)`` (``>= 0`` if None)."""
    if not isinstance(indices, torch.Tensor) or indices.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be a (B, K) integer tensor of token indices")
    if indices.ndim != 2 or indices.shape[0] != batch:
        raise ValueError(f"{name} must have shape (B={batch}, K), got {tuple(indices.shape)}")
    if indices.numel() and int(indices.min()) < 0:
        raise ValueError(f"{name} holds negative token indices")
    if num_tokens is not None and indices.numel() and int(indices.max()) >= num_tokens:
        raise ValueError(f"{name} holds indices outside [0, {num_tokens}) for a clip of {num_tokens} tokens")
    return indices.long()


class VisionEncoder(nn.Module):
    """Video ViT.

    ``encoder(clip)`` with ``clip`` ``(B, 3, T, H, W)`` returns ``(B, N, dim)`` with
    ``N = T/2 * H/16 * W/16``; ``encoder(clip, keep=idx)`` with ``idx`` ``(B, K)`` runs the blocks
    on the kept tokens only (their RoPE positions come from ``idx``) and returns ``(B, K, dim)``.
    """

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or EncoderConfig()
        self.patch_embed = PatchEmbed3D(config.dim, config.patch_size, config.tubelet_size, config.in_chans)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_hidden, config.qkv_bias, config.norm_eps)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.native_grid = (config.num_frames // config.tubelet_size, config.img_size // config.patch_size,
                            config.img_size // config.patch_size)
        if config.position == "sincos":
            self.register_buffer("pos_table", sincos_table_3d(config.dim, self.native_grid), persistent=False)
        else:
            self.pos_table = None
        init_transformer_(self, self.blocks)

    @property
    def dim(self) -> int:
        return self.config.dim

    def grid(self, clip_shape) -> tuple[int, int, int]:
        """Token grid ``(T', H', W')`` of a clip shape ``(B, C, T, H, W)``."""
        return self.patch_embed.grid(clip_shape)

    def embed(self, clip: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Patch embedding (plus the absolute table in ``sincos`` mode): ``(B, N, dim)`` and the grid."""
        grid = self.grid(clip.shape)
        tokens = self.patch_embed(clip)
        if self.pos_table is not None:
            table = resize_sincos_table(self.pos_table, self.native_grid, grid)
            tokens = tokens + table.to(tokens.dtype)
        return tokens, grid

    def forward_tokens(self, tokens: torch.Tensor, indices: torch.Tensor | None,
                       grid: tuple[int, int, int]) -> torch.Tensor:
        """Run the blocks and final norm on embedded tokens.

        Args:
            tokens: ``(B, K, dim)`` embedded tokens.
            indices: ``(B, K)`` flat grid index of each token, or None when ``tokens`` is the full
                grid in raster order.
            grid: the token grid of the clip the tokens come from.

        Returns:
            ``(B, K, dim)``.
        """
        rope = None
        if self.config.rope_mode:
            if indices is None:
                indices = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
            rope = token_rope(indices, grid, self.config.head_dim, self.config.rope_mode)
        x = tokens
        use_ckpt = self.config.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, rope, use_reentrant=False) if use_ckpt else block(x, rope)
        return self.norm(x)

    def forward(self, clip: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, T, H, W)`` clip [and ``(B, K)`` kept indices] -> ``(B, N or K, dim)``."""
        tokens, grid = self.embed(clip)
        if keep is not None:
            keep = check_indices(keep, tokens.shape[0], tokens.shape[1], "keep")
            tokens = gather_tokens(tokens, keep)
        return self.forward_tokens(tokens, keep, grid)


def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``tokens[b, indices[b]]``: ``(B, N, D)``, ``(B, K)`` -> ``(B, K, D)``."""
    return torch.gather(tokens, 1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
