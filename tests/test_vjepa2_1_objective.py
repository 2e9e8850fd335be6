"""V-JEPA 2.1's objective as a pretraining option (arXiv 2603.14482): the loss equals a float64
reference written from the paper's description, lambda warms up, bad settings fail early, and our own
2.1 checkpoint loads with ``vjepa2.load_encoder`` (last level and all four) and ``embed --hierarchical``."""

import math

import pytest
import torch
from pretrain_tiny import read_log, tiny_config

from vjepa2.config import ConfigError
from vjepa2.engine import distributed as dist_utils
from vjepa2.engine.schedules import context_weight_at
from vjepa2.train.pretrain import JEPA, nearest_target_distance, open_loaders, pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = {"dim": 24, "depth": 4, "heads": 2, "mlp_hidden": 48,
         "predictor": {"dim": 24, "depth": 1, "heads": 2, "mlp_hidden": 48}}


def config(tmp_path, **loss):
    return tiny_config(tmp_path, model=MODEL, loss={"objective": "vjepa2_1", **loss},
                       phases=[{"name": "main", "iterations": 8, "frames": 4, "resolution": 32}])


def reference_loss(model: JEPA, clips, masks, p: float, lam: float, distance_weight: bool) -> float:
    """The paper's objective, written out in float64 loops: per-level normalised targets, |.|^p on the
    masked tokens, and on the context tokens weighted by 1/sqrt(distance to the nearest masked one)."""
    with torch.no_grad():
        h = model.target_encoder(clips)
        d = h.shape[-1] // 4
        levels = [h[..., k * d:(k + 1) * d] for k in range(4)]
        h = torch.cat([(x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
                       for x in levels], dim=-1)
        _, _, t, hh, ww = clips.shape
        grid = (t // 2, hh // 16, ww // 16)

        def position(index):
            frame, rest = divmod(int(index), grid[1] * grid[2])
            return (frame, *divmod(rest, grid[2]))

        masked_terms, context_terms = [], []
        for i, (ctx, tgt) in enumerate(masks):
            pred, ctx_pred = model.predictor(model.encoder(clips, keep=ctx), ctx, tgt, mask_index=i, grid=grid)
            masked = [float((pred[b, j] - h[b, tgt[b, j]]).abs().pow(p).mean()) for b in range(len(ctx))
                      for j in range(tgt.shape[1])]
            context = []
            for b in range(len(ctx)):
                targets = [position(k) for k in tgt[b]]
                for j in range(ctx.shape[1]):
                    here = position(ctx[b, j])
                    nearest = min(math.dist(here, other) for other in targets)
                    weight = 1 / math.sqrt(max(nearest, 1.0)) if distance_weight else 1.0
                    context.append(weight * float((ctx_pred[b, j] - h[b, ctx[b, j]]).abs().pow(p).mean()))
            masked_terms.append(sum(masked) / len(masked) / p)
            context_terms.append(sum(context) / len(context) / p)
    return sum(masked_terms) / len(masked_terms) + lam * sum(context_terms) / len(context_terms)


@pytest.mark.parametrize("p, distance_weight", [(1.0, True), (2.0, False)])
def test_loss_matches_a_float64_reference(tmp_path, p, distance_weight):
    cfg = config(tmp_path, loss_exp=p, context_distance_weight=distance_weight)
    torch.manual_seed(0)
    model = JEPA(cfg.encoder_config(), cfg.predictor_config(), cfg.mask, cfg.loss).double()
    batch = next(open_loaders(cfg, cfg.phases[0], 0, dist_utils.DistEnv())[0])
    clips = batch.clips.double()
    out = model.loss_of(clips, batch.masks, context_weight=0.3)
    expected = reference_loss(model, clips, batch.masks, p, 0.3, distance_weight)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-12)
    assert out.targets.shape[-1] == 4 * 24 and float(out.context_loss) > 0


def test_nearest_target_distance_in_grid_units():
    grid = (2, 3, 3)  # index = t * 9 + row * 3 + col
    context = torch.tensor([[0, 8, 9]])
    targets = torch.tensor([[4, 17]])  # (0, 1, 1) and (1, 2, 2)
    expected = torch.tensor([[math.sqrt(2), 1.0, math.sqrt(3)]])  # (0,0,0); (0,2,2) -> (1,2,2); (1,0,0) -> (0,1,1)
    assert torch.allclose(nearest_target_distance(context, targets, grid), expected.double())


def test_context_weight_warms_up_and_is_zero_for_vjepa2(tmp_path):
    cfg = tiny_config(tmp_path, model=MODEL, loss={"objective": "vjepa2_1", "context_weight": 0.8,
                                                   "context_warmup": [0.25, 0.75]},
                      phases=[{"name": "main", "iterations": 100, "frames": 4, "resolution": 32}])
    assert [context_weight_at(cfg, s) for s in (0, 25, 50, 75, 99)] == pytest.approx([0, 0, 0.4, 0.8, 0.8])
    assert context_weight_at(tiny_config(tmp_path), 50) == 0.0


def test_bad_settings_fail_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="mask.mode=drop"):
        tiny_config(tmp_path, model=MODEL, loss={"objective": "vjepa2_1"}, mask={"mode": "noise"})
    with pytest.raises(ConfigError, match="model.depth must be >= 4"):
        tiny_config(tmp_path, loss={"objective": "vjepa2_1"})
    with pytest.raises(ConfigError, match="context_warmup"):
        tiny_config(tmp_path, model=MODEL, loss={"objective": "vjepa2_1", "context_warmup": [0.6, 0.2]})


def test_trains_logs_and_its_checkpoint_loads_as_a_2_1_encoder(tmp_path):
    import vjepa2
    from vjepa2.cli import main

    cfg = config(tmp_path / "run", context_warmup=[0.0, 0.5])
    summary = pretrain(cfg)
    log = read_log(cfg.output_dir)
    assert float(log[8]["context_weight"]) == pytest.approx(0.5) and float(log[1]["context_weight"]) == 0.0
    assert all(float(row["loss_context"]) > 0 for row in log.values())
    clip = torch.randn(1, 3, 4, 32, 32)
    last = vjepa2.load_encoder(str(summary.checkpoint))
    levels = vjepa2.load_encoder(str(summary.checkpoint), output="hierarchical")
    assert type(last).__name__ == "VisionEncoder21" and last(clip).shape == (1, 8, 24)
    assert levels(clip).shape == (1, 8, 96)
    with torch.no_grad():
        assert torch.allclose(levels(clip)[..., -24:], last(clip))
    out = tmp_path / "emb.safetensors"
    assert main(["embed", "--weights", str(summary.checkpoint), "--demo", "--hierarchical", "--frames", "4",
                 "--size", "32", "--out", str(out), "--no-progress"]) == 0
    from safetensors.torch import load_file

    tokens = [v for k, v in load_file(str(out)).items() if v.ndim == 2]
    assert tokens and tokens[0].shape[-1] == 96
