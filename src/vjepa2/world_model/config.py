"""Configuration of V-JEPA 2-AC training (``vjepa2 train-ac``): data, frozen encoder, AC predictor,
schedule, loss, run settings. Typed and validated like :class:`vjepa2.train.config.PretrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from vjepa2.config import ConfigError, from_dict
from vjepa2.data.trajectories.lerobot import Streams
from vjepa2.models.ac_predictor import ACPredictorConfig, ac_predictor_config
from vjepa2.models.sizes import TransformerSize
from vjepa2.engine.config import OptimConfig, RunSettings, StepScheduleConfig

#: ``encoder.store_dtype`` -> the dtype of the cached features.
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ACDataConfig:
    """Trajectories (our format, DROID episodes, or a LeRobot v3.0 / v2.1 dataset; see
    :mod:`vjepa2.data.trajectories.sources`) and clips.

    ``clip_steps`` frames per training clip; shorter trajectories are skipped and reported.
    ``cache_dir``: where encoded features are kept (default ``<output_dir>/features``).
    ``camera`` / ``state`` / ``action``: which streams of a LeRobot dataset make the trajectory
    (:class:`vjepa2.data.trajectories.lerobot.Streams`: a video key or its last part; state keys joined by ``+``;
    an action key or ``derive``); ``camera`` also picks DROID's ``left`` / ``right`` camera.
    """

    trajectories: str = ""
    fps: float | None = None
    clip_steps: int = 4
    cache_dir: str | None = None
    convention: Literal["auto", "pose7", "delta"] = "auto"
    camera: str | None = None
    state: str | None = None
    action: str | None = None

    @property
    def streams(self) -> Streams:
        return Streams(camera=self.camera, state=self.state, action=self.action)

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
class ACModelConfig(TransformerSize):
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
        self.check_size("model")
        for name in ("action_scale", "state_scale"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"model.{name} must be positive or null (from the data), got {value}")
        for name in ("action_dim", "state_dim"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"model.{name} must be positive or null, got {value}")

    def build(self, enc_dim: int, img_size: int, patch_size: int, action_dim: int, state_dim: int,
              action_scale: float = 1.0, state_scale: float = 1.0) -> ACPredictorConfig:
        """The predictor config; ``action_scale``/``state_scale`` are used where the config leaves them null."""
        return ac_predictor_config(self.size, enc_dim=enc_dim, **self.numbers(), action_dim=action_dim, state_dim=state_dim,
                                   extrinsics_dim=max(action_dim - 1, 1), img_size=img_size, patch_size=patch_size,
                                   position=self.position, activation_checkpointing=self.activation_checkpointing,
                                   residual=self.residual,
                                   action_scale=self.action_scale or action_scale,
                                   state_scale=self.state_scale or state_scale)


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
class ACTrainConfig(RunSettings):
    """One AC training run. ``batch_size`` is global (clips per optimiser step over all processes
    and accumulation micro-steps), as in :class:`vjepa2.train.config.PretrainConfig`. ``threads``:
    PyTorch CPU threads per process (null = PyTorch's default); the small default model runs
    fastest on one thread of a shared machine."""

    data: ACDataConfig = field(default_factory=ACDataConfig)
    encoder: ACEncoderConfig = field(default_factory=ACEncoderConfig)
    model: ACModelConfig = field(default_factory=ACModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, weight_decay=0.04, clip_grad=1.0))
    schedule: StepScheduleConfig = field(default_factory=StepScheduleConfig)
    loss: ACLossConfig = field(default_factory=ACLossConfig)
    batch_size: int = 16
    output_dir: str = "runs/ac"

    def validate(self) -> None:
        if not self.data.trajectories:
            raise ConfigError("data.trajectories: give the directory of trajectories (--data DIR)")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if self.loss.rollout_steps > self.data.clip_steps - 1:
            raise ConfigError(f"loss.rollout_steps={self.loss.rollout_steps} needs clips of at least "
                              f"{self.loss.rollout_steps + 1} frames; data.clip_steps is {self.data.clip_steps}")
        self.check_run_settings()

    @property
    def cache_dir(self) -> Path:
        return Path(self.data.cache_dir) if self.data.cache_dir else Path(self.output_dir) / "features"


def load_ac_config(path: str | None = None, overrides=(), **top_level) -> ACTrainConfig:
    """Read a YAML file (or start from the defaults), apply ``top_level`` keys and dotted overrides, validate."""
    from vjepa2.config import apply_overrides, load_yaml, resolve_recipe

    data = load_yaml(resolve_recipe("train-ac", path)) if path else {}
    for key, value in top_level.items():
        if value is not None:
            section, _, name = key.rpartition(".")
            node = data
            for part in filter(None, section.split(".")):
                node = node.setdefault(part, {})
            node[name] = value
    return from_dict(ACTrainConfig, apply_overrides(data, overrides))
