"""Purposeful data and the published planning protocol's pieces on tiny fake envs: a policy plug-in
drives `collect`, Dict observations, frameskip, goals along held-out trajectories, a success test
per group of state entries (angles wrapped), the shortcut baseline."""

import json
import textwrap

import numpy as np
import pytest

from vjepa2.cli import main
from vjepa2.config import ConfigError
from vjepa2.data.trajectories.trajectory import read_trajectory
from vjepa2.world_model.collect import collect, make_source, record_episode
from vjepa2.world_model.envs.control import GymControl, SuccessGroup
from vjepa2.world_model.envs.toy_push import ToyPushSource
from vjepa2.world_model.plan_eval import (control_for, load_plan_eval_config, make_pairs, restore_start,
                                          run_baseline)
from vjepa2.world_model.policies import Policy, PolicyError

gymnasium = pytest.importorskip("gymnasium")

# A module the tests import by name: a Dict-observation env (registered as DictDot-v0 and
# PositionDict-v0) and policies of both shapes.
FAKES = '''
import gymnasium
import numpy as np
from gymnasium import spaces


class DictDot(gymnasium.Env):
    """A dot moved by velocity actions; observation {"proprio": position, "state": position + heading}."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 12}

    def __init__(self, render_mode=None, absolute=False):
        self.render_mode, self.absolute = render_mode, absolute
        self.action_space = spaces.Box(0.0, 1.0, (2,), np.float32) if absolute else \\
            spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Dict({"proprio": spaces.Box(0.0, 1.0, (2,), np.float64),
                                              "state": spaces.Box(-4.0, 4.0, (3,), np.float64)})

    def _obs(self):
        return {"proprio": self.pos.copy(), "state": np.array([*self.pos, self.heading])}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.heading = self.np_random.uniform(0.2, 0.8, 2), 0.0
        return self._obs(), {}

    def step(self, action):
        action = np.asarray(action, np.float64)
        new = action if self.absolute else self.pos + 0.05 * action
        self.heading = float(np.arctan2(*(new - self.pos)[::-1])) if np.any(new != self.pos) else self.heading
        self.pos = np.clip(new, 0.0, 1.0)
        return self._obs(), 0.0, False, False, {}

    def get_state(self):
        return self.pos.copy(), self.heading

    def set_state(self, state):
        self.pos, self.heading = state[0].copy(), state[1]

    def render(self):
        img = np.zeros((16, 16, 3), np.uint8)
        img[int(self.pos[1] * 15), int(self.pos[0] * 15)] = 255
        return img


gymnasium.register("DictDot-v0", entry_point=DictDot)
gymnasium.register("PositionDict-v0", entry_point=DictDot, kwargs={"absolute": True})


def go_right(info, rng):
    return np.array([1.0, 0.0])


class Wanderer:
    """stable-worldmodel's shape: set_env, reset, get_action(info)."""

    def set_env(self, env):
        self.env = env

    def reset(self, seed):
        self.heading = np.random.default_rng(seed).uniform(-np.pi, np.pi)

    def get_action(self, info):
        assert set(info) >= {"frame", "state", "env_state", "proprio", "rng"}
        self.heading += info["rng"].normal(0.0, 0.3)
        return np.array([np.cos(self.heading), np.sin(self.heading)])
'''


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    (tmp_path / "fakes_for_policies.py").write_text(textwrap.dedent(FAKES))
    monkeypatch.syspath_prepend(str(tmp_path))
    import fakes_for_policies

    return fakes_for_policies


def dict_source(fakes, **kwargs):
    return make_source("gym:fakes_for_policies:DictDot-v0", size=16, state_key="proprio", env_state_key="state",
                       **kwargs)


