"""The pretraining loop in-process: both masking modes learn without collapse, non-finite steps,
phases and resume, gradient accumulation, public checkpoint layout, broken data files, outputs."""

import math

import numpy as np
import pytest
import torch
from pretrain_tiny import read_log, tiny_config

import vjepa2
from vjepa2.train import pretrain as pretrain_module
from vjepa2.train.config import load_pretrain_config
from vjepa2.engine.guard import TrainingDiverged
from vjepa2.engine.loop import TRAIN_STATE_KEY
from vjepa2.train.pretrain import pretrain


pytestmark = pytest.mark.usefixtures("one_thread")


def _losses(out_dir):
    return {step: float(row["loss"]) for step, row in read_log(out_dir).items()}


@pytest.mark.parametrize("mode", ["drop", "noise"])
def test_both_masking_modes_learn_without_collapse(tmp_path, mode):
    steps = 40
    cfg = tiny_config(tmp_path / mode, mask={"mode": mode}, batch_size=8, optim={"lr": 2e-3},
                      model={"dim": 64, "depth": 2, "heads": 4, "mlp_hidden": 128, "predictor": {"dim": 64,
                             "heads": 4, "mlp_hidden": 128}},
                      checkpoint={"every": 100},
                      phases=[{"name": "main", "iterations": steps, "frames": 4, "resolution": 64,
                               "lr_schedule": "warmup", "lr_start": 2e-4}])
    summary = pretrain(cfg)
    losses = _losses(cfg.output_dir)
    first, last = np.mean([losses[s] for s in range(1, 6)]), np.mean([losses[s] for s in range(steps - 4, steps + 1)])
    assert last < 0.92 * first, f"{mode}: loss did not fall ({first:.3f} -> {last:.3f})"

    # Collapse check on the saved EMA encoder: per-dimension std of its features over a fresh batch.
    encoder = vjepa2.load_encoder(summary.checkpoint)  # also proves the checkpoint is loadable
    batch = next(pretrain_module.open_loaders(cfg, cfg.phases[0], 1000, pretrain_module.dist_utils.DistEnv())[0])
    with torch.no_grad():
        feats = encoder(batch.clips)                                   # (B, N, D)
    token_std = feats.flatten(0, 1).std(dim=0)                         # over all tokens of the batch
    clip_std = feats.mean(dim=1).std(dim=0)                            # over clips (pooled features)
    print(f"\n{mode}: loss {first:.3f} -> {last:.3f}; per-dim std of target features over the batch: "
          f"tokens {token_std.mean():.3f} (min {token_std.min():.3f}), pooled clips {clip_std.mean():.3f}; "
          f"logged std of layer-normed targets {summary.target_std:.3f}")
    assert token_std.min() > 0.05 and clip_std.mean() > 0.01
    assert summary.target_std > 0.5


def _poisoned(monkeypatch, steps_with_nan):
    """Make the loader return NaN clips at the given steps."""
    build = pretrain_module.build_pretrain_loader

    def poisoned_loader(*args, **kwargs):
        for batch in build(*args, **kwargs):
            if batch.step in steps_with_nan:
                batch.clips = torch.full_like(batch.clips, float("nan"))
            yield batch

    monkeypatch.setattr(pretrain_module, "build_pretrain_loader", poisoned_loader)


def test_non_finite_step_is_skipped(tmp_path, monkeypatch):
    _poisoned(monkeypatch, {2})
    cfg = tiny_config(tmp_path, max_nonfinite_steps=2)
    summary = pretrain(cfg)
    assert summary.counters.nonfinite_total == 1 and summary.end_step == 6
    log = read_log(tmp_path)
    assert math.isnan(float(log[3]["loss"])) and log[6]["nonfinite_total"] == "1"
    state = torch.load(summary.checkpoint, weights_only=True)
    adam_steps = {float(s["step"]) for s in state["opt"]["state"].values()}
    assert adam_steps == {5.0}  # 6 steps, one skipped: the optimiser moved 5 times
    assert all(torch.isfinite(v).all() for v in state["encoder"].values())


def test_stops_after_k_non_finite_steps_in_a_row(tmp_path, monkeypatch):
    _poisoned(monkeypatch, {1, 2, 3, 4, 5})
    with pytest.raises(TrainingDiverged, match=r"3 steps in a row \(up to step 4\).*max_nonfinite_steps=3.*optim.lr"):
        pretrain(tiny_config(tmp_path, max_nonfinite_steps=3))


