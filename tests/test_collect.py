"""`vjepa2 collect`: toy-push trajectories in our format, resume, and the Gymnasium adapter."""

import numpy as np
import pytest

from vjepa2.cli import main
from vjepa2.data.trajectories.trajectory import read_trajectory
from vjepa2.world_model.collect import collect, record_episode
from vjepa2.world_model.envs.toy_push import ToyPushConfig, ToyPushSource, render_state


def test_cli_writes_toy_push_trajectories(tmp_path):
    out = tmp_path / "data"
    code = main(["collect", "--env", "toy-push", "--episodes", "3", "--steps", "5", "--out", str(out),
                 "--size", "32", "--seed", "7"])
    assert code == 0
    episodes = sorted(out.glob("episode_*"))
    assert [p.name for p in episodes] == ["episode_000000", "episode_000001", "episode_000002"]
    traj = read_trajectory(episodes[1])
    assert traj.frames.shape == (6, 32, 32, 3) and traj.states.shape == (6, 7) and traj.actions.shape == (5, 7)
    env_states = traj.extras["env_states"]
    assert env_states.shape == (6, 5)
    # Stored pieces agree with each other: robot state = effector, frames = renders of the world state.
    np.testing.assert_allclose(traj.states[:, :2], env_states[:, :2], atol=1e-6)
    assert np.all(traj.states[:, 2:] == 0) and np.all(traj.actions[:, 2:] == 0)
    assert np.abs(traj.actions[:, :2]).max() <= 0.075 + 1e-7
    cfg = ToyPushConfig(size=32)
    for t in (0, 5):
        assert np.array_equal(traj.frames[t], render_state(env_states[t], cfg))
    assert traj.meta["episode_seed"] == 8 and traj.fps == 10


def test_collection_is_seeded_and_resumes(tmp_path):
    source = ToyPushSource(ToyPushConfig(size=16))
    paths = collect(source, tmp_path / "a", episodes=2, steps=4, seed=1, progress=False)
    again = collect(ToyPushSource(ToyPushConfig(size=16)), tmp_path / "b", episodes=2, steps=4, seed=1, progress=False)
    for p, q in zip(paths, again):
        assert np.array_equal(np.load(p / "states.npy"), np.load(q / "states.npy"))
    # A rerun keeps existing episodes (resume after a crash) and adds missing ones.
    stamp = (paths[0] / "states.npy").stat().st_mtime_ns
    more = collect(source, tmp_path / "a", episodes=3, steps=4, seed=1, progress=False)
    assert len(more) == 3 and (paths[0] / "states.npy").stat().st_mtime_ns == stamp


def test_random_policy_actually_pushes_the_block():
    source = ToyPushSource(ToyPushConfig(size=16))
    moved = 0
    for seed in range(20):
        env_states = record_episode(source, 32, seed)["extras"]["env_states"]
        moved += np.linalg.norm(env_states[-1, 2:4] - env_states[0, 2:4]) > 0.02
    assert moved >= 6, f"only {moved}/20 random episodes moved the block"


def test_unknown_env_is_a_clear_error(capsys):
    assert main(["collect", "--env", "cartpole", "--episodes", "1", "--steps", "1", "--out", "/tmp/x"]) == 2
    assert "toy-push" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Gymnasium adapter (skipped when gymnasium is not installed)
# ------------------------------------------------------------------------------------------------


def make_dot_env(episode_length=100, discrete=False):
    gymnasium = pytest.importorskip("gymnasium")
    spaces = gymnasium.spaces

    class DotEnv(gymnasium.Env):
        """A dot moving on a 30x40 canvas by 2-D velocity actions; ends after ``episode_length`` steps."""

        metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

        def __init__(self, render_mode=None):
            self.render_mode = render_mode
            self.action_space = spaces.Discrete(3) if discrete else spaces.Box(-1.0, 1.0, (2,), np.float32)
            self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
            self.pos = np.zeros(2, np.float32)
            self.t = 0

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.pos = self.np_random.uniform(0.2, 0.8, 2).astype(np.float32)
            self.t = 0
            return self.pos.copy(), {}

        def step(self, action):
            self.pos = np.clip(self.pos + 0.05 * np.asarray(action, np.float32), 0, 1)
            self.t += 1
            return self.pos.copy(), 0.0, self.t >= episode_length, False, {}

        def render(self):
            img = np.zeros((30, 40, 3), np.uint8)
            img[int(self.pos[1] * 29), int(self.pos[0] * 39)] = 255
            return img

    return DotEnv


def test_gym_adapter_collects_resized_frames(tmp_path):
    from vjepa2.world_model.envs.gym_adapter import GymSource

    env_cls = make_dot_env(episode_length=3)
    source = GymSource(env_cls(render_mode="rgb_array"), size=16, name="Dot")
    paths = collect(source, tmp_path, episodes=2, steps=6, seed=0, progress=False)
    traj = read_trajectory(paths[0])
    # the episode ends after 3 steps: a shorter trajectory, not padding
    assert traj.frames.shape == (4, 16, 16, 3) and traj.states.shape == (4, 2) and traj.actions.shape == (3, 2)
    assert traj.fps == 20 and traj.meta["env"] == "gym:Dot"
    np.testing.assert_allclose(traj.states[1:], np.clip(traj.states[:-1] + 0.05 * traj.actions, 0, 1), atol=1e-6)


def test_gym_adapter_rejects_unsupported_envs():
    from vjepa2.world_model.envs.gym_adapter import GymSource

    with pytest.raises(ValueError, match="Box"):
        GymSource(make_dot_env(discrete=True)(render_mode="rgb_array"))
    with pytest.raises(ValueError, match="rgb_array"):
        GymSource(make_dot_env()(render_mode=None))


def test_gym_env_errors_name_the_env(tmp_path):
    gymnasium = pytest.importorskip("gymnasium")
    from vjepa2.world_model.envs.gym_adapter import GymSource

    class NoPygame(make_dot_env()):
        def render(self):
            raise gymnasium.error.DependencyNotInstalled("pygame is not installed")

    source = GymSource(NoPygame(render_mode="rgb_array"), size=16, name="Dot")
    with pytest.raises(ValueError, match="gym:Dot: pygame is not installed"):
        collect(source, tmp_path, episodes=1, steps=2, progress=False)
    assert not list(tmp_path.glob("episode_*"))  # nothing half-written
