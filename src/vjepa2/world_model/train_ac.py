"""V-JEPA 2-AC training: the action-conditioned predictor on frozen-encoder features of trajectories.

Read :class:`ACObjective.forward` for the method (SPEC section 8): targets are the layer-normed
encoder features ``h`` of frames ``0 .. T-1``;

* teacher forcing: from the true frames ``0 .. T-2`` (with their actions and states) predict
  frames ``1 .. T-1`` in one block-causal pass;
* rollout: from frame 0 alone, predict frames ``1 .. R`` autoregressively, each prediction
  (layer-normed) fed back as the next input (with the true states, as the public trainer does);

both ``mean |pred - h|^p / p`` (``p = 1``: L1), summed. The rest reuses the pretraining machinery
(:mod:`vjepa2.train`): typed configs, atomic checkpoints with exact resume, the run monitor
(progress bar, CSV/TensorBoard, loss PNG) and ``torchrun`` data parallelism.

::

    vjepa2 collect --env toy-push --episodes 200 --steps 32 --out data/toy_push
    vjepa2 train-ac --data data/toy_push --out runs/ac                # tiny random encoder, CPU
    vjepa2 train-ac --data data/toy_push --out runs/ac encoder.weights=runs/pretrain/checkpoints/step-00001000.pt
    vjepa2 eval-ac --run runs/ac --data data/toy_push_heldout          # L1 at 1, 2, 4, 8 steps vs copy
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from torch import nn

from vjepa2 import precision
from vjepa2.config import ConfigError, from_dict, to_dict
from vjepa2.data.trajectories import TrajectoryError
from vjepa2.models.ac_predictor import ACPredictor, ACPredictorConfig, ac_predictor_config, normalize_latents
from vjepa2.models.encoder import VisionEncoder
from vjepa2.models.sizes import SIZES
from vjepa2.train import distributed as dist_utils
from vjepa2.files import RunLock, atomic_write_text, check_output_dir
from vjepa2.train.checkpoint import CheckpointDir, capture_rng_state, restore_rng_state
from vjepa2.train.config import (CheckpointConfig, DistributedConfig, LogConfig, OptimConfig, PhaseConfig,
                                 check_same_model, config_differences)
from vjepa2.train.monitor import RunMonitor
from vjepa2.train.guard import stop_if_diverged
from vjepa2.train.pretrain import _full_state, _load_full_state, build_optimizer, change_weights
from vjepa2.train.schedules import phase_at, phase_lr
from vjepa2.weights import METADATA_KEY, WeightsError, add_prefix, strip_prefixes
from vjepa2.world_model.features import FeatureSet, build_feature_cache, feature_metadata, read_features
from vjepa2.world_model.weights import ac_predictor_from_public

TRAIN_STATE_KEY = "vjepa2_train"
CHECKPOINT_KEYS = ("predictor", "opt", "epoch", TRAIN_STATE_KEY)
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ACDataConfig:
    """Trajectories (our format or DROID episodes, see :mod:`vjepa2.data.trajectories`) and clips.

    ``clip_steps`` frames per training clip; shorter trajectories are skipped and reported.
    ``cache_dir``: where encoded features are kept (default ``<output_dir>/features``).
    """

    trajectories: str = ""
    fps: float | None = None
    clip_steps: int = 4
    cache_dir: str | None = None
    convention: Literal["auto", "pose7", "delta"] = "auto"

    def validate(self) -> None:
        if self.clip_steps < 2:
            raise ConfigError(f"data.clip_steps must be >= 2 (a context frame and a target), got {self.clip_steps}")
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"data.fps must be positive or null, got {self.fps}")


@dataclass(frozen=True)
class ACEncoderConfig:
    """The frozen encoder: ``weights`` is a checkpoint (.pt/.pth), a transformers directory, or
    ``random:<size>`` (a seeded random encoder, e.g. ``random:tiny``). Frames are resized and
    centre-cropped to ``img_size``; ``store_dtype`` is the dtype of the cached features."""

    weights: str = "random:tiny"
    seed: int = 0
    img_size: int = 64
    batch_size: int = 64
    dtype: Literal["fp32", "bf16"] = "fp32"
    store_dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def validate(self) -> None:
        if self.img_size <= 0 or self.batch_size <= 0:
            raise ConfigError("encoder.img_size and encoder.batch_size must be positive")


@dataclass(frozen=True)
class ACModelConfig:
    """The AC predictor: a named width/depth/heads (``tiny`` ... ``giant``; the paper uses ``large``
    = 24 x 1024 x 16: ``size: large`` with ``dim``/``depth``/``heads``/``mlp_hidden`` set to null)
    with overrides. The defaults (tiny cut to 4 blocks of width 96, 2 heads) train on a CPU in
    minutes. ``action_dim``/``state_dim`` default to the data's. ``init_checkpoint``: start from
    these AC weights (e.g. a public V-JEPA 2-AC checkpoint). ``residual``: predict the change from
    the current latent (see :class:`~vjepa2.models.ac_predictor.ACPredictorConfig`; not the paper's).
    ``action_scale`` / ``state_scale``: factors applied to actions / states before their encoders;
    null (default) = 1 / the root mean square of the training data's entries that vary (so inputs
    reach the encoders at size ~1), or 1 when starting from ``init_checkpoint`` (public weights
    were trained unscaled). The chosen values are stored with the predictor."""

    size: str = "tiny"
    dim: int | None = 96
    depth: int | None = 4
    heads: int | None = 2
    mlp_hidden: int | None = 384
    action_dim: int | None = None
    state_dim: int | None = None
    position: Literal["rope_compatible", "rope_rotary"] = "rope_compatible"
    activation_checkpointing: bool = False
    residual: bool = False
    action_scale: float | None = None
    state_scale: float | None = None
    init_checkpoint: str | None = None

    def validate(self) -> None:
        if self.size not in SIZES:
            raise ConfigError(f"model.size: unknown size {self.size!r}; choose one of {', '.join(SIZES)}")
        for name in ("action_scale", "state_scale"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"model.{name} must be positive or null (from the data), got {value}")
        for name in ("dim", "depth", "heads", "mlp_hidden", "action_dim", "state_dim"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"model.{name} must be positive or null, got {value}")

    def build(self, enc_dim: int, img_size: int, patch_size: int, action_dim: int, state_dim: int,
              action_scale: float = 1.0, state_scale: float = 1.0) -> ACPredictorConfig:
        """The predictor config; ``action_scale``/``state_scale`` are used where the config leaves them null."""
        dims = {k: getattr(self, k) for k in ("dim", "depth", "heads", "mlp_hidden") if getattr(self, k) is not None}
        return ac_predictor_config(self.size, enc_dim=enc_dim, **dims, action_dim=action_dim, state_dim=state_dim,
                                   extrinsics_dim=max(action_dim - 1, 1), img_size=img_size, patch_size=patch_size,
                                   position=self.position, activation_checkpointing=self.activation_checkpointing,
                                   residual=self.residual,
                                   action_scale=self.action_scale or action_scale,
                                   state_scale=self.state_scale or state_scale)


@dataclass(frozen=True)
class ACScheduleConfig:
    """``iterations`` optimiser steps: linear warm-up from ``lr_start`` over ``warmup`` steps,
    constant ``optim.lr``, then a linear cool-down to ``lr_end`` over the last ``cooldown`` steps."""

    iterations: int = 2500
    warmup: int = 50
    cooldown: int = 500
    lr_start: float = 0.0
    lr_end: float = 0.0

    def validate(self) -> None:
        if self.iterations < 1 or self.warmup < 0 or self.cooldown < 0:
            raise ConfigError("schedule: iterations must be >= 1, warmup and cooldown >= 0")
        if self.warmup + self.cooldown > self.iterations:
            raise ConfigError(f"schedule: warmup ({self.warmup}) + cooldown ({self.cooldown}) exceed "
                              f"iterations ({self.iterations})")

    def phases(self) -> list[PhaseConfig]:
        """The schedule as pretraining phases, so the shared lr code drives it (frames/resolution unused)."""
        parts = [("warmup", self.warmup, "warmup", {"lr_start": self.lr_start}),
                 ("main", self.iterations - self.warmup - self.cooldown, "constant", {}),
                 ("cooldown", self.cooldown, "linear", {"lr_end": self.lr_end})]
        return [PhaseConfig(name=name, iterations=n, frames=1, resolution=1, lr_schedule=kind, **extra)
                for name, n, kind, extra in parts if n > 0]


@dataclass(frozen=True)
class ACLossConfig:
    """``loss_exp`` p (1 = L1) of ``mean |pred - target|^p / p``; ``rollout_steps`` R frames
    predicted autoregressively from the first frame (0 = teacher forcing only).

    ``change_weight`` lambda (0 = the paper's plain mean): weight each predicted token by
    ``1 + lambda * c / mean(c)``, where ``c`` is how much that token's target latent changed since
    the previous frame (mean absolute difference over channels) and the mean is over the frame's
    tokens; the weights are rescaled to mean 1 per frame. In a scene where one small object moves
    most tokens stay the same (toy-push: one token of 16 holds ~70 % of the change), and with an
    L1 loss the static tokens' tiny errors pull on the weights as hard as the moving one's.
    """

    loss_exp: float = 1.0
    rollout_steps: int = 2
    teacher_forcing_weight: float = 1.0
    rollout_weight: float = 1.0
    change_weight: float = 0.0

    def validate(self) -> None:
        if self.loss_exp <= 0:
            raise ConfigError(f"loss.loss_exp must be positive, got {self.loss_exp}")
        if self.rollout_steps < 0:
            raise ConfigError(f"loss.rollout_steps must be >= 0, got {self.rollout_steps}")
        if self.teacher_forcing_weight < 0 or self.rollout_weight < 0:
            raise ConfigError("loss weights must be >= 0")
        if self.change_weight < 0:
            raise ConfigError(f"loss.change_weight must be >= 0, got {self.change_weight}")


@dataclass(frozen=True)
class ACTrainConfig:
    """One AC training run. ``batch_size`` is global (clips per optimiser step over all processes
    and accumulation micro-steps), as in :class:`vjepa2.train.config.PretrainConfig`. ``threads``:
    PyTorch CPU threads per process (null = PyTorch's default); the small default model runs
    fastest on one thread of a shared machine."""

    data: ACDataConfig = field(default_factory=ACDataConfig)
    encoder: ACEncoderConfig = field(default_factory=ACEncoderConfig)
    model: ACModelConfig = field(default_factory=ACModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, weight_decay=0.04, clip_grad=1.0))
    schedule: ACScheduleConfig = field(default_factory=ACScheduleConfig)
    loss: ACLossConfig = field(default_factory=ACLossConfig)
    batch_size: int = 16
    dtype: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = 1
    seed: int = 0
    output_dir: str = "runs/ac"
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(every=500, keep_last=2))
    log: LogConfig = field(default_factory=LogConfig)
    max_nonfinite_steps: int = 20
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def validate(self) -> None:
        if not self.data.trajectories:
            raise ConfigError("data.trajectories: give the directory of trajectories (--data DIR)")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if self.loss.rollout_steps > self.data.clip_steps - 1:
            raise ConfigError(f"loss.rollout_steps={self.loss.rollout_steps} needs clips of at least "
                              f"{self.loss.rollout_steps + 1} frames; data.clip_steps is {self.data.clip_steps}")
        if self.max_nonfinite_steps < 1:
            raise ConfigError(f"max_nonfinite_steps must be >= 1, got {self.max_nonfinite_steps}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 or null (PyTorch's default), got {self.threads}")

    @property
    def cache_dir(self) -> Path:
        return Path(self.data.cache_dir) if self.data.cache_dir else Path(self.output_dir) / "features"


def load_ac_config(path: str | None = None, overrides=(), **top_level) -> ACTrainConfig:
    """Read a YAML file (or start from the defaults), apply ``top_level`` keys and dotted overrides, validate."""
    from vjepa2.config import apply_overrides, load_yaml

    data = load_yaml(path) if path else {}
    for key, value in top_level.items():
        if value is not None:
            section, _, name = key.rpartition(".")
            node = data
            for part in filter(None, section.split(".")):
                node = node.setdefault(part, {})
            node[name] = value
    return from_dict(ACTrainConfig, apply_overrides(data, overrides))


# ------------------------------------------------------------------------------------------------
# The objective
# ------------------------------------------------------------------------------------------------


@dataclass
class ACLosses:
    loss: torch.Tensor
    teacher_forcing: torch.Tensor
    rollout: torch.Tensor


class ACObjective(nn.Module):
    """The AC predictor and its training loss (the module that data parallelism wraps).

    Without ``use_extrinsics`` the ``extrinsics_encoder`` (kept for checkpoint compatibility) is
    frozen, so every trainable parameter gets a gradient each step (DDP and strict optimiser-state
    loading need that).
    """

    def __init__(self, predictor: ACPredictor, loss: ACLossConfig) -> None:
        super().__init__()
        self.predictor = predictor
        self.loss_cfg = loss
        predictor.extrinsics_encoder.requires_grad_(predictor.config.use_extrinsics)

    def distance(self, pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of ``|pred - target|^p / p``; ``weights`` ``(B, T, N)`` (mean 1) weight the tokens."""
        p = self.loss_cfg.loss_exp
        error = (pred.float() - target).abs().pow(p)
        if weights is not None:
            error = error * weights.unsqueeze(-1)
        return error.mean() / p

    def change_weights(self, h: torch.Tensor) -> torch.Tensor | None:
        """``(B, T-1, N)`` token weights of frames ``1..T-1`` from ``h (B, T, N, D)`` (see
        :class:`ACLossConfig`), or None when ``loss.change_weight`` is 0."""
        lam = self.loss_cfg.change_weight
        if not lam:
            return None
        return change_weights((h[:, 1:] - h[:, :-1]).abs().mean(-1), lam)

    def forward(self, features: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> ACLosses:
        """
        Args:
            features: ``(B, T, N, D)`` frozen-encoder features of ``T`` consecutive frames.
            actions: ``(B, T-1, A)`` the action after each frame; states: ``(B, T, S)``.
        """
        h = normalize_latents(features.float())
        weights = self.change_weights(h)
        # Teacher forcing: true frames 0..T-2 in, frames 1..T-1 predicted, all in one block-causal pass.
        z_tf = normalize_latents(self.predictor(h[:, :-1], actions, states[:, :-1]))
        loss_tf = self.distance(z_tf, h[:, 1:], weights)
        loss_ar = torch.zeros((), device=features.device)
        steps = self.loss_cfg.rollout_steps
        if steps:
            # Rollout: frame 0 only; each prediction is fed back (KV cache; same numbers as recomputing).
            z_ar = self.predictor.rollout(h[:, :1], actions[:, :steps], states[:, :steps])
            loss_ar = self.distance(z_ar, h[:, 1:steps + 1], None if weights is None else weights[:, :steps])
        total = self.loss_cfg.teacher_forcing_weight * loss_tf + self.loss_cfg.rollout_weight * loss_ar
        return ACLosses(total, loss_tf.detach(), loss_ar.detach())


# ------------------------------------------------------------------------------------------------
# Data: windows of cached features, drawn by (seed, step, rank) so a resumed run sees the same batches
# ------------------------------------------------------------------------------------------------


class FeatureWindows:
    """All windows of ``clip_steps`` consecutive steps of the cached trajectories."""

    def __init__(self, files: list[Path], clip_steps: int) -> None:
        self.files = list(files)
        self.clip_steps = clip_steps
        self.index = [(i, start) for i, f in enumerate(self.files)
                      for start in range(feature_metadata(f)["length"] - clip_steps + 1)]
        if not self.index:
            raise ConfigError(f"no trajectory has data.clip_steps={clip_steps} frames; collect longer "
                              f"trajectories or lower data.clip_steps")

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, step: int, seed: int, size: int, rank: int = 0) -> dict[str, torch.Tensor]:
        """``size`` windows drawn uniformly (with replacement) by ``(seed, step, rank)``: ``features
        (b, T, N, D)``, ``actions (b, T-1, A)``, ``states (b, T, S)``."""
        rng = np.random.default_rng([seed, step, rank])
        picks = rng.integers(0, len(self.index), size=size)
        windows = [read_features(self.files[f], s, s + self.clip_steps)
                   for f, s in (self.index[int(i)] for i in picks)]
        return {k: torch.stack([w[k] for w in windows]) for k in ("features", "actions", "states")}


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def rms_scale(values: torch.Tensor) -> float:
    """``1 / RMS`` of the entries of ``values (..., K)`` in the columns that vary (1 if none vary)."""
    flat = values.reshape(-1, values.shape[-1]).double()
    varying = flat.std(dim=0) > 1e-8 if len(flat) > 1 else torch.zeros(flat.shape[1], dtype=torch.bool)
    if not varying.any():
        return 1.0
    rms = float(flat[:, varying].pow(2).mean().sqrt())
    return 1.0 / rms if rms > 0 else 1.0


def input_scales(windows: FeatureWindows, count: int = 512) -> dict[str, float]:
    """``action_scale`` / ``state_scale`` from up to ``count`` training windows, evenly spaced (no RNG)."""
    picks = np.unique(np.linspace(0, len(windows) - 1, min(count, len(windows))).astype(int))
    read = [read_features(windows.files[f], s, s + windows.clip_steps)
            for f, s in (windows.index[int(i)] for i in picks)]
    return {"action_scale": rms_scale(torch.cat([w["actions"] for w in read])),
            "state_scale": rms_scale(torch.cat([w["states"] for w in read]))}


def _virtual_layout(cfg: ACTrainConfig, env: dist_utils.DistEnv) -> int:
    parts = env.world_size * cfg.optim.grad_accumulation
    if cfg.batch_size % parts:
        raise ConfigError(f"batch_size={cfg.batch_size} (global) does not split into {env.world_size} process(es) "
                          f"x {cfg.optim.grad_accumulation} accumulation steps; use a multiple of {parts}")
    return cfg.batch_size // parts


def build_frozen_encoder(cfg: ACEncoderConfig) -> VisionEncoder:
    """The encoder named by ``cfg.weights`` (see :class:`ACEncoderConfig`), frozen, in eval mode."""
    from vjepa2.embed import EmbedError, build_encoder

    try:
        encoder = build_encoder(cfg.weights, seed=cfg.seed)
    except EmbedError as err:
        raise ConfigError(f"encoder.weights: {err}") from None
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder.eval()


def prepare_features(cfg: ACTrainConfig, encoder: VisionEncoder, device: torch.device,
                     progress: bool = True) -> FeatureSet:
    """Encode the trajectories into the feature cache (reusing what is cached)."""
    return build_feature_cache(cfg.data.trajectories, encoder, cfg.cache_dir, img_size=cfg.encoder.img_size,
                               fps=cfg.data.fps, min_steps=cfg.data.clip_steps, convention=cfg.data.convention,
                               batch_size=cfg.encoder.batch_size, dtype=cfg.encoder.dtype,
                               store_dtype=STORE_DTYPES[cfg.encoder.store_dtype], device=device, progress=progress,
                               encoder_info=dataclasses.asdict(cfg.encoder))


@dataclass
class ACRunSummary:
    output_dir: Path
    start_step: int
    end_step: int
    seconds: float
    last_loss: float | None
    skipped: list
    nonfinite_total: int = 0
    checkpoint: Path | None = None
    loss_png: Path | None = None


def train_ac(cfg: ACTrainConfig, resume: bool = False) -> ACRunSummary:
    """Train as ``cfg`` says; ``resume`` continues from the newest valid checkpoint in
    ``cfg.output_dir`` exactly (same batches, same optimiser state). Works under ``torchrun``."""
    env = dist_utils.init_distributed(cfg.device, cfg.distributed.backend)
    threads = torch.get_num_threads()
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        check_output_dir(cfg.output_dir)
        _virtual_layout(cfg, env)  # batch-size errors before any work
        # One process per run folder: a second `--resume` of a live run would delete its temporary files.
        with RunLock(cfg.output_dir) if env.is_main else contextlib.nullcontext():
            return _run(cfg, resume, env)
    finally:
        torch.set_num_threads(threads)
        dist_utils.shutdown()


def _run(cfg: ACTrainConfig, resume: bool, env: dist_utils.DistEnv) -> ACRunSummary:
    micro = _virtual_layout(cfg, env)
    say = print if env.is_main else (lambda *a, **k: None)
    out_dir = Path(cfg.output_dir)
    checkpoints = CheckpointDir(out_dir / "checkpoints", keep_last=cfg.checkpoint.keep_last)
    if env.is_main and not resume and checkpoints.steps():
        raise FileExistsError(f"{checkpoints.directory} already holds checkpoints; pass --resume to continue "
                              f"that run, or choose another --out")

    encoder = build_frozen_encoder(cfg.encoder)
    patch_size = encoder.config.patch_size
    if env.is_main:  # one process encodes; the others wait and then read the same cache
        features = prepare_features(cfg, encoder, env.device, progress=cfg.log.progress_bar)
    dist_utils.barrier()
    if not env.is_main:
        features = prepare_features(cfg, encoder, env.device, progress=False)
    del encoder
    for skipped in features.skipped:
        say(f"skipped {skipped.path}: {skipped.reason}")
    if not features.files:
        first = features.skipped[0] if features.skipped else None
        raise TrajectoryError(f"{cfg.data.trajectories}: no usable trajectory ({len(features.skipped)} skipped"
                              + (f"; e.g. {first.path}: {first.reason}" if first else "") + ")")
    windows = FeatureWindows(features.files, cfg.data.clip_steps)
    sample = read_features(features.files[0], 0, 2)
    given = cfg.model.action_scale is not None and cfg.model.state_scale is not None
    scales = ({"action_scale": 1.0, "state_scale": 1.0} if cfg.model.init_checkpoint or given
              else input_scales(windows))  # build() keeps the configured values over these
    predictor_cfg = cfg.model.build(enc_dim=sample["features"].shape[-1], img_size=cfg.encoder.img_size,
                                    patch_size=patch_size,
                                    action_dim=_data_dim(cfg.model.action_dim, sample["actions"], "action"),
                                    state_dim=_data_dim(cfg.model.state_dim, sample["states"], "state"), **scales)

    torch.manual_seed(cfg.seed)
    predictor = ACPredictor(predictor_cfg)
    if cfg.model.init_checkpoint:
        _load_init(predictor, cfg.model.init_checkpoint)
    model = ACObjective(predictor, cfg.loss).to(env.device)
    training_model = dist_utils.wrap_model(model, cfg.distributed.strategy, env)
    optimizer = build_optimizer(model, cfg, fused=False)
    phases = cfg.schedule.phases()

    start_step, nonfinite_total, nonfinite_in_a_row = 0, 0, 0
    found = None
    if env.is_main and resume:
        for stale in checkpoints.remove_partial():
            say(f"removed a half-written checkpoint left by a killed run: {stale}")
        found = checkpoints.latest_valid(CHECKPOINT_KEYS, warn=say)
    found_path = dist_utils.broadcast_object(str(found[0]) if found else None)
    if resume and found_path is None:
        say(f"--resume: no valid checkpoint in {checkpoints.directory}; starting from step 0")
    if found_path is not None:
        state = found[1] if found else torch.load(found_path, map_location="cpu", weights_only=True, mmap=True)
        train_state = state[TRAIN_STATE_KEY]
        check_same_model(train_state["config"], to_dict(cfg), found_path)
        model_sd = {f"predictor.{k}": v for k, v in strip_prefixes(state["predictor"]).items()}
        _load_full_state(training_model, optimizer, model_sd, state["opt"])
        start_step = int(train_state["step"])
        nonfinite_total = int(train_state["nonfinite_total"])
        rng = train_state["rng"]
        if len(rng) == env.world_size:
            restore_rng_state(rng[env.rank])
        changed = config_differences(train_state["config"], to_dict(cfg))
        say(f"resumed from {found_path} at step {start_step}" + (f"; config changed: {'; '.join(changed)}" if changed else ""))
        del state

    total = cfg.schedule.iterations
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        params = sum(p.numel() for p in predictor.parameters())
        say(f"vjepa2 train-ac: {len(features.files)} trajectories ({len(windows)} windows of {cfg.data.clip_steps} "
            f"steps), predictor {predictor_cfg.depth}x{predictor_cfg.dim}x{predictor_cfg.heads} ({params / 1e6:.2f} M "
            f"params), {total} steps, global batch {cfg.batch_size} on {env.world_size} process(es) ({env.device.type})")
    columns = ["step", "loss", "loss_teacher_forcing", "loss_rollout", "lr", "grad_norm", "clips_per_s",
               "nonfinite_total", "elapsed_s"]
    monitor = RunMonitor(out_dir, columns, total, start_step, enabled=env.is_main, tensorboard=cfg.log.tensorboard,
                         progress_bar=cfg.log.progress_bar, desc="train-ac")
    summary = ACRunSummary(out_dir, start_step, start_step, 0.0, None, features.skipped)
    autocast = precision.autocast(env.device, cfg.dtype)
    started = time.perf_counter()
    try:
        for step in range(start_step, total):
            tick = time.perf_counter()
            where = phase_at(phases, step)
            lr = phase_lr(where.phase, cfg.optim.lr, where.step_in_phase)
            for group in optimizer.param_groups:
                group["lr"] = lr
            sums = torch.zeros(3, device=env.device)
            accumulation = cfg.optim.grad_accumulation
            for m in range(accumulation):
                batch = windows.batch(step, cfg.seed, micro, rank=env.rank * accumulation + m)
                batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
                with dist_utils.gradient_sync(training_model, enabled=m == accumulation - 1):
                    with autocast:
                        losses = training_model(batch["features"], batch["actions"], batch["states"])
                    (losses.loss / accumulation).backward()
                sums += torch.stack([losses.loss.detach(), losses.teacher_forcing, losses.rollout]) / accumulation
            sums = dist_utils.all_reduce_sum(sums) / dist_utils.world_size()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad or math.inf))
            finite = bool(torch.isfinite(sums).all()) and math.isfinite(grad_norm)
            if finite:
                optimizer.step()
                nonfinite_in_a_row = 0
            else:
                nonfinite_total += 1
                nonfinite_in_a_row += 1
                monitor.write(f"step {step + 1}: non-finite loss or gradient; skipped ({nonfinite_in_a_row} in a row)")
                stop_if_diverged(nonfinite_in_a_row, cfg.max_nonfinite_steps, step, checkpoints, env.is_main)
            optimizer.zero_grad(set_to_none=True)
            loss, loss_tf, loss_ar = (float(x) for x in sums)
            clips_per_s = cfg.batch_size / max(time.perf_counter() - tick, 1e-9)
            summary.end_step, summary.last_loss = step + 1, loss
            monitor.advance(loss=loss, lr=lr)
            if (step + 1) % cfg.log.every == 0 or step + 1 == total:
                monitor.log({"step": step + 1, "loss": loss, "loss_teacher_forcing": loss_tf, "loss_rollout": loss_ar,
                             "lr": lr, "grad_norm": grad_norm, "clips_per_s": clips_per_s,
                             "nonfinite_total": nonfinite_total, "elapsed_s": time.perf_counter() - started})
            if ((step + 1) % cfg.checkpoint.every == 0 or step + 1 == total) and nonfinite_in_a_row == 0:
                summary.checkpoint = _save(checkpoints, training_model, model, optimizer, cfg, env, step + 1, loss,
                                           lr, nonfinite_total, features)
    finally:
        summary.seconds = time.perf_counter() - started
        summary.loss_png = monitor.close()
        summary.nonfinite_total = nonfinite_total
    if env.is_main:
        say(f"done: steps {summary.start_step}-{summary.end_step} in {summary.seconds:.1f} s"
            + (f"; last loss {summary.last_loss:.4f}" if summary.last_loss is not None else "")
            + (f"\ncheckpoint: {summary.checkpoint}" if summary.checkpoint else "")
            + (f"\nloss curve: {summary.loss_png}" if summary.loss_png else ""))
    return summary


