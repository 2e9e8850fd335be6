"""V-JEPA 2 pretraining: the objective, one training step, and the loop through the phases.

Read :class:`JEPA.forward` and :func:`train_step` top to bottom: they are the paper's method.
The rest of the file is bookkeeping (phases, checkpoints, logs, processes).
"""

from __future__ import annotations

import contextlib
import math
import time
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from vjepa2 import precision
from vjepa2.config import ConfigError, to_dict
from vjepa2.data.dataset import PretrainBatch, build_pretrain_loader, build_sources
from vjepa2.evals.metrics import effective_rank
from vjepa2.masking import MaskConfig, corrupt_tokens
from vjepa2.models.encoder import VisionEncoder, gather_tokens
from vjepa2.models.predictor import Predictor
from vjepa2.models.sizes import EncoderConfig, PredictorConfig
from vjepa2.train import distributed as dist_utils
from vjepa2.files import RunLock, atomic_write_text, check_output_dir
from vjepa2.train.checkpoint import CheckpointDir, capture_rng_state, restore_rng_state
from vjepa2.train.config import LossConfig, PhaseConfig, PretrainConfig, check_same_model, config_differences
from vjepa2.train.ema import ema_update, make_target
from vjepa2.train.guard import stop_if_diverged
from vjepa2.train.monitor import RunMonitor
from vjepa2.train.regularizers import regularizer_value
from vjepa2.train.schedules import ema_momentum_at, lr_at, phase_at
from vjepa2.weights import METADATA_KEY, add_prefix, checkpoint_metadata, strip_prefixes

#: Key of the exact-resume state inside a checkpoint (next to the public ``encoder`` ... ``epoch``).
TRAIN_STATE_KEY = "vjepa2_train"
CHECKPOINT_KEYS = ("encoder", "target_encoder", "predictor", "opt", "epoch", TRAIN_STATE_KEY)


@dataclass
class JEPAOutput:
    """``loss`` (scalar: the prediction losses averaged over mask generators, plus the weighted
    regulariser), ``mask_losses`` ``(G,)`` (prediction only), ``regularizer`` (scalar, unweighted,
    0 without one), and the layer-normed target features ``targets`` ``(B, N, D)``; all but ``loss``
    detached (for logs and the collapse monitor)."""

    loss: torch.Tensor
    mask_losses: torch.Tensor
    regularizer: torch.Tensor
    targets: torch.Tensor


def change_weights(change: torch.Tensor, strength: float) -> torch.Tensor:
    """Token weights ``1 + strength * c / mean(c)``, rescaled to mean 1, from how much each token
    changed, ``change`` ``(..., N)`` (the mean over the last axis is per group of ``N`` tokens).
    Puts the loss on what moves: in a scene where a small object moves, most tokens barely change
    and, under a plain mean, their errors outweigh the moving object's."""
    weights = 1 + strength * change / change.mean(-1, keepdim=True).clamp_min(1e-6)
    return weights / weights.mean(-1, keepdim=True)


