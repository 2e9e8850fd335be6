"""Probe-grid training, the feature cache and the metrics of frozen evaluation."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vjepa2.evals.data import ToyVideos
from vjepa2.evals.features import (ClipConfig, EncoderFeatures, LiveFeatures, TensorFeatures, WhitenedFeatures,
                                   build_features, read_feature_cache)
from vjepa2.evals.metrics import class_mean_recall, classification_metrics, confusion_matrix, topk_hits
from vjepa2.engine.monitor import effective_rank
from vjepa2.evals.probe import (GridConfig, HeadMetrics, ProbeGrid, ProbeReport, fit_and_report, probe_eval_config,
                                run_probe_eval, scheduled_lr, sigmoid_focal_loss)
from vjepa2.evals.probe_weights import load_probes
from vjepa2.evals.toy import ToyConfig, ToyTask
from vjepa2.models import VisionEncoder, encoder_config
from vjepa2.models.attentive_probe import probe_config
from vjepa2.weights import save_public


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_encoder(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VisionEncoder(encoder_config("tiny", dim=48, depth=1, heads=3, mlp_hidden=96)).eval()


def toy(name="toy-ssv2", split="train", n=24):
    return ToyVideos(ToyTask(name, split, ToyConfig(train_size=n, val_size=n, seed=3)))


CLIPS = ClipConfig(frames=4, size=32, train_views=2)


def random_features(n=40, views=2, tokens=6, dim=48, classes=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n, 1), generator=gen)
    # Class-dependent mean so that training has something to learn.
    feats = torch.randn(n, views, tokens, dim, generator=gen) + labels.view(n, 1, 1, 1).float() * 0.3
    return TensorFeatures(feats, labels)


def test_grid_trains_each_probe_with_its_own_hyperparameters():
    features = random_features()
    cfg = probe_config(48, 5, "light")
    grid = GridConfig(lrs=(3e-3, 1e-4), weight_decays=(0.0, 0.5), epochs=3, batch_size=8, warmup_epochs=1)
    together = ProbeGrid(cfg, grid, seed=1)
    together.train(features, progress=False)
    assert len(together.probes) == 4
    for p, (lr, wd) in enumerate(grid.hparams):
        alone = ProbeGrid(cfg, GridConfig(lrs=(lr,), weight_decays=(wd,), epochs=3, batch_size=8, warmup_epochs=1),
                          seed=1)
        alone.train(features, progress=False)
        for (name, a), b in zip(together.probes[p].named_parameters(), alone.probes[0].parameters()):
            assert torch.allclose(a, b, atol=1e-6), (lr, wd, name)
    # Same initial weights, different hyper-parameters: every pair of trained probes differs, and so
    # do their Adam moments (one state per parameter, not one shared state).
    weights = [p.heads[0].weight.detach() for p in together.probes]
    moments = [together.optimizer.state[p.heads[0].weight]["exp_avg"] for p in together.probes]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(weights[i], weights[j])
            assert moments[i] is not moments[j]
    groups = together.optimizer.param_groups
    assert [(g["peak_lr"], g["weight_decay"]) for g in groups[::2]] == grid.hparams
    assert all(g["weight_decay"] == 0 for g in groups[1::2])  # biases / norms / 1-D parameters


def test_block_lr_scale_sets_the_self_attention_blocks_own_rate():
    features = random_features(n=16)
    cfg = probe_config(48, 5, "full", heads=4)
    frozen = ProbeGrid(cfg, GridConfig(lrs=(3e-3,), weight_decays=(0.1,), epochs=1, batch_size=8,
                                       block_lr_scale=0.0), seed=1)
    before = {n: p.detach().clone() for n, p in frozen.probes[0].named_parameters()}
    frozen.train(features, progress=False)
    after = dict(frozen.probes[0].named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("blocks."))
    assert not torch.equal(before["cross_block.xattn.q.weight"], after["cross_block.xattn.q.weight"])
    scaled = ProbeGrid(cfg, GridConfig(lrs=(3e-3, 1e-3), weight_decays=(0.1,), block_lr_scale=0.5), seed=1)
    for probe, (lr, _) in zip(scaled.probes, scaled.grid.hparams):
        block_params = {id(p) for p in probe.blocks.parameters()}
        for group in scaled.optimizer.param_groups:
            if any(id(p) in block_params for p in group["params"]):
                assert all(id(p) in block_params for p in group["params"]) and group["peak_lr"] == 0.5 * lr
    with pytest.raises(Exception, match="block_lr_scale"):
        probe_eval_config({"dataset": "toy-ssv2", "encoder": "random:tiny", "grid": {"block_lr_scale": -1}})


def test_grid_learns_a_separable_task():
    features = random_features(n=80, classes=3)
    grid = ProbeGrid(probe_config(48, 3, "light"), GridConfig(lrs=(3e-3,), weight_decays=(0.01,), epochs=15,
                                                              batch_size=16), seed=0)
    losses = grid.train(features, progress=False)
    (scores,) = grid.scores(features)[0]
    assert losses[0] < 0.7
    assert (scores.argmax(1) == features.labels[:, 0]).float().mean() > 0.8
    assert torch.allclose(scores.sum(1), torch.ones(80), atol=1e-5)  # softmax averaged over views


def test_schedule_warms_up_then_decays_to_zero():
    lrs = [scheduled_lr(s, 100, 10, 1.0, 0.1) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5, abs=1e-9) and lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11])) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_focal_loss_reduces_to_weighted_bce_without_focusing():
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    bce = F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, 4).float(), reduction="none")
    assert torch.allclose(sigmoid_focal_loss(logits, labels, alpha=0.5, gamma=0.0), 0.5 * bce.sum(1).mean())
    # Confident correct predictions are down-weighted by (1 - p_t)^gamma.
    easy = torch.full((1, 4), -6.0)
    easy[0, 2] = 6.0
    assert sigmoid_focal_loss(easy, torch.tensor([2])) < 1e-4 * sigmoid_focal_loss(-easy, torch.tensor([2]))


def test_metrics_on_a_hand_example():
    scores = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.5, 0.3]])
    labels = torch.tensor([0, 1, 1, 1])
    assert topk_hits(scores, labels, 1).tolist() == [True, False, False, True]
    assert topk_hits(scores, labels, 2).tolist() == [True, True, True, True]
    assert confusion_matrix(scores.argmax(1), labels, 3).tolist() == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]
    m = classification_metrics(scores, labels, k=2)
    assert m["count"] == 4 and m["top1"] == 50.0 and m["top2"] == 100.0
    assert m["per_class_accuracy"] == [100.0, pytest.approx(100 / 3), None]
    assert m["mean_class_accuracy"] == pytest.approx((100 + 100 / 3) / 2)
    # Class-mean recall weighs classes equally: class 0 (1 sample) 100%, class 1 (3 samples) 1/3.
    assert class_mean_recall(scores, labels, k=1) == pytest.approx((100 + 100 / 3) / 2)
    # The typed form (what a probe report holds) writes the same dict back; 3 classes: top-3, no top-5.
    full = classification_metrics(scores, labels)
    typed = HeadMetrics.from_json(full)
    assert (typed.k, typed.top_k, typed.top5, typed.recall_at_5) == (3, 100.0, None, 100.0)
    assert typed.to_json() == full and typed.value("top1") == 50.0
    assert list(typed.summary().to_json()) == ["count", "top1", "top3", "mean_class_accuracy", "recall@5"]


def test_cache_round_trip_equals_the_uncached_path(tmp_path):
    data = toy(n=12)
    fn = EncoderFeatures(tiny_encoder())
    for training in (True, False):
        cached = build_features(data, fn, CLIPS, training, seed=5, cache_dir=tmp_path, progress=False)
        live = build_features(data, fn, CLIPS, training, seed=5, cache_dir=None, progress=False)
        assert isinstance(live, LiveFeatures) and isinstance(cached.array, np.memmap)
        idx = torch.tensor([0, 5, 11, 3])
        assert torch.allclose(cached.get(idx), live.get(idx), atol=1e-5)
        views = torch.tensor([1, 0, 1, 1]) if training else torch.zeros(4, dtype=torch.long)
        assert torch.allclose(cached.get(idx, views), live.get(idx, views), atol=1e-5)
        assert torch.equal(cached.labels, live.labels)
    # The augmented view differs from the centre view; the cache is reused when the key matches.
    train = build_features(data, fn, CLIPS, True, seed=5, cache_dir=tmp_path, progress=False)
    assert not torch.allclose(train.get(torch.tensor([0]), torch.tensor([0])), train.get(torch.tensor([0]),
                                                                                         torch.tensor([1])))
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) == 2
    mtimes = [f.stat().st_mtime_ns for f in files]
    build_features(data, fn, CLIPS, True, seed=5, cache_dir=tmp_path, progress=False)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    build_features(data, fn, ClipConfig(frames=4, size=32, train_views=2, input="shuffled"), True, seed=5,
                   cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3
    # Different encoder weights never reuse a cache file.
    build_features(data, EncoderFeatures(tiny_encoder(seed=1)), CLIPS, True, seed=5, cache_dir=tmp_path,
                   progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 4
    # The seed keys a file only where it changes the numbers: another seed's centre-crop views reuse
    # the file, its augmented training views do not.
    build_features(data, fn, CLIPS, False, seed=6, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 4
    build_features(data, fn, CLIPS, True, seed=6, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 5

    # Whole runs, cached and uncached, give the same report.
    reports = []
    for cache in (tmp_path / "c", None):
        reports.append(fit_and_report(
            train_data=data, val_data=toy(split="val", n=12), fn=fn, clips=CLIPS, probe_cfg=probe_config(48, 12, "light"),
            grid=GridConfig(lrs=(1e-3, 1e-4), weight_decays=(0.01,), epochs=2, batch_size=4), seed=0, cache_dir=cache,
            cache_dtype="float32", encode_batch=8, out=tmp_path / f"out{cache is None}", head_names=("class",),
            selection=("top1", 0), settings={}, device=torch.device("cpu"), progress=False))
    a, b = reports
    assert a.best_index == b.best_index
    for ga, gb in zip(a.grid, b.grid):
        assert ga.train_loss == pytest.approx(gb.train_loss, abs=1e-4)
        assert ga.heads["class"].top1 == gb.heads["class"].top1


def test_cache_file_is_one_contiguous_array(tmp_path):
    data = toy(n=5)
    cached = build_features(data, EncoderFeatures(tiny_encoder()), CLIPS, False, seed=0, cache_dir=tmp_path,
                            dtype="float16", progress=False)
    array, metadata = read_feature_cache(cached.path)
    assert array.dtype == np.float16 and array.shape == (5, 1, 8, 48)  # (videos, views, 2*2*2 tokens, dim)
    from safetensors import safe_open

    with safe_open(str(cached.path), framework="pt") as f:  # still a valid safetensors file
        assert torch.equal(f.get_tensor("features/00000003"), torch.from_numpy(np.array(array[3])))
    assert json.loads(metadata["key"])["dtype"] == "float16"


def test_probe_command_on_a_built_in_task(tmp_path):
    encoder_path = tmp_path / "encoder.pt"
    save_public(encoder_path, tiny_encoder())
    cfg = probe_eval_config({
        "encoder": str(encoder_path), "dataset": "toy-appearance", "variant": "full",
        "clips": {"frames": 4, "size": 32, "train_views": 2},
        "grid": {"lrs": [1e-3, 1e-4], "weight_decays": [0.01, 0.1], "epochs": 2, "batch_size": 8},
        "toy": {"train_size": 16, "val_size": 8}, "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "out"),
        "device": "cpu"})
    report = run_probe_eval(cfg, progress=False)
    assert len(report.grid) == 4 and report.val.count == 8
    best = report.best
    assert best.heads["class"].count == 8 and len(best.heads["class"].per_class_accuracy) == 8
    assert report.best_score == max(g.heads["class"].top1 for g in report.grid)
    assert report.grid[report.best_index].heads["class"].top1 == best.heads["class"].top1
    assert report.grid[0].heads["class"].confusion is None  # grid rows keep the summary numbers only
    assert (tmp_path / "out" / "confusion.png").stat().st_size > 1000
    text = (tmp_path / "out" / "results.json").read_text()
    saved = json.loads(text)
    assert saved["best"]["lr"] == best.lr and saved["settings"]["dataset"] == "toy-appearance"
    assert list(saved["best"]["heads"]["class"]) == ["count", "top1", "top5", "mean_class_accuracy", "recall@5",
                                                     "per_class_accuracy", "confusion"]
    assert list(saved["grid"][0]["heads"]["class"]) == ["count", "top1", "top5", "mean_class_accuracy", "recall@5"]
    # The returned report is what results.json holds, and reads back to the same report.
    assert json.dumps(report.to_json(), indent=1) + "\n" == text
    assert json.dumps(ProbeReport.read(tmp_path / "out" / "results.json").to_json(), indent=1) + "\n" == text
    probes = load_probes(tmp_path / "out" / "probes.pt")
    assert len(probes) == 4 and probes[0].config.depth == 3 and probes[0].config.num_classes == (8,)


def test_whitening_diagnostic_decorrelates_collapsed_features():
    gen = torch.Generator().manual_seed(0)
    # Features that live mostly on 2 directions plus a weak informative residual.
    strong = torch.randn(64, 1, 10, 2, generator=gen) @ torch.randn(2, 16, generator=gen) * 5
    feats = strong + 0.05 * torch.randn(64, 1, 10, 16, generator=gen)
    train = TensorFeatures(feats, torch.zeros(64, 1, dtype=torch.long))
    mean, whitening = WhitenedFeatures.fit(train)
    white = WhitenedFeatures(train, mean, whitening).get(torch.arange(64)).reshape(-1, 16).double()
    assert torch.allclose(torch.cov(white.T), torch.eye(16, dtype=torch.float64), atol=1e-3)
    assert effective_rank(feats.reshape(-1, 16))["effective_rank"] < 3
    assert effective_rank(white)["effective_rank"] > 15
