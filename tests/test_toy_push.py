"""The built-in toy-push world: determinism, pushing, walls, rendering, replay, success tests."""

import math

import numpy as np
import pytest

from vjepa2.world_model.envs.toy_push import (EFFECTOR_RGB, ToyPushConfig, ToyPushEnv, action_from_robot,
                                              push_success, reach_success, robot_from_xy)


def env_at(state, **cfg):
    env = ToyPushEnv(ToyPushConfig(**cfg))
    env.reset(options={"state": state})
    return env


def gap(env):
    """Distance between effector surface and block surface (negative = overlap)."""
    depth, _, _ = env._penetration()
    return -depth


def test_same_seed_same_episode_and_different_seeds_differ():
    def run(seed):
        env = ToyPushEnv(ToyPushConfig(size=32))
        obs, info = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        frames, states = [obs], [info["state"]]
        for _ in range(10):
            obs, _, _, _, info = env.step(env.sample_action(rng))
            frames.append(obs)
            states.append(info["state"])
        return np.stack(frames), np.stack(states)

    f1, s1 = run(3)
    f2, s2 = run(3)
    f3, s3 = run(4)
    assert np.array_equal(f1, f2) and np.array_equal(s1, s2)
    assert not np.array_equal(s1, s3)


def test_random_starts_are_inside_and_not_touching():
    env = ToyPushEnv()
    for seed in range(50):
        env.reset(seed=seed)
        s = env.get_state()
        assert np.all((s[:4] > 0) & (s[:4] < 1)) and gap(env) > 0


def test_straight_push_moves_the_block_without_overlap():
    env = env_at([0.2, 0.5, 0.5, 0.5, 0.0])
    for _ in range(6):
        _, _, _, _, info = env.step(np.array([0.075, 0.0]))
        assert gap(env) > -1e-9
    s = env.get_state()
    assert s[0] == pytest.approx(0.65)  # the effector moved the full distance ...
    assert s[2] > 0.7 and s[3] == pytest.approx(0.5) and s[4] == pytest.approx(0.0)  # ... pushing the block straight
    assert info["contact"]


def test_off_centre_push_turns_the_block():
    env = env_at([0.2, 0.45, 0.5, 0.5, 0.0])
    for _ in range(5):
        env.step(np.array([0.075, 0.0]))
    assert env.get_state()[4] > 0.1  # pushed below the centre -> counter-clockwise


def test_block_stops_at_the_wall_and_stops_the_effector():
    env = env_at([0.6, 0.5, 0.8, 0.5, 0.0])
    for _ in range(10):
        env.step(np.array([0.075, 0.0]))
        assert gap(env) > -1e-9
    s = env.get_state()
    h, r = env.config.block_half_size, env.config.effector_radius
    assert s[2] == pytest.approx(1 - h)
    assert s[0] == pytest.approx(1 - 2 * h - r, abs=1e-6)


def test_actions_are_clipped_and_validated():
    env = env_at([0.5, 0.5, 0.2, 0.2, 0.0])
    env.step(np.array([1.0, -1.0]))
    np.testing.assert_allclose(env.get_state()[:2], [0.575, 0.425])
    with pytest.raises(ValueError, match=r"\(dx, dy\)"):
        env.step(np.array([0.1, 0.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))


def test_render_shows_the_objects_with_soft_edges():
    env = env_at([0.25, 0.75, 0.7, 0.3, 0.4], size=64)
    img = env.render()
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    # effector at x=0.25, y=0.75 -> column 16, row 16 (row 0 is the far edge y = 1)
    np.testing.assert_allclose(img[15:17, 15:17].reshape(-1, 3).mean(0), EFFECTOR_RGB, atol=3)
    block_pixel = img[int((1 - 0.3) * 64) - 1, int(0.7 * 64) - 5]
    assert block_pixel[2] > 150 and block_pixel[0] < 90
    # anti-aliasing: the effector's edge has pixels between table and effector colour
    red = img[..., 0].astype(int) - img[..., 2].astype(int)
    assert ((red > 60) & (red < 140)).sum() > 0
    assert ToyPushEnv(ToyPushConfig(size=96)).reset(seed=0)[0].shape == (96, 96, 3)


def test_set_state_replays_recorded_actions_exactly():
    """The planner makes reachable goals by replaying K random actions from a start state."""
    env = ToyPushEnv(ToyPushConfig(size=32))
    env.reset(seed=11)
    start = env.get_state()
    rng = np.random.default_rng(0)
    actions = [env.sample_action(rng) for _ in range(15)]
    for a in actions:
        goal_obs, *_ = env.step(a)
    goal = env.get_state()
    env.set_state(start)
    for a in actions:
        obs, *_ = env.step(a)
    assert np.array_equal(env.get_state(), goal) and np.array_equal(obs, goal_obs)


def test_success_tests_and_goal_reward():
    goal = np.array([0.3, 0.3, 0.6, 0.6, math.pi - 0.05])
    assert reach_success([0.32, 0.3, 0, 0, 0], goal) and not reach_success([0.4, 0.3, 0, 0, 0], goal)
    assert push_success([0, 0, 0.61, 0.6, -math.pi + 0.05], goal)  # angle difference wraps to 0.1
    assert not push_success([0, 0, 0.61, 0.6, 0.0], goal)
    assert not push_success([0, 0, 0.7, 0.6, math.pi - 0.05], goal)
    env = ToyPushEnv(ToyPushConfig(task="reach"))
    env.reset(options={"state": [0.5, 0.5, 0.2, 0.2, 0.0], "goal": [0.55, 0.5, 0.2, 0.2, 0.0]})
    _, reward, terminated, truncated, _ = env.step(np.array([0.05, 0.0]))
    assert terminated and not truncated and reward == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"goals": 1})


def test_time_limit_truncates():
    env = ToyPushEnv(ToyPushConfig(max_episode_steps=2))
    env.reset(seed=0)
    assert not env.step(np.zeros(2))[3]
    assert env.step(np.zeros(2))[3]


def test_robot_convention_mapping():
    env = env_at([0.1, 0.9, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(env.robot_state(), [0.1, 0.9, 0, 0, 0, 0, 0])
    assert robot_from_xy(np.array([[0.01, -0.02]])).shape == (1, 7)
    np.testing.assert_allclose(action_from_robot(robot_from_xy(np.array([0.01, -0.02]))), [0.01, -0.02])
    with pytest.raises(ValueError, match="7-D"):
        action_from_robot(np.zeros(3))
