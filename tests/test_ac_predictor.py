"""AC predictor: block-causal mask, KV-cached rollout, a float64 reference forward, public weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from vjepa2.config import ConfigError
from vjepa2.data.trajectories.trajectory import apply_action
from vjepa2.models.ac_predictor import ACPredictor, ac_predictor_config, normalize_latents
from vjepa2.weights import WeightsError
from vjepa2.world_model.ac_weights import (ac_predictor_from_public, ac_predictor_to_public, infer_ac_predictor_config,
                                        load_ac_predictor, save_ac_predictor)

ENC_DIM = 40


def tiny(**kw):
    cfg = dict(enc_dim=ENC_DIM, dim=48, depth=2, heads=4, mlp_hidden=96, img_size=64)
    cfg.update(kw)
    return ACPredictor(ac_predictor_config("tiny", **cfg)).eval()


def inputs(B=2, T=4, N=16, A=7, S=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, N, ENC_DIM, generator=g), torch.randn(B, T, A, generator=g),
            torch.randn(B, T, S, generator=g))


# ------------------------------------------------------------------------------------------------
# Float64 reference written from the method's description, without the model's code paths
# ------------------------------------------------------------------------------------------------


def rotate_chunk(x, pos, mode):
    """Element-wise RoPE of one chunk: x (L, d), pos (L,) float."""
    L, d = x.shape
    out = x.clone()
    for i in range(L):
        for e in range(d):
            j = e % (d // 2) if mode == "compatible" else e // 2
            angle = float(pos[i]) * 10000.0 ** (-j / (d / 2))
            partner = -x[i, e + 1] if e % 2 == 0 else x[i, e - 1]
            out[i, e] = x[i, e] * math.cos(angle) + partner * math.sin(angle)
    return out


def reference_forward(model, frames, actions, states, grid):
    """Float64 AC forward: per step [a, s, frame tokens]; frame tokens rotate (t, row*g/H, col*g/W),
    action/state tokens rotate only the time chunk at t; explicit block-causal softmax."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    B, T, N, _ = frames.shape
    H, W = grid
    ref = cfg.img_size // cfg.patch_size
    lin = lambda x, name: x.double() @ sd[name + ".weight"].T + sd[name + ".bias"]  # noqa: E731
    z = lin(frames, "predictor_embed")
    a = lin(actions, "action_encoder").unsqueeze(2)
    s = lin(states, "state_encoder").unsqueeze(2)
    x = torch.cat([a, s, z], dim=2).reshape(B, T * (N + 2), cfg.dim)
    step = torch.arange(T).repeat_interleave(N + 2)
    is_frame = torch.tensor(([False, False] + [True] * N) * T)
    k_in = torch.arange(T * (N + 2)) % (N + 2) - 2
    row = torch.where(is_frame, (k_in // W).double() * ref / H, torch.zeros(()).double())
    col = torch.where(is_frame, (k_in % W).double() * ref / W, torch.zeros(()).double())
    allowed = step[:, None] >= step[None, :]
    hd, d = cfg.head_dim, 2 * ((cfg.head_dim // 3) // 2)
    mode = cfg.rope_mode
    D = cfg.dim
    for i in range(cfg.depth):
        p = f"predictor_blocks.{i}."
        h = F.layer_norm(x, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], cfg.norm_eps)
        qkv = h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        q, k, v = qkv.split(D, dim=-1)
        outs = []
        for b in range(B):
            heads = []
            for hh in range(cfg.heads):
                sl = slice(hh * hd, (hh + 1) * hd)
                qk = []
                for t in (q[b, :, sl], k[b, :, sl]):
                    t = t.clone()
                    t[:, 0:d] = rotate_chunk(t[:, 0:d], step.double(), mode)
                    fr = is_frame
                    t[fr, d:2 * d] = rotate_chunk(t[fr, d:2 * d], row[fr], mode)
                    t[fr, 2 * d:3 * d] = rotate_chunk(t[fr, 2 * d:3 * d], col[fr], mode)
                    qk.append(t)
                logits = qk[0] @ qk[1].T / math.sqrt(hd)
                logits = logits.masked_fill(~allowed, float("-inf"))
                heads.append(torch.softmax(logits, dim=-1) @ v[b, :, sl])
            outs.append(torch.cat(heads, dim=-1))
        x = x + torch.stack(outs) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = F.layer_norm(x, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], cfg.norm_eps)
        x = x + F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]) @ sd[p + "mlp.fc2.weight"].T \
            + sd[p + "mlp.fc2.bias"]
    x = x.reshape(B, T, N + 2, D)[:, :, 2:]
    x = F.layer_norm(x, (D,), sd["predictor_norm.weight"], sd["predictor_norm.bias"], cfg.norm_eps)
    return x @ sd["predictor_proj.weight"].T + sd["predictor_proj.bias"]


