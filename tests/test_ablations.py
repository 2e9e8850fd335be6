"""benchmarks/ablations.py: a micro run writes every comparison's table, a re-run reuses finished runs,
and the verdicts follow the numbers."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from vjepa2.evals.probe import GridConfig
from vjepa2.evals.toy import ToyConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablations.py"


@pytest.fixture(scope="module")
def ablations():
    spec = importlib.util.spec_from_file_location("ablations", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablations"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("ablations", None)


pytestmark = pytest.mark.usefixtures("one_thread")


def micro_settings(ablations, seeds=(0,)):
    grid = GridConfig(lrs=(1e-2,), weight_decays=(0.01,), epochs=1, warmup_epochs=0, batch_size=8)
    return ablations.Settings(
        seeds=seeds, step_scale=0.006,  # 1 + 5 + 1 steps
        extra_overrides=("batch_size=4", "model.dim=48", "model.depth=1", "model.mlp_hidden=96",
                         "model.predictor.dim=48", "model.predictor.depth=1", "model.predictor.mlp_hidden=96",
                         "log.every=1000",
                         # the public tube masks: at this micro size the recipe's half-time boxes leave so
                         # much context that dropping masked tokens no longer saves FLOPs, a premise below
                         "mask.generators=[{num_blocks: 8, spatial_scale: [0.15, 0.15]}, "
                         "{num_blocks: 2, spatial_scale: [0.7, 0.7]}]"),
        toy=ToyConfig(train_size=8, val_size=8), train_views=1, light_grid=grid, full_grid=grid, flops_batches=1)


def test_verdicts_follow_the_numbers(ablations):
    diff, se = ablations.difference([40.0, 41.0, 42.0], [20.0, 21.0, 19.0], val_size=480)
    assert diff == pytest.approx(21.0)
    # The seeds agree closely, so the validation split's sampling error sets the noise.
    assert se == pytest.approx(100 * ((0.41 * 0.59 + 0.2 * 0.8) / 480) ** 0.5)
    assert ablations.verdict("A", "B", diff, se, ">") == ("A better, strong evidence; supports the claim", "supports")
    assert ablations.verdict("A", "B", -diff, se, ">=")[1] == "contradicts"
    assert "B better, strong evidence" in ablations.verdict("A", "B", -diff, se, None)[0]
    # A tie within the seed spread: no evidence either way.
    diff, se = ablations.difference([30.0, 36.0], [31.0, 34.0], val_size=10_000)
    assert se == pytest.approx((18 / 2 + 4.5 / 2) ** 0.5)  # seed-to-seed error dominates here
    assert ablations.verdict("A", "B", diff, se, ">") == (
        "no difference beyond noise; does not support the claim", "inconclusive")
    assert ablations.verdict("A", "B", diff, se, ">=")[1] == "consistent"
    assert ablations.verdict("A", "B", diff, se, None) == ("no difference beyond noise", "-")
    # Between one and two standard errors: weak evidence.
    assert ablations.verdict("A", "B", 1.5, 1.0, None)[0] == "A better, weak evidence"
    # One seed: no spread, the binomial error still gives a finite noise level.
    assert ablations.difference([50.0], [50.0], val_size=100) == (0.0, pytest.approx(100 * (0.5 / 100) ** 0.5))


def test_claim_verdicts_and_flops_to_equal_quality(ablations):
    assert ablations.claim_verdict(["supports", "inconclusive"]) == "reproduced"
    assert ablations.claim_verdict(["supports", "inconclusive", "inconclusive"]) == "within noise"
    assert ablations.claim_verdict(["contradicts", "contradicts", "inconclusive"]) == "refuted"
    assert ablations.claim_verdict(["supports", "contradicts"]) == "mixed"
    assert ablations.claim_verdict(["consistent"]) == "within noise"
    # 50 % lies halfway between 40 % at 1 and 60 % at 4 (in log FLOPs): at 2.
    assert ablations.flops_to_match(50.0, [(4.0, 60.0), (1.0, 40.0)]) == ("=", pytest.approx(2.0))
    assert ablations.flops_to_match(30.0, [(1.0, 40.0), (4.0, 60.0)]) == ("<=", 1.0)
    assert ablations.flops_to_match(70.0, [(1.0, 40.0), (4.0, 60.0)]) == (">", 4.0)


def test_equal_flops_variants_stretch_their_schedule(ablations, tmp_path):
    # Made-up step costs (the real ones are counted by running a step): noise costs twice a drop step,
    # a high-resolution step 4.5 low-resolution ones.
    (tmp_path / "flops.json").write_text(json.dumps({
        "base": [1e9] * 3, "noise, equal FLOPs": [2e9] * 3, "progressive": [1e9, 1e9, 4.5e9],
        "high-res, equal FLOPs": [4.5e9] * 3, "high-res, 3x FLOPs": [4.5e9] * 3}))
    settings = ablations.Settings()
    recipe = {"warmup": 40, "constant": 900, "cooldown": 60}  # the ablations' schedule
    assert ablations.plan_steps(ablations.VARIANT["base"], settings, tmp_path) == recipe
    assert ablations.plan_steps(ablations.VARIANT["noise, equal FLOPs"], settings, tmp_path) == {
        "warmup": 20, "constant": 450, "cooldown": 30}
    # progressive: 940 + 60 * 4.5 = 1210 low-resolution steps' worth; 1210 / (1000 * 4.5) of each phase
    steps = ablations.plan_steps(ablations.VARIANT["high-res, equal FLOPs"], settings, tmp_path)
    assert steps == {"warmup": 11, "constant": 242, "cooldown": 16}
    steps = ablations.plan_steps(ablations.VARIANT["high-res, 3x FLOPs"], settings, tmp_path)
    assert steps == {"warmup": 32, "constant": 726, "cooldown": 48}
    assert ablations.plan_steps(ablations.VARIANT["progressive"], dataclasses.replace(settings, step_scale=0.5),
                                tmp_path) == {"warmup": 20, "constant": 450, "cooldown": 30}


def test_micro_run_writes_every_table_and_a_rerun_reuses_the_runs(ablations, tmp_path, monkeypatch):
    # Figures are not what is tested here, and drawing them takes most of a micro run's time.
    monkeypatch.setattr("vjepa2.evals.probe.save_confusion_png", lambda *args, **kwargs: None)
    monkeypatch.setattr("vjepa2.engine.monitor.plot_curve", lambda *args, **kwargs: None)
    settings = micro_settings(ablations)
    out, md = tmp_path / "runs", tmp_path / "results.md"
    md.write_text("# Results\n\n## Other section\n\nkept as it is\n")
    # Two runs at a time, each in its own process (the rest of the test re-runs in this one).
    first = ablations.run_ablations(settings, out, md, log=lambda msg: None, jobs=2)
    assert sorted(first["ran"]) == sorted((v.name, 0) for v in ablations.VARIANTS) and not first["reused"]

    text = md.read_text()
    assert text.startswith("# Results\n\n## Other section\n\nkept as it is\n\n" + ablations.SECTION_TITLE)
    for comparison in ablations.COMPARISONS:
        assert f"### {comparison.title}" in text
    section = text[text.index(ablations.SECTION_TITLE):]
    assert section.count("| test | metric | difference | verdict |") == len(ablations.COMPARISONS)
    assert section.count("**Overall**") == len(ablations.COMPARISONS)
    assert section.count("Verdict: ") == len(ablations.COMPARISONS) and "FLOPs to equal quality" in section
    assert "anticipation action recall@5, light probe, 64 px / 8 f" in section  # drop vs noise only
    assert "appearance top-1, light probe, 96 px / 16 f" in section  # the position comparison's larger size
    # The full probe runs at the sizes settings.full_probe_sizes names (the training size), not at 96 px / 16 f.
    assert "appearance top-1, full probe, 64 px / 8 f" in section and "full probe, 96 px" not in section
    figure = tmp_path / "img" / ablations.FIGURE_NAME
    assert figure.read_bytes().startswith(b"\x89PNG") and f"](img/{ablations.FIGURE_NAME})" in section

    records = {name: runs[0] for name, runs in first["records"].items()}
    sincos = records["progressive, sincos"]["evals"]
    assert sincos.keys() == {"low", "high"} and records["noise"]["evals"].keys() == {"low"}
    assert sincos["low"].keys() == {"toy-ssv2", "toy-appearance"}
    assert sincos["low"]["toy-ssv2"].keys() == {"light", "full"} and sincos["high"]["toy-ssv2"].keys() == {"light"}
    assert records["noise"]["evals"]["low"]["toy-anticipation"].keys() == {"light"}
    # FLOPs: dropping tokens is cheaper per step, so the equal-FLOPs noise run takes fewer steps to match drop;
    # the constant high-resolution runs take fewer steps than the progressive one for 1x and 3x its FLOPs.
    assert records["noise"]["step_flops"][0] > records["base"]["step_flops"][0]
    assert sum(records["noise, equal FLOPs"]["steps"].values()) <= sum(records["noise"]["steps"].values())
    # Rounding each phase's steps leaves at most half a step per phase off the target.
    for name, reference, factor in (("noise, equal FLOPs", "base", 1), ("high-res, equal FLOPs", "progressive", 1),
                                    ("high-res, 3x FLOPs", "progressive", 3)):
        step = max(records[name]["step_flops"])
        assert abs(records[name]["train_flops"] - factor * records[reference]["train_flops"]) <= 1.5 * step
    checkpoints = sorted(out.glob("*/seed-0/pretrain/checkpoints/step-*.pt"))
    assert len(checkpoints) == len(ablations.VARIANTS)  # only the final one of each run is kept
    assert not list(out.glob("*/seed-0/features"))  # the feature caches are removed after probing
    stamps = {p: p.stat().st_mtime_ns for p in checkpoints + sorted(out.glob("*/seed-0/result.json"))}

    # A re-run pretrains and probes nothing that is finished. Here one run lost its record, as if the
    # process had been killed after its last probe: its pretraining and probes are reused too.
    def fail(*args, **kwargs):
        raise AssertionError("finished work was done again")

    monkeypatch.setattr("vjepa2.train.pretrain.pretrain", fail)
    monkeypatch.setattr(ablations, "fit_and_report", fail)
    lost = out / "noise" / "seed-0" / "result.json"
    lost.unlink()
    second = ablations.run_ablations(settings, out, md, log=lambda msg: None)
    assert second["ran"] == [("noise", 0)] and len(second["reused"]) == len(ablations.VARIANTS) - 1
    assert second["records"]["noise"][0]["evals"] == records["noise"]["evals"]
    assert {p: p.stat().st_mtime_ns for p in stamps if p != lost} == {p: t for p, t in stamps.items() if p != lost}
    assert md.read_text().count(ablations.SECTION_TITLE) == 1  # replaced, not repeated
    tables = first["section"].index("### ")  # the header names the machine's load, which changes
    assert second["section"][tables:] == first["section"][tables:]
    third = ablations.run_ablations(settings, out, None, log=lambda msg: None)
    assert not third["ran"] and len(third["reused"]) == len(ablations.VARIANTS)

    # Runs of other settings are never mixed into the tables.
    with pytest.raises(SystemExit, match="other settings"):
        ablations.run_ablations(dataclasses.replace(settings, step_scale=0.05), out, None,
                                log=lambda msg: None)
