"""Nothing a user does loses work silently: each careless input below ends in one line naming the bad
thing (exit code != 0, no traceback) and leaves every file that was there byte-identical; Ctrl-C /
SIGTERM stop a training run with a checkpoint that ``--resume`` continues from."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_tiny import read_log, tiny_config, write_config

from vjepa2.cli import main
from vjepa2.files import DiskFullError, OutputPathError
from vjepa2.engine.checkpoint import CheckpointDir
from vjepa2.train.pretrain import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_PRETRAIN = ["model.size=tiny", "model.dim=48", "model.depth=1", "model.heads=3", "model.mlp_hidden=96",
                 "model.predictor.dim=48", "model.predictor.depth=1", "model.predictor.heads=3",
                 "model.predictor.mlp_hidden=96", "batch_size=2", "log.tensorboard=false", "log.progress_bar=false",
                 "data.num_workers=0", "device=cpu"]


def run_cli(capsys, *args: str) -> tuple[int, str]:
    """``vjepa2 ARGS`` in this process: ``(exit code, last stderr line)``; a traceback fails the test."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if err else ""


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file below ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(capsys, root: Path, *args: str, needles=(), code: int | None = None) -> str:
    """The command fails with a one-line message naming ``needles`` and changes no file under ``root``."""
    before = snapshot(root)
    got, line = run_cli(capsys, *args)
    assert got != 0 and (code is None or got == code), (got, line)
    for needle in needles:
        assert needle in line, line
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before, "a file that was there changed"
    return line


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    from vjepa2.world_model.collect import ToyPushSource, collect
    from vjepa2.world_model.envs.toy_push import ToyPushConfig

    root = tmp_path_factory.mktemp("toy") / "T"
    collect(ToyPushSource(ToyPushConfig(size=32)), root, episodes=4, steps=7, seed=0, progress=False)
    return root


def ac_args(steps: int = 4) -> list[str]:
    return ["encoder.weights=random:tiny", "encoder.img_size=32", "model.dim=48", "model.heads=4", "model.depth=1",
            "model.mlp_hidden=96", "batch_size=4", "data.clip_steps=4", "loss.rollout_steps=2",
            f"schedule.iterations={steps}", "schedule.warmup=1", "schedule.cooldown=1", "checkpoint.every=2",
            "log.tensorboard=false", "log.progress_bar=false", "device=cpu"]


@pytest.fixture(scope="module")
def ac_run(toy_data, tmp_path_factory) -> Path:
    from vjepa2.world_model.config import load_ac_config
    from vjepa2.world_model.train import train_ac

    out = tmp_path_factory.mktemp("ac") / "AC"
    train_ac(load_ac_config(None, ac_args(), **{"data.trajectories": str(toy_data), "output_dir": str(out)}))
    return out


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pre") / "P"
    pretrain(tiny_config(out))
    return out


# ------------------------------------------------------------------------------------------------
# 1. A run folder says what wrote it; another command refuses it
# ------------------------------------------------------------------------------------------------


def test_pretrain_resume_into_a_world_model_run_is_refused_and_deletes_nothing(capsys, ac_run):
    from vjepa2.files import run_kind

    assert run_kind(ac_run) == "train-ac"
    assert_refused(capsys, ac_run, "pretrain", "--out", ac_run, "--resume", *TINY_PRETRAIN,
                   "checkpoint.every=5", "checkpoint.keep_last=1", needles=("world-model (train-ac) run",), code=2)
    assert len(CheckpointDir(ac_run / "checkpoints").steps()) == 2


def test_train_ac_resume_into_a_pretraining_run_is_refused(capsys, pretrain_run, toy_data):
    assert_refused(capsys, pretrain_run, "train-ac", "--data", toy_data, "--out", pretrain_run, "--resume",
                   *ac_args(), needles=("pretraining run", "vjepa2 train-ac will not write"))


