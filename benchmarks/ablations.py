"""The seed's design claims re-judged at toy scale on the CPU -> section of docs/results.md.

    python benchmarks/ablations.py --quick --jobs 2   # 1 seed, 1/3 of the steps, smaller splits: ~16 min
    python benchmarks/ablations.py --jobs 2           # 2 seeds: ~2 h on 2 cores
    python benchmarks/ablations.py --estimate         # print the plan and its time estimate, run nothing
    python benchmarks/ablations.py --seeds 0 1 2      # more seeds: finished runs in --out are reused

Every variant is the tiny recipe (``vjepa2 pretrain``: 96 wide, 4 blocks, batch 16, the VICReg term
that keeps it from collapsing) on the ablations' 1000-step schedule with a few dotted overrides,
pretrained once per seed and probed frozen on toy-SSv2 and toy-appearance with the light attentive
probe (best of a small lr grid on validation, as in :mod:`vjepa2.evals.report`). The claims:

1. "mask denoising is better than mask prediction": ``mask.mode`` noise (at the default level, and
   as replacement of the token) vs drop, at equal steps and at equal training FLOPs (fewer noise
   steps); toy-anticipation (encoder + predictor) is probed too;
2. "L1 is more robust": loss exponent p = 1 vs p = 2;
3. "RoPE makes the resolution increase seamless": 3D-RoPE (``rope_compatible``) vs absolute
   ``sincos`` (interpolated to the grid of the input), both cooled down at 96 px / 16 frames after
   training at 64 px / 8 frames, probed at both sizes;
4. "progressive training saves ~8x compute": progressive (cool-down at 96 px / 16 frames) vs
   constant 96 px / 16 frames at equal training FLOPs and at 3x them, read as a curve for the FLOPs
   that constant resolution needs to match progressive.

Training FLOPs of a run = for each phase, the FLOPs of one optimiser step (``torch.utils.flop_counter``
plus the CPU attention kernels, as in ``benchmarks/train_step.py``; mean over ``flops_batches``
batches of that phase, seed 0) times the phase's steps. Equal-FLOPs variants stretch or shrink every
phase of their schedule by one factor.

Each (variant, seed) writes ``OUT/<variant>/seed-<s>/result.json`` when it is done, and every probe
its own ``results.json``; a re-run (after a crash, or with more seeds) reuses every finished run and
probe and resumes an interrupted pretraining from its last checkpoint. ``OUT/settings.json``
refuses to mix in runs made with other settings.

Time on the 2-core development machine (one torch thread per run; :func:`estimate_seconds`
extrapolates measured step and probe costs, ``--estimate`` prints them; docs/results.md has the
measured wall times)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import count_flops, machine_line  # noqa: E402

from vjepa2.evals.data import ToyVideos  # noqa: E402
from vjepa2.evals.features import ClipConfig, EncoderFeatures  # noqa: E402
from vjepa2.evals.probe import (GridConfig, ProbeReport, check_clip_geometry, fit_and_report,  # noqa: E402
                                 load_frozen_encoder)
from vjepa2.evals.report import ToyReportConfig, pretrain_tiny, write_section  # noqa: E402
from vjepa2.files import write_json  # noqa: E402
from vjepa2.evals.toy import ToyConfig, ToyTask  # noqa: E402
from vjepa2.models.attentive_probe import probe_config  # noqa: E402

SECTION_TITLE = "## Ablations (toy scale)"
FIGURE_NAME = "ablations.png"  # next to the section, in the img/ folder beside the Markdown file
RECIPE = "tiny"
TASKS = ("toy-ssv2", "toy-appearance")  # probed on every variant
ANTICIPATION = "toy-anticipation"  # probed with the encoder *and* the predictor, on the masking variants
TASK_LABELS = {"toy-ssv2": "toy-SSv2", "toy-appearance": "appearance", ANTICIPATION: "anticipation"}
METRIC_NAMES = {"toy-ssv2": "top-1", "toy-appearance": "top-1", ANTICIPATION: "action recall@5"}
# Probe input sizes: (frames, pixels). "low" is where the recipe trains; "high" = 2x frames, 1.5x pixels.
EVAL_SIZES = {"low": (8, 64), "high": (16, 96)}
# The ablations' own schedule: the recipe's phases with 1000 steps instead of its 6000, so that 9
# variants x 2 seeds fit in well under 3 h on 2 cores (the recipe's light probe reads 36.9 ± 0.9 % on
# toy-SSv2 at step 1000 vs ~25 % at random init: learning, not collapsed; docs/results.md, "Learning
# curve"), then the resolution of each variant's phases.
SCHEDULE = ("phases.warmup.iterations=40", "phases.constant.iterations=900", "phases.cooldown.iterations=60")
LOW_RES = ("phases.cooldown.frames=8", "phases.cooldown.resolution=64")  # warm-up/constant already are
PROGRESSIVE = ("phases.cooldown.frames=16", "phases.cooldown.resolution=96")  # the paper's shape of schedule
HIGH_RES = tuple(f"phases.{p}.{k}={v}" for p in ("warmup", "constant", "cooldown")
                 for k, v in (("frames", 16), ("resolution", 96)))
Claim = Literal[">", ">="]  # the first variant is better / no worse than the second


@dataclass(frozen=True)
class Variant:
    """One pretraining recipe: ``overrides`` on the tiny recipe, probed at ``evals`` sizes (and on
    toy-anticipation at the training size with ``anticipation``); ``match_flops_of``: stretch the
    schedule to ``flops_factor`` x that variant's training FLOPs."""

    name: str
    overrides: tuple[str, ...]
    evals: tuple[str, ...]
    note: str
    match_flops_of: str | None = None
    flops_factor: float = 1.0
    anticipation: bool = False

    def tasks(self, size: str) -> tuple[str, ...]:
        """The probe tasks run on features of eval ``size``."""
        return TASKS + ((ANTICIPATION,) if self.anticipation and size == "low" else ())