@pytest.mark.parametrize("mode", ["rope_compatible", "rope_rotary"])
@pytest.mark.parametrize("grid", [(4, 4), (2, 3)])
def test_forward_matches_float64_reference(mode, grid):
    """Includes a non-square grid smaller than the reference 4x4 (positions rescaled by 4/H', 4/W')."""
    model = tiny(position=mode)
    N = grid[0] * grid[1]
    frames, actions, states = inputs(B=2, T=3, N=N)
    ours = model(frames, actions, states, grid=grid)
    ref = reference_forward(model, frames, actions, states, grid)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Block-causal attention
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["actions", "states", "frames"])
def test_changing_step_t_changes_no_earlier_output(what):
    model = tiny()
    frames, actions, states = inputs(T=5)
    base = model(frames, actions, states)
    t = 2
    changed = {"frames": frames.clone(), "actions": actions.clone(), "states": states.clone()}
    changed[what][:, t] += 3.0
    out = model(changed["frames"], changed["actions"], changed["states"])
    assert torch.equal(out[:, :t], base[:, :t]), f"changing {what} at step {t} leaked into earlier steps"
    # ... while step t itself and the later steps do react (so the test can fail the other way too).
    for later in range(t, 5):
        assert (out[:, later] - base[:, later]).abs().max() > 1e-4


def test_flattened_frames_like_the_public_forward():
    model = tiny()
    frames, actions, states = inputs(T=3)
    flat = model(frames.flatten(1, 2), actions, states)
    assert flat.shape == (2, 3 * 16, ENC_DIM)
    torch.testing.assert_close(flat, model(frames, actions, states).flatten(1, 2))
    with pytest.raises(ValueError, match="not a multiple"):
        model(frames.flatten(1, 2)[:, :47], actions, states)


def test_block_causal_mask_shape_and_pattern():
    model = tiny()
    mask = model.block_causal_mask(new_steps=2, cached_steps=1, tokens_per_step=3, device="cpu")
    assert mask.shape == (6, 9)
    assert mask[0].tolist() == [True] * 6 + [False] * 3  # step 1 sees steps 0, 1
    assert mask[5].tolist() == [True] * 9  # step 2 sees everything
    assert model.block_causal_mask(1, 4, 3, "cpu") is None  # a single new step sees all cached steps


# ------------------------------------------------------------------------------------------------
# KV cache
# ------------------------------------------------------------------------------------------------


def test_step_by_step_with_cache_equals_full_forward():
    model = tiny()
    frames, actions, states = inputs(T=5)
    full = model(frames, actions, states)
    cache = model.new_cache()
    parts = [model(frames[:, :2], actions[:, :2], states[:, :2], cache=cache)]  # two steps at once, then one by one
    for t in range(2, 5):
        parts.append(model(frames[:, t:t + 1], actions[:, t:t + 1], states[:, t:t + 1], cache=cache))
    assert cache.steps == 5
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("context,horizon", [(1, 4), (2, 3)])
def test_cached_rollout_equals_full_recomputation(context, horizon):
    model = tiny()
    frames, actions, states = inputs(T=context + horizon - 1)
    frames = normalize_latents(frames)
    cached = model.rollout(frames[:, :context], actions, states, use_cache=True)
    full = model.rollout(frames[:, :context], actions, states, use_cache=False)
    assert cached.shape == (2, horizon, 16, ENC_DIM)
    rel = (cached - full).norm() / full.norm()
    assert rel <= 1e-5, f"relative difference {rel:.2e}"
    # Step h of the rollout really depends on the earlier imagined frames (the feedback is used).
    assert not torch.allclose(cached[:, -1], normalize_latents(model(frames[:, :1], actions[:, -1:], states[:, -1:]))[:, 0])


