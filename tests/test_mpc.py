"""The model-predictive control loop: stop rules (success, energy, budget), sub-goal switching,
executing the first k actions, context frames; and one run with a real planner and predictor."""

import numpy as np
import pytest
import torch

from vjepa2.config import ConfigError
from vjepa2.models.ac_predictor import ACPredictor, ac_predictor_config
from vjepa2.world_model.mpc import Goal, mpc_config, run_mpc
from vjepa2.world_model.planner import LatentPlanner, PlanResult, cem_config


class LineEnv:
    """A point on a line in [-1, 1.5]; the frame's pixels hold the position (100 + 100 x, as uint8)."""

    def __init__(self, start=0.0, step_limit=0.1):
        self.x = start
        self.step_limit = step_limit
        self.acted = []

    def observe(self):
        return image_at(self.x), np.array([self.x], np.float32)

    def act(self, action):
        self.acted.append(float(action[0]))
        self.x += float(np.clip(action[0], -self.step_limit, self.step_limit))


class PixelWorld:
    """Latent = the position shown by the frame, as one 1-D token: ``(T, 1, 1)``."""

    def encode(self, frames):
        return (torch.as_tensor(np.asarray(frames)[:, :1, :1, 0], dtype=torch.float32) - 100) / 100


class GreedyPlanner:
    """Heads for the goal latent at full speed; records what it was conditioned on."""

    def __init__(self, horizon=1, speed=0.1):
        self.config = cem_config(horizon=horizon, samples=1, elites=1)
        self.speed = speed
        self.calls = []

    def plan(self, frames, states, goal, past_actions=None, seed=None, goal_state=None):
        self.calls.append({"frames": frames.clone(), "past_actions": past_actions, "seed": seed})
        direction = float(torch.sign(goal - frames[-1]).flatten()[0])
        actions = torch.full((self.config.horizon, 1), direction * self.speed)
        return PlanResult(actions, actions, 0.0, 0.0, [], 0.001)


def image_at(x):
    return np.full((4, 4, 3), 100 + int(round(x * 100)), np.uint8)


def test_stops_on_the_true_success_test():
    env, planner = LineEnv(), GreedyPlanner()
    goal = Goal(image_at(0.3), reached=lambda: abs(env.x - 0.3) < 0.05)
    episode = run_mpc(PixelWorld(), planner, env, [goal], mpc_config(steps_per_goal=10))
    assert episode.success and episode.goals[0].reason == "success"
    assert len(episode.actions) == 3 and len(episode.frames) == 4 and len(planner.calls) == 3
    assert [c["seed"] for c in planner.calls] == [0, 1, 2]  # each plan call its own seed


def test_stops_when_the_budget_runs_out():
    env = LineEnv()
    goal = Goal(image_at(1.5), reached=lambda: abs(env.x - 1.5) < 0.05)
    episode = run_mpc(PixelWorld(), GreedyPlanner(), env, [goal], mpc_config(steps_per_goal=4))
    assert not episode.success and episode.goals[0].reason == "budget"
    assert episode.goals[0].steps == 4 and env.x == pytest.approx(0.4)
    # the zero-budget goal is judged without acting
    episode = run_mpc(PixelWorld(), GreedyPlanner(), LineEnv(), [Goal(image_at(1.0))], mpc_config(steps_per_goal=0))
    assert episode.actions == [] and episode.goals[0].reason == "budget"


def test_stops_on_the_energy_threshold_without_a_true_test():
    env = LineEnv()
    episode = run_mpc(PixelWorld(), GreedyPlanner(), env, [Goal(image_at(0.5))],
                      mpc_config(steps_per_goal=20, energy_threshold=0.01))
    assert episode.goals[0].reason == "energy" and env.x == pytest.approx(0.5)
    assert episode.goals[0].energies[-1] <= 0.01 < episode.goals[0].energies[0]


def test_sub_goals_are_pursued_in_order_with_their_own_budgets():
    env = LineEnv()
    goals = [Goal(image_at(0.2), max_steps=5, reached=lambda: abs(env.x - 0.2) < 0.05, name="first"),
             Goal(image_at(-0.5), max_steps=3, reached=lambda: abs(env.x + 0.5) < 0.05, name="unreachable in 3"),
             Goal(image_at(0.0), max_steps=10, reached=lambda: abs(env.x) < 0.05, name="back")]
    episode = run_mpc(PixelWorld(), GreedyPlanner(), env, goals)
    assert [(g.name, g.reached, g.reason, g.steps) for g in episode.goals] == [
        ("first", True, "success", 2), ("unreachable in 3", False, "budget", 3), ("back", True, "success", 1)]
    assert episode.goal_of_step == [0, 0, 1, 1, 1, 2]
    assert env.acted == pytest.approx([0.1, 0.1, -0.1, -0.1, -0.1, 0.1])
    assert not episode.success


def test_executes_the_first_k_actions_and_respects_the_budget():
    env, planner = LineEnv(), GreedyPlanner(horizon=3)
    episode = run_mpc(PixelWorld(), planner, env, [Goal(image_at(1.0))], mpc_config(steps_per_goal=5, execute=2))
    assert len(episode.actions) == 5 and len(planner.calls) == 3  # 2 + 2 + 1 (budget)
    with pytest.raises(ConfigError, match="horizon"):
        run_mpc(PixelWorld(), GreedyPlanner(horizon=1), LineEnv(), [Goal(image_at(1.0))], mpc_config(execute=2))
    with pytest.raises(ValueError, match="at least one goal"):
        run_mpc(PixelWorld(), GreedyPlanner(), LineEnv(), [])


def test_context_frames_carry_the_executed_actions():
    env, planner = LineEnv(), GreedyPlanner()
    run_mpc(PixelWorld(), planner, env, [Goal(image_at(0.5))], mpc_config(steps_per_goal=3, context_frames=2))
    first, second, third = planner.calls
    assert first["frames"].shape[0] == 1 and first["past_actions"] is None
    assert second["frames"].shape[0] == 2 and torch.allclose(second["past_actions"], torch.tensor([[0.1]]))
    assert torch.allclose(third["frames"][:, 0, 0], torch.tensor([0.1, 0.2]))


def test_mpc_with_a_real_planner_and_predictor_is_deterministic():
    torch.manual_seed(0)
    predictor = ACPredictor(ac_predictor_config("tiny", enc_dim=1, dim=24, depth=1, heads=1, mlp_hidden=48,
                                                img_size=16, patch_size=16, action_dim=1, state_dim=1))
    planner = LatentPlanner(predictor, cem_config(samples=16, iterations=2, elites=4, horizon=2,
                                                  constraint="box", radius=0.1))
    runs = []
    for _ in range(2):
        env = LineEnv()
        episode = run_mpc(PixelWorld(), planner, env, [Goal(image_at(0.3))], mpc_config(steps_per_goal=4, seed=7))
        assert len(episode.actions) == 4 and all(abs(a[0]) <= 0.1 + 1e-7 for a in episode.actions)
        assert len(episode.plan_seconds) == 4 and episode.seconds_per_action > 0
        runs.append(env.acted)
    assert runs[0] == runs[1]
