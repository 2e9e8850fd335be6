"""Careless or hostile inputs: each one ends in a one-line message naming the bad thing (no traceback),
before any work where the input is known up front, and nothing good is lost."""

import os
import subprocess
import sys

import pytest
import torch
from pretrain_tiny import tiny_config

from vjepa2.engine.checkpoint import CheckpointDir
from vjepa2.engine.guard import TrainingDiverged
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
    from vjepa2.world_model.config import load_ac_config
    from vjepa2.world_model.train import train_ac

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
    assert summary.end_step == 12 and summary.counters.nonfinite_total == 0


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

    folder = _damaged_copy(transformers_dir, tmp_path, _edit_config(hidden_size=4096, num_hidden_layers=64))
    # Peak memory of the command itself (a wrapper process reports its child's maximum RSS).
    probe = ("import resource, subprocess, sys, json; "
             "done = subprocess.run([sys.executable, '-m', 'vjepa2', 'embed', '--demo', '--no-progress', "
             f"'--weights', {str(folder)!r}, '--out', {str(tmp_path / 'e.safetensors')!r}], capture_output=True, "
             "text=True); print(json.dumps([done.returncode, done.stderr, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    code, stderr, max_rss_kb = json.loads(out.stdout)
    done = subprocess.CompletedProcess([], code, "", stderr)
    last = assert_one_line_error(done, str(folder), "patch_embed.proj.weight")
    # The 64 x 4096 model would take 5.5 GB; the check runs on shapes only (no timing asserted: the
    # wall time, ~3 s on the development machine, is in the closing note).
    assert "4096" in last and max_rss_kb < 1024 * 1024, max_rss_kb


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


# ------------------------------------------------------------------------------------------------
# 3. Config holes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, needle", [
    ("model.dim=0", "model.dim must be positive"),
    ("model.depth=0", "model.depth must be positive"),
    ("model.heads=-3", "model.heads must be positive"),
    ("optim.lr=nan", "optim.lr: expected a finite number"),
    ("optim.lr=inf", "optim.lr: expected a finite number"),
    ("loss.regularizer_weight=.nan", "loss.regularizer_weight: expected a finite number"),
])
def test_bad_config_values_stop_before_any_work(tmp_path, override, needle):
    done = run_vjepa2("pretrain", "--out", str(tmp_path / "run"), override)
    assert_one_line_error(done, needle)
    assert not (tmp_path / "run").exists()


def test_broken_config_files_are_named(tmp_path):
    (tmp_path / "broken.yaml").write_text("optim: {lr: [1, 2\nseed: 3\n")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    assert_one_line_error(run_vjepa2("pretrain", "--config", str(tmp_path / "broken.yaml")), "broken.yaml",
                          "not valid YAML at line")
    assert_one_line_error(run_vjepa2("pretrain", "--config", str(tmp_path / "binary.yaml")), "binary.yaml",
                          "not a text file")
    assert_one_line_error(run_vjepa2("pretrain", "--config", str(tmp_path)), str(tmp_path), "is a folder")


def test_resume_with_another_model_size_names_the_changed_keys(tmp_path):
    short = ["log.progress_bar=false", "log.tensorboard=false", "threads=1", "phases.warmup.iterations=1",
             "phases.constant.iterations=1", "phases.cooldown.iterations=1"]
    assert run_vjepa2("pretrain", "--out", str(tmp_path), *short).returncode == 0
    done = run_vjepa2("pretrain", "--out", str(tmp_path), "--resume", *short, "model.dim=192", "model.depth=2")
    assert_one_line_error(done, "cannot resume", "model.depth: 4 -> 2", "model.dim: 96 -> 192")


# ------------------------------------------------------------------------------------------------
# 4. One process per run folder
# ------------------------------------------------------------------------------------------------


def test_a_second_resume_of_a_live_run_is_refused_and_the_live_run_finishes(tmp_path):
    short = ["log.progress_bar=false", "log.tensorboard=false", "threads=1", "phases.warmup.iterations=1",
             "phases.constant.iterations=2", "phases.cooldown.iterations=1", "checkpoint.every=2"]
    live = subprocess.Popen([sys.executable, "-m", "vjepa2", "pretrain", "--out", str(tmp_path), *short],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1",
                                 "VJEPA2_TEST_PAUSE_BEFORE_RENAME": "step-00000002.pt=8"})
    try:
        line = live.stderr.readline()
        while "pausing" not in line:  # the live run now holds a temporary checkpoint file
            assert line, "the run ended without pausing"
            line = live.stderr.readline()
        second = run_vjepa2("pretrain", "--out", str(tmp_path), "--resume", *short)
        assert_one_line_error(second, str(tmp_path), "in use by another process", f"PID {live.pid}")
        assert live.wait(timeout=120) == 0, live.stderr.read()[-2000:]
    finally:
        live.kill()
    assert [s for s, _ in CheckpointDir(tmp_path / "checkpoints").steps()] == [2, 3, 4]


# ------------------------------------------------------------------------------------------------
# 5. Output paths are checked before any work
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["eval", "probe", "--encoder", "random:tiny", "--dataset", "toy-ssv2", "--no-progress"],
    ["pretrain"],
    ["train-ac", "--data", "no-such-data"],
    ["collect", "--episodes", "1", "--steps", "2"],
    ["plan-eval", "--run", "no-such-run", "--task", "reach"],
])
def test_an_output_path_that_is_a_file_fails_before_any_work(tmp_path, command):
    target = tmp_path / "taken"
    target.write_text("precious")
    done = run_vjepa2(*command, "--out", str(target), timeout=60)
    assert_one_line_error(done, str(target), "is a file")
    assert target.read_text() == "precious"


