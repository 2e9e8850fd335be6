"""Model configurations and the named sizes.

Public V-JEPA 2 sizes (width / depth / heads / MLP hidden): large 1024/24/16/4096,
huge 1280/32/16/5120, giant 1408/40/22/6144 (the public "vit_giant_xformers", head width 64).
tiny/small/base are the usual ViT sizes, for CPU work. The predictor of every public model is
384/12/12/1536 with 10 mask tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from vjepa2.config import ConfigError, from_dict

Position = Literal["rope_compatible", "rope_rotary", "sincos"]


@dataclass(frozen=True)
class TransformerConfig:
    """Fields shared by every ViT-style model of the project (encoder, predictors).

    ``img_size`` (and the subclasses' ``num_frames``) give the model's *native* token grid: the
    ``sincos`` table's grid, the predictor's default RoPE grid, the AC predictor's reference grid.
    RoPE models run at any size that tiles into patches.
    """

    dim: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_hidden: int = 4096
    patch_size: int = 16
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    position: Position = "rope_compatible"
    img_size: int = 256
    activation_checkpointing: bool = False

    # Integer fields that must be positive (subclasses extend the tuple).
    POSITIVE: ClassVar[tuple[str, ...]] = ("dim", "depth", "heads", "mlp_hidden", "patch_size", "img_size")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def rope_mode(self) -> str | None:
        """``"compatible"`` / ``"rotary"`` for the RoPE positions, None for ``sincos``."""
        return self.position.split("_", 1)[1] if self.position.startswith("rope") else None

    def validate(self) -> None:
        for name in self.POSITIVE:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ConfigError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.rope_mode and self.head_dim < 6:
            raise ConfigError(f"head width {self.head_dim} is too small for 3D-RoPE (needs >= 6)")


@dataclass(frozen=True)
class EncoderConfig(TransformerConfig):
    """A video ViT (defaults: the public ViT-L)."""

    tubelet_size: int = 2
    in_chans: int = 3
    num_frames: int = 16

    POSITIVE: ClassVar[tuple[str, ...]] = TransformerConfig.POSITIVE + ("tubelet_size", "in_chans", "num_frames")


@dataclass(frozen=True)
class PredictorConfig(TransformerConfig):
    """The masked-token predictor (defaults: the public 384/12/12/1536 with 10 mask tokens).

    The public predictor computes RoPE positions on its configured grid (``img_size/patch_size``
    square, ``num_frames/tubelet_size`` frames), not the input's; pass ``grid=`` to override."""

    dim: int = 384
    depth: int = 12
    heads: int = 12
    mlp_hidden: int = 1536
    enc_dim: int = 1024
    num_mask_tokens: int = 10
    tubelet_size: int = 2
    num_frames: int = 16

    POSITIVE: ClassVar[tuple[str, ...]] = TransformerConfig.POSITIVE + (
        "enc_dim", "num_mask_tokens", "tubelet_size", "num_frames")

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.num_frames // self.tubelet_size, self.img_size // self.patch_size,
                self.img_size // self.patch_size)


# name -> (dim, depth, heads, mlp_hidden)
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (192, 12, 3, 768),
    "small": (384, 12, 6, 1536),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
    "huge": (1280, 32, 16, 5120),
    "giant": (1408, 40, 22, 6144),
}


#: The four numbers a named size fixes, in the order of :data:`SIZES`.
SIZE_NUMBERS = ("dim", "depth", "heads", "mlp_hidden")


@dataclass(frozen=True)
class TransformerSize:
    """A transformer's shape as a recipe writes it: a named size from :data:`SIZES` with any of
    ``dim``/``depth``/``heads``/``mlp_hidden`` replaced (null = the named size's value). The one
    definition of sizes in configs: the pretraining encoder and predictor and the AC predictor."""

    size: str = "large"
    dim: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_hidden: int | None = None

    def numbers(self) -> dict[str, int]:
        """``{"dim", "depth", "heads", "mlp_hidden"}``: the named size's with the given ones replaced."""
        named = dict(zip(SIZE_NUMBERS, SIZES[self.size]))
        return {key: named[key] if getattr(self, key) is None else getattr(self, key) for key in SIZE_NUMBERS}

    def check_size(self, where: str) -> None:
        """Raise :class:`ConfigError` naming ``where`` (e.g. ``model.predictor``) for an unknown size or a
        non-positive number."""
        if self.size not in SIZES:
            raise ConfigError(f"{where}.size: unknown size {self.size!r}; choose one of {', '.join(SIZES)}")
        for key in SIZE_NUMBERS:
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{where}.{key} must be positive, got {value} "
                                  f"(leave it out or null for the size's value)")


def encoder_config(size: str = "large", **overrides) -> EncoderConfig:
    """Config of a named size (``tiny`` ... ``giant``), any field overridable.

    >>> encoder_config("tiny", depth=4).depth
    4
    """
    if size not in SIZES:
        raise ConfigError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)} "
                          f"or give dim/depth/heads/mlp_hidden yourself")
    dim, depth, heads, mlp_hidden = SIZES[size]
    base = dict(dim=dim, depth=depth, heads=heads, mlp_hidden=mlp_hidden)
    base.update(overrides)
    return from_dict(EncoderConfig, base)


def predictor_config(encoder: EncoderConfig, **overrides) -> PredictorConfig:
    """Predictor config matching ``encoder`` (public 384/12/12/1536 unless overridden)."""
    base = dict(enc_dim=encoder.dim, patch_size=encoder.patch_size, tubelet_size=encoder.tubelet_size,
                position=encoder.position, img_size=encoder.img_size, num_frames=encoder.num_frames)
    base.update(overrides)
    return from_dict(PredictorConfig, base)


def replace(cfg, **changes):
    """``dataclasses.replace`` that re-validates."""
    return from_dict(type(cfg), {**dataclasses.asdict(cfg), **changes})
