"""PushT under the protocol the planning papers report (DINO-WM arXiv 2411.04983, kept by jepa-wms
arXiv 2512.24497 and LeWorldModel arXiv 2603.19312), from nothing to the table::

    pip install gym-pusht
    python benchmarks/pusht_protocol.py --seeds 0 1 --out runs/pusht-protocol
    python benchmarks/pusht_protocol.py --seeds 0 --quick --out /tmp/pusht-quick      # minutes, a smoke run

Per training seed: ``vjepa2 collect`` of the weak policy below (frameskip 5: one model step = 5 env
steps, the target held), the frames pretrain the ``tiny`` recipe (or ``--encoder`` reuses one),
``vjepa2 train-ac`` on the trajectories, then ``vjepa2 plan-eval`` on held-out episodes of the
same policy acting at the env's rate: each pair starts at env step t in [0, 10) of a seeded episode
and its goal is the frame 25 env steps later; success = agent and block positions within 20
(L2 over those 4 entries, PushT's 512-unit frame) and block angle within pi/9; budget 10 model
steps (50 env steps). Rows: ``planner`` (latent L1 energy + ``--state-weight`` x the agent's
distance to its goal position, as DINO-WM and jepa-wms add proprioception), ``latent-only`` (the
paper's energy), ``shortcut`` (no model: the agent commanded straight to its goal position),
``random``, ``zero``; with ``--oracle`` also the oracle (the true simulator as the world model) under
each energy and search, the bound of what a better predictor alone could give. Every command is
printed and logged; finished stages are reused.

The world model sees ``proprio`` (the agent's position, 2-D) as its state; the success test reads
``state`` (agent x, y, block x, y, angle) from the Dict observation this module's env returns.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ENV_ID = "pusht_protocol/PushTDict-v0"
ENV = f"gym:pusht_protocol:{ENV_ID}"  # gymnasium imports this module, which registers the env
RELATIVE_ENV_ID = "pusht_protocol/PushTDictRelative-v0"
HERE = Path(__file__).resolve().parent
SUCCESS = "success=[{dims: [0, 1, 2, 3], tolerance: 20}, {dims: [4], tolerance: 0.3491, angle: true}]"
ROWS = ("planner", "latent-only", "shortcut", "random", "zero")


# ------------------------------------------------------------------------------------------------
# The env and the weak policy (imported by the vjepa2 commands through ENV and --policy)
# ------------------------------------------------------------------------------------------------


def make_pusht_dict(render_mode: str = "rgb_array"):
    """gym-pusht's PushT (``obs_type="state"``) with Dict observations ``{"proprio": agent x, y,
    "state": agent x, y, block x, y, angle}`` (the shape of stable-worldmodel's port)."""
    import gymnasium
    import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)

    class DictObservation(gymnasium.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            box = env.observation_space
            self.observation_space = gymnasium.spaces.Dict({
                "proprio": gymnasium.spaces.Box(box.low[:2], box.high[:2], dtype=np.float64),
                "state": box})

        def observation(self, observation):
            observation = np.asarray(observation, dtype=np.float64)
            return {"proprio": observation[:2].copy(), "state": observation.copy()}

        def get_state(self):
            """The bodies' poses and velocities (what the oracle baseline restores)."""
            agent, block = self.env.unwrapped.agent, self.env.unwrapped.block
            return (tuple(agent.position), tuple(agent.velocity), tuple(block.position), block.angle,
                    tuple(block.velocity), block.angular_velocity)

        def set_state(self, state):
            """A fresh physics space with the bodies as saved: pymunk's cached contacts from the
            candidates played since would otherwise push the block when the real episode goes on."""
            self.env.unwrapped._setup()
            agent, block = self.env.unwrapped.agent, self.env.unwrapped.block
            block.angle = state[3]  # first: pymunk turns a body about its centre of gravity, moving its position
            agent.position, agent.velocity, block.position = state[0], state[1], state[2]
            block.velocity, block.angular_velocity = state[4], state[5]

    # The bare env: the time limit is the registration's, outside, so that the oracle's simulated
    # candidates (played through this wrapper) do not count against the episode.
    return DictObservation(gymnasium.make("gym_pusht/PushT-v0", obs_type="state", render_mode=render_mode).unwrapped)


def make_pusht_relative(render_mode: str = "rgb_array"):
    """:func:`make_pusht_dict` with actions relative to the agent: ``(dx, dy)`` in [-100, 100]^2,
    the PD target being the agent's position plus the action (a variant of the world model's input)."""
    import gymnasium

    class RelativeActions(gymnasium.ActionWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.action_space = gymnasium.spaces.Box(-100.0, 100.0, (2,), np.float32)

        def action(self, action):
            agent = np.asarray(self.env.unwrapped.agent.position, dtype=np.float64)
            return np.clip(agent + np.asarray(action, dtype=np.float64), 0.0, 512.0)

        def get_state(self):
            return self.env.get_state()

        def set_state(self, state):
            self.env.set_state(state)

    return RelativeActions(make_pusht_dict(render_mode))


def _register() -> None:
    try:
        import gymnasium
    except ImportError:
        return
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(ENV_ID, entry_point=make_pusht_dict, max_episode_steps=300)
        gymnasium.register(RELATIVE_ENV_ID, entry_point=make_pusht_relative, max_episode_steps=300)


_register()


class WeakPolicy:
    """The "weak" data policy of the protocol: each step's target is the agent's position plus
    U(-100, 100) per axis, clipped to within 100 of the block and to the 512-unit table, so that
    the agent keeps meeting the block and the block moves."""

    def get_action(self, info: dict) -> np.ndarray:
        state, rng = np.asarray(info["env_state"], dtype=np.float64), info["rng"]
        target = state[:2] + rng.uniform(-100.0, 100.0, 2)
        target = np.clip(target, state[2:4] - 100.0, state[2:4] + 100.0)
        return np.clip(target, 0.0, 512.0)


class WeakPolicyRelative(WeakPolicy):
    """:class:`WeakPolicy` for the relative-action env: the same targets, as offsets from the agent."""

    def get_action(self, info: dict) -> np.ndarray:
        return np.clip(super().get_action(info) - np.asarray(info["env_state"][:2]), -100.0, 100.0)


# ------------------------------------------------------------------------------------------------
# The protocol
# ------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (data, encoder, world model)")
    p.add_argument("--out", default="runs/pusht-protocol", help="working folder (reused: finished stages are kept)")
    p.add_argument("--episodes", type=int, default=300, help="training trajectories of the weak policy")
    p.add_argument("--steps", type=int, default=20, help="model steps per trajectory (x 5 env steps)")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels")
    p.add_argument("--encoder", help="reuse these encoder weights instead of pretraining on the PushT frames")
    p.add_argument("--pretrain-steps", type=int, default=2000, help="tiny-recipe steps on the PushT frames")
    p.add_argument("--ac-steps", type=int, default=3000, help="train-ac iterations")
    p.add_argument("--pairs", type=int, default=50, help="start/goal pairs")
    p.add_argument("--samples", type=int, default=64, help="CEM samples (the papers: 300)")
    p.add_argument("--iterations", type=int, default=5, help="CEM iterations (the papers: 30)")
    p.add_argument("--horizon", type=int, default=1, help="planning horizon in model steps")
    p.add_argument("--state-weight", type=float, default=0.1, help="the planner row's proprioceptive energy weight")
    p.add_argument("--step-radius", type=float, help="search targets within this distance of the agent "
                   "(planner.step_radius; the weak policy's moves are <= 100); default: the whole table")
    p.add_argument("--state-oracle", nargs="*", metavar="SEARCH",
                   help="also state-oracle rows: CEM with the true simulator and the true state gap as its energy "
                        "(the search's ceiling; no model); SEARCH = SAMPLESxITERATIONSxHORIZON[rRADIUS], e.g. "
                        "64x5x1 or 64x5x3r100; none given: the planner rows' search")
    p.add_argument("--energy-check", action="store_true",
                   help="also rank 64 real one-step outcomes per pair by each energy (Spearman with the true gap)")
    p.add_argument("--oracle", action="store_true",
                   help="also the oracle rows (true simulator as the world model; ~25 min per seed)")
    p.add_argument("--oracle-pairs", type=int, default=20, help="pairs of the oracle rows (the first of the 50)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 20 episodes, 50 + 100 steps, 6 pairs")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.quick:
        args.episodes, args.steps, args.pretrain_steps, args.ac_steps, args.pairs = 20, 8, 50, 100, 6
        args.samples, args.iterations, args.oracle_pairs = 16, 2, min(args.oracle_pairs, 3)
    return args


def run(command: list[str], log: Path) -> None:
    """Run one vjepa2 command (printed, appended to ``log``); a failure stops the protocol."""
    line = " ".join(shlex.quote(part) for part in command)
    print(f"$ {line}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    with open(log, "a") as out:
        out.write(f"$ {line}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        sys.exit(f"failed (exit {done.returncode}): {line}\nsee {log}")


def vjepa2(*args: str) -> list[str]:
    return [sys.executable, "-m", "vjepa2", *args]


def collect(args, seed_dir: Path, seed: int, log: Path) -> Path:
    """The weak policy's training trajectories (with videos when the encoder pretrains on them)."""
    data = seed_dir / "data"
    run(vjepa2("collect", "--env", ENV, "--state-key", "proprio", "--env-state-key", "state",
               "--policy", "pusht_protocol:WeakPolicy", "--frameskip", "5",
               *([] if args.encoder else ["--video"]), "--episodes",  # videos: only to pretrain on
               str(args.episodes), "--steps", str(args.steps), "--size", str(args.size), "--seed",
               str(1000 * seed), "--out", str(data)), log)
    return data


def encoder(args, seed_dir: Path, data: Path, seed: int, log: Path) -> str:
    if args.encoder:
        return args.encoder
    pre = seed_dir / "pretrain"
    warmup, cooldown = min(40, args.pretrain_steps // 10), min(60, args.pretrain_steps // 10)
    constant = args.pretrain_steps - warmup - cooldown
    final = pre / "checkpoints" / f"step-{args.pretrain_steps:08d}.pt"
    if not final.is_file():
        run(vjepa2("pretrain", "--out", str(pre), "--resume", f"seed={seed}", f"threads={args.threads}",
                   f"data.sources=[{{kind: folder, path: {data}}}]", f"phases.warmup.iterations={warmup}",
                   f"phases.constant.iterations={constant}", f"phases.cooldown.iterations={cooldown}",
                   *(f"phases.{phase}.resolution={args.size}" for phase in ("warmup", "constant", "cooldown")),
                   "log.tensorboard=false", "log.progress_bar=false"), log)
    return str(final)


def train_world_model(args, seed_dir: Path, data: Path, weights: str, seed: int, log: Path) -> Path:
    ac = seed_dir / "ac"
    if not (ac / "checkpoints").is_dir() or not any((ac / "checkpoints").glob(f"step-{args.ac_steps:08d}.pt")):
        run(vjepa2("train-ac", "--data", str(data), "--out", str(ac), "--resume", f"encoder.weights={weights}",
                   f"encoder.img_size={args.size}", f"seed={seed}", f"threads={args.threads}",
                   "model.residual=true", "loss.change_weight=3", f"schedule.iterations={args.ac_steps}",
                   f"schedule.warmup={min(50, args.ac_steps // 10)}",
                   f"schedule.cooldown={args.ac_steps // 4}", "log.tensorboard=false"), log)
    return ac


def plan(args, seed_dir: Path, ac: Path, name: str, state_weight: float, baselines: str, log: Path,
         pairs: int | None = None, extra: tuple[str, ...] = ()) -> dict:
    """One ``vjepa2 plan-eval`` of the protocol into ``seed_dir/name`` (reused when there); its report."""
    out = seed_dir / name
    result = out / "plan-eval-state.json"
    planner = (f"planner.samples={args.samples}", f"planner.iterations={args.iterations}",
               f"planner.elites={max(args.samples // 8, 2)}", f"planner.horizon={args.horizon}")
    if not result.is_file():
        run(vjepa2("plan-eval", "--run", str(ac), "--env", ENV, "--out", str(out), "--pairs", str(pairs or args.pairs),
                   SUCCESS, "state_key=proprio", "env_state_key=state", "frameskip=5", f"size={args.size}",
                   "goal_policy=pusht_protocol:WeakPolicy", "goal_frameskip=1", "goal_steps=25", "start_steps=[0, 10]",
                   "shortcut_dims=[0, 1]", f"baselines={baselines}", "mpc.steps_per_goal=10", *planner,
                   "planner.imagined_states=target", "planner.state_dims=[0, 1]",
                   f"planner.state_weight={state_weight}", "pictures=1",
                   *([f"planner.step_radius={args.step_radius}"] if args.step_radius else []), *extra), log)
    return json.loads(result.read_text())


#: ``--oracle`` rows: (name, state weight, plan-eval overrides); CEM 32 x 3 on ``--oracle-pairs`` pairs.
ORACLE_CEM = ("planner.samples=32", "planner.iterations=3", "planner.elites=4")
ORACLES = (("oracle-latent-h1", 0.0, ("planner.horizon=1",)),
           ("oracle-latent-h3", 0.0, ("planner.horizon=3",)),
           ("oracle-state-h1", 0.1, ("planner.horizon=1",)),
           ("oracle-latent-h1-128best", 0.0, ("planner.horizon=1", "planner.samples=128", "planner.elites=8",
                                              "planner.select=best")))


def oracles(args, seed_dir: Path, ac: Path, data: Path, log: Path) -> dict[str, dict]:
    """The oracle (true simulator) under each energy and search of :data:`ORACLES`, and with a
    random-init encoder (a 20-step train-ac makes the run folder the oracle reads it from)."""
    rows = {}
    for name, weight, extra in ORACLES:
        report = plan(args, seed_dir, ac, name, weight, "[oracle]", log, args.oracle_pairs,
                      (*ORACLE_CEM, *extra, "pictures=0"))
        rows[name] = {s["method"]: s for s in report["summaries"]}["oracle"]
    random_ac = seed_dir / "ac-random-init"
    if not (random_ac / "checkpoints").is_dir():
        run(vjepa2("train-ac", "--data", str(data), "--out", str(random_ac), "encoder.weights=random:tiny",
                   f"encoder.img_size={args.size}", f"threads={args.threads}", "schedule.iterations=20",
                   "schedule.warmup=2", "schedule.cooldown=5", "log.tensorboard=false"), log)
    report = plan(args, seed_dir, random_ac, "oracle-random-init-128best", 0.0, "[oracle]", log, args.oracle_pairs,
                  (*ORACLE_CEM, *ORACLES[-1][2], "pictures=0"))
    rows["oracle-random-init-128best"] = {s["method"]: s for s in report["summaries"]}["oracle"]
    return rows


# ------------------------------------------------------------------------------------------------
# Diagnostics: the search's ceiling (no model at all) and how well energies rank real outcomes
# ------------------------------------------------------------------------------------------------


def protocol_pairs(count: int, size: int = 64):
    """The protocol's env under control and its first ``count`` start/goal pairs (the same pairs as
    the plan-eval rows: same seeds, policy, start steps and goal offset)."""
    from vjepa2.world_model.plan_eval import control_for, load_plan_eval_config, make_pairs

    cfg = load_plan_eval_config(None, [SUCCESS, "state_key=proprio", "env_state_key=state", "frameskip=5", f"size={size}",
                                       "goal_policy=pusht_protocol:WeakPolicy", "goal_frameskip=1", "goal_steps=25",
                                       "start_steps=[0, 10]", "shortcut_dims=[0, 1]"], env=ENV, pairs=count)
    control = control_for(cfg)
    return control, make_pairs(control, cfg)[0]


def state_gap(states: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """``(..., 5) -> (...)``: the success test's two groups in units of their tolerances, summed
    (agent and block positions' L2 / 20 + the wrapped block-angle gap / (pi/9)); < 1 in both = success."""
    positions = np.linalg.norm(states[..., :4] - goal[:4], axis=-1) / 20.0
    angle = np.abs((states[..., 4] - goal[4] + np.pi) % (2 * np.pi) - np.pi) / (np.pi / 9)
    return positions + angle


def play(layer, actions: np.ndarray, frameskip: int = 5, size: int | None = None):
    """The env state ``(5,)`` after ``actions (H, 2)``, each held ``frameskip`` env steps, from the
    layer's current state, which is restored afterwards; rendered only when ``size`` is given, then
    ``(state, frame (size, size, 3))`` as the control's own ``simulate`` renders it."""
    from vjepa2.world_model.envs.gym_adapter import square_frame

    saved = layer.get_state()
    try:
        for action in np.asarray(actions, dtype=np.float32):
            for _ in range(frameskip):
                observation = layer.step(action)[0]
        state = np.asarray(observation["state"], dtype=np.float64)
        return state if size is None else (state, square_frame(layer.render(), size))
    finally:
        layer.set_state(saved)


def state_oracle(pairs: int, samples: int, iterations: int, horizon: int, step_radius: float | None,
                 budget: int = 10) -> dict:
    """MPC with CEM whose every candidate is played in the true simulator and scored by
    :func:`state_gap` of the state it reaches: a perfect world model with a perfect energy, so
    its success is the ceiling of this search on these pairs. The plan is the best sample (with an
    exact energy nothing beats it; the elites' mean of multi-step plans mixes distinct routes)."""
    import torch

    from vjepa2.world_model.plan_eval import restore_start
    from vjepa2.world_model.planner import SearchSpace, cem, cem_config

    control, chosen = protocol_pairs(pairs)
    layer = control.source.simulator()
    config = cem_config(samples=samples, iterations=iterations, elites=max(samples // 8, 2), horizon=horizon,
                        constraint="box", low=(0.0, 0.0), high=(512.0, 512.0), imagined_states="target",
                        step_radius=step_radius, select="best")
    wins, distances, started = 0, [], time.time()
    for pair in chosen:
        restore_start(control, pair)
        steps = 0
        while not control.success(pair.goal_state) and steps < budget:
            space = SearchSpace(config, [0, 1], torch.as_tensor(control.true_state()))  # the agent's x, y
            plan = cem(lambda searched: torch.as_tensor(np.array([
                state_gap(play(layer, sequence), pair.goal_state) for sequence in space.actions(searched).numpy()])),
                2, space.config, seed=steps)
            control.step_env(space.actions(plan.actions[None])[0, 0].numpy())
            steps += 1
        wins += control.success(pair.goal_state)
        distances.append(control.distance(pair.goal_state))
    return {"success_rate": wins / len(chosen), "final_distance_mean": float(np.mean(distances)),
            "pairs": len(chosen), "seconds": time.time() - started}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x)) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def energy_ranking(world, pairs: int, candidates: int = 64, size: int = 64) -> dict[str, float]:
    """At each pair's start, ``candidates`` first actions in the weak policy's range (targets within
    100 of the agent; the first is the shortcut's), each played in the simulator. Spearman rank
    correlations with the true :func:`state_gap` to the goal of: the world model's predicted latent
    energy (``predicted``), the encoder's energy of the real next frames (``encoder``), and the
    pixel L1 of the real next frames (``pixels``); mean over pairs. An energy that plans ranks
    outcomes like the true gap."""
    import torch

    from vjepa2.world_model.plan_eval import restore_start

    control, chosen = protocol_pairs(pairs, size)
    layer = control.source.simulator()
    rng = np.random.default_rng(0)
    rows = []
    for pair in chosen:
        restore_start(control, pair)
        frame, state = control.observe()
        agent = control.true_state()[:2]
        actions = np.clip(agent + rng.uniform(-100, 100, (candidates, 2)), 0, 512)
        actions[0] = pair.goal_state[:2]
        reached, frames = zip(*(play(layer, a[None], size=size) for a in actions))
        gap, frames = state_gap(np.stack(reached), pair.goal_state), np.stack(frames)
        latents = world.encode(np.concatenate([frame[None], frames, pair.goal_image[None]]))
        with torch.no_grad():
            predicted = world.predictor.rollout(
                latents[None, :1].expand(candidates, -1, -1, -1), torch.as_tensor(actions[:, None], dtype=torch.float32),
                torch.as_tensor(state, dtype=torch.float32)[None, None].expand(candidates, 1, -1))[:, 0]
        goal = latents[-1]
        pixels = np.abs(frames.astype(np.float32) - pair.goal_image.astype(np.float32)).mean(axis=(1, 2, 3))
        rows.append((spearman((predicted - goal).abs().mean((-2, -1)).numpy(), gap),
                     spearman((latents[1:-1] - goal).abs().mean((-2, -1)).numpy(), gap), spearman(pixels, gap)))
    return dict(zip(("predicted", "encoder", "pixels"), np.mean(rows, axis=0).round(3).tolist()))


def plan_folder(args, name: str, state_weight: float | None = None) -> str:
    """``name``, suffixed with the search and the row's ``state_weight`` (None: a row whose weight is
    fixed) where they differ from the defaults, so that a rerun with other planner settings plans
    again instead of reusing another search's rows."""
    search, default = planner_search(args), parse_args([])
    weight = "" if state_weight in (None, default.state_weight) else f"-w{state_weight:g}"
    return name + ("" if search == planner_search(default) else f"-{search}") + weight


def planner_search(args) -> str:
    """The planner rows' search in ``--state-oracle``'s SEARCH syntax."""
    radius = f"r{args.step_radius:g}" if args.step_radius else ""
    return f"{args.samples}x{args.iterations}x{args.horizon}{radius}"


def parse_search(search: str) -> tuple[int, int, int, float | None]:
    """``SAMPLESxITERATIONSxHORIZON[rRADIUS]`` -> (samples, iterations, horizon, step radius or None)."""
    head, _, radius = search.partition("r")
    try:
        samples, iterations, horizon = (int(x) for x in head.split("x"))
        return samples, iterations, horizon, float(radius) if radius else None
    except ValueError:
        sys.exit(f"--state-oracle {search!r}: write SAMPLESxITERATIONSxHORIZON[rRADIUS], e.g. 64x5x1 or 64x5x3r100")


def cached(path: Path, compute) -> dict:
    """``compute()``'s JSON result, kept in ``path`` and reused when there."""
    if not path.is_file():
        path.write_text(json.dumps(compute(), indent=2))
    return json.loads(path.read_text())


def run_seed(args, seed: int) -> dict[str, dict]:
    """All stages of one training seed; returns ``{row: summary}``."""
    seed_dir = Path(args.out) / f"seed-{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    log = seed_dir / "commands.log"
    started = time.time()
    data = collect(args, seed_dir, seed, log)
    weights = encoder(args, seed_dir, data, seed, log)
    ac = train_world_model(args, seed_dir, data, weights, seed, log)
    with_state = plan(args, seed_dir, ac, plan_folder(args, "plan", args.state_weight), args.state_weight,
                      "[shortcut, random, zero]", log)
    latents = plan(args, seed_dir, ac, plan_folder(args, "plan-latent-only"), 0.0, "[]", log)
    rows = {s["method"]: s for s in with_state["summaries"]}
    rows["latent-only"] = next(s for s in latents["summaries"] if s["method"] == "planner")
    rows = {row: rows[row] for row in ROWS}
    if args.oracle:
        rows.update(oracles(args, seed_dir, ac, data, log))
    for search in ([] if args.state_oracle is None else args.state_oracle or [planner_search(args)]):
        rows[f"state-oracle {search}"] = cached(seed_dir / f"state-oracle-{search}.json",
                                                lambda: state_oracle(args.pairs, *parse_search(search)))
    if args.energy_check:
        from vjepa2.world_model.model import load_world_model

        ranks = cached(seed_dir / "energy-ranking.json",
                       lambda: energy_ranking(load_world_model(ac), min(args.pairs, 20), size=args.size))
        print(f"seed {seed}: energy ranking (Spearman with the true gap): {ranks}", flush=True)
    print(f"seed {seed}: done in {time.time() - started:.0f} s", flush=True)
    return rows


def table(results: dict[int, dict[str, dict]], args) -> str:
    seeds = sorted(results)
    lines = [f"PushT, DINO-WM protocol: {args.pairs} pairs per seed, seeds {' '.join(map(str, seeds))}, "
             f"{args.episodes} weak-policy trajectories x {args.steps} steps (frameskip 5), CEM "
             f"{args.samples} x {args.iterations}, horizon {args.horizon}", "",
             "| method | success (mean over seeds) | per seed | final distance (mean) |", "|---|---:|---|---:|"]
    for row in [row for row in results[seeds[0]] if all(row in results[s] for s in seeds)]:
        rates = [100 * results[s][row]["success_rate"] for s in seeds]
        mean = statistics.mean(rates)
        spread = f" +- {statistics.stdev(rates):.0f}" if len(rates) > 1 else ""
        distance = statistics.mean(results[s][row]["final_distance_mean"] for s in seeds)
        lines.append(f"| {row} | {mean:.0f} %{spread} | {' / '.join(f'{r:.0f} %' for r in rates)} | {distance:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        import gym_pusht  # noqa: F401
    except ImportError:
        sys.exit("this benchmark needs gym-pusht: pip install gym-pusht")
    results = {seed: run_seed(args, seed) for seed in args.seeds}
    text = table(results, args)
    print(text)
    (Path(args.out) / "table.md").write_text(text + "\n")
    (Path(args.out) / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