def test_a_run_folder_written_before_the_marker_is_told_by_its_config(capsys, tmp_path, pretrain_run, toy_data):
    import shutil

    from vjepa2.files import RUN_FILE, run_kind

    legacy = tmp_path / "legacy"
    shutil.copytree(pretrain_run, legacy)
    (legacy / RUN_FILE).unlink()
    assert run_kind(legacy) == "pretrain"
    assert_refused(capsys, legacy, "train-ac", "--data", toy_data, "--out", legacy, *ac_args(),
                   needles=("pretraining run",))


def test_eval_ac_on_a_pretraining_run_says_so(capsys, pretrain_run, toy_data):
    assert_refused(capsys, pretrain_run, "eval-ac", "--run", pretrain_run, "--data", toy_data,
                   needles=("is a pretraining run, not a world model",))


# ------------------------------------------------------------------------------------------------
# 2. No command writes onto one of its own inputs
# ------------------------------------------------------------------------------------------------


def test_embed_refuses_to_overwrite_its_video_or_its_weights(capsys, tmp_path):
    from vjepa2.embed import demo_video
    from vjepa2.models import VisionEncoder, encoder_config
    from vjepa2.weights import save_public

    video = demo_video(tmp_path)
    save_public(tmp_path / "w.pt", VisionEncoder(encoder_config("tiny", depth=1)))
    clip = ["--frames", "8", "--size", "64", "--no-progress"]
    assert_refused(capsys, tmp_path, "embed", video, "--weights", "random:tiny", *clip, "--out", video,
                   needles=("is also the input",))
    assert_refused(capsys, tmp_path, "embed", video, "--weights", tmp_path / "w.pt", *clip, "--out", tmp_path / "w.pt",
                   needles=("is also the input --weights",))
    os.symlink(video, tmp_path / "link.mp4")
    assert_refused(capsys, tmp_path, "embed", video, "--weights", "random:tiny", *clip, "--out", tmp_path / "link.mp4",
                   needles=("is also the input",))


# ------------------------------------------------------------------------------------------------
# 3. / 4. Weights: the released structure, and finite values
# ------------------------------------------------------------------------------------------------


def test_a_2_1_checkpoint_missing_a_level_is_an_error_naming_its_keys(tmp_path):
    from test_vjepa2_1 import release_checkpoint

    from vjepa2.weights import WeightsError, load_encoder

    checkpoint = release_checkpoint("vitb_dist")
    encoder = checkpoint["ema_encoder"]
    for name in [k for k in encoder if "norms_block.3." in k]:
        del encoder[name]
    torch.save(checkpoint, tmp_path / "three.pt")
    with pytest.raises(WeightsError, match=r"missing keys \(2\): norms_block\.3\.bias, norms_block\.3\.weight"):
        load_encoder(tmp_path / "three.pt")


@pytest.fixture
def nan_weights(tmp_path) -> Path:
    from vjepa2.models import VisionEncoder, encoder_config
    from vjepa2.weights import save_public

    encoder = VisionEncoder(encoder_config("tiny", depth=1))
    with torch.no_grad():
        encoder.blocks[0].attn.qkv.weight[0, 0] = float("nan")
    save_public(tmp_path / "nan.pt", encoder)
    return tmp_path / "nan.pt"


def test_non_finite_weights_are_refused_on_load(capsys, tmp_path, nan_weights, toy_data):
    from vjepa2.embed import demo_video

    video = demo_video(tmp_path)
    line = assert_refused(capsys, tmp_path, "embed", video, "--weights", nan_weights, "--frames", "8", "--size", "64",
                          "--out", tmp_path / "e.safetensors", needles=("non-finite", "blocks.0.attn.qkv.weight"))
    assert "nan.pt" in line and not (tmp_path / "e.safetensors").exists()
    out = tmp_path / "ac"
    assert_refused(capsys, tmp_path, "train-ac", "--data", toy_data, "--out", out, *ac_args(),
                   f"encoder.weights={nan_weights}", needles=("encoder.weights", "non-finite"), code=2)
    assert not (out / "checkpoints").exists()


# ------------------------------------------------------------------------------------------------
# 5. A run folder inside a folder data source
# ------------------------------------------------------------------------------------------------


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(np.full((40, 40, 3), 100, np.uint8)).save(root / cls / "0.png")
    return root


