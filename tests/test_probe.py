"""Attentive probe: parity with `transformers` (an independent implementation), the public probe
checkpoint layout, a float64 reference of the cross-attention, and conversions both ways."""

import math

import pytest
import torch

from vjepa2.config import ConfigError
from vjepa2.evals.probe_weights import (infer_probe_config, load_probes, probe_from_public, probe_from_transformers,
                                        probe_to_public, probe_to_transformers, save_probes)
from vjepa2.layers.cross_attention import CrossBlock
from vjepa2.models import VisionEncoder, encoder_config
from vjepa2.models.attentive_probe import AttentiveProbe, probe_config
from vjepa2.weights import WeightsError, encoder_from_transformers, save_public

transformers = pytest.importorskip("transformers")


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def randomise_(module, std=0.1):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(std=std)
    return module


def random_hf_classifier(num_labels=5, **overrides):
    cfg = transformers.VJEPA2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4.0,
                                    crop_size=32, frames_per_clip=4, pred_hidden_size=32, pred_num_hidden_layers=1,
                                    pred_num_attention_heads=4, num_labels=num_labels, **overrides)
    cfg._attn_implementation = "eager"
    return randomise_(transformers.VJEPA2ForVideoClassification(cfg).eval()), cfg


def test_encoder_plus_probe_match_transformers_video_classification():
    model, cfg = random_hf_classifier()
    sd = model.state_dict()
    encoder = VisionEncoder(encoder_config("tiny", dim=64, depth=2, heads=4, mlp_hidden=256)).eval()
    encoder.load_state_dict(encoder_from_transformers(sd))
    ours = probe_from_transformers(sd)
    probe = AttentiveProbe(infer_probe_config(ours, heads=cfg.num_attention_heads, norm_eps=cfg.layer_norm_eps)).eval()
    probe.load_state_dict(ours)
    assert probe.config.depth == cfg.num_pooler_layers == 3
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        ref = model(pixel_values_videos=clip.permute(0, 2, 1, 3, 4)).logits
        (logits,) = probe(encoder(clip))
    assert logits.shape == (2, 5)
    assert rel_err(logits, ref) < 1e-5


def test_transformers_conversion_round_trip_is_exact():
    model, _ = random_hf_classifier()
    hf = {k: v for k, v in model.state_dict().items() if k.startswith(("pooler.", "classifier."))}
    back = probe_to_transformers(probe_from_transformers(hf))
    assert set(back) == set(hf)
    assert all(torch.equal(back[k], hf[k]) for k in hf)


def _public_style_reference(sd, tokens, heads, eps):
    """The public AttentiveClassifier's arithmetic written out in float64 from its own key names."""
    sd = {k.removeprefix("module."): v.double() for k, v in sd.items()}
    x = tokens.double()
    ln = torch.nn.functional.layer_norm
    gelu = torch.nn.functional.gelu
    B, N, D = x.shape
    hd = D // heads

    def attention(q, k, v):
        w = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        return w.softmax(-1) @ v

    def split(t):
        return t.view(B, -1, heads, hd).transpose(1, 2)

    i = 0
    while f"pooler.blocks.{i}.norm1.weight" in sd:
        p = f"pooler.blocks.{i}."
        h = ln(x, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        q, k, v = (h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]).chunk(3, dim=-1)
        a = attention(split(q), split(k), split(v)).transpose(1, 2).reshape(B, N, D)
        x = x + a @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = ln(x, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        x = x + gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]) @ sd[p + "mlp.fc2.weight"].T \
            + sd[p + "mlp.fc2.bias"]
        i += 1
    p = "pooler.cross_attention_block."
    query = sd["pooler.query_tokens"].expand(B, -1, -1)
    h = ln(x, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
    q = query @ sd[p + "xattn.q.weight"].T + sd[p + "xattn.q.bias"]
    k, v = (h @ sd[p + "xattn.kv.weight"].T + sd[p + "xattn.kv.bias"]).chunk(2, dim=-1)
    query = query + attention(split(q), split(k), split(v)).transpose(1, 2).reshape(B, -1, D)
    h = ln(query, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
    query = query + gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]) @ sd[p + "mlp.fc2.weight"].T \
        + sd[p + "mlp.fc2.bias"]
    return query


