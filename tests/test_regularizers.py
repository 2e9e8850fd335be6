"""Anti-collapse regularisers (``loss.regularizer``): the statistics against float64 references and
their known values, the gradient reaching the encoder, both mask modes, bf16, and the global batch
under ``torchrun`` (2 processes match 1 process in float64)."""

import math

import pytest
import torch
from pretrain_tiny import read_log, tiny_config

from vjepa2.config import ConfigError
from vjepa2.masking import sample_masks
from vjepa2.train.config import LossConfig, load_pretrain_config
from vjepa2.train.pretrain import JEPA, pretrain
from vjepa2.train.regularizers import (gaussian_sigreg_floor, random_directions, regularizer_value,
                                       sigreg_statistic, vicreg_terms)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_vicreg_terms_match_a_float64_reference():
    gen = torch.Generator().manual_seed(0)
    # Tokens far from the origin, some dimensions with std < 1, correlated pairs.
    z = torch.randn(500, 12, generator=gen) * torch.linspace(0.1, 2.0, 12) + 5.0
    z[:, 1] += 0.8 * z[:, 0]
    variance, covariance = vicreg_terms(z)
    x = z.double()
    cov = torch.cov(x.T)
    expected_var = torch.relu(1 - torch.sqrt(cov.diagonal() + 1e-4)).mean()
    expected_cov = (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / 12
    assert float(expected_var) > 0.1 and float(expected_cov) > 0.01  # both terms are active
    torch.testing.assert_close(variance.double(), expected_var, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(covariance.double(), expected_cov, rtol=1e-4, atol=1e-7)
    # Whitened tokens with unit std cost nothing.
    white = torch.randn(20000, 12, generator=gen)
    assert float(regularizer_value("vicreg", white)) < 0.01


def _sigreg_reference(z: torch.Tensor, directions: torch.Tensor, t_max: float = 3.0) -> float:
    """The same integral in float64 with a fine grid over [-t_max, t_max] and complex arithmetic."""
    t = torch.linspace(-t_max, t_max, 401, dtype=torch.float64)
    p = z.double() @ directions.double()                                  # (n, M)
    ecf = torch.exp(1j * p.unsqueeze(-1) * t).mean(0)                     # (M, K) complex
    gauss = torch.exp(-0.5 * t * t)
    integrand = (ecf - gauss).abs().pow(2) * gauss
    return float(torch.trapezoid(integrand, t, dim=-1).mean())


def test_sigreg_matches_a_float64_reference_and_separates_gaussian_from_collapsed():
    gen = torch.Generator().manual_seed(1)
    n, dim = 4096, 32
    directions = random_directions(dim, 16, torch.Generator().manual_seed(2))
    assert torch.allclose(directions.norm(dim=0), torch.ones(16))
    samples = {"gaussian": torch.randn(n, dim, generator=gen),
               "narrow": 0.2 * torch.randn(n, dim, generator=gen),
               "rank one": torch.randn(n, 1, generator=gen) * torch.randn(1, dim, generator=gen),
               "constant": torch.ones(n, dim)}
    values = {}
    for name, z in samples.items():
        values[name] = float(sigreg_statistic(z, directions, knots=41))
        assert values[name] == pytest.approx(_sigreg_reference(z, directions), rel=2e-3, abs=1e-6), name
    floor = gaussian_sigreg_floor(n, knots=41)
    assert values["gaussian"] < 2 * floor           # only the sampling term is left
    for name in ("narrow", "rank one", "constant"):
        assert values[name] > 100 * floor, name
    # Default knots (17) stay close to the fine integral.
    assert float(sigreg_statistic(samples["narrow"], directions)) == pytest.approx(values["narrow"], rel=0.02)


def _jepa(loss: LossConfig, mode: str = "drop") -> tuple[JEPA, torch.Tensor, list]:
    cfg = tiny_config("unused", mask={"mode": mode})
    torch.manual_seed(0)
    model = JEPA(cfg.encoder_config(), cfg.predictor_config(), cfg.mask, loss)
    clips = torch.randn(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    masks = sample_masks(model.encoder.grid(clips.shape), 4, cfg.mask, generator=4)
    return model, clips, masks


@pytest.mark.parametrize("mode", ["drop", "noise"])
@pytest.mark.parametrize("kind", ["vicreg", "sigreg"])
def test_regularizer_adds_its_weighted_value_and_its_gradient_reaches_the_encoder(kind, mode):
    grads, outs = {}, {}
    for name, loss in (("plain", LossConfig()), ("regularised", LossConfig(regularizer=kind, regularizer_weight=0.5))):
        model, clips, masks = _jepa(loss, mode)
        out = model.loss_of(clips, masks, torch.Generator().manual_seed(5), sketch=torch.Generator().manual_seed(6))
        out.loss.backward()
        outs[name] = out
        grads[name] = {n: p.grad.clone() for n, p in model.encoder.named_parameters() if p.grad is not None}
    plain, reg = outs["plain"], outs["regularised"]
    assert float(plain.regularizer) == 0.0 and float(reg.regularizer) > 0
    torch.testing.assert_close(reg.mask_losses, plain.mask_losses)
    torch.testing.assert_close(reg.loss.detach(), plain.loss.detach() + 0.5 * reg.regularizer)
    # Every encoder weight that the prediction loss trains also receives the regulariser's gradient.
    changed = [n for n in grads["plain"] if not torch.allclose(grads["plain"][n], grads["regularised"][n])]
    assert "patch_embed.proj.weight" in changed and "blocks.0.attn.qkv.weight" in changed
    assert len(changed) >= len(grads["plain"]) - 2


def test_regularizer_under_bf16_autocast_is_float32_and_close():
    model, clips, masks = _jepa(LossConfig(regularizer="vicreg"))
    fp32 = model.loss_of(clips, masks)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model.loss_of(clips, masks)
    assert bf16.regularizer.dtype == torch.float32 and math.isfinite(float(bf16.loss.detach()))
    assert float(bf16.regularizer) == pytest.approx(float(fp32.regularizer), rel=0.1, abs=0.02)


def test_regularizer_config_is_checked_and_logged(tmp_path):
    with pytest.raises(ConfigError, match="loss.regularizer"):
        load_pretrain_config("tiny", ["loss.regularizer=vicreg2"])
    with pytest.raises(ConfigError, match="loss.regularizer_weight"):
        load_pretrain_config("tiny", ["loss.regularizer=sigreg", "loss.regularizer_weight=-1"])
    with pytest.raises(ConfigError, match="loss.sigreg_knots"):
        load_pretrain_config("tiny", ["loss.sigreg_knots=1"])
    cfg = tiny_config(tmp_path, loss={"regularizer": "sigreg", "regularizer_weight": 0.1},
                      phases=[{"name": "main", "iterations": 3, "frames": 4, "resolution": 32}])
    pretrain(cfg)
    log = read_log(tmp_path)
    assert all(float(row["loss_reg"]) > 0 for row in log.values())
    total, parts = float(log[1]["loss"]), float(log[1]["loss_mask0"]) + float(log[1]["loss_mask1"])
    assert total == pytest.approx(parts / 2 + 0.1 * float(log[1]["loss_reg"]), rel=1e-5)


def test_motion_weight_puts_the_loss_on_tokens_that_change():
    import torch.nn.functional as F

    from vjepa2.models.encoder import gather_tokens
    from vjepa2.train.pretrain import temporal_change

    model, clips, masks = _jepa(LossConfig(motion_weight=3.0))
    out = model.loss_of(clips, masks)
    with torch.no_grad():
        h = F.layer_norm(model.target_encoder(clips), (model.encoder.config.dim,)).double()
        grid = model.encoder.grid(clips.shape)
        x = h.reshape(4, grid[0], -1, h.shape[-1])
        change = torch.cat([(x[:, 1:2] - x[:, :1]), x[:, 1:] - x[:, :-1]], 1).abs().mean(-1).reshape(4, -1)
        torch.testing.assert_close(temporal_change(h, grid), change)
        weights = 1 + 3.0 * change / change.mean(-1, keepdim=True)
        weights = weights / weights.mean(-1, keepdim=True)
        for i, (context_idx, target_idx) in enumerate(masks):
            z = model.encoder(clips, keep=context_idx)
            pred = model.predictor(z, context_idx, target_idx, mask_index=i, grid=grid).double()
            error = (pred - gather_tokens(h, target_idx)).abs().mean(-1)
            w = torch.gather(weights, 1, target_idx)
            expected = (error * w).sum() / w.sum()
            assert float(out.mask_losses[i]) == pytest.approx(float(expected), rel=1e-5)
            assert abs(float(out.mask_losses[i]) - float(error.mean())) > 1e-4  # the weights matter
