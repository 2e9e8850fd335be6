"""The typed pretraining configuration (``vjepa2 pretrain --config ...``).

A run is described by one :class:`PretrainConfig`: the model, the masks, the data, the optimiser,
the objective, and a list of :class:`PhaseConfig` that the run walks through by itself (the paper's
progressive resolution: warm-up and constant phases at 16 frames / 256 px, a cool-down at
64 frames / 384 px). Every key is checked before any work: an unknown or mistyped key, a wrong type
or a bad value fails with a one-line :class:`~vjepa2.config.ConfigError` naming the key.

Batch sizes are *global*: the number of clips per optimiser step summed over all processes and
gradient-accumulation micro-steps. Each process runs ``batch_size / (world_size * grad_accumulation)``
clips per micro-step, so a recipe means the same thing on one CPU and on 128 GPUs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

from vjepa2.config import ConfigError, apply_overrides, from_dict, load_yaml, resolve_recipe
from vjepa2.data.clips.dataset import DataConfig
from vjepa2.masking import MaskConfig
from vjepa2.engine.config import CheckpointConfig, DistributedConfig, LogConfig, OptimConfig
from vjepa2.models.vjepa2_1 import Encoder21Config, Predictor21Config
from vjepa2.models.sizes import (SIZE_NUMBERS, EncoderConfig, Position, PredictorConfig, TransformerSize,
                                 encoder_config, predictor_config)

LrSchedule = Literal["warmup", "constant", "linear", "cosine"]


#: The keys older configs (and checkpoints saved before the predictor's size was nested) used.
_FLAT_PREDICTOR_KEYS = {f"predictor_{key}": key for key in SIZE_NUMBERS}


@dataclass(frozen=True)
class ModelConfig(TransformerSize):
    """Encoder and predictor architecture.

    ``size`` names the encoder (``tiny`` ... ``giant``, see :data:`vjepa2.models.SIZES`); any of
    ``dim``/``depth``/``heads``/``mlp_hidden`` given here replaces that size's value. ``predictor``
    is the predictor's size in the same form (default: the public 384/12/12/1536, i.e. ``small``
    with 12 heads). Configs that spell it flat (``predictor_dim: 96``) are read as nested.
    """

    size: str = "large"
    patch_size: int = 16
    tubelet_size: int = 2
    position: Position = "rope_compatible"
    predictor: TransformerSize = TransformerSize("small", heads=12)
    num_mask_tokens: int = 10
    activation_checkpointing: bool = False

    @classmethod
    def upgrade(cls, data: dict) -> dict:
        """``data`` with the flat ``predictor_<key>`` spelling moved into ``predictor``."""
        flat = {_FLAT_PREDICTOR_KEYS[key]: data[key] for key in _FLAT_PREDICTOR_KEYS if key in data}
        if not flat:
            return data
        rest = {key: value for key, value in data.items() if key not in _FLAT_PREDICTOR_KEYS}
        return {**rest, "predictor": {**(rest.get("predictor") or {}), **flat}}

    def validate(self) -> None:
        self.check_size("model")
        self.predictor.check_size("model.predictor")
        for key in ("patch_size", "tubelet_size", "num_mask_tokens"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        try:  # dims that do not fit together (e.g. dim not divisible by heads) fail here, not mid-run
            self.predictor_config(self.encoder(self.tubelet_size, self.patch_size))
        except ConfigError as err:
            raise ConfigError(f"model: {err}") from None

    def encoder(self, frames: int, resolution: int) -> EncoderConfig:
        """Encoder config; ``frames``/``resolution`` set the native grid of the ``sincos`` table."""
        return encoder_config(self.size, **self.numbers(), patch_size=self.patch_size,
                              tubelet_size=self.tubelet_size, position=self.position, img_size=resolution,
                              num_frames=frames, activation_checkpointing=self.activation_checkpointing)

    def predictor_config(self, encoder: EncoderConfig) -> PredictorConfig:
        """The predictor config for ``encoder`` (its grid, width and position mode)."""
        return predictor_config(encoder, **self.predictor.numbers(), num_mask_tokens=self.num_mask_tokens,
                                activation_checkpointing=self.activation_checkpointing)


@dataclass(frozen=True)
class LossConfig:
    """The objective: ``mean |pred - target|^p / p`` over the target tokens (``loss_exp`` p; 1 = the
    paper's L1) plus ``regularizer_weight * R``, an anti-collapse term on the online encoder's
    output tokens (``regularizer``: ``none`` = the paper, ``vicreg`` or ``sigreg``; formulas in
    :mod:`vjepa2.train.regularizers`). ``vicreg_cov_weight`` weighs VICReg's covariance term against
    its variance term; ``sigreg_*``: SIGReg's random directions per step, integration knots and range.
    ``motion_weight`` lambda (0 = the paper's plain mean): weight each target token's error by
    ``1 + lambda * c / mean(c)`` (rescaled to mean 1), ``c`` = how much the target feature at that
    place changed since the previous time step (:func:`vjepa2.train.pretrain.change_weights`).

    ``objective``: ``vjepa2`` (the above) or ``vjepa2_1``, V-JEPA 2.1's (arXiv 2603.14482; drop masks
    only): a 2.1 encoder whose four hierarchical levels (each layer-normed) are the targets and the
    predictor's input (deep supervision), and a dense loss on the *context* tokens too, ``+
    lambda_t * mean(w * |ctx_pred - target|^p) / p``, where ``w = 1 / sqrt(d)`` (``d``: the token's
    distance in grid units to the nearest masked token) with ``context_distance_weight`` and 1
    without, and ``lambda_t`` rises linearly from 0 to ``context_weight``
    between the fractions ``context_warmup`` of the run's steps (the release: from step 15k to 30k).
    """

    loss_exp: float = 1.0
    objective: Literal["vjepa2", "vjepa2_1"] = "vjepa2"
    context_weight: float = 0.5
    context_warmup: tuple[float, float] = (0.25, 0.5)
    context_distance_weight: bool = True
    motion_weight: float = 0.0
    regularizer: Literal["none", "vicreg", "sigreg"] = "none"
    regularizer_weight: float = 1.0
    vicreg_cov_weight: float = 0.02
    sigreg_projections: int = 256
    sigreg_knots: int = 17
    sigreg_t_max: float = 3.0

    def validate(self) -> None:
        if not (math.isfinite(self.loss_exp) and self.loss_exp > 0):
            raise ConfigError(f"loss.loss_exp must be positive (1 = L1, 2 = L2), got {self.loss_exp}")
        start, end = self.context_warmup
        if not 0.0 <= start <= end <= 1.0:
            raise ConfigError(f"loss.context_warmup must be two fractions of the run, 0 <= start <= end <= 1, "
                              f"got {list(self.context_warmup)}")
        for key in ("regularizer_weight", "vicreg_cov_weight", "motion_weight", "context_weight"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"loss.{key} must be a finite number >= 0, got {value}")
        if self.sigreg_projections < 1:
            raise ConfigError(f"loss.sigreg_projections must be >= 1, got {self.sigreg_projections}")
        if self.sigreg_knots < 2:
            raise ConfigError(f"loss.sigreg_knots must be >= 2, got {self.sigreg_knots}")
        if not (math.isfinite(self.sigreg_t_max) and self.sigreg_t_max > 0):
            raise ConfigError(f"loss.sigreg_t_max must be positive, got {self.sigreg_t_max}")


@dataclass(frozen=True)
class PhaseConfig:
    """One stretch of training with fixed clip shape and one learning-rate shape.

    ``lr_schedule``:
      * ``warmup``: linear from ``lr_start`` (default 0) up to ``optim.lr``;
      * ``constant``: ``optim.lr`` throughout;
      * ``linear`` / ``cosine``: from ``optim.lr`` down to ``lr_end`` (default 0).
    ``batch_size`` (global) defaults to the run's ``batch_size``.
    """

    name: str
    iterations: int
    frames: int
    resolution: int
    batch_size: int | None = None
    lr_schedule: LrSchedule = "constant"
    lr_start: float | None = None
    lr_end: float | None = None

    def validate(self) -> None:
        if not self.name or not self.name.replace("-", "_").isidentifier():
            raise ConfigError(f"phase name {self.name!r} must be a non-empty word (letters, digits, _ or -)")
        for key in ("iterations", "frames", "resolution"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"phases.{self.name}.{key} must be positive, got {getattr(self, key)}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ConfigError(f"phases.{self.name}.batch_size must be positive, got {self.batch_size}")
        if self.lr_start is not None and self.lr_schedule != "warmup":
            raise ConfigError(f"phases.{self.name}.lr_start is only read by lr_schedule: warmup "
                              f"(this phase is {self.lr_schedule!r}); remove it")
        if self.lr_end is not None and self.lr_schedule not in ("linear", "cosine"):
            raise ConfigError(f"phases.{self.name}.lr_end is only read by lr_schedule: linear|cosine "
                              f"(this phase is {self.lr_schedule!r}); remove it")
        for key in ("lr_start", "lr_end"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ConfigError(f"phases.{self.name}.{key} must be >= 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class PretrainConfig:
    """Everything one pretraining run needs. See the module docstring for batch-size semantics.

    ``dtype``: ``fp32``; ``bf16`` (autocast over fp32 weights; fast on GPUs and AMX / AVX512-BF16 CPUs
    for models wide enough: at width 96 the casts cost more than they save); ``auto`` (where bf16 is
    native, the faster of fp32 and bf16 for this model, measured at the start of the run and printed;
    fp32 elsewhere);
    ``fp64`` (the whole model in float64: slow, for checks whose result must not depend on the CPU's
    float32 kernels, e.g. that gradient accumulation or two processes reach one process's weights).

    ``threads`` sets PyTorch's CPU threads per process (null = PyTorch's default: all cores, or
    ``OMP_NUM_THREADS``). Small models on a shared machine run much faster on one thread.
    """

    phases: list[PhaseConfig]
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 8
    loss: LossConfig = field(default_factory=LossConfig)
    ema: tuple[float, float] = (0.99925, 0.99925)
    dtype: Literal["fp32", "bf16", "fp64", "auto"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None
    seed: int = 0
    output_dir: str = "runs/pretrain"
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    max_nonfinite_steps: int = 20
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def validate(self) -> None:
        if not self.phases:
            raise ConfigError("phases: give at least one phase (name, iterations, frames, resolution)")
        names = [p.name for p in self.phases]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"phases: names must be unique, {duplicates} repeat")
        for phase in self.phases:
            if phase.frames % self.model.tubelet_size:
                raise ConfigError(f"phases.{phase.name}.frames={phase.frames} is not a multiple of "
                                  f"model.tubelet_size={self.model.tubelet_size}")
            if phase.resolution % self.model.patch_size:
                raise ConfigError(f"phases.{phase.name}.resolution={phase.resolution} is not a multiple of "
                                  f"model.patch_size={self.model.patch_size}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if not all(0.0 <= m <= 1.0 for m in self.ema):
            raise ConfigError(f"ema: momenta must lie in [0, 1], got {list(self.ema)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 or null (PyTorch's default), got {self.threads}")
        if self.max_nonfinite_steps < 1:
            raise ConfigError(f"max_nonfinite_steps must be >= 1, got {self.max_nonfinite_steps}")
        if self.loss.objective == "vjepa2_1" and self.mask.mode != "drop":
            raise ConfigError("loss.objective=vjepa2_1 trains with dropped context tokens (mask.mode=drop), "
                              f"got mask.mode={self.mask.mode}")
        if self.loss.objective == "vjepa2_1" and self.model.numbers()["depth"] < 4:
            raise ConfigError(f"loss.objective=vjepa2_1 supervises four encoder levels: model.depth must be >= 4, "
                              f"got {self.model.numbers()['depth']}")
        if len(self.mask.generators) > self.model.num_mask_tokens:
            raise ConfigError(f"mask.generators: {len(self.mask.generators)} generators but the predictor has "
                              f"model.num_mask_tokens={self.model.num_mask_tokens}")

    @property
    def total_iterations(self) -> int:
        return sum(p.iterations for p in self.phases)

    def phase_batch_size(self, phase: PhaseConfig) -> int:
        """Global batch size of ``phase``."""
        return phase.batch_size or self.batch_size

    def encoder_config(self) -> EncoderConfig:
        """The online (and target) encoder's config; a V-JEPA 2.1 one (four hierarchical levels, its
        rotary RoPE at the training grid) for ``loss.objective: vjepa2_1``."""
        first = self.phases[0]
        encoder = self.model.encoder(first.frames, first.resolution)
        if self.loss.objective != "vjepa2_1":
            return encoder
        fields = {**dataclasses.asdict(encoder), "position": "rope_rotary", "output": "hierarchical",
                  "interpolate_rope": False}
        return Encoder21Config(**fields)

    def predictor_config(self) -> PredictorConfig:
        """The predictor's config; for ``vjepa2_1`` one that reads and predicts all four levels."""
        predictor = self.model.predictor_config(self.encoder_config())
        if self.loss.objective != "vjepa2_1":
            return predictor
        fields = {**dataclasses.asdict(predictor), "position": "rope_rotary", "levels": 4, "out_dim": None}
        return Predictor21Config(**fields)


