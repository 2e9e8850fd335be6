"""Careless or hostile inputs: each one ends in a one-line message naming the bad thing (no traceback),
before any work where the input is known up front, and nothing good is lost."""

import os
import subprocess
import sys

import pytest
import torch
from pretrain_tiny import tiny_config

from vjepa2.train.checkpoint import CheckpointDir
from vjepa2.train.guard import TrainingDiverged
from vjepa2.train.pretrain import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")


def run_vjepa2(*args: str, cwd=None, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vjepa2", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    return done


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code != 0, no traceback, and a last stderr line that names every needle."""
    assert done.returncode != 0, done.stdout[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, last
    return last


def _finite(path) -> bool:
    state = torch.load(path, weights_only=True)
    return all(torch.isfinite(v).all() for key in ("encoder", "target_encoder", "predictor")
               for v in state[key].values())


# ------------------------------------------------------------------------------------------------
# 1. Divergence keeps the good checkpoints
# ------------------------------------------------------------------------------------------------


def test_divergence_sets_aside_the_checkpoints_that_led_into_it_and_resume_trains_to_the_end(tmp_path):
    phases = [{"name": "main", "iterations": 30, "frames": 4, "resolution": 32}]
    keep = {"every": 1, "keep_last": 3}
    first = tiny_config(tmp_path, checkpoint=keep, max_nonfinite_steps=4, phases=[{**phases[0], "iterations": 6}])
    pretrain(first)
    assert [s for s, _ in CheckpointDir(tmp_path / "checkpoints").steps()] == [4, 5, 6]
    # lr 1e9: step 7 is finite but throws the weights to ~1e9; every later step is NaN.
    wild = tiny_config(tmp_path, checkpoint=keep, max_nonfinite_steps=4, phases=phases, optim={"lr": 1e9})
    with pytest.raises(TrainingDiverged, match=r"up to step 11.*renamed diverged-step-00000007.pt.*--resume "
                                               r"continues from step-00000006.pt"):
        pretrain(wild, resume=True)
    left = CheckpointDir(tmp_path / "checkpoints").steps()
    assert [s for s, _ in left] == [5, 6] and all(_finite(p) for _, p in left)  # none written during the streak
    sane = tiny_config(tmp_path, checkpoint=keep, max_nonfinite_steps=4, phases=phases)
    summary = pretrain(sane, resume=True)
    assert summary.start_step == 6 and summary.end_step == 30 and summary.counters.nonfinite_in_a_row == 0
    assert _finite(summary.checkpoint)


def test_a_checkpoint_with_non_finite_weights_is_never_resumed(tmp_path):
    pretrain(tiny_config(tmp_path, checkpoint={"every": 2, "keep_last": 5}))
    newest = CheckpointDir(tmp_path / "checkpoints").path(6)
    state = torch.load(newest, weights_only=True)
    state["encoder"]["module.backbone.norm.weight"][0] = float("nan")
    torch.save(state, newest)
    messages = []
    found = CheckpointDir(tmp_path / "checkpoints").latest_valid(("encoder",), warn=messages.append)
    assert found[0].name == "step-00000004.pt"
    assert "encoder.module.backbone.norm.weight holds non-finite values" in messages[0]


@pytest.fixture(scope="module")
def toy_trajectories(tmp_path_factory):
    from vjepa2.world_model.collect import ToyPushSource, collect
    from vjepa2.world_model.envs.toy_push import ToyPushConfig

    root = tmp_path_factory.mktemp("toy") / "data"
    collect(ToyPushSource(ToyPushConfig(size=32)), root, episodes=4, steps=7, seed=0, progress=False)
    return root


def ac_overrides(steps: int, *extra: str) -> list[str]:
    return ["encoder.weights=random:tiny", "encoder.img_size=32", "model.dim=48", "model.heads=4", "model.depth=1",
            "model.mlp_hidden=96", "batch_size=4", "data.clip_steps=4", "loss.rollout_steps=2",
            f"schedule.iterations={steps}", "schedule.warmup=1", "schedule.cooldown=1", "checkpoint.every=1",
            "checkpoint.keep_last=2", "log.every=1", "log.tensorboard=false", "log.progress_bar=false",
            "max_nonfinite_steps=3", *extra]


def test_train_ac_divergence_keeps_a_finite_checkpoint_to_resume_from(toy_trajectories, tmp_path):
    from vjepa2.world_model.train_ac import load_ac_config, train_ac

    def config(steps, *extra):
        return load_ac_config(None, ac_overrides(steps, *extra), **{"data.trajectories": str(toy_trajectories),
                                                                     "output_dir": str(tmp_path)})

    train_ac(config(4))
    with pytest.raises(TrainingDiverged, match="--resume continues from step-0000000[34].pt"):
        train_ac(config(40, "optim.lr=1e12"), resume=True)
    left = CheckpointDir(tmp_path / "checkpoints").steps()
    assert left and all(torch.isfinite(v).all() for _, p in left
                        for v in torch.load(p, weights_only=True)["predictor"].values())
    summary = train_ac(config(12), resume=True)
    assert summary.end_step == 12 and summary.nonfinite_total == 0