def _data_dim(configured: int | None, values: torch.Tensor, what: str) -> int:
    found = values.shape[-1]
    if configured is not None and configured != found:
        raise ConfigError(f"model.{what}_dim={configured} but the trajectories hold {found}-D {what}s; "
                          f"remove the key (it defaults to the data's) or convert the data")
    return found


def _load_init(predictor: ACPredictor, path: str) -> None:
    from vjepa2.weights import load_state_dict_checked, select_state_dict, safe_torch_load

    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"model.init_checkpoint: {path} does not exist")
    load_state_dict_checked(predictor, ac_predictor_from_public(select_state_dict(safe_torch_load(source), "predictor", source)),
               "AC predictor", source)


def _save(checkpoints: CheckpointDir, training_model: nn.Module, model: ACObjective, optimizer, cfg: ACTrainConfig,
          env: dist_utils.DistEnv, step: int, loss: float, lr: float, nonfinite_total: int,
          features: FeatureSet) -> Path | None:
    """Collective (all processes gather); rank 0 writes a public-layout checkpoint plus the resume state."""
    model_sd, optim_sd = _full_state(training_model, optimizer)
    rng = dist_utils.all_gather_objects(capture_rng_state())
    path = None
    if env.is_main:
        predictor_sd = {k.removeprefix("predictor."): v for k, v in model_sd.items()}
        state = {
            "predictor": add_prefix(predictor_sd),
            "opt": optim_sd,
            "epoch": step,
            "loss": loss,
            "lr": lr,
            "batch_size": cfg.batch_size,
            "world_size": env.world_size,
            METADATA_KEY: {"ac_predictor_config": dataclasses.asdict(model.predictor.config),
                           "encoder": dataclasses.asdict(cfg.encoder), "encoder_fingerprint": features.fingerprint,
                           "fps": cfg.data.fps},
            TRAIN_STATE_KEY: {"step": step, "nonfinite_total": nonfinite_total, "rng": rng, "config": to_dict(cfg)},
        }
        path = checkpoints.save(state, step)
    dist_utils.barrier()
    return path


