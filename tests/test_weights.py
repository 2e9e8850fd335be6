"""Weights in and out: parity with `transformers` (an independent implementation), round trips,
safe loading and error reporting."""

import pickle

import pytest
import torch

import vjepa2
from vjepa2.models import Predictor, VisionEncoder, encoder_config, predictor_config
from vjepa2.weights import (WeightsError, add_prefix, encoder_from_transformers, encoder_to_transformers,
                            predictor_from_transformers, predictor_to_transformers, save_public)

transformers = pytest.importorskip("transformers")

HF_SMALL = dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4.0, crop_size=64,
                frames_per_clip=4, pred_hidden_size=48, pred_num_hidden_layers=2, pred_num_attention_heads=4,
                pred_num_mask_tokens=10)


def random_hf_model(**overrides):
    cfg = transformers.VJEPA2Config(**{**HF_SMALL, **overrides})
    cfg._attn_implementation = "eager"
    model = transformers.VJEPA2Model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # random everything, incl. mask tokens and biases
            p.normal_(std=0.1)
    return model


def ours_from_hf(model):
    sd = model.state_dict()
    hf = model.config
    enc = VisionEncoder(encoder_config("tiny", dim=hf.hidden_size, depth=hf.num_hidden_layers,
                                       heads=hf.num_attention_heads, mlp_hidden=int(hf.hidden_size * hf.mlp_ratio),
                                       img_size=hf.crop_size, num_frames=hf.frames_per_clip)).eval()
    pred = Predictor(predictor_config(enc.config, dim=hf.pred_hidden_size, depth=hf.pred_num_hidden_layers,
                                      heads=hf.pred_num_attention_heads,
                                      mlp_hidden=int(hf.pred_hidden_size * hf.pred_mlp_ratio))).eval()
    enc.load_state_dict(encoder_from_transformers(sd))
    pred.load_state_dict(predictor_from_transformers(sd))
    return enc, pred


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def hf_encoder_on_kept_tokens(model, video, keep):
    """transformers' own layers (its RoPE with position masks) on a subset of tokens."""
    enc = model.encoder
    h = enc.embeddings(video)
    h = torch.gather(h, 1, keep.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
    for layer in enc.layer:
        h = layer(h, keep)[0]
    return enc.layernorm(h)


def test_encoder_and_predictor_match_transformers():
    model = random_hf_model()
    enc, pred = ours_from_hf(model)
    clip = torch.randn(2, 3, 4, 64, 64)
    video = clip.permute(0, 2, 1, 3, 4)  # transformers takes (B, T, C, H, W)
    n = 2 * 4 * 4
    gen = torch.Generator().manual_seed(0)
    perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(2)])
    ctx, tgt = perms[:, :12].sort(1).values, perms[:, 12:30].sort(1).values
    with torch.no_grad():
        ref = model(video, context_mask=[ctx], target_mask=[tgt])
        ours = enc(clip)
        assert rel_err(ours, ref.last_hidden_state) < 1e-5
        ref_keep = hf_encoder_on_kept_tokens(model, video, ctx)
        assert rel_err(enc(clip, keep=ctx), ref_keep) < 1e-5
        # transformers' predictor uses mask token 1 and takes the full encoder output
        ours_pred = pred(torch.gather(ours, 1, ctx.unsqueeze(-1).expand(-1, -1, 96)), ctx, tgt, mask_index=1)
        assert rel_err(ours_pred, ref.predictor_output.last_hidden_state) < 1e-5