@dataclass(frozen=True)
class Test:
    """``a`` vs ``b`` on every metric of the comparison; ``claim`` is what the paper / seed says."""

    a: str
    b: str
    label: str
    claim: Claim | None


@dataclass(frozen=True)
class Comparison:
    """``columns`` = ``(variant, label)`` side by side, probed at ``evals`` on ``tasks``; claims are
    tested at ``claim_eval`` (the other sizes are shown with their differences, without a claim).
    ``equal_quality = (reference, curve)``: also report the training FLOPs at which the ``curve``
    variants (one recipe at several budgets) reach the reference's accuracy."""

    title: str
    claim: str
    columns: tuple[tuple[str, str], ...]
    evals: tuple[str, ...]
    tests: tuple[Test, ...]
    claim_eval: str
    tasks: tuple[str, ...] = TASKS
    equal_quality: tuple[str, tuple[str, ...]] | None = None

    def label(self, variant: str) -> str:
        return dict(self.columns)[variant]


MASKING = ("mask.mode=noise",)  # the seed's "mask denoising" at the default level: x + 1 clip-std of noise
VARIANTS = (
    Variant("base", LOW_RES, ("low",), "the recipe's defaults: drop, p = 1, rope_compatible", anticipation=True),
    Variant("noise", LOW_RES + MASKING, ("low",), "`mask.mode=noise` (x + σ·ε, σ = the clip's token std)",
            anticipation=True),
    Variant("noise, replace", LOW_RES + MASKING + ("mask.noise_kind=replace",), ("low",),
            "`mask.mode=noise mask.noise_kind=replace` (μ + σ·ε: the token's content is gone)", anticipation=True),
    Variant("noise, equal FLOPs", LOW_RES + MASKING, ("low",), "`mask.mode=noise`, fewer steps",
            match_flops_of="base", anticipation=True),
    Variant("p=2", LOW_RES + ("loss.loss_exp=2",), ("low",), "`loss.loss_exp=2`"),
    Variant("progressive", PROGRESSIVE, ("low", "high"), "rope_compatible; the last 60 steps at 96 px / 16 f"),
    Variant("progressive, sincos", PROGRESSIVE + ("model.position=sincos",), ("low", "high"),
            "`model.position=sincos`; the last 60 steps at 96 px / 16 f"),
    Variant("high-res, equal FLOPs", HIGH_RES, ("high",), "every phase at 96 px / 16 f, fewer steps",
            match_flops_of="progressive"),
    Variant("high-res, 3x FLOPs", HIGH_RES, ("high",), "every phase at 96 px / 16 f, 3x the FLOPs",
            match_flops_of="progressive", flops_factor=3.0),
)
VARIANT = {v.name: v for v in VARIANTS}

COMPARISONS = (
    Comparison("1. Masking: drop (mask prediction) vs noise (mask denoising)",
               "the seed: \"mask denoising is better than mask prediction\" (noise > drop; the public release "
               "drops); a noise step costs more FLOPs, so noise is also tested at the drop run's FLOPs",
               (("base", "drop"), ("noise", "noise"), ("noise, replace", "noise, replace"),
                ("noise, equal FLOPs", "noise, equal FLOPs")), ("low",),
               (Test("noise", "base", "equal steps", ">"), Test("noise, replace", "base", "equal steps", ">"),
                Test("noise, equal FLOPs", "base", "equal FLOPs", ">")), "low", tasks=TASKS + (ANTICIPATION,)),
    Comparison("2. Loss exponent: p = 1 (L1) vs p = 2 (L2)",
               "the seed: L1 is \"more robust\" than L2 (L1 > L2)",
               (("base", "p=1"), ("p=2", "p=2")), ("low",), (Test("base", "p=2", "equal steps", ">"),), "low"),
    Comparison("3. Position under a resolution-raising cool-down: 3D-RoPE vs interpolated sincos",
               "the seed: RoPE \"makes the resolution increase seamless\": after a cool-down at 1.5x pixels and 2x "
               "frames, RoPE features beat an absolute sincos table interpolated to the new grid (tested at "
               "96 px / 16 frames; at the training size no claim)",
               (("progressive", "rope_compatible"), ("progressive, sincos", "sincos")), ("low", "high"),
               (Test("progressive", "progressive, sincos", "equal steps", ">"),), "high"),
    Comparison("4. Progressive resolution vs constant high resolution",
               "the seed: progressive training saves ~8.4x the compute of training at the final resolution "
               "throughout, i.e. it is better at equal FLOPs and constant resolution needs several times its FLOPs "
               "to match it",
               (("progressive", "progressive"), ("high-res, equal FLOPs", "high-res, equal FLOPs"),
                ("high-res, 3x FLOPs", "high-res, 3x FLOPs")), ("high",),
               (Test("progressive", "high-res, equal FLOPs", "equal FLOPs", ">"),), "high",
               equal_quality=("progressive", ("high-res, equal FLOPs", "high-res, 3x FLOPs"))),
)


