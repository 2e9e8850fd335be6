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


# ------------------------------------------------------------------------------------------------
# 2. Untrusted sizes and malformed weight folders
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transformers_dir(tmp_path_factory):
    import vjepa2

    torch.manual_seed(0)
    encoder = vjepa2.VisionEncoder(vjepa2.encoder_config("tiny", dim=64, depth=2, heads=2, mlp_hidden=128))
    predictor = vjepa2.Predictor(vjepa2.predictor_config(encoder.config, dim=64, depth=1, heads=2, mlp_hidden=128))
    out = tmp_path_factory.mktemp("hf") / "model"
    vjepa2.save_transformers(encoder, predictor, out)
    return out


def _damaged_copy(source, tmp_path, damage):
    import shutil

    target = tmp_path / "damaged"
    shutil.copytree(source, target)
    damage(target)
    return target


def _edit_config(**changes):
    import json

    def damage(folder):
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))
    return damage


def test_a_huge_claimed_size_fails_fast_in_little_memory_naming_the_tensor(transformers_dir, tmp_path):
    import json
    import time

    folder = _damaged_copy(transformers_dir, tmp_path, _edit_config(hidden_size=4096, num_hidden_layers=64))
    # Peak memory of the command itself (a wrapper process reports its child's maximum RSS).
    probe = ("import resource, subprocess, sys, json; "
             "done = subprocess.run([sys.executable, '-m', 'vjepa2', 'embed', '--demo', '--no-progress', "
             f"'--weights', {str(folder)!r}, '--out', {str(tmp_path / 'e.safetensors')!r}], capture_output=True, "
             "text=True); print(json.dumps([done.returncode, done.stderr, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    started = time.time()
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.time() - started
    code, stderr, max_rss_kb = json.loads(out.stdout)
    done = subprocess.CompletedProcess([], code, "", stderr)
    last = assert_one_line_error(done, str(folder), "patch_embed.proj.weight")
    assert "4096" in last and seconds < 10 and max_rss_kb < 1024 * 1024, (seconds, max_rss_kb)


@pytest.mark.parametrize("name, damage, needles", [
    ("bad JSON", lambda f: (f / "config.json").write_text("{not json"), ("config.json", "not readable JSON")),
    ("string size", _edit_config(hidden_size="64"), ("config.json", "hidden_size", "'64'")),
    ("negative depth", _edit_config(num_hidden_layers=-2), ("config.json", "num_hidden_layers")),
    ("truncated tensors", lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:300]),
     ("model.safetensors", "not a readable safetensors file")),
    ("huge header", lambda f: (f / "model.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}"),
     ("model.safetensors", "not a readable safetensors file")),
])
def test_malformed_transformers_folders_are_one_line_errors(transformers_dir, tmp_path, name, damage, needles):
    folder = _damaged_copy(transformers_dir, tmp_path, damage)
    done = run_vjepa2("embed", "--demo", "--no-progress", "--weights", str(folder), "--out", str(tmp_path / "e.st"))
    assert_one_line_error(done, *needles)
    assert not (tmp_path / "e.st").exists()


def test_a_wrong_shape_tensor_is_named(transformers_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    def damage(folder):
        tensors = load_file(folder / "model.safetensors")
        name = next(k for k in tensors if k.endswith("layer.1.mlp.fc1.weight") and k.startswith("encoder"))
        tensors[name] = tensors[name][:, :10].contiguous()
        save_file(tensors, folder / "model.safetensors")

    folder = _damaged_copy(transformers_dir, tmp_path, damage)
    done = run_vjepa2("embed", "--demo", "--no-progress", "--weights", str(folder), "--out", str(tmp_path / "e.st"))
    assert_one_line_error(done, "blocks.1.mlp.fc1.weight", "(128, 10)")


def test_our_checkpoint_metadata_claiming_huge_sizes_fails_before_building(tmp_path):
    import vjepa2
    from vjepa2.weights import METADATA_KEY, WeightsError

    torch.manual_seed(0)
    encoder = vjepa2.VisionEncoder(vjepa2.encoder_config("tiny", dim=64, depth=1, heads=2, mlp_hidden=128))
    vjepa2.save_public(tmp_path / "tiny.pt", encoder)
    state = torch.load(tmp_path / "tiny.pt", weights_only=True)
    state[METADATA_KEY]["encoder_config"].update(dim=4096, depth=64, heads=32, mlp_hidden=16384)
    torch.save(state, tmp_path / "tiny.pt")
    with pytest.raises(WeightsError, match=r"patch_embed.proj.weight: checkpoint \(64, 3, 2, 16, 16\) vs model "
                                           r"\(4096, 3, 2, 16, 16\)"):
        vjepa2.load_encoder(tmp_path / "tiny.pt")
    state[METADATA_KEY]["encoder_config"]["depth"] = "many"
    torch.save(state, tmp_path / "tiny.pt")
    with pytest.raises(WeightsError, match=r"tiny.pt: bad encoder config: .*depth"):
        vjepa2.load_encoder(tmp_path / "tiny.pt")
