"""Building blocks shared by every model: RoPE, attention, MLP, block, patch embedding."""

from vjepa2.layers.attention import Attention, KVCache
from vjepa2.layers.block import Block
from vjepa2.layers.mlp import MLP
from vjepa2.layers.patch_embed import PatchEmbed3D
from vjepa2.layers.rope import apply_rope, grid_positions, rope_tables

__all__ = ["Attention", "Block", "KVCache", "MLP", "PatchEmbed3D", "apply_rope", "grid_positions", "rope_tables"]