# ------------------------------------------------------------------------------------------------
# Reading: named recipes, files, overrides
# ------------------------------------------------------------------------------------------------


def _phases_by_name(data: dict) -> dict:
    """Turn the ``phases`` list into a name-keyed mapping so that ``phases.<name>.<key>=...`` works."""
    phases = data.get("phases")
    if not isinstance(phases, list):
        return data
    keyed = {}
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict) or not isinstance(phase.get("name"), str):
            raise ConfigError(f"phases[{i}]: each phase needs a name (and iterations, frames, resolution)")
        keyed[phase["name"]] = phase
    return {**data, "phases": keyed}


def _apply_config_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Dotted overrides; phases are addressed by name: ``phases.cooldown.resolution=256``."""
    overrides = list(overrides)
    if not overrides:
        return data
    keyed = _phases_by_name(data)
    names = list(keyed["phases"]) if isinstance(keyed.get("phases"), dict) else []
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        parts = key.split(".")
        if parts[0] == "phases" and len(parts) >= 2 and names and parts[1] not in names:
            raise ConfigError(f"override {text!r}: no phase named {parts[1]!r}; phases are {', '.join(names)} "
                              f"(address them as phases.<name>.<key>=value)")
    out = apply_overrides(keyed, overrides)
    if isinstance(out.get("phases"), dict):
        out["phases"] = list(out["phases"].values())
    return out


def load_pretrain_config(name_or_path: str = "tiny", overrides: Iterable[str] = ()) -> PretrainConfig:
    """Read a recipe (shipped name or YAML path), apply dotted overrides, validate everything."""
    data = load_yaml(resolve_recipe("pretrain", name_or_path))
    data = _apply_config_overrides(data, overrides)
    if "phases" not in data:
        raise ConfigError("phases: missing; a config needs at least one phase (name, iterations, frames, resolution)")
    return from_dict(PretrainConfig, copy.deepcopy(data))