@dataclass(frozen=True)
class Settings:
    """What a run of the ablations does (``--quick`` and the full run differ only here).

    Attributes:
        seeds: pretraining (and probe) seeds; the toy splits are the same for every seed.
        step_scale: multiplies the steps of every phase of the tiny recipe.
        extra_overrides: dotted overrides applied to every variant (tests use a smaller model).
        toy: split sizes of every task.
        train_views: cached training views per clip (view 0 = centre crop, others augmented).
        light_grid / full_grid: probe grids (``full_grid`` None = light probe only).
        full_probe_sizes: the eval sizes at which the full probe runs too (the light one runs at all).
        flops_batches: batches per phase whose step FLOPs are averaged.
    """

    seeds: tuple[int, ...] = (0, 1)
    step_scale: float = 1.0
    extra_overrides: tuple[str, ...] = ()
    # As many training clips as the toy report: with 864 the light probe stayed within a few points of
    # chance for the default recipe (11-14 % on toy-SSv2 vs 25.8 % with 2400), too weak to rank variants.
    toy: ToyConfig = field(default_factory=lambda: ToyConfig(train_size=2400, val_size=480))
    train_views: int = 1
    # The grids of `vjepa2 eval toy-report` (ToyReportConfig).
    light_grid: GridConfig = field(default_factory=lambda: GridConfig(
        lrs=(1e-2, 3e-3), weight_decays=(0.01,), epochs=8, batch_size=16))
    # The full probe (the toy report's: lrs=(1e-2,), epochs=4, block_lr_scale=0.01) costs ~10x the
    # light one per clip at 64 px / 8 f and more at 96 px / 16 f: off by default so that the full run
    # fits in 3 h on 2 cores; a GridConfig here adds it at ``full_probe_sizes``.
    full_grid: GridConfig | None = None
    full_probe_sizes: tuple[str, ...] = ("low",)
    flops_batches: int = 3

    def probes(self, size: str) -> tuple[str, ...]:
        """The probes run on features of eval ``size``."""
        return ("light", "full") if self.full_grid and size in self.full_probe_sizes else ("light",)

    def grid(self, probe: str) -> GridConfig:
        return self.light_grid if probe == "light" else self.full_grid

    def identity(self) -> dict:
        """Everything a finished run depends on (the seeds may grow between re-runs), including the
        recipe's current settings: a run folder made with an older ``tiny`` recipe is not reused."""
        from vjepa2.config import to_dict
        from vjepa2.train.config import load_pretrain_config

        data = dataclasses.asdict(self)
        data.pop("seeds")
        data["schedule"] = list(SCHEDULE)
        data["recipe"] = {"name": RECIPE, "settings": to_dict(load_pretrain_config(RECIPE))}
        return json.loads(json.dumps(data))


FULL = Settings()
QUICK = Settings(seeds=(0,), step_scale=1 / 3, toy=ToyConfig(train_size=480, val_size=240), train_views=1,
                 light_grid=GridConfig(lrs=(1e-2, 3e-3), weight_decays=(0.01,), epochs=6, batch_size=16))

# ------------------------------------------------------------------------------------------------
# Schedules and FLOPs
# ------------------------------------------------------------------------------------------------


def load_config(variant: Variant, settings: Settings, seed: int):
    """The variant's :class:`~vjepa2.train.config.PretrainConfig` at the recipe's steps."""
    from vjepa2.train.config import load_pretrain_config

    return load_pretrain_config(RECIPE, SCHEDULE + variant.overrides + settings.extra_overrides + (f"seed={seed}",))


def step_flops(cfg, batches: int) -> list[float]:
    """FLOPs of one optimiser step (forward, backward; the optimiser and EMA add no matrix products)
    in each phase of ``cfg``: the mean over ``batches`` batches of that phase's clip shape."""
    from vjepa2.engine import distributed as dist_utils
    from vjepa2.engine.loop import build_optimizer
    from vjepa2.train.pretrain import JEPA, close_loaders, noise_generators, open_loaders, train_step

    env = dist_utils.DistEnv()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = JEPA(cfg.encoder_config(), cfg.predictor_config(), cfg.mask, cfg.loss)
    optimizer = build_optimizer(model, cfg.optim)
    per_phase = []
    for phase in cfg.phases:
        loaders = open_loaders(cfg, phase, 0, env)
        counts = []
        for i in range(batches):
            micro, noise = [next(loader) for loader in loaders], noise_generators(cfg, i, env)
            counts.append(count_flops(lambda micro=micro, noise=noise: train_step(
                model, optimizer, micro, lr=cfg.optim.lr, momentum=cfg.ema[0], cfg=cfg, device=env.device,
                noise=noise)))
        close_loaders(loaders)
        per_phase.append(statistics.mean(counts))
    return per_phase


def variant_flops(variant: Variant, settings: Settings, out: Path) -> list[float]:
    """Per-phase step FLOPs of ``variant`` (counted once, cached in ``out/flops.json``)."""
    path = out / "flops.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    if variant.name not in cache:
        cache[variant.name] = step_flops(load_config(variant, settings, 0), settings.flops_batches)
        write_json(cache, path)
    return cache[variant.name]


def plan_steps(variant: Variant, settings: Settings, out: Path) -> dict[str, int]:
    """Steps per phase: the recipe's times ``step_scale``, stretched to ``flops_factor`` x the FLOPs of
    ``match_flops_of``."""
    phases = load_config(variant, settings, 0).phases
    steps = {p.name: max(1, round(p.iterations * settings.step_scale)) for p in phases}
    if variant.match_flops_of:
        reference = VARIANT[variant.match_flops_of]
        target = variant.flops_factor * train_flops(plan_steps(reference, settings, out),
                                                    variant_flops(reference, settings, out))
        factor = target / train_flops(steps, variant_flops(variant, settings, out))
        steps = {name: max(1, round(n * factor)) for name, n in steps.items()}
    return steps


def train_flops(steps: dict[str, int], per_step: list[float]) -> float:
    """Training FLOPs of a run: each phase's steps times the FLOPs of one of its steps."""
    return sum(n * f for n, f in zip(steps.values(), per_step, strict=True))


# ------------------------------------------------------------------------------------------------
# One (variant, seed): pretrain, probe, record
# ------------------------------------------------------------------------------------------------


