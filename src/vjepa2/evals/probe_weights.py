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

Conversions are pure ``state_dict -> state_dict`` functions, tested both ways: each format is a key
table (``PUBLIC_PROBE_KEYS``, ``PROBE_TRANSFORMERS_KEYS``) read ours -> theirs by
:func:`vjepa2.weights.to_foreign` and back by :func:`vjepa2.weights.from_foreign`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vjepa2.config import ConfigError, from_dict
from vjepa2.files import atomic_torch_save
from vjepa2.models.attentive_probe import AttentiveProbe, ProbeConfig
from vjepa2.weights import (KeyGroup, KeyTable, WeightsError, add_prefix, build_checked, count_indexed, from_foreign,
                            key_rule, params, prefix_rule, read_transformers_dir, safe_torch_load, strip_prefixes,
                            to_foreign)

# Public head names by number of heads.
PUBLIC_HEADS = {1: ("linear",), 3: ("verb_classifier", "noun_classifier", "action_classifier")}
PUBLIC_NORM_EPS = 1e-5  # nn.LayerNorm's default, what the public probes were trained with
PUBLIC_HEADS_COUNT = 16
METADATA_KEY = "vjepa2"


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


# Our probe <-> the public layout (after its ``module.`` prefix): the pooler's blocks keep their
# names under ``pooler.``; the head names depend on the task (see ``PUBLIC_PROBE_KEYS``).
_PUBLIC_POOLER_KEYS: KeyTable = (
    key_rule("query_tokens", "pooler.query_tokens"),  # (1, Q, D)
    prefix_rule("blocks.", "pooler.blocks."),
    prefix_rule("cross_block.", "pooler.cross_attention_block."),
)

# Public head names -> table: ``heads.{i}`` <-> the i-th name; ``("action_classifier",)`` is a
# public anticipation probe saved with its action head alone (read only; we write it as ``linear``).
PUBLIC_PROBE_KEYS: dict[tuple[str, ...], KeyTable] = {
    names: (*_PUBLIC_POOLER_KEYS,
            *(rule for i, name in enumerate(names) for rule in params(key_rule(f"heads.{i}.{{p}}", f"{name}.{{p}}"))))
    for names in (*PUBLIC_HEADS.values(), ("action_classifier",))
}

# Our probe (one query, one head) <-> transformers' VJEPA2ForVideoClassification. Self-attention:
# fused qkv (3D, D) / (3D,) <-> {q,k,v}_proj (D, D) / (D,); cross-attention: q (D, D) <-> q_proj,
# fused kv (2D, D) / (2D,) <-> {k,v}_proj. Neither side has a cross-attention output projection.
_PROBE_NORMS_AND_MLP = (key_rule("norm1.{p}", "layer_norm1.{p}"), key_rule("norm2.{p}", "layer_norm2.{p}"),
                        key_rule("mlp.fc1.{p}", "mlp.fc1.{p}"), key_rule("mlp.fc2.{p}", "mlp.fc2.{p}"))
PROBE_TRANSFORMERS_KEYS: KeyTable = (
    key_rule("query_tokens", "pooler.query_tokens"),  # (1, 1, D)
    *params(key_rule("heads.0.{p}", "classifier.{p}")),
    KeyGroup("blocks.{i}.", "pooler.self_attention_layers.{i}.", params(
        *_PROBE_NORMS_AND_MLP,
        key_rule("attn.qkv.{p}", ("self_attn.q_proj.{p}", "self_attn.k_proj.{p}", "self_attn.v_proj.{p}")),
        key_rule("attn.proj.{p}", "self_attn.out_proj.{p}"))),
    KeyGroup("cross_block.", "pooler.cross_attention_layer.", params(
        *_PROBE_NORMS_AND_MLP,
        key_rule("xattn.q.{p}", "cross_attn.q_proj.{p}"),
        key_rule("xattn.kv.{p}", ("cross_attn.k_proj.{p}", "cross_attn.v_proj.{p}")))),
)


def probe_from_public(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One public probe state dict (any ``module.`` prefix) -> ours."""
    sd = strip_prefixes(state_dict)
    if "pooler.cross_attention_block.xattn.q.weight" in sd and "pooler.cross_attention_block.norm1.weight" not in sd:
        raise WeightsError("this public probe was built with complete_block=False (cross-attention without "
                           "norms/MLP), which this project does not implement")
    table = PUBLIC_PROBE_KEYS[_public_head_names(sd)]
    if "pooler.query_tokens" not in sd:
        raise WeightsError(f"not a public probe state dict: no pooler.query_tokens (keys: {sorted(sd)[:6]})")
    return from_foreign(sd, table)


def probe_to_public(sd: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Our probe state dict -> the public layout (``prefix`` = ``module.`` as DDP saves it)."""
    num_heads = count_indexed(sd, r"heads\.(\d+)\.weight")
    if num_heads not in PUBLIC_HEADS:
        raise WeightsError(f"the public format names 1 (classification) or 3 (verb/noun/action) heads; "
                           f"this probe has {num_heads}")
    return add_prefix(to_foreign(sd, PUBLIC_PROBE_KEYS[PUBLIC_HEADS[num_heads]]), prefix)


# ------------------------------------------------------------------------------------------------
# transformers format
# ------------------------------------------------------------------------------------------------


def probe_from_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``VJEPA2ForVideoClassification`` keys (``pooler.*``, ``classifier.*``) -> our probe state dict."""
    if "pooler.query_tokens" not in state_dict:
        raise WeightsError("not a transformers video-classification state dict: no pooler.query_tokens")
    return from_foreign(state_dict, PROBE_TRANSFORMERS_KEYS)


def probe_to_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our probe state dict (one query, one head) -> ``VJEPA2ForVideoClassification`` keys."""
    if sd["query_tokens"].shape[1] != 1 or count_indexed(sd, r"heads\.(\d+)\.weight") != 1:
        raise WeightsError("transformers' VJEPA2ForVideoClassification has exactly one query and one head")
    return to_foreign(sd, PROBE_TRANSFORMERS_KEYS)


# ------------------------------------------------------------------------------------------------
# Config inference, files
# ------------------------------------------------------------------------------------------------


def infer_probe_config(sd: dict[str, torch.Tensor], heads: int = PUBLIC_HEADS_COUNT,
                       norm_eps: float = PUBLIC_NORM_EPS) -> ProbeConfig:
    """Probe config from our-layout tensor shapes; ``heads`` and ``norm_eps`` are not visible in them."""
    if "query_tokens" not in sd:
        raise WeightsError(f"not a probe state dict: no query_tokens (keys: {sorted(sd)[:6]})")
    dim = sd["query_tokens"].shape[-1]
    num_heads = count_indexed(sd, r"heads\.(\d+)\.weight")
    return from_dict(ProbeConfig, {
        "dim": dim, "num_classes": tuple(sd[f"heads.{i}.weight"].shape[0] for i in range(num_heads)),
        "depth": count_indexed(sd, r"blocks\.(\d+)\."), "heads": heads, "mlp_hidden": sd["cross_block.mlp.fc1.weight"].shape[0],
        "qkv_bias": "cross_block.xattn.q.bias" in sd, "norm_eps": norm_eps})


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
