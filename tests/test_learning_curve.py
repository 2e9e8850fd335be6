"""benchmarks/learning_curve.py: a micro run probes every kept checkpoint and the random-init encoder,
writes the table, the figure and the section, and a re-run reuses what is done."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "learning_curve.py"
MICRO = ["model.dim=48", "model.depth=1", "model.mlp_hidden=96", "model.predictor.dim=48", "model.predictor.depth=1",
         "model.predictor.mlp_hidden=96", "batch_size=4", "phases.warmup.iterations=1",
         "phases.cooldown.iterations=1", "phases.cooldown.frames=8", "phases.cooldown.resolution=64",
         "loss.regularizer=vicreg"]


@pytest.fixture(scope="module")
def curve():
    spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_micro_curve_end_to_end_and_reuse(curve, tmp_path, capsys, one_thread):
    args = ["--out", str(tmp_path / "run"), "--seeds", "0", "--steps", "3", "5", "--train-size", "16",
            "--val-size", "8", "--tasks", "toy-ssv2", "--results-md", str(tmp_path / "results.md"),
            "--image-dir", str(tmp_path / "img"), *MICRO]
    curve.main(args)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "seed-0" / "pretrain" / "checkpoints").glob("*.pt"))
    assert {"step-00000003.pt", "step-00000005.pt"} <= set(checkpoints)
    records = json.loads((tmp_path / "run" / "summary.json").read_text())["records"]
    assert [r["step"] for r in records] == [3, 5, "random-init"]
    assert all(0 <= r["tasks"]["toy-ssv2"]["top1"] <= 100 and r["tasks"]["toy-ssv2"]["effective_rank"] > 1
               for r in records)
    section = (tmp_path / "results.md").read_text()
    assert "## Learning curve (toy scale)" in section and "| 5 |" in section and "| random-init |" in section
    assert (tmp_path / "img" / "learning_curve.png").stat().st_size > 1000
    # A re-run with the same settings reuses every probe (nothing retrained: the files stay as they are).
    stamp = (tmp_path / "run" / "seed-0" / "probes" / "3" / "result.json").stat().st_mtime_ns
    curve.main(args)
    assert (tmp_path / "run" / "seed-0" / "probes" / "3" / "result.json").stat().st_mtime_ns == stamp
    # The dense probe added to the finished points on request: a toy-seg mIoU column.
    curve.main([*args, "--toy-seg", "4"])
    records = json.loads((tmp_path / "run" / "summary.json").read_text())["records"]
    assert all(0 <= r["toy_seg_miou"] <= 100 and r["toy_seg_scenes"] == 4 for r in records)
    assert all(0 <= r[key] <= 100 for r in records for key in ("toy_seg_figure_ground", "toy_seg_object_iou",
                                                              "toy_seg_image_figure_ground"))
    assert "toy-seg figure-ground mIoU" in (tmp_path / "results.md").read_text()
    # Other settings in the same folder are refused.
    with pytest.raises(SystemExit, match="other settings"):
        curve.main([*args, "optim.lr=5e-4"])