@pytest.mark.parametrize("variant,num_classes", [("full", (7,)), ("light", (7,)), ("full", (3, 4, 6))])
def test_public_layout_matches_float64_reference(variant, num_classes):
    probe = randomise_(AttentiveProbe(probe_config(48, num_classes, variant, norm_eps=1e-5))).eval()
    public = probe_to_public(probe.state_dict())
    expected_heads = ["linear"] if len(num_classes) == 1 else ["verb_classifier", "noun_classifier",
                                                                "action_classifier"]
    assert {k.split(".")[1] for k in public if not k.startswith("module.pooler")} == set(expected_heads)
    assert "module.pooler.cross_attention_block.xattn.kv.weight" in public
    assert ("module.pooler.blocks.2.attn.qkv.weight" in public) == (variant == "full")
    tokens = torch.randn(2, 10, 48)
    pooled = _public_style_reference(public, tokens, heads=16, eps=1e-5)
    with torch.no_grad():
        ours_pooled = probe.pool(tokens)
        logits = probe(tokens)
    assert rel_err(ours_pooled.double(), pooled) < 1e-5
    for q, name in enumerate(expected_heads):
        sd = {k.removeprefix("module."): v.double() for k, v in public.items()}
        ref = pooled[:, q] @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]
        assert rel_err(logits[q].double(), ref) < 1e-5
    back = probe_from_public(public)
    assert set(back) == set(probe.state_dict())
    assert all(torch.equal(back[k], v) for k, v in probe.state_dict().items())


def test_public_probe_checkpoint_loads_every_probe_of_the_grid(tmp_path):
    probes = [randomise_(AttentiveProbe(probe_config(48, 5, "full", norm_eps=1e-5))) for _ in range(3)]
    # As the public eval saves it: DDP-prefixed state dicts, optimiser states and an epoch.
    torch.save({"classifiers": [probe_to_public(p.state_dict()) for p in probes], "opt": [{}] * 3, "epoch": 20},
               tmp_path / "probe.pt")
    loaded = load_probes(tmp_path / "probe.pt")
    assert len(loaded) == 3
    tokens = torch.randn(1, 6, 48)
    for a, b in zip(loaded, probes):
        assert a.config.heads == 16 and a.config.norm_eps == 1e-5 and a.config.depth == 3
        assert torch.equal(a(tokens)[0], b.eval()(tokens)[0])


def test_our_probe_file_round_trips_configs(tmp_path):
    probe = randomise_(AttentiveProbe(probe_config(64, (3, 4, 5), "light", heads=8)))
    save_probes(tmp_path / "p.pt", [probe], epoch=3)
    (back,) = load_probes(tmp_path / "p.pt")
    assert back.config == probe.config
    tokens = torch.randn(2, 5, 64)
    assert all(torch.equal(a, b) for a, b in zip(back(tokens), probe.eval()(tokens)))


def test_bad_probe_inputs_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="not divisible by heads"):
        probe_config(50, 3)
    with pytest.raises(ConfigError, match="variant"):
        probe_config(48, 3, "huge")
    probe = AttentiveProbe(probe_config(48, 3, "light"))
    with pytest.raises(ValueError, match=r"\(B, N, 48\)"):
        probe(torch.randn(2, 5, 32))
    encoder = VisionEncoder(encoder_config("tiny", dim=48, depth=1, heads=3, mlp_hidden=96))
    save_public(tmp_path / "encoder.pt", encoder)
    with pytest.raises(WeightsError, match="classifiers"):
        load_probes(tmp_path / "encoder.pt")


def test_cross_block_normalises_tokens_but_not_queries():
    block = randomise_(CrossBlock(16, 4, 32)).eval()
    queries, tokens = torch.randn(1, 2, 16), torch.randn(1, 7, 16)
    with torch.no_grad():
        out = block(queries, tokens)
        # Shifting and scaling the tokens leaves norm1(tokens) unchanged; scaling the queries does not.
        assert torch.allclose(block(queries, 3 * tokens + 1), out, atol=1e-5)
        assert not torch.allclose(block(2 * queries, tokens), out, atol=1e-3)
