"""Crash safety: a run killed with SIGKILL (mid-run, or while writing a checkpoint) and resumed with
``--resume`` reproduces the losses and weights of an uninterrupted run exactly."""

import os
import signal
import subprocess
import time

import pytest
import torch
from pretrain_tiny import cli_command, read_log, run_cli, subprocess_env, write_config

STEPS = 30
PHASES = [{"name": "low", "iterations": 12, "frames": 4, "resolution": 32, "lr_schedule": "warmup"},
          {"name": "high", "iterations": 18, "frames": 4, "resolution": 48, "lr_schedule": "linear"}]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # same arithmetic in every run, and fast on a busy machine


def _config(tmp_path):
    return write_config(tmp_path / "cfg.yaml", tmp_path / "unused", phases=PHASES,
                        checkpoint={"every": 4, "keep_last": 3})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    done = run_cli("--config", str(_config(tmp)), "--out", str(tmp / "run"), **ONE_THREAD)
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp / "run"


def _start(config, out_dir, **env):
    return subprocess.Popen(cli_command("--config", str(config), "--out", str(out_dir)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(**ONE_THREAD, **env))


def _wait_for(condition, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before it could be killed: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.005)


def _kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _assert_same_run(run, reference):
    ours, ref = read_log(run), read_log(reference)
    assert sorted(ours) == sorted(ref) == list(range(1, STEPS + 1))
    for step in ref:
        assert float(ours[step]["loss"]) == pytest.approx(float(ref[step]["loss"]), rel=1e-6, abs=1e-7), step
        assert ours[step]["phase"] == ref[step]["phase"] and ours[step]["lr"] == ref[step]["lr"]
    final = f"checkpoints/step-{STEPS:08d}.pt"
    a, b = torch.load(run / final, weights_only=True), torch.load(reference / final, weights_only=True)
    for key in ("encoder", "target_encoder", "predictor"):
        for name, value in b[key].items():
            torch.testing.assert_close(a[key][name], value, rtol=1e-6, atol=1e-7, msg=f"{key} {name}")


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_losses(tmp_path, reference):
    config, out = _config(tmp_path), tmp_path / "run"
    proc = _start(config, out)
    # Kill once a checkpoint exists and the run has logged steps after it (they must be redone).
    _wait_for(lambda: (out / "checkpoints" / "step-00000004.pt").exists() and (out / "log.csv").exists()
              and len(read_log(out)) >= 6, proc)
    _kill(proc)
    logged = max(read_log(out))
    assert logged < STEPS, "the run finished before the kill"
    resumed = run_cli("--config", str(config), "--out", str(out), "--resume", **ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    _assert_same_run(out, reference)


def test_sigkill_during_a_checkpoint_write_then_resume(tmp_path, reference):
    config, out = _config(tmp_path), tmp_path / "run"
    ckpts = out / "checkpoints"
    # The writer pauses between the fsync of step 8's temporary file and its rename.
    proc = _start(config, out, VJEPA2_TEST_PAUSE_BEFORE_RENAME="step-00000008.pt=120")
    _wait_for(lambda: any(ckpts.glob(".step-00000008.pt.*.tmp")), proc)
    line = proc.stderr.readline()
    while "pausing" not in line:  # the temporary file is complete once the writer says it pauses
        line = proc.stderr.readline()
        assert line, "the run ended without pausing"
    _kill(proc)
    assert not (ckpts / "step-00000008.pt").exists() and any(ckpts.glob(".step-00000008.pt.*.tmp"))
    # A half-copied file under a final name, newer than anything valid, must be ignored too.
    good = (ckpts / "step-00000004.pt").read_bytes()
    (ckpts / "step-00000010.pt").write_bytes(good[: len(good) // 3])

    resumed = run_cli("--config", str(config), "--out", str(out), "--resume", **ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "removed a half-written checkpoint" in resumed.stdout
    assert "skipping unreadable checkpoint" in resumed.stdout and "step-00000010.pt" in resumed.stdout
    assert "at step 4 (phase low)" in resumed.stdout  # the newest valid checkpoint
    assert not any(ckpts.glob("*.tmp"))
    _assert_same_run(out, reference)