def temporal_change(h: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """``(B, N)``: how much each token of ``h`` ``(B, N, D)`` on ``grid`` ``(T', H', W')`` differs from
    the token at the same place one time step earlier (mean absolute difference over channels; the
    first time step takes the second's)."""
    B, N, D = h.shape
    x = h.reshape(B, grid[0], grid[1] * grid[2], D)
    if grid[0] < 2:
        return h.new_ones(B, N)
    diff = (x[:, 1:] - x[:, :-1]).abs().mean(-1)                     # (B, T'-1, H'W')
    return torch.cat((diff[:, :1], diff), dim=1).reshape(B, N)


class JEPA(nn.Module):
    """Online encoder, predictor and EMA target encoder; ``forward`` is the V-JEPA 2 loss of a batch.

    The predictor holds ``num_mask_tokens`` mask tokens (10 in the public checkpoints) but a run
    uses one per mask generator; the others are frozen so that every trainable parameter gets a
    gradient each step (DDP needs no unused-parameter search).
    """

    def __init__(self, encoder: EncoderConfig, predictor: PredictorConfig, mask: MaskConfig,
                 loss: LossConfig | None = None) -> None:
        super().__init__()
        self.encoder = VisionEncoder(encoder)
        self.predictor = Predictor(predictor)
        self.target_encoder = make_target(self.encoder)
        self.mask = mask
        self.loss = loss or LossConfig()
        for i, token in enumerate(self.predictor.mask_tokens):
            token.requires_grad_(i < len(mask.generators))

    def forward(self, clips: torch.Tensor, masks: list[tuple[torch.Tensor, torch.Tensor]],
                noise: torch.Generator | None = None, sketch: torch.Generator | None = None) -> JEPAOutput:
        """
        Args:
            clips: ``(B, 3, T, H, W)`` normalised clips.
            masks: per mask generator ``(context_idx (B, Nc), target_idx (B, Nt))``.
            noise: generator of the corruption noise (``noise`` mode only).
            sketch: generator of SIGReg's random directions (the same on every process).
        """
        p = self.loss.loss_exp
        # Targets: the EMA encoder sees the whole clip; layer norm without affine parameters.
        with torch.no_grad():
            h = self.target_encoder(clips)
            h = F.layer_norm(precision.at_least_fp32(h), (h.size(-1),))
        if self.mask.mode == "noise":
            tokens, grid = self.encoder.embed(clips)
        else:
            grid = self.encoder.grid(clips.shape)
        # (B, N) weights on the tokens that move (loss.motion_weight), or None for the paper's plain mean.
        weights = change_weights(temporal_change(h, grid), self.loss.motion_weight) if self.loss.motion_weight else None
        losses, regularizers = [], []
        for i, (context_idx, target_idx) in enumerate(masks):
            if self.mask.mode == "drop":
                # The encoder sees only the context tokens; the predictor fills in the targets.
                z = self.encoder(clips, keep=context_idx)
                pred = self.predictor(z, context_idx, target_idx, mask_index=i, grid=grid)
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
        loss, regularizer = mask_losses.mean(), mask_losses.new_zeros(())
        if regularizers:
            regularizer = torch.stack(regularizers).mean()
            loss = loss + self.loss.regularizer_weight * regularizer
        return JEPAOutput(loss, mask_losses.detach(), regularizer.detach(), h)

    def _regularizer(self, z: torch.Tensor, sketch: torch.Generator | None) -> torch.Tensor:
        cfg = self.loss
        return regularizer_value(cfg.regularizer, z, vicreg_cov_weight=cfg.vicreg_cov_weight,
                                 sigreg_projections=cfg.sigreg_projections, sigreg_knots=cfg.sigreg_knots,
                                 sigreg_t_max=cfg.sigreg_t_max, generator=sketch)


def build_optimizer(model: JEPA, cfg: PretrainConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over the encoder and predictor; no weight decay on biases, norms and 1-D parameters."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
                             **({"fused": True} if fused else {}))


@dataclass
class StepResult:
    loss: float
    mask_losses: list[float]
    regularizer: float
    grad_norm: float
    target_std: float
    finite: bool


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro_batches: list[PretrainBatch],
               *, lr: float, momentum: float, cfg: PretrainConfig, device: torch.device,
               noise: list[torch.Generator | None], sketch: torch.Generator | None = None) -> StepResult:
    """One optimiser step over ``len(micro_batches)`` gradient-accumulation micro-batches.

    A step whose loss or gradient is not finite changes nothing (no optimiser or EMA update).
    """
    jepa = dist_utils.unwrap(model)
    for group in optimizer.param_groups:
        group["lr"] = lr
    autocast = precision.autocast(device, cfg.dtype)
    # loss, regulariser, per-mask losses (float64: logged sums that do not depend on the process count)
    loss_sum = torch.zeros(2 + len(jepa.mask.generators), device=device, dtype=torch.float64)
    for m, batch in enumerate(micro_batches):
        clips = batch.clips.to(device, precision.PARAM_DTYPES[cfg.dtype], non_blocking=True)
        masks = [(c.to(device, non_blocking=True), t.to(device, non_blocking=True)) for c, t in batch.masks]
        with dist_utils.gradient_sync(model, enabled=m == len(micro_batches) - 1):
            with autocast:
                out = model(clips, masks, noise[m], sketch)
            (out.loss / len(micro_batches)).backward()
        parts = (out.loss.detach().reshape(1), out.regularizer.reshape(1), out.mask_losses)
        loss_sum += torch.cat(parts).to(loss_sum.dtype) / len(micro_batches)
    losses = dist_utils.all_reduce_sum(loss_sum) / dist_utils.world_size()
    params = [p for p in jepa.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad or math.inf)
    grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    finite = bool(torch.isfinite(losses).all()) and math.isfinite(grad_norm)
    if finite:
        optimizer.step()
        ema_update(jepa.target_encoder, jepa.encoder, momentum)
    optimizer.zero_grad(set_to_none=True)
    # Collapse monitor: per-dimension std of the (layer-normed) targets over the batch's tokens.
    target_std = float(out.targets.flatten(0, 1).std(dim=0).mean())
    return StepResult(float(losses[0]), [float(x) for x in losses[2:]], float(losses[1]), grad_norm, target_std, finite)


