"""Frozen-encoder feature cache, the AC objective, `vjepa2 train-ac` (resume included), rollout errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vjepa2.cli import main
from vjepa2.config import ConfigError
from vjepa2.data.trajectories.trajectory import apply_action
from vjepa2.models import VisionEncoder, encoder_config
from vjepa2.models.ac_predictor import ACPredictor, ac_predictor_config, normalize_latents
from vjepa2.world_model.collect import ToyPushSource, collect
from vjepa2.world_model.envs.toy_push import ToyPushConfig
from vjepa2.world_model.feature_cache import (build_feature_cache, encode_frames, feature_metadata, preprocess_frames,
                                         read_features)
from vjepa2.world_model.config import ACLossConfig, load_ac_config
from vjepa2.world_model.evaluate import rollout_errors
from vjepa2.world_model.model import load_world_model
from vjepa2.world_model.train import ACObjective, FeatureWindows, rms_scale, train_ac


def small_encoder(seed=0):
    torch.manual_seed(seed)
    return VisionEncoder(encoder_config("tiny", dim=48, depth=1, heads=2, mlp_hidden=96)).eval()


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    collect(ToyPushSource(ToyPushConfig(size=32)), root / "data", episodes=4, steps=7, seed=0, progress=False)
    collect(ToyPushSource(ToyPushConfig(size=32)), root / "short", episodes=1, steps=2, seed=50, progress=False)
    return root


# ------------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------------


def test_each_frame_is_encoded_as_a_duplicated_tubelet():
    enc = small_encoder()
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    ours = encode_frames(enc, frames, img_size=32, batch_size=2)
    x = preprocess_frames(frames, 32)
    with torch.no_grad():
        reference = torch.cat([enc(torch.stack([x[i], x[i]], dim=1)[None]) for i in range(5)])
    assert ours.shape == (5, 4, 48)
    torch.testing.assert_close(ours, reference)


def test_feature_cache_is_reused_refreshed_and_keyed_by_encoder(toy_data, tmp_path):
    enc = small_encoder()
    first = build_feature_cache(toy_data / "data", enc, tmp_path, img_size=32, min_steps=4, progress=False)
    assert len(first.files) == 4 and not first.skipped
    stamps = [f.stat().st_mtime_ns for f in first.files]
    again = build_feature_cache(toy_data / "data", enc, tmp_path, img_size=32, min_steps=4, progress=False)
    assert [f.stat().st_mtime_ns for f in again.files] == stamps  # nothing re-encoded
    # Editing a trajectory re-encodes that one only.
    states_file = toy_data / "data" / "episode_000001" / "states.npy"
    np.save(states_file, np.load(states_file) + 0.0)
    edited = build_feature_cache(toy_data / "data", enc, tmp_path, img_size=32, min_steps=4, progress=False)
    changed = [a != b for a, b in zip(stamps, [f.stat().st_mtime_ns for f in edited.files])]
    assert changed == [False, True, False, False]
    # Another encoder never reads these features.
    other = build_feature_cache(toy_data / "data", small_encoder(seed=1), tmp_path, img_size=32, min_steps=4,
                                progress=False)
    assert other.directory != first.directory
    window = read_features(first.files[0], 2, 5)
    assert window["features"].shape == (3, 4, 48) and window["actions"].shape == (2, 7)
    assert window["extra.env_states"].shape == (3, 5)
    meta = feature_metadata(first.files[0])
    assert meta["length"] == 8 and meta["grid"] == [2, 2]


def test_short_trajectories_are_skipped_and_reported(toy_data, tmp_path):
    result = build_feature_cache(toy_data / "short", small_encoder(), tmp_path, img_size=32, min_steps=4,
                                 progress=False)
    assert result.files == [] and "3 steps < 4 needed" in result.skipped[0].reason


# ------------------------------------------------------------------------------------------------
# Objective
# ------------------------------------------------------------------------------------------------


def tiny_predictor(enc_dim=24):
    return ACPredictor(ac_predictor_config("tiny", enc_dim=enc_dim, dim=48, depth=1, heads=4, mlp_hidden=96,
                                           img_size=32))


def test_objective_is_teacher_forcing_plus_rollout_l1():
    torch.manual_seed(0)
    predictor = tiny_predictor()
    feats, actions, states = torch.randn(2, 4, 4, 24) * 3, torch.randn(2, 3, 7), torch.randn(2, 4, 7)
    out = ACObjective(predictor, ACLossConfig(rollout_steps=2)).losses(feats, actions, states)
    h = F.layer_norm(feats, (24,))
    tf = F.layer_norm(predictor(h[:, :-1], actions, states[:, :-1]), (24,))
    expected_tf = (tf - h[:, 1:]).abs().mean()
    # rollout, written out without the KV cache: frame 1 from frame 0, frame 2 from [frame 0, prediction 1]
    p1 = F.layer_norm(predictor(h[:, :1], actions[:, :1], states[:, :1])[:, -1], (24,))
    p2 = F.layer_norm(predictor(torch.stack([h[:, 0], p1], 1), actions[:, :2], states[:, :2])[:, -1], (24,))
    expected_ar = ((p1 - h[:, 1]).abs().mean() + (p2 - h[:, 2]).abs().mean()) / 2
    torch.testing.assert_close(out.teacher_forcing, expected_tf)
    torch.testing.assert_close(out.rollout, expected_ar, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, expected_tf + expected_ar, rtol=1e-5, atol=1e-6)
    l2 = ACObjective(predictor, ACLossConfig(loss_exp=2.0, rollout_steps=0)).losses(feats, actions, states)
    torch.testing.assert_close(l2.loss, ((tf - h[:, 1:]) ** 2).mean() / 2)


def test_change_weight_puts_the_loss_on_tokens_that_change():
    """loss.change_weight: token weights follow the target's change from the previous frame (mean 1
    per frame), and the weighted loss is their weighted mean of the plain per-token errors."""
    torch.manual_seed(0)
    predictor = tiny_predictor()
    feats, actions, states = torch.randn(2, 3, 4, 24), torch.randn(2, 2, 7), torch.randn(2, 3, 7)
    feats[:, 1, 1:] = feats[:, 0, 1:]  # frame 0 -> 1: only token 0 changes
    plain = ACObjective(predictor, ACLossConfig(rollout_steps=0))
    weighted = ACObjective(predictor, ACLossConfig(rollout_steps=0, change_weight=3.0))
    h = normalize_latents(feats)
    w = weighted.change_weights(h)
    assert w.shape == (2, 2, 4)
    torch.testing.assert_close(w.mean(-1), torch.ones(2, 2))
    # token 0 holds all the change: weight (1 + 3 * 4) / (4 + 3 * 4) * 4 = 3.25, the others 0.25
    torch.testing.assert_close(w[:, 0], torch.tensor([3.25, 0.25, 0.25, 0.25]).expand(2, 4))
    assert plain.change_weights(h) is None
    z = normalize_latents(predictor(h[:, :-1], actions, states[:, :-1]))
    per_token = (z - h[:, 1:]).abs().mean(-1)
    torch.testing.assert_close(weighted.losses(feats, actions, states).loss, (w * per_token).mean())
    torch.testing.assert_close(plain.losses(feats, actions, states).loss, per_token.mean())


def test_objective_learns_to_use_the_actions(one_thread):
    """On data where the next latent is the current one shifted by the action, 150 steps drive
    the loss far below what an action-blind guess (copy the current latent) reaches."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = ACObjective(tiny_predictor(enc_dim=8), ACLossConfig(rollout_steps=0))
    base = torch.randn(32, 1, 4, 8, generator=g)
    actions = torch.randn(32, 1, 7, generator=g)
    nxt = base.clone()
    nxt[..., :7] += 2.0 * actions[:, :, None, :]  # every token moves with the action
    feats = torch.cat([base, nxt], dim=1)
    states = torch.zeros(32, 2, 7)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model.losses(feats, actions, states).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    h = normalize_latents(feats)
    copy_error = float((h[:, 1] - h[:, 0]).abs().mean())
    assert float(loss.detach()) < 0.2 * copy_error


