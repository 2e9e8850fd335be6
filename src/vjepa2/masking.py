"""Multi-block 3D masks and the noise ("mask denoising") corruption of patch embeddings.

A clip of ``T x H x W`` pixels becomes a token grid ``(T', H', W')`` (tubelets, raster order,
time slowest; see :mod:`vjepa2.layers.rope`). A mask generator (:class:`BlockMaskSpec`) places
``num_blocks`` boxes of ``t x h x w`` tokens on that grid; with the default temporal scale 1 the
boxes are tubes through every time step. The *target* tokens are the union of the boxes, the
*context* tokens the complement. Each generator yields, per batch,
``(context_idx (B, Nc), target_idx (B, Nt))``: sorted, unique flat token indices.

As in the public release:

* the box size ``(t, h, w)`` is drawn once per batch and generator; the box positions per sample;
* ``h = round(sqrt(k * a))``, ``w = round(sqrt(k / a))`` with ``k = floor(H' W' * spatial_scale)``
  and ``a`` (height / width) drawn from ``aspect_ratio``; ``t = floor(T' * temporal_scale)``;
  each clamped to ``[1, grid size]``;
* counts are made equal within a batch by keeping the *first* ``min`` indices (ascending order) of
  every sample's context and target lists; the dropped tail tokens are then neither context nor
  target. The public release equalises over each rank's local batch. :attr:`MaskConfig.equalize`
  chooses between that (``"rank_batch"``) and the minimum over the *global* batch
  (``"global_batch"``), which makes a run's masks independent of how many processes share it.

A sample whose boxes happen to cover every token is re-drawn up to :data:`MAX_PLACEMENT_TRIES`
times; if the boxes still cover the whole grid (a tiny grid, or boxes as large as the grid) one
randomly chosen token is returned to the context, so a sample always has >= 1 context token and
>= 1 target token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from vjepa2.config import ConfigError

#: How many times a sample's boxes are re-placed when they leave no context token.
MAX_PLACEMENT_TRIES = 20

# Stream tags keep the random streams of the loader (data, masks, box sizes) apart even when
# they are keyed by the same (seed, step, slot) numbers.
_SHAPE_STREAM = 0x5A17
_MASK_STREAM = 0x3A5C
_TRUNCATE_STREAM = 0x7C11

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class BlockMaskSpec:
    """One multi-block mask generator.

    Attributes:
        num_blocks: boxes per sample; the target is their union.
        spatial_scale: ``(min, max)`` fraction of the ``H' x W'`` token frame covered by one box.
        aspect_ratio: ``(min, max)`` of box height / width.
        temporal_scale: ``(min, max)`` fraction of the ``T'`` time steps covered by one box
            (1.0: a tube through the whole clip).
        max_context_time: fraction of the time steps, from the start, whose tokens may be context
            (``ceil(T' * max_context_time)``, at least 1); tokens after them are never context and,
            outside the boxes, not targets either (``max_context_frames_ratio`` of the public code).
            With boxes through time the predictor then extrapolates the boxes' future from the past:
            future prediction. 1.0 (default): no limit.
    """

    num_blocks: int = 8
    spatial_scale: tuple[float, float] = (0.15, 0.15)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    max_context_time: float = 1.0

    def validate(self) -> None:
        # ValueError (not ConfigError): from_dict prefixes it with the key, e.g. mask.generators[1].
        if self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        for name in ("spatial_scale", "temporal_scale", "aspect_ratio"):
            low, high = getattr(self, name)
            if not (0 < low <= high):
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {(low, high)}")
            if name != "aspect_ratio" and high > 1.0:
                raise ValueError(f"{name} max must be <= 1 (a fraction of the grid), got {high}")
        if not 0 < self.max_context_time <= 1:
            raise ValueError(f"max_context_time must lie in (0, 1], got {self.max_context_time}")

    def context_steps(self, frames: int) -> int:
        """How many of ``frames`` time steps (from the start) may hold context tokens."""
        return max(1, min(frames, math.ceil(frames * self.max_context_time - 1e-9)))


#: The public short-range generator: 8 boxes of 15% of the frame each, tubes through time.
SHORT_RANGE = BlockMaskSpec(num_blocks=8, spatial_scale=(0.15, 0.15))
#: The public long-range generator: 2 boxes of 70% of the frame each, tubes through time.
LONG_RANGE = BlockMaskSpec(num_blocks=2, spatial_scale=(0.7, 0.7))


@dataclass(frozen=True)
class MaskConfig:
    """How tokens are masked for pretraining (``mask:`` section of a config).

    Attributes:
        mode: ``"drop"`` (public release): the encoder sees only the context tokens and the
            predictor fills the targets from mask tokens. ``"noise"`` (the mission's "mask
            denoising"): the encoder sees every token, the target tokens' patch embeddings being
            corrupted by :func:`corrupt_tokens`; the predictor predicts the clean features there.
            The loss is on target tokens in both modes.
        generators: the mask generators; each one gives one (context, target) pair per batch and
            uses the predictor's mask token of the same index.
        noise_kind: (``noise`` mode) ``"add"``: ``x + s * eps``, the corrupted token keeps a noisy
            copy of its content; ``"replace"``: ``mu + s * eps``, the content is gone and only
            the clip's mean embedding plus noise is left. ``eps ~ N(0, 1)`` i.i.d. per channel.
        noise_scale: (``noise`` mode) the noise standard deviation ``s``, in units of
            ``noise_reference``.
        noise_reference: (``noise`` mode) ``"clip_std"``: ``s = noise_scale * sigma_b`` where
            ``sigma_b`` is the root-mean-square deviation of clip ``b``'s patch embeddings from
            their per-channel mean over the clip's tokens (``mu_b``, shape ``(D,)``); both are
            computed without gradient, so the noise follows the embedding's scale as it changes
            during training. ``"absolute"``: ``s = noise_scale``, ``mu = 0``.
        equalize: over which samples the equal-count truncation takes its minimum:
            ``"rank_batch"`` (public release: each process's local batch) or ``"global_batch"``
            (all ranks' samples of the step: the masks no longer depend on the process count,
            at the price of computing the whole global batch's masks on every rank).
        truncate: which of a sample's indices survive that truncation: ``"first"`` (public
            release: the lowest, so on a small grid the dropped tokens pile up in the last time
            steps) or ``"random"`` (a random subset, drawn per sample from the mask's stream).
    """

    mode: Literal["drop", "noise"] = "drop"
    generators: tuple[BlockMaskSpec, ...] = (SHORT_RANGE, LONG_RANGE)
    noise_kind: Literal["add", "replace"] = "add"
    noise_scale: float = 1.0
    noise_reference: Literal["clip_std", "absolute"] = "clip_std"
    equalize: Literal["rank_batch", "global_batch"] = "rank_batch"
    truncate: Literal["first", "random"] = "first"

    def validate(self) -> None:
        if self.mode not in ("drop", "noise"):
            raise ConfigError(f"mask.mode: {self.mode!r} is not one of ['drop', 'noise']")
        if not self.generators:
            raise ConfigError("mask.generators is empty; give at least one block mask generator")
        for i, spec in enumerate(self.generators):
            if not isinstance(spec, BlockMaskSpec):
                raise ConfigError(f"mask.generators[{i}] must be a BlockMaskSpec, got {spec!r}")
            try:
                spec.validate()
            except ValueError as err:
                raise ConfigError(f"mask.generators[{i}]: {err}") from None
        if self.noise_kind not in ("add", "replace"):
            raise ConfigError(f"mask.noise_kind: {self.noise_kind!r} is not one of ['add', 'replace']")
        if self.noise_reference not in ("clip_std", "absolute"):
            raise ConfigError(f"mask.noise_reference: {self.noise_reference!r} is not one of "
                              "['clip_std', 'absolute']")
        if not (math.isfinite(self.noise_scale) and self.noise_scale >= 0):
            raise ConfigError(f"mask.noise_scale must be a finite number >= 0, got {self.noise_scale}")
        if self.equalize not in ("rank_batch", "global_batch"):
            raise ConfigError(f"mask.equalize: {self.equalize!r} is not one of ['rank_batch', 'global_batch']")


# ----------------------------------------------------------------------------------------------
# Sampling


def _check_grid(grid: Sequence[int]) -> Grid:
    if len(grid) != 3 or any(int(g) < 1 for g in grid):
        raise ValueError(f"grid must be three positive sizes (T', H', W'), got {tuple(grid)}")
    if grid[0] * grid[1] * grid[2] < 2:
        raise ValueError(f"grid {tuple(grid)} has a single token; masking needs >= 2 (one context, one "
                         "target): use more frames or a larger clip")
    return int(grid[0]), int(grid[1]), int(grid[2])


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return low + float(rng.random()) * (high - low)


def sample_block_shape(grid: Grid, spec: BlockMaskSpec, rng: np.random.Generator) -> Grid:
    """Box size ``(t, h, w)`` in tokens for one batch of generator ``spec`` on ``grid``."""
    frames, height, width = _check_grid(grid)
    t = int(frames * _uniform(rng, spec.temporal_scale))
    area = int(height * width * _uniform(rng, spec.spatial_scale))
    aspect = _uniform(rng, spec.aspect_ratio)
    h = int(round(math.sqrt(area * aspect)))
    w = int(round(math.sqrt(area / aspect)))
    return min(max(t, 1), frames), min(max(h, 1), height), min(max(w, 1), width)


def sample_target_mask(grid: Grid, num_blocks: int, block_shape: Grid, rng: np.random.Generator,
                       context_steps: int | None = None) -> np.ndarray:
    """Union of ``num_blocks`` boxes of ``block_shape`` at random positions.

    ``context_steps``: only the first this many time steps may hold context (default: all); the
    boxes are re-placed until one of their tokens is free.

    Returns:
        ``(T' * H' * W',)`` bool, True at target tokens; at least one token of the first
        ``context_steps`` time steps is False (context).
    """
    frames, height, width = _check_grid(grid)
    steps = frames if context_steps is None else context_steps
    t, h, w = block_shape
    for _ in range(MAX_PLACEMENT_TRIES):
        mask = np.zeros((frames, height, width), dtype=bool)
        starts = rng.integers(0, (frames - t + 1, height - h + 1, width - w + 1), size=(num_blocks, 3))
        for t0, y0, x0 in starts:
            mask[t0:t0 + t, y0:y0 + h, x0:x0 + w] = True
        if not mask[:steps].all():
            return mask.reshape(-1)
    # The boxes cover the context steps whatever their positions: give one token back to the context.
    mask[:steps].reshape(-1)[int(rng.integers(steps * height * width))] = False
    return mask.reshape(-1)


def context_of(target: np.ndarray, grid: Grid, context_steps: int) -> np.ndarray:
    """Context tokens of a target mask ``(N,)``: the non-targets of the first ``context_steps`` time steps."""
    context = ~np.asarray(target, dtype=bool)
    context[context_steps * grid[1] * grid[2]:] = False
    return context


def masks_to_indices(target_masks: np.ndarray, num_context: int | None = None, num_target: int | None = None,
                     context_masks: np.ndarray | None = None,
                     rngs: Sequence[np.random.Generator] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn per-sample masks into equal-length sorted index lists.

    Args:
        target_masks: ``(B, N)`` bool, True at target tokens.
        num_context / num_target: counts to truncate to; default: the minimum over this batch.
        context_masks: ``(B, N)`` bool, True at context tokens; default: every non-target token.
        rngs: one generator per sample: truncate to a random subset of each row (``truncate:
            random``); None keeps each row's first indices (the public release).

    Returns:
        ``context_idx (B, Nc)`` and ``target_idx (B, Nt)``, int64, ascending within each row.
    """
    target_masks = np.asarray(target_masks, dtype=bool)
    if target_masks.ndim != 2:
        raise ValueError(f"target_masks must be (B, N), got shape {target_masks.shape}")
    context_masks = ~target_masks if context_masks is None else np.asarray(context_masks, dtype=bool)
    num_targets, num_contexts = target_masks.sum(axis=1), context_masks.sum(axis=1)
    num_context = int(num_contexts.min()) if num_context is None else num_context
    num_target = int(num_targets.min()) if num_target is None else num_target
    if num_context > num_contexts.min() or num_target > num_targets.min():
        raise ValueError(f"cannot keep {num_context} context / {num_target} target tokens: a sample has only "
                         f"{int(num_contexts.min())} / {int(num_targets.min())}")

    def keep(row: np.ndarray, count: int, b: int) -> np.ndarray:
        index = np.flatnonzero(row)  # ascending
        if rngs is None or count == len(index):
            return index[:count]
        return np.sort(rngs[b].choice(index, size=count, replace=False))

    context = np.stack([keep(row, num_context, b) for b, row in enumerate(context_masks)])
    target = np.stack([keep(row, num_target, b) for b, row in enumerate(target_masks)])
    return torch.from_numpy(context.astype(np.int64)), torch.from_numpy(target.astype(np.int64))


def _numpy_rng(generator: torch.Generator | np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return np.random.default_rng(seed)
    if generator is None or isinstance(generator, (int, np.integer)):
        return np.random.default_rng(generator)
    raise TypeError(f"generator must be a torch.Generator, numpy Generator, int seed or None, got {generator!r}")


def sample_masks(grid: Grid, batch_size: int, cfg: MaskConfig,
                 generator: torch.Generator | np.random.Generator | int | None = None
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Masks for one batch drawn from one random stream (for tests and simple scripts).

    Args:
        grid: token grid ``(T', H', W')``.
        batch_size: ``B``.
        generator: a ``torch.Generator``, a NumPy generator, or an int seed (same seed, same masks).

    Returns:
        One ``(context_idx (B, Nc), target_idx (B, Nt))`` pair per generator of ``cfg``.
    """
    grid = _check_grid(grid)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = _numpy_rng(generator)
    out = []
    for spec in cfg.generators:
        shape = sample_block_shape(grid, spec, rng)
        steps = spec.context_steps(grid[0])
        targets = np.stack([sample_target_mask(grid, spec.num_blocks, shape, rng, steps) for _ in range(batch_size)])
        contexts = np.stack([context_of(target, grid, steps) for target in targets])
        rngs = [rng] * batch_size if cfg.truncate == "random" else None
        out.append(masks_to_indices(targets, context_masks=contexts, rngs=rngs))
    return out


def step_masks(grid: Grid, cfg: MaskConfig, *, seed: int, step: int, sample_ids: Sequence[int],
               global_ids: Sequence[int] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Masks of batch ``step`` for the given global sample slots: a pure function of its arguments.

    The box size of generator ``i`` is keyed by ``(seed, step, i)``; the box positions of a sample
    by ``(seed, step, slot)``. So a slot gets the same target mask whichever process builds it.

    Args:
        grid: token grid ``(T', H', W')``.
        seed / step: the run seed and the batch's step number.
        sample_ids: the global slot numbers of this process's ``B`` samples (in batch order).
        global_ids: all slots of the step's global batch; used only with
            ``cfg.equalize == "global_batch"`` (equal counts over every rank's samples).

    Returns:
        One ``(context_idx (B, Nc), target_idx (B, Nt))`` pair per generator of ``cfg``.
    """
    grid = _check_grid(grid)
    sample_ids = [int(s) for s in sample_ids]
    if not sample_ids:
        raise ValueError("sample_ids is empty")
    ids = sample_ids
    if cfg.equalize == "global_batch" and global_ids is not None:
        ids = [int(s) for s in global_ids]
        missing = set(sample_ids) - set(ids)
        if missing:
            raise ValueError(f"sample_ids {sorted(missing)[:5]} are not in global_ids")
    shapes = [sample_block_shape(grid, spec, np.random.default_rng([seed, _SHAPE_STREAM, step, i]))
              for i, spec in enumerate(cfg.generators)]
    targets = [[] for _ in cfg.generators]
    for slot in ids:
        # One stream per sample, consumed generator after generator.
        rng = np.random.default_rng([seed, _MASK_STREAM, step, slot])
        for i, spec in enumerate(cfg.generators):
            targets[i].append(sample_target_mask(grid, spec.num_blocks, shapes[i], rng, spec.context_steps(grid[0])))
    position = {slot: k for k, slot in enumerate(ids)}
    rows = [position[s] for s in sample_ids]
    out = []
    for i, (spec, masks) in enumerate(zip(cfg.generators, targets)):
        masks = np.stack(masks)
        contexts = np.stack([context_of(m, grid, spec.context_steps(grid[0])) for m in masks])
        rngs = ([np.random.default_rng([seed, _TRUNCATE_STREAM, step, slot, i]) for slot in sample_ids]
                if cfg.truncate == "random" else None)
        # The minimum runs over every sample in `ids`: the local batch, or the global one.
        out.append(masks_to_indices(masks[rows], int(contexts.sum(axis=1).min()), int(masks.sum(axis=1).min()),
                                    context_masks=contexts[rows], rngs=rngs))
    return out


# ----------------------------------------------------------------------------------------------
# Noise corruption (mode = "noise")


def corrupt_tokens(tokens: torch.Tensor, target_idx: torch.Tensor, cfg: MaskConfig,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Corrupt the patch embeddings at the target positions with Gaussian noise.

    With ``eps ~ N(0, 1)`` drawn per target token and channel, ``s`` and ``mu`` as described in
    :class:`MaskConfig` (``noise_reference``), a target token ``x`` becomes ``x + s * eps``
    (``noise_kind = "add"``) or ``mu + s * eps`` (``"replace"``). Other tokens are unchanged.
    Gradients flow to the uncorrupted tokens and, with ``"add"``, through ``x`` of the targets.

    Args:
        tokens: ``(B, N, D)`` patch embeddings (``encoder.embed(clip)[0]``).
        target_idx: ``(B, Nt)`` flat indices of the tokens to corrupt.
        generator: source of the noise (its device is where the noise is drawn); None uses the
            global torch RNG.

    Returns:
        ``(B, N, D)``, a new tensor.
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (B, N, D), got shape {tuple(tokens.shape)}")
    B, N, D = tokens.shape
    if target_idx.ndim != 2 or target_idx.shape[0] != B:
        raise ValueError(f"target_idx must be (B={B}, Nt), got shape {tuple(target_idx.shape)}")
    if target_idx.dtype not in (torch.int64, torch.int32):
        raise TypeError("target_idx must hold integer token indices")
    if target_idx.numel() and (int(target_idx.min()) < 0 or int(target_idx.max()) >= N):
        raise ValueError(f"target_idx holds indices outside [0, {N})")
    target_idx = target_idx.long().to(tokens.device)
    noise_device = generator.device if generator is not None else tokens.device
    eps = torch.randn((B, target_idx.shape[1], D), generator=generator, device=noise_device,
                      dtype=torch.float32).to(device=tokens.device, dtype=tokens.dtype)
    if cfg.noise_reference == "clip_std":
        with torch.no_grad():
            # At least float32 so bf16 embeddings give a sensible scale.
            flat = tokens.detach().to(torch.promote_types(tokens.dtype, torch.float32))
            mean = flat.mean(dim=1, keepdim=True)                                    # (B, 1, D)
            std = (flat - mean).pow(2).mean(dim=(1, 2), keepdim=True).sqrt()         # (B, 1, 1)
        mean, std = mean.to(tokens.dtype), std.to(tokens.dtype)
    else:
        mean = torch.zeros((B, 1, D), dtype=tokens.dtype, device=tokens.device)
        std = torch.ones((B, 1, 1), dtype=tokens.dtype, device=tokens.device)
    index = target_idx.unsqueeze(-1).expand(-1, -1, D)
    if cfg.noise_kind == "add":
        corrupted = torch.gather(tokens, 1, index) + cfg.noise_scale * std * eps
    else:
        corrupted = mean.expand(B, target_idx.shape[1], D) + cfg.noise_scale * std * eps
    return tokens.scatter(1, index, corrupted)


def describe(cfg: MaskConfig) -> str:
    """One line per generator for logs, e.g. ``8 blocks x 0.15 (aspect 0.75-1.5, time 1.0)``."""
    lines = []
    for spec in cfg.generators:
        (s0, s1), (a0, a1), (t0, t1) = spec.spatial_scale, spec.aspect_ratio, spec.temporal_scale
        scale = f"{s0:g}" if s0 == s1 else f"{s0:g}-{s1:g}"
        time = f"{t0:g}" if t0 == t1 else f"{t0:g}-{t1:g}"
        limit = f", context in the first {spec.max_context_time:g} of time" if spec.max_context_time < 1 else ""
        lines.append(f"{spec.num_blocks} blocks x {scale} (aspect {a0:g}-{a1:g}, time {time}{limit})")
    return "; ".join(lines)


__all__ = ["BlockMaskSpec", "LONG_RANGE", "MAX_PLACEMENT_TRIES", "MaskConfig", "SHORT_RANGE", "context_of",
           "corrupt_tokens",
           "describe", "masks_to_indices", "sample_block_shape", "sample_masks", "sample_target_mask",
           "step_masks"]
