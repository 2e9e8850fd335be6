"""``toy-push``: a top-down table with a round end effector that pushes a square block.

Pure Python + NumPy, deterministic by seed, Gymnasium-style API::

    env = ToyPushEnv(ToyPushConfig(size=64))
    obs, info = env.reset(seed=0)                 # obs: (size, size, 3) uint8 RGB
    obs, reward, terminated, truncated, info = env.step(np.array([0.05, 0.0]))
    state = env.get_state()                       # (5,) [effector x, y, block x, y, angle]
    env.set_state(state)                          # replay from here

Coordinates are "table units": the table is the square ``[0, 1]^2`` (x right, y up; think of one
unit as one metre). An action is a displacement ``(dx, dy)`` of the effector, clipped per axis to
``[-max_step, max_step]``. Contact is resolved in ``substeps`` sub-steps: when the effector disc
overlaps the block, the block is pushed out along the contact normal and turned by the torque of
that push about its centre; a block against the table edge stops, and then stops the effector.

Robot convention: the AC predictor's default 7-D state/action is (xyz, 3 Euler angles, gripper).
:meth:`ToyPushEnv.robot_state` maps the toy world to it as ``(x, y, 0, 0, 0, 0, 0)`` — the
effector only (proprioception, as a robot knows its own pose but not the block's) — and actions
as ``(dx, dy, 0, 0, 0, 0, 0)``; :func:`action_from_robot` maps a 7-D action back. The block pose
is recorded separately (``env_states.npy`` in collected trajectories) for success tests.

:class:`ToyPushSource` is the env with the random policy that ``vjepa2 collect`` records.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from vjepa2.config import ConfigError

STATE_NAMES = ("effector_x", "effector_y", "block_x", "block_y", "block_angle")
ROBOT_DIM = 7
#: Frame rate recorded with collected toy-push trajectories.
FPS = 10.0

TABLE_RGB = np.array([196, 170, 132], dtype=np.float32)
BLOCK_RGB = np.array([40, 88, 200], dtype=np.float32)
MARKER_RGB = np.array([250, 214, 60], dtype=np.float32)
EFFECTOR_RGB = np.array([214, 48, 48], dtype=np.float32)


@dataclass(frozen=True)
class ToyPushConfig:
    """Geometry, rendering and task settings (lengths in table units, angles in radians)."""

    size: int = 64
    max_step: float = 0.075
    effector_radius: float = 0.05
    block_half_size: float = 0.08
    substeps: int = 5
    rotation_gain: float = 0.5
    texture: bool = True
    task: Literal["reach", "push"] = "push"
    reach_tolerance: float = 0.05
    push_tolerance: float = 0.05
    push_angle_tolerance: float = 0.35
    max_episode_steps: int = 0  # 0 = no time limit

    def validate(self) -> None:
        if self.size < 8:
            raise ConfigError(f"size must be at least 8 pixels, got {self.size}")
        for name in ("max_step", "effector_radius", "block_half_size", "reach_tolerance", "push_tolerance",
                     "push_angle_tolerance"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.substeps < 1:
            raise ConfigError(f"substeps must be >= 1, got {self.substeps}")
        if self.effector_radius + 2 * self.block_half_size * math.sqrt(2) >= 0.9:
            raise ConfigError("effector_radius / block_half_size are too large for the unit table")
        if self.max_episode_steps < 0:
            raise ConfigError(f"max_episode_steps must be >= 0, got {self.max_episode_steps}")


def wrap_angle(angle):
    """Angle(s) wrapped to ``[-pi, pi)``."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def reach_success(state: np.ndarray, goal: np.ndarray, tolerance: float = 0.05) -> bool:
    """Effector within ``tolerance`` of the goal state's effector position (states ``(5,)``)."""
    return bool(np.linalg.norm(np.asarray(state)[:2] - np.asarray(goal)[:2]) < tolerance)


def push_success(state: np.ndarray, goal: np.ndarray, tolerance: float = 0.05,
                 angle_tolerance: float = 0.35) -> bool:
    """Block within ``tolerance`` of the goal block position and ``angle_tolerance`` of its angle."""
    state, goal = np.asarray(state), np.asarray(goal)
    close = np.linalg.norm(state[2:4] - goal[2:4]) < tolerance
    return bool(close and abs(float(wrap_angle(state[4] - goal[4]))) < angle_tolerance)


def action_from_robot(action: np.ndarray) -> np.ndarray:
    """7-D robot action(s) ``(..., 7)`` -> toy action(s) ``(..., 2)`` (the xy displacement)."""
    action = np.asarray(action)
    if action.shape[-1] != ROBOT_DIM:
        raise ValueError(f"expected 7-D robot actions (..., 7), got shape {action.shape}")
    return action[..., :2]


