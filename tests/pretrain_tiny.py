"""Tiny pretraining configs shared by the pretraining tests (seconds per run on 2 CPU cores)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

from vjepa2.config import from_dict
from vjepa2.train.config import PretrainConfig

TINY = {
    "model": {"size": "tiny", "dim": 48, "depth": 1, "heads": 3, "mlp_hidden": 96, "predictor": {"dim": 48,
              "depth": 1, "heads": 3, "mlp_hidden": 96}},
    "data": {"sources": [{"kind": "synthetic"}], "num_workers": 0},
    "optim": {"lr": 1e-3},
    "batch_size": 4,
    "ema": [0.99, 0.99],
    "device": "cpu",
    "log": {"every": 1, "tensorboard": False, "progress_bar": False},
    "checkpoint": {"every": 4, "keep_last": 3},
    "phases": [{"name": "main", "iterations": 6, "frames": 4, "resolution": 32}],
}


def merge(base: dict, changes: dict) -> dict:
    """Recursive dict update (lists are replaced)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def tiny_dict(out_dir: str | os.PathLike, **changes) -> dict:
    return merge(TINY, {"output_dir": str(out_dir), **changes})


def tiny_config(out_dir: str | os.PathLike, **changes) -> PretrainConfig:
    return from_dict(PretrainConfig, tiny_dict(out_dir, **changes))


def write_config(path: str | os.PathLike, out_dir: str | os.PathLike, **changes) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(tiny_dict(out_dir, **changes), sort_keys=False))
    return path


def read_log(out_dir: str | os.PathLike) -> dict[int, dict]:
    """``{step: row}`` of a run's ``log.csv``."""
    import csv

    with open(Path(out_dir) / "log.csv", newline="") as f:
        # A row being appended by a live run may be incomplete: skip it.
        return {int(row["step"]): row for row in csv.DictReader(f) if (row.get("step") or "").isdigit()}


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "vjepa2", "pretrain", *args]


def subprocess_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", **extra})
    return env


def run_cli(*args: str, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(**env))
