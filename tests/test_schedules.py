"""Phase lookup, learning-rate shapes and EMA momentum by global step."""

import math

import pytest

from vjepa2.config import from_dict
from vjepa2.train.config import PretrainConfig, load_pretrain_config
from vjepa2.engine.schedules import ema_momentum_at, lr_at, phase_at, phase_lr, phase_starts


def _cfg(**top):
    return from_dict(PretrainConfig, {
        "phases": [
            {"name": "warm", "iterations": 4, "frames": 4, "resolution": 32, "lr_schedule": "warmup", "lr_start": 1e-4},
            {"name": "flat", "iterations": 6, "frames": 4, "resolution": 32},
            {"name": "cool", "iterations": 5, "frames": 8, "resolution": 64, "lr_schedule": "linear", "lr_end": 1e-6},
        ],
        "optim": {"lr": 5e-4}, **top})


def test_phase_lookup_at_boundaries():
    cfg = _cfg()
    assert phase_starts(cfg.phases) == [0, 4, 10]
    expected = ["warm"] * 4 + ["flat"] * 6 + ["cool"] * 5
    got = [phase_at(cfg.phases, s).phase.name for s in range(15)]
    assert got == expected
    where = phase_at(cfg.phases, 12)
    assert (where.index, where.start, where.step_in_phase) == (2, 10, 2)
    for bad in (-1, 15):
        with pytest.raises(ValueError, match="outside the schedule of 15"):
            phase_at(cfg.phases, bad)


def test_lr_shapes_are_continuous_and_hit_their_ends():
    cfg = _cfg()
    lrs = [lr_at(cfg, s) for s in range(15)]
    assert lrs[0] == pytest.approx(1e-4)                       # warm-up starts at lr_start
    assert lrs[3] == pytest.approx(1e-4 + (5e-4 - 1e-4) * 3 / 4)
    assert all(a < b for a, b in zip(lrs[:4], lrs[1:5]))      # rising into the constant phase
    assert lrs[4:10] == [pytest.approx(5e-4)] * 6
    assert lrs[10] == pytest.approx(5e-4)                       # decay starts at the peak
    assert lrs[14] == pytest.approx(5e-4 + (1e-6 - 5e-4) * 4 / 5)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))


def test_cosine_and_defaults():
    cos = from_dict(PretrainConfig, {"phases": [
        {"name": "c", "iterations": 10, "frames": 2, "resolution": 16, "lr_schedule": "cosine", "lr_end": 0.1}]},
        prefix="").phases[0]
    assert phase_lr(cos, 1.0, 0) == pytest.approx(1.0)
    assert phase_lr(cos, 1.0, 5) == pytest.approx(0.55)         # half-way: mean of the ends
    assert phase_lr(cos, 1.0, 9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    warm = from_dict(PretrainConfig, {"phases": [
        {"name": "w", "iterations": 4, "frames": 2, "resolution": 16, "lr_schedule": "warmup"}]}).phases[0]
    assert phase_lr(warm, 2.0, 0) == 0.0 and phase_lr(warm, 2.0, 2) == pytest.approx(1.0)


def test_ema_momentum_constant_and_linear():
    assert {ema_momentum_at(_cfg(), s) for s in range(15)} == {0.99925}
    cfg = _cfg(ema=[0.99, 1.0])
    assert ema_momentum_at(cfg, 0) == pytest.approx(0.99)
    assert ema_momentum_at(cfg, 15) == pytest.approx(1.0)
    assert ema_momentum_at(cfg, 5) == pytest.approx(0.99 + 0.01 / 3)


@pytest.mark.parametrize("name, cooldown_res", [("vitl", 256), ("vith", 256), ("vitg", 384)])
def test_paper_recipes_follow_the_paper(name, cooldown_res):
    cfg = load_pretrain_config(name)
    warm, flat, cool = cfg.phases
    assert [p.iterations for p in cfg.phases] == [12_000, 228_000, 12_000]
    assert (warm.frames, warm.resolution, flat.frames, flat.resolution) == (16, 256, 16, 256)
    assert (cool.frames, cool.resolution) == (64, cooldown_res)
    assert lr_at(cfg, 0) == pytest.approx(1e-4)
    assert lr_at(cfg, 12_000) == lr_at(cfg, 239_999) == pytest.approx(5.25e-4)
    assert lr_at(cfg, 240_000) == pytest.approx(5.25e-4) and lr_at(cfg, 251_999) < 1e-6 + 5.25e-4 / 12_000 * 1.01
    assert cfg.batch_size == 3072 and cfg.optim.weight_decay == 0.04 and cfg.optim.betas == (0.9, 0.999)
    assert cfg.ema == (0.99925, 0.99925) and cfg.dtype == "auto"
    assert cfg.loss.loss_exp == 1.0 and cfg.loss.regularizer == "none"  # the paper's objective
    assert cfg.model.activation_checkpointing and cfg.mask.mode == "drop"
    assert [(g.num_blocks, g.spatial_scale) for g in cfg.mask.generators] == [(8, (0.15, 0.15)), (2, (0.7, 0.7))]
