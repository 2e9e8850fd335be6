"""V-JEPA 2 pretraining: the objective, one training step, and pretraining's side of the loop.

Read :meth:`JEPA.loss_of` and :func:`train_step` top to bottom: they are the paper's method
(arXiv 2506.09985, V-JEPA 2 pretraining). The rest of the file is bookkeeping: the batches of each phase,
the checkpoint layout, the collapse monitor; the loop itself (resume, the non-finite guard,
logging and checkpoint cadence) is :mod:`vjepa2.engine.loop`, shared with AC training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from vjepa2 import memory, precision
from vjepa2.config import config_yaml
from vjepa2.data.clips.dataset import PretrainBatch, build_pretrain_loader, build_sources
from vjepa2.files import atomic_write_text, open_run_folder
from vjepa2.masking import MaskConfig, corrupt_tokens
from vjepa2.models.encoder import gather_tokens
from vjepa2.layers.rope import grid_positions
from vjepa2.models.predictor import Predictor
from vjepa2.models.vjepa2_1 import Predictor21, Predictor21Config
from vjepa2.models.sizes import EncoderConfig, PredictorConfig
from vjepa2.engine import distributed as dist_utils
from vjepa2.engine import loop
from vjepa2.train.config import LossConfig, PhaseConfig, PretrainConfig
from vjepa2.train.ema import ema_update, make_target
from vjepa2.engine.loop import TRAIN_STATE_KEY, optimizer_step
from vjepa2.engine.monitor import RunMonitor, target_feature_rank
from vjepa2.engine.losses import change_weights, temporal_change
from vjepa2.train.regularizers import regularizer_value
from vjepa2.engine.schedules import context_weight_at, ema_momentum_at, lr_at
from vjepa2.weights import METADATA_KEY, add_prefix, checkpoint_metadata, new_encoder, strip_prefixes

CHECKPOINT_KEYS = ("encoder", "target_encoder", "predictor", "opt", "epoch", TRAIN_STATE_KEY)


@dataclass
class JEPAOutput:
    """``loss`` (scalar: the prediction losses averaged over mask generators, plus the weighted
    regulariser and, for V-JEPA 2.1, the weighted context term), ``mask_losses`` ``(G,)`` (masked
    tokens only), ``regularizer`` (scalar, unweighted, 0 without one), and the layer-normed target
    features ``targets`` ``(B, N, levels * D)``; all but ``loss`` detached (for logs and the collapse
    monitor)."""

    loss: torch.Tensor
    mask_losses: torch.Tensor
    regularizer: torch.Tensor
    targets: torch.Tensor
    context_loss: torch.Tensor | None = None  # V-JEPA 2.1: the context term (unweighted by lambda), detached


class JEPA(nn.Module):
    """Online encoder, predictor and EMA target encoder; :meth:`loss_of` is the V-JEPA 2 loss of a
    batch, ``forward`` the same as the training loop calls it, :meth:`update_target` the EMA step.

    The predictor holds ``num_mask_tokens`` mask tokens (10 in the public checkpoints) but a run
    uses one per mask generator; the others are frozen so that every trainable parameter gets a
    gradient each step (DDP needs no unused-parameter search).
    """

    def __init__(self, encoder: EncoderConfig, predictor: PredictorConfig, mask: MaskConfig,
                 loss: LossConfig | None = None) -> None:
        super().__init__()
        self.encoder = new_encoder(encoder)
        self.predictor = Predictor21(predictor) if isinstance(predictor, Predictor21Config) else Predictor(predictor)
        self.levels = predictor.levels if isinstance(predictor, Predictor21Config) else 1
        self.target_encoder = make_target(self.encoder)
        self.mask = mask
        self.loss = loss or LossConfig()
        for i, token in enumerate(self.predictor.mask_tokens):
            token.requires_grad_(i < len(mask.generators))

    def forward(self, clips: torch.Tensor, masks: list[tuple[torch.Tensor, torch.Tensor]],
                noise: torch.Generator | None = None, sketch: torch.Generator | None = None,
                context_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-batch as the training loop runs it (:func:`vjepa2.engine.loop.optimizer_step`):
        the inputs of :meth:`loss_of`, moved to the model's device and dtype here; returns ``(loss,
        logged)``, ``logged`` = ``[loss, regulariser, target std, context loss, loss of each mask
        generator]`` (detached; target std: per-dimension std of the layer-normed targets, the collapse
        monitor; context loss: V-JEPA 2.1's context term, 0 for V-JEPA 2)."""
        weight = self.encoder.patch_embed.proj.weight
        clips = clips.to(weight.device, weight.dtype, non_blocking=True)
        masks = [(c.to(weight.device, non_blocking=True), t.to(weight.device, non_blocking=True)) for c, t in masks]
        out = self.loss_of(clips, masks, noise, sketch, context_weight)
        target_std = out.targets.flatten(0, 1).std(dim=0).mean()
        dtype = out.regularizer.dtype
        context = out.context_loss if out.context_loss is not None else out.regularizer.new_zeros(())
        return out.loss, torch.cat((out.loss.detach().reshape(1), out.regularizer.reshape(1),
                                    target_std.reshape(1).to(dtype), context.reshape(1).to(dtype), out.mask_losses))

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """The EMA step after an optimiser step: ``target = m * target + (1 - m) * online``."""
        ema_update(self.target_encoder, self.encoder, momentum)

    def loss_of(self, clips: torch.Tensor, masks: list[tuple[torch.Tensor, torch.Tensor]],
                noise: torch.Generator | None = None, sketch: torch.Generator | None = None,
                context_weight: float = 0.0) -> JEPAOutput:
        """The V-JEPA 2 loss of a batch (V-JEPA 2.1's with ``loss.objective: vjepa2_1``).

        Args:
            clips: ``(B, 3, T, H, W)`` normalised clips.
            masks: per mask generator ``(context_idx (B, Nc), target_idx (B, Nt))``.
            noise: generator of the corruption noise (``noise`` mode only).
            sketch: generator of SIGReg's random directions (the same on every process).
            context_weight: V-JEPA 2.1's ``lambda_t`` on the context term at this step.
        """
        p = self.loss.loss_exp
        # Targets: the EMA encoder sees the whole clip; layer norm without affine parameters (for
        # V-JEPA 2.1 on each of the hierarchical levels, concatenated: (B, N, levels * D)).
        with torch.no_grad():
            h = level_norm(precision.at_least_fp32(self.target_encoder(clips)), self.levels)
        if self.mask.mode == "noise":
            tokens, grid = self.encoder.embed(clips)
        else:
            grid = self.encoder.grid(clips.shape)
        # (B, N) weights on the tokens that move (loss.motion_weight), or None for the paper's plain mean.
        weights = change_weights(temporal_change(h, grid), self.loss.motion_weight) if self.loss.motion_weight else None
        losses, regularizers, context_losses = [], [], []
        for i, (context_idx, target_idx) in enumerate(masks):
            if self.mask.mode == "drop":
                # The encoder sees only the context tokens; the predictor fills in the targets.
                z = self.encoder(clips, keep=context_idx)
                pred = self.predictor(z, context_idx, target_idx, mask_index=i, grid=grid)
                if isinstance(self.predictor, Predictor21):  # V-JEPA 2.1: the context tokens are predicted too
                    pred, context_pred = pred
                    context_losses.append(self._context_loss(context_pred, h, context_idx, target_idx, grid))
            else:
                # The encoder sees every token, the targets' embeddings corrupted; the predictor denoises.
                z = self.encoder.forward_tokens(corrupt_tokens(tokens, target_idx, self.mask, noise), None, grid)
                pred = self.predictor.forward_dense(z, target_idx, mask_index=i, grid=grid)
            target = gather_tokens(h, target_idx)
            error = (precision.at_least_fp32(pred) - target).abs().pow(p).mean(-1)        # (B, Nt)
            if weights is not None:
                w = torch.gather(weights, 1, target_idx)
                error = error * w / w.mean()
            losses.append(error.mean() / p)
            if self.loss.regularizer != "none":  # on the online encoder's output tokens (B, Nc or N, D)
                regularizers.append(self._regularizer(z, sketch))
        mask_losses = torch.stack(losses)
        loss, regularizer, context_loss = mask_losses.mean(), mask_losses.new_zeros(()), None
        if regularizers:
            regularizer = torch.stack(regularizers).mean()
            loss = loss + self.loss.regularizer_weight * regularizer
        if context_losses:
            context_loss = torch.stack(context_losses).mean()
            loss = loss + context_weight * context_loss
            context_loss = context_loss.detach()
        return JEPAOutput(loss, mask_losses.detach(), regularizer.detach(), h, context_loss)

    def _context_loss(self, context_pred: torch.Tensor, h: torch.Tensor, context_idx: torch.Tensor,
                      target_idx: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """V-JEPA 2.1's dense term: ``mean(w * |context_pred - h[context]|^p) / p`` over ``(B, Nc)``,
        ``w = 1 / sqrt(distance to the nearest masked token)`` (1 without ``context_distance_weight``)."""
        p = self.loss.loss_exp
        error = (precision.at_least_fp32(context_pred) - gather_tokens(h, context_idx)).abs().pow(p).mean(-1)
        if self.loss.context_distance_weight:
            error = error * nearest_target_distance(context_idx, target_idx, grid).rsqrt().to(error.dtype)
        return error.mean() / p

    def _regularizer(self, z: torch.Tensor, sketch: torch.Generator | None) -> torch.Tensor:
        cfg = self.loss
        return regularizer_value(cfg.regularizer, z, vicreg_cov_weight=cfg.vicreg_cov_weight,
                                 sigreg_projections=cfg.sigreg_projections, sigreg_knots=cfg.sigreg_knots,
                                 sigreg_t_max=cfg.sigreg_t_max, generator=sketch)


def level_norm(h: torch.Tensor, levels: int) -> torch.Tensor:
    """Layer norm without affine parameters on each of ``levels`` equal slices of the last dimension:
    ``(..., levels * D) -> (..., levels * D)`` (one level: the V-JEPA 2 target norm)."""
    if levels == 1:
        return F.layer_norm(h, (h.size(-1),))
    return F.layer_norm(h.unflatten(-1, (levels, -1)), (h.size(-1) // levels,)).flatten(-2)


@torch.no_grad()
def nearest_target_distance(context_idx: torch.Tensor, target_idx: torch.Tensor,
                            grid: tuple[int, int, int]) -> torch.Tensor:
    """Euclidean distance in token-grid units ``(t, row, col)`` from every context token to the nearest
    target (masked) token: ``(B, Nc)`` and ``(B, Nt)`` flat indices -> ``(B, Nc)`` float64, at least 1."""
    context, targets = grid_positions(context_idx, grid).double(), grid_positions(target_idx, grid).double()
    return torch.cdist(context, targets).amin(-1).clamp_min(1.0)  # float64: exact for any run's dtype


@dataclass
class StepResult:
    loss: float
    mask_losses: list[float]
    regularizer: float
    grad_norm: float
    target_std: float
    finite: bool
    context_loss: float = 0.0


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro_batches: list[PretrainBatch],
               *, lr: float, momentum: float, cfg: PretrainConfig, device: torch.device,
               noise: list[torch.Generator | None], sketch: torch.Generator | None = None,
               context_weight: float = 0.0) -> StepResult:
    """One optimiser step over ``len(micro_batches)`` gradient-accumulation micro-batches: the
    V-JEPA 2 loss (``model``: a :class:`JEPA`, or it wrapped for data parallelism), AdamW, then the
    EMA update of the target encoder.

    A step whose loss or gradient is not finite changes nothing (no optimiser or EMA update).
    """
    inputs = [(batch.clips, batch.masks, noise[m], sketch, context_weight) for m, batch in enumerate(micro_batches)]
    logged, grad_norm, finite = optimizer_step(model, optimizer, inputs, lr=lr, clip_grad=cfg.optim.clip_grad,
                                               autocast=precision.autocast(device, cfg.dtype))
    if finite:
        with record_function("ema"):
            dist_utils.unwrap(model).update_target(momentum)
    loss, regularizer, target_std, context_loss, *mask_losses = (float(x) for x in logged)
    return StepResult(loss, mask_losses, regularizer, grad_norm, target_std, finite, context_loss)


# ------------------------------------------------------------------------------------------------
# Batches: one loader per accumulation micro-step (a public seam: benchmarks build batches with it)
# ------------------------------------------------------------------------------------------------


def micro_batch_size(cfg: PretrainConfig, phase: PhaseConfig, env: dist_utils.DistEnv) -> int:
    """Clips per process per micro-step of ``phase``; fails early if the batch does not split evenly."""
    key = f"phases.{phase.name}.batch_size" if phase.batch_size else "batch_size"
    return loop.per_micro_step(cfg.phase_batch_size(phase), key, env, cfg.optim.grad_accumulation)


def check_step_memory(cfg: PretrainConfig, phase: PhaseConfig, env: dist_utils.DistEnv) -> None:
    """Refuse a phase whose step cannot fit in the device's memory (:mod:`vjepa2.memory`: the
    micro-batch's clips plus the activations the predictor keeps over all its tokens)."""
    micro, model = micro_batch_size(cfg, phase, env), cfg.predictor_config()
    tubelet, patch = cfg.model.tubelet_size, cfg.model.patch_size
    tokens = (phase.frames // tubelet) * (phase.resolution // patch) ** 2
    needed = memory.clip_bytes(micro, phase.frames, phase.resolution) + memory.training_activation_bytes(
        micro, tokens, model.dim, model.depth, cfg.model.activation_checkpointing)
    memory.check_fits(needed, env.device, f"phase {phase.name} (micro-batch {micro} x {phase.frames} frames at "
                                          f"{phase.resolution} px = {tokens:,} tokens a clip)",
                      "lower its resolution, frames or batch size, or raise optim.grad_accumulation")


def open_loaders(cfg: PretrainConfig, phase: PhaseConfig, start_step: int, env: dist_utils.DistEnv) -> list:
    """One loader per accumulation micro-step, yielding :class:`PretrainBatch` from ``start_step`` on.
    Micro-step ``m`` of rank ``r`` acts as rank ``r * A + m`` of ``world_size * A``: the global batch
    is the same whatever the split. Close them with :func:`close_loaders`."""
    micro = micro_batch_size(cfg, phase, env)
    accumulation = cfg.optim.grad_accumulation
    return [build_pretrain_loader(cfg.data, cfg.mask, frames=phase.frames, size=phase.resolution,
                                  batch_size=micro, seed=cfg.seed, start_step=start_step,
                                  patch_size=cfg.model.patch_size, tubelet_size=cfg.model.tubelet_size,
                                  rank=env.rank * accumulation + m, world_size=env.world_size * accumulation)
            for m in range(accumulation)]


def close_loaders(loaders) -> None:
    for loader in loaders or []:
        close = getattr(loader, "close", None)
        if close:
            close()


def noise_generators(cfg: PretrainConfig, step: int, env: dist_utils.DistEnv) -> list[torch.Generator | None]:
    """Corruption noise seeded by (seed, step, virtual rank): a resumed run draws the same noise."""
    if cfg.mask.mode != "noise":
        return [None] * cfg.optim.grad_accumulation
    gens = []
    for m in range(cfg.optim.grad_accumulation):
        seed = int(np.random.SeedSequence([cfg.seed, 0x0015E, step, env.rank * cfg.optim.grad_accumulation + m])
                   .generate_state(1, dtype=np.uint64)[0] >> 1)
        gens.append(torch.Generator(env.device).manual_seed(seed))
    return gens


def sketch_generator(cfg: PretrainConfig, step: int, env: dist_utils.DistEnv) -> torch.Generator | None:
    """SIGReg's directions, seeded by (seed, step) alone: every process tests the same projections
    and a resumed run draws the same ones."""
    if cfg.loss.regularizer != "sigreg":
        return None
    seed = int(np.random.SeedSequence([cfg.seed, 0x516E, step]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(env.device).manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# The run: pretraining's side of the shared loop (vjepa2.engine.loop)
# ------------------------------------------------------------------------------------------------


def split_models(model_sd: dict) -> dict:
    """``{"encoder.x": ...}`` -> ``{"encoder": {"module.backbone.x": ...}, ...}`` (public layout)."""
    parts = {"encoder": {}, "target_encoder": {}, "predictor": {}}
    for key, value in model_sd.items():
        head, rest = key.split(".", 1)
        parts[head][rest] = value
    return {name: add_prefix(sd) for name, sd in parts.items()}


def join_models(checkpoint: dict) -> dict:
    """The inverse of :func:`split_models`: a :class:`JEPA` state dict from a checkpoint."""
    return {f"{name}.{k}": v for name in ("encoder", "target_encoder", "predictor")
            for k, v in strip_prefixes(checkpoint[name]).items()}


@dataclass
class RunSummary(loop.RunSummary):
    """What :func:`pretrain` returns (also printed at the end)."""

    target_std: float | None = None
    target_rank: float | None = None
    skipped_files: list[tuple[int, str, str]] = field(default_factory=list)


class PretrainTrainer:
    """Pretraining as a :class:`vjepa2.engine.loop.Trainer`: phases with their own clip shapes and
    loaders, the step (:func:`train_step`), the collapse monitor and files skipped by the loader."""

    kind = "pretrain"
    checkpoint_keys = CHECKPOINT_KEYS
    plot_column = "loss_avg"
    phase_ends_matter = True  # the clip shape changes between phases (progressive resolution)

    def __init__(self, cfg: PretrainConfig, env: dist_utils.DistEnv) -> None:
        self.cfg, self.env = cfg, env
        seed_everything(cfg.seed)  # identical initial weights on every process
        model = JEPA(cfg.encoder_config(), cfg.predictor_config(), cfg.mask, cfg.loss)
        self.model = model.to(env.device, precision.PARAM_DTYPES[cfg.dtype])
        self.training_model = dist_utils.wrap_model(self.model, cfg.distributed.strategy, env)
        self.optimizer = loop.build_optimizer(self.model, cfg.optim, fused=cfg.distributed.strategy == "ddp")
        self.phases = cfg.phases
        mask_columns = [f"loss_mask{i}" for i in range(len(cfg.mask.generators))]
        if cfg.loss.objective == "vjepa2_1":
            mask_columns += ["loss_context", "context_weight"]
        self.columns = (["step", "phase", "loss", "loss_avg"] + mask_columns
                        + ["loss_reg", "lr", "ema_momentum", "grad_norm", "target_std", "target_rank", "clips_per_s",
                           "nonfinite_total", "files_skipped", "elapsed_s"])
        # What the run summary adds to the loop's: the last collapse monitors, the files skipped.
        self.target_std: float | None = None
        self.target_rank: float | None = None
        self.skipped_files: list[tuple[int, str, str]] = []
        self.loaders, self.rank_clips = None, None  # rank_clips: the collapse monitor's fixed batch

    def begin(self, start_step: int, counters: loop.Counters, monitor: RunMonitor) -> None:
        self.counters, self.monitor = counters, monitor
        if self.env.is_main:
            truncate_skipped_table(Path(self.cfg.output_dir), start_step)
            print(config_banner(self.cfg, self.env))

    def start_phase(self, where) -> str:
        """Progressive resolution: a new clip shape needs new loaders (and a new monitor batch)."""
        close_loaders(self.loaders)
        self.loaders = open_loaders(self.cfg, where.phase, where.start + where.step_in_phase, self.env)
        self.rank_clips = fixed_batch(self.loaders[0], where.start)
        return phase_banner(self.cfg, where, self.env)

    def step(self, step: int, where) -> loop.StepReport:
        cfg, env = self.cfg, self.env
        with record_function("batch"):
            micro_batches = [next(loader) for loader in self.loaders]
        if self.rank_clips is None:  # a loader that cannot rebuild a past step: the phase's first batch seen
            self.rank_clips = micro_batches[0].clips
        self.report_skipped(step, micro_batches)
        lr, momentum, context_weight = lr_at(cfg, step), ema_momentum_at(cfg, step), context_weight_at(cfg, step)
        result = train_step(self.training_model, self.optimizer, micro_batches, lr=lr, momentum=momentum, cfg=cfg,
                            device=env.device, noise=noise_generators(cfg, step, env),
                            sketch=sketch_generator(cfg, step, env), context_weight=context_weight)
        self.target_std = result.target_std
        row = {**{f"loss_mask{i}": v for i, v in enumerate(result.mask_losses)}, "loss_reg": result.regularizer,
               "ema_momentum": momentum, "target_std": result.target_std, "loss_context": result.context_loss,
               "context_weight": context_weight}
        return loop.StepReport(result.loss, result.finite, result.grad_norm, lr, cfg.phase_batch_size(where.phase), row)

    def measured_dtype(self) -> PretrainConfig:
        """``dtype: auto`` decided on this machine: one forward and backward of this model on a batch of
        the longest phase, timed in fp32 and bf16 (:func:`vjepa2.precision.fastest_dtype`); the config
        with the faster one. Rank 0 measures and every process follows; the weights, the RNG state and
        the loaders are left as they were (no optimiser step, gradients cleared)."""
        cfg, env = self.cfg, self.env
        phase = max(cfg.phases, key=lambda p: p.iterations)
        chosen, seconds = "fp32", {}
        if env.is_main:
            loaders = open_loaders(cfg, phase, 0, env)
            batch = next(loaders[0])
            close_loaders(loaders)

            def forward_backward(dtype: str) -> None:
                with precision.autocast(env.device, dtype):
                    loss, _ = self.model(batch.clips, batch.masks, *noise_generators(cfg, 0, env)[:1])
                loss.backward()
                self.model.zero_grad(set_to_none=True)

            with torch.random.fork_rng(devices=[env.device] if env.device.type == "cuda" else []):
                chosen, seconds = precision.fastest_dtype(forward_backward, env.device)
            times = ", ".join(f"{dtype} {s:.3f} s" for dtype, s in seconds.items())
            print(f"dtype auto: {chosen} (one forward + backward at phase {phase.name}'s shape on this machine: "
                  f"{times})", flush=True)
        return dataclasses.replace(cfg, dtype=dist_utils.broadcast_object(chosen))

    def log_values(self) -> dict:
        self.target_rank = target_feature_rank(self.training_model, self.rank_clips.to(self.env.device))
        return {"target_rank": self.target_rank}

    def checkpoint_payload(self, model_state: dict, step: int, where) -> dict:
        """The public release's keys (``encoder``, ``target_encoder``, ``predictor`` with
        ``module.backbone.`` prefixes) so that its loaders and :func:`vjepa2.load_encoder` read it."""
        metadata = checkpoint_metadata(self.model.encoder, self.model.predictor)
        if "output" in metadata["encoder_config"]:  # V-JEPA 2.1: loaded as the release's, last level by default
            metadata["encoder_config"]["output"] = "last"
        return {**split_models(model_state), METADATA_KEY: metadata}

    def model_state(self, checkpoint: dict) -> dict:
        return join_models(checkpoint)

    def close(self) -> None:
        close_loaders(self.loaders)

    def report_skipped(self, step: int, micro_batches: list[PretrainBatch]) -> None:
        """Count files the loader skipped on any process; list them in the log and ``skipped_files.tsv``."""
        local = [(path, reason) for batch in micro_batches for path, reason in batch.skipped]
        # On the training device: NCCL reduces CUDA tensors only.
        count = int(dist_utils.all_reduce_sum(torch.tensor(len(local), device=self.env.device)))
        if not count:
            return
        skipped = [item for part in dist_utils.all_gather_objects(local) for item in part]
        self.counters.files_skipped += len(skipped)
        if not self.monitor.enabled:
            return
        with open(Path(self.cfg.output_dir) / "skipped_files.tsv", "a") as f:
            for path, reason in skipped:
                f.write(f"{step + 1}\t{path}\t{reason}\n")
                self.skipped_files.append((step + 1, path, reason))
                self.monitor.write(f"step {step + 1}: skipped {path}: {reason}")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pretrain(cfg: PretrainConfig, resume: bool = False) -> RunSummary:
    """Train as ``cfg`` says; with ``resume``, continue from the newest valid checkpoint in
    ``cfg.output_dir`` (or start afresh if there is none). Works under ``torchrun``."""
    folders = {f"data.sources[{i}]": source.path for i, source in enumerate(cfg.data.sources)
               if source.kind != "synthetic"}
    with loop.distributed_run(cfg, folders) as env:
        if cfg.dtype == "auto" and not precision.bf16_is_native(env.device):
            cfg = dataclasses.replace(cfg, dtype="fp32")  # emulated bf16: nothing to measure
        for phase in cfg.phases:
            check_step_memory(cfg, phase, env)  # batch-size and memory errors before any work
        build_sources(cfg.data, print if env.is_main else None)  # a bad list file fails now, not at the first step
        # One process per run folder: a second `--resume` of a live run would delete its temporary files.
        with open_run_folder(cfg.output_dir, "pretrain", env.is_main):
            trainer = PretrainTrainer(cfg, env)
            if cfg.dtype == "auto":
                cfg = trainer.cfg = trainer.measured_dtype()
            run = loop.run_loop(trainer, cfg, env, resume)
    summary = RunSummary(**vars(run), target_std=trainer.target_std, target_rank=trainer.target_rank,
                         skipped_files=trainer.skipped_files)
    if env.is_main:
        print(format_summary(summary))
    return summary


def fixed_batch(loader, step: int) -> torch.Tensor | None:
    """Clips ``(B, 3, T, H, W)`` of this process's batch of ``step`` (the phase's first), rebuilt from
    the loader's dataset so that a resumed run monitors the very same clips; None if the loader
    cannot rebuild past steps."""
    dataset = getattr(loader, "dataset", None)
    return None if dataset is None else dataset[step].clips


def phase_banner(cfg: PretrainConfig, where, env: dist_utils.DistEnv) -> str:
    phase = where.phase
    return (f"phase {phase.name}: steps {where.start}-{where.start + phase.iterations - 1}, {phase.frames} frames "
            f"at {phase.resolution} px, global batch {cfg.phase_batch_size(phase)} = {env.world_size} process(es) "
            f"x {cfg.optim.grad_accumulation} micro-step(s) x {micro_batch_size(cfg, phase, env)}, "
            f"lr {phase.lr_schedule}")


def truncate_skipped_table(out_dir: Path, start_step: int) -> None:
    """Drop rows a killed run wrote after its last checkpoint (those steps will run again)."""
    table = out_dir / "skipped_files.tsv"
    if table.is_file():
        rows = [r for r in table.read_text().splitlines(keepends=True) if int(r.split("\t", 1)[0]) <= start_step]
        atomic_write_text(table, "".join(rows))


def config_banner(cfg: PretrainConfig, env: dist_utils.DistEnv) -> str:
    """The banner printed at start: the full config as YAML plus the process layout."""
    text = config_yaml(cfg).rstrip()
    return (f"vjepa2 pretrain: {env.world_size} process(es) on {env.device.type}, "
            f"{cfg.total_iterations} steps in {len(cfg.phases)} phase(s), output {cfg.output_dir}\n{text}")


def skipped_text(s: RunSummary) -> str:
    """``0``, or ``92 reads of 6 distinct files`` (a bad file is met again every time it is drawn)."""
    if not s.counters.files_skipped:
        return "0"
    table = s.output_dir / "skipped_files.tsv"
    rows = table.read_text().splitlines() if table.is_file() else [f"{st}\t{p}" for st, p, _ in s.skipped_files]
    distinct = len({row.split("\t")[1] for row in rows if row.count("\t") >= 1})
    return f"{s.counters.files_skipped} reads of {distinct} distinct file(s)"


def format_summary(s: RunSummary) -> str:
    """Human-readable end-of-run summary."""
    lines = [f"done: steps {s.start_step}-{s.end_step} in {s.seconds:.1f} s; last loss "
             f"{s.last_loss:.4f}; target feature std {s.target_std:.3f} (near 0 = collapse)"
             + (f", effective rank {s.target_rank:.1f} (a few = partial collapse)" if s.target_rank else "")
             if s.last_loss is not None else f"done: nothing to do (already at step {s.end_step})",
             f"non-finite steps skipped: {s.counters.nonfinite_total}; data files skipped: {skipped_text(s)}"]
    for step, path, reason in s.skipped_files[:20]:
        lines.append(f"  step {step}: {path}: {reason}")
    if len(s.skipped_files) > 20:
        lines.append(f"  ... {len(s.skipped_files) - 20} more in {s.output_dir / 'skipped_files.tsv'}")
    if s.checkpoint:
        lines.append(f"checkpoint: {s.checkpoint}")
    if s.loss_png:
        lines.append(f"loss curve: {s.loss_png}")
    return "\n".join(lines)