# ------------------------------------------------------------------------------------------------
# Using a trained world model
# ------------------------------------------------------------------------------------------------


@dataclass
class WorldModel:
    """A trained AC predictor with the frozen encoder it was trained on.

    ``encode(frames uint8 (T, H, W, 3)) -> (T, N, D)`` layer-normed latents, ready for
    :meth:`ACPredictor.rollout` (the planner's goal and observation embeddings).
    """

    encoder: VisionEncoder
    predictor: ACPredictor
    img_size: int
    checkpoint: Path
    fps: float | None = None

    @torch.no_grad()
    def encode(self, frames, batch_size: int = 64, dtype: str = "fp32") -> torch.Tensor:
        from vjepa2.world_model.features import encode_frames

        device = next(self.predictor.parameters()).device
        return normalize_latents(encode_frames(self.encoder, frames, self.img_size, batch_size=batch_size,
                                               dtype=dtype, device=device).to(device))

    def to(self, device) -> WorldModel:
        self.encoder.to(device)
        self.predictor.to(device)
        return self


def load_world_model(path: str | Path) -> WorldModel:
    """Load a ``train-ac`` run directory (its newest valid checkpoint) or checkpoint file, with the
    encoder rebuilt from the recorded ``encoder`` settings (checked against the recorded fingerprint)."""
    from vjepa2.world_model.features import encoder_fingerprint
    from vjepa2.world_model.weights import load_ac_predictor

    path = Path(path)
    if path.is_dir():
        found = CheckpointDir(path / "checkpoints").latest_valid(("predictor",))
        if found is None:
            raise WeightsError(f"{path}: no valid checkpoint under {path / 'checkpoints'}")
        path = found[0]
    predictor = load_ac_predictor(path)
    meta = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(METADATA_KEY, {})
    if "encoder" not in meta:
        raise WeightsError(f"{path}: no encoder settings recorded (not written by train-ac); build the encoder "
                           f"yourself and wrap it in WorldModel(encoder, predictor, img_size, path)")
    enc_cfg = from_dict(ACEncoderConfig, meta["encoder"])
    encoder = build_frozen_encoder(enc_cfg)
    if meta.get("encoder_fingerprint") and encoder_fingerprint(encoder, enc_cfg.img_size) != meta["encoder_fingerprint"]:
        raise WeightsError(f"{path}: the encoder {enc_cfg.weights!r} is not the one this predictor was trained on "
                           f"(fingerprint differs); restore that encoder file")
    return WorldModel(encoder, predictor.eval(), enc_cfg.img_size, path, fps=meta.get("fps"))