def test_out_inside_a_folder_source_is_refused_and_run_folders_are_not_data(capsys, tmp_path, pretrain_run):
    import shutil

    from vjepa2.data.clips.lists import read_folder

    data = _image_folder(tmp_path / "D")
    assert_refused(capsys, tmp_path, "pretrain", "--out", data / "run", *TINY_PRETRAIN,
                   "data.sources=[{kind: folder, path: %s}]" % data, needles=("inside the input folder",), code=2)
    assert not (data / "run").exists()
    shutil.copytree(pretrain_run, data / "b" / "old-run")  # a run made by hand in there: its loss.png is no sample
    source = read_folder(data)
    assert [Path(e.path).name for e in source.entries] == ["0.png", "0.png"]
    assert source.skipped_runs == (str(data / "b" / "old-run"),)


# ------------------------------------------------------------------------------------------------
# 6. One line, not a traceback
# ------------------------------------------------------------------------------------------------


def test_a_phase_missing_fields_is_a_config_error(capsys, tmp_path):
    (tmp_path / "p.yaml").write_text("phases: [{iterations: 5}]\n")
    (tmp_path / "e.yaml").write_text("")
    assert_refused(capsys, tmp_path, "pretrain", "--config", tmp_path / "p.yaml", "--out", tmp_path / "o",
                   needles=("phases[0]: missing name, frames, resolution",), code=2)
    assert_refused(capsys, tmp_path, "pretrain", "--config", tmp_path / "e.yaml", "--out", tmp_path / "o",
                   "phases.a.iterations=5", needles=("missing", "frames"), code=2)


def test_an_episode_with_another_action_width_is_skipped_and_named(tmp_path, toy_data, capsys):
    import shutil

    data = tmp_path / "T"
    shutil.copytree(toy_data, data)
    odd = data / "episode_000001"
    np.save(odd / "actions.npy", np.zeros((7, 5), np.float32))
    capsys.readouterr()
    assert main([str(a) for a in ("train-ac", "--data", data, "--out", tmp_path / "ac", *ac_args())]) == 0
    said = capsys.readouterr().out
    assert f"skipped {odd}: 5-D actions and 7-D states, but most trajectories' are 7-D and 7-D" in said
    assert max(read_log(tmp_path / "ac")) == 4  # trained on the other three


def test_the_skipped_episode_is_reported(tmp_path, toy_data):
    import shutil

    from vjepa2.models import VisionEncoder, encoder_config
    from vjepa2.world_model.feature_cache import build_feature_cache

    data = tmp_path / "T"
    shutil.copytree(toy_data, data)
    np.save(data / "episode_000002" / "actions.npy", np.zeros((7, 5), np.float32))
    encoder = VisionEncoder(encoder_config("tiny", depth=1))
    found = build_feature_cache(data, encoder, tmp_path / "cache", img_size=32, progress=False)
    assert len(found.files) == 3
    assert [(Path(s.path).name, s.reason) for s in found.skipped] == [
        ("episode_000002", "5-D actions and 7-D states, but most trajectories' are 7-D and 7-D")]
    wanted = build_feature_cache(data, encoder, tmp_path / "cache", img_size=32, progress=False, widths=(5, 7))
    assert len(wanted.files) == 1 and len(wanted.skipped) == 3


def test_a_corrupt_safetensors_file_as_weights_is_one_line(capsys, tmp_path):
    from vjepa2.embed import demo_video

    video = demo_video(tmp_path)
    (tmp_path / "bad.safetensors").write_bytes(b"garbage, not a header")
    assert_refused(capsys, tmp_path, "embed", video, "--weights", tmp_path / "bad.safetensors",
                   "--out", tmp_path / "e.safetensors", needles=("bad.safetensors", "not a readable"))


