"""Weights in and out: the public V-JEPA 2 release format and the ``transformers`` format.

Formats
-------
public release (``.pt`` / ``.pth``)
    A dict with ``encoder``, ``target_encoder``, ``predictor`` (and ``opt``, ``epoch``, ...). Keys
    carry ``module.`` and/or ``backbone.`` prefixes; attention uses a fused ``qkv`` Linear; the
    encoder dict may hold an unused ``pos_embed``; predictor mask tokens are ``mask_tokens.<i>``.
    Our module names equal the public ones, so conversion is prefix handling only.
transformers (directory with ``config.json`` + ``model.safetensors``)
    As ``VJEPA2Model.save_pretrained`` writes: separate ``query``/``key``/``value`` Linears under
    ``encoder.layer.N.attention``, ``encoder.embeddings.patch_embeddings.proj``,
    ``encoder.layernorm``, ``predictor.embeddings.{predictor_embeddings,mask_tokens}``,
    ``predictor.layer.N``, ``predictor.layernorm``, ``predictor.proj``.

Conversions are pure functions ``state_dict -> state_dict``, tested both ways. The ``transformers``
ones are declarative key tables (:class:`KeyRule` / :class:`KeyGroup`; ``ENCODER_TRANSFORMERS_KEYS``,
``PREDICTOR_TRANSFORMERS_KEYS``) that :func:`to_foreign` reads ours -> theirs and :func:`from_foreign`
reads back. Loading is safe:
``torch.load(weights_only=True)``; a checkpoint that needs arbitrary code is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from vjepa2.errors import InputError
from vjepa2.config import ConfigError, from_dict
from vjepa2.files import atomic_path, atomic_torch_save, atomic_write_text
from vjepa2.models.encoder import VisionEncoder
from vjepa2.models.predictor import Predictor
from vjepa2.models.sizes import SIZES, EncoderConfig, PredictorConfig, encoder_config
from vjepa2.models.vjepa2_1 import Encoder21Config, Predictor21, Predictor21Config, VisionEncoder21

PUBLIC_PREFIX = "module.backbone."
# Key of our own metadata inside a public-layout checkpoint (model configs, RoPE mode, ...).
METADATA_KEY = "vjepa2"


class WeightsError(InputError):
    """A checkpoint cannot be read or does not fit the model; the message says what and why."""


# ------------------------------------------------------------------------------------------------
# Pure state-dict conversions
# ------------------------------------------------------------------------------------------------


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove leading ``module.`` / ``backbone.`` (in any order, repeated) from every key."""
    out = {}
    for key, value in state_dict.items():
        while True:
            for prefix in ("module.", "backbone."):
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    break
            else:
                break
        out[key] = value
    return out


def add_prefix(state_dict: dict[str, torch.Tensor], prefix: str = PUBLIC_PREFIX) -> dict[str, torch.Tensor]:
    """Prepend ``prefix`` to every key (the public release saves ``module.backbone.<name>``)."""
    return {prefix + k: v for k, v in state_dict.items()}


