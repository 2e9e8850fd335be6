"""``torchrun`` with 2 CPU processes (gloo): DDP and FSDP2 reach the weights of a 1-process run with the
same global batch, and a checkpoint written by 2 sharded processes resumes in 1 process."""

import subprocess
import sys

import pytest
import torch
from pretrain_tiny import cli_command, read_log, run_cli, subprocess_env, write_config

STEPS = 3
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _config(tmp_path, steps=STEPS, **changes):
    # Equal-count mask truncation over the global batch, so that both layouts see identical masks;
    # float64, so that the layouts' different summation orders cannot move a weight measurably on any CPU.
    return write_config(tmp_path / "cfg.yaml", tmp_path / "unused", mask={"equalize": "global_batch"}, dtype="fp64",
                        phases=[{"name": "main", "iterations": steps, "frames": 4, "resolution": 32}], **changes)


def _torchrun(config, out_dir, *extra):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               *cli_command("--config", str(config), "--out", str(out_dir), *extra)[1:]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=subprocess_env(**ONE_THREAD))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    done = run_cli("--config", str(_config(tmp)), "--out", str(tmp / "run"), **ONE_THREAD)
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp / "run"


@pytest.mark.parametrize("regularizer", ["vicreg", "sigreg"])
def test_regularizer_statistics_span_the_global_batch(tmp_path, regularizer):
    # Tokens of both processes enter one statistic (sums all-reduced with their gradient), so two
    # processes of 2 clips reach the weights of one process of 4; per-process statistics would not.
    config = _config(tmp_path, loss={"regularizer": regularizer, "regularizer_weight": 1.0})
    done = run_cli("--config", str(config), "--out", str(tmp_path / "single"), **ONE_THREAD)
    assert done.returncode == 0, done.stderr[-2000:]
    _torchrun(config, tmp_path / "run")
    _assert_same_weights(tmp_path / "run", tmp_path / "single")
    assert float(read_log(tmp_path / "run")[1]["loss_reg"]) > 0


def _assert_same_weights(run, reference):
    name = f"checkpoints/step-{STEPS:08d}.pt"
    a, b = torch.load(run / name, weights_only=True), torch.load(reference / name, weights_only=True)
    for key in ("encoder", "target_encoder", "predictor"):
        assert a[key].keys() == b[key].keys()
        for param, value in b[key].items():
            assert value.dtype == torch.float64
            torch.testing.assert_close(a[key][param], value, rtol=1e-9, atol=1e-11, msg=f"{key} {param}")
    losses_a, losses_b = read_log(run), read_log(reference)
    for step in range(1, STEPS + 1):
        assert float(losses_a[step]["loss"]) == pytest.approx(float(losses_b[step]["loss"]), rel=1e-9)
    return a


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, single, strategy):
    done = _torchrun(_config(tmp_path, distributed={"strategy": strategy}), tmp_path / "run")
    assert "2 process(es)" in done.stdout and "2 process(es) x 1 micro-step(s) x 2" in done.stderr
    state = _assert_same_weights(tmp_path / "run", single)
    assert state["world_size"] == 2 and len(state["vjepa2_train"]["rng"]) == 2
    if strategy == "fsdp":
        # The sharded run's checkpoint holds full tensors: one process can continue it.
        more = _config(tmp_path, steps=STEPS + 1, distributed={"strategy": "ddp"})
        resumed = run_cli("--config", str(more), "--out", str(tmp_path / "run"), "--resume", **ONE_THREAD)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert "written by 2 processes" in resumed.stdout and max(read_log(tmp_path / "run")) == STEPS + 1
