"""AC predictor weights in and out of the public V-JEPA 2-AC checkpoint layout.

The public AC checkpoint stores the predictor under ``predictor`` with ``module.`` / ``backbone.``
prefixes and the names ``predictor_embed``, ``action_encoder``, ``state_encoder``,
``extrinsics_encoder``, ``predictor_blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``,
``predictor_norm``, ``predictor_proj`` (the V-JEPA 2-AC predictor of arXiv 2506.09985). Our module
names are the same, so the conversion is prefix handling only (no key table is needed): ours ->
public adds ``module.backbone.``; public -> ours strips ``module.`` / ``backbone.`` in any order and
checks that the AC-specific tensors are there. The shared helpers live in :mod:`vjepa2.weights`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from vjepa2.config import ConfigError, from_dict
from vjepa2.files import atomic_torch_save
from vjepa2.models.ac_predictor import ACPredictor, ACPredictorConfig
from vjepa2.weights import (METADATA_KEY, PUBLIC_PREFIX, WeightsError, add_prefix, build_checked, count_indexed,
                            heads_for_width, safe_torch_load, select_state_dict, strip_prefixes)

_REQUIRED = ("predictor_embed.weight", "action_encoder.weight", "state_encoder.weight", "predictor_proj.weight")


def ac_predictor_from_public(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Public AC predictor dict (any ``module.``/``backbone.`` prefixes) -> our state dict.

    Raises :class:`~vjepa2.weights.WeightsError` if the dict is not an AC predictor.
    """
    sd = strip_prefixes(state_dict)
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise WeightsError(f"not an action-conditioned predictor state dict: missing {', '.join(missing)} "
                           f"(first keys: {sorted(sd)[:5]})")
    return sd


def ac_predictor_to_public(state_dict: dict[str, torch.Tensor], prefix: str = PUBLIC_PREFIX) -> dict[str, torch.Tensor]:
    """Our AC predictor state dict -> public layout (``module.backbone.<name>``)."""
    return add_prefix(dict(state_dict), prefix)


def infer_ac_predictor_config(sd: dict[str, torch.Tensor], **overrides) -> ACPredictorConfig:
    """Config from our-layout tensor shapes; the head count (invisible in shapes) follows the
    public size of that width, else head width 64. ``img_size`` (the reference grid) defaults to 256."""
    sd = ac_predictor_from_public(sd)
    dim, enc_dim = sd["predictor_embed.weight"].shape
    fields = {
        "enc_dim": enc_dim, "dim": dim, "depth": count_indexed(sd, r"predictor_blocks\.(\d+)\."),
        "heads": overrides["heads"] if "heads" in overrides else heads_for_width(dim),
        "mlp_hidden": sd["predictor_blocks.0.mlp.fc1.weight"].shape[0],
        "action_dim": sd["action_encoder.weight"].shape[1], "state_dim": sd["state_encoder.weight"].shape[1],
        "qkv_bias": "predictor_blocks.0.attn.qkv.bias" in sd,
    }
    if "extrinsics_encoder.weight" in sd:
        fields["extrinsics_dim"] = sd["extrinsics_encoder.weight"].shape[1]
    fields.update(overrides)
    return from_dict(ACPredictorConfig, fields)


def load_ac_predictor(path: str | os.PathLike, key: str = "predictor", config: ACPredictorConfig | None = None,
                      **config_overrides) -> ACPredictor:
    """Load an AC predictor (public AC checkpoint, one written by :func:`save_ac_predictor`, or a
    bare state dict file) in eval mode; the config comes from our metadata or the tensor shapes."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    checkpoint = safe_torch_load(path)
    sd = ac_predictor_from_public(select_state_dict(checkpoint, key, path))
    meta = checkpoint.get(METADATA_KEY, {}) if isinstance(checkpoint.get(METADATA_KEY), dict) else {}
    if config is None:
        stored = meta.get("ac_predictor_config")
        try:
            config = (from_dict(ACPredictorConfig, {**stored, **config_overrides}) if isinstance(stored, dict)
                      else infer_ac_predictor_config(sd, **config_overrides))
        except (ConfigError, TypeError, ValueError) as err:
            raise WeightsError(f"{path}: bad AC predictor config: {err}") from None
    model = build_checked(ACPredictor, config, sd, "AC predictor", path)
    return model.eval()


def save_ac_predictor(path: str | os.PathLike, model: ACPredictor, **extra) -> None:
    """Write ``{"predictor": public-layout weights, "vjepa2": {"ac_predictor_config": ...}, **extra}`` atomically."""
    checkpoint = {
        "predictor": ac_predictor_to_public(model.state_dict()),
        METADATA_KEY: {"ac_predictor_config": dataclasses.asdict(model.config)},
        **extra,
    }
    atomic_torch_save(checkpoint, path)