def encoder_from_public(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Public encoder dict (any prefixes) -> ours: strip prefixes, drop the unused ``pos_embed``."""
    sd = strip_prefixes(state_dict)
    sd.pop("pos_embed", None)
    return sd


def predictor_from_public(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Public predictor dict -> ours: strip prefixes, drop a ``predictor_pos_embed`` of RoPE models."""
    sd = strip_prefixes(state_dict)
    sd.pop("predictor_pos_embed", None)
    return sd


def public_state_dict(module: nn.Module, prefix: str = PUBLIC_PREFIX) -> dict[str, torch.Tensor]:
    """Our module's weights in the public layout (``module.backbone.`` keys), for checkpoints."""
    return add_prefix({k: v for k, v in module.state_dict().items()}, prefix)


def count_indexed(sd: dict, pattern: str) -> int:
    """1 + the largest integer captured by ``pattern`` among the keys (0 if none): e.g. the depth."""
    indices = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(indices) + 1 if indices else 0


# ------------------------------------------------------------------------------------------------
# Key-map tables: one per foreign format, applied both ways by to_foreign / from_foreign
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KeyRule:
    """One correspondence between our keys and a foreign format's (keys relative to a group's prefix).

    ``kind="tensor"``: ``ours`` and ``theirs`` each name one key, or one side names several. One to
    one, the tensor is shared unchanged. One ours key to ``n`` theirs keys: ours is the
    concatenation along dim 0 (e.g. a fused ``qkv`` Linear weight ``(3D, D)`` = ``query``, ``key``,
    ``value`` ``(D, D)`` each, bias ``(3D,)``); ours -> theirs is ``chunk(n, dim=0)``. ``optional``:
    skipped when a source key is missing; otherwise a missing source key raises ``KeyError(key)``.

    ``kind="stack"``: ``ours`` is a template ``name.{j}`` for ``j = 0..n-1``, each ``(...)``; theirs
    is one ``(n, ...)`` tensor; ours -> theirs is ``torch.stack``, back is iteration along dim 0.

    ``kind="prefix"``: every key that starts with ``ours`` corresponds to the key with ``theirs`` in
    its place (the rest copied, the tensor unchanged), whatever follows the prefix.
    """

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    kind: Literal["tensor", "stack", "prefix"] = "tensor"
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class KeyGroup:
    """``rules`` under a key prefix on each side. A prefix with ``{i}`` (e.g. ``blocks.{i}.`` <->
    ``encoder.layer.{i}.``) repeats the group for ``i = 0..n-1``, ``n`` counted on the source side."""

    ours: str
    theirs: str
    rules: tuple[KeyRule, ...]


KeyTable = tuple[KeyRule | KeyGroup, ...]


def key_rule(ours: str | tuple[str, ...], theirs: str | tuple[str, ...], optional: bool = False) -> KeyRule:
    """A ``tensor`` rule; ``{p}`` in a key is filled by :func:`params`."""
    return KeyRule((ours,) if isinstance(ours, str) else tuple(ours),
                   (theirs,) if isinstance(theirs, str) else tuple(theirs), "tensor", optional)


def stack_rule(ours: str, theirs: str) -> KeyRule:
    """A ``stack`` rule: ours ``name.{j}`` (``j = 0..n-1``) <-> theirs one ``(n, ...)`` tensor."""
    return KeyRule((ours,), (theirs,), "stack")


def prefix_rule(ours: str, theirs: str) -> KeyRule:
    """A ``prefix`` rule: every key under ``ours`` <-> the same key under ``theirs``."""
    return KeyRule((ours,), (theirs,), "prefix")


def params(*rules: KeyRule) -> tuple[KeyRule, ...]:
    """``rules`` with ``{p}`` = ``weight``, then the same rules with ``{p}`` = ``bias``."""
    return tuple(dataclasses.replace(r, ours=tuple(k.format(p=p) for k in r.ours),
                                     theirs=tuple(k.format(p=p) for k in r.theirs))
                 for p in ("weight", "bias") for r in rules)


def _index_pattern(template: str, name: str) -> str:
    """Regex capturing the ``{name}`` index of ``template`` (``blocks.{i}.`` -> ``blocks\\.(\\d+)\\.``)."""
    head, tail = template.split("{" + name + "}")
    return re.escape(head) + r"(\d+)" + re.escape(tail)


def _apply_rule(rule: KeyRule, sd: dict, out: dict, src_prefix: str, dst_prefix: str, forward: bool) -> None:
    """Write the target keys of one rule into ``out`` (``forward``: ours -> theirs)."""
    src, dst = (rule.ours, rule.theirs) if forward else (rule.theirs, rule.ours)
    src, dst = [src_prefix + k for k in src], [dst_prefix + k for k in dst]
    if rule.kind == "prefix":
        out.update({dst[0] + k[len(src[0]):]: v for k, v in sd.items() if k.startswith(src[0])})
    elif rule.kind == "stack" and forward:
        count = count_indexed(sd, _index_pattern(src[0], "j") + "$")
        out[dst[0]] = torch.stack([sd[src[0].format(j=j)] for j in range(count)])
    elif rule.kind == "stack":
        out.update({dst[0].format(j=j): t for j, t in enumerate(sd[src[0]])})
    elif not (rule.optional and any(k not in sd for k in src)):
        tensors = [sd[k] for k in src]
        if len(dst) > 1:
            tensors = tensors[0].chunk(len(dst), dim=0)
        elif len(src) > 1:
            tensors = [torch.cat(tensors, dim=0)]
        out.update(zip(dst, tensors, strict=True))


def _convert(sd: dict[str, torch.Tensor], table: KeyTable, forward: bool) -> dict[str, torch.Tensor]:
    """``table`` applied item by item (``forward``: ours -> theirs, else theirs -> ours)."""
    out: dict[str, torch.Tensor] = {}
    for item in table:
        if isinstance(item, KeyRule):
            _apply_rule(item, sd, out, "", "", forward)
            continue
        src, dst = (item.ours, item.theirs) if forward else (item.theirs, item.ours)
        count = count_indexed(sd, _index_pattern(src, "i")) if "{i}" in src else 1
        for i in range(count):
            for rule in item.rules:
                _apply_rule(rule, sd, out, src.format(i=i), dst.format(i=i), forward)
    return out


def to_foreign(sd: dict[str, torch.Tensor], table: KeyTable) -> dict[str, torch.Tensor]:
    """Our state dict -> the foreign layout of ``table``, in table order. Keys no rule names are left
    out; a source key a non-optional rule needs and ``sd`` lacks raises ``KeyError(key)``."""
    return _convert(sd, table, forward=True)


def from_foreign(sd: dict[str, torch.Tensor], table: KeyTable) -> dict[str, torch.Tensor]:
    """A foreign state dict -> ours, by the same ``table`` read the other way (same rules on keys)."""
    return _convert(sd, table, forward=False)


# One transformer block: ours (fused qkv, as the public release) <-> transformers' VJEPA2Layer
# (separate query / key / value). Weight (3D, D) <-> three (D, D); bias (3D,) <-> three (D,).
# qkv is optional: a model built with qkv_bias=False has no qkv bias.
VIT_BLOCK_KEYS: tuple[KeyRule, ...] = (
    *params(key_rule("norm1.{p}", "norm1.{p}")), *params(key_rule("norm2.{p}", "norm2.{p}")),
    *params(key_rule("mlp.fc1.{p}", "mlp.fc1.{p}")), *params(key_rule("mlp.fc2.{p}", "mlp.fc2.{p}")),
    *params(key_rule("attn.qkv.{p}", ("attention.query.{p}", "attention.key.{p}", "attention.value.{p}"),
                 optional=True),
            key_rule("attn.proj.{p}", "attention.proj.{p}")),
)

# Our VisionEncoder <-> transformers VJEPA2Model ``encoder.*``; patch_embed.proj.weight is the
# Conv3d kernel (D, C, tubelet, patch, patch) under both names.
ENCODER_TRANSFORMERS_KEYS: KeyTable = (
    *params(key_rule("patch_embed.proj.{p}", "encoder.embeddings.patch_embeddings.proj.{p}")),
    *params(key_rule("norm.{p}", "encoder.layernorm.{p}")),
    KeyGroup("blocks.{i}.", "encoder.layer.{i}.", VIT_BLOCK_KEYS),
)

# Our Predictor <-> transformers VJEPA2Model ``predictor.*``. Mask tokens: ours n tensors
# ``mask_tokens.{j}`` (1, 1, D); transformers one ``predictor.embeddings.mask_tokens`` (n, 1, 1, D).
PREDICTOR_TRANSFORMERS_KEYS: KeyTable = (
    *params(key_rule("predictor_embed.{p}", "predictor.embeddings.predictor_embeddings.{p}")),
    stack_rule("mask_tokens.{j}", "predictor.embeddings.mask_tokens"),
    *params(key_rule("predictor_norm.{p}", "predictor.layernorm.{p}")),
    *params(key_rule("predictor_proj.{p}", "predictor.proj.{p}")),
    KeyGroup("predictor_blocks.{i}.", "predictor.layer.{i}.", VIT_BLOCK_KEYS),
)


def _without_model_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``vjepa2.`` prefix that transformers' task models (e.g. video classification) add."""
    return {k.removeprefix("vjepa2."): v for k, v in sd.items()}


def encoder_to_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our encoder state dict -> ``transformers`` ``VJEPA2Model`` keys (``encoder.*``)."""
    return to_foreign(sd, ENCODER_TRANSFORMERS_KEYS)


def encoder_from_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``transformers`` keys (``encoder.*``, optionally under ``vjepa2.``) -> our encoder state dict."""
    return from_foreign(_without_model_prefix(sd), ENCODER_TRANSFORMERS_KEYS)


def predictor_to_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our predictor state dict -> ``transformers`` keys (``predictor.*``)."""
    return to_foreign(sd, PREDICTOR_TRANSFORMERS_KEYS)


def predictor_from_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``transformers`` keys (``predictor.*``, optionally under ``vjepa2.``) -> our predictor state dict."""
    return from_foreign(_without_model_prefix(sd), PREDICTOR_TRANSFORMERS_KEYS)


# ------------------------------------------------------------------------------------------------
# Config inference
# ------------------------------------------------------------------------------------------------

_HEADS_BY_DIM = {dim: heads for dim, _, heads, _ in SIZES.values()}


def heads_for_width(dim: int) -> int:
    """Attention heads of a model of width ``dim`` (public sizes; else head width 64)."""
    # Head count is not visible in the weight shapes: use the public size with this width, else
    # head width 64 (every public model's).
    if dim in _HEADS_BY_DIM:
        return _HEADS_BY_DIM[dim]
    if dim % 64 == 0:
        return dim // 64
    raise WeightsError(f"cannot infer the number of attention heads for width {dim}; "
                       f"pass config=EncoderConfig(...) explicitly")


def infer_encoder_config(sd: dict[str, torch.Tensor], **overrides) -> EncoderConfig:
    """Encoder config from our-layout tensor shapes (width, depth, MLP width, patch, tubelet)."""
    if "patch_embed.proj.weight" not in sd:
        raise WeightsError("not an encoder state dict: no patch_embed.proj.weight "
                           f"(first keys: {sorted(sd)[:5]})")
    dim, in_chans, tubelet, patch, _ = sd["patch_embed.proj.weight"].shape
    fields = {"dim": dim, "in_chans": in_chans, "tubelet_size": tubelet, "patch_size": patch,
              "depth": count_indexed(sd, r"blocks\.(\d+)\."),
              "heads": overrides["heads"] if "heads" in overrides else heads_for_width(dim),
              "mlp_hidden": sd["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in sd else 4 * dim,
              "qkv_bias": "blocks.0.attn.qkv.bias" in sd}
    fields.update(overrides)
    return from_dict(EncoderConfig, fields)


def is_vjepa2_1(sd: dict[str, torch.Tensor]) -> bool:
    """A V-JEPA 2.1 encoder or predictor state dict (its keys: ``norms_block``, ``patch_embed_img``,
    modality embeddings, ``predictor_proj_context``)."""
    marks = ("norms_block.0.weight", "patch_embed_img.proj.weight", "video_mod_embed", "predictor_proj_context.weight")
    return any(mark in sd for mark in marks)


def infer_encoder21_config(sd: dict[str, torch.Tensor], **overrides) -> Encoder21Config:
    """V-JEPA 2.1 encoder config from tensor shapes (as :func:`infer_encoder_config`). Every released
    2.1 encoder normalises four levels: the count is that structure's, never read off the keys, so a
    checkpoint missing a level's ``norms_block.*`` fails to load, naming the keys."""
    base = dataclasses.asdict(infer_encoder_config(sd, **{k: v for k, v in overrides.items()
                                                          if k in EncoderConfig.__dataclass_fields__}))
    base.update(img_size=Encoder21Config.img_size, num_frames=Encoder21Config.num_frames,
                position="rope_rotary", levels=Encoder21Config.levels)
    base.update(overrides)
    return from_dict(Encoder21Config, base)


def infer_predictor21_config(sd: dict[str, torch.Tensor], **overrides) -> Predictor21Config:
    """V-JEPA 2.1 predictor config from tensor shapes: a Linear input embedding reads one level, an
    MLP (``predictor_embed.0`` / ``.2``) ``levels * D``; the output width gives ``out_dim``."""
    if "predictor_embed.0.weight" in sd:
        enc_dim, inputs = sd["predictor_embed.0.weight"].shape
        dim, levels = sd["predictor_embed.2.weight"].shape[0], inputs // enc_dim
    elif "predictor_embed.weight" in sd:
        (dim, enc_dim), levels = sd["predictor_embed.weight"].shape, 1
    else:
        raise WeightsError(f"not a predictor state dict: no predictor_embed (first keys: {sorted(sd)[:5]})")
    fields = {"enc_dim": enc_dim, "dim": dim, "levels": levels,
              "out_dim": sd["predictor_proj.weight"].shape[0] // levels, **predictor_block_fields(sd, dim, overrides)}
    fields.update(overrides)
    return from_dict(Predictor21Config, fields)


def predictor_block_fields(sd: dict[str, torch.Tensor], dim: int, overrides: dict) -> dict:
    """Depth, heads, MLP width, mask tokens and qkv bias of a predictor state dict of width ``dim``."""
    return {"depth": count_indexed(sd, r"predictor_blocks\.(\d+)\."),
            "heads": overrides.get("heads") or (12 if dim == 384 else heads_for_width(dim)),
            "mlp_hidden": sd["predictor_blocks.0.mlp.fc1.weight"].shape[0],
            "num_mask_tokens": max(count_indexed(sd, r"mask_tokens\.(\d+)$"), 1),
            "qkv_bias": "predictor_blocks.0.attn.qkv.bias" in sd}


def infer_predictor_config(sd: dict[str, torch.Tensor], **overrides) -> PredictorConfig:
    """Predictor config from our-layout tensor shapes."""
    if "predictor_embed.weight" not in sd:
        raise WeightsError("not a predictor state dict: no predictor_embed.weight "
                           f"(first keys: {sorted(sd)[:5]})")
    dim, enc_dim = sd["predictor_embed.weight"].shape
    fields = {"enc_dim": enc_dim, "dim": dim, **predictor_block_fields(sd, dim, overrides)}
    fields.update(overrides)
    return from_dict(PredictorConfig, fields)


# ------------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------------


def safe_torch_load(path: Path) -> dict:
    """``torch.load(weights_only=True)`` of a dict checkpoint; pickled code is refused with a clear error."""
    from safetensors import SafetensorError  # torch.load reads a bare .safetensors file with it

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"{path}: refused to load — the checkpoint contains pickled Python objects that would "
            f"run arbitrary code ({str(err).splitlines()[0][:200]}). Only tensors, numbers, strings "
            f"and containers are accepted. If you trust the file, re-save its tensors with "
            f"torch.save({{k: v for k, v in ...}}) in a trusted environment.") from None
    except (RuntimeError, EOFError, OSError, SafetensorError) as err:
        raise WeightsError(f"{path}: not a readable PyTorch or safetensors checkpoint "
                           f"({str(err).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def _read_json(path: Path, required: tuple[str, ...] = ()) -> dict:
    """A JSON object from ``path``; a broken file is a :class:`WeightsError` naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path}: not readable JSON ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [key for key in required if key not in data]
    if missing:
        raise WeightsError(f"{path}: missing key {missing[0]!r}")
    return data


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file; a truncated or malformed one is a :class:`WeightsError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(f"{path}: no such file (named by the folder's index)")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0][:200]})") from None


def read_transformers_dir(path: Path) -> tuple[dict, dict]:
    """``(config dict, flat state dict)`` of a ``save_pretrained`` directory (single or sharded)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise WeightsError(f"{path}: a transformers directory needs config.json")
    config = _read_json(config_file)
    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    if single.is_file():
        sd = _load_safetensors(single)
    elif index.is_file():
        weight_map = _read_json(index, required=("weight_map",))["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise WeightsError(f"{index}: 'weight_map' must map tensor names to shard file names")
        sd = {}
        for shard in sorted(set(weight_map.values())):
            sd.update(_load_safetensors(path / Path(shard).name))
    elif (path / "pytorch_model.bin").is_file():
        sd = safe_torch_load(path / "pytorch_model.bin")
    else:
        raise WeightsError(f"{path}: no model.safetensors (or index / pytorch_model.bin) found")
    return config, sd


def _configs_from_transformers(cfg: dict, source: Path) -> tuple[dict, dict]:
    """Our encoder / predictor config fields from a transformers ``config.json`` (``source``); a
    size that is not a positive number is a :class:`WeightsError` naming the key."""

    def number(key: str, default, kind=int):
        value = cfg.get(key, default)
        if isinstance(value, (list, tuple)) and key == "patch_size" and value:
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 \
                or (kind is int and value != int(value)):
            raise WeightsError(f"{source}: {key} must be a positive {'integer' if kind is int else 'number'}, "
                               f"got {value!r}")
        return kind(value)

    dim, pdim = number("hidden_size", 1024), number("pred_hidden_size", 384)
    common = {"patch_size": number("patch_size", 16), "tubelet_size": number("tubelet_size", 2),
              "img_size": number("crop_size", 256), "num_frames": number("frames_per_clip", 64),
              "norm_eps": number("layer_norm_eps", 1e-6, float), "qkv_bias": bool(cfg.get("qkv_bias", True)),
              "position": "rope_compatible"}
    enc = dict(common, dim=dim, depth=number("num_hidden_layers", 24), heads=number("num_attention_heads", 16),
               mlp_hidden=int(dim * number("mlp_ratio", 4.0, float)), in_chans=number("in_chans", 3))
    pred = dict(common, enc_dim=dim, dim=pdim, depth=number("pred_num_hidden_layers", 12),
                heads=number("pred_num_attention_heads", 12),
                mlp_hidden=int(pdim * number("pred_mlp_ratio", 4.0, float)),
                num_mask_tokens=number("pred_num_mask_tokens", 10))
    return enc, pred


def first_non_finite(state, prefix: str = "") -> str | None:
    """Dotted name of the first floating-point tensor in ``state`` (nested dicts / lists) that holds
    a NaN or an infinity, or None."""
    if isinstance(state, torch.Tensor):
        return prefix or "a tensor" if state.is_floating_point() and not torch.isfinite(state).all() else None
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    for key, value in items:
        found = first_non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return None


def check_state_dict_fits(module: nn.Module, sd: dict[str, torch.Tensor], what: str, source: Path) -> None:
    """Raise a :class:`WeightsError` naming missing / unexpected keys, shape mismatches or a tensor
    holding NaN / inf (the module may live on the meta device: only its shapes are read)."""
    bad = first_non_finite(sd)
    if bad:
        raise WeightsError(f"{source}: the {what} weights hold non-finite values (NaN or inf) in {bad}; the file "
                           f"comes from a diverged run or is corrupt: use an earlier checkpoint")
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:12])}" + (" ..." if len(missing) > 12 else ""))
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:12])}"
                        + (" ..." if len(unexpected) > 12 else ""))
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): " + "; ".join(mismatched[:3])
                        + (" ..." if len(mismatched) > 3 else ""))
    if problems:
        raise WeightsError(f"{source}: the {what} weights do not fit the model — " + " | ".join(problems))