def test_a_policy_plug_in_drives_collect_from_the_command_line(fakes, tmp_path, capsys):
    out = tmp_path / "right"
    assert main(["collect", "--env", "gym:fakes_for_policies:DictDot-v0", "--state-key", "proprio",
                 "--env-state-key", "state", "--policy", "fakes_for_policies:go_right", "--episodes", "2",
                 "--steps", "5", "--size", "16", "--out", str(out)]) == 0
    traj = read_trajectory(out / "episode_000000")
    np.testing.assert_array_equal(traj.actions, np.tile([1.0, 0.0], (5, 1)))
    assert traj.states.shape == (6, 2) and traj.extras["env_states"].shape == (6, 3)  # proprio vs full state
    np.testing.assert_allclose(traj.extras["env_states"][:, :2], traj.states, atol=1e-6)
    described = json.loads((out / "collect.json").read_text())
    assert described["policy"] == "fakes_for_policies:go_right" and described["state_key"] == "proprio"
    # noise replaces some actions by uniform ones; a class policy sees the Dict entries
    noisy = record_episode(dict_source(fakes), 40, seed=0, policy=Policy("fakes_for_policies:go_right",
                                                                         dict_source(fakes), noise=0.5))
    changed = np.any(noisy["actions"] != [1.0, 0.0], axis=1).mean()
    assert 0.2 < changed < 0.8
    wandering = record_episode(dict_source(fakes), 6, seed=3, policy=Policy("fakes_for_policies:Wanderer",
                                                                            dict_source(fakes)))
    again = record_episode(dict_source(fakes), 6, seed=3, policy=Policy("fakes_for_policies:Wanderer",
                                                                        dict_source(fakes)))
    np.testing.assert_array_equal(wandering["actions"], again["actions"])  # seeded: reset(seed) and rng
    assert len({tuple(a) for a in wandering["actions"]}) == 6


def test_bad_policies_and_dict_keys_are_named(fakes, capsys):
    with pytest.raises(PolicyError, match="cannot import 'no_such_module'"):
        Policy("no_such_module:act", dict_source(fakes))
    with pytest.raises(PolicyError, match="has no 'nope'"):
        Policy("fakes_for_policies:nope", dict_source(fakes))
    with pytest.raises(PolicyError, match="MODULE:NAME"):
        Policy("go_right", dict_source(fakes))
    with pytest.raises(ValueError, match=r"Dict with keys \['proprio', 'state'\].*state_key"):
        make_source("gym:fakes_for_policies:DictDot-v0", size=16)
    with pytest.raises(ValueError, match=r"env_state_key 'pose' is not in the observation; its keys are"):
        make_source("gym:fakes_for_policies:DictDot-v0", size=16, state_key="proprio", env_state_key="pose")
    assert main(["collect", "--env", "gym:fakes_for_policies:DictDot-v0", "--episodes", "1", "--steps", "2",
                 "--out", "unused"]) == 2
    assert "state_key" in capsys.readouterr().err


def test_frameskip_holds_the_action_for_k_env_steps(fakes):
    one = dict_source(fakes)
    three = dict_source(fakes, frameskip=3)
    assert three.fps == pytest.approx(one.fps / 3)
    _, start, _ = three.reset(5)
    _, after, _, _ = three.step(np.array([1.0, -1.0]))
    one.reset(5)
    for _ in range(3):
        _, single, _, _ = one.step(np.array([1.0, -1.0]))
    np.testing.assert_allclose(after, single)
    np.testing.assert_allclose(after, np.clip(start + 3 * 0.05 * np.array([1.0, -1.0]), 0, 1), atol=1e-6)
    toy, toy2 = ToyPushSource(frameskip=2), ToyPushSource()
    toy.reset(1), toy2.reset(1)
    toy.step(np.array([0.03, 0.01]))
    toy2.step(np.array([0.03, 0.01])), toy2.step(np.array([0.03, 0.01]))
    np.testing.assert_array_equal(toy.env.get_state(), toy2.env.get_state())