def run_one(variant: Variant, seed: int, settings: Settings, out: Path, threads: int) -> dict:
    """Pretrain ``variant`` with ``seed`` (resuming a partial run), probe it at each of its eval sizes
    on both tasks with every probe, write and return ``result.json``'s record."""
    from vjepa2.engine.checkpoint import CheckpointDir

    run_dir = run_dir_of(out, variant, seed)
    steps = plan_steps(variant, settings, out)
    per_step = variant_flops(variant, settings, out)
    overrides = (variant.overrides + settings.extra_overrides
                 + tuple(f"phases.{name}.iterations={n}" for name, n in steps.items())
                 + (f"threads={threads}", "log.tensorboard=false"))
    saved = [step for step, _ in CheckpointDir(run_dir / "pretrain" / "checkpoints").steps()]
    resumed = bool(saved) and sum(steps.values()) not in saved  # then the wall time covers only the rest
    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "pretrain.log", "a") as log:
        # The pretraining's banner, phase lines and summary go to the log file, not the console.
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            checkpoint, info = pretrain_tiny(ToyReportConfig(out=str(run_dir), pretrain_config=RECIPE,
                                                             pretrain_overrides=overrides, seed=seed), False)
    for stale in checkpoint.parent.glob("step-*.pt"):  # only the final checkpoint is probed
        if stale != checkpoint:
            stale.unlink()
    pretrain_done = time.time()
    evals = probe_run(variant, seed, settings, run_dir, checkpoint)
    shutil.rmtree(run_dir / "features", ignore_errors=True)  # hundreds of MB per run; the probes are kept
    record = {"variant": variant.name, "seed": seed, "overrides": list(overrides), "steps": steps,
              "phases": info["phases"], "step_flops": per_step, "train_flops": train_flops(steps, per_step),
              "pretrain_seconds": info.get("pretrain_seconds"), "resumed": resumed,
              "first_loss": info.get("first_loss"), "final_loss": info.get("final_loss"),
              "probe_seconds": round(time.time() - pretrain_done, 1),
              "seconds_this_run": round(time.time() - started, 1), "evals": evals}
    write_json(record, run_dir / "result.json")
    return record


def probe_run(variant: Variant, seed: int, settings: Settings, run_dir: Path, checkpoint: Path) -> dict:
    """``evals[size][task][probe]`` = validation accuracy (%) of ``checkpoint``'s frozen encoder on
    every task of ``variant`` at each of its eval sizes: top-1 on the classification tasks, class-mean
    action recall@5 on toy-anticipation (encoder + predictor, light probe, focal loss, as in
    ``vjepa2 eval toy-report``). Probes finished before an interruption are read back, not re-fit."""
    from vjepa2.evals.anticipation import HEAD_NAMES, AnticipationFeatures, load_predictor_pair

    encoder = load_frozen_encoder(str(checkpoint))
    features = {task: EncoderFeatures(encoder) for task in TASKS}
    if variant.anticipation:
        features[ANTICIPATION] = AnticipationFeatures(*load_predictor_pair(str(checkpoint), False, seed))
    evals: dict = {}
    for size in variant.evals:
        frames, pixels = EVAL_SIZES[size]
        clips = ClipConfig(frames=frames, size=pixels, train_views=settings.train_views)
        check_clip_geometry(clips, encoder.config)
        for task in variant.tasks(size):
            train, val = (ToyVideos(ToyTask(task, split, settings.toy)) for split in ("train", "val"))
            anticipation = task == ANTICIPATION
            for probe in ("light",) if anticipation else settings.probes(size):
                probe_dir = run_dir / "probes" / size / task / probe
                if (probe_dir / "results.json").is_file():  # finished before an interruption
                    report = ProbeReport.read(probe_dir / "results.json")
                else:
                    grid = settings.grid(probe)
                    report = fit_and_report(
                        train_data=train, val_data=val, fn=features[task], clips=clips,
                        probe_cfg=probe_config(encoder.config.dim, tuple(len(c) for c in train.head_classes), probe),
                        grid=dataclasses.replace(grid, loss="focal") if anticipation else grid, seed=seed,
                        cache_dir=str(run_dir / "features"), cache_dtype="float32", encode_batch=16, out=probe_dir,
                        head_names=HEAD_NAMES if anticipation else ("class",),
                        selection=("recall@5", 2) if anticipation else ("top1", 0),
                        settings={"variant": variant.name, "seed": seed, "eval": size},
                        device=torch.device("cpu"), progress=False)
                heads = report.best.heads
                evals.setdefault(size, {}).setdefault(task, {})[probe] = (
                    heads["action"].recall_at_5 if anticipation else heads["class"].top1)
    return evals


# ------------------------------------------------------------------------------------------------
# Time estimate (per-clip and per-step costs measured on one thread; used for the plan and the ETA)
# ------------------------------------------------------------------------------------------------

# Pretraining: per GFLOP, plus per step (data loading, logging): 8 f x 64 px drop 0.36 s/step, 16 f x 96 px 1.3 s.
PRETRAIN_SECONDS = {"per_gflop": 0.035, "per_step": 0.15}
FEATURE_SECONDS = {"low": 0.008, "high": 0.029}  # per clip view: render + encode
PROBE_SECONDS = {("low", "light"): 0.0008, ("low", "full"): 0.0079,  # per clip and epoch, per probe of the grid
                 ("high", "light"): 0.0028, ("high", "full"): 0.076}


