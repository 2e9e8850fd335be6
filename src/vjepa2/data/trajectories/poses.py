"""Pose maths of robot states and actions: Euler angles <-> rotation matrices, actions between
states and states after actions. Pure torch (numpy in -> numpy out), no file I/O.

State convention ``pose7`` (DROID and the V-JEPA 2-AC paper): ``(x, y, z, rx, ry, rz, gripper)``
with ``(rx, ry, rz)`` *extrinsic* x-y-z Euler angles in radians, i.e. ``R = Rz(rz) @ Ry(ry) @ Rx(rx)``
(SciPy's ``Rotation.from_euler("xyz", ...)``). The action between states ``t`` and ``t+1`` is
``(x_{t+1} - x_t, Euler(R_{t+1} R_t^T), g_{t+1} - g_t)``: the relative rotation is expressed in the
world frame, so an action of ``+0.1`` about z turns a yaw of ``pi - 0.05`` into ``-pi + 0.05``
without a ``2 pi`` jump. Other state sizes use the ``delta`` convention (plain differences).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Convention = Literal["auto", "pose7", "delta"]


def _as_tensor(x) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.as_tensor(np.asarray(x, dtype=np.float64)), True


def _back(x: torch.Tensor, was_numpy: bool):
    return x.numpy() if was_numpy else x


def euler_to_matrix(angles):
    """Extrinsic x-y-z Euler angles ``(..., 3)`` (radians) -> rotation matrices ``(..., 3, 3)``."""
    a, was_numpy = _as_tensor(angles)
    rx, ry, rz = a.unbind(-1)
    cx, sx, cy, sy, cz, sz = rx.cos(), rx.sin(), ry.cos(), ry.sin(), rz.cos(), rz.sin()
    # Rz @ Ry @ Rx written out.
    rows = [
        [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
        [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
        [-sy, cy * sx, cy * cx],
    ]
    matrix = torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)
    return _back(matrix, was_numpy)


def matrix_to_euler(matrix):
    """Rotation matrices ``(..., 3, 3)`` -> extrinsic x-y-z Euler angles ``(..., 3)``.

    ``rx, rz`` in ``[-pi, pi]``, ``ry`` in ``[-pi/2, pi/2]``; at gimbal lock (``|ry| = pi/2``)
    ``rx = 0`` and the whole turn about the vertical goes to ``rz``.
    """
    m, was_numpy = _as_tensor(matrix)
    cos_y = torch.sqrt(m[..., 0, 0] ** 2 + m[..., 1, 0] ** 2)
    ry = torch.atan2(-m[..., 2, 0], cos_y)
    locked = cos_y < 1e-9
    rx = torch.where(locked, torch.zeros_like(ry), torch.atan2(m[..., 2, 1], m[..., 2, 2]))
    rz = torch.where(locked, torch.atan2(-m[..., 0, 1], m[..., 1, 1]), torch.atan2(m[..., 1, 0], m[..., 0, 0]))
    return _back(torch.stack((rx, ry, rz), dim=-1), was_numpy)


def _resolve(convention: Convention, dim: int) -> str:
    if convention == "auto":
        return "pose7" if dim == 7 else "delta"
    if convention == "pose7" and dim != 7:
        raise ValueError(f"the pose7 convention needs 7-D states (xyz, 3 Euler angles, gripper), got {dim}-D")
    if convention not in ("pose7", "delta"):
        raise ValueError(f"unknown state convention {convention!r}; expected 'auto', 'pose7' or 'delta'")
    return convention


def actions_from_states(states, convention: Convention = "auto"):
    """Actions between consecutive states: ``(..., T, S) -> (..., T-1, S)``.

    ``pose7``: ``(dxyz, Euler(R_{t+1} R_t^T), dgripper)``; ``delta``: ``s_{t+1} - s_t``.
    """
    s, was_numpy = _as_tensor(states)
    if s.ndim < 2 or s.shape[-2] < 2:
        raise ValueError(f"states must be (..., T, S) with T >= 2, got shape {tuple(s.shape)}")
    mode = _resolve(convention, s.shape[-1])
    delta = s[..., 1:, :] - s[..., :-1, :]
    if mode == "pose7":
        rot = euler_to_matrix(s[..., 3:6])
        relative = rot[..., 1:, :, :] @ rot[..., :-1, :, :].transpose(-1, -2)
        delta = torch.cat((delta[..., :3], matrix_to_euler(relative), delta[..., 6:]), dim=-1)
    return _back(delta, was_numpy)


def set_to_target(state, action):
    """The state after an absolute position command: the first ``A`` entries of ``state (..., S)``
    become ``action (..., A)``, the rest are held (``A <= S``)."""
    s, was_numpy = _as_tensor(state)
    a, _ = _as_tensor(action)
    if a.shape[-1] > s.shape[-1]:
        raise ValueError(f"a {a.shape[-1]}-D target cannot set a {s.shape[-1]}-D state")
    return _back(torch.cat((a.to(s.dtype), s[..., a.shape[-1]:]), dim=-1), was_numpy)


def apply_action(state, action, convention: Convention = "auto"):
    """The state after ``action``: ``(..., S), (..., S) -> (..., S)``; inverse of :func:`actions_from_states`.

    ``pose7``: ``xyz + dxyz``, ``R' = R(d_euler) @ R``, ``gripper + dgripper``. Works on batches
    (the planner integrates the states of 800 imagined trajectories at once).
    """
    s, was_numpy = _as_tensor(state)
    a, _ = _as_tensor(action)
    a = a.to(s.dtype)
    mode = _resolve(convention, s.shape[-1])
    if a.shape[-1] != s.shape[-1]:
        raise ValueError(f"action has {a.shape[-1]} dims but the state has {s.shape[-1]}")
    out = s + a
    if mode == "pose7":
        rot = euler_to_matrix(a[..., 3:6]) @ euler_to_matrix(s[..., 3:6])
        out = torch.cat((out[..., :3], matrix_to_euler(rot), out[..., 6:]), dim=-1)
    return _back(out, was_numpy)
