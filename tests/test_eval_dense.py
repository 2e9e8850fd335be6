"""toy-seg, the dense probe: pixel labels agree with the renderer, token labels are the majority class
in the encoder's token order, mIoU is the textbook one, and the probe separates what is separable."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vjepa2.config import ConfigError
from vjepa2.data.clips.synthetic import SHAPES, Background, Motion, Scene, SceneObject, SyntheticVideos, render, \
    render_labels
from vjepa2.evals.dense import SEG_CLASSES, ToySegConfig, fit_linear_head, mean_iou, split_clips, token_labels, toy_seg

pytestmark = pytest.mark.usefixtures("one_thread")


def test_labels_mark_exactly_the_drawn_pixels_of_each_shape():
    for shape in ("star", "ring", "cross"):
        obj = SceneObject(shape=shape, colour="red", position=(0.4, 0.55), size=0.2, angle=0.3,
                          motion=Motion(velocity=(0.2, -0.1), spin=1.0))
        scene = Scene(background=Background(kind="plain", colours=("#000000", "#000000")), objects=(obj,))
        clip, labels = render(scene, 4, (40, 48)), render_labels(scene, 4, (40, 48))
        drawn = (clip != 0).any(-1)
        assert labels.shape == (4, 40, 48) and drawn.sum() > 50
        assert np.array_equal(labels > 0, drawn)
        assert set(np.unique(labels[drawn])) == {1 + SHAPES.index(shape)}


def test_top_object_wins_where_objects_overlap():
    for i in range(40):
        scene = SyntheticVideos(seed=11)[i]
        if len(scene.objects) < 2:
            continue
        labels = render_labels(scene, 2, 32)
        top = scene.objects[-1]
        only_top = render_labels(Scene(background=scene.background, objects=(top,)), 2, 32)
        assert np.all(labels[only_top > 0] == 1 + SHAPES.index(top.shape))


def test_token_labels_are_the_majority_in_time_row_column_order():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(2, 4, 6, 4))
    got = token_labels(labels, patch=2, tubelet=2, classes=3)
    expected = []
    for n in range(2):
        row = []
        for t in range(2):
            for h in range(3):
                for w in range(2):
                    block = labels[n, 2 * t:2 * t + 2, 2 * h:2 * h + 2, 2 * w:2 * w + 2].ravel()
                    row.append(np.bincount(block, minlength=3).argmax())   # ties: the lower class
        expected.append(row)
    assert np.array_equal(got, np.array(expected))
    with pytest.raises(ValueError, match="do not tile"):
        token_labels(labels, patch=4, tubelet=2)


def test_mean_iou_counts_only_classes_that_occur():
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    miou, ious = mean_iou(pred, target, classes=4)
    assert ious[:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and np.isnan(ious[3])
    assert miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_the_linear_head_separates_informative_features_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (2000,), generator=generator)
    informative = 6 * torch.nn.functional.one_hot(y, 5).float() + torch.randn(2000, 5, generator=generator)
    noise = torch.randn(2000, 5, generator=generator)
    cfg = ToySegConfig(steps=200, lr=0.05)
    scores = {}
    for name, x in (("informative", informative), ("noise", noise)):
        head = fit_linear_head(x[:1500], y[:1500], 5, cfg)
        scores[name] = mean_iou(head(x[1500:]).argmax(-1), y[1500:], 5)[0]
    assert scores["informative"] > 0.9 and scores["noise"] < 0.4


def test_toy_seg_end_to_end_and_the_image_input(tmp_path):
    from vjepa2.weights import load_encoder

    cfg = ToySegConfig(train_size=12, val_size=6, frames=4, size=32, steps=20)
    result = toy_seg(load_encoder("random:tiny"), cfg)
    assert 0.0 <= result["miou"] <= 1.0 and set(result["per_class"]) == set(SEG_CLASSES)
    assert result["val_tokens"] == 6 * 2 * 2 * 2 and result["per_class"]["background"] is not None
    assert set(result["figure_ground"]) == {"miou", "object_iou", "token_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in result["figure_ground"].values())
    clips, labels = split_clips("val", ToySegConfig(val_size=3, frames=4, size=32, input="image"))
    assert all(np.array_equal(clips[:, 0], clips[:, t]) and np.array_equal(labels[:, 0], labels[:, t])
               for t in range(4))
    train, _ = split_clips("train", ToySegConfig(train_size=3, frames=4, size=32))
    val, _ = split_clips("val", ToySegConfig(val_size=3, frames=4, size=32))
    assert not np.array_equal(train, val)  # separate scene seeds


def test_cli_writes_results_and_bad_settings_are_one_line(tmp_path):
    base = [sys.executable, "-m", "vjepa2", "eval", "toy-seg", "--encoder", "random:tiny", "--threads", "1"]
    done = subprocess.run([*base, "--out", str(tmp_path), "train_size=8", "val_size=4", "frames=4", "size=32",
                           "steps=5"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "mIoU" in done.stdout and json.loads((tmp_path / "results.json").read_text())["val_tokens"] == 32
    bad = subprocess.run([*base, "train_size=0"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "train_size" in bad.stderr


def test_report_rows_pretrained_random_and_image_only():
    from vjepa2.evals.report import SEG_ROWS, report_config, toy_seg_lines, toy_seg_rows
    from vjepa2.weights import load_encoder

    encoders = {"pretrained": load_encoder("random:tiny", seed=1), "random": load_encoder("random:tiny", seed=2)}
    seg = ToySegConfig(train_size=6, val_size=4, frames=4, size=32, steps=5)
    rows = toy_seg_rows(encoders, seg)
    assert [r["row"] for r in rows] == [label for label, *_ in SEG_ROWS]
    assert [r["settings"]["input"] for r in rows] == ["video", "video", "image"]
    assert report_config({"toy_seg": None}).toy_seg is None and report_config({}).toy_seg == ToySegConfig()
    table = toy_seg_lines(rows, seg)
    assert "figure-ground mIoU" in table[3] and len(table) == 5 + len(rows) and table[-1].startswith("| image-only")


def test_figure_ground_labels_cover_every_shape_token_and_object_scale_enlarges_the_same_scene():
    _, labels = split_clips("train", ToySegConfig(train_size=8, frames=4, size=32))
    shape = token_labels(labels, 16, 2)
    figure = token_labels((labels > 0).astype(np.uint8), 16, 2, classes=2)
    assert np.all(figure[shape > 0] == 1)        # a shape's plurality implies an object majority
    small, large = SyntheticVideos(seed=3)[5], SyntheticVideos(seed=3, object_scale=2.0)[5]
    assert [o.shape for o in small.objects] == [o.shape for o in large.objects]
    assert [2 * o.size for o in small.objects if o.role != "occluder"] == pytest.approx(
        [o.size for o in large.objects if o.role != "occluder"])
    _, big = split_clips("train", ToySegConfig(train_size=8, frames=4, size=32, object_scale=2.0))
    assert (big > 0).mean() > 2 * (labels > 0).mean()
    with pytest.raises(ConfigError, match="object_scale"):
        ToySegConfig(object_scale=0)