def load_state_dict_checked(module: nn.Module, sd: dict[str, torch.Tensor], what: str, source: Path) -> None:
    """``load_state_dict`` that reports missing / unexpected keys and shape mismatches by name."""
    check_state_dict_fits(module, sd, what, source)
    module.load_state_dict(sd, strict=True)


def build_checked(model_class: Callable[[object], nn.Module], config, sd: dict[str, torch.Tensor], what: str,
                  source: Path) -> nn.Module:
    """``model_class(config)`` with ``sd`` loaded, checked before any memory is spent: the model is
    first built on the meta device (shapes only), so a file that claims sizes its tensors do not
    have (say a 64-layer 4096-wide config next to a tiny model's tensors) fails in milliseconds,
    naming the first tensor that disagrees."""
    try:
        with torch.device("meta"):
            shell = model_class(config)
    except (ValueError, TypeError) as err:
        raise WeightsError(f"{source}: the {what} config cannot be built ({err})") from None
    check_state_dict_fits(shell, sd, what, source)
    model = model_class(config)
    model.load_state_dict(sd, strict=True)
    return model


#: Where release checkpoints keep the encoder to evaluate, in order of preference (V-JEPA 2 and
#: 2.1 ViT-g/G: the EMA ``target_encoder``; 2.1 ViT-B/L, distilled: ``ema_encoder``). The online
#: ``encoder`` is taken only when asked for by name.
ENCODER_KEYS = ("target_encoder", "ema_encoder")