# ------------------------------------------------------------------------------------------------
# The train-ac command
# ------------------------------------------------------------------------------------------------


def tiny_overrides(out, extra=()):
    return ["encoder.weights=random:tiny", "encoder.img_size=32", "model.dim=48", "model.heads=4", "model.depth=1",
            "model.mlp_hidden=96", "batch_size=4", "data.clip_steps=4", "loss.rollout_steps=2",
            "schedule.iterations=4", "schedule.warmup=1", "schedule.cooldown=1", "checkpoint.every=2",
            "log.every=1", "log.tensorboard=false", "log.progress_bar=false", *extra]


def test_train_ac_cli_end_to_end(toy_data, tmp_path, one_thread):
    out = tmp_path / "run"
    code = main(["train-ac", "--data", str(toy_data / "data"), "--out", str(out), *tiny_overrides(out)])
    assert code == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002.pt", "step-00000004.pt"]
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,loss_teacher_forcing,loss_rollout") and len(rows) == 5
    assert (out / "loss.png").is_file() and (out / "config.yaml").is_file()
    # The run's checkpoint is a complete world model: encoder rebuilt, predictor loaded.
    world = load_world_model(out)
    # Input scales were set from the data (1 / RMS of the varying action / state entries) and saved.
    from vjepa2.data.trajectories.trajectory import find_trajectories, read_trajectory
    trajs = [read_trajectory(t) for t in find_trajectories(toy_data / "data")]
    acts = np.concatenate([t.actions for t in trajs])
    moving = acts[:, acts.std(axis=0) > 1e-8]
    assert world.predictor.config.action_scale == pytest.approx(1 / np.sqrt((moving ** 2).mean()), rel=0.5)
    assert world.predictor.config.action_scale > 3  # toy-push steps are a few hundredths
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    latents = world.encode(frames)
    assert latents.shape == (2, 4, 192)
    imagined = world.predictor.rollout(latents[:1, None], torch.zeros(1, 3, 7), torch.zeros(1, 3, 7))
    assert imagined.shape == (1, 3, 4, 192)
    # eval-ac prints the table and draws the nearest-neighbour strip
    strip = tmp_path / "strip.png"
    assert main(["eval-ac", "--run", str(out), "--data", str(toy_data / "data"), "--horizons", "1", "2",
                 "--strip", str(strip)]) == 0
    assert strip.stat().st_size > 1000


