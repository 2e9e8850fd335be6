"""Crash safety: a run killed with SIGKILL while writing a checkpoint, resumed, killed again mid-run
and resumed again with ``--resume`` reproduces the losses and weights of an uninterrupted run."""

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


def _start(config, out_dir, *extra, stdout=subprocess.DEVNULL, **env):
    return subprocess.Popen(cli_command("--config", str(config), "--out", str(out_dir), *extra), stdout=stdout,
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


def test_sigkill_during_a_checkpoint_write_and_mid_run_then_resume(tmp_path, reference):
    config, out = _config(tmp_path), tmp_path / "run"
    ckpts = out / "checkpoints"

    # 1. Killed while writing a checkpoint: the writer pauses between the fsync of step 8's
    #    temporary file and its rename.
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

    # 2. Resumed, then killed mid-run: after a checkpoint, with steps logged past it (they are redone).
    with open(tmp_path / "resume1.txt", "w") as stdout:
        proc = _start(config, out, "--resume", stdout=stdout)
        _wait_for(lambda: (ckpts / "step-00000016.pt").exists() and len(read_log(out)) >= 18, proc)
        _kill(proc)
    assert max(read_log(out)) < STEPS, "the run finished before the kill"
    printed = (tmp_path / "resume1.txt").read_text()
    assert "removed a half-written checkpoint" in printed and not any(ckpts.glob("*.tmp"))
    assert "skipping unreadable checkpoint" in printed and "step-00000010.pt" in printed
    assert "at step 4 (phase low)" in printed  # the newest valid checkpoint

    # 3. Resumed again: it must end exactly where an uninterrupted run ends.
    resumed = run_cli("--config", str(config), "--out", str(out), "--resume", **ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and "(phase high)" in resumed.stdout
    _assert_same_run(out, reference)
