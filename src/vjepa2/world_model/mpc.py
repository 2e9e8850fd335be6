"""Model-predictive control toward goal images: observe -> encode -> plan -> act -> repeat.

::

    episode = run_mpc(world, planner, env, [Goal(goal_image, max_steps=20, reached=lambda: env_is_there())])

For each goal (a list of sub-goal images is worked through in order, each with its own step
budget), the loop encodes the current frame, stops when the goal is reached — by the true
success test ``Goal.reached`` when the caller has one, or when the latent distance to the goal
falls below ``energy_threshold`` — or when the goal's budget of executed actions is spent, and
otherwise plans with the :class:`~vjepa2.world_model.planner.LatentPlanner` and executes the
first ``execute`` actions of the plan. A goal that runs out of budget is given up and the next
one is pursued (the paper's pick-and-place switches sub-goals on a schedule in the same way).

The environment is anything with ``observe() -> (frame (H, W, 3) uint8, state (S,))`` and
``act(action (A,))`` taking model-space actions; the world model anything with
``encode(frames uint8 (T, H, W, 3)) -> (T, N, D)`` layer-normed latents (e.g.
:class:`vjepa2.world_model.model.WorldModel`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch

from vjepa2.config import ConfigError, from_dict
from vjepa2.world_model.planner import LatentPlanner


class ControlEnv(Protocol):
    def observe(self) -> tuple[np.ndarray, np.ndarray]:
        """The current ``(frame (H, W, 3) uint8, state (S,))``."""

    def act(self, action: np.ndarray) -> None:
        """Execute one model-space action ``(A,)``."""


class LatentEncoder(Protocol):
    def encode(self, frames) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` -> layer-normed latents ``(T, N, D)``."""


@dataclass(frozen=True)
class MPCConfig:
    """Settings of the control loop.

    Attributes:
        steps_per_goal: budget of executed actions per goal (a :class:`Goal` may set its own).
        execute: actions of each plan executed before re-planning (1 = the paper's MPC; needs a
            planner horizon >= ``execute``).
        energy_threshold: a goal counts as reached when the mean L1 distance between the current
            latent and the goal latent is at most this (None: only the true success test stops).
        context_frames: observed frames the world model is conditioned on (the last ones, with
            the actions executed between them).
        seed: plan call ``i`` of an episode samples with seed ``seed + i``.
        warm_start: each plan's CEM starts from the previous plan shifted by the executed actions
            (its last action repeated), instead of from the action box's centre.
    """

    steps_per_goal: int = 20
    execute: int = 1
    energy_threshold: float | None = None
    context_frames: int = 1
    seed: int = 0
    warm_start: bool = False

    def validate(self) -> None:
        if self.steps_per_goal < 0:
            raise ConfigError(f"steps_per_goal must be >= 0, got {self.steps_per_goal}")
        if self.execute < 1:
            raise ConfigError(f"execute must be >= 1, got {self.execute}")
        if self.context_frames < 1:
            raise ConfigError(f"context_frames must be >= 1, got {self.context_frames}")
        if self.energy_threshold is not None and self.energy_threshold < 0:
            raise ConfigError(f"energy_threshold must be >= 0 or null, got {self.energy_threshold}")


def mpc_config(**overrides) -> MPCConfig:
    """A validated :class:`MPCConfig`."""
    return from_dict(MPCConfig, overrides)


@dataclass
class Goal:
    """One (sub-)goal: its image, its step budget (None: ``MPCConfig.steps_per_goal``),
    optionally the true success test (called after every observation) and the state observed at
    the goal (``(S,)``, for a planner energy with a state term, ``CEMConfig.state_weight``)."""

    image: np.ndarray
    max_steps: int | None = None
    reached: Callable[[], bool] | None = None
    name: str = ""
    state: np.ndarray | None = None


@dataclass
class GoalOutcome:
    """How one goal ended: ``reason`` is ``success`` (true test), ``energy`` (latent threshold)
    or ``budget``; ``steps`` actions were executed for it; ``energies`` holds the latent distance
    to the goal at each of its observations."""

    name: str
    reached: bool
    reason: str
    steps: int
    energies: list[float] = field(default_factory=list)


