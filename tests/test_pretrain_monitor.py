"""The collapse monitor of the pretraining loop: effective rank of the target features on a fixed batch."""

import math

import pytest
import torch
import torch.nn.functional as F
from pretrain_tiny import read_log, tiny_config

from vjepa2.train import pretrain as pretrain_module
from vjepa2.engine.monitor import target_feature_rank
from vjepa2.train.pretrain import JEPA, pretrain


pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_rank(features: torch.Tensor) -> float:
    """exp(entropy of the PCA variance shares) in float64, from the eigenvalues of the covariance."""
    x = features.reshape(-1, features.shape[-1]).double()
    eigenvalues = torch.linalg.eigvalsh(torch.cov(x.T)).clamp_min(0)
    share = eigenvalues / eigenvalues.sum()
    share = share[share > 1e-12]
    return math.exp(float(-(share * share.log()).sum()))


def _model(cfg) -> JEPA:
    torch.manual_seed(0)
    return JEPA(cfg.encoder_config(), cfg.predictor_config(), cfg.mask, cfg.loss)


def test_rank_matches_a_float64_reference_and_sees_colour_collapse(tmp_path):
    cfg = tiny_config(tmp_path)
    model = _model(cfg)
    clips = torch.randn(3, 3, 4, 32, 32)
    with torch.no_grad():
        reference = _reference_rank(F.layer_norm(model.target_encoder(clips), (cfg.model.dim,)))
    assert target_feature_rank(model, clips) == pytest.approx(reference, rel=1e-4)
    assert reference > 10

    # A patch embedding that only sees each tubelet's mean colour: every token lies in a 3-D
    # family of inputs, the partial collapse the monitor is there to show.
    with torch.no_grad():
        weight = model.target_encoder.patch_embed.proj.weight       # (D, 3, ts, p, p)
        weight.copy_(weight.mean(dim=(2, 3, 4), keepdim=True).expand_as(weight) * 50)
    assert target_feature_rank(model, clips) < 0.5 * reference


def test_logged_rank_is_that_of_the_phase_first_batch(tmp_path):
    cfg = tiny_config(tmp_path, log={"every": 2, "tensorboard": False, "progress_bar": False},
                      phases=[{"name": "main", "iterations": 4, "frames": 4, "resolution": 32}])
    summary = pretrain(cfg)
    logged = {step: float(row["target_rank"]) for step, row in read_log(tmp_path).items()}
    assert sorted(logged) == [2, 4] and all(1 <= v <= cfg.model.dim for v in logged.values())
    assert summary.target_rank == pytest.approx(logged[4], rel=1e-6)

    # Recompute from the saved EMA encoder on the batch of step 0, rebuilt independently.
    state = torch.load(summary.checkpoint, map_location="cpu", weights_only=True)
    model = _model(cfg)
    model.load_state_dict(pretrain_module.join_models(state))
    loader = pretrain_module.open_loaders(cfg, cfg.phases[0], 0, pretrain_module.dist_utils.DistEnv())[0]
    with torch.no_grad():
        features = F.layer_norm(model.target_encoder(next(loader).clips), (cfg.model.dim,))
    assert logged[4] == pytest.approx(_reference_rank(features), rel=1e-4)