def test_run_files_of_the_wrong_kind_are_found_before_any_work(capsys, tmp_path, toy_data):
    (tmp_path / "P" / "log.csv").mkdir(parents=True)
    assert_refused(capsys, tmp_path, "pretrain", "--out", tmp_path / "P", *TINY_PRETRAIN,
                   needles=("log.csv is a folder",), code=2)
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "checkpoints").write_text("notes")
    assert_refused(capsys, tmp_path, "train-ac", "--data", toy_data, "--out", tmp_path / "A", *ac_args(),
                   needles=("checkpoints is a file",))
    assert not (tmp_path / "A" / "features").exists()  # refused before encoding


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_line(capsys, tmp_path, toy_data):
    assert_refused(capsys, tmp_path, "pretrain", "--out", tmp_path / "P", *TINY_PRETRAIN, "device=cuda",
                   needles=("no CUDA device",), code=2)
    assert_refused(capsys, tmp_path, "train-ac", "--data", toy_data, "--out", tmp_path / "A", *ac_args(),
                   "device=cuda", needles=("no CUDA device",), code=2)


# ------------------------------------------------------------------------------------------------
# 7. Ctrl-C / SIGTERM: a checkpoint at the interrupted step
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum, workers", [(signal.SIGINT, 1), (signal.SIGTERM, 0)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_writes_a_checkpoint_that_resume_continues_from(tmp_path, signum, workers):
    """The signal goes to the whole process group, data-loader workers included, as Ctrl-C in a terminal does."""
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", out, checkpoint={"every": 1000, "keep_last": 2},
                          data={"sources": [{"kind": "synthetic"}], "num_workers": workers},
                          phases=[{"name": "main", "iterations": 100000, "frames": 4, "resolution": 32}])
    proc = subprocess.Popen([sys.executable, "-m", "vjepa2", "pretrain", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((out / "log.csv").is_file() and len(read_log(out)) >= 3):
        time.sleep(0.2)
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err
    steps = CheckpointDir(out / "checkpoints").steps()
    assert len(steps) == 1 and steps[0][0] >= 3
    step = steps[0][0]
    assert f"--resume continues from step {step}" in err.strip().splitlines()[-1]
    resumed = pretrain(tiny_config(out, phases=[{"name": "main", "iterations": step + 2, "frames": 4,
                                                  "resolution": 32}]), resume=True)
    assert (resumed.start_step, resumed.end_step) == (step, step + 2)


# ------------------------------------------------------------------------------------------------
# 8. Absurd sizes are refused with the estimate, before any allocation
# ------------------------------------------------------------------------------------------------


def test_absurd_sizes_are_refused_with_the_memory_estimate(capsys, tmp_path, toy_data):
    started = time.perf_counter()
    line = assert_refused(capsys, tmp_path, "pretrain", "--out", tmp_path / "P", *TINY_PRETRAIN,
                          "phases.cooldown.resolution=64000", needles=("phase cooldown", "GB of memory"), code=2)
    assert "64000 px" in line
    assert_refused(capsys, tmp_path, "pretrain", "--out", tmp_path / "P", *TINY_PRETRAIN, "batch_size=100000000",
                   needles=("micro-batch 100000000", "GB of memory"), code=2)
    assert_refused(capsys, tmp_path, "train-ac", "--data", toy_data, "--out", tmp_path / "A", *ac_args(),
                   "batch_size=100000000", needles=("GB of memory",), code=2)
    assert not (tmp_path / "P").exists() and not (tmp_path / "A").exists()
    assert time.perf_counter() - started < 60  # refused from the shapes, not after trying


def test_a_huge_config_file_is_refused_unread(capsys, tmp_path):
    with open(tmp_path / "big.yaml", "wb") as f:
        f.truncate(50 * 2**20)  # 50 MB (sparse)
    assert_refused(capsys, tmp_path, "pretrain", "--config", tmp_path / "big.yaml", "--out", tmp_path / "o",
                   needles=("52.4 MB; a config is a few KB",), code=2)


# ------------------------------------------------------------------------------------------------
# 9. Clearer messages
# ------------------------------------------------------------------------------------------------


def test_eval_ac_options_and_data_of_another_width(capsys, ac_run, toy_data, tmp_path):
    import shutil

    assert_refused(capsys, ac_run, "eval-ac", "--run", ac_run, "--data", toy_data, "--stride", "0",
                   needles=("--stride", ">= 1"), code=2)
    assert_refused(capsys, ac_run, "eval-ac", "--run", ac_run, "--data", toy_data, "--horizons", "0", "-1",
                   needles=("--horizons", ">= 1"), code=2)
    wide = tmp_path / "wide"
    shutil.copytree(toy_data, wide)
    for episode in wide.glob("episode_*"):
        np.save(episode / "actions.npy", np.zeros((7, 5), np.float32))
    cache = tmp_path / "cache"
    assert_refused(capsys, ac_run, "eval-ac", "--run", ac_run, "--data", wide, "--cache", cache, "--horizons", "1", "2",
                   needles=("no usable trajectory", "5-D actions", "world model's are 7-D"))
    assert not list(cache.rglob("*.safetensors"))  # found before encoding


def test_demo_work_that_is_a_file(capsys, tmp_path):
    (tmp_path / "w").write_text("x")
    assert_refused(capsys, tmp_path, "demo", "--quick", "--work", tmp_path / "w", "--report", tmp_path / "r",
                   needles=("--work", "is a file, not a folder"))


def test_a_garbage_npy_is_not_called_pickled(tmp_path, toy_data):
    import shutil

    from vjepa2.data.trajectories.trajectory import TrajectoryError, read_trajectory

    shutil.copytree(toy_data / "episode_000000", tmp_path / "e")
    (tmp_path / "e" / "actions.npy").write_bytes(b"these are not numbers")
    with pytest.raises(TrajectoryError, match="not a .npy file") as caught:
        read_trajectory(tmp_path / "e")
    assert "pickled" not in str(caught.value)


def test_disk_full_names_the_checkpoint_resume_continues_from(tmp_path, monkeypatch):
    checkpoints = CheckpointDir(tmp_path / "checkpoints")
    checkpoints.save({"w": torch.ones(2)}, 5)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match=r"step-00000010\.pt.*continues from .*step-00000005\.pt, which is intact"):
        checkpoints.save({"w": torch.ones(2)}, 10)
    assert [s for s, _ in checkpoints.steps()] == [5]


def test_a_killed_collect_leaves_nothing_behind_and_the_rerun_counts_right(capsys, tmp_path):
    out = tmp_path / "T"
    args = ["collect", "--episodes", "3", "--steps", "3", "--size", "32", "--out", out]
    assert run_cli(capsys, *args[:2], "2", *args[3:])[0] == 0
    partial = out / ".episode_000002.partial-abc123"
    partial.mkdir()
    (partial / "states.npy").write_bytes(b"half")
    capsys.readouterr()
    assert main([str(a) for a in args]) == 0
    said = capsys.readouterr().out
    assert not partial.exists() and "removed" in said
    assert "wrote 1 episodes" in said and "kept the 2 already there: 3 in all" in said


def test_a_second_divergence_keeps_the_first_ones_files(tmp_path):
    checkpoints = CheckpointDir(tmp_path)
    checkpoints.save({"w": torch.ones(1)}, 7)
    first = checkpoints.set_aside(7)
    checkpoints.save({"w": torch.full((1,), 2.0)}, 7)
    second = checkpoints.set_aside(7)
    assert first[0] != second[0] and first[0].exists() and second[0].exists()
    assert torch.load(first[0])["w"].item() == 1.0 and torch.load(second[0])["w"].item() == 2.0


def test_output_checks_name_the_input(tmp_path):
    from vjepa2.files import check_not_an_input

    (tmp_path / "data").mkdir()
    check_not_an_input(tmp_path / "elsewhere", {"--data": tmp_path / "data"}, inside=True)
    with pytest.raises(OutputPathError, match="inside the input folder --data"):
        check_not_an_input(tmp_path / "data" / "run", {"--data": tmp_path / "data"}, inside=True)
    check_not_an_input(tmp_path / "data" / "run", {"--data": tmp_path / "data"})  # only the same file otherwise
