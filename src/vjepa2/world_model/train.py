"""V-JEPA 2-AC training: the action-conditioned predictor on frozen-encoder features of trajectories.

Read :class:`ACObjective.forward` for the method (arXiv 2506.09985, V-JEPA 2-AC): targets are the
layer-normed encoder features ``h`` of frames ``0 .. T-1``;

* teacher forcing: from the true frames ``0 .. T-2`` (with their actions and states) predict
  frames ``1 .. T-1`` in one block-causal pass;
* rollout: from frame 0 alone, predict frames ``1 .. R`` autoregressively, each prediction
  (layer-normed) fed back as the next input (with the true states, as the public trainer does);

both ``mean |pred - h|^p / p`` (``p = 1``: L1), summed. The loop (resume, the non-finite guard,
logs, checkpoints, ``torchrun`` data parallelism) is :mod:`vjepa2.engine.loop`, shared with
pretraining; :class:`ACTrainer` is what AC training hands it.

::

    vjepa2 collect --env toy-push --episodes 200 --steps 32 --out data/toy_push
    vjepa2 train-ac --data data/toy_push --out runs/ac                # tiny random encoder, CPU
    vjepa2 train-ac --data data/toy_push --out runs/ac encoder.weights=runs/pretrain/checkpoints/step-00001000.pt
    vjepa2 eval-ac --run runs/ac --data data/toy_push_heldout          # L1 at 1, 2, 4, 8 steps vs copy
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vjepa2 import memory, precision
from vjepa2.config import ConfigError
from vjepa2.data.trajectories.trajectory import Skipped, TrajectoryError
from vjepa2.files import open_run_folder
from vjepa2.models.ac_predictor import ACPredictor, ACPredictorConfig, normalize_latents
from vjepa2.models.encoder import VisionEncoder
from vjepa2.models.sizes import EncoderConfig
from vjepa2.engine import distributed as dist_utils
from vjepa2.engine import loop
from vjepa2.engine.checkpoint import CheckpointDir
from vjepa2.engine.loop import TRAIN_STATE_KEY
from vjepa2.engine.monitor import RunMonitor
from vjepa2.engine.losses import change_weights
from vjepa2.engine.schedules import phase_lr
from vjepa2.weights import (METADATA_KEY, absolute_weights, add_prefix, load_state_dict_checked, safe_torch_load,
                            select_state_dict, strip_prefixes)
from vjepa2.world_model.config import STORE_DTYPES, ACLossConfig, ACTrainConfig
from vjepa2.world_model.feature_cache import TrajectoryFeatures, build_feature_cache, feature_metadata, read_features
from vjepa2.world_model.model import frozen_encoder
from vjepa2.world_model.ac_weights import ac_predictor_from_public

CHECKPOINT_KEYS = ("predictor", "opt", "epoch", TRAIN_STATE_KEY)


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

    def forward(self, features: torch.Tensor, actions: torch.Tensor,
                states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-batch as the training loop runs it (:func:`vjepa2.engine.loop.optimizer_step`):
        the inputs of :meth:`losses`, moved to the model's device here; returns ``(loss, logged)``,
        ``logged`` = ``[loss, teacher-forcing loss, rollout loss]`` (detached)."""
        device = self.predictor.predictor_embed.weight.device
        out = self.losses(*(t.to(device, non_blocking=True) for t in (features, actions, states)))
        return out.loss, torch.stack([out.loss.detach(), out.teacher_forcing, out.rollout])

    def losses(self, features: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> ACLosses:
        """The teacher-forcing and rollout losses of a batch.

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


@dataclass
class ACBatch:
    """Windows of ``T`` consecutive steps: ``features (B, T, N, D)`` of the frozen encoder,
    ``actions (B, T-1, A)`` (the action after each frame), ``states (B, T, S)``."""

    features: torch.Tensor
    actions: torch.Tensor
    states: torch.Tensor


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

    def batch(self, step: int, seed: int, size: int, rank: int = 0) -> ACBatch:
        """``size`` windows drawn uniformly (with replacement) by ``(seed, step, rank)``."""
        rng = np.random.default_rng([seed, step, rank])
        picks = rng.integers(0, len(self.index), size=size)
        windows = [read_features(self.files[f], s, s + self.clip_steps)
                   for f, s in (self.index[int(i)] for i in picks)]
        return ACBatch(*(torch.stack([w[k] for w in windows]) for k in ("features", "actions", "states")))


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


def prepare_features(cfg: ACTrainConfig, encoder: VisionEncoder, device: torch.device,
                     progress: bool = True) -> TrajectoryFeatures:
    """Encode the trajectories into the feature cache (reusing what is cached)."""
    return build_feature_cache(cfg.data.trajectories, encoder, cfg.cache_dir, img_size=cfg.encoder.img_size,
                               fps=cfg.data.fps, min_steps=cfg.data.clip_steps, convention=cfg.data.convention,
                               batch_size=cfg.encoder.batch_size, dtype=cfg.encoder.dtype,
                               store_dtype=STORE_DTYPES[cfg.encoder.store_dtype], device=device, progress=progress,
                               encoder_info=dataclasses.asdict(cfg.encoder), streams=cfg.data.streams)


# ------------------------------------------------------------------------------------------------
# The run: AC training's side of the shared loop (vjepa2.engine.loop)
# ------------------------------------------------------------------------------------------------


@dataclass
class ACRunSummary(loop.RunSummary):
    """What :func:`train_ac` returns: the loop's summary and the trajectories skipped."""

    skipped: list[Skipped] = field(default_factory=list)


class ACTrainer:
    """AC training as a :class:`vjepa2.engine.loop.Trainer`: windows of cached features, the
    objective (:class:`ACObjective`), warm-up / constant / cool-down learning rate."""

    kind = "train-ac"
    checkpoint_keys = CHECKPOINT_KEYS
    plot_column = "loss"
    phase_ends_matter = False  # warm-up / main / cool-down differ only in learning rate
    columns = ("step", "loss", "loss_teacher_forcing", "loss_rollout", "lr", "grad_norm", "clips_per_s",
               "nonfinite_total", "elapsed_s")

    def __init__(self, cfg: ACTrainConfig, env: dist_utils.DistEnv, features: TrajectoryFeatures, patch_size: int) -> None:
        self.cfg, self.env, self.features = cfg, env, features
        self.windows = FeatureWindows(features.files, cfg.data.clip_steps)
        self.micro = loop.per_micro_step(cfg.batch_size, "batch_size", env, cfg.optim.grad_accumulation)
        torch.manual_seed(cfg.seed)
        self.predictor = ACPredictor(ac_predictor_config(cfg, features, self.windows, patch_size))
        if cfg.model.init_checkpoint:
            load_init(self.predictor, cfg.model.init_checkpoint)
        self.model = ACObjective(self.predictor, cfg.loss).to(env.device)
        self.training_model = dist_utils.wrap_model(self.model, cfg.distributed.strategy, env)
        self.optimizer = loop.build_optimizer(self.model, cfg.optim, fused=False)
        self.phases = cfg.schedule.segments()
        self.autocast = precision.autocast(env.device, cfg.dtype)

    def begin(self, start_step: int, counters: loop.Counters, monitor: RunMonitor) -> None:
        if self.env.is_main:
            cfg, p = self.cfg, self.predictor.config
            params = sum(x.numel() for x in self.predictor.parameters())
            print(f"vjepa2 train-ac: {len(self.features.files)} trajectories ({len(self.windows)} windows of "
                  f"{cfg.data.clip_steps} steps), predictor {p.depth}x{p.dim}x{p.heads} ({params / 1e6:.2f} M "
                  f"params), {cfg.schedule.iterations} steps, global batch {cfg.batch_size} on "
                  f"{self.env.world_size} process(es) ({self.env.device.type})")

    def step(self, step: int, where) -> loop.StepReport:
        cfg, env = self.cfg, self.env
        lr = phase_lr(where.phase, cfg.optim.lr, where.step_in_phase)
        accumulation = cfg.optim.grad_accumulation
        batches = [self.windows.batch(step, cfg.seed, self.micro, rank=env.rank * accumulation + m)
                   for m in range(accumulation)]
        values, grad_norm, finite = loop.optimizer_step(
            self.training_model, self.optimizer, [(b.features, b.actions, b.states) for b in batches], lr=lr,
            clip_grad=cfg.optim.clip_grad, autocast=self.autocast)
        loss, loss_tf, loss_ar = (float(x) for x in values)
        return loop.StepReport(loss, finite, grad_norm, lr, cfg.batch_size,
                               {"loss_teacher_forcing": loss_tf, "loss_rollout": loss_ar})

    def checkpoint_payload(self, model_state: dict, step: int, where) -> dict:
        """The public release's ``predictor`` key (``module.backbone.`` prefixes) and what
        :func:`~vjepa2.world_model.model.load_world_model` needs to rebuild the world model."""
        cfg = self.cfg
        predictor_sd = {k.removeprefix("predictor."): v for k, v in model_state.items()}
        return {"predictor": add_prefix(predictor_sd),
                METADATA_KEY: {"ac_predictor_config": dataclasses.asdict(self.predictor.config),
                               "encoder": {**dataclasses.asdict(cfg.encoder),
                                           "weights": absolute_weights(cfg.encoder.weights)},
                               "encoder_fingerprint": self.features.fingerprint, "fps": cfg.data.fps,
                               "streams": dataclasses.asdict(cfg.data.streams)}}

    def model_state(self, checkpoint: dict) -> dict:
        return {f"predictor.{k}": v for k, v in strip_prefixes(checkpoint["predictor"]).items()}


def ac_predictor_config(cfg: ACTrainConfig, features: TrajectoryFeatures, windows: FeatureWindows,
                     patch_size: int) -> ACPredictorConfig:
    """The AC predictor's config: sizes from ``cfg.model``, dimensions and input scales from the data."""
    sample = read_features(features.files[0], 0, 2)
    given = cfg.model.action_scale is not None and cfg.model.state_scale is not None
    scales = ({"action_scale": 1.0, "state_scale": 1.0} if cfg.model.init_checkpoint or given
              else input_scales(windows))  # build() keeps the configured values over these
    return cfg.model.build(enc_dim=sample["features"].shape[-1], img_size=cfg.encoder.img_size,
                           patch_size=patch_size,
                           action_dim=data_dim(cfg.model.action_dim, sample["actions"], "action"),
                           state_dim=data_dim(cfg.model.state_dim, sample["states"], "state"), **scales)


def train_ac(cfg: ACTrainConfig, resume: bool = False) -> ACRunSummary:
    """Train as ``cfg`` says; ``resume`` continues from the newest valid checkpoint in
    ``cfg.output_dir`` exactly (same batches, same optimiser state). Works under ``torchrun``."""
    with loop.distributed_run(cfg, {"data.trajectories": cfg.data.trajectories}) as env:
        encoder = frozen_encoder(cfg.encoder)
        check_step_memory(cfg, encoder.config, env)  # batch-size and memory errors before any work
        # One process per run folder: a second `--resume` of a live run would delete its temporary files.
        with open_run_folder(cfg.output_dir, "train-ac", env.is_main):
            if env.is_main:  # before the (long) encoding
                loop.refuse_to_overwrite(CheckpointDir(Path(cfg.output_dir) / "checkpoints"), resume)
            features, patch_size = encode_trajectories(cfg, encoder, env)
            run = loop.run_loop(ACTrainer(cfg, env, features, patch_size), cfg, env, resume)
    summary = ACRunSummary(**vars(run), skipped=features.skipped)
    if env.is_main:
        print(f"done: steps {summary.start_step}-{summary.end_step} in {summary.seconds:.1f} s"
              + (f"; last loss {summary.last_loss:.4f}" if summary.last_loss is not None else "")
              + (f"\ncheckpoint: {summary.checkpoint}" if summary.checkpoint else "")
              + (f"\nloss curve: {summary.loss_png}" if summary.loss_png else ""))
    return summary


def encode_trajectories(cfg: ACTrainConfig, encoder: VisionEncoder, env: dist_utils.DistEnv) -> tuple[TrajectoryFeatures, int]:
    """The trajectories' features with the frozen ``encoder`` (rank 0 encodes, the others read the
    cache) and the encoder's patch size; skipped trajectories are named, none usable is an error."""
    if env.is_main:  # one process encodes; the others wait and then read the same cache
        features = prepare_features(cfg, encoder, env.device, progress=cfg.log.progress_bar)
    dist_utils.barrier()
    if not env.is_main:
        features = prepare_features(cfg, encoder, env.device, progress=False)
    for skipped in features.skipped if env.is_main else []:
        print(f"skipped {skipped.path}: {skipped.reason}")
    if not features.files:
        first = features.skipped[0] if features.skipped else None
        raise TrajectoryError(f"{cfg.data.trajectories}: no usable trajectory ({len(features.skipped)} skipped"
                              + (f"; e.g. {first.path}: {first.reason}" if first else "") + ")")
    return features, encoder.config.patch_size


def check_step_memory(cfg: ACTrainConfig, encoder: EncoderConfig, env: dist_utils.DistEnv) -> None:
    """Refuse a run whose encoding batch or training step cannot fit in the device's memory
    (:mod:`vjepa2.memory`: the frames encoded at once; a micro-batch's feature windows plus the
    activations the predictor keeps over all their tokens)."""
    micro = loop.per_micro_step(cfg.batch_size, "batch_size", env, cfg.optim.grad_accumulation)
    side = cfg.encoder.img_size
    # The predictor's width and depth as the model config resolves them (the data's widths do not matter here).
    sized = cfg.model.build(enc_dim=encoder.dim, img_size=side, patch_size=encoder.patch_size,
                            action_dim=cfg.model.action_dim or 1, state_dim=cfg.model.state_dim or 1)
    dim, depth = sized.dim, sized.depth
    tokens = cfg.data.clip_steps * (side // encoder.patch_size) ** 2
    memory.check_fits(memory.clip_bytes(cfg.encoder.batch_size, 1, side), env.device,
                      f"encoding {cfg.encoder.batch_size} frames at a time at {side} px",
                      "lower encoder.img_size or encoder.batch_size")
    memory.check_fits(micro * tokens * encoder.dim * memory.FLOAT_BYTES + memory.training_activation_bytes(
        micro, tokens, dim, depth, cfg.model.activation_checkpointing), env.device,
        f"a training step (micro-batch {micro} x {tokens:,} tokens)",
        "lower batch_size, data.clip_steps or encoder.img_size, or raise optim.grad_accumulation")


def data_dim(configured: int | None, values: torch.Tensor, what: str) -> int:
    found = values.shape[-1]
    if configured is not None and configured != found:
        raise ConfigError(f"model.{what}_dim={configured} but the trajectories hold {found}-D {what}s; "
                          f"remove the key (it defaults to the data's) or convert the data")
    return found


def load_init(predictor: ACPredictor, path: str) -> None:
    """Start ``predictor`` from the AC weights in ``path`` (``model.init_checkpoint``)."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"model.init_checkpoint: {path} does not exist")
    public = select_state_dict(safe_torch_load(source), "predictor", source)
    load_state_dict_checked(predictor, ac_predictor_from_public(public), "AC predictor", source)
