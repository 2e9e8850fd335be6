"""The training loop every trainer runs on: resume, the optimiser step's bookkeeping (gradient
accumulation, the non-finite guard), logging and checkpoint cadence, the run summary.

A trainer (pretraining in :mod:`vjepa2.train.pretrain`, AC training in
:mod:`vjepa2.world_model.train`) supplies what is its own, as a :class:`Trainer`: its objective
(inside ``step``), its batches, its schedule (``phases``) and its checkpoint payload. The loop
reads top to bottom::

    restore the newest valid checkpoint (--resume)   -> start step, counters, RNG state
    for each step: new phase? -> trainer.start_phase;  report = trainer.step(step)
                   non-finite? -> count, stop after max_nonfinite_steps in a row (vjepa2.engine.guard)
                   log row due? -> CSV / TensorBoard;  checkpoint due? -> atomic save (never in a streak)

The config it reads (``cfg``) is either trainer's: ``output_dir``, ``checkpoint``, ``log`` and
``max_nonfinite_steps`` (see :class:`vjepa2.train.config.PretrainConfig`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import nn
from torch.profiler import record_function

from vjepa2.config import ConfigError, from_dict, save_yaml, to_dict
from vjepa2.files import check_not_an_input, check_output_dir
from vjepa2.engine import distributed as dist_utils
from vjepa2.engine.checkpoint import CheckpointDir, capture_rng_state, restore_rng_state
from vjepa2.engine.config import OptimConfig, check_same_model, config_differences
from vjepa2.engine.guard import stop_if_diverged
from vjepa2.engine.interrupt import GracefulStop, Interrupted
from vjepa2.engine.monitor import RunMonitor
from vjepa2.engine.schedules import PhasePosition, phase_at

#: Key of the exact-resume state inside a checkpoint (next to the public layout's keys).
TRAIN_STATE_KEY = "vjepa2_train"


@dataclass
class Counters:
    """Run totals that a resume continues from."""

    nonfinite_total: int = 0
    nonfinite_in_a_row: int = 0
    files_skipped: int = 0


@dataclass
class StepReport:
    """One optimiser step as the loop sees it: the global-batch mean ``loss``, whether the step was
    applied (``finite``), the learning rate, the global batch in clips, and ``row``: the trainer's
    own log columns (per-mask losses, EMA momentum, ...)."""

    loss: float
    finite: bool
    grad_norm: float
    lr: float
    clips: int
    row: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSummary:
    """What a run did (each trainer adds its own fields in a subclass)."""

    output_dir: Path
    start_step: int
    end_step: int
    seconds: float = 0.0
    last_loss: float | None = None
    counters: Counters = field(default_factory=Counters)
    checkpoint: Path | None = None
    loss_png: Path | None = None


class Trainer(Protocol):
    """What a trainer hands :func:`run_loop`. Optional hooks, called where a trainer has them:
    ``start_phase(where) -> banner | None`` (new clip shapes need new loaders), ``log_values() ->
    dict`` (extra columns of a log row, e.g. the collapse monitor) and ``close()`` (stop loaders)."""

    kind: str                          # "pretrain" / "train-ac": progress-bar label
    model: nn.Module                   # the objective (unwrapped); its state is checkpointed
    training_model: nn.Module          # the same, wrapped for data parallelism (or itself)
    optimizer: torch.optim.Optimizer
    phases: Sequence                   # schedule segments, each with ``name`` and ``iterations``
    columns: list[str]                 # CSV columns (common ones it lists are filled by the loop)
    checkpoint_keys: tuple[str, ...]   # keys a valid checkpoint of this trainer holds
    plot_column: str                   # the column drawn into loss.png
    phase_ends_matter: bool            # log and checkpoint at the end of every phase (new clip shapes)

    def begin(self, start_step: int, counters: Counters, monitor: RunMonitor) -> None: ...
    def step(self, step: int, where: PhasePosition) -> StepReport: ...
    def checkpoint_payload(self, model_state: dict, step: int, where: PhasePosition) -> dict: ...
    def model_state(self, checkpoint: dict) -> dict: ...


def build_optimizer(model: nn.Module, optim: OptimConfig, fused: bool = False,
                    lr_scales: dict[str, float] | None = None) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases, norms and 1-D parameters.

    ``lr_scales``: parameter-name prefix -> fraction of the learning rate those parameters train at
    (their groups' ``lr_scale``, which :func:`optimizer_step` applies); the first matching prefix wins.
    """
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, True): [], (1.0, False): []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = next((s for prefix, s in (lr_scales or {}).items() if name.startswith(prefix)), 1.0)
        decay = not (param.ndim <= 1 or name.endswith(".bias"))
        groups.setdefault((float(scale), decay), []).append(param)
    param_groups = [{"params": params, "weight_decay": optim.weight_decay if decay else 0.0,
                     **({"lr_scale": scale} if scale != 1.0 else {})}
                    for (scale, decay), params in groups.items() if params or scale == 1.0]
    return torch.optim.AdamW(param_groups, lr=optim.lr, betas=optim.betas, eps=optim.eps,
                             **({"fused": True} if fused else {}))


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro_inputs: Sequence[tuple], *,
                   lr: float, clip_grad: float | None, autocast=contextlib.nullcontext()
                   ) -> tuple[torch.Tensor, float, bool]:
    """One optimiser step over gradient-accumulation micro-batches.

    ``model(*inputs) -> (loss, logged)`` for each micro-batch's ``inputs`` (under ``autocast``): the
    loss to minimise and a 1-D tensor of values to log (``logged[0]`` is the loss). Returns
    ``(logged mean over micro-batches and processes (float64), grad_norm, finite)``. The parts are
    named ``forward``, ``backward`` and ``optimizer`` in a ``torch.profiler`` trace. A step whose
    logged values or gradient norm are not finite leaves the weights as they were (the caller then
    skips its own updates too, e.g. the EMA).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    sums = None
    for m, inputs in enumerate(micro_inputs):
        with dist_utils.gradient_sync(model, enabled=m == len(micro_inputs) - 1):
            with autocast, record_function("forward"):
                loss, logged = model(*inputs)
            with record_function("backward"):
                (loss / len(micro_inputs)).backward()
        part = logged.detach().to(torch.float64) / len(micro_inputs)
        sums = part if sums is None else sums + part
    values = dist_utils.all_reduce_sum(sums) / dist_utils.world_size()
    with record_function("optimizer"):  # gradient norm (and clipping), AdamW
        params = [p for p in dist_utils.unwrap(model).parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad or math.inf)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        finite = bool(torch.isfinite(values).all()) and math.isfinite(grad_norm)
        if finite:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return values, grad_norm, finite


def per_micro_step(batch: int, key: str, env: dist_utils.DistEnv, accumulation: int) -> int:
    """Clips per process per accumulation micro-step of a global ``batch`` (config key ``key``);
    a batch that does not split evenly is a config error, found before any work."""
    parts = env.world_size * accumulation
    if batch % parts:
        raise ConfigError(f"{key}={batch} (global) does not split into {env.world_size} process(es) x "
                          f"{accumulation} accumulation steps; use a multiple of {parts}")
    return batch // parts


@contextlib.contextmanager
def distributed_run(cfg, inputs: dict[str, str]) -> Iterator[dist_utils.DistEnv]:
    """What every training run does around its work: the process group (``torchrun``) or a single
    process, ``cfg.threads`` torch threads, and ``cfg.output_dir`` checked before any work (usable, and
    neither one of the ``inputs`` nor inside an input folder: a run's plots are no data). Yields the
    :class:`~vjepa2.engine.distributed.DistEnv`; threads and the process group are restored at the end."""
    env = dist_utils.init_distributed(cfg.device, cfg.distributed.backend)
    threads = torch.get_num_threads()
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        check_output_dir(cfg.output_dir)
        check_not_an_input(cfg.output_dir, inputs, inside=True)
        yield env
    finally:
        torch.set_num_threads(threads)
        dist_utils.shutdown()


def refuse_to_overwrite(checkpoints: CheckpointDir, resume: bool) -> None:
    """Without ``--resume`` a folder that holds checkpoints is never trained into."""
    if not resume and checkpoints.steps():
        raise FileExistsError(f"{checkpoints.directory} already holds checkpoints; pass --resume to continue "
                              f"that run, or choose another --out")


def run_loop(trainer: Trainer, cfg, env: dist_utils.DistEnv, resume: bool) -> RunSummary:
    """Train ``trainer`` to the end of its phases as ``cfg`` says (see the module docstring)."""
    out_dir = Path(cfg.output_dir)
    say = print if env.is_main else (lambda *a, **k: None)
    checkpoints = CheckpointDir(out_dir / "checkpoints", keep_last=cfg.checkpoint.keep_last,
                                keep_steps=cfg.checkpoint.keep_steps)
    start_step, counters = _restore(trainer, cfg, resume, checkpoints, env, say)
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out_dir / "config.yaml")
    total = sum(p.iterations for p in trainer.phases)
    monitor = RunMonitor(out_dir, trainer.columns, total, start_step, enabled=env.is_main,
                         tensorboard=cfg.log.tensorboard, progress_bar=cfg.log.progress_bar, desc=trainer.kind)
    trainer.begin(start_step, counters, monitor)
    summary = RunSummary(out_dir, start_step, start_step, counters=counters)
    phase_index, started, interval_losses = None, time.perf_counter(), []
    try:
        with GracefulStop() as stop:  # Ctrl-C / SIGTERM: finish the step, checkpoint, stop
            for step in range(start_step, total):
                where = phase_at(trainer.phases, step)
                if where.index != phase_index:
                    phase_index = where.index
                    banner = trainer.start_phase(where) if hasattr(trainer, "start_phase") else None
                    if banner:
                        monitor.write(banner)
                tick = time.perf_counter()
                report = trainer.step(step, where)
                clips_per_s = report.clips / max(time.perf_counter() - tick, 1e-9)
                _count_non_finite(report, step, counters, cfg.max_nonfinite_steps, monitor, checkpoints, env)
                summary.end_step, summary.last_loss = step + 1, report.loss
                monitor.advance(loss=report.loss, lr=report.lr, clips_s=clips_per_s)
                if report.finite:
                    interval_losses.append(report.loss)
                phase_end = step + 1 == total or (trainer.phase_ends_matter
                                                    and step + 1 == where.start + where.phase.iterations)
                if (step + 1) % cfg.log.every == 0 or phase_end or not report.finite:
                    loss_avg = sum(interval_losses) / len(interval_losses) if interval_losses else math.nan
                    interval_losses.clear()
                    common = {"step": step + 1, "phase": where.phase.name, "loss": report.loss, "loss_avg": loss_avg,
                              "lr": report.lr, "grad_norm": report.grad_norm, "clips_per_s": clips_per_s,
                              "nonfinite_total": counters.nonfinite_total, "files_skipped": counters.files_skipped,
                              "elapsed_s": time.perf_counter() - started}
                    with record_function("log"):
                        extra = trainer.log_values() if hasattr(trainer, "log_values") else {}
                        monitor.log({k: v for k, v in {**common, **report.row, **extra}.items() if k in trainer.columns})
                due = (step + 1) % cfg.checkpoint.every == 0 or phase_end or step + 1 in cfg.checkpoint.keep_steps
                signum = _agreed_signal(stop, env)
                if (due or signum) and counters.nonfinite_in_a_row == 0:  # never during a streak (vjepa2.engine.guard)
                    summary.checkpoint = _save(trainer, cfg, checkpoints, env, step + 1, where, counters, report)
                if signum:
                    raise _interrupted(signum, step + 1, checkpoints)
    finally:
        if hasattr(trainer, "close"):
            trainer.close()
        summary.seconds = time.perf_counter() - started
        summary.loss_png = monitor.close(plot=trainer.plot_column)
    return summary


def _agreed_signal(stop: GracefulStop, env: dist_utils.DistEnv) -> int | None:
    """The signal that stops the run after this step, or None; every process of a distributed run
    stops at the same step if any one of them was signalled."""
    if not env.distributed:
        return stop.signum
    signalled = dist_utils.all_reduce_sum(torch.tensor(float(stop.signum is not None), device=env.device))
    return (stop.signum or signal.SIGTERM) if float(signalled) > 0 else None


def _interrupted(signum: int, step: int, checkpoints: CheckpointDir) -> Interrupted:
    """The :class:`Interrupted` that ends a signalled run after ``step`` steps."""
    newest = checkpoints.steps()
    where = (f"--resume continues from step {newest[-1][0]} ({newest[-1][1]})" if newest
             else "no checkpoint was written; --resume starts from step 0")
    return Interrupted(f"interrupted by {signal.Signals(signum).name} after step {step}: {where}", signum)


def _count_non_finite(report: StepReport, step: int, counters: Counters, limit: int, monitor: RunMonitor,
                      checkpoints: CheckpointDir, env: dist_utils.DistEnv) -> None:
    """Count a skipped (non-finite) step; stop the run after ``limit`` in a row."""
    if report.finite:
        counters.nonfinite_in_a_row = 0
        return
    counters.nonfinite_total += 1
    counters.nonfinite_in_a_row += 1
    monitor.write(f"step {step + 1}: non-finite loss ({report.loss}) or gradient norm ({report.grad_norm}); "
                  f"skipped ({counters.nonfinite_in_a_row} in a row)")
    stop_if_diverged(counters.nonfinite_in_a_row, limit, step, checkpoints, env.is_main)


def _restore(trainer: Trainer, cfg, resume: bool, checkpoints: CheckpointDir, env: dist_utils.DistEnv,
             say) -> tuple[int, Counters]:
    """Load the newest valid checkpoint into model and optimiser (``--resume``): ``(step, counters)``.

    Rank 0 picks the file (deleting temporary files of a killed writer, skipping unreadable ones);
    every process then loads that same file. Without ``--resume`` an existing run is never overwritten.
    """
    found = None
    if env.is_main:
        refuse_to_overwrite(checkpoints, resume)
        if resume:
            for stale in checkpoints.remove_partial():
                say(f"removed a half-written checkpoint left by a killed run: {stale}")
            found = checkpoints.latest_valid(trainer.checkpoint_keys, warn=say)
    found_path = dist_utils.broadcast_object(str(found[0]) if found else None)
    if found_path is None:
        if resume:
            say(f"--resume: no valid checkpoint in {checkpoints.directory}; starting from step 0")
        return 0, Counters()
    # Memory-mapped on the other ranks: reading the same file is cheap.
    state = found[1] if found else torch.load(found_path, map_location="cpu", weights_only=True, mmap=True)
    train_state = state[TRAIN_STATE_KEY]
    saved_config = current_layout(train_state["config"], type(cfg))
    check_same_model(saved_config, to_dict(cfg), found_path)
    dist_utils.load_full_state_dicts(trainer.training_model, trainer.optimizer, trainer.model_state(state),
                                     state["opt"])
    rng = train_state["rng"]
    if len(rng) == env.world_size:
        restore_rng_state(rng[env.rank])
    else:
        say(f"checkpoint was written by {len(rng)} processes, this run has {env.world_size}: "
            f"random generators are re-seeded instead of restored")
    changed = [line for line in config_differences(saved_config, to_dict(cfg))
               if not line.startswith("output_dir:")]  # a moved run directory is not a change
    say(f"resumed from {found_path} at step {train_state['step']} (phase {train_state['phase']})"
        + (f"; config changed since: {'; '.join(changed)}" if changed else ""))
    # A resume is a new attempt: the streak that stopped a run does not count against it.
    return int(train_state["step"]), Counters(**{**train_state["counters"], "nonfinite_in_a_row": 0})


def current_layout(saved: dict, config_type: type) -> dict:
    """A checkpoint's saved config in today's key layout (e.g. sizes nested since it was written),
    or as saved when it no longer reads as a ``config_type`` (the comparison then names the keys)."""
    try:
        return to_dict(from_dict(config_type, saved))
    except ConfigError:
        return saved


def _save(trainer: Trainer, cfg, checkpoints: CheckpointDir, env: dist_utils.DistEnv, step: int,
          where: PhasePosition, counters: Counters, report: StepReport) -> Path | None:
    """Collective: every process takes part in gathering the state; rank 0 writes the file.

    The trainer's payload holds the public release's keys (so that its loaders read the file);
    everything an exact resume needs beyond that sits under :data:`TRAIN_STATE_KEY`.
    """
    model_sd, optim_sd = dist_utils.full_state_dicts(trainer.training_model, trainer.optimizer)
    rng = dist_utils.all_gather_objects(capture_rng_state())
    path = None
    if env.is_main:
        path = checkpoints.save({
            **trainer.checkpoint_payload(model_sd, step, where),
            "opt": optim_sd,
            "epoch": step,  # the public release counts epochs; these trainers count optimiser steps
            "loss": report.loss,
            "lr": report.lr,
            "batch_size": report.clips,
            "world_size": env.world_size,
            TRAIN_STATE_KEY: {"step": step, "phase": where.phase.name, "counters": vars(counters).copy(),
                              "rng": rng, "config": to_dict(cfg)},
        }, step)
    dist_utils.barrier()
    return path
