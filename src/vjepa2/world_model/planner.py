"""Planning in latent space with the Cross-Entropy Method (CEM), as V-JEPA 2-AC plans (arXiv 2506.09985).

The planner searches for the action sequence whose imagined outcome is closest to a goal image:

1. draw ``samples`` sequences ``(H, P)`` from a Gaussian ``N(mean, std)`` (start: mean 0, std 1);
2. make every sample satisfy the action constraint (:class:`BoxConstraint` or
   :class:`L1BallConstraint`, per step) by **projection** onto the constraint set: each sample is
   replaced by its nearest point in the set, so all of them are valid and none is thrown away
   (rejection would waste most of the batch: with std 1 and a radius of 0.075 almost no Gaussian
   draw falls inside);
3. score all samples in one batched call of the energy function (for the world model: one
   batched, KV-cached rollout of the action-conditioned predictor from the observed latents, then
   the mean L1 distance between the imagined latents and the goal latent);
4. keep the ``elites`` lowest energies; move ``mean``/``std`` towards the elites' mean/std with
   momentum (``new = m * old + (1 - m) * elites``); repeat ``iterations`` times.

The plan returned is the final mean (``select: mean``, as the public release does) or the best
sample seen (``select: best``). Everything random comes from one explicit ``torch.Generator``
seeded per call, so the same seed gives the same plan.

Two entry points:

* :func:`cem` takes any energy function ``actions (S, H, P) -> energies (S,)`` (used by the tests
  on known convex energies, and by :class:`LatentPlanner`);
* :class:`LatentPlanner` plans with an :class:`~vjepa2.models.ac_predictor.ACPredictor` toward a
  goal latent.

Planned vs model actions: a robot action is often wider than what a task needs to control (the
toy world's 7-D robot action only moves in x, y). ``action_dims`` lists the model-action entries
the planner controls (``P = len(action_dims)``); the others are held at 0, and the constraint
applies to the controlled entries only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import torch

from vjepa2 import precision
from vjepa2.config import ConfigError, from_dict
from vjepa2.data.trajectories.poses import apply_action, set_to_target
from vjepa2.models.ac_predictor import ACCache, ACPredictor

EnergyFn = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CEMConfig:
    """Cross-Entropy Method settings; the defaults are the paper's (arXiv 2506.09985: 800 samples,
    10 iterations, the 10 best kept).

    Attributes:
        samples / iterations / elites: candidates per iteration, iterations, candidates kept.
        horizon: actions per planned sequence ``H``.
        init_mean / init_std: the initial Gaussian of every action entry; null (default) = from
            the constraint: a box's centre and width, or the paper's 0 and 1 for the L1 ball.
        momentum_mean / momentum_std: weight of the old mean/std in each update (0 = jump to the
            elites' statistics). 0.15 is the public release's value.
        constraint: ``l1_ball`` (each step's action has L1 norm <= ``radius``; the paper's 0.075 m),
            ``box`` (each entry within ``[low, high]``, or ``[-radius, radius]`` if not given), or
            ``auto`` (default): ``box`` where ``low``/``high`` are given (e.g. an env's action
            bounds, see :func:`fit_to_action_bounds`), else ``l1_ball``.
        radius: the L1-ball radius, or the box half-width when ``low``/``high`` are not set.
        low / high: per-entry box bounds ``(P,)`` (``constraint: box`` or ``auto``).
        action_dims: the model-action entries the planner controls (None: all of them).
        energy: ``final`` = distance of the last imagined latent to the goal; ``sum`` = summed
            over the imagined steps.
        select: return the final ``mean`` or the ``best`` sample seen.
        imagined_states: states of imagined steps: ``integrate`` them from the actions
            (:func:`vjepa2.data.trajectories.poses.apply_action`, needs state and action of the same
            width), ``target`` (the action is the next value of the first ``A`` state entries,
            as under absolute position control, e.g. PushT), ``hold`` the last observed state, or
            ``auto`` (integrate when widths match, else hold).
        state_weight: weight of the proprioceptive term of the energy (0, the paper's energy: latents
            only): ``state_weight * mean |s_h[state_dims] - goal_state[state_dims]|`` between each
            imagined state and the goal's observed state, added to that step's latent distance
            (then ``final`` or ``sum`` as for latents; jepa-wms, arXiv 2512.24497, studies this
            choice). Needs imagined states that move (not ``hold``) and a goal state.
        state_dims: the state entries of that term (None: all).
        step_radius: search each action as an offset of at most ``step_radius`` per entry from
            where the previous action left the agent, for envs whose actions are absolute position
            targets (``imagined_states: target``): the first offset from the current state's first
            entries, each next one from the previous target; the absolute action is kept inside
            ``low``/``high``. Keeps the candidates inside the moves a behaviour policy makes (PushT's
            weak policy sets targets within 100 of the agent), where the world model was trained;
            a search over the whole table mostly scores moves it never saw. None: search the
            absolute actions.
        dtype: ``fp32`` or ``bf16`` (autocast of the world-model rollout; energies in fp32).
        deduplicate: score each distinct candidate once. Projection maps every Gaussian draw
            beyond the constraint to its edge, and with the paper's std 1 against a radius of
            0.075 most draws land on the same few corners/vertices of the set (typically 80% of
            a first iteration are exact copies), so this saves most of the early world-model work
            without changing any energy.
        seed: seed of the sampling generator (a call may pass its own).
    """

    samples: int = 800
    iterations: int = 10
    elites: int = 10
    horizon: int = 1
    init_mean: float | None = None
    init_std: float | None = None
    momentum_mean: float = 0.15
    momentum_std: float = 0.15
    constraint: Literal["auto", "l1_ball", "box"] = "auto"
    radius: float = 0.075
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    action_dims: tuple[int, ...] | None = None
    energy: Literal["final", "sum"] = "final"
    select: Literal["mean", "best"] = "mean"
    imagined_states: Literal["auto", "integrate", "target", "hold"] = "auto"
    state_weight: float = 0.0
    state_dims: tuple[int, ...] | None = None
    step_radius: float | None = None
    dtype: Literal["fp32", "bf16"] = "fp32"
    deduplicate: bool = True
    seed: int = 0

    def validate(self) -> None:
        for name in ("samples", "iterations", "elites", "horizon"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.elites > self.samples:
            raise ConfigError(f"elites={self.elites} exceeds samples={self.samples}")
        if self.init_std is not None and (self.init_std < 0 or not math.isfinite(self.init_std)):
            raise ConfigError(f"init_std must be a finite number >= 0 or null (from the constraint), "
                              f"got {self.init_std}")
        if self.init_mean is not None and not math.isfinite(self.init_mean):
            raise ConfigError(f"init_mean must be finite or null (from the constraint), got {self.init_mean}")
        for name in ("momentum_mean", "momentum_std"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.radius > 0:
            raise ConfigError(f"radius must be positive, got {self.radius}")
        if (self.low is None) != (self.high is None):
            raise ConfigError("give both low and high (a box), or neither")
        if self.low is not None:
            if self.constraint == "l1_ball":
                raise ConfigError(f"low/high describe a box but constraint={self.constraint!r}; set constraint: box")
            if len(self.low) != len(self.high):
                raise ConfigError(f"low has {len(self.low)} entries but high has {len(self.high)}")
            if not all(math.isfinite(v) for v in (*self.low, *self.high)):
                raise ConfigError(f"low/high must be finite, got low={list(self.low)}, high={list(self.high)}; for "
                                  f"an unbounded action space give the range the actions take")
            bad = [i for i, (lo, hi) in enumerate(zip(self.low, self.high)) if not lo <= hi]
            if bad:
                raise ConfigError(f"low > high at entries {bad}: low={list(self.low)}, high={list(self.high)}")
            if self.action_dims is not None and len(self.action_dims) != len(self.low):
                raise ConfigError(f"low/high have {len(self.low)} entries but action_dims controls "
                                  f"{len(self.action_dims)}")
        if self.action_dims is not None:
            if not self.action_dims or len(set(self.action_dims)) != len(self.action_dims) or min(self.action_dims) < 0:
                raise ConfigError(f"action_dims must be distinct indices >= 0, got {list(self.action_dims)}")
        if not (self.state_weight >= 0 and math.isfinite(self.state_weight)):
            raise ConfigError(f"state_weight must be a finite number >= 0, got {self.state_weight}")
        if self.step_radius is not None and not (self.step_radius > 0 and math.isfinite(self.step_radius)):
            raise ConfigError(f"step_radius must be a positive number or null, got {self.step_radius}")
        if self.step_radius is not None and self.imagined_states != "target":
            raise ConfigError(f"step_radius plans offsets from the agent's position, which needs actions that are "
                              f"position targets: set imagined_states=target (got {self.imagined_states!r})")
        if self.state_dims is not None and (not self.state_dims or min(self.state_dims) < 0):
            raise ConfigError(f"state_dims must be indices >= 0 or null (all), got {list(self.state_dims)}")


def cem_config(**overrides) -> CEMConfig:
    """A validated :class:`CEMConfig` (unknown keys raise :class:`ConfigError`)."""
    return from_dict(CEMConfig, overrides)


def fit_to_action_bounds(config: CEMConfig, low, high, warn=print) -> CEMConfig:
    """``config`` planning inside an env's action bounds ``low``/``high`` ``(P,)`` (e.g. a Gymnasium
    ``Box``): with ``constraint`` ``auto`` or ``box`` and no bounds of its own, the box becomes the
    env's, so CEM starts at its centre (std: the box's width) and never leaves it. Unbounded
    (infinite) bounds leave ``config`` as it is and say so through ``warn``."""
    if config.constraint == "l1_ball" or config.low is not None:
        return config
    low, high = tuple(map(float, low)), tuple(map(float, high))
    if not all(math.isfinite(v) for v in (*low, *high)):
        warn(f"the action space is unbounded (low={list(low)}, high={list(high)}): planning in "
             + (f"an L1 ball of radius {config.radius} around 0 (CEM mean 0, std 1)"
                if config.constraint == "auto" else f"the box [-{config.radius}, {config.radius}]")
             + "; give planner.low / planner.high the range the actions take")
        return config
    return from_dict(CEMConfig, {**dataclasses.asdict(config), "low": low, "high": high})


# ------------------------------------------------------------------------------------------------
# Constraints (projection)
# ------------------------------------------------------------------------------------------------


class BoxConstraint:
    """Each entry of an action within ``[low_i, high_i]``; projection = clamping."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor) -> None:
        self.low, self.high = low.float(), high.float()

    def project(self, actions: torch.Tensor) -> torch.Tensor:
        """``(..., P) -> (..., P)``: the nearest point of the box."""
        return torch.maximum(torch.minimum(actions, self.high.to(actions)), self.low.to(actions))

    def violation(self, actions: torch.Tensor) -> torch.Tensor:
        """``(..., P) -> (...)``: how far each action lies outside the box (0 inside)."""
        over = (actions - self.high.to(actions)).clamp(min=0) + (self.low.to(actions) - actions).clamp(min=0)
        return over.amax(dim=-1)

    def grid_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.low, self.high

    def centre_and_spread(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P,)`` CEM's default initial mean and std: the box's centre and its width. About 60 % of
        first draws land on the box's faces (full moves) and the rest inside; on toy-push this start
        planned best of half-width, width, twice the width and the paper's std 1 (docs/results.md,
        "Planning", CEM's start)."""
        return (self.low + self.high) / 2, self.high - self.low