def test_expanded_cache_shares_one_context_across_samples():
    """Planner pattern: feed the observed past once, expand to many candidate action sequences."""
    model = tiny()
    frames, actions, states = inputs(B=1, T=3)
    frames = normalize_latents(frames)
    prefix = model.new_cache()
    model(frames[:, :2], actions[:, :2], states[:, :2], cache=prefix)
    candidates = torch.randn(6, 3, 7)  # action after the last observed frame + 2 imagined steps
    cand_states = states[:, 2:3].expand(6, 1, 7)
    shared = model.rollout(frames[:, 2:3].expand(6, -1, -1, -1), candidates, cand_states,
                           state_update=apply_action, cache=prefix.expand(6))
    assert prefix.steps == 2 and prefix.batch_size == 1  # the given cache is left as it was
    for i in range(6):
        alone = model.rollout(frames, torch.cat([actions[:, :2], candidates[i:i + 1]], dim=1), states,
                              state_update=apply_action, use_cache=False)
        torch.testing.assert_close(shared[i], alone[0], rtol=1e-5, atol=1e-5)


def test_rollout_integrates_missing_states_with_state_update():
    model = tiny()
    frames, actions, states = inputs(T=3)
    s1 = apply_action(states[:, 0], actions[:, 0])
    s2 = apply_action(s1, actions[:, 1])
    explicit = model.rollout(frames[:, :1], actions, torch.stack([states[:, 0], s1, s2], dim=1))
    integrated = model.rollout(frames[:, :1], actions, states[:, :1], state_update=apply_action)
    torch.testing.assert_close(integrated, explicit)
    with pytest.raises(ValueError, match="state_update"):
        model.rollout(frames[:, :1], actions, states[:, :1])


def test_gradients_flow_through_cached_rollout():
    model = tiny().train()
    frames, actions, states = inputs(T=3)
    model.rollout(frames[:, :1], actions, states).abs().mean().backward()
    assert model.action_encoder.weight.grad.abs().sum() > 0
    assert model.predictor_blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_extrinsics_token_when_enabled():
    model = tiny(use_extrinsics=True, extrinsics_dim=6)
    frames, actions, states = inputs(T=2)
    extr = torch.randn(2, 2, 6)
    out = model(frames, actions, states, extrinsics=extr)
    extr2 = extr.clone()
    extr2[:, 1] += 1
    out2 = model(frames, actions, states, extrinsics=extr2)
    assert torch.equal(out[:, 0], out2[:, 0]) and not torch.allclose(out[:, 1], out2[:, 1])
    with pytest.raises(ValueError, match="use_extrinsics"):
        model(frames, actions, states)


def test_bad_inputs_fail_with_clear_messages():
    model = tiny()
    frames, actions, states = inputs()
    with pytest.raises(ValueError, match=r"actions must have shape \(B=2, T=4, 7\)"):
        model(frames, actions[:, :3], states)
    with pytest.raises(ValueError, match="enc_dim"):
        model(frames[..., :8], actions, states)
    with pytest.raises(ValueError, match="not a square grid"):
        model(frames[:, :, :6], actions, states)
    with pytest.raises(ValueError, match="cache.expand"):
        cache = model.new_cache()
        model(frames[:1], actions[:1], states[:1], cache=cache)
        model(frames, actions, states, cache=cache)
    with pytest.raises(ConfigError, match="divisible"):
        ac_predictor_config("tiny", enc_dim=8, dim=50, heads=4)


def test_paper_size_config():
    cfg = ac_predictor_config("large", enc_dim=1408)
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.mlp_hidden, cfg.action_dim, cfg.state_dim) == (1024, 24, 16, 4096, 7, 7)
    assert cfg.reference_grid == 16


# ------------------------------------------------------------------------------------------------
# Public checkpoint layout
# ------------------------------------------------------------------------------------------------


