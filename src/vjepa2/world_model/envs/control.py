"""Environments under control, for planning: the toy world and Gymnasium envs behind one interface.

A control holds the current observation and plays actions::

    control = make_control("toy-push", task="reach", size=64)
    control.reset(seed)
    frame, state = control.observe()             # what the world model sees
    control.act(model_action)                    # a model action (7-D robot vector for toy-push)
    control.step_env(env_action)                 # an action in the env's own space
    control.success(goal_state), control.distance(goal_state)

Its attributes ``action_dims`` (the model-action entries that move the env, None = all),
``labels`` (names of the first two planned entries), ``low`` / ``high`` (env action bounds) and
``model_action_dim`` tell the planner what it may choose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from vjepa2.config import ConfigError
from vjepa2.world_model.envs.toy_push import ToyPushConfig, ToyPushSource, action_from_robot, wrap_angle


class ToyPushControl:
    """The toy world for planning: model actions are 7-D robot vectors ``(dx, dy, 0, ...)``,
    states the 7-D robot state; success and distances use the true world state ``(5,)``.

    Args:
        task: ``reach`` (the effector to its goal position) or ``push`` (the block to its goal pose).
        size: frame size in pixels.
        repeat_prob / block_bias: the random policy of the exploration actions (as ``vjepa2 collect``).
        success_tolerance: overrides the 0.05 position tolerances of the success test (None: keep them).
    """

    action_dims = (0, 1)
    labels = ("dx", "dy")

    def __init__(self, task: Literal["reach", "push"], size: int = 64, repeat_prob: float = 0.8,
                 block_bias: float = 0.5, success_tolerance: float | None = None, frameskip: int = 1) -> None:
        tolerance = {} if success_tolerance is None else {"reach_tolerance": success_tolerance,
                                                          "push_tolerance": success_tolerance}
        self.source = ToyPushSource(ToyPushConfig(size=size, task=task, **tolerance),
                                    repeat_prob=repeat_prob, block_bias=block_bias, frameskip=frameskip)
        self.env = self.source.env
        self.task = task
        self.low, self.high = self.env.action_low.copy(), self.env.action_high.copy()
        self.model_action_dim = 7
        self._frame: np.ndarray | None = None
        self._state: np.ndarray | None = None

    def reset(self, seed: int) -> None:
        self._frame, self._state, _ = self.source.reset(seed)

    def observe(self) -> tuple[np.ndarray, np.ndarray]:
        return self._frame, self._state

    def step_env(self, env_action: np.ndarray) -> None:
        self._frame, self._state, _, _ = self.source.step(np.asarray(env_action, dtype=np.float64))

    def act(self, action: np.ndarray) -> None:
        self.step_env(action_from_robot(np.asarray(action)))

    def exploration_action(self, rng: np.random.Generator) -> np.ndarray:
        """The collect policy's next action (env space): what made the training data and the goals."""
        return self.source.sample_action(rng)

    def uniform_action(self, rng: np.random.Generator) -> np.ndarray:
        return self.env.sample_action(rng)

    def zero_action(self) -> np.ndarray:
        return np.zeros(2)

    def true_state(self) -> np.ndarray:
        return self.env.get_state()

    def success(self, goal: np.ndarray) -> bool:
        return self.env.success(goal, self.task)

    def distance(self, goal: np.ndarray) -> float:
        state = self.env.get_state()
        part = slice(0, 2) if self.task == "reach" else slice(2, 4)
        return float(np.linalg.norm(state[part] - goal[part]))

    def reference_action(self, goal: np.ndarray) -> np.ndarray:
        """The planned entries ``(dx, dy)`` that move the effector straight at its goal position."""
        return np.clip((goal[:2] - self.env.get_state()[:2]) / self.source.frameskip, self.low, self.high)

    def describe_success(self) -> str:
        cfg = self.env.config
        if self.task == "reach":
            return f"effector within {cfg.reach_tolerance:g} of the goal's"
        return f"block within {cfg.push_tolerance:g} of the goal's position and {cfg.push_angle_tolerance:g} rad of its angle"


@dataclass(frozen=True)
class SuccessGroup:
    """One part of a success test: the state entries ``dims`` (None: all of them) must lie within
    ``tolerance`` (L2) of the goal's; ``angle``: the entries are angles, differences wrapped to (-pi, pi]."""

    dims: tuple[int, ...] | None
    tolerance: float
    angle: bool = False

    def validate(self) -> None:
        if self.dims is not None and (not self.dims or min(self.dims) < 0):
            raise ConfigError(f"success group dims must be non-negative state indices, got {list(self.dims)}")
        if not self.tolerance > 0:
            raise ConfigError(f"success group tolerance must be positive, got {self.tolerance}")

    def distance(self, state: np.ndarray, goal: np.ndarray) -> float:
        gap = np.asarray(state, dtype=np.float64) - np.asarray(goal, dtype=np.float64)
        if self.dims is not None:
            if max(self.dims) >= min(len(state), len(goal)):
                raise ValueError(f"success group dims {list(self.dims)} do not fit a {len(state)}-entry state")
            gap = gap[list(self.dims)]
        if self.angle:
            gap = wrap_angle(gap)
        return float(np.linalg.norm(gap))

    def describe(self) -> str:
        what = "state" if self.dims is None else f"entries {list(self.dims)}"
        kind = " (angles)" if self.angle else " (L2)" if self.dims is None else ""
        return f"{what} within {self.tolerance:g}{kind}"