def select_state_dict(checkpoint: dict, key: str | tuple[str, ...], path: Path) -> dict:
    """The sub-dict ``key`` (the first present of several) of a release checkpoint, or the
    checkpoint itself if it is a flat state dict."""
    keys = key if isinstance(key, tuple) else (key,)
    for name in keys:
        if isinstance(checkpoint.get(name), dict):
            return checkpoint[name]
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint  # a bare state dict
    available = [k for k, v in checkpoint.items() if isinstance(v, dict)]
    wanted = " or ".join(f"'{name}'" for name in keys)
    raise WeightsError(f"{path}: no {wanted} entry in the checkpoint; it holds {available}. "
                       f"Pick one with key=...")


def _metadata(checkpoint: dict) -> dict:
    meta = checkpoint.get(METADATA_KEY)
    return meta if isinstance(meta, dict) else {}


@dataclasses.dataclass(frozen=True)
class _ModelFormat:
    """How one model kind is read from each checkpoint format."""

    name: str
    model: type[nn.Module]
    config: type
    from_public: Callable[[dict], dict]
    from_transformers: Callable[[dict], dict]
    infer_config: Callable[..., object]
    hf_fields: int  # index into _configs_from_transformers' (encoder, predictor) pair


_ENCODER = _ModelFormat("encoder", VisionEncoder, EncoderConfig, encoder_from_public, encoder_from_transformers,
                        infer_encoder_config, 0)
