"""The EMA target update against float64 arithmetic."""

import pytest
import torch
from torch import nn

from vjepa2.train.ema import ema_update, make_target


def _pair():
    online = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4))
    target = make_target(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    return online, target


def test_make_target_is_a_frozen_copy():
    online = nn.Linear(3, 2)
    target = make_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr()
               for a, b in zip(online.parameters(), target.parameters()))


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.99925, 1.0])
def test_ema_update_matches_float64(momentum):
    online, target = _pair()
    before = [p.detach().double().clone() for p in target.parameters()]
    ema_update(target, online, momentum)
    for old, new, src in zip(before, target.parameters(), online.parameters()):
        expected = momentum * old + (1 - momentum) * src.detach().double()
        torch.testing.assert_close(new.double(), expected, rtol=1e-6, atol=1e-7)


def test_ema_update_rejects_mismatch_and_bad_momentum():
    online, target = _pair()
    with pytest.raises(ValueError, match="momentum"):
        ema_update(target, online, 1.5)
    with pytest.raises(ValueError, match="parameters"):
        ema_update(nn.Linear(5, 4), online, 0.9)
