"""Weight conversion key tables: each table read ours -> theirs -> ours gives back the same keys and
bit-equal tensors (encoder, predictor, probe, AC layouts); the table mechanics (fused qkv split /
concat, stacked mask tokens, prefixes, repeated blocks) on hand-made dicts; today's behaviour on
missing and unknown keys. No `transformers` needed: parity with it is tested in test_weights.py and
test_probe.py."""

import pytest
import torch

from vjepa2.evals.probe_weights import (PROBE_TRANSFORMERS_KEYS, PUBLIC_PROBE_KEYS, probe_from_public,
                                         probe_from_transformers, probe_to_public, probe_to_transformers)
from vjepa2.models import Predictor, VisionEncoder, encoder_config, predictor_config
from vjepa2.models.ac_predictor import ACPredictor, ac_predictor_config
from vjepa2.models.attentive_probe import AttentiveProbe, probe_config
from vjepa2.weights import (ENCODER_TRANSFORMERS_KEYS, PREDICTOR_TRANSFORMERS_KEYS, KeyGroup, encoder_from_transformers,
                            encoder_to_transformers, from_foreign, key_rule, params, predictor_from_transformers,
                            predictor_to_transformers, prefix_rule, stack_rule, to_foreign)
from vjepa2.world_model.ac_weights import ac_predictor_from_public, ac_predictor_to_public


