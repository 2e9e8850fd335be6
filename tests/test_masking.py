"""Multi-block 3D masks (property tests) and the noise corruption of patch embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vjepa2.config import ConfigError, from_dict, to_dict
from vjepa2.masking import (LONG_RANGE, SHORT_RANGE, BlockMaskSpec, MaskConfig, corrupt_tokens, describe,
                            masks_to_indices, sample_block_shape, sample_masks, sample_target_mask, step_masks)

FAST = settings(max_examples=60, deadline=None)


def check_pair(context: torch.Tensor, target: torch.Tensor, num_tokens: int, batch: int) -> None:
    """Invariants every (context_idx, target_idx) pair must satisfy."""
    assert context.dtype == torch.int64 and target.dtype == torch.int64
    assert context.ndim == 2 and target.ndim == 2
    assert context.shape[0] == batch and target.shape[0] == batch
    assert context.shape[1] >= 1 and target.shape[1] >= 1
    assert context.shape[1] + target.shape[1] <= num_tokens
    for ctx, tgt in zip(context.tolist(), target.tolist()):
        assert ctx == sorted(set(ctx)), "context indices must be unique and ascending"
        assert tgt == sorted(set(tgt)), "target indices must be unique and ascending"
        assert all(0 <= i < num_tokens for i in ctx + tgt)
        assert not set(ctx) & set(tgt), "a token is both context and target"


grids = st.tuples(st.integers(1, 6), st.integers(1, 12), st.integers(1, 12)).filter(lambda g: g[0] * g[1] * g[2] >= 2)
scales = st.tuples(st.floats(0.01, 1.0), st.floats(0.0, 1.0)).map(lambda p: (p[0], p[0] + (1 - p[0]) * p[1]))
aspects = st.tuples(st.floats(0.2, 3.0), st.floats(0.0, 2.0)).map(lambda p: (p[0], p[0] + p[1]))
specs = st.builds(BlockMaskSpec, num_blocks=st.integers(1, 10), spatial_scale=scales, aspect_ratio=aspects,
                  temporal_scale=scales)


@FAST
@given(grid=grids, batch=st.integers(1, 6), seed=st.integers(0, 2**31),
       generators=st.lists(specs, min_size=1, max_size=3))
def test_masks_are_valid_disjoint_and_equal_count(grid, batch, seed, generators):
    cfg = MaskConfig(generators=tuple(generators))
    cfg.validate()
    num_tokens = grid[0] * grid[1] * grid[2]
    pairs = sample_masks(grid, batch, cfg, seed)
    assert len(pairs) == len(generators)
    for context, target in pairs:
        check_pair(context, target, num_tokens, batch)


@FAST
@given(grid=grids, seed=st.integers(0, 2**31), step=st.integers(0, 10**6), batch=st.integers(1, 5),
       spec=specs)
def test_step_masks_truncate_each_sample_to_the_batch_minimum(grid, seed, step, batch, spec):
    cfg = MaskConfig(generators=(spec,))
    num_tokens = grid[0] * grid[1] * grid[2]
    slots = list(range(step * batch, step * batch + batch))
    (context, target), = step_masks(grid, cfg, seed=seed, step=step, sample_ids=slots)
    check_pair(context, target, num_tokens, batch)
    # Each slot alone gives its full mask; the batch keeps a prefix of it, of the minimum length.
    singles = [step_masks(grid, cfg, seed=seed, step=step, sample_ids=[s])[0] for s in slots]
    assert context.shape[1] == min(c.shape[1] for c, _ in singles)
    assert target.shape[1] == min(t.shape[1] for _, t in singles)
    for row, (c1, t1) in enumerate(singles):
        assert context[row].tolist() == c1[0, :context.shape[1]].tolist()
        assert target[row].tolist() == t1[0, :target.shape[1]].tolist()
        assert c1.shape[1] + t1.shape[1] == num_tokens  # untruncated: a partition of the grid


@FAST
@given(grid=grids, seed=st.integers(0, 2**31), spec=specs)
def test_blocks_cover_whole_time_extent_as_tubes(grid, seed, spec):
    spec = BlockMaskSpec(spec.num_blocks, spec.spatial_scale, spec.aspect_ratio, (1.0, 1.0))
    rng = np.random.default_rng(seed)
    shape = sample_block_shape(grid, spec, rng)
    assert shape[0] == grid[0]
    assert 1 <= shape[1] <= grid[1] and 1 <= shape[2] <= grid[2]
    mask = sample_target_mask(grid, spec.num_blocks, shape, rng).reshape(grid)
    if mask.sum() < mask.size - 1:  # (the no-empty-context guarantee may free one token)
        assert (mask == mask[:1]).all(), "a temporal-scale-1 block must be a tube through all frames"


def test_mask_ratios_of_public_generators_on_16x16x8_grid():
    cfg = MaskConfig()
    grid, num_tokens = (8, 16, 16), 8 * 16 * 16
    ratios = {0: [], 1: []}
    hidden = {0: [], 1: []}
    for step in range(60):
        for g, (context, target) in enumerate(step_masks(grid, cfg, seed=3, step=step, sample_ids=range(16))):
            singles = step_masks(grid, cfg, seed=3, step=step, sample_ids=[0])[g]
            ratios[g].append(singles[1].shape[1] / num_tokens)
            hidden[g].append(1 - context.shape[1] / num_tokens)
    short, long = np.mean(ratios[0]), np.mean(ratios[1])
    # Union of 8 boxes of 15% (overlapping): ~62% target; 2 boxes of 70%: ~81% target.
    assert 0.52 < short < 0.72, short
    assert 0.72 < long < 0.90, long
    assert long > short
    # What the encoder does not see after equal-count truncation (batch 16): ~75-95% (the paper masks ~90%).
    assert 0.70 < np.mean(hidden[0]) < 0.85
    assert 0.85 < np.mean(hidden[1]) < 0.98


def test_public_defaults():
    cfg = MaskConfig()
    assert cfg.mode == "drop"
    assert cfg.generators == (SHORT_RANGE, LONG_RANGE)
    assert SHORT_RANGE.num_blocks == 8 and SHORT_RANGE.spatial_scale == (0.15, 0.15)
    assert LONG_RANGE.num_blocks == 2 and LONG_RANGE.spatial_scale == (0.7, 0.7)
    assert SHORT_RANGE.aspect_ratio == (0.75, 1.5) and SHORT_RANGE.temporal_scale == (1.0, 1.0)
    assert "8 blocks x 0.15" in describe(cfg) and "2 blocks x 0.7" in describe(cfg)


def test_determinism_by_seed_and_generator():
    cfg = MaskConfig()
    a = sample_masks((4, 8, 8), 5, cfg, 123)
    b = sample_masks((4, 8, 8), 5, cfg, 123)
    c = sample_masks((4, 8, 8), 5, cfg, 124)
    assert all(torch.equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))
    assert any(not torch.equal(x, y) or x.shape != y.shape for pa, pc in zip(a, c) for x, y in zip(pa, pc))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    d, e = sample_masks((4, 8, 8), 3, cfg, g1), sample_masks((4, 8, 8), 3, cfg, g2)
    assert all(torch.equal(x, y) for pa, pb in zip(d, e) for x, y in zip(pa, pb))
    s1 = step_masks((4, 8, 8), cfg, seed=1, step=5, sample_ids=[10, 11])
    s2 = step_masks((4, 8, 8), cfg, seed=1, step=5, sample_ids=[10, 11])
    s3 = step_masks((4, 8, 8), cfg, seed=1, step=6, sample_ids=[10, 11])
    assert all(torch.equal(x, y) for pa, pb in zip(s1, s2) for x, y in zip(pa, pb))
    assert any(x.shape != y.shape or not torch.equal(x, y) for pa, pb in zip(s1, s3) for x, y in zip(pa, pb))


@pytest.mark.parametrize("grid", [(2, 4, 4), (1, 1, 2), (1, 2, 1), (2, 1, 1), (1, 2, 2)])
def test_tiny_grids_terminate_with_context(grid):
    # Boxes as large as the grid cover everything wherever they go: one token must be freed.
    whole = BlockMaskSpec(num_blocks=3, spatial_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0))
    cfg = MaskConfig(generators=(SHORT_RANGE, LONG_RANGE, whole))
    num_tokens = grid[0] * grid[1] * grid[2]
    for seed in range(5):
        for context, target in sample_masks(grid, 4, cfg, seed):
            check_pair(context, target, num_tokens, 4)
    (context, target), = sample_masks(grid, 1, MaskConfig(generators=(whole,)), 0)
    assert context.shape[1] == 1 and target.shape[1] == num_tokens - 1


def test_single_token_grid_is_rejected():
    with pytest.raises(ValueError, match="single token"):
        sample_masks((1, 1, 1), 2, MaskConfig(), 0)


def test_rank_split_matches_global_batch_with_global_equalize():
    cfg = MaskConfig(equalize="global_batch")
    grid, step, per_rank, world = (4, 8, 8), 9, 3, 2
    global_ids = list(range(step * per_rank * world, (step + 1) * per_rank * world))
    whole = step_masks(grid, cfg, seed=11, step=step, sample_ids=global_ids, global_ids=global_ids)
    parts = [step_masks(grid, cfg, seed=11, step=step, sample_ids=global_ids[r * per_rank:(r + 1) * per_rank],
                        global_ids=global_ids) for r in range(world)]
    for g, (context, target) in enumerate(whole):
        assert torch.equal(context, torch.cat([p[g][0] for p in parts]))
        assert torch.equal(target, torch.cat([p[g][1] for p in parts]))
    # Per-rank equalisation keeps a prefix of each slot's mask, possibly longer than the global one.
    local = MaskConfig(equalize="rank_batch")
    for r in range(world):
        part = step_masks(grid, local, seed=11, step=step, sample_ids=global_ids[r * per_rank:(r + 1) * per_rank])
        for g, (context, target) in enumerate(part):
            n = whole[g][0].shape[1]
            assert context.shape[1] >= n
            assert torch.equal(context[:, :n], whole[g][0][r * per_rank:(r + 1) * per_rank])


@pytest.mark.parametrize("truncate", ["first", "random"])
def test_rank_split_matches_global_batch_for_either_truncation(truncate):
    cfg = MaskConfig(equalize="global_batch", truncate=truncate)
    grid, ids = (4, 4, 4), list(range(12, 18))
    whole = step_masks(grid, cfg, seed=3, step=2, sample_ids=ids, global_ids=ids)
    parts = [step_masks(grid, cfg, seed=3, step=2, sample_ids=ids[:3], global_ids=ids),
             step_masks(grid, cfg, seed=3, step=2, sample_ids=ids[3:], global_ids=ids)]
    for g, (context, target) in enumerate(whole):
        check_pair(context, target, 64, 6)
        assert torch.equal(context, torch.cat([p[g][0] for p in parts]))
        assert torch.equal(target, torch.cat([p[g][1] for p in parts]))


def _kept_share_per_time_step(truncate: str, batches: int = 60) -> np.ndarray:
    """Share of the available (context or target) tokens of each time step that survive equalisation."""
    cfg = MaskConfig(generators=(BlockMaskSpec(num_blocks=2, spatial_scale=(0.7, 0.7), temporal_scale=(0.5, 0.5)),),
                     truncate=truncate)
    grid, kept, available = (4, 4, 4), np.zeros(4), np.zeros(4)
    for step in range(batches):
        ids = list(range(8))
        (context, target), = step_masks(grid, cfg, seed=0, step=step, sample_ids=ids)
        for idx in (context, target):
            np.add.at(kept, (idx // 16).flatten().numpy(), 1)
        available += 16 * len(ids)  # every token is context or target with a 1.0 context time
    return kept / available


def test_random_truncation_spreads_the_dropped_tokens_over_time():
    first, random = _kept_share_per_time_step("first"), _kept_share_per_time_step("random")
    # Keeping each sample's first indices drops tokens from the last time steps only.
    assert first[-1] < 0.9 * first[0]
    assert random.max() - random.min() < 0.05 and abs(random.mean() - first.mean()) < 1e-9


def test_max_context_time_keeps_context_in_the_past_and_targets_in_the_future():
    spec = BlockMaskSpec(num_blocks=2, spatial_scale=(0.3, 0.3), temporal_scale=(1.0, 1.0), max_context_time=0.5)
    assert spec.context_steps(4) == 2 and spec.context_steps(1) == 1 and spec.context_steps(5) == 3
    grid = (4, 4, 4)
    for seed in range(20):
        (context, target), = sample_masks(grid, 4, MaskConfig(generators=(spec,)), generator=seed)
        assert context.numel() and int(context.max()) < 2 * 16           # context: the first 2 time steps
        assert int(target.max()) >= 2 * 16                                 # targets reach into the future
        for b in range(4):
            assert not set(context[b].tolist()) & set(target[b].tolist())
    with pytest.raises(ConfigError, match="max_context_time"):
        from_dict(MaskConfig, {"generators": [{"num_blocks": 1, "max_context_time": 0}]})


def test_masks_to_indices_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        masks_to_indices(np.zeros(5, dtype=bool))
    with pytest.raises(ValueError, match="cannot keep"):
        masks_to_indices(np.array([[True, False, False]]), num_context=3)


def test_config_from_dict_and_errors():
    data = {"mode": "noise", "noise_scale": 0.5, "generators": [{"num_blocks": 4, "spatial_scale": [0.2, 0.3]}]}
    cfg = from_dict(MaskConfig, data)
    assert cfg.generators[0] == BlockMaskSpec(4, (0.2, 0.3))
    assert from_dict(MaskConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="mode"):
        from_dict(MaskConfig, {"mode": "blur"})
    with pytest.raises(ConfigError, match="noise_scle"):
        from_dict(MaskConfig, {"noise_scle": 1.0})
    with pytest.raises(ConfigError, match=r"generators\[0\].*spatial_scale"):
        from_dict(MaskConfig, {"generators": [{"spatial_scale": [0.5, 0.2]}]})
    with pytest.raises(ConfigError, match="temporal_scale"):
        from_dict(MaskConfig, {"generators": [{"temporal_scale": [0.5, 1.5]}]})
    with pytest.raises(ConfigError, match="empty"):
        from_dict(MaskConfig, {"generators": []})
    with pytest.raises(ConfigError, match="noise_scale"):
        from_dict(MaskConfig, {"noise_scale": -1})


# ---------------------------------------------------------------------------------------------- noise


def _tokens_and_targets(B=2, N=24, D=16, Nt=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(B, N, D, generator=gen, dtype=torch.float64) * 3 + 1
    target = torch.stack([torch.randperm(N, generator=gen)[:Nt].sort().values for _ in range(B)])
    return tokens, target


def _others(target: torch.Tensor, N: int) -> list[list[int]]:
    return [[i for i in range(N) if i not in set(row.tolist())] for row in target]


@pytest.mark.parametrize("kind", ["add", "replace"])
def test_corrupt_tokens_absolute_is_exact(kind):
    tokens, target = _tokens_and_targets()
    cfg = MaskConfig(mode="noise", noise_kind=kind, noise_scale=0.5, noise_reference="absolute")
    out = corrupt_tokens(tokens, target, cfg, torch.Generator().manual_seed(5))
    eps = torch.randn((2, 10, 16), generator=torch.Generator().manual_seed(5)).double()
    for b in range(2):
        expect = 0.5 * eps[b] + (tokens[b, target[b]] if kind == "add" else 0)
        torch.testing.assert_close(out[b, target[b]], expect)
        other = _others(target[b:b + 1], 24)[0]
        assert torch.equal(out[b, other], tokens[b, other])


def test_corrupt_tokens_clip_std_reference():
    B, N, D = 2, 400, 64
    tokens, target = _tokens_and_targets(B, N, D, Nt=300)
    tokens = tokens * torch.tensor([1.0, 10.0], dtype=torch.float64).view(2, 1, 1)
    sigma = (tokens - tokens.mean(1, keepdim=True)).pow(2).mean(dim=(1, 2)).sqrt()
    add = corrupt_tokens(tokens, target, MaskConfig(noise_scale=2.0), torch.Generator().manual_seed(1))
    rep = corrupt_tokens(tokens, target, MaskConfig(noise_scale=2.0, noise_kind="replace"),
                         torch.Generator().manual_seed(1))
    for b in range(B):
        noise = add[b, target[b]] - tokens[b, target[b]]
        assert abs(noise.std().item() / (2.0 * sigma[b].item()) - 1) < 0.03
        # replace: per-channel mean of the clip plus the same noise
        mean = tokens[b].mean(0)
        torch.testing.assert_close(rep[b, target[b]] - mean, noise)


def test_corrupt_tokens_gradients_and_determinism():
    tokens, target = _tokens_and_targets()
    for kind, target_grad in (("add", True), ("replace", False)):
        x = tokens.clone().requires_grad_(True)
        cfg = MaskConfig(noise_kind=kind, noise_reference="absolute")
        corrupt_tokens(x, target, cfg, torch.Generator().manual_seed(0)).sum().backward()
        for b in range(2):
            assert torch.all(x.grad[b, _others(target[b:b + 1], 24)[0]] == 1)
            assert torch.all(x.grad[b, target[b]] == (1 if target_grad else 0))
    cfg = MaskConfig()
    a = corrupt_tokens(tokens, target, cfg, torch.Generator().manual_seed(3))
    b = corrupt_tokens(tokens, target, cfg, torch.Generator().manual_seed(3))
    c = corrupt_tokens(tokens, target, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(corrupt_tokens(tokens, target, MaskConfig(noise_scale=0.0), None), tokens)


def test_corrupt_tokens_rejects_bad_shapes():
    tokens, target = _tokens_and_targets()
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        corrupt_tokens(tokens[0], target, MaskConfig())
    with pytest.raises(ValueError, match="target_idx must be"):
        corrupt_tokens(tokens, target[:1], MaskConfig())
    with pytest.raises(ValueError, match="outside"):
        corrupt_tokens(tokens, target + 100, MaskConfig())


@pytest.mark.parametrize("mode", ["drop", "noise"])
def test_masks_drive_encoder_and_predictor(mode):
    """The trainer's path for both modes runs with these masks on a tiny model."""
    from vjepa2.models import EncoderConfig, Predictor, PredictorConfig, VisionEncoder

    encoder = VisionEncoder(EncoderConfig(dim=48, depth=1, heads=4, mlp_hidden=96, img_size=32, num_frames=4))
    predictor = Predictor(PredictorConfig(enc_dim=48, dim=48, depth=1, heads=4, mlp_hidden=96,
                                          num_mask_tokens=2, img_size=32, num_frames=4))
    clip = torch.randn(3, 3, 4, 32, 32)
    cfg = MaskConfig(mode=mode)
    grid = encoder.grid(clip.shape)
    for i, (context, target) in enumerate(sample_masks(grid, 3, cfg, 0)):
        if mode == "drop":
            pred = predictor(encoder(clip, keep=context), context, target, mask_index=i, grid=grid)
        else:
            tokens, grid = encoder.embed(clip)
            noisy = corrupt_tokens(tokens, target, cfg, torch.Generator().manual_seed(i))
            pred = predictor.forward_dense(encoder.forward_tokens(noisy, None, grid), target, mask_index=i, grid=grid)
        assert pred.shape == (3, target.shape[1], 48) and torch.isfinite(pred).all()
