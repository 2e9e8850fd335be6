"""``vjepa2 plan-eval``: how often latent planning reaches goal images, next to random and zero actions.

::

    vjepa2 plan-eval --run runs/ac --env toy-push --task reach --out runs/plan-reach
    vjepa2 plan-eval --run runs/ac --env toy-push --task push --out runs/plan-push planner.samples=200
    vjepa2 plan-eval --run runs/ac-pendulum --env gym:Pendulum-v1 --out runs/plan-pendulum success_tolerance=0.1

Start/goal pairs: pair ``i`` resets the world with seed ``seed + i`` and plays ``goal_steps``
actions of the goal policy (by default the random policy that ``vjepa2 collect`` records; any
``goal_policy=MODULE:NAME``, seeded by the pair), so every goal is reachable; the frame reached is
the goal image, the true state reached the goal state. With ``start_steps=[a, b)`` the pair starts
at a step of that held-out episode instead of its first frame (DINO-WM's protocol: goals 25 env
steps along held-out trajectories), restored for every method by replaying the episode.
Pairs whose start already passes the success test are skipped (and listed), and the next seed
is drawn, until ``pairs`` pairs are found. The default seeds (from 100000) are far from those of
``vjepa2 collect`` (0, 1, ...), so the pairs are held out from the training episodes.

Each pair is then run from its start by every method, with the same budget of
``mpc.steps_per_goal`` actions and the same stop rule (the true success test, checked after
every action): model-predictive control with the latent planner, uniformly random actions, zero
actions, and on request the ``shortcut`` (no model: the agent straight to the goal's agent
position) and the ``oracle`` (the planner's search with the true simulator as its world model). Success (toy-push): ``reach`` = effector within ``reach_tolerance`` (0.05) of the
goal effector; ``push`` = block within 0.05 of the goal block position and 0.35 rad of its angle.
A Gymnasium env (``gym:<id>``, task ``state``) succeeds when the state vector is within
``success_tolerance`` (L2) of the goal state, or when every group of ``success`` holds (e.g.
PushT's agent and block positions within 20 and block angle within pi/9); the table's caption says
which.

Output in ``--out``: ``plan-eval-<task>.json`` (every episode), ``plan-eval-<task>.md`` (the
table), and pictures: ``plan-<task>-episode-<i>.png`` / ``.gif`` (observed frames beside the
goal) and ``plan-<task>-landscape.png`` (energy over a grid of first actions, chosen one marked).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vjepa2.config import ConfigError, apply_overrides, from_dict, load_yaml, resolve_recipe, to_dict
from vjepa2.files import atomic_write_text
from vjepa2.progress import progress_bar
from vjepa2.world_model.envs.control import GymControl, SuccessGroup, ToyPushControl, make_control
from vjepa2.world_model.mpc import Goal, MPCConfig, run_mpc
from vjepa2.world_model.policies import RANDOM, Policy, policy_info
from vjepa2.world_model.planner import (CEMConfig, LatentPlanner, PlanResult, SearchSpace, cem, fit_to_action_bounds,
                                       make_constraint)

BASELINES = ("random", "zero")
METHODS = (*BASELINES, "shortcut", "oracle")


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanEvalConfig:
    """One planning evaluation.

    Attributes:
        env: ``toy-push`` or ``gym:<gymnasium id>``.
        task: toy-push: ``reach`` or ``push``; Gymnasium envs: ``state`` (the default there).
        pairs: start/goal pairs evaluated.
        goal_steps: steps of the goal policy from the start to the goal (``K``; each step is
            ``frameskip`` env steps).
        goal_policy / goal_policy_noise: what walks from the start to the goal (``random``, or
            ``MODULE:NAME`` as in ``vjepa2 collect --policy``; see :mod:`vjepa2.world_model.policies`).
        start_steps: ``[a, b)``: each pair starts at step t, drawn uniformly from ``[a, b)``, of an
            episode of the goal policy (so start and goal lie on one held-out trajectory, as in
            DINO-WM's protocol); the start is restored by replaying the episode's first t actions.
        frameskip / state_key / env_state_key: as in ``vjepa2 collect`` (use the training data's).
        goal_frameskip: env steps per step of the goal policy (``start_steps`` and ``goal_steps``
            count those); null = ``frameskip``. DINO-WM's goals are 25 *env* steps along
            trajectories recorded at the env's rate: ``goal_frameskip=1 goal_steps=25``.
        seed: pair ``i`` is drawn with seed ``seed + i`` (skipped seeds are taken over by the next).
        size: frame size in pixels of the env's renderings (as collected for training).
        repeat_prob / block_bias: toy-push's random policy (as in ``vjepa2 collect``).
        success_tolerance: distance under which a goal counts as reached (toy-push: overrides its
            0.05 position tolerances; Gymnasium: L2 over the state vector, unless ``success`` is given).
        success: a Gymnasium env's success test as groups of env-state entries, each within its
            tolerance (``{dims: [4], tolerance: 0.349, angle: true}`` wraps angle differences);
            the reported distance is the first group's.
        shortcut_dims: env-state entries commanded as the action by the ``shortcut`` baseline
            (envs whose actions are target positions, e.g. PushT's ``[0, 1]``); toy-push's
            shortcut moves the effector straight at its goal position.
        baselines: which of ``random`` / ``zero`` / ``shortcut`` / ``oracle`` to run next to the
            planner. ``shortcut`` (no model) commands the agent straight to the goal's agent
            position every step: what a planner that only reads proprioception could do.
            ``oracle`` (toy-push, or a Gymnasium env with ``get_state``/``set_state`` somewhere
            in its wrapper stack; off by default: it is slow) is the same CEM + MPC with
            energies from the true simulator instead of the world model (each candidate played
            in the real dynamics, its frames encoded): the upper bound of latent planning with
            this encoder and these planner settings, which separates world-model error from the
            limits of the latent energy itself.
        pictures: episodes drawn as strips/GIFs (the first ones); 0 = none (no landscape either).
        landscape_grid: points per axis of the energy-landscape picture.
        planner: CEM settings. With ``constraint: box`` and no ``low``/``high``, the box is the
            env's action bounds; ``action_dims`` defaults to the entries the env uses.
        mpc: control-loop settings; ``steps_per_goal`` is every method's action budget.
    """

    env: str = "toy-push"
    task: Literal["reach", "push", "state"] | None = None
    pairs: int = 50
    goal_steps: int = 8
    seed: int = 100_000
    size: int = 64
    repeat_prob: float = 0.8
    block_bias: float = 0.5
    success_tolerance: float | None = None
    success: tuple[SuccessGroup, ...] = ()
    goal_policy: str = RANDOM
    goal_policy_noise: float = 0.0
    start_steps: tuple[int, int] = (0, 1)
    frameskip: int = 1
    goal_frameskip: int | None = None
    state_key: str | None = None
    env_state_key: str | None = None
    shortcut_dims: tuple[int, ...] | None = None
    baselines: tuple[str, ...] = BASELINES
    pictures: int = 1
    landscape_grid: int = 31
    planner: CEMConfig = field(default_factory=CEMConfig)
    mpc: MPCConfig = field(default_factory=MPCConfig)

    def validate(self) -> None:
        if self.env != "toy-push" and not self.env.startswith("gym:"):
            raise ConfigError(f"env: {self.env!r} is neither 'toy-push' nor 'gym:<gymnasium id>'")
        if self.env == "toy-push" and self.task not in ("reach", "push"):
            raise ConfigError(f"task: toy-push needs task reach or push (--task reach), got {self.task!r}")
        if self.env.startswith("gym:") and self.task not in (None, "state"):
            raise ConfigError(f"task: a Gymnasium env is scored on its state vector (task state), got {self.task!r}")
        if self.env.startswith("gym:") and self.success_tolerance is None and not self.success:
            raise ConfigError("success_tolerance: a Gymnasium env needs the state distance that counts as success, "
                              "e.g. success_tolerance=0.1, or success groups")
        if self.env == "toy-push" and (self.success or self.shortcut_dims is not None):
            raise ConfigError("success / shortcut_dims: toy-push has its own success test and shortcut; leave them out")
        if "shortcut" in self.baselines and self.env.startswith("gym:") and self.shortcut_dims is None:
            raise ConfigError("baselines: shortcut on a Gymnasium env needs shortcut_dims, the env-state entries "
                              "that are the agent's target position (e.g. shortcut_dims=[0,1])")
        if not 0 <= self.start_steps[0] < self.start_steps[1]:
            raise ConfigError(f"start_steps must be [a, b) with 0 <= a < b, got {list(self.start_steps)}")
        for name in ("frameskip", "goal_frameskip"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.goal_policy_noise <= 1:
            raise ConfigError(f"goal_policy_noise must be in [0, 1], got {self.goal_policy_noise}")
        for name in ("pairs", "goal_steps", "size", "landscape_grid"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pictures < 0:
            raise ConfigError(f"pictures must be >= 0, got {self.pictures}")
        if self.success_tolerance is not None and not self.success_tolerance > 0:
            raise ConfigError(f"success_tolerance must be positive, got {self.success_tolerance}")
        unknown = sorted(set(self.baselines) - set(METHODS))
        if unknown:
            raise ConfigError(f"baselines: unknown {unknown}; choose from {list(METHODS)}")

    @property
    def task_name(self) -> str:
        return self.task or "state"


def load_plan_eval_config(path: str | None = None, overrides=(), **top_level) -> PlanEvalConfig:
    """YAML file (or the defaults) + ``top_level`` keys (None = not given) + dotted overrides, validated."""
    data = load_yaml(resolve_recipe("plan-eval", path)) if path else {}
    data.update({k: v for k, v in top_level.items() if v is not None})
    return from_dict(PlanEvalConfig, apply_overrides(data, overrides))


def control_for(cfg: PlanEvalConfig, source=None) -> ToyPushControl | GymControl:
    """The env of ``cfg`` under control (``source``: an already built Gymnasium episode source, e.g. in tests)."""
    return make_control(cfg.env, cfg.task, size=cfg.size, repeat_prob=cfg.repeat_prob, block_bias=cfg.block_bias,
                        success_tolerance=cfg.success_tolerance, source=source, frameskip=cfg.frameskip,
                        state_key=cfg.state_key, env_state_key=cfg.env_state_key, success=cfg.success,
                        shortcut_dims=cfg.shortcut_dims)


# ------------------------------------------------------------------------------------------------
# Pairs and episodes
# ------------------------------------------------------------------------------------------------


@dataclass
class Pair:
    """A start (``reset(seed)``, then ``start_actions`` replayed) and the goal the goal policy
    reached from there: its image, its true state (for success tests) and the state the world
    model observes there (``goal_observed``, for a planner energy with a state term)."""

    seed: int
    goal_image: np.ndarray
    goal_state: np.ndarray
    start_distance: float
    goal_observed: np.ndarray | None = None
    start_actions: list[np.ndarray] = field(default_factory=list)
    goal_frameskip: int | None = None  # env steps per start action (None: the control's own)


@contextlib.contextmanager
def frameskip_of(control, frameskip: int | None):
    """``control``'s source steps ``frameskip`` env steps at a time inside the block (None: as it is)."""
    kept = control.source.frameskip
    control.source.frameskip = kept if frameskip is None else frameskip
    try:
        yield
    finally:
        control.source.frameskip = kept


def restore_start(control, pair: Pair) -> None:
    """Put ``control`` at the pair's start: reset with its seed, replay its start actions (each
    held for the pair's ``goal_frameskip`` env steps, as :func:`make_pairs` made them)."""
    control.reset(pair.seed)
    with frameskip_of(control, pair.goal_frameskip):
        for action in pair.start_actions:
            control.step_env(action)


def walk(control, policy: Policy, rng: np.random.Generator, steps: int) -> list[np.ndarray]:
    """``steps`` actions of ``policy`` played from where ``control`` is; returns them."""
    actions = []
    for _ in range(steps):
        frame, state = control.observe()
        action = policy(policy_info(control.source, frame, state, {"env_states": control.true_state()}), rng)
        control.step_env(action)
        actions.append(np.array(action, copy=True))
    return actions


def make_pairs(control, cfg: PlanEvalConfig) -> tuple[list[Pair], list[int]]:
    """``cfg.pairs`` start/goal pairs and the seeds skipped because their start was already a success."""
    pairs, skipped = [], []
    policy = Policy(cfg.goal_policy, control.source, cfg.goal_policy_noise)
    attempts = 20 * cfg.pairs
    for seed in range(cfg.seed, cfg.seed + attempts):
        first, end = cfg.start_steps
        start_step = first if end - first == 1 else int(np.random.default_rng([seed, 2]).integers(first, end))
        control.reset(seed)
        policy.reset(seed)
        rng = np.random.default_rng(seed)
        with frameskip_of(control, cfg.goal_frameskip):
            start_actions = walk(control, policy, rng, start_step)
            walk(control, policy, rng, cfg.goal_steps)
        (goal_image, observed), goal_state = control.observe(), control.true_state()
        pair = Pair(seed, goal_image.copy(), goal_state, 0.0, np.array(observed, dtype=np.float32), start_actions,
                    cfg.goal_frameskip)
        restore_start(control, pair)
        if control.success(goal_state):
            skipped.append(seed)
            continue
        pair.start_distance = control.distance(goal_state)
        pairs.append(pair)
        if len(pairs) == cfg.pairs:
            return pairs, skipped
    raise ValueError(f"only {len(pairs)} of {cfg.pairs} pairs in {attempts} seeds have a goal that differs from "
                     f"the start; raise goal_steps (now {cfg.goal_steps}) so the goal policy moves further")


@dataclass
class EpisodeResult:
    """One method on one pair: ``success``, final ``distance``, ``steps`` executed, wall ``seconds``."""

    method: str
    seed: int
    success: bool
    distance: float
    steps: int
    seconds: float


def baseline_action(control, pair: Pair, method: str, rng: np.random.Generator) -> np.ndarray:
    """The next action of a model-free baseline: ``random`` (uniform in the action bounds), ``zero``,
    or ``shortcut`` (the agent straight to the goal's agent position)."""
    if method == "random":
        return control.uniform_action(rng)
    if method == "shortcut":
        return control.reference_action(pair.goal_state)
    return control.zero_action()


def run_baseline(control, pair: Pair, method: str, budget: int) -> EpisodeResult:
    """A model-free baseline (:func:`baseline_action`, seeded by the pair), same stop rule as MPC."""
    restore_start(control, pair)
    rng = np.random.default_rng([pair.seed, 1])
    start, steps = time.perf_counter(), 0
    while not control.success(pair.goal_state) and steps < budget:
        control.step_env(baseline_action(control, pair, method, rng))
        steps += 1
    return EpisodeResult(method, pair.seed, control.success(pair.goal_state), control.distance(pair.goal_state),
                         steps, time.perf_counter() - start)


def run_planner(control, pair: Pair, world, planner, mpc: MPCConfig, method: str = "planner"):
    """Model-predictive control from the pair's start toward its goal image; returns (result, episode)."""
    restore_start(control, pair)
    goal = Goal(pair.goal_image, reached=lambda: control.success(pair.goal_state), name=f"seed {pair.seed}",
                state=pair.goal_observed)
    episode = run_mpc(world, planner, control, [goal], mpc)
    result = EpisodeResult(method, pair.seed, episode.success, control.distance(pair.goal_state),
                           len(episode.actions), episode.seconds)
    return result, episode


class SimulatorPlanner:
    """The ``oracle`` baseline: :func:`~vjepa2.world_model.planner.cem` with the same settings as
    the latent planner, but each candidate is played in the env's own dynamics from the current
    state (the source's ``simulate``: toy-push, or a Gymnasium env whose wrapper stack can save and
    restore its state), its frames are encoded, and the energy is the mean L1 between those
    latents and the goal latent (last step, or summed over steps, as ``config.energy`` says), plus
    the same state term as the planner's (``state_weight``) on the states reached."""

    def __init__(self, control, world, config: CEMConfig) -> None:
        self.control, self.world, self.config = control, world, config
        self.model_action_dim = control.model_action_dim

    def plan(self, frames, states, goal, past_actions=None, seed=None, goal_state=None, initial=None) -> PlanResult:
        started = time.perf_counter()
        dims = list(range(self.model_action_dim)) if self.config.action_dims is None else list(self.config.action_dims)
        space = SearchSpace(self.config, dims, None if states is None else states[-1])

        def energy(searched: torch.Tensor) -> torch.Tensor:  # (S, H, P) -> (S,)
            planned = space.actions(searched)
            played = [self.control.source.simulate(sequence) for sequence in planned.double().numpy()]
            rendered = np.concatenate([frames_ for frames_, _ in played])
            reached = np.stack([states_ for _, states_ in played])
            latents = self.world.encode(rendered).view(*planned.shape[:2], *goal.shape)
            per_step = (latents - goal).abs().mean(dim=(-2, -1))
            per_step = per_step + self.state_term(reached, goal_state)
            return per_step[:, -1] if self.config.energy == "final" else per_step.sum(dim=1)

        result = cem(energy, len(dims), space.config, seed=seed, initial=initial)
        planned = space.actions(result.actions[None])[0]
        actions = torch.zeros(self.config.horizon, self.model_action_dim)
        actions[:, dims] = planned
        return PlanResult(actions, planned, result.energy, result.best_energy, result.history,
                          time.perf_counter() - started, result.actions)

    def state_term(self, robot_states: np.ndarray, goal_state: torch.Tensor | None) -> torch.Tensor:
        """``(S, H)``: the weighted L1 between the candidates' robot states ``(S, H, S_dim)`` after
        each step and the goal's (as :meth:`LatentPlanner.energies` adds it)."""
        if self.config.state_weight == 0 or goal_state is None:
            return torch.zeros(robot_states.shape[:2])
        dims = list(self.config.state_dims) if self.config.state_dims is not None else slice(None)
        gap = torch.as_tensor(robot_states, dtype=torch.float32)[..., dims] - goal_state.float()[dims]
        return self.config.state_weight * gap.abs().mean(dim=-1)


# ------------------------------------------------------------------------------------------------
# The evaluation
# ------------------------------------------------------------------------------------------------


@dataclass
class MethodSummary:
    method: str
    episodes: int
    success_rate: float
    final_distance_mean: float
    final_distance_median: float
    steps_mean: float
    seconds_per_action: float


@dataclass
class PlanEvalReport:
    """Per-method summaries, every episode, the skipped seeds and the files written."""

    config: dict
    summaries: list[MethodSummary]
    episodes: list[EpisodeResult]
    skipped_seeds: list[int]
    start_distance_mean: float
    files: list[str] = field(default_factory=list)
    success_test: str = ""

    def summary(self, method: str) -> MethodSummary:
        return next(s for s in self.summaries if s.method == method)

    def markdown(self) -> str:
        cfg = self.config
        lines = [f"Planning on {cfg['env']} ({cfg['task'] or 'state'}): {len(self.episodes) // len(self.summaries)} "
                 f"start/goal pairs, {goal_description(cfg)} (mean start distance "
                 f"{self.start_distance_mean:.3f}), budget {cfg['mpc']['steps_per_goal']} actions; "
                 f"{len(self.skipped_seeds)} seeds skipped (start already at the goal)."
                 + (f" Success: {self.success_test}." if self.success_test else ""), "",
                 "| method | success rate | final distance (mean) | final distance (median) | actions (mean) | "
                 "seconds / action |", "|---|---:|---:|---:|---:|---:|"]
        for s in self.summaries:
            lines.append(f"| {s.method} | {100 * s.success_rate:.0f}% ({round(s.success_rate * s.episodes)}/"
                         f"{s.episodes}) | {s.final_distance_mean:.3f} | {s.final_distance_median:.3f} | "
                         f"{s.steps_mean:.1f} | {s.seconds_per_action:.3g} |")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"config": self.config, "summaries": [dataclasses.asdict(s) for s in self.summaries],
                "episodes": [dataclasses.asdict(e) for e in self.episodes], "skipped_seeds": self.skipped_seeds,
                "start_distance_mean": self.start_distance_mean, "files": self.files}


def goal_description(cfg: dict) -> str:
    """How the goals were made, in words (from a plan-eval config dict)."""
    goal_frameskip = cfg.get("goal_frameskip") or cfg.get("frameskip", 1)
    skip = f" x {goal_frameskip} env steps" if goal_frameskip > 1 else ""
    first, end = cfg.get("start_steps", (0, 1))
    if cfg.get("goal_policy", RANDOM) == RANDOM and (first, end) == (0, 1):
        return f"goals {cfg['goal_steps']}{skip} random actions away"
    start = f"step {first}" if end - first == 1 else f"a step in [{first}, {end})"
    return (f"goals {cfg['goal_steps']}{skip} steps of {cfg.get('goal_policy', RANDOM)} after {start} of its "
            f"held-out episode")


def summarize(method: str, results: list[EpisodeResult]) -> MethodSummary:
    distances = np.array([r.distance for r in results])
    steps = sum(r.steps for r in results)
    return MethodSummary(method, len(results), float(np.mean([r.success for r in results])), float(distances.mean()),
                         float(np.median(distances)), steps / len(results),
                         sum(r.seconds for r in results) / max(steps, 1))


def resolve_planner_config(cfg: CEMConfig, control) -> CEMConfig:
    """The env's controlled action entries and, unless the config sets a constraint of its own, the
    env's action bounds as CEM's box (see :func:`~vjepa2.world_model.planner.fit_to_action_bounds`)."""
    if cfg.action_dims is None and control.action_dims is not None:
        cfg = from_dict(CEMConfig, {**dataclasses.asdict(cfg), "action_dims": tuple(control.action_dims)})
    return fit_to_action_bounds(cfg, control.low, control.high)


def check_world(world, control) -> None:
    """The world model must take this env's actions and states."""
    pcfg = world.predictor.config
    control.reset(0)
    state = control.observe()[1]
    if pcfg.action_dim != control.model_action_dim or pcfg.state_dim != np.asarray(state).size:
        raise ValueError(f"the world model takes {pcfg.action_dim}-D actions and {pcfg.state_dim}-D states but this "
                         f"env has {control.model_action_dim}-D actions and {np.asarray(state).size}-D states; "
                         f"train it on trajectories collected from this env")


def draw_landscape(control, pair: Pair, world, planner: LatentPlanner, cfg: PlanEvalConfig, path: Path) -> Path | None:
    """Energy over a grid of first actions (the first two planned entries) at the pair's start."""
    from vjepa2.world_model.plan_plots import energy_landscape

    if planner.planned_dim < 2:
        return None
    restore_start(control, pair)
    frame, state = control.observe()
    latents = world.encode(np.stack([frame, pair.goal_image]))
    frames, states, goal = latents[:1], torch.as_tensor(state, dtype=torch.float32)[None], latents[1]
    goal_state = None if pair.goal_observed is None else torch.as_tensor(pair.goal_observed)
    plan = planner.plan(frames, states, goal, seed=cfg.mpc.seed, goal_state=goal_state)
    constraint = make_constraint(planner.config, planner.planned_dim)
    low, high = (b[:2].numpy() for b in constraint.grid_bounds())
    xs, ys = np.linspace(low[0], high[0], cfg.landscape_grid), np.linspace(low[1], high[1], cfg.landscape_grid)
    grid = torch.zeros(len(ys) * len(xs), planner.planned_dim)
    grid[:] = plan.planned[0]  # entries beyond the first two stay at the plan's values
    grid[:, 0] = torch.as_tensor(np.tile(xs, len(ys)), dtype=torch.float32)
    grid[:, 1] = torch.as_tensor(np.repeat(ys, len(xs)), dtype=torch.float32)
    energies = planner.landscape(frames, states, goal, grid, later_actions=plan.planned[1:],
                                 goal_state=goal_state).numpy()
    outside = constraint.violation(grid).numpy() > 1e-9  # points the planner may not choose
    energies = np.where(outside, np.nan, energies).reshape(len(ys), len(xs))
    reference = control.reference_action(pair.goal_state)
    return energy_landscape(energies, xs, ys, plan.planned[0, :2].numpy(), path,
                            title=f"{cfg.task_name}: energy of the first action (seed {pair.seed})",
                            reference=None if reference is None else reference[:2], labels=control.labels,
                            reference_label="effector straight to goal")


def plan_eval(world, cfg: PlanEvalConfig, out: str | Path | None = None, source=None,
              progress: bool = True) -> PlanEvalReport:
    """Run the evaluation of ``cfg`` with ``world`` (``encode`` + ``predictor``, e.g. a
    :class:`~vjepa2.world_model.model.WorldModel`); write the table, JSON and pictures to ``out``.

    Args:
        source: a ready Gymnasium episode source (for ``gym:`` envs built by the caller, e.g. a test env).
    """
    control = control_for(cfg, source)
    check_world(world, control)
    planner = LatentPlanner(world.predictor, resolve_planner_config(cfg.planner, control))
    pairs, skipped = make_pairs(control, cfg)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    task = cfg.task_name
    methods = ["planner", *cfg.baselines]
    oracle = SimulatorPlanner(control, world, planner.config) if "oracle" in cfg.baselines else None
    if oracle is not None and hasattr(control.source, "simulator"):
        control.source.simulator()  # a Gymnasium env that cannot be put back into a state fails here
    results: dict[str, list[EpisodeResult]] = {m: [] for m in methods}
    files: list[str] = []
    bar = progress_bar(pairs, desc=f"plan-eval {task}", unit="pair", disable=not progress)
    for index, pair in enumerate(bar):
        result, episode = run_planner(control, pair, world, planner, cfg.mpc)
        results["planner"].append(result)
        for method in cfg.baselines:
            if method == "oracle":
                results[method].append(run_planner(control, pair, world, oracle, cfg.mpc, method="oracle")[0])
            else:
                results[method].append(run_baseline(control, pair, method, cfg.mpc.steps_per_goal))
        done = results["planner"]
        bar.set_postfix(success=f"{sum(r.success for r in done)}/{len(done)}",
                        s_per_action=f"{sum(r.seconds for r in done) / max(sum(r.steps for r in done), 1):.2f}")
        if out_dir is not None and index < cfg.pictures:
            files += _draw_episode(episode, pair, result, out_dir / f"plan-{task}-episode-{index}", task)
    if out_dir is not None and cfg.pictures:
        drawn = draw_landscape(control, pairs[0], world, planner, cfg, out_dir / f"plan-{task}-landscape.png")
        files += [str(drawn)] if drawn else []
    config = to_dict(cfg)
    config["planner"] = to_dict(planner.config)
    report = PlanEvalReport(config, [summarize(m, results[m]) for m in methods],
                            [r for m in methods for r in results[m]], skipped,
                            float(np.mean([p.start_distance for p in pairs])), files, control.describe_success())
    if out_dir is not None:
        md, js = out_dir / f"plan-eval-{task}.md", out_dir / f"plan-eval-{task}.json"
        report.files += [str(md), str(js)]
        atomic_write_text(md, report.markdown() + "\n")
        atomic_write_text(js, json.dumps(report.to_json(), indent=2) + "\n")
    return report


def _draw_episode(episode, pair: Pair, result: EpisodeResult, stem: Path, task: str) -> list[str]:
    from vjepa2.world_model.plan_plots import episode_gif, episode_strip

    verdict = "reached" if result.success else "not reached"
    title = f"{task}, seed {pair.seed}: {verdict} after {result.steps} actions (distance {result.distance:.3f})"
    strip = episode_strip(episode.frames, pair.goal_image, stem.with_suffix(".png"), title=title)
    gif = episode_gif(episode.frames, pair.goal_image, stem.with_suffix(".gif"))
    return [str(strip), str(gif)]
