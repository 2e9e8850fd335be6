"""Position encodings for video tokens: 3D rotary (two modes) and absolute 3D sin-cos.

Tokens of a clip form a grid ``(T', H', W')`` = ``(T/tubelet, H/patch, W/patch)`` in raster order,
time slowest. A token index ``i`` sits at ``t = i // (H'W')``, ``row = (i % (H'W')) // W'``,
``col = i % W'``. When tokens are dropped (masking), positions come from the kept indices.

3D-RoPE splits each attention head of width ``head_dim`` into ``[time | height | width | rest]``
chunks of width ``d = 2 * ((head_dim // 3) // 2)``; ``rest`` is not rotated. Within a chunk of
width ``d`` the frequencies are ``w_j = 10000 ** (-j / (d / 2))``, ``j = 0 .. d/2 - 1``.

Two modes:

``compatible`` (default)
    The pairing the public V-JEPA 2 weights were trained with: the partner of element ``2j`` is
    ``-x[2j+1]`` and of ``2j+1`` is ``x[2j]`` (adjacent pairs), but the angle table is *tiled*
    ``[w_0 .. w_{d/2-1}, w_0 .. w_{d/2-1}]`` rather than interleaved. Elements of one pair can so
    receive different angles: it is not a rotation (norms change) but the checkpoints need it.
``rotary``
    A true rotation: adjacent pairs, each rotated by one angle (interleaved table
    ``[w_0, w_0, w_1, w_1, ...]``).

Both are expressed as ``x * cos + partner(x) * sin`` with per-token tables of width ``head_dim``
(``cos = 1, sin = 0`` on the ``rest`` part), so one code path serves the encoder, predictors and
the action-conditioned predictor (whose action/state tokens rotate the time chunk only).
"""

from __future__ import annotations

import math

import numpy as np
import torch

ROPE_MODES = ("compatible", "rotary")


def rope_chunk_width(head_dim: int) -> int:
    """Width ``d`` of each of the time/height/width chunks for a head of width ``head_dim``."""
    return 2 * ((head_dim // 3) // 2)


def grid_positions(indices: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Integer ``(t, row, col)`` grid positions of flat token indices.

    Args:
        indices: ``(..., N)`` long, flat raster indices into a ``grid = (T', H', W')`` token grid.
        grid: the token grid of the *actual* input.

    Returns:
        ``(..., N, 3)`` float32 positions ``(t, row, col)``.
    """
    _, h, w = grid
    per_frame = h * w
    t = torch.div(indices, per_frame, rounding_mode="floor")
    rem = indices - t * per_frame
    row = torch.div(rem, w, rounding_mode="floor")
    col = rem - row * w
    return torch.stack((t, row, col), dim=-1).to(torch.float32)


def _angle_table(chunk: int, mode: str, dtype: torch.dtype, device) -> torch.Tensor:
    """Per-element frequency of one chunk of width ``chunk``: ``(chunk,)``."""
    j = torch.arange(chunk // 2, dtype=dtype, device=device)
    omega = 1.0 / (10000.0 ** (j / (chunk / 2.0)))
    if mode == "compatible":
        return omega.repeat(2)  # tiled: [w0..w_{d/2-1}, w0..w_{d/2-1}]
    if mode == "rotary":
        return omega.repeat_interleave(2)  # interleaved: [w0, w0, w1, w1, ...]
    raise ValueError(f"unknown RoPE mode {mode!r}; expected one of {ROPE_MODES}")


def rope_tables(
    positions: torch.Tensor,
    head_dim: int,
    mode: str = "compatible",
    axes: tuple[bool, bool, bool] = (True, True, True),
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables of 3D-RoPE for a set of token positions.

    Args:
        positions: ``(..., N, 3)`` float ``(t, row, col)`` positions (fractional allowed).
        head_dim: width of one attention head.
        mode: ``"compatible"`` or ``"rotary"`` (see the module docstring).
        axes: which of the (time, height, width) chunks rotate; a chunk that does not rotate gets
            ``cos = 1, sin = 0``. Action/state tokens of the AC predictor use ``(True, False, False)``.
        dtype: computation and output dtype (float32 by default; float64 for references).

    Returns:
        ``(cos, sin)``, each ``(..., N, head_dim)``.
    """
    d = rope_chunk_width(head_dim)
    if d == 0:
        raise ValueError(f"head_dim={head_dim} is too small for 3D-RoPE (needs at least 6)")
    freq = _angle_table(d, mode, dtype, positions.device)  # (d,)
    pos = positions.to(dtype)
    cos_parts, sin_parts = [], []
    for axis, rotates in enumerate(axes):
        angle = pos[..., axis : axis + 1] * freq  # (..., N, d)
        if rotates:
            cos_parts.append(angle.cos())
            sin_parts.append(angle.sin())
        else:
            cos_parts.append(torch.ones_like(angle))
            sin_parts.append(torch.zeros_like(angle))
    rest = head_dim - 3 * d
    if rest:
        shape = (*pos.shape[:-1], rest)
        cos_parts.append(torch.ones(shape, dtype=dtype, device=pos.device))
        sin_parts.append(torch.zeros(shape, dtype=dtype, device=pos.device))
    return torch.cat(cos_parts, dim=-1), torch.cat(sin_parts, dim=-1)


def pair_partner(x: torch.Tensor) -> torch.Tensor:
    """``(-x[2j+1], x[2j])`` for each adjacent pair along the last dimension (same shape as x)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + partner(x) * sin``; tables broadcast against ``x`` (e.g. ``(B, 1, N, hd)``)."""
    return x * cos + pair_partner(x) * sin


# ----------------------------------------------------------------------------------------------
# Absolute sin-cos embedding (V-JEPA 1 style), used for the position-encoding ablation.
# ----------------------------------------------------------------------------------------------


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """``(len(pos), dim)``: ``[sin(pos * w), cos(pos * w)]`` with ``w_j = 10000^(-j/(dim/2))``."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_table_3d(dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """Fixed 3D sin-cos table ``(T'*H'*W', dim)`` in raster order.

    Half the channels encode time and a quarter each height and width, as in V-JEPA 1.
    """
    t, h, w = grid
    d_time, d_h = dim // 2, dim // 4
    d_w = dim - d_time - d_h
    tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    table = np.concatenate(
        [_sincos_1d(d_time, tt.astype(np.float64)), _sincos_1d(d_h, hh.astype(np.float64)),
         _sincos_1d(d_w, ww.astype(np.float64))],
        axis=1,
    )
    return torch.from_numpy(table[:, :dim]).float()


def resize_sincos_table(table: torch.Tensor, from_grid: tuple[int, int, int],
                        to_grid: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear interpolation of a ``(N, D)`` table on ``from_grid`` to ``to_grid`` (``(N', D)``).

    This is what users of absolute embeddings do to run a model at another size.
    """
    if tuple(from_grid) == tuple(to_grid):
        return table
    dim = table.shape[-1]
    vol = table.reshape(1, *from_grid, dim).permute(0, 4, 1, 2, 3)
    vol = torch.nn.functional.interpolate(vol, size=tuple(to_grid), mode="trilinear", align_corners=False)
    return vol.permute(0, 2, 3, 4, 1).reshape(math.prod(to_grid), dim)


def token_rope(indices: torch.Tensor, grid: tuple[int, int, int], head_dim: int,
               mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE ``(cos, sin)`` tables ``(..., N, head_dim)`` for flat token ``indices`` ``(..., N)``."""
    return rope_tables(grid_positions(indices, grid), head_dim, mode)