def estimate_seconds(variant: Variant, settings: Settings, out: Path) -> float:
    """Rough wall time of one seed of ``variant`` on one thread."""
    steps = plan_steps(variant, settings, out)
    flops = train_flops(steps, variant_flops(variant, settings, out))
    seconds = flops / 1e9 * PRETRAIN_SECONDS["per_gflop"] + sum(steps.values()) * PRETRAIN_SECONDS["per_step"]
    n_train, n_val = settings.toy.train_size, settings.toy.val_size
    for size in variant.evals:
        for task in variant.tasks(size):
            # toy-anticipation: the predictor's pass about doubles the features' cost (measured ~1.8x)
            seconds += (2 if task == ANTICIPATION else 1) * FEATURE_SECONDS[size] * (
                n_train * settings.train_views + n_val)
            for probe in ("light",) if task == ANTICIPATION else settings.probes(size):
                grid = settings.grid(probe)
                # Scoring the validation split costs about one training epoch over it (forward only).
                seconds += PROBE_SECONDS[size, probe] * len(grid.hparams) * (n_train * grid.epochs + n_val)
    return seconds


# ------------------------------------------------------------------------------------------------
# Statistics and verdicts
# ------------------------------------------------------------------------------------------------

STRENGTHS = ((3.0, "strong"), (2.0, "moderate"), (1.0, "weak"))  # |difference| / its standard error


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def difference(a: list[float], b: list[float], val_size: int) -> tuple[float, float]:
    """``(mean(a) - mean(b), standard error of that difference)`` for accuracies in percent.

    The error is the larger of the seed-to-seed one (``sqrt(s_a^2 / n_a + s_b^2 / n_b)``, sample
    standard deviations) and the validation split's sampling error (binomial, ``val_size`` clips,
    as for single runs: every seed is scored on the same clips), so that one seed, or seeds that
    happen to agree, do not look infinitely precise.
    """
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    binomial = 100 * math.sqrt(sum(m / 100 * (1 - m / 100) for m in (ma, mb)) / val_size)
    seeds = math.sqrt(sa ** 2 / len(a) + sb ** 2 / len(b)) if sa is not None and sb is not None else 0.0
    return ma - mb, max(seeds, binomial, 1e-9)


def verdict(a: str, b: str, diff: float, se: float, claim: Claim | None) -> tuple[str, str]:
    """``(text, outcome)`` for ``diff = mean(a) - mean(b)`` with standard error ``se``.

    ``claim``: ``>`` = a is better than b, ``>=`` = a is no worse than b, None = no claim.
    Outcomes: ``supports``, ``consistent`` (no worse, within noise), ``inconclusive`` (a claimed
    win within noise), ``contradicts``; ``-`` without a claim.
    """
    z = diff / se
    strength = next((word for limit, word in STRENGTHS if abs(z) >= limit), None)
    if strength is None:
        text = "no difference beyond noise"
        outcome = {">": "inconclusive", ">=": "consistent"}.get(claim, "-")
    else:
        text = f"{a if z > 0 else b} better, {strength} evidence"
        outcome = "-" if claim is None else ("supports" if z > 0 else "contradicts")
    text += {"supports": "; supports the claim", "consistent": "; consistent with the claim",
             "contradicts": "; **contradicts the claim**", "inconclusive": "; does not support the claim",
             "-": ""}[outcome]
    return text, outcome


# ------------------------------------------------------------------------------------------------
# The Markdown section
# ------------------------------------------------------------------------------------------------


def metrics_of(comparison: Comparison, settings: Settings) -> list[tuple[str, str, str]]:
    """``(eval size, task, probe)`` of every accuracy ``comparison`` shows (its variants' tasks at each
    size: toy-anticipation only at the training size, with the light probe)."""
    first = VARIANT[comparison.columns[0][0]]
    return [(size, task, probe) for size in comparison.evals for task in comparison.tasks
            if task in first.tasks(size)
            for probe in (("light",) if task == ANTICIPATION else settings.probes(size))]


def metric_label(size: str, task: str, probe: str) -> str:
    frames, pixels = EVAL_SIZES[size]
    return f"{TASK_LABELS[task]} {METRIC_NAMES[task]}, {probe} probe, {pixels} px / {frames} f"