class L1BallConstraint:
    """Each action ``(P,)`` with ``sum |a_i| <= radius``; projection = Euclidean projection onto
    the L1 ball (sort-based soft thresholding, Duchi et al. 2008), vectorised over samples."""

    def __init__(self, radius: float, dims: int) -> None:
        self.radius = float(radius)
        self.dims = dims

    def project(self, actions: torch.Tensor) -> torch.Tensor:
        """``(..., P) -> (..., P)``: the nearest point of the ball (points inside are kept)."""
        magnitude = actions.abs()
        norms = magnitude.sum(dim=-1, keepdim=True)
        # The projection of an outside point shrinks every |a_i| by the same theta >= 0 (clipped at
        # 0); theta is found from the sorted magnitudes.
        ordered, _ = magnitude.sort(dim=-1, descending=True)
        excess = ordered.cumsum(dim=-1) - self.radius
        ranks = torch.arange(1, actions.shape[-1] + 1, device=actions.device, dtype=actions.dtype)
        positive = ordered - excess / ranks > 0
        count = positive.sum(dim=-1, keepdim=True).clamp(min=1)
        theta = excess.gather(-1, count - 1) / count.to(actions.dtype)
        projected = actions.sign() * (magnitude - theta).clamp(min=0)
        # Floating-point rounding can leave the sum a few ulps above the radius; a last rescale
        # makes "every sample is inside" hold exactly as far as one multiplication can.
        scale = (self.radius / projected.abs().sum(dim=-1, keepdim=True).clamp(min=1e-30)).clamp(max=1.0)
        return torch.where(norms > self.radius, projected * scale, actions)

    def violation(self, actions: torch.Tensor) -> torch.Tensor:
        """``(..., P) -> (...)``: L1 norm above the radius (0 inside)."""
        return (actions.abs().sum(dim=-1) - self.radius).clamp(min=0)

    def grid_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        r = torch.full((self.dims,), self.radius)
        return -r, r

    def centre_and_spread(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P,)`` CEM's default initial mean and std: the paper's 0 and 1 (most first draws land
        on the ball's surface, a bang-bang start)."""
        return torch.zeros(self.dims), torch.ones(self.dims)


def make_constraint(config: CEMConfig, dims: int) -> BoxConstraint | L1BallConstraint:
    """The constraint of ``config`` over ``dims`` planned entries."""
    if config.constraint == "l1_ball" or (config.constraint == "auto" and config.low is None):
        return L1BallConstraint(config.radius, dims)
    if config.low is not None:
        if len(config.low) != dims:
            raise ConfigError(f"low/high have {len(config.low)} entries but the planner controls {dims} action entries")
        return BoxConstraint(torch.tensor(config.low), torch.tensor(config.high))
    return BoxConstraint(torch.full((dims,), -config.radius), torch.full((dims,), config.radius))


class SearchSpace:
    """What CEM searches over for one plan: the planned entries themselves, or (``step_radius``)
    offsets from the agent's position, turned into absolute targets by :meth:`actions`.

    ``config`` is what :func:`cem` runs with (the offsets' box ``[-r, r]`` when searching offsets).
    """

    def __init__(self, config: CEMConfig, action_dims: list[int], state: torch.Tensor | None = None) -> None:
        """
        Args:
            config: the planner's settings.
            action_dims: the model-action entries planned (``P`` of them).
            state: ``(S,)`` the current state; with ``step_radius`` its ``action_dims`` entries are
                the agent's position that position-target actions set (``imagined_states: target``).
        """
        self.radius = config.step_radius
        self.config = config
        if self.radius is None:
            return
        dims = len(action_dims)
        if state is None or state.numel() <= max(action_dims):
            raise ValueError(f"step_radius plans offsets from the agent's position, state entries {action_dims}; "
                             f"got state {None if state is None else tuple(state.shape)}")
        self.origin = state.reshape(-1)[list(action_dims)].float()
        self.bounds = make_constraint(config, dims)
        r = float(self.radius)
        self.config = from_dict(CEMConfig, {**dataclasses.asdict(config), "constraint": "box", "low": (-r,) * dims,
                                            "high": (r,) * dims, "init_mean": None, "init_std": None})

    def actions(self, searched: torch.Tensor) -> torch.Tensor:
        """``(S, H, P)`` searched values -> ``(S, H, P)`` planned entries: offsets are added one step
        after the other to the origin, each target kept inside the planner's box."""
        if self.radius is None:
            return searched
        point = self.origin.to(searched).expand(searched.shape[0], -1)
        targets = []
        for step in range(searched.shape[1]):
            point = self.bounds.project(point + searched[:, step])
            targets.append(point)
        return torch.stack(targets, dim=1)


# ------------------------------------------------------------------------------------------------
# The Cross-Entropy Method on any energy
# ------------------------------------------------------------------------------------------------


@dataclass
class CEMResult:
    """Outcome of :func:`cem`.

    Attributes:
        actions: ``(H, P)`` the plan (the final mean or the best sample, per ``select``).
        energy: energy of ``actions``.
        best_actions / best_energy: ``(H, P)`` lowest-energy sample seen and its energy.
        history: per iteration ``{"best", "elite_mean", "std", "scored"}``: the best and the
            elites' mean energy, the mean std after the update, the candidates scored.
    """

    actions: torch.Tensor
    energy: float
    best_actions: torch.Tensor
    best_energy: float
    history: list[dict[str, float]] = field(default_factory=list)


def _finite_energies(energies: torch.Tensor, samples: int) -> torch.Tensor:
    energies = energies.detach().float().reshape(-1)
    if energies.numel() != samples:
        raise ValueError(f"the energy function returned {energies.numel()} values for {samples} samples; "
                         f"it must map actions (S, H, P) to energies (S,)")
    if not torch.isfinite(energies).any():
        raise ValueError("every candidate has a non-finite energy; check the world model and the goal latent")
    # A NaN/inf candidate is never an elite.
    return torch.nan_to_num(energies, nan=math.inf, posinf=math.inf)


def _score(energy_fn: EnergyFn, candidates: torch.Tensor, deduplicate: bool, device) -> tuple[torch.Tensor, int]:
    """``(S,)`` energies of ``candidates`` ``(S, H, P)`` and how many were scored, calling
    ``energy_fn`` once (on the distinct candidates only, when ``deduplicate``)."""
    if not deduplicate:
        return _finite_energies(energy_fn(candidates.to(device)), len(candidates)).cpu(), len(candidates)
    distinct, inverse = torch.unique(candidates.flatten(1), dim=0, return_inverse=True)
    energies = _finite_energies(energy_fn(distinct.view(-1, *candidates.shape[1:]).to(device)), len(distinct))
    return energies.cpu()[inverse], len(distinct)


@torch.no_grad()
def cem(energy_fn: EnergyFn, action_dim: int, config: CEMConfig | None = None, seed: int | None = None,
        device: torch.device | str = "cpu", initial: torch.Tensor | None = None) -> CEMResult:
    """Minimise ``energy_fn`` over constrained action sequences with the Cross-Entropy Method.

    Args:
        energy_fn: ``actions (S, H, P) -> energies (S,)``, lower is better; called once per
            iteration with the ``S <= config.samples`` candidates (the distinct ones when
            ``config.deduplicate``), and once with the final plan.
        action_dim: ``P``, the entries of one planned action.
        config: see :class:`CEMConfig` (``action_dims``, ``imagined_states``, ``dtype`` and
            ``energy`` are for :class:`LatentPlanner`; here only the search settings matter).
        seed: seed of the sampling generator (default ``config.seed``). Samples are drawn on the
            CPU, so a seed gives the same candidates on every device.
        device: where candidates are handed to ``energy_fn``.
        initial: ``(H, P)`` the mean to start from (a warm start, e.g. the previous plan shifted
            by one step); default: the constraint's centre or ``config.init_mean``.

    Returns:
        :class:`CEMResult`; every candidate ever scored, and the plan, satisfy the constraint.
    """
    cfg = config or CEMConfig()
    constraint = make_constraint(cfg, action_dim)
    generator = torch.Generator().manual_seed(cfg.seed if seed is None else int(seed))
    shape = (cfg.horizon, action_dim)
    centre, spread = constraint.centre_and_spread()
    mean = centre.expand(shape).clone() if cfg.init_mean is None else torch.full(shape, float(cfg.init_mean))
    if initial is not None:
        if tuple(initial.shape) != shape:
            raise ValueError(f"initial must be (horizon, actions) = {shape}, got {tuple(initial.shape)}")
        mean = constraint.project(initial.float().clone())
    std = spread.expand(shape).clone() if cfg.init_std is None else torch.full(shape, float(cfg.init_std))
    best_energy, best_actions = math.inf, constraint.project(mean)
    history = []
    for _ in range(cfg.iterations):
        noise = torch.randn((cfg.samples, *shape), generator=generator)
        candidates = constraint.project(mean + std * noise)
        energies, scored = _score(energy_fn, candidates, cfg.deduplicate, device)
        # A stable sort keeps ties in sample order, so the elites do not depend on the sort kernel.
        order = torch.argsort(energies, stable=True)[:cfg.elites]
        elites = candidates[order]
        if energies[order[0]] < best_energy:
            best_energy, best_actions = float(energies[order[0]]), candidates[order[0]].clone()
        mean = cfg.momentum_mean * mean + (1 - cfg.momentum_mean) * elites.mean(dim=0)
        std = cfg.momentum_std * std + (1 - cfg.momentum_std) * elites.std(dim=0, unbiased=False)
        history.append({"best": float(energies[order[0]]), "elite_mean": float(energies[order].mean()),
                        "std": float(std.mean()), "scored": scored})
    if cfg.select == "best":
        return CEMResult(best_actions, best_energy, best_actions, best_energy, history)
    # The elites' mean lies in the (convex) set, but momentum mixes in the previous mean, which
    # starts at init_mean and may lie outside it.
    plan = constraint.project(mean)
    plan_energy = float(_finite_energies(energy_fn(plan[None].to(device)), 1)[0])
    return CEMResult(plan, plan_energy, best_actions, best_energy, history)


# ------------------------------------------------------------------------------------------------
# Planning with the action-conditioned world model
# ------------------------------------------------------------------------------------------------


@dataclass
class PlanResult:
    """Outcome of :meth:`LatentPlanner.plan`.

    Attributes:
        actions: ``(H, A)`` model-space actions of the plan (execute ``actions[0]`` in MPC).
        planned: ``(H, P)`` the controlled entries.
        energy: energy of the plan under the world model; ``best_energy`` of the best sample.
        history: per-iteration statistics (see :class:`CEMResult`).
        seconds: wall-clock time of the call.
        searched: ``(H, P)`` what CEM searched over (``planned``, the default, or its offsets with
            ``step_radius``): the warm start of the next plan.
    """

    actions: torch.Tensor
    planned: torch.Tensor
    energy: float
    best_energy: float
    history: list[dict[str, float]]
    seconds: float
    searched: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.searched is None:  # CEM searched the planned entries themselves
            self.searched = self.planned


class PlanContext:
    """What the world model is conditioned on: ``T0`` observed steps, batch 1.

    The first ``T0 - 1`` steps (whose actions were executed and are known) are fed through the
    predictor once into a KV cache; every candidate then continues from that shared cache
    (:meth:`ACCache.expand`: views, no copy) and starts its rollout at the last observed frame.
    """

    def __init__(self, predictor: ACPredictor, frames: torch.Tensor, states: torch.Tensor,
                 past_actions: torch.Tensor | None = None, grid: tuple[int, int] | None = None,
                 autocast=nullcontext) -> None:
        """
        Args:
            frames: ``(T0, N, D)`` layer-normed latents of the observed frames.
            states: ``(T0, S)`` the states at those frames.
            past_actions: ``(T0 - 1, A)`` actions executed between them (None when ``T0 = 1``).
        """
        if frames.ndim != 3:
            raise ValueError(f"frames must be (T0, N, D) observed latents, got shape {tuple(frames.shape)}")
        if states.ndim != 2 or states.shape[0] != frames.shape[0]:
            raise ValueError(f"states must be (T0={frames.shape[0]}, S), got shape {tuple(states.shape)}")
        steps = frames.shape[0]
        expected = (steps - 1, predictor.config.action_dim)
        if steps > 1 and (past_actions is None or tuple(past_actions.shape) != expected):
            got = None if past_actions is None else tuple(past_actions.shape)
            raise ValueError(f"{steps} observed frames need past_actions of shape {expected} (the actions taken "
                             f"between them), got {got}")
        device = next(predictor.parameters()).device
        self.last_frame = frames[-1:].to(device)  # (1, N, D)
        self.last_state = states[-1:].to(device).float()  # (1, S)
        self.grid = grid
        self.cache: ACCache | None = None
        if steps > 1:
            self.cache = predictor.new_cache()
            with torch.no_grad(), autocast():
                predictor(frames[None, :-1].to(device), past_actions[None].to(device).float(),
                          states[None, :-1].to(device).float(), grid=grid, cache=self.cache)


class LatentPlanner:
    """CEM over the actions of an :class:`ACPredictor` toward an encoded goal image.

    ::

        planner = LatentPlanner(world.predictor, cem_config(samples=800, horizon=1, action_dims=(0, 1)))
        latents = world.encode(np.stack([frame, goal_image]))        # (2, N, D), layer-normed
        plan = planner.plan(latents[:1], state[None], latents[1])    # plan.actions (H, A)
    """

    def __init__(self, predictor: ACPredictor, config: CEMConfig | None = None,
                 state_update: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        """
        Args:
            predictor: the trained AC predictor (put in eval mode here).
            config: planner settings (:class:`CEMConfig`).
            state_update: ``(state (B, S), action (B, A)) -> (B, S)`` for imagined steps; default
                from ``config.imagined_states``.
        """
        self.predictor = predictor.eval()
        self.config = cfg = config or CEMConfig()
        pcfg = predictor.config
        if pcfg.use_extrinsics:
            raise ValueError("planning with an extrinsics-conditioned predictor is not supported")
        if cfg.action_dims is not None and max(cfg.action_dims) >= pcfg.action_dim:
            raise ConfigError(f"action_dims {list(cfg.action_dims)} index past the predictor's "
                              f"{pcfg.action_dim}-D actions")
        self.action_dims = list(cfg.action_dims) if cfg.action_dims is not None else list(range(pcfg.action_dim))
        self.state_update = state_update or self._default_state_update()
        make_constraint(cfg, len(self.action_dims))  # fail now on a box of the wrong width

    @property
    def planned_dim(self) -> int:
        """``P``: entries of one action the planner controls."""
        return len(self.action_dims)

    def _default_state_update(self):
        pcfg, mode = self.predictor.config, self.config.imagined_states
        same_width = pcfg.state_dim == pcfg.action_dim
        if mode == "integrate" and not same_width:
            raise ConfigError(f"imagined_states=integrate needs states and actions of the same width; the "
                              f"predictor has {pcfg.state_dim}-D states and {pcfg.action_dim}-D actions "
                              f"(use target or hold)")
        if mode == "target" and pcfg.action_dim > pcfg.state_dim:
            raise ConfigError(f"imagined_states=target sets the first {pcfg.action_dim} state entries to the action, "
                              f"but the states have only {pcfg.state_dim}")
        holds = mode == "hold" or (mode == "auto" and not same_width)
        if holds and self.config.state_weight > 0:
            raise ConfigError("state_weight > 0 compares imagined states with the goal's, but imagined states are "
                              "held (the actions are not state deltas); set imagined_states=target if actions are "
                              "absolute positions of the first state entries, or state_weight=0")
        if holds:
            return lambda state, action: state
        return set_to_target if mode == "target" else apply_action

    def _autocast(self):
        return precision.autocast(next(self.predictor.parameters()).device, self.config.dtype)

    def to_model_actions(self, planned: torch.Tensor) -> torch.Tensor:
        """``(..., P)`` planned entries -> ``(..., A)`` model actions (uncontrolled entries 0)."""
        out = planned.new_zeros(*planned.shape[:-1], self.predictor.config.action_dim)
        out[..., self.action_dims] = planned
        return out

    def context(self, frames: torch.Tensor, states: torch.Tensor, past_actions: torch.Tensor | None = None,
                grid: tuple[int, int] | None = None) -> PlanContext:
        """Condition on observed latents ``(T0, N, D)``, states ``(T0, S)`` (and the ``T0 - 1``
        executed actions), feeding all but the last step into a shared KV cache."""
        return PlanContext(self.predictor, frames, states, past_actions, grid, autocast=self._autocast)

    @torch.no_grad()
    def imagine(self, context: PlanContext, actions: torch.Tensor) -> torch.Tensor:
        """Roll every candidate out in one batched pass (KV-cached from the second imagined step on).

        Args:
            actions: ``(S, H, A)`` model-space action sequences.

        Returns:
            ``(S, H, N, D)`` imagined (layer-normed) latents after each action.
        """
        samples = actions.shape[0]
        frames = context.last_frame[None].expand(samples, -1, -1, -1)  # (S, 1, N, D)
        states = context.last_state[None].expand(samples, -1, -1)  # (S, 1, S_dim)
        cache = None if context.cache is None else context.cache.expand(samples)
        with self._autocast():
            return self.predictor.rollout(frames, actions.to(frames.device).float(), states,
                                          state_update=self.state_update, grid=context.grid, cache=cache)

    def state_path(self, context: PlanContext, actions: torch.Tensor) -> torch.Tensor:
        """``(S, H, S_dim)``: the state after each of the candidates' ``(S, H, A)`` actions (by ``state_update``)."""
        state, path = context.last_state.expand(actions.shape[0], -1), []
        for step in range(actions.shape[1]):
            state = self.state_update(state, actions[:, step].to(state.device).float())
            path.append(state)
        return torch.stack(path, dim=1)

    def energies(self, context: PlanContext, goal: torch.Tensor, actions: torch.Tensor,
                 goal_state: torch.Tensor | None = None) -> torch.Tensor:
        """Energy of each candidate: mean L1 between imagined and goal latents, plus (with
        ``state_weight``) the weighted mean L1 between the imagined and the goal state, per step.

        Args:
            goal: ``(N, D)`` layer-normed goal latent.
            actions: ``(S, H, A)`` model-space actions.
            goal_state: ``(S_dim,)`` the goal's observed state (needed when ``state_weight > 0``).

        Returns:
            ``(S,)`` float32: the final step's distance (``energy: final``) or the sum over steps.
        """
        imagined = self.imagine(context, actions).float()
        per_step = (imagined - goal.to(imagined.device).float()).abs().mean(dim=(-2, -1))  # (S, H)
        if self.config.state_weight > 0:
            if goal_state is None:
                raise ValueError("state_weight > 0 needs the goal's state (plan(..., goal_state=...))")
            dims = list(self.config.state_dims) if self.config.state_dims is not None else slice(None)
            gap = self.state_path(context, actions)[..., dims] - goal_state.to(per_step.device).float()[dims]
            per_step = per_step + self.config.state_weight * gap.abs().mean(dim=-1)
        return per_step[:, -1] if self.config.energy == "final" else per_step.sum(dim=1)

    def plan(self, frames: torch.Tensor, states: torch.Tensor, goal: torch.Tensor,
             past_actions: torch.Tensor | None = None, seed: int | None = None,
             grid: tuple[int, int] | None = None, goal_state: torch.Tensor | None = None,
             initial: torch.Tensor | None = None) -> PlanResult:
        """Plan ``H`` actions from observed latents toward a goal latent.

        Args:
            frames: ``(T0, N, D)`` layer-normed observed latents (usually ``T0 = 1``: the current frame).
            states: ``(T0, S)`` states at those frames.
            goal: ``(N, D)`` layer-normed latent of the goal image.
            past_actions: ``(T0 - 1, A)`` the actions executed between the observed frames.
            seed: sampling seed of this call (default ``config.seed``).
            goal_state: ``(S,)`` the goal's observed state, for the energy's state term.
            initial: ``(H, P)`` CEM's starting mean (a warm start from the previous plan).
        """
        if goal.ndim != 2 or tuple(goal.shape) != tuple(frames.shape[1:]):
            raise ValueError(f"goal must be one frame's latents {tuple(frames.shape[1:])}, got {tuple(goal.shape)}")
        start = time.perf_counter()
        context = self.context(frames, states, past_actions, grid)
        device = next(self.predictor.parameters()).device
        space = SearchSpace(self.config, self.action_dims, states[-1])
        result = cem(lambda searched: self.energies(context, goal, self.to_model_actions(space.actions(searched)),
                                                    goal_state),
                     self.planned_dim, space.config, seed=seed, device=device, initial=initial)
        planned = space.actions(result.actions[None])[0]
        return PlanResult(self.to_model_actions(planned), planned, result.energy, result.best_energy,
                          result.history, time.perf_counter() - start, result.actions)

    def landscape(self, frames: torch.Tensor, states: torch.Tensor, goal: torch.Tensor, first_actions: torch.Tensor,
                  later_actions: torch.Tensor | None = None, past_actions: torch.Tensor | None = None,
                  grid: tuple[int, int] | None = None, goal_state: torch.Tensor | None = None) -> torch.Tensor:
        """Energies of sequences that differ in their first action (for energy-landscape pictures).

        Args:
            first_actions: ``(G, P)`` planned first actions (e.g. a 2-D grid, flattened).
            later_actions: ``(H - 1, P)`` the rest of the sequence, shared (default: zeros).

        Returns:
            ``(G,)`` energies.
        """
        horizon = self.config.horizon
        later = (torch.zeros(horizon - 1, self.planned_dim) if later_actions is None else later_actions).float()
        if tuple(later.shape) != (horizon - 1, self.planned_dim):
            raise ValueError(f"later_actions must be ({horizon - 1}, {self.planned_dim}), got {tuple(later.shape)}")
        sequences = torch.cat((first_actions.float()[:, None], later[None].expand(len(first_actions), -1, -1)), dim=1)
        context = self.context(frames, states, past_actions, grid)
        return self.energies(context, goal, self.to_model_actions(sequences), goal_state).cpu()
