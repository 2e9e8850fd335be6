"""V-JEPA 2-AC: the action-conditioned predictor (a latent world model; arXiv 2506.09985, V-JEPA 2-AC).

Each time step ``t`` contributes ``[action_t, state_t, (extrinsics_t,) frame tokens_t]`` to one
sequence; attention is *block-causal* (a token of step ``t`` sees every token of steps ``<= t``),
and the output at the frame tokens of step ``t`` is the prediction of the frame latents of step
``t + 1``. Frame tokens get 3D-RoPE at ``(t, row * g / H', col * g / W')`` where ``g`` is the
reference grid (``img_size / patch_size``, 16 for the public 256 px model) and ``H' x W'`` the
actual grid; action/state tokens rotate only the time chunk, at position ``t``.

Latents in and out are *layer-normed* encoder features (:func:`normalize_latents`): the public
training feeds layer-normed targets in and layer-norms the predictions before the loss and before
feeding them back, and :meth:`ACPredictor.rollout` does the same.

Incremental use (autoregressive rollout) keeps one :class:`~vjepa2.layers.attention.KVCache` per
block in an :class:`ACCache`; feeding step ``t`` then attends to the cached steps ``< t`` and
costs one step's tokens instead of the whole prefix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vjepa2.config import ConfigError, from_dict
from vjepa2.layers.attention import KVCache
from vjepa2.layers.block import Block
from vjepa2.layers.rope import rope_tables
from vjepa2.models.init import init_transformer_
from vjepa2.models.sizes import SIZES, TransformerConfig


@dataclass(frozen=True)
class ACPredictorConfig(TransformerConfig):
    """The action-conditioned predictor. Defaults describe the public V-JEPA 2-AC model
    (24 blocks, width 1024, 16 heads, 7-D actions and states, ViT-g encoder features of width 1408).

    ``img_size / patch_size`` is the *reference* token grid that frame-token row/col positions are
    rescaled to, so a model trained at 256 px keeps its geometry at other resolutions.
    ``use_extrinsics`` adds a camera-extrinsics token per step (the public code has the encoder
    ``extrinsics_encoder`` of width ``action_dim - 1`` always, but the released model does not use it).
    ``residual`` (ours, off in the paper and the public weights): the output at step ``t`` is the
    input latent of step ``t`` plus the projection, whose weights start at zero, so an untrained
    model copies its input and training only has to learn what changes from one frame to the next.
    ``action_scale`` / ``state_scale`` (ours, 1 in the public weights) multiply actions and states
    before their Linear encoders. AdamW moves those weights by about ``lr`` per step whatever the
    input's size, so with actions of size ~0.05 (metres, radians) the action's effect on the tokens
    learns ~20x slower than with inputs of size ~1; ``vjepa2 train-ac`` sets the scales from the
    training data (``model.action_scale`` / ``model.state_scale``).
    """

    enc_dim: int = 1408
    action_dim: int = 7
    state_dim: int = 7
    extrinsics_dim: int = 6
    use_extrinsics: bool = False
    residual: bool = False
    action_scale: float = 1.0
    state_scale: float = 1.0

    POSITIVE: ClassVar[tuple[str, ...]] = TransformerConfig.POSITIVE + (
        "enc_dim", "action_dim", "state_dim", "extrinsics_dim", "action_scale", "state_scale")

    @property
    def reference_grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def cond_tokens(self) -> int:
        """Conditioning tokens per step: action, state (and extrinsics)."""
        return 3 if self.use_extrinsics else 2

    def validate(self) -> None:
        super().validate()
        if not self.rope_mode:
            raise ConfigError(f"position={self.position!r}: the AC predictor needs a RoPE mode "
                              f"(rope_compatible or rope_rotary)")
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size={self.img_size} is not a multiple of patch_size={self.patch_size}")


def ac_predictor_config(size: str = "large", enc_dim: int = 1408, **overrides) -> ACPredictorConfig:
    """AC predictor config of a named width/depth/heads (``tiny`` ... ``giant``, see
    :data:`vjepa2.models.sizes.SIZES`); ``large`` is the paper's 24 x 1024 x 16.

    >>> ac_predictor_config("tiny", enc_dim=192, depth=2).depth
    2
    """
    if size not in SIZES:
        raise ConfigError(f"unknown AC predictor size {size!r}; choose one of {', '.join(SIZES)}")
    dim, depth, heads, mlp_hidden = SIZES[size]
    return from_dict(ACPredictorConfig, {"enc_dim": enc_dim, "dim": dim, "depth": depth, "heads": heads,
                                         "mlp_hidden": mlp_hidden, **overrides})


def normalize_latents(latents: torch.Tensor) -> torch.Tensor:
    """Layer norm without affine over the feature axis: ``(..., D) -> (..., D)``.

    Encoder features are normalised like this before they serve as AC inputs/targets, and
    predictions are normalised before the loss and before being fed back in a rollout.
    """
    return F.layer_norm(latents, (latents.shape[-1],))


class ACCache:
    """Keys and values of the steps fed so far: one :class:`KVCache` per predictor block.

    ``steps`` counts the fed time steps; the next :meth:`ACPredictor.forward` with this cache
    continues at step ``steps``. :class:`KVCache` replaces (never modifies in place) its tensors
    when it grows, so :meth:`fork` and :meth:`expand` can share the prefix tensors safely.
    """

    def __init__(self, depth: int) -> None:
        self.layers = [KVCache() for _ in range(depth)]
        self.steps = 0

    @property
    def batch_size(self) -> int | None:
        first = self.layers[0].keys if self.layers else None
        return None if first is None else first.shape[0]

    def fork(self) -> ACCache:
        """An independent continuation point sharing the cached prefix (no copy)."""
        return self._rebuild(lambda t: t)

    def expand(self, batch: int) -> ACCache:
        """Broadcast a batch-1 cache to ``batch`` samples (views, no copy) — e.g. one observed
        context rolled out under 800 candidate action sequences."""
        if self.batch_size not in (1, batch):
            raise ValueError(f"can only expand a cache of batch 1 (this one has {self.batch_size}) to {batch}")
        return self._rebuild(lambda t: t.expand(batch, *t.shape[1:]))

    def repeat_interleave(self, repeats: int) -> ACCache:
        """Each cached sample repeated ``repeats`` times along the batch (``(B, ...) -> (B*repeats, ...)``)."""
        return self._rebuild(lambda t: t.repeat_interleave(repeats, dim=0))

    def _rebuild(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ACCache:
        out = ACCache(0)
        out.steps = self.steps
        for layer in self.layers:
            new = KVCache()
            if layer.keys is not None:
                new.keys, new.values = fn(layer.keys), fn(layer.values)
            out.layers.append(new)
        return out


class ACPredictor(nn.Module):
    """Action-conditioned ViT predictor over per-step frame latents.

    Parameter names (``predictor_embed``, ``action_encoder``, ``state_encoder``,
    ``extrinsics_encoder``, ``predictor_blocks.N.*``, ``predictor_norm``, ``predictor_proj``)
    follow the public checkpoints, so their state dicts load after prefix stripping
    (:func:`vjepa2.world_model.ac_weights.ac_predictor_from_public`).
    """

    def __init__(self, config: ACPredictorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ACPredictorConfig()
        self.predictor_embed = nn.Linear(config.enc_dim, config.dim)
        self.action_encoder = nn.Linear(config.action_dim, config.dim)
        self.state_encoder = nn.Linear(config.state_dim, config.dim)
        # Always present (as in the public checkpoints) so their weights load; read only with use_extrinsics.
        self.extrinsics_encoder = nn.Linear(config.extrinsics_dim, config.dim)
        self.predictor_blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_hidden, config.qkv_bias, config.norm_eps)
            for _ in range(config.depth)
        )
        self.predictor_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.predictor_proj = nn.Linear(config.dim, config.enc_dim)
        init_transformer_(self, self.predictor_blocks)
        if config.residual:
            nn.init.zeros_(self.predictor_proj.weight)
            nn.init.zeros_(self.predictor_proj.bias)

    # ------------------------------------------------------------------------------------------
    # Sequence layout
    # ------------------------------------------------------------------------------------------

    def new_cache(self) -> ACCache:
        """An empty cache for incremental :meth:`forward` calls."""
        return ACCache(len(self.predictor_blocks))

    def frame_grid(self, tokens_per_frame: int, grid: tuple[int, int] | None) -> tuple[int, int]:
        """``(H', W')`` of frames with ``tokens_per_frame`` tokens (square unless ``grid`` says otherwise)."""
        if grid is not None:
            if len(grid) != 2 or grid[0] * grid[1] != tokens_per_frame:
                raise ValueError(f"grid={tuple(grid)} does not hold the {tokens_per_frame} tokens per frame; "
                                 f"pass grid=(H', W') with H' * W' = tokens per frame")
            return int(grid[0]), int(grid[1])
        side = math.isqrt(tokens_per_frame)
        if side * side != tokens_per_frame:
            raise ValueError(f"{tokens_per_frame} tokens per frame is not a square grid; pass grid=(H', W')")
        return side, side

    def step_rope(self, first_step: int, steps: int, grid: tuple[int, int], device: torch.device,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE tables ``(1, steps * (cond + H'W'), head_dim)`` for steps ``first_step ..``,
        tokens ordered ``[cond tokens, frame tokens]`` per step."""
        cfg = self.config
        h, w = grid
        t = torch.arange(first_step, first_step + steps, dtype=torch.float32, device=device)
        rows = torch.arange(h, dtype=torch.float32, device=device) * (cfg.reference_grid / h)
        cols = torch.arange(w, dtype=torch.float32, device=device) * (cfg.reference_grid / w)
        frame_pos = torch.stack(torch.broadcast_tensors(t[:, None, None], rows[None, :, None], cols[None, None, :]),
                                dim=-1).reshape(steps, h * w, 3)
        cond_pos = torch.zeros(steps, cfg.cond_tokens, 3, device=device)
        cond_pos[..., 0] = t[:, None]
        frame_cos, frame_sin = rope_tables(frame_pos, cfg.head_dim, cfg.rope_mode)
        cond_cos, cond_sin = rope_tables(cond_pos, cfg.head_dim, cfg.rope_mode, axes=(True, False, False))
        cos = torch.cat((cond_cos, frame_cos), dim=1).reshape(1, -1, cfg.head_dim)
        sin = torch.cat((cond_sin, frame_sin), dim=1).reshape(1, -1, cfg.head_dim)
        return cos, sin

    def block_causal_mask(self, new_steps: int, cached_steps: int, tokens_per_step: int,
                          device: torch.device) -> torch.Tensor | None:
        """Boolean ``(new_steps * n, (cached_steps + new_steps) * n)`` mask, True = may attend:
        a query of step ``t`` sees keys of steps ``<= t``. None when one step is fed (it sees everything)."""
        if new_steps == 1:
            return None
        query_step = torch.arange(cached_steps, cached_steps + new_steps, device=device)
        key_step = torch.arange(cached_steps + new_steps, device=device)
        allowed = query_step[:, None] >= key_step[None, :]
        return allowed.repeat_interleave(tokens_per_step, 0).repeat_interleave(tokens_per_step, 1)

    # ------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------

    def forward(
        self,
        frames: torch.Tensor,
        actions: torch.Tensor,
        states: torch.Tensor,
        extrinsics: torch.Tensor | None = None,
        grid: tuple[int, int] | None = None,
        cache: ACCache | None = None,
    ) -> torch.Tensor:
        """Predict the next frame's latents for each of ``T`` steps.

        Args:
            frames: ``(B, T, N, enc_dim)`` (layer-normed) frame latents of steps ``t0 .. t0+T-1``,
                ``N = H' * W'`` tokens per frame in raster order; or flattened ``(B, T*N, enc_dim)``
                as the public predictor takes them (``T`` is then read from ``actions``).
            actions: ``(B, T, action_dim)``; ``actions[:, i]`` is the action taken after frame ``i``.
            states: ``(B, T, state_dim)`` proprioceptive state at each frame.
            extrinsics: ``(B, T, extrinsics_dim)``; required iff ``config.use_extrinsics``.
            grid: frame token grid ``(H', W')``; inferred for square grids.
            cache: continue after the ``cache.steps`` steps fed before (``t0 = cache.steps``); the
                new steps' keys/values are appended to it. None: a standalone sequence from step 0.

        Returns:
            ``(B, T, N, enc_dim)``: output ``[:, i]`` is the prediction of the latents of frame
            ``t0 + i + 1`` (not normalised; see :func:`normalize_latents`; with ``config.residual``
            it is ``frames[:, i]`` plus the predicted change); ``(B, T*N, enc_dim)`` for flattened input.
        """
        cfg = self.config
        if frames.ndim == 3 and actions is not None and actions.ndim == 3 and actions.shape[1] > 0:
            steps = actions.shape[1]
            if frames.shape[1] % steps:
                raise ValueError(f"flattened frames hold {frames.shape[1]} tokens, not a multiple of the "
                                 f"{steps} steps that actions has")
            out = self(frames.unflatten(1, (steps, -1)), actions, states, extrinsics, grid, cache)
            return out.flatten(1, 2)
        if frames.ndim != 4:
            raise ValueError(f"frames must be (B, T, N, enc_dim) or (B, T*N, enc_dim), got shape {tuple(frames.shape)}")
        B, T, N, D = frames.shape
        if D != cfg.enc_dim:
            raise ValueError(f"frames have width {D} but the predictor expects enc_dim={cfg.enc_dim}")
        self._check_cond("actions", actions, B, T, cfg.action_dim)
        self._check_cond("states", states, B, T, cfg.state_dim)
        if cfg.use_extrinsics:
            if extrinsics is None:
                raise ValueError("this predictor has use_extrinsics=True: pass extrinsics (B, T, extrinsics_dim)")
            self._check_cond("extrinsics", extrinsics, B, T, cfg.extrinsics_dim)
        elif extrinsics is not None:
            raise ValueError("extrinsics given but the predictor has use_extrinsics=False")
        grid = self.frame_grid(N, grid)
        first_step = 0 if cache is None else cache.steps
        if cache is not None and cache.batch_size not in (None, B):
            raise ValueError(f"the cache holds batch {cache.batch_size} but the input has batch {B}; "
                             f"use cache.expand({B}) first")

        x = self.predictor_embed(frames)  # (B, T, N, dim)
        cond = [self.action_encoder(actions.to(x.dtype) * cfg.action_scale),
                self.state_encoder(states.to(x.dtype) * cfg.state_scale)]
        if cfg.use_extrinsics:
            cond.append(self.extrinsics_encoder(extrinsics.to(x.dtype)))
        x = torch.cat([c.unsqueeze(2) for c in cond] + [x], dim=2)  # (B, T, cond + N, dim)
        per_step = cfg.cond_tokens + N
        x = x.reshape(B, T * per_step, cfg.dim)

        rope = self.step_rope(first_step, T, grid, x.device)
        mask = self.block_causal_mask(T, first_step, per_step, x.device)
        layer_caches = cache.layers if cache is not None else [None] * len(self.predictor_blocks)
        use_ckpt = cfg.activation_checkpointing and self.training and torch.is_grad_enabled() and cache is None
        for block, layer_cache in zip(self.predictor_blocks, layer_caches):
            if use_ckpt:
                x = checkpoint(block, x, rope, mask, use_reentrant=False)
            else:
                x = block(x, rope=rope, attn_mask=mask, cache=layer_cache)
        if cache is not None:
            cache.steps += T

        x = x.reshape(B, T, per_step, cfg.dim)[:, :, cfg.cond_tokens:]
        out = self.predictor_proj(self.predictor_norm(x))
        return out + frames.to(out.dtype) if cfg.residual else out

    @staticmethod
    def _check_cond(name: str, value: torch.Tensor, batch: int, steps: int, dim: int) -> None:
        if value is None or value.ndim != 3 or tuple(value.shape) != (batch, steps, dim):
            shape = None if value is None else tuple(value.shape)
            raise ValueError(f"{name} must have shape (B={batch}, T={steps}, {dim}), got {shape}")

    # ------------------------------------------------------------------------------------------
    # Autoregressive rollout
    # ------------------------------------------------------------------------------------------

    def rollout(
        self,
        frames: torch.Tensor,
        actions: torch.Tensor,
        states: torch.Tensor,
        state_update: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        extrinsics: torch.Tensor | None = None,
        grid: tuple[int, int] | None = None,
        use_cache: bool = True,
        cache: ACCache | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Imagine ``H`` future frames from ``T0`` observed ones, feeding predictions back.

        Args:
            frames: ``(B, T0, N, enc_dim)`` observed, layer-normed latents (``T0 >= 1``).
            actions: ``(B, T0 + H - 1, action_dim)``: the actions after each observed frame, then
                one per imagined frame except the last; ``H = actions.shape[1] - T0 + 1``.
            states: ``(B, T0 + H - 1, state_dim)`` (known states at every input step, as in
                training), or ``(B, T0, state_dim)``: the states of the imagined steps are then
                integrated with ``state_update(state (B, S), action (B, A)) -> (B, S)``.
            state_update: required when ``states`` stops at ``T0``; e.g.
                :func:`vjepa2.data.trajectories.trajectory.apply_action` for the 7-D pose convention.
            extrinsics: ``(B, T0 + H - 1, extrinsics_dim)`` when ``use_extrinsics``.
            grid: frame token grid ``(H', W')`` (square by default).
            use_cache: feed one step at a time through a KV cache (cost linear in ``H``); False
                recomputes the whole sequence for every new frame (the reference path).
            cache: with ``use_cache``, a cache holding ``P`` earlier steps (e.g. past observations
                whose actions are known, fed once and shared by many samples with
                :meth:`ACCache.expand`); ``frames``/``actions``/``states`` then start at step ``P``.
                The given cache is left unchanged (the rollout continues on a fork).
            normalize: layer-norm each prediction (the training convention) before returning it
                and feeding it back.

        Returns:
            ``(B, H, N, enc_dim)`` imagined latents of frames ``T0 .. T0 + H - 1``.
        """
        B, T0 = frames.shape[:2]
        total = actions.shape[1]
        if total < T0:
            raise ValueError(f"actions must cover the {T0} observed steps and the imagined ones: "
                             f"got {total} actions for {T0} frames (need T0 + H - 1 >= T0)")
        if states.shape[1] not in (T0, total):
            raise ValueError(f"states must have T0={T0} or T0 + H - 1={total} steps, got {states.shape[1]}")
        states = self._complete_states(states, actions, T0, state_update)

        def finish(pred: torch.Tensor) -> torch.Tensor:
            return normalize_latents(pred) if normalize else pred

        def cond(sl: slice) -> dict:
            return {"actions": actions[:, sl], "states": states[:, sl],
                    "extrinsics": None if extrinsics is None else extrinsics[:, sl], "grid": grid}

        outputs = []
        if use_cache:
            if cache is not None:
                cache = cache.fork()
            elif total > T0:  # a new cache pays only when later imagined steps read it
                cache = self.new_cache()
            # The last observed step's output is the first imagined frame; each imagined frame
            # is then fed back as one new step on top of the cache.
            last = self(frames, cache=cache, **cond(slice(0, T0)))[:, -1]
            outputs.append(finish(last))
            for step in range(T0, total):
                nxt = self(outputs[-1].unsqueeze(1), cache=cache, **cond(slice(step, step + 1)))[:, -1]
                outputs.append(finish(nxt))
        else:
            if cache is not None:
                raise ValueError("cache= needs use_cache=True")
            sequence = frames
            for step in range(T0 - 1, total):
                pred = self(sequence, **cond(slice(0, step + 1)))[:, -1]
                outputs.append(finish(pred))
                sequence = torch.cat((sequence, outputs[-1].unsqueeze(1)), dim=1)
        return torch.stack(outputs, dim=1)

    @staticmethod
    def _complete_states(states: torch.Tensor, actions: torch.Tensor, T0: int,
                         state_update: Callable | None) -> torch.Tensor:
        """``(B, T0 or T, S) -> (B, T, S)``: integrate the missing states from the actions."""
        total = actions.shape[1]
        if states.shape[1] == total:
            return states
        if state_update is None:
            raise ValueError(f"states cover {states.shape[1]} of the {total} input steps: pass the states of every "
                             f"step, or state_update=... to integrate them from the actions")
        seq = list(states.unbind(1))
        for step in range(T0, total):
            seq.append(state_update(seq[-1], actions[:, step - 1]))
        return torch.stack(seq, dim=1)
