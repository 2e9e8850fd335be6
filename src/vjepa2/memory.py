"""Will it fit? A lower bound on the memory of a step or a clip, checked before anything is allocated.

The estimates count only what cannot be avoided (float32 clips, and for a training step the
activations every transformer block keeps for the backward pass: at least ``10 * D`` values per
token and block), so a run they refuse would certainly have run out of memory, by the kernel's
OOM killer or after minutes of swapping; a run they pass may still be too large.
"""

from __future__ import annotations

import os

import torch

from vjepa2.config import ConfigError

#: Values per token and block a training step keeps for backward at the least (norm outputs, q/k/v,
#: the attention output, the MLP's hidden layer: ~15 D in practice).
SAVED_PER_TOKEN_BLOCK = 10
FLOAT_BYTES = 4


class MemoryEstimateError(ConfigError):
    """A step or a clip would need more memory than the device has; the message gives both (a
    :class:`~vjepa2.config.ConfigError`: the sizes come from the config or the options)."""


def device_memory(device: str | torch.device = "cpu") -> int:
    """Bytes of memory on ``device``: a CUDA device's total, else the machine's physical RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no check
        return 1 << 62


def clip_bytes(batch: int, frames: int, height: int, width: int | None = None, channels: int = 3) -> int:
    """Float32 bytes of ``batch`` clips of ``frames x height x width`` pixels."""
    return batch * channels * frames * height * (width or height) * FLOAT_BYTES


def training_activation_bytes(batch: int, tokens: int, dim: int, depth: int, checkpointing: bool = False) -> int:
    """Lower bound on the activations kept for backward by ``depth`` blocks of width ``dim`` over
    ``batch x tokens`` tokens (only each block's input with activation checkpointing)."""
    per_token_block = dim if checkpointing else SAVED_PER_TOKEN_BLOCK * dim
    return batch * tokens * depth * per_token_block * FLOAT_BYTES


def gigabytes(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_fits(needed: int, device: str | torch.device, what: str, advice: str) -> None:
    """Raise :class:`MemoryEstimateError` if ``needed`` bytes exceed ``device``'s memory."""
    have = device_memory(device)
    if needed > have:
        where = "GPU" if torch.device(device).type == "cuda" else "machine"
        raise MemoryEstimateError(f"{what} needs at least {gigabytes(needed)} of memory and this {where} has "
                                  f"{gigabytes(have)}: {advice}")
