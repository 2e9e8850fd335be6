"""`vjepa2 demo`: every stage setting is valid for its command, the report renders, stale stages
are redone, and (slow) the quick demo runs end to end and a second run reuses every stage."""

import dataclasses
import json
import shlex

import pytest
import yaml

import vjepa2.demo as demo_module
from vjepa2.cli import build_parser, main
from vjepa2.config import ConfigError, apply_overrides, from_dict, to_dict
from vjepa2.demo import (FULL, QUICK, STAGES, Demo, DemoSettings, StageRecord, changed_settings, reproduce_commands,
                         write_report)
from vjepa2.train.config import load_pretrain_config


@pytest.mark.parametrize("settings", [FULL, QUICK], ids=["full", "quick"])
def test_every_stage_setting_is_accepted_by_its_command(settings, tmp_path):
    from vjepa2.evals.probe import probe_eval_config
    from vjepa2.train.config import load_pretrain_config
    from vjepa2.world_model.config import load_ac_config
    from vjepa2.world_model.plan_eval import load_plan_eval_config

    load_pretrain_config("tiny", settings.pretrain)
    probe_eval_config(apply_overrides({"encoder": "random:tiny", "dataset": "toy-ssv2"}, settings.probe))
    cfg = load_ac_config(None, settings.train_ac, **{"data.trajectories": "x"})
    assert cfg.data.clip_steps <= settings.episode_steps + 1
    for task in settings.tasks:
        load_plan_eval_config(None, settings.plan, task=task)
    parser = build_parser()
    for line in reproduce_commands(settings, tmp_path, str(tmp_path / "step-00000001.pt")):
        argv = shlex.split(line)
        assert argv[0] == "vjepa2"
        assert parser.parse_args(argv[1:]).func  # a real command with valid flags


def test_settings_are_checked():
    data = {"pretrain": [], "probe": [], "episodes": 2, "episode_steps": 4, "heldout_episodes": 1, "train_ac": [],
            "rollout_horizons": [1, 4], "plan": []}
    with pytest.raises(ConfigError, match="rollout_horizons"):
        from_dict(DemoSettings, data)
    with pytest.raises(ConfigError, match="tasks"):
        from_dict(DemoSettings, {**data, "rollout_horizons": [1], "tasks": ["fly"]})


def test_report_holds_the_tables_and_pictures(tmp_path):
    picture = tmp_path / "loss.png"
    picture.write_bytes(b"\x89PNG fake")
    records = [
        StageRecord("pretrain", "ran", 61.0, {"checkpoint": "ck.pt", "loss_png": str(picture), "iterations": 10,
                                                "last": {"loss": "0.5"}, "phases": ["main: 10 steps, 8 frames, 64 px"]}),
        StageRecord("probe", "reused", 30.0, {"rows": [
            {"encoder": "pretrained", "top1": 41.5, "top5": 80.0, "lr": 0.001, "weight_decay": 0.01, "train": 10,
             "val": 5, "confusion_png": None},
            {"encoder": "random init", "top1": 12.0, "top5": 50.0, "lr": 0.003, "weight_decay": 0.01, "train": 10,
             "val": 5, "confusion_png": None}]}),
        StageRecord("collect", "ran", 5.0, {"episodes": 3, "steps": 4, "heldout": 1, "seeds": "0..2"}),
        StageRecord("train-ac", "ran", 100.0, {"loss_png": None, "last": {}, "iterations": 5,
                                                 "errors": {"model": {1: 0.02}, "shuffled": {1: 0.03},
                                                            "copy": {1: 0.04}}}),
        StageRecord("plan", "ran", 50.0, {"tasks": {"reach": {
            "summaries": [{"method": "planner", "success_rate": 0.9, "final_distance_mean": 0.03, "steps_mean": 5.0,
                           "seconds_per_action": 0.2}],
            "markdown": "Planning on toy-push (reach): 2 pairs", "files": [str(picture)],
            "planner": {"samples": 8, "iterations": 2, "elites": 2, "horizon": 1, "constraint": "box"},
            "mpc": {"execute": 1, "steps_per_goal": 5}}}}),
    ]
    index = write_report(tmp_path / "report", records, QUICK, 3.0, tmp_path / "work")
    page = index.read_text()
    assert page.count("<table>") == 4 and "41.5%" in page and "90%" in page and "0.50" in page
    assert (tmp_path / "report" / "pretrain-loss.png").read_bytes() == b"\x89PNG fake"
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "| pretrained | 41.5% |" in readme and "vjepa2 plan-eval --config toy-push --run" in readme
    assert "| 1 | 0.0200 | 0.0300 | 0.0400 | 0.50 |" in readme  # model, shuffled actions, copy, ratio
    assert "4.1 minutes of stage time" in readme


def test_changed_settings_names_what_differs_from_the_saved_config(tmp_path):
    cfg = load_pretrain_config("tiny")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    assert changed_settings(tmp_path, cfg) == []
    assert changed_settings(tmp_path, dataclasses.replace(cfg, threads=2, output_dir="elsewhere")) == []
    older = load_pretrain_config("tiny", ["optim.lr=3e-4", "ema=[0.996,0.996]", "phases.constant.iterations=7"])
    assert changed_settings(tmp_path, older) == ["ema", "optim.lr", "phases"]
    assert changed_settings(tmp_path / "no-run-here", cfg) == []


class FakeStages(Demo):
    """Stages that note whether their output survived until they were called, and (like the real
    ones) run when it did not; those in ``remade`` run anyway."""

    def __init__(self, work, remade):
        super().__init__(work, work / "report", QUICK, progress=False)
        self.remade, self.found = remade, {}

    def _stage(self, name):
        self.found[name] = (self.path(name) / "output").is_file()
        self.path(name).mkdir(parents=True, exist_ok=True)
        (self.path(name) / "output").write_text("x")
        return ("ran" if name in self.remade or not self.found[name] else "reused"), {}

    def pretrain(self):
        return self._stage("pretrain")

    def probe(self):
        return self._stage("probe")

    def collect(self):
        return self._stage("collect")

    def train_ac(self):
        return self._stage("train-ac")

    def plan(self):
        return self._stage("plan")


def test_stages_downstream_of_a_remade_one_are_redone(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_module, "write_report", lambda *args, **kwargs: tmp_path / "index.html")
    for stage in STAGES:
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "output").write_text("old")
    demo = FakeStages(tmp_path, remade={"collect"})
    demo.run()
    # collect ran again, so the world model trained on its trajectories and the plans made with it go
    assert demo.found == {"pretrain": True, "probe": True, "collect": True, "train-ac": False, "plan": False}
    demo = FakeStages(tmp_path, remade={"pretrain"})
    demo.run()
    assert demo.found == {"pretrain": True, "probe": False, "collect": True, "train-ac": False, "plan": False}


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_reuses_its_stages(tmp_path):
    work, report = tmp_path / "work", tmp_path / "report"
    assert main(["demo", "--quick", "--threads", "1", "--work", str(work), "--report", str(report)]) == 0
    page = (report / "index.html").read_text()
    for needle in ("Pretraining", "toy-SSv2", "copy current", "reach", "push", "plan-reach-landscape.png"):
        assert needle in page
    assert json.loads((work / "plan" / "plan-eval-push.json").read_text())["summaries"][0]["method"] == "planner"
    assert main(["demo", "--quick", "--threads", "1", "--work", str(work), "--report", str(report)]) == 0
    assert (report / "README.md").read_text().count("| reused |") == 5  # nothing was recomputed
