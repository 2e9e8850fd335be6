"""Action anticipation: predictor-extrapolated features, the EPIC-KITCHENS-100 CSV reader, the command."""

import json

import numpy as np
import pytest
import torch

from vjepa2.config import ConfigError
from vjepa2.data.clips.video import read_clip, write_video
from vjepa2.evals.anticipation import (AnticipationFeatures, EK100Videos, anticipation_eval_config,
                                       ek100_label_space, parse_timestamp, read_ek100_csv, run_anticipation_eval,
                                       split_by_label_space)
from vjepa2.evals.data import EvalDataError
from vjepa2.evals.probe import ProbeReport
from vjepa2.evals.probe_weights import load_probes
from vjepa2.models import Predictor, VisionEncoder, encoder_config, predictor_config
from vjepa2.weights import save_public

HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
          "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n")
ROWS = [
    'P01_01_0,P01,P01_01,00:00:01.089,00:00:02.500,00:00:03.000,150,180,open door,open,3,door,8,[\'door\'],[8]\n',
    'P01_01_1,P01,P01_01,00:00:02.100,00:00:03.000,00:00:03.500,180,210,"take cup, plate",take,0,cup,12,'
    '"[\'cup\', \'plate\']","[12, 20]"\n',
    'P01_01_2,P01,P01_01,00:00:03.100,00:00:03.250,00:00:03.900,195,234,open cup,open,3,cup,12,[\'cup\'],[12]\n',
]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_pair(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = VisionEncoder(encoder_config("tiny", dim=48, depth=1, heads=3, mlp_hidden=96, img_size=32,
                                               num_frames=4)).eval()
        predictor = Predictor(predictor_config(encoder.config, dim=24, depth=1, heads=2, mlp_hidden=48)).eval()
        with torch.no_grad():  # larger than the init (and non-zero mask tokens) so positions show
            for p in predictor.parameters():
                p.normal_(std=0.2)
    return encoder, predictor


def test_predictor_extrapolates_future_token_positions():
    encoder, predictor = tiny_pair()
    fn = AnticipationFeatures(encoder, predictor, future_tubelets=2, offset_tubelets=1, mask_index=1)
    targets, grid = fn.future_indices((2, 2, 2), batch=3, device="cpu")
    assert grid == (5, 2, 2)
    assert targets.shape == (3, 8) and targets[0].tolist() == list(range(12, 20))
    clips = torch.randn(3, 3, 4, 32, 32)
    with torch.no_grad():
        out = fn(clips)
        tokens = encoder(clips)
        assert out.shape == (3, 8 + 8, 48)
        assert torch.equal(out[:, :8], tokens)  # the observed tokens come first, untouched
        direct = predictor(tokens, torch.arange(8).expand(3, -1), targets, mask_index=1, grid=(5, 2, 2))
        assert torch.allclose(out[:, 8:], direct)
        # Positions matter (RoPE): predicting right after the clip differs from one tubelet later.
        near = AnticipationFeatures(encoder, predictor, future_tubelets=2, offset_tubelets=0)(clips)
        assert not torch.allclose(near[:, 8:], out[:, 8:], atol=1e-4)
        other_token = AnticipationFeatures(encoder, predictor, 2, 1, mask_index=0)(clips)
        assert not torch.allclose(other_token[:, 8:], out[:, 8:], atol=1e-4)
        assert torch.equal(AnticipationFeatures(encoder, predictor, use_predictor=False)(clips), tokens)
    with pytest.raises(ConfigError, match="mask_index=10"):
        AnticipationFeatures(encoder, predictor, mask_index=10)


def test_ek100_csv_reader_and_label_space(tmp_path):
    (tmp_path / "train.csv").write_text(HEADER + "".join(ROWS[:2]))
    (tmp_path / "val.csv").write_text(HEADER + "".join(ROWS))
    train = read_ek100_csv(tmp_path / "train.csv")
    assert [a.video_id for a in train] == ["P01_01", "P01_01"]
    assert train[0].start == pytest.approx(2.5) and train[1].stop == pytest.approx(3.5)
    assert (train[1].verb, train[1].noun, train[1].verb_class, train[1].noun_class) == ("take", "cup", 0, 12)
    assert train[1].origin.endswith("train.csv:3")
    space = ek100_label_space(train)
    assert space.verbs == (0, 3) and space.nouns == (8, 12) and space.actions == ((0, 12), (3, 8))
    assert space.labels(train[0]) == (1, 0, 1) and space.labels(train[1]) == (0, 1, 0)
    kept, unseen = split_by_label_space(read_ek100_csv(tmp_path / "val.csv"), space)
    assert len(kept) == 2 and [a.narration_id for a in unseen] == ["P01_01_2"]  # (open, cup) never trained
    assert parse_timestamp("01:02:03.5") == pytest.approx(3723.5)


def test_ek100_csv_errors_name_file_and_line(tmp_path):
    (tmp_path / "cols.csv").write_text("narration_id,video_id\nx,y\n")
    with pytest.raises(EvalDataError, match=r"cols\.csv:1: missing column\(s\) participant_id"):
        read_ek100_csv(tmp_path / "cols.csv")
    (tmp_path / "bad.csv").write_text(HEADER + ROWS[0] + ROWS[1].replace("00:00:03.000", "3 o'clock", 1))
    with pytest.raises(EvalDataError, match=r"bad\.csv:3: column start_timestamp: timestamp \"3 o'clock\""):
        read_ek100_csv(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text(HEADER)
    with pytest.raises(EvalDataError, match="holds no actions"):
        read_ek100_csv(tmp_path / "empty.csv")


def test_ek100_observation_clip_ends_before_the_action(tmp_path):
    frames = np.stack([np.full((32, 32, 3), 5 * t, dtype=np.uint8) for t in range(40)])  # 5 s at 8 fps
    write_video(tmp_path / "videos" / "P01" / "P01_01.MP4", frames, fps=8)
    (tmp_path / "a.csv").write_text(HEADER + "".join(ROWS[:2]))
    actions = read_ek100_csv(tmp_path / "a.csv")
    data = EK100Videos(actions, ek100_label_space(actions), tmp_path / "videos", anticipation_time=0.5)
    # Action 1 starts at 3.0 s: 8 frames at 8 fps ending 0.5 s before it start at 1.5 s.
    assert data.observation_start(1, 8, 8.0) == pytest.approx(1.5)
    (segment,) = data.segments(1, frames=8, size=32, fps=8.0, num_segments=1)
    expected, info = read_clip(tmp_path / "videos" / "P01" / "P01_01.MP4", frames=8, fps=8.0, start=1.5)
    assert np.array_equal(segment, expected.numpy()) and info.frame_times[-1] < 3.0 - 0.5
    assert data.observation_start(0, 16, 8.0) == 0.0  # would start before the video: clamped
    assert data.labels(1) == (0, 1, 0) and data.head_classes[2] == ("take / cup", "open / door")
    missing = EK100Videos(actions, ek100_label_space(actions), tmp_path / "elsewhere")
    with pytest.raises(EvalDataError, match=r"a\.csv:2: cannot read the observation clip"):
        missing.segments(0, frames=8, size=32, fps=8.0, num_segments=1)


def test_anticipation_command_on_the_built_in_task(tmp_path):
    encoder, predictor = tiny_pair()
    save_public(tmp_path / "run.pt", encoder, predictor)
    cfg = anticipation_eval_config({
        "checkpoint": str(tmp_path / "run.pt"), "dataset": "toy-anticipation", "variant": "light",
        "clips": {"frames": 4, "size": 32, "train_views": 1},
        "grid": {"lrs": [1e-3, 1e-4], "weight_decays": [0.01], "epochs": 2, "batch_size": 8, "loss": "focal"},
        "toy": {"train_size": 16, "val_size": 8}, "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "out"),
        "device": "cpu"})
    report = run_anticipation_eval(cfg, progress=False)
    assert set(report.best.heads) == {"verb", "noun", "action"}
    assert report.selection.startswith("recall@5 of head 'action'")
    assert report.best_score == report.best.heads["action"].recall_at_5
    assert len(report.classes["action"]) == 28
    assert report.val.unseen_actions is None and report.best.heads["action"].recall_at_5_with_unseen is None
    (probe, _) = load_probes(tmp_path / "out" / "probes.pt")
    assert probe.config.num_classes == (4, 7, 28)
    with pytest.raises(ConfigError, match="toy-anticipation"):
        anticipation_eval_config({"checkpoint": "x.pt"})


def test_ek100_command_counts_unseen_validation_actions(tmp_path, capsys):
    from vjepa2.cli import main

    encoder, predictor = tiny_pair()
    save_public(tmp_path / "run.pt", encoder, predictor)
    frames = np.stack([np.full((32, 32, 3), 5 * t, dtype=np.uint8) for t in range(40)])
    write_video(tmp_path / "videos" / "P01" / "P01_01.MP4", frames, fps=8)
    (tmp_path / "train.csv").write_text(HEADER + "".join(ROWS[:2]))
    (tmp_path / "val.csv").write_text(HEADER + "".join(ROWS))  # its third action, (open, cup), is never trained
    out = tmp_path / "out"
    assert main(["eval", "anticipation", "--checkpoint", str(tmp_path / "run.pt"), "--ek100-train",
                 str(tmp_path / "train.csv"), "--ek100-val", str(tmp_path / "val.csv"), "--videos",
                 str(tmp_path / "videos"), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                 "--no-progress", "--variant", "light", "clips.frames=4", "clips.size=32", "clips.fps=8",
                 "clips.segments=1", "clips.train_views=1", "grid.lrs=[0.001]", "grid.weight_decays=[0.01]",
                 "grid.epochs=1", "grid.batch_size=4"]) == 0
    assert "1 validation actions never occur in training" in capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    assert saved["val"] == {"name": "val", "count": 2, "unseen_actions": 1, "unseen_action_classes": 1}
    action = saved["best"]["heads"]["action"]
    present = sum(a is not None for a in action["per_class_accuracy"])
    assert action["recall@5_with_unseen"] == pytest.approx(action["recall@5"] * present / (present + 1))
    assert action["top1_with_unseen"] == pytest.approx(action["top1"] * 2 / 3)
    assert "top1_with_unseen" not in saved["grid"][0]["heads"]["action"]  # only the best probe's numbers
    report = ProbeReport.read(out / "results.json")
    assert report.val.unseen_actions == 1 and report.best.heads["action"].top1_with_unseen == action["top1_with_unseen"]