def _pm(mean: float, std: float | None, digits: int = 1) -> str:
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def render_section(records: dict[str, list[dict]], settings: Settings, command: str, machine: str,
                   figure: str | None = None) -> str:
    """The section (title line included) from ``records[variant] = [record per seed]``; ``figure``:
    a link (relative to the Markdown file) to :func:`plot_comparisons`' picture, shown above the tables."""
    n_seeds = len(settings.seeds)
    full = settings.full_grid
    hours = sum(r["seconds_this_run"] for runs in records.values() for r in runs) / 3600
    lines = [SECTION_TITLE, "",
             f"Produced by `{command}` ({machine}); the runs took {hours:.2f} h of pretraining and probing in "
             f"total. Each variant is the `{RECIPE}` recipe (96 wide, 4 blocks, batch 16) with the overrides "
             f"below, pretrained with seed(s) {', '.join(map(str, settings.seeds))} and probed frozen; every run's "
             f"record and probe results are in the `--out` folder.",
             "",
             f"- **Pretraining**: {' '.join(SCHEDULE)} x {settings.step_scale:.3g}; comparisons 1-2 train every phase at "
             f"64 px / 8 frames, 3-4 as each column says. Training FLOPs = per phase, the FLOPs of one optimiser step "
             f"(`torch.utils.flop_counter` + CPU attention, mean of {settings.flops_batches} batches) x its steps; "
             f"equal-FLOPs variants stretch every phase by one factor. Wall time = the pretraining loop (data "
             f"loading, logging and checkpoints included) on one CPU thread of a shared machine: a rough guide.",
             f"- **Probes**: toy-SSv2 (12 classes in time-reversed pairs, chance 8.3%) and toy-appearance (8 shapes, "
             f"chance 12.5%), and for comparison 1 toy-anticipation (28 actions; the frozen encoder *and* predictor, "
             f"light probe, focal loss; class-mean action recall@5, chance 17.9%), {settings.toy.train_size} "
             f"training / {settings.toy.val_size} validation clips each "
             f"(the same clips for every seed), {settings.train_views} cached training view(s) per clip. Light probe "
             f"(cross-attention only): {len(settings.light_grid.lrs)} lr x {len(settings.light_grid.weight_decays)} "
             f"wd, {settings.light_grid.epochs} epochs"
             + (f"; full probe (3 self-attention blocks + cross-attention): {len(full.lrs)} lr x "
                f"{len(full.weight_decays)} wd, {full.epochs} epochs, its self-attention blocks at "
                f"{full.block_lr_scale:g} x the lr, at "
                + " and ".join(f"{EVAL_SIZES[s][1]} px / {EVAL_SIZES[s][0]} f" for s in settings.full_probe_sizes)
                + " only (at 96 px / 16 f it costs ~10x the light probe per clip); a short run for a probe of "
                "this size, so read its rows next to the light probe's" if full else
                " (quick mode: smaller splits and fewer steps than the full run)" if settings.step_scale < 1 else "")
             + "; best of the grid on validation.",
             f"- **Numbers**: accuracy (%) on validation, mean ± sample standard deviation over "
             f"{n_seeds} seed(s) (no ± with one seed). A difference is given ± its standard error: the larger of "
             f"the seed-to-seed error and the validation split's binomial sampling error. Evidence by "
             f"|difference| / error: < 1 none (within noise), 1-2 weak, 2-3 moderate, ≥ 3 strong"
             + (" (with so few seeds the seed error is itself uncertain: read 'moderate' as 'suggestive')"
                if n_seeds <= 3 else "") + ". A claim is tested at the size named in its 'Overall' line.",
             ""]
    if figure:
        lines += [f"![every probe accuracy of the ablations, per comparison]({figure})", ""]
    for comparison in COMPARISONS:
        lines += _render_comparison(comparison, records, settings)
    return "\n".join(lines).rstrip("\n") + "\n"


def _render_comparison(comparison: Comparison, records: dict[str, list[dict]], settings: Settings) -> list[str]:
    names = [name for name, _ in comparison.columns]
    label = comparison.label
    metrics = metrics_of(comparison, settings)
    values = {name: {m: [r["evals"][m[0]][m[1]][m[2]] for r in records[name]] for m in metrics} for name in names}

    def row(title: str, cell) -> str:
        return f"| {title} | " + " | ".join(cell(name) for name in names) + " |"

    lines = [f"### {comparison.title}", "", f"Claim: {comparison.claim}.", "",
             row("", label), "|---|" + "---:|" * len(names),
             row("variant", lambda n: VARIANT[n].note),
             row("steps (per phase)", lambda n: " + ".join(map(str, records[n][0]["steps"].values()))),
             row("training GFLOP", lambda n: f"{records[n][0]['train_flops'] / 1e9:,.0f}"),
             row("pretraining wall time (min)", lambda n: _pm(*mean_std([r["pretrain_seconds"] / 60
                                                                          for r in records[n]])))]
    lines += [row(metric_label(*m), lambda n, m=m: _pm(*mean_std(values[n][m]))) for m in metrics]
    if any(r["resumed"] for n in names for r in records[n]):
        lines += ["", "Some runs were resumed after an interruption: their wall time covers only the last part."]
    lines += _test_lines(comparison, records, values, metrics, settings)
    if comparison.equal_quality:
        lines += _equal_quality_lines(comparison, records, values, metrics)
    return lines


def _test_lines(comparison: Comparison, records: dict[str, list[dict]], values: dict, metrics: list,
                settings: Settings) -> list[str]:
    """The differences table, the cost line, the tally of the claim's metrics and a verdict per test."""
    label = comparison.label
    lines = ["", "| test | metric | difference | verdict |", "|---|---|---:|---|"]
    outcomes, verdicts = [], []
    for test in comparison.tests:
        a, b = label(test.a), label(test.b)
        per_test = []
        for m in metrics:
            claim = test.claim if m[0] == comparison.claim_eval else None
            diff, se = difference(values[test.a][m], values[test.b][m], settings.toy.val_size)
            text, outcome = verdict(a, b, diff, se, claim)
            if claim:
                outcomes.append((outcome, 1 <= abs(diff / se) < 2))
                per_test.append(outcome)
            lines.append(f"| {a} − {b} ({test.label}) | {metric_label(*m)} | {diff:+.1f} ± {se:.1f} | {text} |")
        if per_test:
            verdicts.append(f"{a} vs {b} ({test.label}): **{claim_verdict(per_test)}** "
                            f"({', '.join(f'{per_test.count(k)} {k}' for k in OUTCOMES if k in per_test)})")
    cost = []
    for test in comparison.tests:
        flops, seconds = ([statistics.mean(r[key] for r in records[name]) for name in (test.a, test.b)]
                          for key in ("train_flops", "pretrain_seconds"))
        cost.append(f"{label(test.a)} / {label(test.b)} = {flops[0] / flops[1]:.2f}x the training FLOPs, "
                    f"{seconds[0] / seconds[1]:.2f}x the wall time")
    frames, pixels = EVAL_SIZES[comparison.claim_eval]
    tally = []
    for kind, one, many in (("supports", "supports it", "support it"),
                            ("consistent", "is consistent with it (no worse within noise)",
                             "are consistent with it (no worse within noise)"),
                            ("inconclusive", "is inconclusive", "are inconclusive"),
                            ("contradicts", "contradicts it", "contradict it")):
        found = [weak for outcome, weak in outcomes if outcome == kind]
        if found:
            tally.append(f"{len(found)} {one if len(found) == 1 else many}"
                         + (f" ({sum(found)} of them weakly)" if any(found) else ""))
    return lines + ["", "Cost: " + "; ".join(cost) + ".", "",
                    f"**Overall** (the claim's tests, probes at {pixels} px / {frames} frames): of {len(outcomes)} "
                    f"metrics, {', '.join(tally)}.", "", "Verdict: " + "; ".join(verdicts) + ".", ""]