@torch.no_grad()
def target_feature_rank(model: nn.Module, clips: torch.Tensor) -> float:
    """Collapse monitor: effective rank of the target encoder's layer-normed features of ``clips``
    ``(B, 3, T, H, W)`` over all ``B * N`` tokens (see :func:`vjepa2.evals.metrics.effective_rank`).

    1 means every token sits on one direction; the width ``D`` means the variance is spread evenly.
    ``std`` (the other monitor) misses *partial* collapse, where a few directions (e.g. the clip's
    colour) carry nearly all the variance and the probe can barely read the rest.
    """
    jepa = dist_utils.unwrap(model)
    # FSDP2 gathers the root's own parameters (patch embedding, norms) only in the root's forward.
    sharded_root = hasattr(model, "unshard")
    if sharded_root:
        model.unshard()
    try:
        h = jepa.target_encoder(clips)
    finally:
        if sharded_root:
            model.reshard()
    h = F.layer_norm(h.float(), (h.size(-1),))
    return effective_rank(h.flatten(0, 1))["effective_rank"]


# ------------------------------------------------------------------------------------------------
# Bookkeeping: checkpoints, loaders, the loop
# ------------------------------------------------------------------------------------------------


def _full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded CPU ``(model, optimizer)`` state dicts with parameter-name keys (full on rank 0)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict, optim_sd: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=StateDictOptions(full_state_dict=True, strict=True))


def _split_models(model_sd: dict) -> dict:
    """``{"encoder.x": ...}`` -> ``{"encoder": {"module.backbone.x": ...}, ...}`` (public layout)."""
    parts = {"encoder": {}, "target_encoder": {}, "predictor": {}}
    for key, value in model_sd.items():
        head, rest = key.split(".", 1)
        parts[head][rest] = value
    return {name: add_prefix(sd) for name, sd in parts.items()}


def _join_models(checkpoint: dict) -> dict:
    return {f"{name}.{k}": v for name in ("encoder", "target_encoder", "predictor")
            for k, v in strip_prefixes(checkpoint[name]).items()}


@dataclass
class Counters:
    """Run totals that a resume must continue from."""

    nonfinite_total: int = 0
    nonfinite_in_a_row: int = 0
    files_skipped: int = 0


@dataclass
class RunSummary:
    """What :func:`pretrain` returns (also printed at the end)."""

    output_dir: Path
    start_step: int
    end_step: int
    seconds: float
    last_loss: float | None
    target_std: float | None
    counters: Counters
    target_rank: float | None = None
    skipped_files: list[tuple[int, str, str]] = field(default_factory=list)
    checkpoint: Path | None = None
    loss_png: Path | None = None


def _micro_layout(cfg: PretrainConfig, phase, env: dist_utils.DistEnv) -> int:
    """Clips per process per micro-step of ``phase``; fails early if the batch does not split evenly."""
    batch = cfg.phase_batch_size(phase)
    parts = env.world_size * cfg.optim.grad_accumulation
    if batch % parts:
        key = f"phases.{phase.name}.batch_size" if phase.batch_size else "batch_size"
        raise ConfigError(f"{key}={batch} (global) does not split into {env.world_size} processes x "
                          f"{cfg.optim.grad_accumulation} accumulation steps; use a multiple of {parts}")
    return batch // parts