def public_layout_dict(enc_dim=ENC_DIM, dim=48, depth=2, mlp=96, action_dim=7, prefix="module.backbone."):
    """A synthetic public AC predictor dict built from the documented key names (not from our model)."""
    g = torch.Generator().manual_seed(1)
    shapes = {"predictor_embed": (dim, enc_dim), "action_encoder": (dim, action_dim),
              "state_encoder": (dim, action_dim), "extrinsics_encoder": (dim, action_dim - 1),
              "predictor_norm": (dim,), "predictor_proj": (enc_dim, dim)}
    for i in range(depth):
        b = f"predictor_blocks.{i}."
        shapes.update({b + "norm1": (dim,), b + "attn.qkv": (3 * dim, dim), b + "attn.proj": (dim, dim),
                       b + "norm2": (dim,), b + "mlp.fc1": (mlp, dim), b + "mlp.fc2": (dim, mlp)})
    sd = {}
    for name, shape in shapes.items():
        sd[f"{prefix}{name}.weight"] = torch.randn(*shape, generator=g) * 0.05
        sd[f"{prefix}{name}.bias"] = torch.randn(shape[0], generator=g) * 0.05
    return sd


def test_public_layout_loads_into_our_model(tmp_path):
    public = public_layout_dict()
    path = tmp_path / "ac.pt"
    torch.save({"predictor": public, "epoch": 7}, path)
    model = load_ac_predictor(path, heads=4, img_size=64)
    assert (model.config.dim, model.config.depth, model.config.enc_dim) == (48, 2, ENC_DIM)
    assert torch.equal(model.action_encoder.weight, public["module.backbone.action_encoder.weight"])
    assert torch.equal(model.predictor_blocks[1].attn.qkv.bias, public["module.backbone.predictor_blocks.1.attn.qkv.bias"])


def test_key_conversion_round_trip():
    model = tiny()
    ours = model.state_dict()
    public = ac_predictor_to_public(ours)
    assert all(k.startswith("module.backbone.") for k in public)
    back = ac_predictor_from_public(public)
    assert back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)
    # Prefixes in either order / only one of them are accepted too.
    assert ac_predictor_from_public({"backbone.module." + k: v for k, v in ours.items()}).keys() == ours.keys()
    cfg = infer_ac_predictor_config(public, heads=4, img_size=64)
    assert cfg == model.config


def test_save_and_load_keep_outputs(tmp_path):
    model = tiny(position="rope_rotary", action_dim=3, state_dim=5)
    save_ac_predictor(tmp_path / "ac.pt", model, epoch=1)
    loaded = load_ac_predictor(tmp_path / "ac.pt")
    assert loaded.config == model.config
    frames, actions, states = inputs(A=3, S=5)
    torch.testing.assert_close(loaded(frames, actions, states), model(frames, actions, states))


def test_loading_a_non_ac_dict_names_the_missing_keys(tmp_path):
    torch.save({"predictor": {"module.predictor_embed.weight": torch.zeros(4, 4)}}, tmp_path / "p.pt")
    with pytest.raises(WeightsError, match="action_encoder.weight"):
        load_ac_predictor(tmp_path / "p.pt")


# ------------------------------------------------------------------------------------------------
# Residual (predict-the-change) option
# ------------------------------------------------------------------------------------------------


def test_untrained_residual_predictor_copies_its_input():
    model = tiny(residual=True)
    frames, actions, states = inputs()
    torch.testing.assert_close(model(frames, actions, states), frames)
    # Once its projection has weights, the output is the input plus an action-dependent change.
    torch.nn.init.normal_(model.predictor_proj.weight, std=0.02)
    out = model(frames, actions, states)
    other = model(frames, actions + 1.0, states)
    assert not torch.allclose(out, frames) and not torch.allclose(out, other)


def test_residual_cached_rollout_equals_full_recomputation_and_saves(tmp_path):
    model = tiny(residual=True)
    torch.nn.init.normal_(model.predictor_proj.weight, std=0.05)
    frames, actions, states = inputs(T=4)
    frames = normalize_latents(frames)
    cached = model.rollout(frames[:, :1], actions, states, use_cache=True)
    full = model.rollout(frames[:, :1], actions, states, use_cache=False)
    assert (cached - full).norm() / full.norm() <= 1e-5
    save_ac_predictor(tmp_path / "ac.pt", model)
    loaded = load_ac_predictor(tmp_path / "ac.pt")
    assert loaded.config.residual
    torch.testing.assert_close(loaded(frames, actions, states), model(frames, actions, states))