def random_state_dict(module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """``module``'s keys and shapes with random values (distinct everywhere, so a swap would show)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in module.state_dict().items()}


def assert_bit_equal(back: dict, ours: dict) -> None:
    assert set(back) == set(ours), sorted(set(back) ^ set(ours))
    for k, v in ours.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype and torch.equal(back[k], v), k


def tiny_encoder(**kw):
    return VisionEncoder(encoder_config("tiny", dim=96, depth=3, heads=4, mlp_hidden=384, img_size=64,
                                        num_frames=4, **kw))


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_encoder_and_predictor_tables_round_trip(qkv_bias):
    enc = tiny_encoder(qkv_bias=qkv_bias)
    pred = Predictor(predictor_config(enc.config, dim=48, depth=2, heads=4, mlp_hidden=192, qkv_bias=qkv_bias))
    for module, table, to, back in [(enc, ENCODER_TRANSFORMERS_KEYS, encoder_to_transformers, encoder_from_transformers),
                                    (pred, PREDICTOR_TRANSFORMERS_KEYS, predictor_to_transformers,
                                     predictor_from_transformers)]:
        ours = random_state_dict(module)
        theirs = to_foreign(ours, table)
        assert_bit_equal(from_foreign(theirs, table), ours)
        # the named wrappers are exactly the table applied
        assert_bit_equal(to(ours), theirs)
        assert_bit_equal(back(theirs), ours)
    assert ("encoder.layer.2.attention.query.bias" in to_foreign(random_state_dict(enc), ENCODER_TRANSFORMERS_KEYS)) \
        == qkv_bias


def test_transformers_layout_shapes():
    enc = tiny_encoder()
    pred = Predictor(predictor_config(enc.config, dim=48, depth=1, heads=4, mlp_hidden=192, num_mask_tokens=10))
    hf = {**encoder_to_transformers(random_state_dict(enc)), **predictor_to_transformers(random_state_dict(pred))}
    # fused qkv (3D, D) / (3D,) -> query, key, value (D, D) / (D,), in that order
    ours = random_state_dict(enc)
    qkv = ours["blocks.1.attn.qkv.weight"]
    hf_enc = encoder_to_transformers(ours)
    for j, name in enumerate(("query", "key", "value")):
        assert torch.equal(hf_enc[f"encoder.layer.1.attention.{name}.weight"], qkv[96 * j: 96 * (j + 1)])
    assert hf["encoder.layer.0.attention.value.bias"].shape == (96,)
    # ten mask tokens (1, 1, D) -> one (10, 1, 1, D)
    assert hf["predictor.embeddings.mask_tokens"].shape == (10, 1, 1, 48)
    assert hf["encoder.embeddings.patch_embeddings.proj.weight"].shape == (96, 3, 2, 16, 16)
    # a transformers task model's ``vjepa2.`` prefix is accepted on the way in
    vj = {"vjepa2." + k: v for k, v in hf.items()}
    assert_bit_equal(encoder_from_transformers(vj), encoder_from_transformers(hf))
    assert_bit_equal(predictor_from_transformers(vj), predictor_from_transformers(hf))


@pytest.mark.parametrize("variant", ["full", "light"])
def test_probe_transformers_table_round_trips(variant):
    ours = random_state_dict(AttentiveProbe(probe_config(48, 5, variant, norm_eps=1e-5)))
    theirs = to_foreign(ours, PROBE_TRANSFORMERS_KEYS)
    assert_bit_equal(from_foreign(theirs, PROBE_TRANSFORMERS_KEYS), ours)
    assert_bit_equal(probe_to_transformers(ours), theirs)
    assert_bit_equal(probe_from_transformers(theirs), ours)
    # fused kv (2D, D) -> k_proj, v_proj (D, D); q (D, D) unchanged
    kv = ours["cross_block.xattn.kv.weight"]
    assert torch.equal(theirs["pooler.cross_attention_layer.cross_attn.k_proj.weight"], kv[:48])
    assert torch.equal(theirs["pooler.cross_attention_layer.cross_attn.v_proj.weight"], kv[48:])
    assert not any("out_proj" in k and "cross" in k for k in theirs)


@pytest.mark.parametrize("variant,num_classes", [("full", (7,)), ("light", (7,)), ("full", (3, 4, 6))])
def test_public_probe_tables_round_trip(variant, num_classes):
    ours = random_state_dict(AttentiveProbe(probe_config(48, num_classes, variant, norm_eps=1e-5)))
    names = ("linear",) if len(num_classes) == 1 else ("verb_classifier", "noun_classifier", "action_classifier")
    table = PUBLIC_PROBE_KEYS[names]
    theirs = to_foreign(ours, table)
    assert {k.split(".")[0] for k in theirs} == {"pooler", *names}
    assert_bit_equal(from_foreign(theirs, table), ours)
    assert_bit_equal(probe_to_public(ours), {"module." + k: v for k, v in theirs.items()})
    assert_bit_equal(probe_from_public(probe_to_public(ours)), ours)


def test_public_anticipation_probe_with_its_action_head_alone_reads_as_one_head():
    ours = random_state_dict(AttentiveProbe(probe_config(48, 9, "light", norm_eps=1e-5)))
    table = PUBLIC_PROBE_KEYS[("action_classifier",)]
    theirs = to_foreign(ours, table)
    assert "action_classifier.weight" in theirs and "linear.weight" not in theirs
    assert_bit_equal(probe_from_public(theirs), ours)
    assert "module.linear.weight" in probe_to_public(ours)  # written back under the classification name


def test_ac_predictor_layout_round_trips():
    # Same module names as the public V-JEPA 2-AC checkpoint: only the ``module.backbone.`` prefix differs.
    model = ACPredictor(ac_predictor_config("tiny", enc_dim=40, dim=48, depth=2, heads=4, mlp_hidden=96, img_size=64))
    ours = random_state_dict(model)
    public = ac_predictor_to_public(ours)
    assert set(public) == {"module.backbone." + k for k in ours}
    assert_bit_equal(ac_predictor_from_public(public), ours)


def test_table_mechanics_on_a_hand_made_layout():
    table = (
        *params(key_rule("embed.{p}", "theirs.embed.{p}")),
        stack_rule("tok.{j}", "theirs.tokens"),
        prefix_rule("extra.", "theirs.extra."),
        KeyGroup("blocks.{i}.", "layers.{i}.", params(key_rule("qkv.{p}", ("q.{p}", "k.{p}", "v.{p}"), optional=True),
                                                      key_rule("proj.{p}", "out.{p}"))),
    )
    ours = {"embed.weight": torch.randn(4, 2), "embed.bias": torch.randn(4),
            "tok.0": torch.randn(1, 4), "tok.1": torch.randn(1, 4), "tok.2": torch.randn(1, 4),
            "extra.anything.at.all": torch.randn(3), "blocks.0.qkv.weight": torch.randn(12, 4),
            "blocks.0.proj.weight": torch.randn(4, 4), "blocks.0.proj.bias": torch.randn(4),
            "blocks.1.proj.weight": torch.randn(4, 4), "blocks.1.proj.bias": torch.randn(4)}
    theirs = to_foreign(ours, table)
    assert list(theirs) == ["theirs.embed.weight", "theirs.embed.bias", "theirs.tokens", "theirs.extra.anything.at.all",
                            "layers.0.q.weight", "layers.0.k.weight", "layers.0.v.weight", "layers.0.out.weight",
                            "layers.0.out.bias", "layers.1.out.weight", "layers.1.out.bias"]
    assert theirs["theirs.tokens"].shape == (3, 1, 4) and theirs["layers.0.k.weight"].shape == (4, 4)
    assert_bit_equal(from_foreign(theirs, table), ours)


def test_missing_key_is_a_key_error_naming_it_and_unknown_keys_are_left_out():
    """Today's behaviour, unchanged by the tables: a key a rule needs raises ``KeyError(key)``; a key
    no rule names is not carried over (loading then reports the model's missing keys by name)."""
    enc = tiny_encoder()
    ours = random_state_dict(enc)
    del ours["blocks.1.mlp.fc2.bias"]
    with pytest.raises(KeyError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        encoder_to_transformers(ours)
    theirs = encoder_to_transformers(random_state_dict(enc))
    del theirs["encoder.layer.2.norm1.weight"]
    with pytest.raises(KeyError, match=r"encoder\.layer\.2\.norm1\.weight"):
        encoder_from_transformers(theirs)
    ours = {**random_state_dict(enc), "pos_embed": torch.zeros(1, 4, 96), "blocks.0.unknown.weight": torch.zeros(1)}
    theirs = encoder_to_transformers(ours)
    assert not any("pos_embed" in k or "unknown" in k for k in theirs)
    assert set(encoder_from_transformers({**theirs, "something.else": torch.zeros(1)})) == set(enc.state_dict())
