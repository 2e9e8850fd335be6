"""`vjepa2 plan-eval`: reachable start/goal pairs, the evaluation end to end on a tiny random world
model (toy-push and a fake Gymnasium env), baselines, pictures, and the command line."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vjepa2.cli import main
from vjepa2.config import ConfigError
from vjepa2.models import VisionEncoder, encoder_config
from vjepa2.models.ac_predictor import ACPredictor, ac_predictor_config
from vjepa2.world_model.envs.toy_push import robot_from_xy
from vjepa2.world_model.model import WorldModel
from vjepa2.world_model.mpc import mpc_config
from vjepa2.world_model.plan_eval import (control_for, load_plan_eval_config, make_pairs, plan_eval,
                                          resolve_planner_config, run_baseline, run_planner)
from vjepa2.world_model.planner import LatentPlanner, PlanResult, cem_config

FAST = ["planner.samples=16", "planner.iterations=2", "planner.elites=4", "mpc.steps_per_goal=4"]


def tiny_world(action_dim=7, state_dim=7, img_size=32):
    torch.manual_seed(0)
    encoder = VisionEncoder(encoder_config("tiny", dim=32, depth=1, heads=2, mlp_hidden=64)).eval()
    predictor = ACPredictor(ac_predictor_config("tiny", enc_dim=32, dim=32, depth=1, heads=2, mlp_hidden=64,
                                                img_size=img_size, action_dim=action_dim, state_dim=state_dim))
    return WorldModel(encoder, predictor.eval(), img_size, Path("random"))


def test_pairs_are_reachable_and_not_already_solved():
    cfg = load_plan_eval_config(task="push", pairs=4, size=32, goal_steps=6)
    control = control_for(cfg)
    pairs, skipped = make_pairs(control, cfg)
    assert len(pairs) == 4 and len(set(p.seed for p in pairs)) == 4
    assert sorted(skipped + [p.seed for p in pairs]) == list(range(cfg.seed, pairs[-1].seed + 1))
    for pair in pairs:
        control.reset(pair.seed)
        assert not control.success(pair.goal_state) and control.distance(pair.goal_state) == pair.start_distance
        rng = np.random.default_rng(pair.seed)  # replaying the recorded random actions reaches the goal
        for _ in range(cfg.goal_steps):
            control.step_env(control.exploration_action(rng))
        assert control.success(pair.goal_state)
        np.testing.assert_array_equal(control.observe()[0], pair.goal_image)


def test_plan_eval_runs_end_to_end_on_a_tiny_random_world_model(tmp_path):
    cfg = load_plan_eval_config(None, FAST + ["landscape_grid=7", "baselines=[random,zero,oracle]"], task="reach",
                                pairs=3, size=32)
    report = plan_eval(tiny_world(), cfg, tmp_path, progress=False)
    assert [s.method for s in report.summaries] == ["planner", "random", "zero", "oracle"]
    zero = report.summary("zero")
    # zero actions never move anything: no success, and the final distance is the start distance
    assert zero.success_rate == 0.0 and zero.final_distance_mean == pytest.approx(report.start_distance_mean)
    planner = report.summary("planner")
    assert 0.0 <= planner.success_rate <= 1.0 and planner.seconds_per_action > 0 and planner.steps_mean <= 4
    names = {Path(f).name for f in report.files}
    assert names == {"plan-reach-episode-0.png", "plan-reach-episode-0.gif", "plan-reach-landscape.png",
                     "plan-eval-reach.md", "plan-eval-reach.json"}
    gif = Image.open(tmp_path / "plan-reach-episode-0.gif")
    first = next(e for e in report.episodes if e.method == "planner")
    assert gif.n_frames == first.steps + 1
    assert Image.open(tmp_path / "plan-reach-landscape.png").size[0] > 100
    assert "| planner |" in (tmp_path / "plan-eval-reach.md").read_text()
    import json

    saved = json.loads((tmp_path / "plan-eval-reach.json").read_text())
    assert saved["config"]["planner"]["action_dims"] == [0, 1] and len(saved["episodes"]) == 12


def test_the_control_loop_maps_model_actions_to_the_toy_world():
    """An oracle planner (it reads the true state) must reach every goal: checks the 7-D robot
    action -> (dx, dy) mapping, the success test and the stop rule, independently of any model."""
    cfg = load_plan_eval_config(task="reach", pairs=5, size=32, goal_steps=6)
    control = control_for(cfg)
    pairs, _ = make_pairs(control, cfg)

    class OraclePlanner:
        config = cem_config(samples=1, elites=1)

        def __init__(self, goal):
            self.goal = goal

        def plan(self, frames, states, goal, past_actions=None, seed=None, goal_state=None):
            step = torch.as_tensor(robot_from_xy(control.reference_action(self.goal)), dtype=torch.float32)[None]
            return PlanResult(step, step[:, :2], 0.0, 0.0, [], 0.0)

    for pair in pairs:
        result, episode = run_planner(control, pair, tiny_world(), OraclePlanner(pair.goal_state),
                                      mpc_config(steps_per_goal=15))
        assert result.success and result.distance < 0.05 and len(episode.frames) == result.steps + 1
        assert run_baseline(control, pair, "zero", 15).distance == pytest.approx(pair.start_distance)


def test_plan_eval_works_through_the_gymnasium_adapter(tmp_path):
    pytest.importorskip("gymnasium")
    from test_collect import make_dot_env

    from vjepa2.world_model.envs.gym_adapter import GymSource

    source = GymSource(make_dot_env()(render_mode="rgb_array"), size=32, name="Dot")
    cfg = load_plan_eval_config(None, FAST + ["success_tolerance=0.02", "planner.constraint=box"], env="gym:Dot",
                                pairs=2, size=32, goal_steps=4)
    report = plan_eval(tiny_world(action_dim=2, state_dim=2), cfg, tmp_path, source=source, progress=False)
    assert report.config["planner"]["low"] == [-1.0, -1.0] and report.config["task"] is None
    assert report.summary("zero").success_rate == 0.0
    assert (tmp_path / "plan-eval-state.md").is_file() and (tmp_path / "plan-state-landscape.png").is_file()
    with pytest.raises(ValueError, match="2-D actions and 2-D states"):
        plan_eval(tiny_world(), cfg, None, source=source, progress=False)
    oracle = load_plan_eval_config(None, FAST + ["success_tolerance=0.02", "baselines=[oracle]"], env="gym:Dot",
                                   pairs=2, size=32, goal_steps=4)
    with pytest.raises(ValueError, match="cannot be set to a saved state"):  # before any planning
        plan_eval(tiny_world(action_dim=2, state_dim=2), oracle, None, source=source, progress=False)


def make_position_env(low=100.0, high=600.0):
    """A Gymnasium env whose actions are absolute positions in a wide, offset box (as in PushT):
    the dot jumps to the commanded position."""
    gymnasium = pytest.importorskip("gymnasium")

    class PositionEnv(gymnasium.Env):
        metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

        def __init__(self, render_mode="rgb_array"):
            self.render_mode = render_mode
            self.action_space = gymnasium.spaces.Box(low, high, (2,), np.float32)
            self.observation_space = gymnasium.spaces.Box(low, high, (2,), np.float32)
            self.pos = np.full(2, (low + high) / 2, np.float32)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.pos = self.np_random.uniform(low, high, 2).astype(np.float32)
            return self.pos.copy(), {}

        def step(self, action):
            self.pos = np.clip(np.asarray(action, np.float32), low, high)
            return self.pos.copy(), 0.0, False, False, {}

        def render(self):
            img = np.zeros((32, 32, 3), np.uint8)
            x, y = ((self.pos - low) / (high - low) * 31).astype(int)
            img[y, x] = 255
            return img

    return PositionEnv()


def test_planning_searches_a_wide_offset_action_box(tmp_path):
    """Actions in [100, 600]: CEM plans inside the env's box from its centre, so the executed
    actions spread over the box (the paper's start, mean 0 / std 1, would put them all in a corner)."""
    from vjepa2.world_model.envs.gym_adapter import GymSource

    source = GymSource(make_position_env(), size=32, name="Position")
    cfg = load_plan_eval_config(None, FAST + ["success_tolerance=1.0", "pictures=0"], env="gym:Position", pairs=2,
                                size=32, goal_steps=2)
    report = plan_eval(tiny_world(action_dim=2, state_dim=2), cfg, None, source=source, progress=False)
    assert report.config["planner"]["low"] == [100.0, 100.0] and report.config["planner"]["high"] == [600.0, 600.0]
    control, world = control_for(cfg, source), tiny_world(action_dim=2, state_dim=2)
    planner = LatentPlanner(world.predictor, resolve_planner_config(cfg.planner, control))
    _, episode = run_planner(control, make_pairs(control, cfg)[0][0], world, planner, mpc_config(steps_per_goal=4))
    actions = np.stack(episode.actions)
    assert ((actions >= 100) & (actions <= 600)).all() and not (actions == 100).all()


def test_config_errors_are_early_and_named():
    with pytest.raises(ConfigError, match="task"):
        load_plan_eval_config()  # toy-push without a task
    with pytest.raises(ConfigError, match="success_tolerance"):
        load_plan_eval_config(env="gym:Pendulum-v1")
    with pytest.raises(ConfigError, match="baselines"):
        load_plan_eval_config(None, ["baselines=[random,greedy]"], task="reach")
    with pytest.raises(ConfigError, match="did you mean planner.samples"):
        load_plan_eval_config(None, ["planner.sample=3"], task="reach")


def test_the_oracle_plans_in_the_true_dynamics_and_leaves_the_world_where_it_was():
    """The simulator planner scores candidates by playing them from the current state: with an
    encoder that sees the effector, its energy is lowest for the action heading to the goal."""
    from vjepa2.world_model.plan_eval import SimulatorPlanner

    cfg = load_plan_eval_config(task="reach", pairs=1, size=32)
    control = control_for(cfg)
    pair = make_pairs(control, cfg)[0][0]
    control.reset(pair.seed)
    before = control.true_state()

    class PixelWorld:  # a latent that is the image itself: (T, 32*32, 3) tokens
        def encode(self, frames):
            return torch.as_tensor(np.asarray(frames), dtype=torch.float32).flatten(1, 2) / 255

    planner = SimulatorPlanner(control, PixelWorld(), cem_config(samples=64, iterations=3, elites=6, horizon=3,
                                                                  constraint="box", action_dims=(0, 1)))
    goal = PixelWorld().encode(pair.goal_image[None])[0]
    plan = planner.plan(None, None, goal, seed=0)
    np.testing.assert_array_equal(control.true_state(), before)  # candidates were played on a restored copy
    assert plan.actions.shape == (3, 7) and torch.all(plan.actions[:, 2:] == 0)
    towards = control.reference_action(pair.goal_state)
    cosine = float(np.dot(plan.actions[0, :2].numpy(), towards) /
                   (np.linalg.norm(plan.actions[0, :2].numpy()) * np.linalg.norm(towards) + 1e-12))
    assert cosine > 0.5, (plan.actions[0, :2], towards)


def test_command_line_reports_config_errors_and_prints_the_config(capsys):
    assert main(["plan-eval", "--run", "nowhere", "--env", "toy-push"]) == 2
    assert "toy-push needs task reach or push" in capsys.readouterr().err
    assert main(["plan-eval", "--run", "nowhere", "--task", "push", "--print-config", "planner.samples=99"]) == 0
    out = capsys.readouterr().out
    assert "samples: 99" in out and "task: push" in out
    assert main(["plan-eval", "--run", "nowhere", "--task", "push"]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_the_oracles_state_term_steers_it_like_the_planners():
    """A blind world (every frame the same latent): only the state term can point the oracle at the goal."""
    from vjepa2.world_model.plan_eval import SimulatorPlanner

    cfg = load_plan_eval_config(task="reach", pairs=1, size=32)
    control = control_for(cfg)
    pair = make_pairs(control, cfg)[0][0]
    control.reset(pair.seed)

    class BlindWorld:
        def encode(self, frames):
            return torch.zeros(len(frames), 4, 8)

    planner = SimulatorPlanner(control, BlindWorld(), cem_config(samples=64, iterations=3, elites=6, horizon=2,
                                                                   constraint="box", action_dims=(0, 1),
                                                                   state_weight=10.0, energy="sum"))
    plan = planner.plan(None, None, torch.zeros(4, 8), seed=0, goal_state=torch.as_tensor(pair.goal_observed))
    towards = control.reference_action(pair.goal_state)
    cosine = float(np.dot(plan.actions[0, :2].numpy(), towards) /
                   (np.linalg.norm(plan.actions[0, :2].numpy()) * np.linalg.norm(towards) + 1e-12))
    assert cosine > 0.5, (plan.actions[0, :2], towards)