def robot_from_xy(xy: np.ndarray) -> np.ndarray:
    """``(..., 2)`` positions or displacements -> ``(..., 7)`` robot vectors ``(x, y, 0, 0, 0, 0, 0)``."""
    xy = np.asarray(xy, dtype=np.float64)
    out = np.zeros(xy.shape[:-1] + (ROBOT_DIM,), dtype=np.float64)
    out[..., :2] = xy
    return out


class ToyPushEnv:
    """The toy pushing world; see the module docstring. ``task`` picks what ``reward``/``terminated``
    measure when a goal state is given to :meth:`reset` (``options={"goal": state}``)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    render_mode = "rgb_array"

    def __init__(self, config: ToyPushConfig | None = None) -> None:
        self.config = config or ToyPushConfig()
        self.config.validate()
        self.action_low = np.full(2, -self.config.max_step)
        self.action_high = np.full(2, self.config.max_step)
        self.observation_shape = (self.config.size, self.config.size, 3)
        self._state = np.zeros(5)
        self._goal: np.ndarray | None = None
        self._steps = 0
        self._rng = np.random.default_rng(0)

    # -- Gymnasium-style API ---------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Random start (block inside the table, effector not touching it), deterministic by ``seed``.

        ``options``: ``{"state": (5,) array}`` to start from a given state, ``{"goal": (5,) array}``
        to set the goal used by ``reward``/``terminated``.
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        options = options or {}
        unknown = set(options) - {"state", "goal"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; valid: 'state', 'goal'")
        if "state" in options:
            self.set_state(options["state"])
        else:
            self._state = self._random_state(self._rng)
        self._goal = None if options.get("goal") is None else self._checked_state(options["goal"])
        self._steps = 0
        return self.render(), self._info(contact=False)

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Move the effector by ``action`` ``(2,)`` (clipped), push the block, render.

        Returns ``(obs, reward, terminated, truncated, info)``; ``reward`` is minus the distance
        to the goal for the task (0 without a goal), ``terminated`` is the task's success test.
        """
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be a finite (dx, dy) pair, got {action!r}")
        delta = np.clip(action, self.action_low, self.action_high)
        contact = False
        for _ in range(self.config.substeps):
            contact |= self._substep(delta / self.config.substeps)
        self._steps += 1
        reward, terminated = self._score()
        limit = self.config.max_episode_steps
        truncated = bool(limit and self._steps >= limit and not terminated)
        return self.render(), reward, terminated, truncated, self._info(contact=contact)

    def render(self) -> np.ndarray:
        """``(size, size, 3)`` uint8 RGB top-down view of the current state."""
        return render_state(self._state, self.config)

    def close(self) -> None:
        """Nothing to release (Gymnasium API compatibility)."""

    # -- state access for planners -----------------------------------------------------------------

    def get_state(self) -> np.ndarray:
        """``(5,)`` float64 ``[effector x, y, block x, y, angle]`` (a copy)."""
        return self._state.copy()

    def set_state(self, state) -> None:
        """Teleport to ``state`` ``(5,)`` (positions are not re-validated against contact)."""
        self._state = self._checked_state(state)

    def robot_state(self) -> np.ndarray:
        """The 7-D proprioceptive state ``(x, y, 0, 0, 0, 0, 0)`` of the effector."""
        return robot_from_xy(self._state[:2])

    def sample_action(self, rng: np.random.Generator) -> np.ndarray:
        """A uniform random action in the action box."""
        return rng.uniform(self.action_low, self.action_high)

    def success(self, goal, task: str | None = None) -> bool:
        """Success test of ``task`` (``reach``/``push``, default the configured one) against ``goal`` ``(5,)``."""
        task = task or self.config.task
        goal = self._checked_state(goal)
        if task == "reach":
            return reach_success(self._state, goal, self.config.reach_tolerance)
        if task == "push":
            return push_success(self._state, goal, self.config.push_tolerance, self.config.push_angle_tolerance)
        raise ValueError(f"unknown task {task!r}; expected 'reach' or 'push'")

    # -- internals -----------------------------------------------------------------------------------

    def _checked_state(self, state) -> np.ndarray:
        state = np.array(state, dtype=np.float64).reshape(-1)
        if state.shape != (5,) or not np.all(np.isfinite(state)):
            raise ValueError(f"a toy-push state is 5 finite numbers {STATE_NAMES}, got {state!r}")
        state[4] = wrap_angle(state[4])
        return state

    def _random_state(self, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        block_xy = rng.uniform(0.25, 0.75, size=2)
        angle = rng.uniform(-np.pi, np.pi)
        reach = cfg.block_half_size * math.sqrt(2) + cfg.effector_radius
        for _ in range(1000):
            effector = rng.uniform(cfg.effector_radius, 1 - cfg.effector_radius, size=2)
            if np.linalg.norm(effector - block_xy) > reach + 0.02:
                break
        return np.array([*effector, *block_xy, angle])

    def _block_extent(self, angle: float) -> float:
        """Half-width of the block's axis-aligned bounding box."""
        h = self.config.block_half_size
        return h * (abs(math.cos(angle)) + abs(math.sin(angle)))

    def _penetration(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Overlap depth of effector and block, the contact normal (block -> effector, world frame)
        and the contact point on the block. Depth <= 0 means no contact."""
        cfg = self.config
        effector, centre, angle = self._state[:2], self._state[2:4], self._state[4]
        c, s = math.cos(angle), math.sin(angle)
        rot = np.array([[c, -s], [s, c]])
        local = rot.T @ (effector - centre)
        h = cfg.block_half_size
        closest = np.clip(local, -h, h)
        offset = local - closest
        dist = float(np.hypot(*offset))
        if dist > 1e-12:
            normal_local = offset / dist
            depth = cfg.effector_radius - dist
        else:  # effector centre inside the block: leave through the nearest face
            axis = int(np.argmax(np.abs(local)))
            normal_local = np.zeros(2)
            normal_local[axis] = 1.0 if local[axis] >= 0 else -1.0
            closest = local.copy()
            closest[axis] = h * normal_local[axis]
            depth = cfg.effector_radius + h - abs(local[axis])
        return depth, rot @ normal_local, centre + rot @ closest

    def _substep(self, delta: np.ndarray) -> bool:
        cfg = self.config
        r = cfg.effector_radius
        self._state[:2] = np.clip(self._state[:2] + delta, r, 1 - r)
        depth, normal, point = self._penetration()
        if depth <= 0:
            return False
        push = -normal * depth
        lever = point - self._state[2:4]
        # Torque of the push about the block centre over the square's moment of inertia
        # (per unit mass: side^2 / 6 = 2 h^2 / 3); the gain stands in for table friction.
        torque = lever[0] * push[1] - lever[1] * push[0]
        self._state[2:4] += push
        self._state[4] = wrap_angle(self._state[4] + cfg.rotation_gain * torque / (2 * cfg.block_half_size ** 2 / 3))
        extent = self._block_extent(self._state[4])
        self._state[2:4] = np.clip(self._state[2:4], extent, 1 - extent)
        # A block held by the table edge cannot give way: the effector stops at its surface instead.
        depth, normal, _ = self._penetration()
        if depth > 0:
            self._state[:2] = np.clip(self._state[:2] + normal * depth, r, 1 - r)
        return True

    def _score(self) -> tuple[float, bool]:
        if self._goal is None:
            return 0.0, False
        cfg = self.config
        if cfg.task == "reach":
            return -float(np.linalg.norm(self._state[:2] - self._goal[:2])), self.success(self._goal)
        return -float(np.linalg.norm(self._state[2:4] - self._goal[2:4])), self.success(self._goal)

    def _info(self, contact: bool) -> dict:
        return {"state": self.get_state(), "robot_state": self.robot_state(), "contact": contact,
                "steps": self._steps}


class ToyPushSource:
    """An episode source (``reset``/``step``/``sample_action``, as ``vjepa2 collect`` records) over
    :class:`ToyPushEnv` with the sticky random policy: each step keeps the previous action with
    probability ``repeat_prob``, otherwise draws a new one -- uniform in the action box, or with
    probability ``block_bias`` a random-length step roughly towards the block."""

    def __init__(self, config: ToyPushConfig | None = None, repeat_prob: float = 0.8, block_bias: float = 0.5,
                 frameskip: int = 1) -> None:
        if frameskip < 1:
            raise ValueError(f"frameskip must be >= 1, got {frameskip}")
        if not 0.0 <= repeat_prob < 1.0:
            raise ValueError(f"repeat_prob must be in [0, 1), got {repeat_prob}")
        if not 0.0 <= block_bias <= 1.0:
            raise ValueError(f"block_bias must be in [0, 1], got {block_bias}")
        self.env = ToyPushEnv(config)
        self.repeat_prob = repeat_prob
        self.block_bias = block_bias
        self._previous: np.ndarray | None = None
        self.frameskip = int(frameskip)  # env steps per source step, the action held
        self.fps = FPS / self.frameskip
        self.low, self.high = self.env.action_low, self.env.action_high

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
        frame, info = self.env.reset(seed=seed)
        self._previous = None
        return frame, self.env.robot_state(), {"env_states": info["state"]}

    def sample_action(self, rng: np.random.Generator) -> np.ndarray:
        if self._previous is None or rng.random() >= self.repeat_prob:
            if rng.random() < self.block_bias:
                self._previous = self._towards_block(rng)
            else:
                self._previous = self.env.sample_action(rng)
        return self._previous

    def _towards_block(self, rng: np.random.Generator) -> np.ndarray:
        """A random-length step roughly (+-0.5 rad) towards the block centre."""
        state = self.env.get_state()
        offset = state[2:4] - state[:2]
        heading = np.arctan2(offset[1], offset[0]) + rng.normal(0.0, 0.5)
        length = rng.uniform(0.3, 1.0) * self.env.config.max_step
        return np.clip(length * np.array([np.cos(heading), np.sin(heading)]), self.env.action_low, self.env.action_high)

    def uniform_action(self, rng: np.random.Generator) -> np.ndarray:
        return self.env.sample_action(rng)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict, bool]:
        for _ in range(self.frameskip):
            frame, _, _, _, info = self.env.step(action)
        return frame, self.env.robot_state(), {"env_states": info["state"]}, False

    def simulate(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Play env actions ``(H, 2)`` from the current state and put the world back; returns the
        frames ``(H, size, size, 3)`` and robot states ``(H, 7)`` after each step."""
        saved = self.env.get_state()
        frames, states = [], []
        try:
            for action in np.asarray(actions, dtype=np.float64):
                frame, state, _, _ = self.step(action)
                frames.append(frame)
                states.append(state)
        finally:
            self.env.set_state(saved)
        return np.stack(frames), np.stack(states)

    def stored_action(self, action: np.ndarray) -> np.ndarray:
        clipped = np.clip(action, self.env.action_low, self.env.action_high)
        return robot_from_xy(clipped).astype(np.float32)

    def describe(self) -> dict:
        described = {"env": "toy-push", "toy_push": asdict(self.env.config), "repeat_prob": self.repeat_prob,
                     "block_bias": self.block_bias}
        return {**described, "frameskip": self.frameskip} if self.frameskip > 1 else described

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Table coordinates ``(x, y)`` of the pixel centres, each ``(size, size)``; row 0 is the far edge (y = 1)."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = np.meshgrid(centres, 1.0 - centres)
    return x, y


@lru_cache(maxsize=8)
def _table_background(size: int, texture: bool) -> np.ndarray:
    """``(size, size, 3)`` float32 table colour with a faint fixed wood-grain texture (same for every episode)."""
    x, y = _pixel_grid(size)
    image = np.broadcast_to(TABLE_RGB, (size, size, 3)).copy()
    if texture:
        grain = np.sin(38.0 * y + 2.5 * np.sin(6.0 * x) + 1.3 * np.sin(17.0 * x + 3.0 * y))
        image *= (1.0 + 0.03 * grain)[..., None]
    return image


def _coverage(signed_distance: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased pixel coverage from a signed distance (table units; negative inside)."""
    return np.clip(0.5 - signed_distance * size, 0.0, 1.0)[..., None]


def render_state(state: np.ndarray, config: ToyPushConfig) -> np.ndarray:
    """Render a ``(5,)`` toy-push state to ``(size, size, 3)`` uint8 RGB."""
    size = config.size
    x, y = _pixel_grid(size)
    image = _table_background(size, config.texture).copy()
    ex, ey, bx, by, angle = (float(v) for v in state)
    c, s = math.cos(angle), math.sin(angle)
    # Block: signed distance to a rotated square.
    lx = c * (x - bx) + s * (y - by)
    ly = -s * (x - bx) + c * (y - by)
    h = config.block_half_size
    qx, qy = np.abs(lx) - h, np.abs(ly) - h
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    block_sd = outside + np.minimum(np.maximum(qx, qy), 0)
    alpha = _coverage(block_sd, size)
    image = image * (1 - alpha) + BLOCK_RGB * alpha
    # Orientation marker near the block's +x face, so the angle is visible beyond the square's symmetry.
    marker_sd = np.hypot(lx - 0.55 * h, ly) - 0.28 * h
    alpha = _coverage(marker_sd, size)
    image = image * (1 - alpha) + MARKER_RGB * alpha
    # Effector disc on top.
    effector_sd = np.hypot(x - ex, y - ey) - config.effector_radius
    alpha = _coverage(effector_sd, size)
    image = image * (1 - alpha) + EFFECTOR_RGB * alpha
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)
