"""Atomic checkpoint writes, keep-last-K, the newest-valid finder and RNG state round trips."""

import random

import numpy as np
import pytest
import torch

from vjepa2.files import atomic_torch_save as atomic_save
from vjepa2.files import atomic_write, atomic_write_text
from vjepa2.engine.checkpoint import CheckpointDir, capture_rng_state, restore_rng_state


def test_atomic_save_round_trip(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 7, "name": "x"}
    path = atomic_save(state, tmp_path / "sub" / "a.pt")
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and loaded["step"] == 7
    assert [p.name for p in path.parent.iterdir()] == ["a.pt"]  # no temp file left


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")

    def explode(f):
        f.write(b"half of the new con")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, explode)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_keep_last_k(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep_last=2)
    for step in (1, 2, 3, 10):
        ckpts.save({"step": step}, step)
    assert [s for s, _ in ckpts.steps()] == [3, 10]
    assert ckpts.path(10).name == "step-00000010.pt"


def test_keep_steps_survive_rotation_and_do_not_count(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep_last=2, keep_steps=(2, 5))
    for step in range(1, 9):
        ckpts.save({"step": step}, step)
    assert [s for s, _ in ckpts.steps()] == [2, 5, 7, 8]


def test_latest_valid_skips_corrupt_truncated_and_incomplete(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep_last=10)
    ckpts.save({"model": torch.ones(3), "step": 1}, 1)
    ckpts.save({"model": torch.ones(3), "step": 2}, 2)
    good = ckpts.path(2).read_bytes()
    ckpts.save({"step": 3}, 3)                                  # lacks "model"
    ckpts.path(4).write_bytes(good[: len(good) // 2])          # truncated copy
    ckpts.path(5).write_bytes(b"\x00garbage" * 10)            # not a checkpoint at all
    messages = []
    found = ckpts.latest_valid(["model", "step"], warn=messages.append)
    assert found is not None and found[0] == ckpts.path(2) and found[1]["step"] == 2
    assert len(messages) == 3
    assert all(str(tmp_path) in m for m in messages)
    assert "missing model" in messages[2]
    assert ckpts.path(5).exists()  # skipped files are kept for a human to inspect


def test_latest_valid_none_and_partial_cleanup(tmp_path):
    ckpts = CheckpointDir(tmp_path / "none")
    assert ckpts.latest_valid() is None and ckpts.steps() == []
    ckpts = CheckpointDir(tmp_path)
    (tmp_path / ".step-00000004.pt.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "unrelated.tmp").write_bytes(b"keep me")
    assert [p.name for p in ckpts.remove_partial()] == [".step-00000004.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.tmp"]


def test_rng_state_round_trip_through_a_safe_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's legacy state
    state = capture_rng_state()
    expected = (random.random(), np.random.randn(3), torch.rand(3))
    atomic_save({"rng": state}, tmp_path / "rng.pt")
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (random.random(), np.random.randn(3), torch.rand(3))
    assert got[0] == expected[0]
    assert np.array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])