_PREDICTOR = _ModelFormat("predictor", Predictor, PredictorConfig, predictor_from_public,
                          predictor_from_transformers, infer_predictor_config, 1)
# V-JEPA 2.1 (public layout only: transformers has no 2.1 model yet).
_VERSION_2_1 = {
    "encoder": dataclasses.replace(_ENCODER, model=VisionEncoder21, config=Encoder21Config,
                                   infer_config=infer_encoder21_config),
    "predictor": dataclasses.replace(_PREDICTOR, model=Predictor21, config=Predictor21Config,
                                     infer_config=infer_predictor21_config),
}


def _load_model(fmt: _ModelFormat, path: str | os.PathLike, key: str, config, overrides: dict) -> nn.Module:
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such file or directory (give a checkpoint .pt/.pth, a transformers "
                           f"directory, or random:<size> for a random encoder)")
    if path.is_dir():
        hf_cfg, hf_sd = read_transformers_dir(path)
        sd = fmt.from_transformers(hf_sd)
        config_source = path / "config.json"
        fields = _configs_from_transformers(hf_cfg, config_source)[fmt.hf_fields]
    else:
        checkpoint = safe_torch_load(path)
        sd = fmt.from_public(select_state_dict(checkpoint, key, path))
        fmt = _VERSION_2_1[fmt.name] if is_vjepa2_1(sd) else fmt
        fields, config_source = _metadata(checkpoint).get(f"{fmt.name}_config"), path
    if config is None:
        try:
            config = (from_dict(fmt.config, {**fields, **overrides}) if isinstance(fields, dict)
                      else fmt.infer_config(sd, **overrides))
        except (ConfigError, TypeError, ValueError) as err:
            raise WeightsError(f"{config_source}: bad {fmt.name} config: {err}") from None
    return build_checked(fmt.model, config, sd, fmt.name, path).eval()


