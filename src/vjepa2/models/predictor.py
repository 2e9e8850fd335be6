"""The V-JEPA 2 predictor: fills masked target positions from context tokens and mask tokens."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vjepa2.layers.block import Block
from vjepa2.layers.rope import resize_sincos_table, sincos_table_3d, token_rope
from vjepa2.models.encoder import check_indices, gather_tokens
from vjepa2.models.init import init_transformer_
from vjepa2.models.sizes import PredictorConfig


class Predictor(nn.Module):
    """Narrow ViT that predicts target-token features from context-token features.

    Parameter names (``predictor_embed``, ``mask_tokens.i``, ``predictor_blocks``,
    ``predictor_norm``, ``predictor_proj``) follow the public checkpoints.
    """

    def __init__(self, config: PredictorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PredictorConfig()
        self.predictor_embed = nn.Linear(config.enc_dim, config.dim)
        # Zero-init; one per mask generator / clip-length group (``mask_index``).
        self.mask_tokens = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1, config.dim)) for _ in range(config.num_mask_tokens)
        )
        self.predictor_blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_hidden, config.qkv_bias, config.norm_eps)
            for _ in range(config.depth)
        )
        self.predictor_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.predictor_proj = nn.Linear(config.dim, config.enc_dim)
        if config.position == "sincos":
            self.register_buffer("pos_table", sincos_table_3d(config.dim, config.grid), persistent=False)
        else:
            self.pos_table = None
        init_transformer_(self, self.predictor_blocks)

    def forward(
        self,
        context_tokens: torch.Tensor,
        context_idx: torch.Tensor,
        target_idx: torch.Tensor,
        mask_index: int = 0,
        grid: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        """Predict encoder-space features at the target positions.

        Args:
            context_tokens: ``(B, Nc, enc_dim)`` encoder outputs of the context tokens.
            context_idx: ``(B, Nc)`` flat grid indices of the context tokens.
            target_idx: ``(B, Nt)`` flat grid indices to predict.
            mask_index: which learnable mask token to place at the targets (one per mask generator).
            grid: token grid ``(T', H', W')`` that the indices refer to. By default the configured
                ``H' = W' = img_size / patch_size`` (as the public predictor does) with as many
                frames as the indices reach.

        Returns:
            ``(B, Nt, enc_dim)``.
        """
        B, Nc, _ = context_tokens.shape
        context_idx, target_idx, grid = self.check_inputs(context_idx, target_idx, (B, Nc), mask_index, grid)
        context = self.predictor_embed(context_tokens)
        targets = self.mask_tokens[mask_index].to(context.dtype).expand(B, target_idx.shape[1], -1)
        if self.pos_table is not None:
            table = resize_sincos_table(self.pos_table, self.config.grid, grid).to(context.dtype)
            context = context + table[context_idx]
            targets = targets + table[target_idx]
        x = torch.cat((context, targets), dim=1)
        indices = torch.cat((context_idx, target_idx), dim=1)
        # Sort into spatio-temporal order as the public predictor does (attention is permutation
        # equivariant, so this only fixes the summation order), run, then undo the sort.
        order = torch.argsort(indices, dim=1)
        x = gather_tokens(x, order)
        indices = torch.gather(indices, 1, order)
        x = self.run_blocks(x, indices, grid)
        x = gather_tokens(x, torch.argsort(order, dim=1))[:, Nc:]
        return self.predictor_proj(x)

    def check_inputs(self, context_idx: torch.Tensor, target_idx: torch.Tensor, context_shape: tuple[int, int],
                     mask_index: int, grid: tuple[int, int, int] | None
                     ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
        """Validated ``(B, Nc)`` / ``(B, Nt)`` indices for ``context_shape = (B, Nc)`` context tokens, and
        the token grid they refer to (see :meth:`forward`)."""
        B, num_context = context_shape
        context_idx = check_indices(context_idx, B, None, "context_idx")
        target_idx = check_indices(target_idx, B, None, "target_idx")
        if grid is None:
            _, h, w = self.config.grid
            last = max(int(context_idx.max()), int(target_idx.max()) if target_idx.numel() else 0)
            grid = (last // (h * w) + 1, h, w)
        elif len(grid) != 3:
            raise ValueError(f"grid must be (T', H', W'), got {grid}")
        else:
            num_tokens = grid[0] * grid[1] * grid[2]
            check_indices(context_idx, B, num_tokens, "context_idx")
            check_indices(target_idx, B, num_tokens, "target_idx")
        if context_idx.shape[1] != num_context:
            raise ValueError(f"context_idx has {context_idx.shape[1]} indices for {num_context} context tokens")
        if not 0 <= mask_index < len(self.mask_tokens):
            raise ValueError(f"mask_index={mask_index} but the predictor has {len(self.mask_tokens)} mask tokens")
        return context_idx, target_idx, grid

    def forward_dense(
        self,
        tokens: torch.Tensor,
        target_idx: torch.Tensor,
        mask_index: int = 0,
        grid: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        """Denoising variant (``mask.mode = noise``): every token is present, targets are corrupted.

        The encoder saw all ``N`` tokens (targets with noised patch embeddings); the predictor takes
        all encoder outputs, adds the mask token ``mask_index`` at the target positions as a marker
        of which tokens were corrupted, and predicts the clean features there.

        Args:
            tokens: ``(B, N, enc_dim)`` encoder outputs of the whole (corrupted) clip, raster order.
            target_idx: ``(B, Nt)`` flat indices of the corrupted tokens.
            grid: token grid of the clip; defaults to the configured ``H', W'`` with ``N / (H'W')`` frames.

        Returns:
            ``(B, Nt, enc_dim)`` predictions at ``target_idx``.
        """
        B, N, _ = tokens.shape
        if grid is None:
            _, h, w = self.config.grid
            grid = (N // (h * w), h, w)
        if grid[0] * grid[1] * grid[2] != N:
            raise ValueError(f"{N} tokens do not fill the grid {tuple(grid)}")
        target_idx = check_indices(target_idx, B, N, "target_idx")
        x = self.predictor_embed(tokens)
        marker = torch.zeros(B, N, 1, dtype=x.dtype, device=x.device)
        marker.scatter_(1, target_idx.unsqueeze(-1), 1.0)
        x = x + marker * self.mask_tokens[mask_index].to(x.dtype)
        if self.pos_table is not None:
            x = x + resize_sincos_table(self.pos_table, self.config.grid, grid).to(x.dtype)
        indices = torch.arange(N, device=x.device).unsqueeze(0)
        x = self.run_blocks(x, indices, grid)
        return self.predictor_proj(gather_tokens(x, target_idx))

    def run_blocks(self, x: torch.Tensor, indices: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Blocks + norm on predictor-width tokens ``(B, N, dim)`` at flat ``indices`` ``(B, N)``."""
        rope = token_rope(indices, grid, self.config.head_dim, self.config.rope_mode) if self.config.rope_mode else None
        use_ckpt = self.config.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.predictor_blocks:
            x = checkpoint(block, x, rope, use_reentrant=False) if use_ckpt else block(x, rope)
        return self.predictor_norm(x)
