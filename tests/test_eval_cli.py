"""`vjepa2 eval ...` end to end on tiny data: exported list files, probes, clear failures, the report section."""

import json

import pytest
import torch

from vjepa2.cli import main
from vjepa2.evals.report import SECTION_TITLE, pair_metrics, report_config, write_section
from vjepa2.models import VisionEncoder, encoder_config
from vjepa2.weights import save_public


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def encoder_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "encoder.pt"
    save_public(path, VisionEncoder(encoder_config("tiny", dim=48, depth=1, heads=3, mlp_hidden=96)))
    return path


def test_exported_toy_dataset_goes_through_the_list_file_path(tmp_path, encoder_file, capsys):
    data = tmp_path / "toy"
    assert main(["eval", "make-dataset", "--dataset", "toy-ssv2", "--out", str(data), "--frames", "4",
                 "--size", "36", "--train-size", "12", "--val-size", "6", "--no-progress"]) == 0
    lines = (data / "train.txt").read_text().splitlines()
    assert len(lines) == 12 and lines[1] == "train/00001.mp4 1" and (data / "train" / "00011.mp4").is_file()
    classes = (data / "classes.txt").read_text().splitlines()
    assert classes[:2] == ["moving left", "moving right"] and len(classes) == 12
    out = tmp_path / "out"
    code = main(["eval", "probe", "--encoder", str(encoder_file), "--train", str(data / "train.txt"),
                 "--val", str(data / "val.txt"), "--classes", str(data / "classes.txt"), "--variant", "light",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress",
                 "clips.frames=4", "clips.size=32", "grid.lrs=[0.001]", "grid.weight_decays=[0.01, 0.1]",
                 "grid.epochs=1", "grid.batch_size=4"])
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    assert report["val"]["count"] == 6 and report["classes"]["class"] == classes
    assert len(report["grid"]) == 2 and report["grid"][1]["weight_decay"] == 0.1
    assert "best probe: lr 0.001" in capsys.readouterr().out


def test_bad_input_exits_with_a_message(tmp_path, encoder_file, capsys):
    assert main(["eval", "probe", "--encoder", str(encoder_file), "--dataset", "toy-ssv2", "--train", "a.txt"]) == 2
    assert "drop --train/--val" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "val.txt").write_text("x.mp4 0\n")
    assert main(["eval", "probe", "--encoder", str(encoder_file), "--train", str(tmp_path / "empty.txt"),
                 "--val", str(tmp_path / "val.txt"), "--no-progress"]) == 2
    assert "empty.txt lists no samples" in capsys.readouterr().err
    assert main(["eval", "probe", "--encoder", str(encoder_file), "--dataset", "toy-ssv2", "grid.epoch=3"]) == 2
    assert "did you mean grid.epochs" in capsys.readouterr().err
    assert main(["eval", "probe", "--encoder", str(tmp_path / "missing.pt"), "--dataset", "toy-ssv2"]) == 2
    assert "missing.pt: no such file" in capsys.readouterr().err
    assert main(["eval", "probe", "--encoder", str(encoder_file), "--dataset", "toy-ssv2", "clips.frames=5"]) == 2
    assert "not a multiple of the tubelet size 2" in capsys.readouterr().err
    assert main(["eval", "make-dataset", "--dataset", "toy-ssv2", "--out", str(tmp_path / "d"), "--size", "35"]) == 2
    assert "must be even" in capsys.readouterr().err


def test_report_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("# Results\n\n## Pretraining\n\nloss went down\n\n" + SECTION_TITLE + "\n\nold numbers\n\n"
                    "## World model\n\nplans\n")
    write_section(path, SECTION_TITLE + "\n\nnew numbers\n")
    text = path.read_text()
    assert "old numbers" not in text and "new numbers" in text
    assert text.startswith("# Results\n\n## Pretraining\n\nloss went down\n\n")
    assert text.endswith("## World model\n\nplans\n")
    # A hand-written analysis inside the section survives a re-run.
    path.write_text(path.read_text().replace("new numbers\n", "new numbers\n\n### Analysis\n\nbecause...\n"))
    write_section(path, SECTION_TITLE + "\n\nnewer numbers\n")
    text = path.read_text()
    assert "newer numbers\n\n### Analysis\n\nbecause...\n\n## World model" in text and "new numbers" not in text
    fresh = tmp_path / "fresh.md"
    write_section(fresh, SECTION_TITLE + "\n\nx\n")
    assert fresh.read_text() == "# Results\n\n" + SECTION_TITLE + "\n\nx\n"


def test_pair_metrics_and_report_config_defaults():
    confusion = [[0] * 12 for _ in range(12)]
    confusion[0][0], confusion[0][1], confusion[1][0], confusion[2][5] = 3, 2, 1, 4  # 6 in-pair, 3 right
    pair, direction = pair_metrics(confusion)
    assert pair == pytest.approx(60.0) and direction == pytest.approx(50.0)
    cfg = report_config({"light_grid": {"epochs": 2}})
    assert cfg.light_grid.epochs == 2 and cfg.light_grid.lrs == (1e-2, 3e-3)  # the report's grid, not 5 x 4