OUTCOMES = ("supports", "consistent", "inconclusive", "contradicts")


def claim_verdict(outcomes: list[str]) -> str:
    """One test's verdict from its metrics' outcomes (:func:`verdict`): ``reproduced`` when at least
    half support the claim and none contradicts it, ``refuted`` when at least half contradict it and
    none supports it, ``mixed`` when some do each, else ``within noise``."""
    supports, contradicts = outcomes.count("supports"), outcomes.count("contradicts")
    if supports and contradicts:
        return "mixed"
    if supports * 2 >= len(outcomes) and supports:
        return "reproduced"
    if contradicts * 2 >= len(outcomes) and contradicts:
        return "refuted"
    return "within noise"


def flops_to_match(target: float, curve: list[tuple[float, float]]) -> tuple[str, float]:
    """Training FLOPs at which a recipe whose ``(flops, accuracy)`` points are ``curve`` reaches
    ``target`` accuracy, interpolated linearly in log FLOPs between the first pair of points that
    brackets it: ``("=", flops)``; ``("<=", first point's flops)`` if its first point already reaches
    it; ``(">", last point's flops)`` if no point does."""
    curve = sorted(curve)
    if curve[0][1] >= target:
        return "<=", curve[0][0]
    for (f0, q0), (f1, q1) in zip(curve, curve[1:]):
        if q0 < target <= q1:
            t = (target - q0) / (q1 - q0)
            return "=", math.exp(math.log(f0) + t * (math.log(f1) - math.log(f0)))
    return ">", curve[-1][0]


def _equal_quality_lines(comparison: Comparison, records: dict[str, list[dict]], values: dict,
                         metrics: list) -> list[str]:
    """Per claim metric: the FLOPs the ``curve`` variants need to match the reference's mean accuracy."""
    reference, curve = comparison.equal_quality
    flops = {name: statistics.mean(r["train_flops"] for r in records[name]) for name in (reference, *curve)}
    parts = []
    for m in metrics:
        if m[0] != comparison.claim_eval:
            continue
        target = statistics.mean(values[reference][m])
        kind, at = flops_to_match(target, [(flops[n], statistics.mean(values[n][m])) for n in curve])
        parts.append(f"{metric_label(*m)} ({target:.1f} %): {'' if kind == '=' else kind + ' '}"
                     f"{at / flops[reference]:.2f}x")
    return [f"FLOPs to equal quality (means over seeds; {', '.join(comparison.label(n) for n in curve)} "
            f"read as one curve, interpolated in log FLOPs): the constant-resolution recipe needs, in multiples "
            f"of {comparison.label(reference)}'s training FLOPs, " + "; ".join(parts) + ".", ""]


# A uniform guess, %: top-1 of 12 / 8 classes, recall@5 of 28 actions.
CHANCE = {"toy-ssv2": 100 / 12, "toy-appearance": 100 / 8, ANTICIPATION: 500 / 28}