class GymControl:
    """A Gymnasium env (via :class:`~vjepa2.world_model.envs.gym_adapter.GymSource`) for planning:
    model actions are the env's actions, states its (conditioning) observations. Success: every
    group of ``success`` holds on the env state (a Dict observation's ``env_state_key`` entry, else
    the state), or, with none given, the whole state within ``success_tolerance`` (L2); the reported
    distance is the first group's. ``shortcut_dims``: env-state entries that, commanded as the
    action, send the agent to its goal position (PushT: ``[0, 1]``; the ``shortcut`` baseline).
    Once the env reports the end of an episode, further actions are ignored."""

    action_dims = None
    labels = ("action[0]", "action[1]")

    def __init__(self, source, success_tolerance: float | None = None, success: tuple[SuccessGroup, ...] = (),
                 shortcut_dims: tuple[int, ...] | None = None) -> None:
        if not success and success_tolerance is None:
            raise ValueError("a Gymnasium env needs a success test: success_tolerance or success groups")
        self.source = source
        self.groups = tuple(success) or (SuccessGroup(None, float(success_tolerance)),)
        self.shortcut_dims = None if shortcut_dims is None else list(shortcut_dims)
        self.low, self.high = source.low.copy(), source.high.copy()
        self.model_action_dim = int(source.low.size)
        self._frame = self._state = self._env_state = None
        self._done = False

    def reset(self, seed: int) -> None:
        self._frame, self._state, extras = self.source.reset(seed)
        self._env_state = extras.get("env_states", self._state)
        self._done = False

    def observe(self) -> tuple[np.ndarray, np.ndarray]:
        return self._frame, self._state

    def step_env(self, env_action: np.ndarray) -> None:
        if self._done:
            return
        self._frame, self._state, extras, self._done = self.source.step(
            np.asarray(env_action, dtype=self.source.env.action_space.dtype).reshape(self.low.shape))
        self._env_state = extras.get("env_states", self._state)

    def act(self, action: np.ndarray) -> None:
        self.step_env(action)

    def exploration_action(self, rng: np.random.Generator) -> np.ndarray:
        return self.source.sample_action(rng)

    uniform_action = exploration_action

    def zero_action(self) -> np.ndarray:
        return np.zeros_like(self.low)

    def true_state(self) -> np.ndarray:
        return np.asarray(self._env_state, dtype=np.float64).copy()

    def success(self, goal: np.ndarray) -> bool:
        return all(group.distance(self.true_state(), goal) < group.tolerance for group in self.groups)

    def distance(self, goal: np.ndarray) -> float:
        return self.groups[0].distance(self.true_state(), goal)

    def describe_success(self) -> str:
        return "; ".join(group.describe() for group in self.groups)

    def reference_action(self, goal: np.ndarray) -> np.ndarray | None:
        """The goal's ``shortcut_dims`` entries as the action (None without them)."""
        if self.shortcut_dims is None:
            return None
        return np.clip(np.asarray(goal, dtype=np.float64)[self.shortcut_dims], self.low, self.high)


def make_control(env: str, task: str | None = None, *, size: int = 64, repeat_prob: float = 0.8,
                 block_bias: float = 0.5, success_tolerance: float | None = None, source=None,
                 frameskip: int = 1, state_key: str | None = None, env_state_key: str | None = None,
                 success: tuple[SuccessGroup, ...] = (),
                 shortcut_dims: tuple[int, ...] | None = None) -> ToyPushControl | GymControl:
    """``toy-push`` (``task`` reach or push) or ``gym:<gymnasium id>`` (needs a success test) under
    control; ``source``: an already built Gymnasium episode source (e.g. a test env), used instead
    of making ``env``. ``repeat_prob`` / ``block_bias`` apply to toy-push only; ``frameskip``,
    ``state_key`` and ``env_state_key`` as in ``vjepa2 collect``."""
    if env == "toy-push":
        return ToyPushControl(task, size=size, repeat_prob=repeat_prob, block_bias=block_bias,
                              success_tolerance=success_tolerance, frameskip=frameskip)
    if source is None:
        from vjepa2.world_model.envs.gym_adapter import GymSource

        source = GymSource.make(env.removeprefix("gym:"), size=size, state_key=state_key,
                                env_state_key=env_state_key, frameskip=frameskip)
    return GymControl(source, success_tolerance, success, shortcut_dims)
