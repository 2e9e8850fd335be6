"""3D-RoPE against an independent float64 reference written element by element."""

import math

import pytest
import torch

from vjepa2.layers.rope import apply_rope, grid_positions, rope_chunk_width, rope_tables, token_rope


def reference_rope(x, indices, grid, mode):
    """Element-wise float64 3D-RoPE of ``x`` (N, hd) at flat ``indices`` (N,) on ``grid``."""
    _, h, w = grid
    n, hd = x.shape
    d = 2 * ((hd // 3) // 2)
    out = x.clone().double()
    for i in range(n):
        idx = int(indices[i])
        pos = (idx // (h * w), (idx % (h * w)) // w, idx % w)
        for axis in range(3):
            base = axis * d
            for e in range(d):
                if mode == "compatible":
                    j = e % (d // 2)  # tiled table
                else:
                    j = e // 2  # interleaved: one angle per pair
                angle = pos[axis] * 10000.0 ** (-j / (d / 2))
                partner = -x[i, base + e + 1] if e % 2 == 0 else x[i, base + e - 1]
                out[i, base + e] = x[i, base + e] * math.cos(angle) + partner * math.sin(angle)
    return out


@pytest.mark.parametrize("mode", ["compatible", "rotary"])
@pytest.mark.parametrize("head_dim,grid", [(64, (3, 2, 5)), (32, (2, 4, 3)), (12, (1, 3, 7))])
def test_rope_matches_float64_reference(mode, head_dim, grid):
    n = grid[0] * grid[1] * grid[2]
    x = torch.randn(n, head_dim, dtype=torch.float64)
    indices = torch.randperm(n)[: n // 2 + 1]
    cos, sin = rope_tables(grid_positions(indices, grid), head_dim, mode, dtype=torch.float64)
    ours = apply_rope(x[: len(indices)], cos, sin)
    ref = reference_rope(x[: len(indices)], indices, grid, mode)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_positions_follow_raster_order_non_square():
    grid = (2, 3, 5)
    pos = grid_positions(torch.arange(30), grid)
    assert pos[0].tolist() == [0, 0, 0]
    assert pos[4].tolist() == [0, 0, 4]  # last column of the first row
    assert pos[5].tolist() == [0, 1, 0]  # rows have W'=5 tokens
    assert pos[15].tolist() == [1, 0, 0]  # frames have H'*W'=15 tokens
    assert pos[29].tolist() == [1, 2, 4]


def test_rotary_is_a_rotation_and_compatible_is_not():
    x = torch.randn(1, 40, 64, dtype=torch.float64)
    idx = torch.arange(40)
    cos_r, sin_r = token_rope(idx, (5, 2, 4), 64, "rotary")
    rotated = apply_rope(x, cos_r.double(), sin_r.double())
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    cos_c, sin_c = token_rope(idx, (5, 2, 4), 64, "compatible")
    quirky = apply_rope(x, cos_c.double(), sin_c.double())
    assert (quirky.norm(dim=-1) - x.norm(dim=-1)).abs().max() > 1e-3  # the public quirk changes norms


def test_rotary_scores_depend_only_on_relative_position():
    hd = 48
    q, k = torch.randn(hd, dtype=torch.float64), torch.randn(hd, dtype=torch.float64)

    def score(pq, pk):
        cq, sq = rope_tables(torch.tensor([pq], dtype=torch.float64), hd, "rotary", dtype=torch.float64)
        ck, sk = rope_tables(torch.tensor([pk], dtype=torch.float64), hd, "rotary", dtype=torch.float64)
        return (apply_rope(q, cq[0], sq[0]) * apply_rope(k, ck[0], sk[0])).sum()

    torch.testing.assert_close(score((1, 2, 3), (0, 1, 1)), score((4, 7, 5), (3, 6, 3)))


def test_rest_channels_untouched_and_axes_switch():
    hd = 64  # d = 20, rest = 4
    assert rope_chunk_width(hd) == 20
    pos = torch.tensor([[3.0, 5.0, 7.0]])
    cos, sin = rope_tables(pos, hd, "compatible", axes=(True, False, False))
    assert torch.all(cos[0, 20:] == 1) and torch.all(sin[0, 20:] == 0)
    assert torch.any(sin[0, :20] != 0)
