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

from typing import Literal

import numpy as np

from vjepa2.world_model.envs.toy_push import ToyPushConfig, ToyPushSource, action_from_robot


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
                 block_bias: float = 0.5, success_tolerance: float | None = None) -> None:
        tolerance = {} if success_tolerance is None else {"reach_tolerance": success_tolerance,
                                                          "push_tolerance": success_tolerance}
        self.source = ToyPushSource(ToyPushConfig(size=size, task=task, **tolerance),
                                    repeat_prob=repeat_prob, block_bias=block_bias)
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
        return np.clip(goal[:2] - self.env.get_state()[:2], self.low, self.high)


class GymControl:
    """A Gymnasium env (via :class:`~vjepa2.world_model.envs.gym_adapter.GymSource`) for planning:
    model actions are the env's actions, states its observations; success = state within
    ``success_tolerance`` (L2) of the goal state. Once the env reports the end of an episode,
    further actions are ignored (the state stays where the episode ended)."""

    action_dims = None
    labels = ("action[0]", "action[1]")

    def __init__(self, source, success_tolerance: float) -> None:
        self.source = source
        self.tolerance = float(success_tolerance)
        self.low, self.high = source.low.copy(), source.high.copy()
        self.model_action_dim = int(source.low.size)
        self._frame = self._state = None
        self._done = False

    def reset(self, seed: int) -> None:
        self._frame, self._state, _ = self.source.reset(seed)
        self._done = False

    def observe(self) -> tuple[np.ndarray, np.ndarray]:
        return self._frame, self._state

    def step_env(self, env_action: np.ndarray) -> None:
        if self._done:
            return
        self._frame, self._state, _, self._done = self.source.step(
            np.asarray(env_action, dtype=self.source.env.action_space.dtype).reshape(self.low.shape))

    def act(self, action: np.ndarray) -> None:
        self.step_env(action)

    def exploration_action(self, rng: np.random.Generator) -> np.ndarray:
        return self.source.sample_action(rng)

    uniform_action = exploration_action

    def zero_action(self) -> np.ndarray:
        return np.zeros_like(self.low)

    def true_state(self) -> np.ndarray:
        return np.asarray(self._state, dtype=np.float64).copy()

    def success(self, goal: np.ndarray) -> bool:
        return self.distance(goal) < self.tolerance

    def distance(self, goal: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(self._state, dtype=np.float64) - goal))

    def reference_action(self, goal: np.ndarray) -> None:
        return None


def make_control(env: str, task: str | None = None, *, size: int = 64, repeat_prob: float = 0.8,
                 block_bias: float = 0.5, success_tolerance: float | None = None,
                 source=None) -> ToyPushControl | GymControl:
    """``toy-push`` (``task`` reach or push) or ``gym:<gymnasium id>`` (needs ``success_tolerance``)
    under control; ``source``: an already built Gymnasium episode source (e.g. a test env), used
    instead of making ``env``. ``repeat_prob`` / ``block_bias`` apply to toy-push only."""
    if env == "toy-push":
        return ToyPushControl(task, size=size, repeat_prob=repeat_prob, block_bias=block_bias,
                              success_tolerance=success_tolerance)
    if success_tolerance is None:
        raise ValueError(f"{env}: a Gymnasium env needs success_tolerance, the state distance that counts as success")
    if source is None:
        from vjepa2.world_model.envs.gym_adapter import GymSource

        source = GymSource.make(env.removeprefix("gym:"), size=size)
    return GymControl(source, success_tolerance)
