"""Attentive-probe weights in and out: the public release's probe checkpoints and ``transformers``.

Formats
-------
public release (``.pt``)
    ``{"classifiers": [state_dict, ...], "opt": [...], "epoch": ...}``: one state dict per probe of
    the hyper-parameter grid, saved from ``DistributedDataParallel`` (``module.`` prefix). Keys:
    ``pooler.query_tokens`` ``(1, Q, D)``; ``pooler.blocks.<i>.{norm1, attn.qkv, attn.proj, norm2,
    mlp.fc1, mlp.fc2}`` (fused ``qkv``); ``pooler.cross_attention_block.{norm1, xattn.q, xattn.kv,
    norm2, mlp.fc1, mlp.fc2}`` (``q`` + fused ``kv``, no output projection); the head is ``linear``
    for classification, ``verb_classifier`` / ``noun_classifier`` / ``action_classifier`` for
    anticipation. The public probes use ``nn.LayerNorm`` 's default eps 1e-5 and 16 heads.
transformers (``VJEPA2ForVideoClassification``)
    ``pooler.query_tokens`` ``(1, 1, D)``; ``pooler.self_attention_layers.<i>.{layer_norm1,
    self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}``;
    ``pooler.cross_attention_layer.{layer_norm1, cross_attn.{q,k,v}_proj, layer_norm2, mlp.*}``
    (no output projection); ``classifier``. One query, heads = the encoder's, eps = ``layer_norm_eps``.

Conversions are pure ``state_dict -> state_dict`` functions, tested both ways.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from vjepa2.config import ConfigError, from_dict
from vjepa2.files import atomic_torch_save
from vjepa2.models.probe import AttentiveProbe, ProbeConfig
from vjepa2.weights import (WeightsError, build_checked, read_transformers_dir, safe_torch_load,
                            strip_prefixes)

# Public head names by number of heads.
PUBLIC_HEADS = {1: ("linear",), 3: ("verb_classifier", "noun_classifier", "action_classifier")}
PUBLIC_NORM_EPS = 1e-5  # nn.LayerNorm's default, what the public probes were trained with
PUBLIC_HEADS_COUNT = 16
METADATA_KEY = "vjepa2"

_BLOCK_PARAMS = ("norm1", "norm2", "mlp.fc1", "mlp.fc2")


def _count(sd: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _public_head_names(sd: dict) -> tuple[str, ...]:
    if "linear.weight" in sd:
        return ("linear",)
    names = tuple(n for n in PUBLIC_HEADS[3] if f"{n}.weight" in sd)
    if names in (PUBLIC_HEADS[3], ("action_classifier",)):
        return names
    raise WeightsError("not a public probe state dict: no 'linear' nor 'verb/noun/action_classifier' head "
                       f"(keys start with {sorted(sd)[:6]})")


# ------------------------------------------------------------------------------------------------
# Public release format
# ------------------------------------------------------------------------------------------------


def probe_from_public(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One public probe state dict (any ``module.`` prefix) -> ours."""
    sd = strip_prefixes(state_dict)
    if "pooler.cross_attention_block.xattn.q.weight" in sd and "pooler.cross_attention_block.norm1.weight" not in sd:
        raise WeightsError("this public probe was built with complete_block=False (cross-attention without "
                           "norms/MLP), which this project does not implement")
    out = {}
    for key, value in sd.items():
        if key.startswith("pooler.query_tokens"):
            out["query_tokens"] = value
        elif key.startswith("pooler.blocks."):
            out[key.removeprefix("pooler.")] = value
        elif key.startswith("pooler.cross_attention_block."):
            out["cross_block." + key.removeprefix("pooler.cross_attention_block.")] = value
    for i, name in enumerate(_public_head_names(sd)):
        out[f"heads.{i}.weight"], out[f"heads.{i}.bias"] = sd[f"{name}.weight"], sd[f"{name}.bias"]
    if "query_tokens" not in out:
        raise WeightsError(f"not a public probe state dict: no pooler.query_tokens (keys: {sorted(sd)[:6]})")
    return out