def test_success_per_group_wraps_angles():
    turned = SuccessGroup(dims=(2,), tolerance=0.2, angle=True)
    assert turned.distance(np.array([0, 0, 3.1]), np.array([0, 0, -3.1])) == pytest.approx(2 * np.pi - 6.2)
    position = SuccessGroup(dims=(0, 1), tolerance=0.1)

    class Source:  # just enough of an episode source for GymControl
        low, high = np.zeros(2), np.ones(2)

    control = GymControl(Source(), success=(position, turned))
    control._env_state = np.array([0.5, 0.5, 3.1])
    assert control.success(np.array([0.55, 0.5, -3.1]))           # 0.05 away, angle 0.08 across +-pi
    assert not control.success(np.array([0.55, 0.5, 2.8]))        # angle 0.3 off
    assert not control.success(np.array([0.7, 0.5, 3.1]))         # position 0.2 off
    assert control.distance(np.array([0.5, 0.8, 0.0])) == pytest.approx(0.3)  # the first group's
    with pytest.raises(ConfigError, match="tolerance must be positive"):
        load_plan_eval_config(None, ["success=[{dims: [0], tolerance: 0}]"], env="gym:X")


def test_goals_lie_along_held_out_trajectories_and_the_shortcut_walks_there(fakes):
    cfg = load_plan_eval_config(None, ["success=[{dims: [0, 1], tolerance: 0.02}, {dims: [2], tolerance: 3.2,"
                                       " angle: true}]", "goal_policy=fakes_for_policies:Wanderer",
                                       "start_steps=[2, 6]", "shortcut_dims=[0, 1]", "state_key=proprio",
                                       "env_state_key=state"],
                                env="gym:fakes_for_policies:PositionDict-v0", pairs=4, size=16, goal_steps=3)
    control = control_for(cfg)
    pairs, _ = make_pairs(control, cfg)
    assert {len(p.start_actions) for p in pairs} <= {2, 3, 4, 5} and len({len(p.start_actions) for p in pairs}) > 1
    for pair in pairs:
        restore_start(control, pair)
        control.reset(pair.seed)
        fresh = control.true_state()
        restore_start(control, pair)
        assert not np.allclose(control.true_state(), fresh)  # the start is a later step of the episode
        assert not control.success(pair.goal_state)
    shortcut = [run_baseline(control, p, "shortcut", budget=2) for p in pairs]
    assert all(r.success and r.steps == 1 for r in shortcut)  # absolute actions: one step to the goal position
    with pytest.raises(ConfigError, match="shortcut_dims"):
        load_plan_eval_config(None, ["success_tolerance=0.1", "baselines=[shortcut]"], env="gym:X")


def test_goals_at_the_env_rate_while_the_model_steps_k_at_a_time(fakes):
    cfg = load_plan_eval_config(None, ["success_tolerance=0.01", "goal_policy=fakes_for_policies:go_right",
                                       "start_steps=[2, 3]", "frameskip=3", "goal_frameskip=1", "state_key=proprio",
                                       "env_state_key=state"],
                                env="gym:fakes_for_policies:DictDot-v0", pairs=2, size=16, goal_steps=4)
    control = control_for(cfg)
    pairs, _ = make_pairs(control, cfg)
    for pair in pairs:
        control.reset(pair.seed)
        x0 = control.true_state()[0]
        restore_start(control, pair)  # 2 env steps right, not 2 x 3
        assert control.true_state()[0] == pytest.approx(min(x0 + 2 * 0.05, 1.0))
        assert pair.goal_state[0] == pytest.approx(min(x0 + 6 * 0.05, 1.0))
        control.step_env(np.array([1.0, 0.0]))  # the model's step: 3 env steps
        assert control.true_state()[0] == pytest.approx(min(x0 + 5 * 0.05, 1.0))