@torch.no_grad()
def rollout_errors(predictor: ACPredictor, files: list[Path], horizons=(1, 2, 4, 8), stride: int = 1,
                   batch_size: int = 64, state_update=None, progress: bool = True) -> dict[str, dict[int, float]]:
    """Mean L1 between imagined and true (layer-normed) latents ``k`` steps ahead over every window
    of the cached trajectories ``files``, for:

    - ``model``: the rollout from one true frame under the recorded actions;
    - ``shuffled``: the same under the actions of the window half a batch away (as a rule another
      trajectory; a model that ignores its actions scores the same as ``model``; one that uses
      them, worse);
    - ``copy``: the current latent as the prediction for every future step.

    States after the first come from ``state_update(state, action)`` (as when planning; e.g.
    :func:`~vjepa2.data.trajectories.apply_action`), or from the recordings when it is None (then
    the shuffled rows keep the true states). Returns ``{"model": {k: err}, "shuffled": ..., "copy": ...}``.
    """
    from tqdm.auto import tqdm

    horizons = sorted(horizons)
    longest = horizons[-1]
    sums = {name: {k: 0.0 for k in horizons} for name in ("model", "shuffled", "copy")}
    count = 0
    starts = [(f, s) for f in files for s in range(0, feature_metadata(f)["length"] - longest, stride)]
    if not starts:
        raise ValueError(f"no trajectory is longer than {longest} steps")
    predictor = predictor.eval()
    device = next(predictor.parameters()).device
    for i in tqdm(range(0, len(starts), batch_size), desc="rollout errors", disable=not progress):
        windows = [read_features(f, s, s + longest + 1) for f, s in starts[i:i + batch_size]]
        h = normalize_latents(torch.stack([w["features"] for w in windows]).float().to(device))
        actions = torch.stack([w["actions"] for w in windows]).to(device)[:, :longest]
        states = torch.stack([w["states"] for w in windows]).to(device)[:, :longest]
        if state_update is not None:
            states = states[:, :1]
        # Windows of a batch are consecutive starts, mostly of the same trajectory: rolling by one would
        # hand each window its own actions shifted by one step (equal most of the time under a sticky
        # policy). Half a batch away lies, as a rule, another trajectory.
        shuffled = actions.roll(len(windows) // 2, dims=0) if len(windows) > 1 else actions.flip(1)
        imagined = {"model": predictor.rollout(h[:, :1], actions, states, state_update=state_update),
                    "shuffled": predictor.rollout(h[:, :1], shuffled, states, state_update=state_update),
                    "copy": h[:, :1].expand(-1, longest, -1, -1)}
        for name, pred in imagined.items():
            for k in horizons:
                sums[name][k] += float((pred[:, k - 1] - h[:, k]).abs().mean(dim=(1, 2)).sum())
        count += len(windows)
    return {name: {k: v / count for k, v in d.items()} for name, d in sums.items()}


def format_errors(errors: dict[str, dict[int, float]]) -> str:
    """Markdown table of :func:`rollout_errors`."""
    lines = ["| steps ahead | AC predictor L1 | same, shuffled actions | copy-current L1 | predictor / copy |",
             "|---:|---:|---:|---:|---:|"]
    for k in errors["model"]:
        m, sh, c = errors["model"][k], errors["shuffled"][k], errors["copy"][k]
        lines.append(f"| {k} | {m:.4f} | {sh:.4f} | {c:.4f} | {m / c:.2f} |")
    return "\n".join(lines)