def test_conversion_round_trips_are_exact():
    model = random_hf_model()
    sd = model.state_dict()
    back = {**encoder_to_transformers(encoder_from_transformers(sd)),
            **predictor_to_transformers(predictor_from_transformers(sd))}
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def test_public_layout_to_transformers_dir_and_back_is_bit_identical(tmp_path):
    enc = VisionEncoder(encoder_config("tiny", dim=96, depth=2, heads=4, mlp_hidden=384, img_size=64, num_frames=4))
    pred = Predictor(predictor_config(enc.config, dim=48, depth=2, heads=4, mlp_hidden=192))
    with torch.no_grad():
        for p in [*enc.parameters(), *pred.parameters()]:
            p.normal_()
    # a checkpoint as the public release writes it: prefixes, a stray pos_embed, optimiser state
    public = {
        "encoder": add_prefix(enc.state_dict(), "module.backbone."),
        "target_encoder": {**add_prefix(enc.state_dict(), "module.backbone."),
                           "module.backbone.pos_embed": torch.zeros(1, 32, 96)},
        "predictor": add_prefix(pred.state_dict(), "module.backbone."),
        "opt": {"state": {}, "param_groups": []}, "epoch": 3, "lr": 1e-4,
    }
    torch.save(public, tmp_path / "public.pt")
    enc1 = vjepa2.load_encoder(tmp_path / "public.pt", img_size=64, num_frames=4, heads=4)
    pred1 = vjepa2.load_predictor(tmp_path / "public.pt", img_size=64, num_frames=4, heads=4)
    assert not enc1.training and not pred1.training
    vjepa2.save_transformers(enc1, pred1, tmp_path / "hf")
    enc2 = vjepa2.load_encoder(tmp_path / "hf")
    pred2 = vjepa2.load_predictor(tmp_path / "hf")
    for a, b in [(enc, enc1), (enc1, enc2), (pred, pred1), (pred1, pred2)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert enc2.config.heads == 4 and pred2.config.heads == 4 and pred2.config.img_size == 64


def test_save_transformers_loads_in_transformers_with_equal_outputs(tmp_path):
    model = random_hf_model()
    enc, pred = ours_from_hf(model)
    vjepa2.save_transformers(enc, pred, tmp_path / "hf")
    reloaded = transformers.VJEPA2Model.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    clip = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        a = reloaded(clip.permute(0, 2, 1, 3, 4))
        b = model(clip.permute(0, 2, 1, 3, 4))
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state)
    torch.testing.assert_close(a.predictor_output.last_hidden_state, b.predictor_output.last_hidden_state)


def test_our_metadata_records_the_rope_mode(tmp_path):
    enc = VisionEncoder(encoder_config("tiny", depth=1, heads=2, dim=64, mlp_hidden=64, position="rope_rotary"))
    save_public(tmp_path / "ckpt.pt", enc)
    loaded = vjepa2.load_encoder(tmp_path / "ckpt.pt")
    assert loaded.config.position == "rope_rotary" and loaded.config.heads == 2
    with pytest.raises(WeightsError, match="rope_compatible"):
        vjepa2.save_transformers(loaded, Predictor(predictor_config(loaded.config, depth=1)), tmp_path / "hf")


class Evil:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_checkpoint_needing_code_is_refused(tmp_path):
    torch.save({"target_encoder": {"x": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="refused"):
        vjepa2.load_encoder(tmp_path / "evil.pt")


def test_missing_unexpected_and_mismatched_keys_are_named(tmp_path):
    enc = VisionEncoder(encoder_config("tiny", depth=2, dim=64, heads=1, mlp_hidden=64))
    sd = enc.state_dict()
    sd.pop("blocks.1.mlp.fc2.bias")
    sd["blocks.0.extra.weight"] = torch.zeros(1)
    torch.save({"target_encoder": sd}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError) as err:
        vjepa2.load_encoder(tmp_path / "bad.pt")
    assert "blocks.1.mlp.fc2.bias" in str(err.value) and "blocks.0.extra.weight" in str(err.value)
    sd = enc.state_dict()
    sd["norm.weight"] = torch.ones(7)
    torch.save({"target_encoder": sd}, tmp_path / "shape.pt")
    with pytest.raises(WeightsError, match=r"norm.weight: checkpoint \(7,\)"):
        vjepa2.load_encoder(tmp_path / "shape.pt")
    with pytest.raises(WeightsError, match="no 'target_encoder' or 'ema_encoder' entry"):
        torch.save({"encoder": enc.state_dict(), "opt": {}}, tmp_path / "k.pt")
        vjepa2.load_encoder(tmp_path / "k.pt")
    with pytest.raises(WeightsError, match="no such file"):
        vjepa2.load_encoder(tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(pickle.dumps([1, 2]) + b"junk")
    with pytest.raises(WeightsError):
        vjepa2.load_encoder(tmp_path / "garbage.pt")
