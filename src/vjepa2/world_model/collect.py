"""``vjepa2 collect``: write the trajectories of a behaviour policy in our format (:mod:`vjepa2.data.trajectories.trajectory`).

::

    vjepa2 collect --env toy-push --episodes 200 --steps 32 --out data/toy_push --size 64 --seed 0
    vjepa2 collect --env gym:Pendulum-v1 --episodes 10 --steps 50 --out data/pendulum

Episode ``i`` is seeded with ``seed + i`` and written to ``OUT/episode_<i>/`` (``steps`` actions,
``steps + 1`` frames); existing episodes are kept, so an interrupted collection resumes where it
stopped. ``--format lerobot`` writes a LeRobot v3.0 dataset instead (:mod:`vjepa2.data.trajectories.lerobot_write`:
one parquet and one h264 mp4 for all episodes, readable by LeRobot's tools and by ``vjepa2 train-ac``),
built aside and moved into place at the end. For toy-push the stored states/actions use the 7-D
robot convention (effector ``(x, y, 0, 0, 0, 0, 0)``; see :mod:`vjepa2.world_model.envs.toy_push`)
and ``env_states.npy`` holds the full ``(T, 5)`` world state for success tests.

``--policy`` chooses what acts (:mod:`vjepa2.world_model.policies`: ``random``, or your own
``MODULE:NAME``, optionally mixed with uniform noise); ``--frameskip k`` records every k-th env
step, the action held in between. The toy-push random policy is *sticky*: each step keeps the previous action with probability
``repeat_prob``, otherwise draws a new one — uniform in the action box, or with probability
``block_bias`` a random-length step roughly towards the block — so the effector travels far
enough to meet and push the block (i.i.d. uniform actions mostly jitter in place and rarely
touch it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from vjepa2.data.trajectories.trajectory import write_trajectory
from vjepa2.files import OutputPathError, RunLock, check_output_dir, write_json
from vjepa2.progress import progress_bar
from vjepa2.world_model.envs.toy_push import ToyPushConfig, ToyPushSource
from vjepa2.world_model.policies import RANDOM, Policy, policy_info

#: Frame rate recorded for a source that reports none (e.g. a Gymnasium env without ``render_fps``).
DEFAULT_FPS = 10.0


def record_episode(source, steps: int, seed: int, policy: Policy | None = None) -> dict:
    """Run one episode of up to ``steps`` actions of ``policy`` (default: the source's random
    policy); returns the arrays to write.

    ``source`` is a :class:`~vjepa2.world_model.envs.toy_push.ToyPushSource` or
    :class:`~vjepa2.world_model.envs.gym_adapter.GymSource`.
    """
    policy = policy or Policy(RANDOM, source)
    rng = np.random.default_rng(seed)
    policy.reset(seed)
    frame, state, extra = source.reset(seed)
    frames, states, actions = [frame], [state], []
    extras = {k: [v] for k, v in extra.items()}
    for _ in range(steps):
        action = policy(policy_info(source, frame, state, extra), rng)
        frame, state, extra, done = source.step(action)
        actions.append(source.stored_action(action))
        frames.append(frame)
        states.append(state)
        for k, v in extra.items():
            extras[k].append(v)
        if done:
            break
    return {"frames": np.stack(frames), "states": np.stack(states).astype(np.float32),
            "actions": np.stack(actions).astype(np.float32), "extras": {k: np.stack(v) for k, v in extras.items()}}


def make_source(env: str, size: int = 64, repeat_prob: float = 0.8, block_bias: float = 0.5, frameskip: int = 1,
                state_key: str | None = None, env_state_key: str | None = None):
    """``toy-push`` or ``gym:<EnvId>`` -> an episode source (``state_key`` / ``env_state_key``: the
    entries of a Dict observation, see :mod:`~vjepa2.world_model.envs.gym_adapter`)."""
    if env == "toy-push":
        if state_key or env_state_key:
            raise ValueError("toy-push has no Dict observation: leave state_key/env_state_key out")
        return ToyPushSource(ToyPushConfig(size=size), repeat_prob=repeat_prob, block_bias=block_bias,
                             frameskip=frameskip)
    if env.startswith("gym:"):
        from vjepa2.world_model.envs.gym_adapter import GymSource

        return GymSource.make(env[4:], size=size, state_key=state_key, env_state_key=env_state_key,
                              frameskip=frameskip)
    raise ValueError(f"unknown env {env!r}; use 'toy-push' or 'gym:<gymnasium id>' (e.g. gym:Pendulum-v1)")


def episode_dir(out: Path, index: int) -> Path:
    return out / f"episode_{index:06d}"


def collect(source, out: str | os.PathLike, episodes: int, steps: int, seed: int = 0, video: bool = False,
            overwrite: bool = False, progress: bool = True, policy: Policy | None = None) -> list[Path]:
    """Write ``episodes`` trajectories of ``policy`` (default: random) to ``out``; returns their directories.

    Each trajectory is written atomically; existing ones are skipped (resume, or more episodes with
    the same settings) unless ``overwrite``. A folder collected with other settings is refused (its
    ``collect.json`` would no longer describe every episode) unless ``overwrite``, which re-records
    every episode and removes those beyond ``episodes``.
    """
    out, fps, description = _prepare(source, out, episodes, steps, seed, policy)
    _check_same_collection(out, description, overwrite)
    written = []
    with RunLock(out):  # one collector per folder: the half-written episodes below are nobody's
        for stale in sorted(out.glob(".episode_*.partial-*")):
            shutil.rmtree(stale, ignore_errors=True)
            print(f"removed {stale}: an episode a killed collect left half-written")
        write_json(description, out / "collect.json")
        for index in progress_bar(range(episodes), desc=f"collecting {description['env']}", unit="episode",
                                  disable=not progress):
            target = episode_dir(out, index)
            if target.exists() and not overwrite:
                written.append(target)
                continue
            episode_seed = seed + index
            data = record_episode(source, steps, episode_seed, policy)
            write_trajectory(target, data["frames"], data["states"], data["actions"], fps=fps, video=video,
                             extras=data["extras"], overwrite=overwrite,
                             meta={**description, "episode": index, "episode_seed": episode_seed})
            written.append(target)
    return written


def collect_lerobot(source, out: str | os.PathLike, episodes: int, steps: int, seed: int = 0,
                    overwrite: bool = False, progress: bool = True, policy: Policy | None = None) -> Path:
    """Write ``episodes`` episodes of ``policy`` (default: random) to ``out`` as a LeRobot v3.0
    dataset; returns ``out``.

    The task string of every episode is ``"<env>: <policy> actions"``; the settings are kept in
    ``meta/vjepa2_collect.json``. An existing non-empty ``out`` is refused unless ``overwrite``.
    """
    from vjepa2.data.trajectories.lerobot_write import LeRobotWriter

    out, fps, description = _prepare(source, out, episodes, steps, seed, policy)
    with LeRobotWriter(out, fps, robot_type=description["env"], overwrite=overwrite) as writer:
        for index in progress_bar(range(episodes), desc=f"collecting {description['env']}", unit="episode",
                                  disable=not progress):
            data = record_episode(source, steps, seed + index, policy)
            writer.add_episode(data["frames"], data["states"], data["actions"], extras=data["extras"],
                               task=f"{description['env']}: {description.get('policy', RANDOM)} actions")
        (writer.tmp / "meta" / "vjepa2_collect.json").write_text(json.dumps(description, indent=2) + "\n")
    return out


def _prepare(source, out, episodes: int, steps: int, seed: int, policy: Policy | None) -> tuple[Path, float, dict]:
    """Checked arguments of a collection: the output folder, the frame rate and the description of the settings."""
    if episodes < 1 or steps < 1:
        raise ValueError(f"episodes and steps must be >= 1, got episodes={episodes}, steps={steps}")
    fps = source.fps or DEFAULT_FPS
    description = {**source.describe(), "episodes": episodes, "steps": steps, "seed": seed, "fps": fps}
    if policy is not None and policy.spec != RANDOM:
        description.update(policy=policy.spec, policy_noise=policy.noise)
    return check_output_dir(out), fps, description


def _check_same_collection(out: Path, description: dict, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) a folder whose ``collect.json`` has other settings."""
    old_file = out / "collect.json"
    if not old_file.is_file():
        return
    try:
        old = json.loads(old_file.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    changed = [f"{key}: {old.get(key)!r} -> {value!r}" for key, value in json.loads(json.dumps(description)).items()
               if key != "episodes" and old.get(key) != value]
    if not changed:
        return
    if not overwrite:
        raise OutputPathError(f"{out} holds episodes collected with other settings ({'; '.join(changed)}); choose "
                              f"another --out, or --overwrite to re-record them all")
    for stale in sorted(out.glob("episode_*")):
        if stale.is_dir() and int(stale.name.split("_")[-1]) >= description["episodes"]:
            shutil.rmtree(stale)