def _open_loaders(cfg: PretrainConfig, phase, start_step: int, env: dist_utils.DistEnv):
    """One loader per accumulation micro-step. Micro-step ``m`` of rank ``r`` acts as rank
    ``r * A + m`` of ``world_size * A``: the global batch is the same whatever the split."""
    micro = _micro_layout(cfg, phase, env)
    accumulation = cfg.optim.grad_accumulation
    return [build_pretrain_loader(cfg.data, cfg.mask, frames=phase.frames, size=phase.resolution,
                                  batch_size=micro, seed=cfg.seed, start_step=start_step,
                                  patch_size=cfg.model.patch_size, tubelet_size=cfg.model.tubelet_size,
                                  rank=env.rank * accumulation + m, world_size=env.world_size * accumulation)
            for m in range(accumulation)]


def _close(loaders) -> None:
    for loader in loaders or []:
        close = getattr(loader, "close", None)
        if close:
            close()


def _noise_generators(cfg: PretrainConfig, step: int, env: dist_utils.DistEnv) -> list[torch.Generator | None]:
    """Corruption noise seeded by (seed, step, virtual rank): a resumed run draws the same noise."""
    if cfg.mask.mode != "noise":
        return [None] * cfg.optim.grad_accumulation
    gens = []
    for m in range(cfg.optim.grad_accumulation):
        seed = int(np.random.SeedSequence([cfg.seed, 0x0015E, step, env.rank * cfg.optim.grad_accumulation + m])
                   .generate_state(1, dtype=np.uint64)[0] >> 1)
        gens.append(torch.Generator(env.device).manual_seed(seed))
    return gens