def test_embed_refuses_a_folder_as_output_before_encoding(tmp_path):
    done = run_vjepa2("embed", "--demo", "--no-progress", "--out", str(tmp_path))
    assert_one_line_error(done, str(tmp_path), "is a folder")
    assert_one_line_error(run_vjepa2("embed", "--demo", "--size", "-16"), "--size must be >= 1")


def test_collect_refuses_a_folder_made_with_other_settings_unless_overwrite(tmp_path):
    import json

    first = run_vjepa2("collect", "--episodes", "3", "--steps", "3", "--size", "32", "--out", str(tmp_path))
    assert first.returncode == 0
    more = run_vjepa2("collect", "--episodes", "4", "--steps", "3", "--size", "32", "--out", str(tmp_path))
    assert more.returncode == 0  # same settings, more episodes: extends the folder
    done = run_vjepa2("collect", "--episodes", "2", "--steps", "5", "--size", "32", "--out", str(tmp_path))
    assert_one_line_error(done, "other settings", "steps: 3 -> 5", "--overwrite")
    assert json.loads((tmp_path / "collect.json").read_text())["steps"] == 3
    redo = run_vjepa2("collect", "--episodes", "2", "--steps", "5", "--size", "32", "--out", str(tmp_path),
                      "--overwrite")
    assert redo.returncode == 0
    assert sorted(p.name for p in tmp_path.glob("episode_*")) == ["episode_000000", "episode_000001"]
    assert json.loads((tmp_path / "collect.json").read_text())["steps"] == 5


# ------------------------------------------------------------------------------------------------
# 6. Messages: all-bad data, BOM, distinct skipped files, bad episodes, full disk
# ------------------------------------------------------------------------------------------------


def _bad_videos(folder, count=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"broken{i}.mp4").write_bytes(b"not a video" * 10)
    return folder


def test_all_bad_data_is_one_message_not_a_traceback(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p} 0\n" for p in sorted(_bad_videos(tmp_path / "v").iterdir())))
    done = run_vjepa2("pretrain", "--out", str(tmp_path / "run"), f"data.sources=[{{kind: list, path: {listing}}}]",
                      "log.progress_bar=false", "threads=1")
    assert_one_line_error(done, "all failed", "broken")


def test_a_list_file_with_a_byte_order_mark_reads_its_first_path(tmp_path):
    from vjepa2.data.clips.lists import read_list

    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_bytes("\ufeff".encode() + f"{video} 3\n".encode())
    assert read_list(listing).entries[0].path == str(video)


def test_skipped_files_are_reported_as_reads_and_distinct_files(tmp_path):
    from vjepa2.train.pretrain import format_summary

    from video_fixtures import index_video

    good = index_video(tmp_path / "good.mp4", 90)
    bad = sorted(_bad_videos(tmp_path / "v", 2).iterdir())
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p} 0\n" for p in [good, *bad]))
    cfg = tiny_config(tmp_path / "run", data={"sources": [{"kind": "list", "path": str(listing)}], "num_workers": 0},
                      phases=[{"name": "main", "iterations": 6, "frames": 4, "resolution": 32}])
    summary = pretrain(cfg)
    assert summary.counters.files_skipped > 2
    assert f"{summary.counters.files_skipped} reads of 2 distinct file(s)" in format_summary(summary)


def test_one_bad_episode_is_skipped_and_named_by_train_ac(toy_trajectories, tmp_path):
    import shutil

    from vjepa2.world_model.config import load_ac_config
    from vjepa2.world_model.train import train_ac

    data = tmp_path / "data"
    shutil.copytree(toy_trajectories, data)
    broken = sorted(data.glob("episode_*"))[1]
    (broken / "states.npy").write_bytes(b"garbage")
    cfg = load_ac_config(None, ac_overrides(2), **{"data.trajectories": str(data), "output_dir": str(tmp_path / "r")})
    summary = train_ac(cfg)
    assert summary.end_step == 2
    assert [s.path.name for s in summary.skipped] == [broken.name] and "unreadable" in summary.skipped[0].reason


def test_a_full_disk_is_named_and_the_previous_file_survives(tmp_path, monkeypatch):
    import errno

    from vjepa2.files import DiskFullError, atomic_torch_save

    atomic_torch_save({"w": torch.ones(3)}, tmp_path / "ckpt.pt")

    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as err:  # torch reports the failed write as its own error
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0") from err

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match=r"disk full while writing .*ckpt.pt"):
        atomic_torch_save({"w": torch.zeros(3)}, tmp_path / "ckpt.pt")
    monkeypatch.undo()
    assert torch.equal(torch.load(tmp_path / "ckpt.pt", weights_only=True)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_a_full_disk_during_a_run_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from vjepa2.cli import main
    from vjepa2.engine import monitor

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "log.csv"))

    monkeypatch.setattr(monitor.RunMonitor, "log", full)
    code = main(["pretrain", "--out", str(tmp_path), "log.progress_bar=false", "log.tensorboard=false", "threads=1"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and err.startswith("vjepa2 pretrain: disk full while writing") and "log.csv" in err


# ------------------------------------------------------------------------------------------------
# 7. Files honour the umask
# ------------------------------------------------------------------------------------------------


def test_checkpoints_logs_and_json_get_the_umask_mode(tmp_path):
    from vjepa2.files import write_json

    old = os.umask(0o022)
    try:
        summary = pretrain(tiny_config(tmp_path / "run", phases=[{"name": "main", "iterations": 2, "frames": 4,
                                                                  "resolution": 32}]))
        write_json({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(old)
    for path in (summary.checkpoint, tmp_path / "run" / "config.yaml", tmp_path / "x.json"):
        assert path.stat().st_mode & 0o777 == 0o644, path