def test_cem_warm_starts_from_the_previous_plan():
    import torch

    from vjepa2.world_model.mpc import shifted
    from vjepa2.world_model.planner import cem, cem_config

    target = torch.tensor([[0.8, -0.6]])
    energy = lambda a: ((a - target) ** 2).sum(dim=(1, 2))  # noqa: E731
    cfg = cem_config(samples=8, iterations=1, elites=2, horizon=1, constraint="box", low=(-1, -1), high=(1, 1),
                     init_std=0.01)
    cold = cem(energy, 2, cfg, seed=0)
    warm = cem(energy, 2, cfg, seed=0, initial=torch.tensor([[0.79, -0.61]]))
    assert cold.energy > 0.5 and warm.energy < 1e-3  # a narrow search finds the target only from there
    np.testing.assert_array_equal(shifted(torch.tensor([[1.0], [2.0], [3.0]]), 1).numpy(), [[2.0], [3.0], [3.0]])
    with pytest.raises(ValueError, match="initial must be"):
        cem(energy, 2, cfg, initial=torch.zeros(2, 2))


def test_the_oracle_plays_candidates_in_the_env_and_puts_it_back(fakes):
    source = dict_source(fakes, frameskip=2)
    source.reset(0)
    before = source.env.get_wrapper_attr("get_state")()
    frames, states = source.simulate(np.array([[1.0, 0.0], [0.0, 1.0]]))
    after = source.env.get_wrapper_attr("get_state")()
    np.testing.assert_array_equal(before[0], after[0])  # put back
    np.testing.assert_allclose(states[-1], np.clip(before[0] + 2 * 0.05 * np.array([1.0, 1.0]), 0, 1))
    assert frames.shape == (2, 16, 16, 3)
    _, stepped, _, _ = source.step(np.array([1.0, 0.0]))
    np.testing.assert_allclose(stepped, states[0])  # the same dynamics as acting


def test_the_pusht_benchmark_weak_policy_stays_near_the_block(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import pusht_protocol

    policy, rng = pusht_protocol.WeakPolicy(), np.random.default_rng(0)
    for agent, block in [((10, 500), (400, 100)), ((256, 256), (260, 250)), ((500, 5), (480, 30))]:
        state = np.array([*agent, *block, 0.0])
        targets = np.stack([policy.get_action({"env_state": state, "rng": rng}) for _ in range(200)])
        assert (np.abs(targets - block) <= 100 + 1e-9).all() and (targets >= 0).all() and (targets <= 512).all()
        if np.linalg.norm(np.subtract(agent, block)) < 100:
            assert targets.std(axis=0).min() > 10  # near the block it explores
        else:
            assert np.linalg.norm(targets.mean(axis=0) - block) < np.linalg.norm(np.subtract(agent, block))  # far: towards it
    args = pusht_protocol.parse_args(["--quick", "--oracle"])
    assert args.oracle and args.oracle_pairs <= args.pairs and args.episodes < 100


def test_the_pusht_benchmark_state_gap_is_the_success_test_in_tolerance_units(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import pusht_protocol

    goal = np.array([100.0, 100.0, 200.0, 200.0, 3.1])
    states = np.array([[100.0, 100.0, 200.0, 200.0, 3.1],      # at the goal
                       [112.0, 116.0, 200.0, 200.0, 3.1],      # agent 20 away: one tolerance
                       [100.0, 100.0, 200.0, 200.0, -3.1],     # angle across +-pi: 0.083 rad, not 6.2
                       [100.0, 100.0, 200.0, 200.0, 3.1 - np.pi / 9]])
    np.testing.assert_allclose(pusht_protocol.state_gap(states, goal),
                               [0.0, 1.0, (2 * np.pi - 6.2) / (np.pi / 9), 1.0], atol=1e-9)
    assert pusht_protocol.spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)
    assert pusht_protocol.parse_search("64x5x3r100") == (64, 5, 3, 100.0)
    assert pusht_protocol.parse_search("128x5x1") == (128, 5, 1, None)
    with pytest.raises(SystemExit, match="SAMPLESxITERATIONSxHORIZON"):
        pusht_protocol.parse_search("64x5")
    default, wider = pusht_protocol.parse_args([]), pusht_protocol.parse_args(["--samples", "128", "--step-radius", "100"])
    assert pusht_protocol.plan_folder(default, "plan") == "plan"  # the protocol's rows keep their folders
    assert pusht_protocol.plan_folder(wider, "plan", 0.0) == "plan-128x5x1r100-w0"  # other settings plan anew
