"""Encoder / predictor behaviour, and the encoder against a float64 reference forward."""

import math

import pytest
import torch
import torch.nn.functional as F

from vjepa2.config import ConfigError
from vjepa2.models import Predictor, VisionEncoder, encoder_config, predictor_config
from vjepa2.models.sizes import SIZES

from test_rope import reference_rope


def small_encoder(**kw):
    cfg = dict(dim=48, depth=2, heads=2, mlp_hidden=96, img_size=32, num_frames=4)
    cfg.update(kw)
    return VisionEncoder(encoder_config("tiny", **cfg)).eval()


def reference_encoder_forward(enc, clip, keep=None):
    """Float64 forward written without the model's code paths (conv3d, naive RoPE, explicit softmax)."""
    cfg = enc.config
    sd = {k: v.double() for k, v in enc.state_dict().items()}
    x = F.conv3d(clip.double(), sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"],
                 stride=(cfg.tubelet_size, cfg.patch_size, cfg.patch_size))
    grid = tuple(x.shape[2:])
    x = x.flatten(2).transpose(1, 2)  # (B, N, D)
    B, N, D = x.shape
    idx = keep if keep is not None else torch.arange(N).expand(B, N)
    x = torch.stack([x[b, idx[b]] for b in range(B)])
    H, hd = cfg.heads, cfg.head_dim
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], cfg.norm_eps)
        qkv = h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        q, k, v = qkv.split(D, dim=-1)
        outs = []
        for b in range(B):
            heads = []
            for hh in range(H):
                sl = slice(hh * hd, (hh + 1) * hd)
                qb = reference_rope(q[b, :, sl], idx[b], grid, cfg.rope_mode)
                kb = reference_rope(k[b, :, sl], idx[b], grid, cfg.rope_mode)
                att = torch.softmax(qb @ kb.T / math.sqrt(hd), dim=-1)
                heads.append(att @ v[b, :, sl])
            outs.append(torch.cat(heads, dim=-1))
        x = x + torch.stack(outs) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = F.layer_norm(x, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], cfg.norm_eps)
        h = F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return F.layer_norm(x, (D,), sd["norm.weight"], sd["norm.bias"], cfg.norm_eps)


