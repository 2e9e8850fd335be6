"""Collect trajectories from any Gymnasium environment with RGB rendering and a Box action space.

``gymnasium`` is optional and imported only here, when an adapter is made::

    source = GymSource.make("Pendulum-v1", size=64)          # gymnasium.make(..., render_mode="rgb_array")
    vjepa2 collect --env gym:Pendulum-v1 --episodes 10 --steps 50 --out data/pendulum

Frames are ``env.render()`` resized (short side) and centre-cropped to ``size x size``; actions
must come from a bounded Box (the random policy draws uniformly from it) and are stored as given.
An episode that terminates early is kept, shorter.

States: a Box observation, flattened, is the state. A Dict observation (e.g. stable-worldmodel's
``{"proprio", "state"}``) needs ``state_key``, the entry the world model is conditioned on, and
may name ``env_state_key``, the entry success tests read (stored as ``env_states``; default: the
state). ``frameskip`` k: one step of the source is k env steps with the action held (DINO-WM's 5).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vjepa2.data.clips.transforms import center_crop, resize_short_side


def _gymnasium():
    try:
        import gymnasium
    except ImportError:
        raise ImportError("the Gymnasium adapter needs gymnasium: pip install gymnasium "
                          "(or use the built-in world: --env toy-push)") from None
    return gymnasium


def square_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(size, size, 3)`` uint8: short side resized to ``size`` (antialiased), centre crop."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"render() must return an (H, W, 3) RGB array, got shape {frame.shape}")
    if frame.shape[:2] == (size, size) and frame.dtype == np.uint8:
        return frame
    image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    image = center_crop(resize_short_side(image, size), size)
    return image[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def check_observation_keys(space, state_key: str | None, env_state_key: str | None,
                           name: str) -> tuple[str | None, str | None]:
    """The Dict entries that hold the state and the env state (None for a Box observation), or a
    ValueError that lists the keys there are."""
    spaces = _gymnasium().spaces
    if isinstance(space, spaces.Box):
        if state_key or env_state_key:
            raise ValueError(f"{name}: the observation is a Box, not a Dict; leave state_key/env_state_key out")
        return None, None
    if not isinstance(space, spaces.Dict):
        raise ValueError(f"{name}: the observation space is {type(space).__name__}; states are taken from Box "
                         f"observations or from Box entries of a Dict")
    keys = list(space.spaces)
    if state_key is None:
        raise ValueError(f"{name}: the observation is a Dict with keys {keys}; choose the state the world "
                         f"model is conditioned on with state_key (e.g. --state-key {keys[0]})")
    for what, key in (("state_key", state_key), ("env_state_key", env_state_key)):
        if key is None:
            continue
        if key not in keys:
            raise ValueError(f"{name}: {what} {key!r} is not in the observation; its keys are {keys}")
        if not isinstance(space.spaces[key], spaces.Box):
            raise ValueError(f"{name}: observation[{key!r}] is a {type(space.spaces[key]).__name__}, not a Box")
    return state_key, env_state_key


class GymSource:
    """An episode source (``reset``/``step``/``sample_action``) over a Gymnasium env (module docstring)."""

    def __init__(self, env: Any, size: int = 64, name: str | None = None, state_key: str | None = None,
                 env_state_key: str | None = None, frameskip: int = 1) -> None:
        gymnasium = _gymnasium()
        self.name = name or str(getattr(getattr(env, "spec", None), "id", type(env).__name__))
        if not isinstance(env.action_space, gymnasium.spaces.Box):
            raise ValueError(f"{self.name}: the action space is {type(env.action_space).__name__}; "
                             f"only Box (continuous) action spaces are supported")
        low, high = env.action_space.low, env.action_space.high
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"{self.name}: the Box action space is unbounded; random actions need finite bounds")
        self.state_key, self.env_state_key = check_observation_keys(env.observation_space, state_key,
                                                                    env_state_key, self.name)
        if getattr(env, "render_mode", None) != "rgb_array":
            raise ValueError(f"{self.name}: create the env with render_mode='rgb_array' "
                             f"(it has {getattr(env, 'render_mode', None)!r})")
        if frameskip < 1:
            raise ValueError(f"frameskip must be >= 1, got {frameskip}")
        self.env, self.size, self.frameskip = env, size, int(frameskip)
        self.low, self.high = low.astype(np.float64), high.astype(np.float64)
        self.observation: Any = None  # the env's last observation, as it returned it

    @classmethod
    def make(cls, env_id: str, size: int = 64, state_key: str | None = None, env_state_key: str | None = None,
             frameskip: int = 1, **kwargs) -> GymSource:
        """``gymnasium.make(env_id, render_mode="rgb_array", **kwargs)`` wrapped as a source
        (``env_id`` may be ``module:EnvId``: gymnasium imports the module, which registers the env)."""
        gymnasium = _gymnasium()
        try:
            env = gymnasium.make(env_id, render_mode="rgb_array", **kwargs)
        except (gymnasium.error.Error, ModuleNotFoundError) as err:
            raise ValueError(f"gymnasium cannot make {env_id!r}: {err}") from None
        return cls(env, size=size, name=env_id, state_key=state_key, env_state_key=env_state_key,
                   frameskip=frameskip)

    @property
    def fps(self) -> float | None:
        """Frames per second of the recorded frames (the env's rate over ``frameskip``)."""
        fps = self.env.metadata.get("render_fps")
        return None if fps is None else fps / self.frameskip

    def _call(self, fn, *args, **kwargs):
        """Run an env method; Gymnasium's own errors (e.g. a missing rendering dependency) become a
        ValueError naming the env."""
        try:
            return fn(*args, **kwargs)
        except _gymnasium().error.Error as err:
            raise ValueError(f"gym:{self.name}: {err}") from None

    def _frame(self) -> np.ndarray:
        return square_frame(self._call(self.env.render), self.size)

    def _state(self, observation) -> tuple[np.ndarray, dict]:
        """``(state (S,), extras)`` of an observation: the conditioning state and, for a Dict
        observation with ``env_state_key``, the full state as ``env_states``."""
        self.observation = observation
        return self.state_of(observation)

    def state_of(self, observation) -> tuple[np.ndarray, dict]:
        """:meth:`_state` without remembering the observation."""
        if self.state_key is None:
            return np.asarray(observation, dtype=np.float32).reshape(-1), {}
        state = np.asarray(observation[self.state_key], dtype=np.float32).reshape(-1)
        if self.env_state_key is None:
            return state, {}
        return state, {"env_states": np.asarray(observation[self.env_state_key], dtype=np.float64).reshape(-1)}

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """``(frame (size, size, 3) uint8, state (S,), extras)`` of a new episode."""
        self.env.action_space.seed(seed)
        observation, _ = self._call(self.env.reset, seed=seed)
        return self._frame(), *self._state(observation)

    def sample_action(self, rng: np.random.Generator) -> np.ndarray:
        """Uniform in the action Box (drawn from ``rng`` so collection is seeded by us)."""
        return rng.uniform(self.low, self.high).astype(self.env.action_space.dtype)

    uniform_action = sample_action

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict, bool]:
        """``(frame, state, extras, episode_over)`` after ``action`` held for ``frameskip`` env steps."""
        for _ in range(self.frameskip):
            observation, _, terminated, truncated, _ = self._call(self.env.step, action)
            if terminated or truncated:
                break
        return self._frame(), *self._state(observation), bool(terminated or truncated)

    def simulator(self):
        """The layer of the env's wrapper stack with ``get_state()`` / ``set_state(state)`` (an env
        that can be put back into a saved state), or a ValueError."""
        layer = self.env
        while layer is not None:
            if callable(getattr(type(layer), "get_state", None)) and callable(getattr(type(layer), "set_state", None)):
                return layer
            layer = getattr(layer, "env", None)
        raise ValueError(f"gym:{self.name} cannot be set to a saved state (no get_state/set_state in its wrapper "
                         f"stack), which the oracle baseline needs")

    def simulate(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Play ``actions`` ``(H, A)`` from the current state in the env's own dynamics and put it
        back; returns the frames ``(H, size, size, 3)`` and states ``(H, S)`` after each step."""
        layer = self.simulator()
        saved = layer.get_state()
        frames, states = [], []
        try:
            for action in np.asarray(actions, dtype=self.env.action_space.dtype):
                for _ in range(self.frameskip):
                    observation = layer.step(action)[0]
                frames.append(square_frame(layer.render(), self.size))
                states.append(self.state_of(observation)[0])
        finally:
            layer.set_state(saved)
        return np.stack(frames), np.stack(states)

    def stored_action(self, action: np.ndarray) -> np.ndarray:
        return np.asarray(action, dtype=np.float32).reshape(-1)

    def describe(self) -> dict:
        described = {"env": f"gym:{self.name}", "size": self.size, "action_low": self.low.tolist(),
                     "action_high": self.high.tolist()}
        keys = {"state_key": self.state_key, "env_state_key": self.env_state_key}
        described.update({k: v for k, v in keys.items() if v is not None})
        return {**described, "frameskip": self.frameskip} if self.frameskip > 1 else described

    def close(self) -> None:
        self.env.close()