def _sketch_generator(cfg: PretrainConfig, step: int, env: dist_utils.DistEnv) -> torch.Generator | None:
    """SIGReg's directions, seeded by (seed, step) alone: every process tests the same projections
    and a resumed run draws the same ones."""
    if cfg.loss.regularizer != "sigreg":
        return None
    seed = int(np.random.SeedSequence([cfg.seed, 0x516E, step]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(env.device).manual_seed(seed)


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pretrain(cfg: PretrainConfig, resume: bool = False) -> RunSummary:
    """Train as ``cfg`` says; with ``resume``, continue from the newest valid checkpoint in
    ``cfg.output_dir`` (or start afresh if there is none). Works under ``torchrun``."""
    env = dist_utils.init_distributed(cfg.device, cfg.distributed.backend)
    cfg = dataclasses.replace(cfg, dtype=precision.resolve_dtype(cfg.dtype, env.device))
    threads = torch.get_num_threads()
    try:
        check_output_dir(cfg.output_dir)
        for phase in cfg.phases:
            _micro_layout(cfg, phase, env)  # batch-size errors before any work
        build_sources(cfg.data)  # a missing or malformed list file fails now, not at the first step
        # One process per run folder: a second `--resume` of a live run would delete its temporary files.
        with RunLock(cfg.output_dir) if env.is_main else contextlib.nullcontext():
            return _run(cfg, resume, env)
    finally:
        torch.set_num_threads(threads)
        dist_utils.shutdown()


def _run(cfg: PretrainConfig, resume: bool, env: dist_utils.DistEnv) -> RunSummary:
    out_dir = Path(cfg.output_dir)
    checkpoints = CheckpointDir(out_dir / "checkpoints", keep_last=cfg.checkpoint.keep_last,
                                keep_steps=cfg.checkpoint.keep_steps)
    say = print if env.is_main else (lambda *a, **k: None)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)  # identical initial weights on every process
    model = JEPA(cfg.encoder_config(), cfg.predictor_config(), cfg.mask, cfg.loss)
    model = model.to(env.device, precision.PARAM_DTYPES[cfg.dtype])
    training_model = dist_utils.wrap_model(model, cfg.distributed.strategy, env)
    optimizer = build_optimizer(model, cfg, fused=cfg.distributed.strategy == "ddp")
    start_step, counters = _restore(cfg, resume, checkpoints, training_model, optimizer, env, say)

    total = cfg.total_iterations
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        _truncate_skipped_table(out_dir, start_step)
        say(config_banner(cfg, env))
    columns = (["step", "phase", "loss", "loss_avg"] + [f"loss_mask{i}" for i in range(len(cfg.mask.generators))]
               + ["loss_reg", "lr", "ema_momentum", "grad_norm", "target_std", "target_rank", "clips_per_s",
                  "nonfinite_total", "files_skipped", "elapsed_s"])
    monitor = RunMonitor(out_dir, columns, total, start_step, enabled=env.is_main,
                         tensorboard=cfg.log.tensorboard, progress_bar=cfg.log.progress_bar, desc="pretrain")

    summary = RunSummary(out_dir, start_step, start_step, 0.0, None, None, counters)
    loaders, phase_index, started = None, None, time.perf_counter()
    rank_clips = None  # the fixed batch of the collapse monitor (one per phase: clip shapes change)
    interval_losses: list[float] = []  # finite losses since the last log row
    try:
        for step in range(start_step, total):
            where = phase_at(cfg.phases, step)
            if where.index != phase_index:  # progressive resolution: new clip shape, new loaders
                _close(loaders)
                loaders, phase_index = _open_loaders(cfg, where.phase, step, env), where.index
                monitor.write(_phase_banner(cfg, where, env))
                rank_clips = _fixed_batch(loaders[0], where.start)
            tick = time.perf_counter()
            micro_batches = [next(loader) for loader in loaders]
            if rank_clips is None:  # a loader that cannot rebuild a past step: the phase's first batch seen
                rank_clips = micro_batches[0].clips
            _report_skipped(step, micro_batches, counters, summary, monitor, out_dir, env.device)
            lr, momentum = lr_at(cfg, step), ema_momentum_at(cfg, step)
            result = train_step(training_model, optimizer, micro_batches, lr=lr, momentum=momentum, cfg=cfg,
                                device=env.device, noise=_noise_generators(cfg, step, env),
                                sketch=_sketch_generator(cfg, step, env))
            clips_per_s = cfg.phase_batch_size(where.phase) / max(time.perf_counter() - tick, 1e-9)
            _count_non_finite(result, step, counters, cfg, monitor, checkpoints, env)
            summary.end_step, summary.last_loss, summary.target_std = step + 1, result.loss, result.target_std
            monitor.advance(loss=result.loss, lr=lr, clips_s=clips_per_s)
            if result.finite:
                interval_losses.append(result.loss)
            phase_end = step + 1 == where.start + where.phase.iterations
            if (step + 1) % cfg.log.every == 0 or phase_end or not result.finite:
                loss_avg = sum(interval_losses) / len(interval_losses) if interval_losses else math.nan
                interval_losses.clear()
                summary.target_rank = target_feature_rank(training_model, rank_clips.to(env.device))
                monitor.log({"step": step + 1, "phase": where.phase.name, "loss": result.loss, "loss_avg": loss_avg,
                             **{f"loss_mask{i}": v for i, v in enumerate(result.mask_losses)},
                             "loss_reg": result.regularizer, "lr": lr, "ema_momentum": momentum,
                             "grad_norm": result.grad_norm,
                             "target_std": result.target_std, "target_rank": summary.target_rank,
                             "clips_per_s": clips_per_s,
                             "nonfinite_total": counters.nonfinite_total, "files_skipped": counters.files_skipped,
                             "elapsed_s": time.perf_counter() - started})
            due = (step + 1) % cfg.checkpoint.every == 0 or phase_end or step + 1 in cfg.checkpoint.keep_steps
            if due and counters.nonfinite_in_a_row == 0:  # never during a streak (see vjepa2.train.guard)
                summary.checkpoint = _save(checkpoints, training_model, model, optimizer, cfg, env, step + 1,
                                           where.phase, counters, result.loss, lr)
    finally:
        _close(loaders)
        summary.seconds = time.perf_counter() - started
        summary.loss_png = monitor.close(plot="loss_avg")
    say(format_summary(summary))
    return summary


def _restore(cfg: PretrainConfig, resume: bool, checkpoints: CheckpointDir, training_model: nn.Module,
             optimizer: torch.optim.Optimizer, env: dist_utils.DistEnv, say) -> tuple[int, Counters]:
    """Load the newest valid checkpoint into model and optimiser (``--resume``): ``(step, counters)``.

    Rank 0 picks the file (deleting temporary files of a killed writer, skipping unreadable ones);
    every process then loads that same file. Without ``--resume`` an existing run is never overwritten.
    """
    found = None
    if env.is_main:
        if resume:
            for stale in checkpoints.remove_partial():
                say(f"removed a half-written checkpoint left by a killed run: {stale}")
            found = checkpoints.latest_valid(CHECKPOINT_KEYS, warn=say)
        elif checkpoints.steps():
            raise FileExistsError(f"{checkpoints.directory} already holds checkpoints; pass --resume to continue "
                                  f"that run, or choose another --out")
    found_path = dist_utils.broadcast_object(str(found[0]) if found else None)
    if found_path is None:
        if resume:
            say(f"--resume: no valid checkpoint in {checkpoints.directory}; starting from step 0")
        return 0, Counters()
    # Memory-mapped on the other ranks: reading the same file is cheap.
    state = found[1] if found else torch.load(found_path, map_location="cpu", weights_only=True, mmap=True)
    train_state = state[TRAIN_STATE_KEY]
    check_same_model(train_state["config"], to_dict(cfg), found_path)
    _load_full_state(training_model, optimizer, _join_models(state), state["opt"])
    rng = train_state["rng"]
    if len(rng) == env.world_size:
        restore_rng_state(rng[env.rank])
    else:
        say(f"checkpoint was written by {len(rng)} processes, this run has {env.world_size}: "
            f"random generators are re-seeded instead of restored")
    changed = [line for line in config_differences(train_state["config"], to_dict(cfg))
               if not line.startswith("output_dir:")]  # a moved run directory is not a change
    say(f"resumed from {found_path} at step {train_state['step']} (phase {train_state['phase']})"
        + (f"; config changed since: {'; '.join(changed)}" if changed else ""))
    # A resume is a new attempt: the streak that stopped a run does not count against it.
    return int(train_state["step"]), Counters(**{**train_state["counters"], "nonfinite_in_a_row": 0})


def _fixed_batch(loader, step: int) -> torch.Tensor | None:
    """Clips ``(B, 3, T, H, W)`` of this process's batch of ``step`` (the phase's first), rebuilt from
    the loader's dataset so that a resumed run monitors the very same clips; None if the loader
    cannot rebuild past steps."""
    dataset = getattr(loader, "dataset", None)
    return None if dataset is None else dataset[step].clips


def _phase_banner(cfg: PretrainConfig, where, env: dist_utils.DistEnv) -> str:
    phase = where.phase
    return (f"phase {phase.name}: steps {where.start}-{where.start + phase.iterations - 1}, {phase.frames} frames "
            f"at {phase.resolution} px, global batch {cfg.phase_batch_size(phase)} = {env.world_size} process(es) "
            f"x {cfg.optim.grad_accumulation} micro-step(s) x {_micro_layout(cfg, phase, env)}, "
            f"lr {phase.lr_schedule}")


def _count_non_finite(result: StepResult, step: int, counters: Counters, cfg: PretrainConfig,
                      monitor: RunMonitor, checkpoints: CheckpointDir, env: dist_utils.DistEnv) -> None:
    """Count a skipped (non-finite) step; stop the run after ``max_nonfinite_steps`` in a row."""
    if result.finite:
        counters.nonfinite_in_a_row = 0
        return
    counters.nonfinite_total += 1
    counters.nonfinite_in_a_row += 1
    monitor.write(f"step {step + 1}: non-finite loss ({result.loss}) or gradient norm ({result.grad_norm}); "
                  f"skipped ({counters.nonfinite_in_a_row} in a row)")
    stop_if_diverged(counters.nonfinite_in_a_row, cfg.max_nonfinite_steps, step, checkpoints, env.is_main)


def _truncate_skipped_table(out_dir: Path, start_step: int) -> None:
    """Drop rows a killed run wrote after its last checkpoint (those steps will run again)."""
    table = out_dir / "skipped_files.tsv"
    if table.is_file():
        rows = [r for r in table.read_text().splitlines(keepends=True) if int(r.split("\t", 1)[0]) <= start_step]
        atomic_write_text(table, "".join(rows))


def _report_skipped(step: int, micro_batches: list[PretrainBatch], counters: Counters, summary: RunSummary,
                    monitor: RunMonitor, out_dir: Path, device: torch.device) -> None:
    """Count files the loader skipped on any process; list them in the log and ``skipped_files.tsv``."""
    local = [(path, reason) for batch in micro_batches for path, reason in batch.skipped]
    # On the training device: NCCL reduces CUDA tensors only.
    count = int(dist_utils.all_reduce_sum(torch.tensor(len(local), device=device)))
    if not count:
        return
    skipped = [item for part in dist_utils.all_gather_objects(local) for item in part]
    counters.files_skipped += len(skipped)
    if not monitor.enabled:
        return
    with open(out_dir / "skipped_files.tsv", "a") as f:
        for path, reason in skipped:
            f.write(f"{step + 1}\t{path}\t{reason}\n")
            summary.skipped_files.append((step + 1, path, reason))
            monitor.write(f"step {step + 1}: skipped {path}: {reason}")


def _save(checkpoints: CheckpointDir, training_model: nn.Module, model: JEPA, optimizer, cfg: PretrainConfig,
          env: dist_utils.DistEnv, step: int, phase: PhaseConfig, counters: Counters, loss: float,
          lr: float) -> Path | None:
    """Collective: every process takes part in gathering the state; rank 0 writes the file.

    The public release's keys (``encoder``, ``target_encoder``, ``predictor`` with ``module.backbone.``
    prefixes, ``opt``, ``epoch``, ...) so that its loaders and :func:`vjepa2.load_encoder` read it;
    everything an exact resume needs beyond that sits under :data:`TRAIN_STATE_KEY`.
    """
    model_sd, optim_sd = _full_state(training_model, optimizer)
    rng = dist_utils.all_gather_objects(capture_rng_state())
    path = None
    if env.is_main:
        path = checkpoints.save({
            **_split_models(model_sd),
            "opt": optim_sd,
            "epoch": step,  # the public release counts epochs; this trainer counts optimiser steps
            "loss": loss,
            "batch_size": cfg.phase_batch_size(phase),
            "world_size": env.world_size,
            "lr": lr,
            METADATA_KEY: checkpoint_metadata(model.encoder, model.predictor),
            TRAIN_STATE_KEY: {"step": step, "phase": phase.name, "counters": vars(counters).copy(), "rng": rng,
                              "config": to_dict(cfg)},
        }, step)
    dist_utils.barrier()
    return path


def config_banner(cfg: PretrainConfig, env: dist_utils.DistEnv) -> str:
    """The banner printed at start: the full config as YAML plus the process layout."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip()
    return (f"vjepa2 pretrain: {env.world_size} process(es) on {env.device.type}, "
            f"{cfg.total_iterations} steps in {len(cfg.phases)} phase(s), output {cfg.output_dir}\n{text}")


def _skipped_text(s: RunSummary) -> str:
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
             f"non-finite steps skipped: {s.counters.nonfinite_total}; data files skipped: {_skipped_text(s)}"]
    for step, path, reason in s.skipped_files[:20]:
        lines.append(f"  step {step}: {path}: {reason}")
    if len(s.skipped_files) > 20:
        lines.append(f"  ... {len(s.skipped_files) - 20} more in {s.output_dir / 'skipped_files.tsv'}")
    if s.checkpoint:
        lines.append(f"checkpoint: {s.checkpoint}")
    if s.loss_png:
        lines.append(f"loss curve: {s.loss_png}")
    return "\n".join(lines)