def test_resume_continues_exactly(toy_data, tmp_path, monkeypatch, one_thread):
    straight = tmp_path / "straight"
    train_ac(load_ac_config(None, tiny_overrides(straight), **{"data.trajectories": str(toy_data / "data"),
                                                                "output_dir": str(straight)}))
    interrupted = tmp_path / "interrupted"
    cfg = load_ac_config(None, tiny_overrides(interrupted), **{"data.trajectories": str(toy_data / "data"),
                                                               "output_dir": str(interrupted)})
    original = FeatureWindows.batch

    def crash_at_step_3(self, step, *args, **kwargs):
        if step == 2:
            raise KeyboardInterrupt("simulated crash after the step-2 checkpoint")
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(FeatureWindows, "batch", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_ac(cfg)
    monkeypatch.setattr(FeatureWindows, "batch", original)
    with pytest.raises(FileExistsError, match="--resume"):
        train_ac(cfg)
    summary = train_ac(cfg, resume=True)
    assert summary.start_step == 2 and summary.end_step == 4
    a = torch.load(straight / "checkpoints" / "step-00000004.pt", weights_only=True)
    b = torch.load(interrupted / "checkpoints" / "step-00000004.pt", weights_only=True)
    for key in a["predictor"]:
        assert torch.equal(a["predictor"][key], b["predictor"][key]), key
    losses = lambda d: [r.split(",")[1] for r in (d / "log.csv").read_text().splitlines()[1:]]  # noqa: E731
    assert losses(straight) == losses(interrupted)


def test_config_errors_name_the_key(toy_data, one_thread):
    with pytest.raises(ConfigError, match="unknown config key loss.rollout_step"):
        load_ac_config(None, ["loss.rollout_step=3"], **{"data.trajectories": "x"})
    with pytest.raises(ConfigError, match="rollout_steps=5 needs clips of at least 6"):
        load_ac_config(None, ["loss.rollout_steps=5", "data.clip_steps=4"], **{"data.trajectories": "x"})
    with pytest.raises(ConfigError, match="data.trajectories"):
        load_ac_config(None, [])
    cfg = load_ac_config(None, ["model.action_dim=2", "schedule.iterations=1", "schedule.warmup=0",
                                "schedule.cooldown=0", "encoder.img_size=32", "model.depth=1", "log.progress_bar=false"],
                         **{"data.trajectories": str(toy_data / "data"), "output_dir": str(toy_data / "bad")})
    with pytest.raises(ConfigError, match="model.action_dim=2 but the trajectories hold 7-D actions"):
        train_ac(cfg)


def test_rollout_errors_against_a_manual_computation(toy_data, tmp_path):
    torch.manual_seed(0)
    files = build_feature_cache(toy_data / "data", small_encoder(), tmp_path, img_size=32, progress=False).files[:1]
    predictor = ACPredictor(ac_predictor_config("tiny", enc_dim=48, dim=48, depth=1, heads=4, mlp_hidden=96,
                                                img_size=32)).eval()
    errors = rollout_errors(predictor, files, horizons=(1, 3), stride=10, progress=False)  # one window: start 0
    w = read_features(files[0], 0, 4)
    h = normalize_latents(w["features"])[None]
    with torch.no_grad():
        imagined = predictor.rollout(h[:, :1], w["actions"][None, :3], w["states"][None, :3], use_cache=False)
        reversed_actions = predictor.rollout(h[:, :1], w["actions"][None, :3].flip(1), w["states"][None, :3],
                                             use_cache=False)
    assert errors["copy"][3] == pytest.approx(float((h[0, 0] - h[0, 3]).abs().mean()), rel=1e-5)
    assert errors["model"][1] == pytest.approx(float((imagined[0, 0] - h[0, 1]).abs().mean()), rel=1e-4)
    assert errors["model"][3] == pytest.approx(float((imagined[0, 2] - h[0, 3]).abs().mean()), rel=1e-4)
    # a single window is "shuffled" by reversing its actions
    assert errors["shuffled"][3] == pytest.approx(float((reversed_actions[0, 2] - h[0, 3]).abs().mean()), rel=1e-4)
    # with integrated states, the toy effector states follow from the actions (no walls hit here)
    integrated = rollout_errors(predictor, files, horizons=(1, 3), stride=10, state_update=apply_action,
                                progress=False)
    assert integrated["model"][3] == pytest.approx(errors["model"][3], rel=1e-3)


def test_latent_bank_finds_exact_frames_and_can_exclude_a_trajectory(toy_data, tmp_path):
    from vjepa2.world_model.strip import LatentBank

    files = build_feature_cache(toy_data / "data", small_encoder(), tmp_path, img_size=32, progress=False).files
    bank = LatentBank(files)
    query = normalize_latents(read_features(files[2], 3, 5)["features"])
    assert bank.nearest(query) == [(2, 3), (2, 4)]
    assert all(i != 2 for i, _ in bank.nearest(query, exclude_file=files[2]))
    frame = bank.frame(2, 3)
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8


def test_rms_scale_ignores_constant_columns():
    values = torch.tensor([[0.1, 0.0, 5.0], [-0.1, 0.0, 5.0], [0.1, 0.0, 5.0]])
    assert rms_scale(values) == pytest.approx(10.0)
    assert rms_scale(torch.zeros(4, 3)) == 1.0


def test_eval_ac_states_follow_what_the_actions_are():
    """Integrating states from actions holds only where actions are state deltas (same width);
    elsewhere (e.g. actions that are positions, states that are observations) eval-ac uses the
    recorded states and says so."""
    from vjepa2.world_model.evaluate import imagined_states

    update, said = imagined_states("auto", state_dim=7, action_dim=7)
    assert update is apply_action and "integrated" in said
    update, said = imagined_states("auto", state_dim=5, action_dim=2)
    assert update is None and "recorded" in said
    hold, _ = imagined_states("hold", 5, 2)
    state = torch.randn(3, 5)
    assert torch.equal(hold(state, torch.randn(3, 2)), state)
    with pytest.raises(ValueError, match="--states recorded"):
        imagined_states("integrate", 5, 2)
    target, said = imagined_states("target", 5, 2)  # absolute positions of the first two entries
    assert target(state, torch.ones(3, 2))[:, :2].eq(1).all() and torch.equal(target(state, torch.ones(3, 2))[:, 2:],
                                                                              state[:, 2:])
    with pytest.raises(ValueError, match="only 2"):
        imagined_states("target", 2, 5)


def test_a_world_model_trained_with_a_relative_encoder_path_loads_from_anywhere(toy_data, tmp_path, monkeypatch,
                                                                               one_thread):
    from vjepa2.models import VisionEncoder, encoder_config
    from vjepa2.weights import save_public

    work = tmp_path / "work"
    work.mkdir()
    save_public(work / "enc.pt", VisionEncoder(encoder_config("tiny", depth=1)))
    monkeypatch.chdir(work)
    overrides = [o for o in tiny_overrides("run") if not o.startswith("encoder.weights")]
    assert main(["train-ac", "--data", str(toy_data / "data"), "--out", "run", *overrides,
                 "encoder.weights=enc.pt"]) == 0
    monkeypatch.chdir(tmp_path)  # elsewhere: the recorded encoder path must not depend on the working directory
    world = load_world_model(work / "run")
    assert world.encode(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 4, 192)