@pytest.mark.parametrize("mode", ["rope_compatible", "rope_rotary"])
@pytest.mark.parametrize("shape", [(2, 32, 48), (6, 48, 16), (4, 16, 64)])
def test_encoder_matches_float64_reference_on_non_square_inputs(mode, shape):
    enc = small_encoder(position=mode)
    T, H, W = shape
    clip = torch.randn(2, 3, T, H, W)
    n = (T // 2) * (H // 16) * (W // 16)
    keep = torch.stack([torch.randperm(n)[: max(2, n // 2)] for _ in range(2)])
    ref_full = reference_encoder_forward(enc, clip)
    ref_keep = reference_encoder_forward(enc, clip, keep)
    with torch.no_grad():
        out_full = enc(clip)
        out_keep = enc(clip, keep=keep)
    assert out_full.shape == (2, n, 48) and out_keep.shape == (2, keep.shape[1], 48)
    assert ((out_full.double() - ref_full).norm() / ref_full.norm()) < 1e-5
    assert ((out_keep.double() - ref_keep).norm() / ref_keep.norm()) < 1e-5


def test_sincos_encoder_runs_at_other_sizes_and_positions_matter():
    enc = small_encoder(position="sincos")
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        a = enc(clip)
        b = enc(torch.randn(1, 3, 8, 48, 48))  # interpolated table
        # a constant clip has identical patch embeddings: only positions can tell tokens apart
        const = enc(torch.zeros(1, 3, 4, 32, 32))
    assert a.shape == (1, 8, 48) and b.shape == (1, 4 * 9, 48)
    assert (const[0, 0] - const[0, 1]).abs().max() > 1e-3


def test_encoder_rejects_bad_clips_and_indices():
    enc = small_encoder()
    with pytest.raises(ValueError, match="height=30 is not a multiple of 16"):
        enc(torch.randn(1, 3, 4, 30, 32))
    with pytest.raises(ValueError, match="channels"):
        enc(torch.randn(1, 4, 4, 32, 32))
    with pytest.raises(ValueError, match="outside"):
        enc(torch.randn(1, 3, 4, 32, 32), keep=torch.tensor([[0, 99]]))
    with pytest.raises(TypeError, match="integer"):
        enc(torch.randn(1, 3, 4, 32, 32), keep=torch.tensor([[0.0, 1.0]]))


def test_init_rescales_residual_projections():
    enc = VisionEncoder(encoder_config("small", depth=4))
    for i, block in enumerate(enc.blocks):
        expected = 0.02 / math.sqrt(2 * (i + 1))
        assert abs(block.attn.proj.weight.std().item() - expected) / expected < 0.05
        assert abs(block.mlp.fc2.weight.std().item() - expected) / expected < 0.05
        assert abs(block.attn.qkv.weight.std().item() - 0.02) / 0.02 < 0.05
        assert torch.all(block.attn.qkv.bias == 0)


def test_named_sizes_match_the_public_models():
    assert SIZES["large"] == (1024, 24, 16, 4096)
    assert SIZES["huge"] == (1280, 32, 16, 5120)
    assert SIZES["giant"] == (1408, 40, 22, 6144)
    cfg = encoder_config("giant")
    assert cfg.head_dim == 64
    with pytest.raises(ConfigError, match="unknown model size"):
        encoder_config("enormous")
    with pytest.raises(ConfigError, match="not divisible"):
        encoder_config("tiny", heads=5)


def test_activation_checkpointing_gives_identical_gradients():
    torch.manual_seed(1)
    enc = small_encoder()
    enc_ckpt = small_encoder(activation_checkpointing=True)
    enc_ckpt.load_state_dict(enc.state_dict())
    enc.train(), enc_ckpt.train()
    clip = torch.randn(2, 3, 4, 32, 32)
    enc(clip).square().mean().backward()
    enc_ckpt(clip).square().mean().backward()
    for (name, a), b in zip(enc.named_parameters(), enc_ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def make_predictor(enc, **kw):
    cfg = dict(dim=32, depth=2, heads=2, mlp_hidden=64)
    cfg.update(kw)
    pred = Predictor(predictor_config(enc.config, **cfg)).eval()
    with torch.no_grad():
        for t in pred.mask_tokens:
            t.normal_()
    return pred


def test_predictor_output_is_independent_of_index_order():
    enc = small_encoder()
    pred = make_predictor(enc)
    z = torch.randn(2, 3, 48)
    ctx = torch.tensor([[0, 3, 5], [1, 2, 7]])
    tgt = torch.tensor([[1, 6], [0, 4]])
    with torch.no_grad():
        out = pred(z, ctx, tgt)
        perm = torch.tensor([2, 0, 1])
        out_perm_ctx = pred(z[:, perm], ctx[:, perm], tgt)
        out_swapped_tgt = pred(z, ctx, tgt.flip(1))
    assert out.shape == (2, 2, 48)
    torch.testing.assert_close(out, out_perm_ctx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.flip(1), out_swapped_tgt, rtol=1e-5, atol=1e-6)


def test_predictor_mask_index_selects_the_token():
    enc = small_encoder()
    pred = make_predictor(enc)
    z, ctx, tgt = torch.randn(1, 3, 48), torch.tensor([[0, 1, 2]]), torch.tensor([[5, 6]])
    with torch.no_grad():
        a, b = pred(z, ctx, tgt, mask_index=0), pred(z, ctx, tgt, mask_index=3)
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="mask_index=10"):
        pred(z, ctx, tgt, mask_index=10)


def test_predictor_dense_mode_shapes_and_marker():
    enc = small_encoder()
    pred = make_predictor(enc)
    tokens = torch.randn(2, 8, 48)  # grid (2, 2, 2) of a 4x32x32 clip
    tgt = torch.tensor([[1, 2], [0, 7]])
    with torch.no_grad():
        out = pred.forward_dense(tokens, tgt)
        other = pred.forward_dense(tokens, torch.tensor([[1, 3], [0, 6]]))
    assert out.shape == (2, 2, 48)
    assert (out[:, 0] - other[:, 0]).abs().max() > 1e-5  # marking other tokens changes predictions