def probe_to_public(sd: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Our probe state dict -> the public layout (``prefix`` = ``module.`` as DDP saves it)."""
    num_heads = _count(sd, r"heads\.(\d+)\.weight")
    if num_heads not in PUBLIC_HEADS:
        raise WeightsError(f"the public format names 1 (classification) or 3 (verb/noun/action) heads; "
                           f"this probe has {num_heads}")
    out = {"pooler.query_tokens": sd["query_tokens"]}
    for key, value in sd.items():
        if key.startswith("blocks."):
            out["pooler." + key] = value
        elif key.startswith("cross_block."):
            out["pooler.cross_attention_block." + key.removeprefix("cross_block.")] = value
    for i, name in enumerate(PUBLIC_HEADS[num_heads]):
        out[f"{name}.weight"], out[f"{name}.bias"] = sd[f"heads.{i}.weight"], sd[f"heads.{i}.bias"]
    return {prefix + k: v for k, v in out.items()}


# ------------------------------------------------------------------------------------------------
# transformers format
# ------------------------------------------------------------------------------------------------


def probe_from_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``VJEPA2ForVideoClassification`` keys (``pooler.*``, ``classifier.*``) -> our probe state dict."""
    sd = state_dict
    if "pooler.query_tokens" not in sd:
        raise WeightsError("not a transformers video-classification state dict: no pooler.query_tokens")
    out = {"query_tokens": sd["pooler.query_tokens"],
           "heads.0.weight": sd["classifier.weight"], "heads.0.bias": sd["classifier.bias"]}
    hf_names = {"norm1": "layer_norm1", "norm2": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(_count(sd, r"pooler\.self_attention_layers\.(\d+)\.")):
        src, dst = f"pooler.self_attention_layers.{i}", f"blocks.{i}"
        for p in ("weight", "bias"):
            for ours, theirs in hf_names.items():
                out[f"{dst}.{ours}.{p}"] = sd[f"{src}.{theirs}.{p}"]
            out[f"{dst}.attn.qkv.{p}"] = torch.cat([sd[f"{src}.self_attn.{n}_proj.{p}"] for n in "qkv"], dim=0)
            out[f"{dst}.attn.proj.{p}"] = sd[f"{src}.self_attn.out_proj.{p}"]
    src = "pooler.cross_attention_layer"
    for p in ("weight", "bias"):
        for ours, theirs in hf_names.items():
            out[f"cross_block.{ours}.{p}"] = sd[f"{src}.{theirs}.{p}"]
        out[f"cross_block.xattn.q.{p}"] = sd[f"{src}.cross_attn.q_proj.{p}"]
        out[f"cross_block.xattn.kv.{p}"] = torch.cat([sd[f"{src}.cross_attn.k_proj.{p}"],
                                                      sd[f"{src}.cross_attn.v_proj.{p}"]], dim=0)
    return out


def probe_to_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our probe state dict (one query, one head) -> ``VJEPA2ForVideoClassification`` keys."""
    if sd["query_tokens"].shape[1] != 1 or _count(sd, r"heads\.(\d+)\.weight") != 1:
        raise WeightsError("transformers' VJEPA2ForVideoClassification has exactly one query and one head")
    out = {"pooler.query_tokens": sd["query_tokens"],
           "classifier.weight": sd["heads.0.weight"], "classifier.bias": sd["heads.0.bias"]}
    hf_names = {"norm1": "layer_norm1", "norm2": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(_count(sd, r"blocks\.(\d+)\.")):
        src, dst = f"blocks.{i}", f"pooler.self_attention_layers.{i}"
        for p in ("weight", "bias"):
            for ours, theirs in hf_names.items():
                out[f"{dst}.{theirs}.{p}"] = sd[f"{src}.{ours}.{p}"]
            q, k, v = sd[f"{src}.attn.qkv.{p}"].chunk(3, dim=0)
            out[f"{dst}.self_attn.q_proj.{p}"], out[f"{dst}.self_attn.k_proj.{p}"] = q, k
            out[f"{dst}.self_attn.v_proj.{p}"] = v
            out[f"{dst}.self_attn.out_proj.{p}"] = sd[f"{src}.attn.proj.{p}"]
    dst = "pooler.cross_attention_layer"
    for p in ("weight", "bias"):
        for ours, theirs in hf_names.items():
            out[f"{dst}.{theirs}.{p}"] = sd[f"cross_block.{ours}.{p}"]
        out[f"{dst}.cross_attn.q_proj.{p}"] = sd[f"cross_block.xattn.q.{p}"]
        k, v = sd[f"cross_block.xattn.kv.{p}"].chunk(2, dim=0)
        out[f"{dst}.cross_attn.k_proj.{p}"], out[f"{dst}.cross_attn.v_proj.{p}"] = k, v
    return out


# ------------------------------------------------------------------------------------------------
# Config inference, files
# ------------------------------------------------------------------------------------------------


def infer_probe_config(sd: dict[str, torch.Tensor], heads: int = PUBLIC_HEADS_COUNT,
                       norm_eps: float = PUBLIC_NORM_EPS) -> ProbeConfig:
    """Probe config from our-layout tensor shapes; ``heads`` and ``norm_eps`` are not visible in them."""
    if "query_tokens" not in sd:
        raise WeightsError(f"not a probe state dict: no query_tokens (keys: {sorted(sd)[:6]})")
    dim = sd["query_tokens"].shape[-1]
    num_heads = _count(sd, r"heads\.(\d+)\.weight")
    return from_dict(ProbeConfig, dict(
        dim=dim, num_classes=tuple(sd[f"heads.{i}.weight"].shape[0] for i in range(num_heads)),
        depth=_count(sd, r"blocks\.(\d+)\."), heads=heads, mlp_hidden=sd["cross_block.mlp.fc1.weight"].shape[0],
        qkv_bias="cross_block.xattn.q.bias" in sd, norm_eps=norm_eps))


def load_probes(path: str | os.PathLike, heads: int | None = None, norm_eps: float | None = None
                ) -> list[AttentiveProbe]:
    """Probes of a checkpoint, in eval mode.

    ``path`` is a public-release probe checkpoint (``classifiers`` list; every probe of the grid is
    returned), one written by ``vjepa2 eval probe`` (same layout plus our metadata, which fixes
    ``heads`` and ``norm_eps``), a bare state dict file, or a ``transformers``
    ``VJEPA2ForVideoClassification`` directory (one probe). ``heads`` / ``norm_eps`` default to the
    public probes' 16 and 1e-5 when the file does not record them.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such file or directory")
    if path.is_dir():
        hf_cfg, hf_sd = read_transformers_dir(path)
        sd = probe_from_transformers(hf_sd)
        configs = [infer_probe_config(sd, heads=heads or hf_cfg.get("num_attention_heads", 16),
                                      norm_eps=norm_eps or hf_cfg.get("layer_norm_eps", 1e-6))]
        state_dicts = [sd]
    else:
        checkpoint = safe_torch_load(path)
        raw = checkpoint.get("classifiers")
        if raw is None and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            raw = [checkpoint]
        if not isinstance(raw, (list, tuple)) or not raw:
            raise WeightsError(f"{path}: no 'classifiers' list of probe state dicts (keys: {sorted(checkpoint)[:8]})")
        state_dicts = [probe_from_public(d) for d in raw]
        meta = checkpoint.get(METADATA_KEY)
        meta = meta.get("probe_configs") if isinstance(meta, dict) else None
        if meta:
            try:
                configs = [from_dict(ProbeConfig, m) for m in meta]
            except (ConfigError, TypeError, ValueError) as err:
                raise WeightsError(f"{path}: bad probe config: {err}") from None
        else:
            configs = [infer_probe_config(sd, heads=heads or PUBLIC_HEADS_COUNT, norm_eps=norm_eps or PUBLIC_NORM_EPS)
                       for sd in state_dicts]
    probes = []
    for i, (cfg, sd) in enumerate(zip(configs, state_dicts)):
        probe = build_checked(AttentiveProbe, cfg, sd, f"probe #{i}", path)
        probes.append(probe.eval())
    return probes


def save_probes(path: str | os.PathLike, probes: list[AttentiveProbe], **extra) -> Path:
    """Write probes in the public layout (``classifiers`` list, ``module.`` keys) plus our metadata
    (configs, so :func:`load_probes` rebuilds them exactly); atomic. ``extra`` entries are stored too."""
    import dataclasses

    checkpoint = {"classifiers": [probe_to_public(p.state_dict()) for p in probes],
                  METADATA_KEY: {"probe_configs": [dataclasses.asdict(p.config) for p in probes]}, **extra}
    atomic_torch_save(checkpoint, path)
    return Path(path)


__all__ = ["infer_probe_config", "load_probes", "probe_from_public",
           "probe_from_transformers", "probe_to_public", "probe_to_transformers", "save_probes"]
