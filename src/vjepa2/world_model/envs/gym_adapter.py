"""Collect trajectories from any Gymnasium environment with RGB rendering and a Box action space.

``gymnasium`` is optional and imported only here, when an adapter is made::

    source = GymSource.make("Pendulum-v1", size=64)          # gymnasium.make(..., render_mode="rgb_array")
    vjepa2 collect --env gym:Pendulum-v1 --episodes 10 --steps 50 --out data/pendulum

Frames are ``env.render()`` resized (short side) and centre-cropped to ``size x size``; the state
is the flattened observation (Box observations only), actions are drawn uniformly from the Box
(which must be bounded) and stored as given. An episode that terminates early is kept, shorter.
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


class GymSource:
    """An episode source (``reset``/``step``/``sample_action``) over a Gymnasium env."""

    def __init__(self, env: Any, size: int = 64, name: str | None = None) -> None:
        gymnasium = _gymnasium()
        spaces = gymnasium.spaces
        if not isinstance(env.action_space, spaces.Box):
            raise ValueError(f"{name or env}: the action space is {type(env.action_space).__name__}; "
                             f"only Box (continuous) action spaces are supported")
        low, high = env.action_space.low, env.action_space.high
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"{name or env}: the Box action space is unbounded; random actions need finite bounds")
        if not isinstance(env.observation_space, spaces.Box):
            raise ValueError(f"{name or env}: the observation space is {type(env.observation_space).__name__}; "
                             f"states are taken from Box observations only")
        if getattr(env, "render_mode", None) != "rgb_array":
            raise ValueError(f"{name or env}: create the env with render_mode='rgb_array' "
                             f"(it has {getattr(env, 'render_mode', None)!r})")
        self.env = env
        self.size = size
        self.name = name or str(getattr(getattr(env, "spec", None), "id", type(env).__name__))
        self.low, self.high = low.astype(np.float64), high.astype(np.float64)

    @classmethod
    def make(cls, env_id: str, size: int = 64, **kwargs) -> GymSource:
        """``gymnasium.make(env_id, render_mode="rgb_array", **kwargs)`` wrapped as a source."""
        gymnasium = _gymnasium()
        try:
            env = gymnasium.make(env_id, render_mode="rgb_array", **kwargs)
        except gymnasium.error.Error as err:
            raise ValueError(f"gymnasium cannot make {env_id!r}: {err}") from None
        return cls(env, size=size, name=env_id)

    @property
    def fps(self) -> float | None:
        return self.env.metadata.get("render_fps")

    def _call(self, fn, *args, **kwargs):
        """Run an env method; Gymnasium's own errors (e.g. a missing rendering dependency) become a
        ValueError naming the env."""
        try:
            return fn(*args, **kwargs)
        except _gymnasium().error.Error as err:
            raise ValueError(f"gym:{self.name}: {err}") from None

    def _frame(self) -> np.ndarray:
        return square_frame(self._call(self.env.render), self.size)

    @staticmethod
    def _state(observation) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32).reshape(-1)

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """``(frame (size, size, 3) uint8, state (S,), extras)`` of a new episode."""
        self.env.action_space.seed(seed)
        observation, _ = self._call(self.env.reset, seed=seed)
        return self._frame(), self._state(observation), {}

    def sample_action(self, rng: np.random.Generator) -> np.ndarray:
        """Uniform in the action Box (drawn from ``rng`` so collection is seeded by us)."""
        return rng.uniform(self.low, self.high).astype(self.env.action_space.dtype)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict, bool]:
        """``(frame, state, extras, episode_over)`` after ``action``."""
        observation, _, terminated, truncated, _ = self._call(self.env.step, action)
        return self._frame(), self._state(observation), {}, bool(terminated or truncated)

    def stored_action(self, action: np.ndarray) -> np.ndarray:
        return np.asarray(action, dtype=np.float32).reshape(-1)

    def describe(self) -> dict:
        return {"env": f"gym:{self.name}", "size": self.size, "action_low": self.low.tolist(),
                "action_high": self.high.tolist()}

    def close(self) -> None:
        self.env.close()