@dataclass
class MPCEpisode:
    """Record of a control episode.

    Attributes:
        frames: every observed frame, the first before any action (``len = actions + 1``).
        actions: executed model-space actions ``(A,)``.
        goal_of_step: index of the goal each action was executed for.
        plan_seconds: wall-clock time of each plan call (encoding excluded).
        energies: the plan energies (imagined distance to the goal) of each plan call.
        goals: one :class:`GoalOutcome` per goal, in order.
    """

    frames: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    goal_of_step: list[int] = field(default_factory=list)
    plan_seconds: list[float] = field(default_factory=list)
    energies: list[float] = field(default_factory=list)
    goals: list[GoalOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        """Every goal reached."""
        return bool(self.goals) and all(g.reached for g in self.goals)

    @property
    def seconds_per_action(self) -> float:
        """Wall-clock seconds of the whole loop (encode + plan + act) per executed action."""
        return self.seconds / max(len(self.actions), 1)


@dataclass(frozen=True)
class Observation:
    """One observation of the control loop, as the planner's context takes it.

    Attributes:
        latent: the world model's ``(N, D)`` latent of the observed frame.
        state: the ``(S,)`` float32 state observed with it.
        action: the ``(A,)`` model-space action executed after it; None until one is.
    """

    latent: torch.Tensor
    state: torch.Tensor
    action: torch.Tensor | None = None


def encode_observation(world: LatentEncoder, frame: np.ndarray, state: np.ndarray) -> Observation:
    """Encode an observed ``(H, W, 3)`` uint8 frame and its ``(S,)`` state (no action yet)."""
    return Observation(world.encode(frame[None])[0], torch.as_tensor(state, dtype=torch.float32))


def latent_distance(latent: torch.Tensor, goal: torch.Tensor) -> float:
    """Mean L1 distance between two ``(N, D)`` latents (the planner's energy on observed frames)."""
    return float((latent.float() - goal.float()).abs().mean())


def shifted(plan: torch.Tensor, executed: int) -> torch.Tensor:
    """``(H, P)`` plan with its first ``executed`` actions dropped and its last one repeated in their place."""
    executed = min(executed, len(plan) - 1)
    return torch.cat((plan[executed:], plan[-1:].expand(executed, -1)), dim=0)


def run_mpc(world: LatentEncoder, planner: LatentPlanner, env: ControlEnv, goals: list[Goal],
            config: MPCConfig | None = None, on_step: Callable[[MPCEpisode], None] | None = None) -> MPCEpisode:
    """Drive ``env`` through ``goals`` in order with model-predictive control (see the module docstring).

    Args:
        world: the encoder side of the world model (``encode``).
        planner: plans toward each goal latent; its horizon must cover ``config.execute``.
        env: the environment, acted on with model-space actions.
        goals: the (sub-)goals, at least one.
        on_step: called after every executed action (e.g. to advance a progress bar).
    """
    cfg = config or MPCConfig()
    if not goals:
        raise ValueError("give at least one goal")
    if cfg.execute > planner.config.horizon:
        raise ConfigError(f"execute={cfg.execute} actions per plan but the planner's horizon is "
                          f"{planner.config.horizon}; raise the horizon or lower execute")
    started = time.perf_counter()
    episode = MPCEpisode()
    frame, state = env.observe()
    episode.frames.append(frame)
    # The last `context_frames` observations with the actions executed between them.
    history: deque[Observation] = deque([encode_observation(world, frame, state)], maxlen=cfg.context_frames)
    plan_calls, previous = 0, None
    for index, goal in enumerate(goals):
        goal_latent = world.encode(goal.image[None])[0]
        goal_state = None if goal.state is None else torch.as_tensor(goal.state, dtype=torch.float32)
        budget = cfg.steps_per_goal if goal.max_steps is None else goal.max_steps
        outcome = GoalOutcome(goal.name or f"goal {index}", False, "budget", 0)
        while True:
            outcome.energies.append(latent_distance(history[-1].latent, goal_latent))
            if goal.reached is not None and goal.reached():
                outcome.reached, outcome.reason = True, "success"
                break
            if cfg.energy_threshold is not None and outcome.energies[-1] <= cfg.energy_threshold:
                outcome.reached, outcome.reason = True, "energy"
                break
            if outcome.steps >= budget:
                break
            past = list(history)
            frames = torch.stack([h.latent for h in past])
            states = torch.stack([h.state for h in past])
            past_actions = torch.stack([h.action for h in past[:-1]]) if len(past) > 1 else None
            extra = {} if goal_state is None else {"goal_state": goal_state}  # planners without a state term
            if cfg.warm_start and previous is not None:
                extra["initial"] = shifted(previous, cfg.execute)
            plan = planner.plan(frames, states, goal_latent, past_actions=past_actions, seed=cfg.seed + plan_calls,
                                **extra)
            previous = plan.searched
            plan_calls += 1
            episode.plan_seconds.append(plan.seconds)
            episode.energies.append(plan.energy)
            for action in plan.actions[:min(cfg.execute, budget - outcome.steps)]:
                action = action.detach().cpu().float()
                env.act(action.numpy())
                history[-1] = replace(history[-1], action=action)
                frame, state = env.observe()
                history.append(encode_observation(world, frame, state))
                episode.frames.append(frame)
                episode.actions.append(action.numpy())
                episode.goal_of_step.append(index)
                outcome.steps += 1
                if on_step is not None:
                    on_step(episode)
                if goal.reached is not None and goal.reached():
                    break  # the rest of the plan is not needed; the loop above records the success
        episode.goals.append(outcome)
    episode.seconds = time.perf_counter() - started
    return episode