def plot_comparisons(records: dict[str, list[dict]], settings: Settings, path: Path) -> Path:
    """One panel per comparison: for each metric a group of bars (one per variant, the mean over
    seeds, ± the seeds' standard deviation), each seed's accuracy as a dot, chance as a dashed line."""
    from vjepa2.plotting import pyplot, save_png

    plt = pyplot()
    cols = 2
    rows = math.ceil(len(COMPARISONS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.6 * rows), dpi=100, squeeze=False)
    for ax, comparison in zip(axes.flat, COMPARISONS):
        metrics = metrics_of(comparison, settings)
        names = [name for name, _ in comparison.columns]
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(metrics))]
            per_metric = [[r["evals"][m[0]][m[1]][m[2]] for r in records[name]] for m in metrics]
            stats = [mean_std(values) for values in per_metric]
            ax.bar(xs, [mean for mean, _ in stats], width * 0.9, label=comparison.label(name),
                   yerr=[std or 0.0 for _, std in stats], capsize=2, alpha=0.8)
            for x, values in zip(xs, per_metric):
                ax.plot([x] * len(values), values, "k.", ms=3)
        for i, (_, task, _) in enumerate(metrics):
            ax.hlines(CHANCE[task], i - 0.45, i + 0.45, colors="grey", linestyles="--", lw=0.8)
        ax.set_xticks(range(len(metrics)), [f"{TASK_LABELS[t]}\n{p}, {EVAL_SIZES[s][1]} px / {EVAL_SIZES[s][0]} f"
                                            for s, t, p in metrics], fontsize=7)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(comparison.title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(COMPARISONS):]:
        ax.set_visible(False)
    fig.suptitle(f"Ablations at toy scale: {len(settings.seeds)} seed(s), bars = mean ± sd, dots = seeds, "
                 f"dashed = chance", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


# ------------------------------------------------------------------------------------------------
# The whole run
# ------------------------------------------------------------------------------------------------


def check_settings(out: Path, settings: Settings) -> None:
    """Refuse to mix finished runs made with other settings into this run's tables."""
    path = out / "settings.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings.identity():
            raise SystemExit(f"{out} holds runs made with other settings ({path}); use another --out or delete it")
    else:
        write_json(settings.identity(), path)


def run_ablations(settings: Settings, out: Path, results_md: Path | None, threads: int = 1,
                  command: str = "python benchmarks/ablations.py", log=print, jobs: int = 1) -> dict:
    """Every (variant, seed) that ``out`` does not hold yet, ``jobs`` of them at a time (each in its
    own process with ``threads`` torch threads when ``jobs`` > 1), then the section and its figure.
    Returns ``{"records": {variant: [per seed]}, "ran": [(variant, seed)], "reused": [...], "section": str}``."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    torch.set_num_threads(threads)
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings)
    jobs_list = [(v, s) for s in settings.seeds for v in VARIANTS]
    if not (out / "flops.json").is_file():
        log("counting the FLOPs of a training step of each variant (once; about a minute)")
    # Counts every variant's FLOPs here, before any worker starts, so that workers only read flops.json.
    estimates = {v.name: estimate_seconds(v, settings, out) for v in VARIANTS}
    todo = [(v, s) for v, s in jobs_list if not (run_dir_of(out, v, s) / "result.json").is_file()]
    reused = [(v.name, s) for v, s in jobs_list if (v, s) not in todo]
    left = sum(estimates[v.name] for v, _ in todo)
    log(f"{len(jobs_list)} runs, {len(reused)} already done; estimated {left / 60 / min(jobs, max(len(todo), 1)):.0f} "
        f"min for the rest" + (f" ({jobs} at a time)" if jobs > 1 else ""))
    ran: list[tuple[str, int]] = []
    done_estimate, done_actual = 0.0, 0.0

    def finished(variant: Variant, seed: int, record: dict) -> None:
        nonlocal left, done_estimate, done_actual
        ran.append((variant.name, seed))
        done_actual += record["seconds_this_run"]
        done_estimate += estimates[variant.name]
        left -= estimates[variant.name]
        eta = left * done_actual / done_estimate / jobs
        probes = ", ".join(f"{EVAL_SIZES[size][1]} px {TASK_LABELS[t]} {p} {acc:.1f}" for size, tasks in
                           record["evals"].items() for t, by_probe in tasks.items() for p, acc in by_probe.items())
        log(f"[{len(reused) + len(ran)}/{len(jobs_list)}] {variant.name} seed {seed}: pretraining "
            f"{record['pretrain_seconds'] / 60:.1f} min, probes {record['probe_seconds'] / 60:.1f} min ({probes}) | "
            f"elapsed {(time.time() - started) / 60:.1f} min, ETA {eta / 60:.0f} min")

    if jobs == 1 or len(todo) <= 1:
        for variant, seed in todo:
            finished(variant, seed, run_one(variant, seed, settings, out, threads))
    else:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no forked torch state
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(_run_one_in_worker, variant, seed, settings, out, threads): (variant, seed)
                       for variant, seed in todo}
            try:
                for future in as_completed(futures):
                    finished(*futures[future], future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # finished runs stay on disk for a re-run
                raise
    records = {v.name: [json.loads((run_dir_of(out, v, s) / "result.json").read_text()) for s in settings.seeds]
               for v in VARIANTS}
    figure = None
    if results_md is not None:
        figure = f"img/{FIGURE_NAME}"
        plot_comparisons(records, settings, results_md.parent / figure)
    section = render_section(records, settings, command, machine_line(), figure)
    if results_md is not None:
        write_section(results_md, section)
        log(f"wrote the section '{SECTION_TITLE[3:]}' of {results_md}")
    return {"records": records, "ran": ran, "reused": reused, "section": section}


def _run_one_in_worker(variant: Variant, seed: int, settings: Settings, out: Path, threads: int) -> dict:
    """:func:`run_one` in a worker process (which starts with torch's default thread count)."""
    torch.set_num_threads(threads)
    return run_one(variant, seed, settings, out, threads)


def run_dir_of(out: Path, variant: Variant, seed: int) -> Path:
    """``out/<variant>/seed-<seed>``: the run's pretraining, probes and ``result.json``."""
    return out / variant.name.replace(", ", "-").replace(" ", "-") / f"seed-{seed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, smaller splits, 1/3 of the steps")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0 1, or 0 with --quick)")
    parser.add_argument("--out", help="run folder (default runs/ablations, runs/ablations-quick with --quick)")
    parser.add_argument("--results-md", default="docs/results.md", help="section goes here; 'none' = do not write")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (default 1: fastest for this size)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time, each in its own process (e.g. the number of cores / --threads)")
    parser.add_argument("--estimate", action="store_true", help="print the plan and its time estimate; run nothing")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.seeds:
        settings = dataclasses.replace(settings, seeds=tuple(args.seeds))
    out = Path(args.out or ("runs/ablations-quick" if args.quick else "runs/ablations"))
    torch.set_num_threads(args.threads)
    if args.estimate:
        out.mkdir(parents=True, exist_ok=True)
        check_settings(out, settings)  # the FLOP counts cached in out/ depend on the settings
        total = 0.0
        for variant in VARIANTS:
            seconds = estimate_seconds(variant, settings, out) * len(settings.seeds)
            total += seconds
            steps = plan_steps(variant, settings, out)
            print(f"{variant.name:24s} steps {sum(steps.values()):5d}  "
                  f"GFLOP {train_flops(steps, variant_flops(variant, settings, out)) / 1e9:7.0f}  "
                  f"~{seconds / 60:5.1f} min for {len(settings.seeds)} seed(s)")
        print(f"total ~{total / 60:.0f} min" + (f", ~{total / 60 / args.jobs:.0f} min with --jobs {args.jobs} "
                                                "(if the machine has a core per job)" if args.jobs > 1 else ""))
        return 0
    results_md = None if args.results_md.lower() == "none" else Path(args.results_md)
    command = " ".join(["python benchmarks/ablations.py", *(argv if argv is not None else sys.argv[1:])])
    run_ablations(settings, out, results_md, args.threads, command, jobs=args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
