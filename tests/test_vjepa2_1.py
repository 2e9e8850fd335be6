"""V-JEPA 2.1 weights: random release-layout checkpoints of each released size's structure (scaled
down in width; the real depths, so the hierarchical layers are the release's) load by shape
inference alone and match an independent float64 reference of the 2.1 maths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vjepa2.cli import main
from vjepa2.models.vjepa2_1 import Encoder21Config, VisionEncoder21, hierarchical_layers
from vjepa2.weights import load_encoder, load_predictor, save_public

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTH, PATCH, IMG = 128, 16, 64  # head width 64 as released; a 4 x 4 patch grid
# name -> (encoder key, depth, hierarchical layers, predictor depth, levels, teacher width per level)
RELEASED = {
    "vitb_dist": ("ema_encoder", 12, (2, 5, 8, 11), 2, 1, 80),
    "vitl_dist": ("ema_encoder", 24, (5, 11, 17, 23), 2, 1, 80),
    "vitg": ("target_encoder", 40, (9, 19, 29, 39), 2, 4, None),
    "vitG": ("target_encoder", 48, (11, 23, 37, 47), 2, 4, None),
}
PRED_WIDTH = 128


def randn(*shape, scale=0.05, generator):
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale


def block_tensors(prefix: str, dim: int, hidden: int, g) -> dict:
    sd = {}
    for norm in ("norm1", "norm2"):
        sd[f"{prefix}.{norm}.weight"] = 1 + randn(dim, generator=g)
        sd[f"{prefix}.{norm}.bias"] = randn(dim, generator=g)
    shapes = {"attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim), "mlp.fc1": (hidden, dim), "mlp.fc2": (dim, hidden)}
    for name, (out, inp) in shapes.items():
        sd[f"{prefix}.{name}.weight"] = randn(out, inp, scale=1 / math.sqrt(inp), generator=g)
        sd[f"{prefix}.{name}.bias"] = randn(out, generator=g)
    return sd


def release_checkpoint(name: str, seed: int = 0) -> dict:
    """A random checkpoint in the 2.1 release layout (``module.backbone.`` keys), built from the key
    list alone (no model of ours involved)."""
    key, depth, _, pred_depth, levels, teacher = RELEASED[name]
    g = torch.Generator().manual_seed(seed)
    enc = {"patch_embed.proj.weight": randn(WIDTH, 3, 2, PATCH, PATCH, scale=0.02, generator=g),
           "patch_embed.proj.bias": randn(WIDTH, generator=g),
           "patch_embed_img.proj.weight": randn(WIDTH, 3, 1, PATCH, PATCH, scale=0.03, generator=g),
           "patch_embed_img.proj.bias": randn(WIDTH, generator=g),
           "img_mod_embed": randn(1, 1, WIDTH, scale=0.5, generator=g),
           "video_mod_embed": randn(1, 1, WIDTH, scale=0.5, generator=g)}
    for i in range(depth):
        enc.update(block_tensors(f"blocks.{i}", WIDTH, 2 * WIDTH, g))
    for i in range(4):
        enc[f"norms_block.{i}.weight"] = 1 + randn(WIDTH, generator=g)
        enc[f"norms_block.{i}.bias"] = randn(WIDTH, generator=g)
    out = levels * (teacher or WIDTH)
    pred = {f"mask_tokens.{i}": randn(1, 1, PRED_WIDTH, scale=0.5, generator=g) for i in range(8)}
    pred.update(img_mod_embed=randn(1, 1, PRED_WIDTH, scale=0.5, generator=g),
                video_mod_embed=randn(1, 1, PRED_WIDTH, scale=0.5, generator=g))
    if levels == 1:
        pred.update({"predictor_embed.weight": randn(PRED_WIDTH, WIDTH, scale=0.1, generator=g),
                     "predictor_embed.bias": randn(PRED_WIDTH, generator=g)})
    else:
        pred.update({"predictor_embed.0.weight": randn(WIDTH, 4 * WIDTH, scale=0.05, generator=g),
                     "predictor_embed.0.bias": randn(WIDTH, generator=g),
                     "predictor_embed.2.weight": randn(PRED_WIDTH, WIDTH, scale=0.1, generator=g),
                     "predictor_embed.2.bias": randn(PRED_WIDTH, generator=g)})
    for i in range(pred_depth):
        pred.update(block_tensors(f"predictor_blocks.{i}", PRED_WIDTH, 4 * PRED_WIDTH, g))
    pred.update({"predictor_norm.weight": 1 + randn(PRED_WIDTH, generator=g),
                 "predictor_norm.bias": randn(PRED_WIDTH, generator=g)})
    for proj in ("predictor_proj", "predictor_proj_context"):
        pred[f"{proj}.weight"] = randn(out, PRED_WIDTH, scale=0.1, generator=g)
        pred[f"{proj}.bias"] = randn(out, generator=g)
    prefixed = {k: {f"module.backbone.{n}": v.float() for n, v in sd.items()} for k, sd in ((key, enc),
                                                                                          ("predictor", pred))}
    return {**prefixed, "epoch": 1}


# ------------------------------------------------------------------------------------------------
# The float64 reference (written from the release's description, sharing no code with the package)
# ------------------------------------------------------------------------------------------------


def layer_norm(x, sd, name):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def linear(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def rotate(x, positions):
    """Interleaved 3D RoPE: per axis a chunk of S = 2 * ((hd // 3) // 2) dims, pairs (2i, 2i+1) turned
    by position * 10000 ** (-i / (S / 2)); the remaining dims pass through."""
    S = 2 * ((x.shape[-1] // 3) // 2)
    out = x.clone()
    omega = 1.0 / 10000 ** (torch.arange(S // 2, dtype=torch.float64) / (S / 2))
    for axis in range(3):
        theta = positions[:, axis, None] * omega  # (N, S/2)
        chunk = x[..., axis * S:(axis + 1) * S]
        even, odd = chunk[..., 0::2], chunk[..., 1::2]
        out[..., axis * S:(axis + 1) * S][..., 0::2] = even * theta.cos() - odd * theta.sin()
        out[..., axis * S:(axis + 1) * S][..., 1::2] = odd * theta.cos() + even * theta.sin()
    return out


def block(x, sd, name, heads, positions):
    B, N, D = x.shape
    hd = D // heads
    qkv = linear(layer_norm(x, sd, f"{name}.norm1"), sd, f"{name}.attn.qkv").reshape(B, N, 3, heads, hd)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    q, k = rotate(q, positions), rotate(k, positions)
    attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    x = x + linear((attention @ v).transpose(1, 2).reshape(B, N, D), sd, f"{name}.attn.proj")
    hidden = linear(layer_norm(x, sd, f"{name}.norm2"), sd, f"{name}.mlp.fc1")
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    return x + linear(hidden, sd, f"{name}.mlp.fc2")


def token_positions(indices, grid, scale_to=None):
    t, h, w = grid
    pos = torch.stack([indices // (h * w), (indices % (h * w)) // w, indices % w], 1).double()
    if scale_to:
        pos[:, 1] *= (scale_to - 1) / (h - 1)
        pos[:, 2] *= (scale_to - 1) / (w - 1)
    return pos


def reference_encoder(sd, clip, depth, heads, layers, hierarchical):
    image = clip.shape[2] == 1
    tok = "patch_embed_img" if image else "patch_embed"
    weight = sd[f"{tok}.proj.weight"]
    x = F.conv3d(clip.double(), weight, sd[f"{tok}.proj.bias"], stride=weight.shape[2:])
    grid = tuple(x.shape[2:])
    x = x.flatten(2).transpose(1, 2) + sd["img_mod_embed" if image else "video_mod_embed"]
    positions = token_positions(torch.arange(x.shape[1]), grid, scale_to=16)
    outs = []
    for i in range(depth):
        x = block(x, sd, f"blocks.{i}", heads, positions)
        if i in layers:
            outs.append(layer_norm(x, sd, f"norms_block.{layers.index(i)}"))
    return torch.cat(outs, -1) if hierarchical else outs[-1]


def reference_predictor(sd, ctx, ctx_idx, tgt_idx, depth, levels, grid, mask_index=1):
    if levels == 1:
        x = linear(ctx, sd, "predictor_embed")
    else:
        h = linear(ctx, sd, "predictor_embed.0")
        x = linear(0.5 * h * (1 + torch.erf(h / math.sqrt(2))), sd, "predictor_embed.2")
    targets = sd[f"mask_tokens.{mask_index}"].expand(ctx.shape[0], len(tgt_idx), -1)
    x = torch.cat([x, targets], 1) + sd["video_mod_embed"]
    positions = token_positions(torch.cat([ctx_idx, tgt_idx]), grid)
    for i in range(depth):
        x = block(x, sd, f"predictor_blocks.{i}", 2, positions)
    x = layer_norm(x, sd, "predictor_norm")
    n = len(ctx_idx)
    return linear(x[:, n:], sd, "predictor_proj"), linear(x[:, :n], sd, "predictor_proj_context")


def plain(sd):
    return {k.removeprefix("module.backbone."): v.double() for k, v in sd.items()}


def relative_error(ours, ref):
    return float((ours.double() - ref).norm() / ref.norm())


# ------------------------------------------------------------------------------------------------


def test_hierarchical_layers_are_the_releases():
    for _, depth, layers, *_ in RELEASED.values():
        assert hierarchical_layers(depth) == layers


@pytest.mark.parametrize("name", list(RELEASED))
def test_a_released_structure_loads_by_shape_and_matches_the_float64_reference(name, tmp_path):
    key, depth, layers, pred_depth, levels, teacher = RELEASED[name]
    checkpoint = release_checkpoint(name)
    path = tmp_path / f"vjepa2_1_{name}.pt"
    torch.save(checkpoint, path)
    encoder = load_encoder(path, img_size=IMG)  # no key, no config: found and inferred
    assert isinstance(encoder, VisionEncoder21)
    cfg = encoder.config
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.layers) == (WIDTH, depth, 2, layers)
    sd = plain(checkpoint[key])
    g = torch.Generator().manual_seed(1)
    image, clip = torch.randn(2, 3, 1, IMG, IMG, generator=g), torch.randn(1, 3, 16, IMG, IMG, generator=g)
    with torch.no_grad():
        for x in (image, clip):
            ref = reference_encoder(sd, x, depth, 2, layers, hierarchical=False)
            out = encoder(x)
            assert out.shape == ref.shape == (x.shape[0], (x.shape[2] // 2 or 1) * 16, WIDTH)
            assert relative_error(out, ref) <= 1e-5
        hierarchical = load_encoder(path, img_size=IMG, output="hierarchical")
        ref4 = reference_encoder(sd, clip, depth, 2, layers, hierarchical=True)
        out4 = hierarchical(clip)
        assert out4.shape == (1, 128, 4 * WIDTH) and relative_error(out4, ref4) <= 1e-5
        torch.testing.assert_close(out4[..., -WIDTH:], encoder(clip))  # the last level is the default output

        predictor = load_predictor(path, img_size=IMG, num_frames=16)
        assert (predictor.config.levels, predictor.config.output_width) == (levels, levels * (teacher or WIDTH))
        context = (ref4 if levels == 4 else ref)[:, :40].float()
        ctx_idx, tgt_idx = torch.arange(40), torch.arange(40, 70)
        pred, ctx_out = predictor(context, ctx_idx[None], tgt_idx[None], mask_index=1)
        ref_pred, ref_ctx = reference_predictor(plain(checkpoint["predictor"]), context.double(), ctx_idx, tgt_idx,
                                                pred_depth, levels, grid=(8, 4, 4))
        assert pred.shape == ref_pred.shape == (1, 30, levels * (teacher or WIDTH))
        assert relative_error(pred, ref_pred) <= 1e-5 and relative_error(ctx_out, ref_ctx) <= 1e-5


def test_2_1_round_trips_through_save_public(tmp_path):
    path = tmp_path / "in.pt"
    torch.save(release_checkpoint("vitb_dist"), path)
    encoder, predictor = load_encoder(path, img_size=IMG), load_predictor(path, img_size=IMG)
    save_public(tmp_path / "out.pt", encoder, predictor)
    again = load_encoder(tmp_path / "out.pt")
    assert again.config == encoder.config  # our metadata carries the config (img_size included)
    clip = torch.randn(1, 3, 4, IMG, IMG)
    with torch.no_grad():
        torch.testing.assert_close(again(clip), encoder(clip), rtol=0, atol=0)
    assert load_predictor(tmp_path / "out.pt").config == predictor.config


def test_embed_writes_2_1_features_and_hierarchical_ones(tmp_path, capsys):
    from safetensors import safe_open

    from vjepa2.data.clips.video import write_video

    path = tmp_path / "v21.pt"
    torch.save(release_checkpoint("vitl_dist"), path)
    video = tmp_path / "clip.mp4"
    write_video(video, torch.randint(0, 255, (8, IMG, IMG, 3), dtype=torch.uint8), fps=8)
    for flag, width in (([], WIDTH), (["--hierarchical"], 4 * WIDTH)):
        out = tmp_path / f"emb{len(flag)}.safetensors"
        assert main(["embed", str(video), "--weights", str(path), "--frames", "4", "--size", str(IMG), "--out",
                     str(out), "--no-progress", *flag]) == 0
        with safe_open(str(out), framework="pt") as f:
            assert f.get_tensor("tokens/clip.mp4").shape == (2 * 16, width)
    out = tmp_path / "image.safetensors"  # one frame: the image tokenizer
    assert main(["embed", str(video), "--weights", str(path), "--frames", "1", "--size", str(IMG), "--out", str(out),
                 "--no-progress"]) == 0
    with safe_open(str(out), framework="pt") as f:
        assert f.get_tensor("tokens/clip.mp4").shape == (16, WIDTH)
    capsys.readouterr()
    assert main(["embed", str(video), "--weights", "random:tiny", "--hierarchical", "--out",
                 str(tmp_path / "x.safetensors")]) == 2
    assert "V-JEPA 2.1" in capsys.readouterr().err


def test_2_0_checkpoints_still_load_as_2_0(tmp_path):
    from vjepa2.models import VisionEncoder, encoder_config

    encoder = VisionEncoder(encoder_config("tiny", depth=2))
    save_public(tmp_path / "v20.pt", encoder)
    loaded = load_encoder(tmp_path / "v20.pt")
    assert type(loaded) is VisionEncoder and loaded.config.position == "rope_compatible"
    assert isinstance(Encoder21Config().layers, tuple)