#: ``random:<size>``: a seeded random encoder of a named size instead of a weights file.
RANDOM_PREFIX = "random:"


def new_encoder(config: EncoderConfig | Encoder21Config, seed: int | None = None) -> VisionEncoder | VisionEncoder21:
    """A freshly initialised encoder of ``config`` in train mode (V-JEPA 2, or 2.1 for an
    :class:`Encoder21Config`): the one place encoders are constructed. ``seed``: initialise from
    this seed without touching the caller's random state; None draws from the caller's state."""
    model = VisionEncoder21 if isinstance(config, Encoder21Config) else VisionEncoder
    if seed is None:
        return model(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model(config)


def random_encoder(spec: str, seed: int = 0, **config_overrides) -> VisionEncoder:
    """The encoder ``random:<size>`` (e.g. ``random:tiny``) with seeded random weights, eval mode."""
    size = spec[len(RANDOM_PREFIX):]
    if size not in SIZES:
        raise WeightsError(f"{spec}: unknown size {size!r}; use random:<size> with size one of {', '.join(SIZES)}")
    return new_encoder(encoder_config(size, **config_overrides), seed).eval()


def absolute_weights(spec: str) -> str:
    """An encoder weights spec with its path made absolute (so a run that recorded it loads from any
    working directory); ``random:<size>`` and ``none`` as they are."""
    return spec if spec.startswith("random:") or spec == "none" else str(Path(spec).resolve())


def load_encoder(path: str | os.PathLike, key: str | tuple[str, ...] = ENCODER_KEYS,
                 config: EncoderConfig | None = None, *, seed: int = 0, random_init: bool = False,
                 **config_overrides) -> VisionEncoder | VisionEncoder21:
    """The one way to get an encoder: V-JEPA 2 or 2.1 weights (the version is read from the tensor
    names) or ``random:<size>``, in eval mode.

    Args:
        path: a public-release checkpoint (``.pt``/``.pth`` dict with ``encoder`` /
            ``target_encoder`` / ``ema_encoder`` / ``predictor``), a bare encoder state dict file,
            a ``transformers`` directory (``config.json`` + ``model.safetensors``; V-JEPA 2 only), or
            ``random:<size>`` (``tiny`` ... ``giant``): seeded random weights.
        seed: the seed of random weights (``random:<size>``, ``random_init``).
        random_init: the architecture of ``path`` with seeded random weights (a probe's baseline).
        key: which encoder of a release checkpoint, or several to take the first present of
            (default: ``target_encoder``, the EMA encoder the paper evaluates, then 2.1's distilled
            ``ema_encoder``, then ``encoder``). Ignored for ``transformers`` directories.
        config: the encoder config; inferred from tensor shapes (and our metadata) when omitted.
        config_overrides: fields to change in the inferred config (e.g. ``img_size=384``; for 2.1
            ``output="hierarchical"`` returns the four levels concatenated).

    Returns:
        :class:`~vjepa2.models.VisionEncoder`, or
        :class:`~vjepa2.models.vjepa2_1.VisionEncoder21` for a 2.1 checkpoint, in eval mode.
    """
    if str(path).startswith(RANDOM_PREFIX):
        return random_encoder(str(path), seed, **config_overrides)
    encoder = _load_model(_ENCODER, path, key, config, config_overrides)
    return new_encoder(encoder.config, seed).eval() if random_init else encoder


def load_predictor(path: str | os.PathLike, key: str = "predictor", config: PredictorConfig | None = None,
                   **config_overrides) -> Predictor | Predictor21:
    """Load a V-JEPA 2 or 2.1 predictor in eval mode (same path kinds as :func:`load_encoder`).

    The public predictor computes RoPE positions on its configured grid (``img_size / 16``), which
    the weights do not record: pass ``img_size=384`` for the 384 px models (default 256).
    """
    return _load_model(_PREDICTOR, path, key, config, config_overrides)


# ------------------------------------------------------------------------------------------------
# Writing files
# ------------------------------------------------------------------------------------------------


def checkpoint_metadata(encoder: VisionEncoder | None = None, predictor: Predictor | None = None) -> dict:
    """Our metadata block for a public-layout checkpoint: the configs (incl. the RoPE mode)."""
    meta = {}
    if encoder is not None:
        meta["encoder_config"] = dataclasses.asdict(encoder.config)
    if predictor is not None:
        meta["predictor_config"] = dataclasses.asdict(predictor.config)
    return meta


def save_public(path: str | os.PathLike, encoder: VisionEncoder, predictor: Predictor | None = None,
                target_encoder: VisionEncoder | None = None, **extra) -> None:
    """Write a checkpoint in the public release layout (readable by :func:`load_encoder` and by the
    public release's loaders). ``target_encoder`` defaults to ``encoder``."""
    checkpoint = {
        "encoder": public_state_dict(encoder),
        "target_encoder": public_state_dict(target_encoder or encoder),
        METADATA_KEY: checkpoint_metadata(encoder, predictor),
        **extra,
    }
    if predictor is not None:
        checkpoint["predictor"] = public_state_dict(predictor)
    atomic_torch_save(checkpoint, path)


def transformers_config(encoder: VisionEncoder, predictor: Predictor) -> dict:
    """``config.json`` contents for ``transformers.VJEPA2Model``."""
    e, p = encoder.config, predictor.config
    if e.position != "rope_compatible" or p.position != "rope_compatible":
        raise WeightsError("transformers' VJEPA2Model implements only the 'rope_compatible' position "
                           f"mode; this model uses encoder={e.position!r}, predictor={p.position!r}")
    if p.enc_dim != e.dim:
        raise WeightsError(f"predictor expects width {p.enc_dim} but the encoder has {e.dim}")
    return {
        "architectures": ["VJEPA2Model"],
        "model_type": "vjepa2",
        "patch_size": e.patch_size,
        "crop_size": p.img_size,
        "frames_per_clip": p.num_frames,
        "tubelet_size": e.tubelet_size,
        "hidden_size": e.dim,
        "in_chans": e.in_chans,
        "num_attention_heads": e.heads,
        "num_hidden_layers": e.depth,
        "drop_path_rate": 0.0,
        "mlp_ratio": e.mlp_hidden / e.dim,
        "layer_norm_eps": e.norm_eps,
        "qkv_bias": e.qkv_bias,
        "attention_probs_dropout_prob": 0.0,
        "hidden_act": "gelu",
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "num_pooler_layers": 3,
        "pred_hidden_size": p.dim,
        "pred_num_attention_heads": p.heads,
        "pred_num_hidden_layers": p.depth,
        "pred_num_mask_tokens": p.num_mask_tokens,
        "pred_zero_init_mask_tokens": True,
        "pred_mlp_ratio": p.mlp_hidden / p.dim,
    }


def save_transformers(encoder: VisionEncoder, predictor: Predictor, out_dir: str | os.PathLike) -> Path:
    """Write a directory that ``transformers.VJEPA2Model.from_pretrained(out_dir)`` loads.

    Returns the directory. The files are written to a temporary directory first and moved into place.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    config = transformers_config(encoder, predictor)
    sd = {**encoder_to_transformers(encoder.state_dict()), **predictor_to_transformers(predictor.state_dict())}
    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt"})
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2) + "\n")
    return out_dir
