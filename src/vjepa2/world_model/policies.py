"""Behaviour policies: what acts in an env while ``vjepa2 collect`` records it and while
``vjepa2 plan-eval`` walks from a start to make a goal.

``random`` is the env's own random policy (toy-push: its sticky walk; a Gymnasium env: uniform in
the action box). Anything else is ``MODULE:NAME``, imported, naming one of

- a function ``policy(info, rng) -> action``;
- a class, made with no arguments, with ``get_action(info) -> action`` (the shape of
  stable-worldmodel's ``BasePolicy``; ``info["rng"]`` is the seeded generator) or
  ``__call__(info, rng)``; optional ``set_env(env)`` (called once with the Gymnasium env, or
  the toy world) and ``reset(seed)`` (called at the start of every episode).

``info`` holds ``frame`` ``(H, W, 3)`` uint8, ``state`` (the vector the world model is
conditioned on), ``env_state`` (the full state the success test reads), the entries of a Dict
observation by name, and ``rng``. The action is in the env's own action space. ``noise`` p
replaces each action by a uniform random one with probability p::

    vjepa2 collect --env gym:Pendulum-v1 --policy my_policies:swing_up --policy-noise 0.1 ...

    def swing_up(info, rng):                 # my_policies.py, on PYTHONPATH
        cos, sin, speed = info["state"]
        return np.array([2.0 * np.sign(speed)])
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys

import numpy as np

#: The built-in policy: the env's own random actions.
RANDOM = "random"


class PolicyError(ValueError):
    """A policy that cannot be imported or does not have a policy's shape."""


def import_object(spec: str):
    """``MODULE:NAME`` -> the object (``NAME`` may be dotted: ``module:Class.method``); ``MODULE``
    is looked for on ``sys.path`` and in the current directory."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise PolicyError(f"policy {spec!r}: give 'random' or MODULE:NAME (e.g. my_policies:weak_pusher)")
    if os.getcwd() not in sys.path and "" not in sys.path:  # the console script: a module beside the user
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise PolicyError(f"policy {spec!r}: cannot import {module_name!r} ({err}); put it in the current "
                          f"directory or on PYTHONPATH") from None
    for part in name.split("."):
        if not hasattr(obj, part):
            raise PolicyError(f"policy {spec!r}: {module_name!r} has no {name!r}")
        obj = getattr(obj, part)
    return obj


class Policy:
    """A behaviour policy bound to one episode source (see the module docstring).

    Args:
        spec: ``random`` or ``MODULE:NAME``.
        source: the episode source it acts in (its ``sample_action(rng)`` is the random policy,
            ``uniform_action(rng)`` the noise, ``low``/``high`` the action bounds; its ``env`` is
            handed to ``set_env``).
        noise: probability of replacing an action by a uniform random one.
    """

    def __init__(self, spec: str = RANDOM, source=None, noise: float = 0.0) -> None:
        if not 0.0 <= noise <= 1.0:
            raise PolicyError(f"policy noise must be in [0, 1], got {noise}")
        self.spec, self.source, self.noise = spec, source, float(noise)
        self._reset = None  # the policy's own reset(seed), if it has one
        self._act = None if spec == RANDOM else self._bind(import_object(spec), spec)

    def _bind(self, obj, spec: str):
        """``obj`` (a function or a class, see the module docstring) as a function (info, rng) -> action."""
        if inspect.isclass(obj):
            obj = obj()
            if hasattr(obj, "set_env"):
                obj.set_env(getattr(self.source, "env", self.source))
            self._reset = getattr(obj, "reset", None)
            if hasattr(obj, "get_action"):
                return lambda info, rng: obj.get_action(info)
        if not callable(obj):
            raise PolicyError(f"policy {spec!r} is a {type(obj).__name__}: give a function (info, rng) -> action "
                              f"or a class with get_action(info)")
        return obj

    def reset(self, seed: int) -> None:
        """Start of an episode (seeded)."""
        if self._reset is not None:
            self._reset(seed)

    def __call__(self, info: dict, rng: np.random.Generator) -> np.ndarray:
        """The next action (env space) for ``info`` (see the module docstring)."""
        if self._act is None:
            return self.source.sample_action(rng)
        if self.noise and rng.random() < self.noise:
            return self.source.uniform_action(rng)
        action = np.asarray(self._act({**info, "rng": rng}, rng), dtype=np.float64)
        if action.size != self.source.low.size:
            raise PolicyError(f"policy {self.spec!r} returned an action of shape {action.shape}; "
                              f"the env takes {self.source.low.shape}")
        return np.clip(action.reshape(self.source.low.shape), self.source.low, self.source.high)


def policy_info(source, frame: np.ndarray, state: np.ndarray, extras: dict) -> dict:
    """What a policy sees (module docstring): frame, state, env state and a Dict observation's entries."""
    observation = getattr(source, "observation", None)
    entries = dict(observation) if isinstance(observation, dict) else {}
    return {**entries, "frame": frame, "state": state, "env_state": extras.get("env_states", state)}
