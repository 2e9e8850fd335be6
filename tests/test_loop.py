"""The shared training loop with a trainer of its own (a linear regression): what any new trainer
gets from it: exact resume, skipped non-finite steps, log rows, checkpoints at the cadence."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from vjepa2.engine import loop
from vjepa2.engine.config import CheckpointConfig, LogConfig, OptimConfig
from vjepa2.engine.distributed import DistEnv
from vjepa2.engine.schedules import LrSegment, phase_lr


@dataclass(frozen=True)
class RegressionConfig:
    output_dir: str
    steps: int = 6
    nan_at: tuple[int, ...] = ()  # steps whose batch is poisoned with NaN
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.1))
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(every=2, keep_last=5))
    log: LogConfig = field(default_factory=lambda: LogConfig(every=1, tensorboard=False, progress_bar=False))
    max_nonfinite_steps: int = 3


class Regression(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = (self.linear(x) - y).pow(2).mean()
        return loss, loss.detach().reshape(1)


class RegressionTrainer:
    kind = "regression"
    checkpoint_keys = ("model", "opt", loop.TRAIN_STATE_KEY)
    plot_column = "loss"
    phase_ends_matter = False
    columns = ("step", "phase", "loss", "lr", "grad_norm", "nonfinite_total")

    def __init__(self, cfg: RegressionConfig) -> None:
        torch.manual_seed(0)
        self.cfg = cfg
        self.model = self.training_model = Regression()
        self.optimizer = loop.build_optimizer(self.model, cfg.optim)
        self.phases = [LrSegment("warmup", 2, "warmup"), LrSegment("main", cfg.steps - 2)]
        self.began_at = None

    def begin(self, start_step, counters, monitor) -> None:
        self.began_at = start_step

    def step(self, step, where) -> loop.StepReport:
        g = torch.Generator().manual_seed(step)  # batches keyed by step: a resumed run sees the same
        x = torch.randn(8, 3, generator=g)
        y = x.sum(1, keepdim=True) + (math.nan if step in self.cfg.nan_at else 0.0)
        lr = phase_lr(where.phase, self.cfg.optim.lr, where.step_in_phase)

        values, grad_norm, finite = loop.optimizer_step(self.model, self.optimizer, [(x, y)], lr=lr, clip_grad=None)
        return loop.StepReport(float(values[0]), finite, grad_norm, lr, 8)

    def checkpoint_payload(self, model_state, step, where) -> dict:
        return {"model": model_state}

    def model_state(self, checkpoint) -> dict:
        return checkpoint["model"]


def run(cfg: RegressionConfig, resume: bool = False) -> tuple[loop.RunSummary, RegressionTrainer]:
    trainer = RegressionTrainer(cfg)
    return loop.run_loop(trainer, cfg, DistEnv(), resume), trainer


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    whole, trainer = run(RegressionConfig(str(tmp_path / "whole")))
    assert whole.end_step == 6 and sorted(p.name for p in (tmp_path / "whole" / "checkpoints").iterdir()) == [
        "step-00000002.pt", "step-00000004.pt", "step-00000006.pt"]
    run(RegressionConfig(str(tmp_path / "part"), steps=6), resume=False)
    (tmp_path / "part" / "checkpoints" / "step-00000006.pt").unlink()  # as if killed after step 4
    resumed, again = run(RegressionConfig(str(tmp_path / "part")), resume=True)
    assert again.began_at == 4 and resumed.start_step == 4
    for a, b in zip(trainer.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    rows = list(csv.DictReader(open(tmp_path / "part" / "log.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5", "6"] and rows[0]["phase"] == "warmup"
    assert float(rows[1]["lr"]) == 0.05 and float(rows[2]["lr"]) == 0.1  # warm-up from 0 to the peak


def test_non_finite_steps_change_nothing_are_counted_and_never_checkpointed(tmp_path):
    every_step = CheckpointConfig(every=1, keep_last=10)
    summary, trainer = run(RegressionConfig(str(tmp_path / "nan"), nan_at=(2,), checkpoint=every_step))
    assert summary.counters.nonfinite_total == 1 and summary.end_step == 6
    names = sorted(p.name for p in (tmp_path / "nan" / "checkpoints").iterdir())
    assert names == [f"step-0000000{i}.pt" for i in (1, 2, 4, 5, 6)]  # none right after the skipped step 3
    # The skipped step made no optimiser update: Adam's step count rises by one from step 2 to step 4.
    after_two = torch.load(tmp_path / "nan" / "checkpoints" / "step-00000002.pt", weights_only=True)
    after_four = torch.load(tmp_path / "nan" / "checkpoints" / "step-00000004.pt", weights_only=True)
    adam_steps = [int(c["opt"]["state"]["linear.weight"]["step"]) for c in (after_two, after_four)]
    assert adam_steps == [2, 3]
    rows = list(csv.DictReader(open(tmp_path / "nan" / "log.csv")))
    assert math.isnan(float(rows[2]["loss"])) and rows[5]["nonfinite_total"] == "1"


def test_parameters_named_in_lr_scales_train_at_that_fraction_of_the_lr():
    model = Regression()
    model.encoder = nn.Linear(3, 3)  # parameters "encoder.*" (scaled) and "linear.*"
    optimizer = loop.build_optimizer(model, OptimConfig(lr=1.0, weight_decay=0.1), lr_scales={"encoder.": 0.25})
    by_group = {(g.get("lr_scale", 1.0), g["weight_decay"]): {id(p) for p in g["params"]}
                for g in optimizer.param_groups}
    assert by_group[(0.25, 0.1)] == {id(model.encoder.weight)} and by_group[(0.25, 0.0)] == {id(model.encoder.bias)}
    assert by_group[(1.0, 0.1)] == {id(model.linear.weight)} and by_group[(1.0, 0.0)] == {id(model.linear.bias)}
    loop.optimizer_step(model, optimizer, [(torch.randn(4, 3), torch.randn(4, 1))], lr=0.2, clip_grad=None)
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([0.05, 0.05, 0.2, 0.2])