def test_phases_switch_clip_shape_and_resume_lands_in_the_right_phase(tmp_path, monkeypatch):
    calls = []
    build = pretrain_module.build_pretrain_loader

    def recording(*args, **kwargs):
        calls.append((kwargs["frames"], kwargs["size"], kwargs["start_step"]))
        return build(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "build_pretrain_loader", recording)
    phases = [{"name": "low", "iterations": 3, "frames": 2, "resolution": 32, "lr_schedule": "warmup"},
              {"name": "high", "iterations": 4, "frames": 4, "resolution": 48, "lr_schedule": "linear"}]
    cfg = tiny_config(tmp_path / "full", phases=phases, checkpoint={"every": 2, "keep_last": 10})
    pretrain(cfg)
    assert calls == [(2, 32, 0), (4, 48, 3)]
    log = read_log(tmp_path / "full")
    assert [log[s]["phase"] for s in range(1, 8)] == ["low"] * 3 + ["high"] * 4
    assert all(row["loss_avg"] == row["loss"] for row in log.values())  # log.every = 1: one-step averages
    saved = sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert saved == ["step-00000002.pt", "step-00000003.pt", "step-00000004.pt", "step-00000006.pt",
                     "step-00000007.pt"]  # every 2 steps and at each phase end

    # Resume a copy whose newest checkpoint is step 4 (inside phase "high").
    import shutil

    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    for name in ("step-00000006.pt", "step-00000007.pt"):
        (tmp_path / "resumed" / "checkpoints" / name).unlink()
    # ... as written before the predictor's size was nested (flat predictor_* keys): still resumes.
    older = tmp_path / "resumed" / "checkpoints" / "step-00000004.pt"
    state = torch.load(older, weights_only=True)
    model = state[TRAIN_STATE_KEY]["config"]["model"]
    model.update({f"predictor_{key}": value for key, value in model.pop("predictor").items() if key != "size"})
    torch.save(state, older)
    calls.clear()
    summary = pretrain(tiny_config(tmp_path / "resumed", phases=phases, checkpoint={"every": 2, "keep_last": 10}),
                       resume=True)
    assert calls == [(4, 48, 4)] and summary.start_step == 4
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, 8))
    for step in range(5, 8):
        assert resumed[step] == pytest.approx(full[step], rel=1e-6, abs=1e-7)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    # float64: the two paths differ only in summation order, which float64 makes ~1e-16 relative,
    # so the check is tight on every CPU (in float32 Adam amplifies rounding in tiny gradients by an
    # amount that depends on the CPU's kernels).
    params = {}
    for accumulation in (1, 2):
        cfg = tiny_config(tmp_path / f"a{accumulation}", optim={"grad_accumulation": accumulation}, dtype="fp64",
                          mask={"equalize": "global_batch"}, phases=[{"name": "main", "iterations": 3, "frames": 4,
                                                                      "resolution": 32}])
        summary = pretrain(cfg)
        params[accumulation] = torch.load(summary.checkpoint, weights_only=True)
    for key in ("encoder", "predictor", "target_encoder"):
        for name, value in params[1][key].items():
            assert value.dtype == torch.float64
            torch.testing.assert_close(params[2][key][name], value, rtol=1e-9, atol=1e-11, msg=f"{key} {name}")
    moved = max((params[1]["encoder"][n] - v).abs().max() for n, v in params[1]["target_encoder"].items())
    assert moved > 1e-6  # the runs trained (the online encoder left the EMA target behind)


def test_checkpoint_has_the_public_layout_and_loads_with_vjepa2(tmp_path):
    summary = pretrain(tiny_config(tmp_path, phases=[{"name": "main", "iterations": 2, "frames": 4, "resolution": 32}]))
    state = torch.load(summary.checkpoint, weights_only=True)
    assert {"encoder", "target_encoder", "predictor", "opt", "epoch", TRAIN_STATE_KEY} <= set(state)
    assert state["epoch"] == 2 and state[TRAIN_STATE_KEY]["step"] == 2
    assert all(k.startswith("module.backbone.") for key in ("encoder", "target_encoder", "predictor")
               for k in state[key])
    target = vjepa2.load_encoder(summary.checkpoint)                 # default: the EMA target encoder
    online = vjepa2.load_encoder(summary.checkpoint, key="encoder")
    predictor = vjepa2.load_predictor(summary.checkpoint)
    assert target.config.dim == 48 and predictor.config.dim == 48
    assert torch.equal(target.state_dict()["norm.weight"], state["target_encoder"]["module.backbone.norm.weight"])
    assert not torch.equal(target.state_dict()["blocks.0.attn.qkv.weight"],
                           online.state_dict()["blocks.0.attn.qkv.weight"])  # EMA lags the online encoder


def test_outputs_and_refusal_to_overwrite(tmp_path):
    cfg = tiny_config(tmp_path, log={"every": 2, "tensorboard": True},
                      phases=[{"name": "main", "iterations": 4, "frames": 4, "resolution": 32}])
    summary = pretrain(cfg)
    log = read_log(tmp_path)
    assert sorted(log) == [2, 4]
    assert {"loss", "loss_avg", "loss_mask0", "loss_mask1", "lr", "ema_momentum", "grad_norm", "target_std", "clips_per_s",
            "files_skipped"} <= set(log[2])
    assert (tmp_path / "loss.png").stat().st_size > 1000 and summary.loss_png == tmp_path / "loss.png"
    assert load_pretrain_config(str(tmp_path / "config.yaml")) == cfg
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        pass
    else:
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(cfg)


def _write_video(path, frames: int = 8, size: int = 48) -> None:
    import av

    from vjepa2.data.clips.synthetic import render, sample_scene

    pixels = render(sample_scene(np.random.default_rng(0)), frames, size)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for frame in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_corrupt_and_missing_files_are_skipped_and_reported(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    _write_video(videos / "good.mp4")
    (videos / "corrupt.mp4").write_bytes(b"\x00\x01 definitely not a video" * 50)
    (videos / "empty.mp4").write_bytes(b"")
    listing = tmp_path / "train.txt"
    listing.write_text("videos/good.mp4 0\nvideos/corrupt.mp4 1\nvideos/missing.mp4 2\nvideos/empty.mp4 3\n")
    cfg = tiny_config(tmp_path / "run", data={"sources": [{"kind": "list", "path": str(listing)}], "fps": None},
                      phases=[{"name": "main", "iterations": 3, "frames": 4, "resolution": 32}])
    summary = pretrain(cfg)
    assert summary.end_step == 3
    reported = {path.rsplit("/", 1)[-1] for _, path, _ in summary.skipped_files}
    assert reported == {"corrupt.mp4", "missing.mp4", "empty.mp4"}
    assert summary.counters.files_skipped == len(summary.skipped_files)
    table = (tmp_path / "run" / "skipped_files.tsv").read_text().splitlines()
    assert len(table) == len(summary.skipped_files) and all(len(line.split("\t")) == 3 for line in table)
    printed = capsys.readouterr().out
    assert f"data files skipped: {summary.counters.files_skipped}" in printed and "missing.mp4" in printed
    assert read_log(tmp_path / "run")[3]["files_skipped"] == str(summary.counters.files_skipped)


def test_missing_list_file_fails_before_any_work(tmp_path):
    from vjepa2.config import ConfigError

    cfg = tiny_config(tmp_path / "run", data={"sources": [{"kind": "list", "path": str(tmp_path / "nope.txt")}]})
    with pytest.raises(ConfigError, match=r"data.sources\[0\].*nope.txt"):
        pretrain(cfg)
    assert not (tmp_path / "run").exists()


def test_auto_dtype_measures_without_touching_the_run(tmp_path, monkeypatch, capsys):
    """``dtype: auto`` times a forward + backward in both dtypes, says which it picked, and leaves the
    weights, RNG and batches as they were: forced to pick fp32 it trains exactly like ``dtype: fp32``."""
    from vjepa2 import precision

    real, timed = precision.fastest_dtype, []

    def fastest(run, device, repeats=3):
        _, seconds = real(run, device, repeats=1)
        timed.append(seconds)
        return "fp32", seconds

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "fastest_dtype", fastest)
    runs = {}
    for dtype in ("auto", "fp32"):
        cfg = tiny_config(tmp_path / dtype, dtype=dtype, mask={"mode": "noise"},
                          phases=[{"name": "main", "iterations": 4, "frames": 4, "resolution": 32}])
        pretrain(cfg)
        runs[dtype] = _losses(cfg.output_dir)
    assert len(timed) == 1 and set(timed[0]) == {"fp32", "bf16"}
    assert "dtype auto: fp32 (one forward + backward at phase main's shape" in capsys.readouterr().out
    assert runs["auto"] == runs["fp32"]
    saved = (tmp_path / "auto" / "config.yaml").read_text()
    assert "dtype: fp32" in saved
