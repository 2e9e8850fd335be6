"""Typed configs: early, named errors; dotted overrides; partial sections keep their owner's defaults."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from vjepa2.config import ConfigError, apply_overrides, from_dict, load_yaml, save_yaml, to_dict


@dataclass(frozen=True)
class Grid:
    epochs: int = 10
    lr: float = 1e-3
    loss: Literal["ce", "focal"] = "ce"


@dataclass(frozen=True)
class Job:
    name: str = "job"
    grid: Grid = field(default_factory=lambda: Grid(loss="focal"))  # owner's default differs from Grid()
    sizes: tuple[int, int] = (1, 2)
    tags: list[str] = field(default_factory=list)
    ratio: float | None = None

    def validate(self):
        if self.grid.epochs < 1:
            raise ValueError("grid.epochs must be >= 1")


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key grid.epoch \(did you mean grid.epochs\?\)"):
        from_dict(Job, {"grid": {"epoch": 3}})


@pytest.mark.parametrize("data,message", [
    ({"grid": {"epochs": "many"}}, "grid.epochs: expected an integer"),
    ({"grid": {"loss": "mse"}}, r"grid.loss: 'mse' is not one of \['ce', 'focal'\]"),
    ({"sizes": [1, 2, 3]}, "sizes: expected 2 values"),
    ({"name": 3}, "name: expected a string"),
    ({"grid": {"epochs": 0}}, "grid.epochs must be >= 1"),
])
def test_bad_values_fail_early_naming_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Job, data)


def test_partial_section_keeps_owner_defaults_and_overrides_apply():
    cfg = from_dict(Job, apply_overrides({}, ["grid.epochs=5", "ratio=0.5", "tags=[a, b]", "grid.lr=1e-4"]))
    assert cfg.grid == Grid(epochs=5, lr=1e-4, loss="focal")
    assert cfg.ratio == 0.5 and cfg.tags == ["a", "b"]


def test_yaml_round_trip(tmp_path):
    cfg = from_dict(Job, {"name": "x", "grid": {"epochs": 2}})
    save_yaml(cfg, tmp_path / "job.yaml")
    assert from_dict(Job, load_yaml(tmp_path / "job.yaml")) == cfg
    assert to_dict(cfg)["grid"] == {"epochs": 2, "lr": 1e-3, "loss": "focal"}


def test_malformed_override_is_rejected():
    with pytest.raises(ConfigError, match="key.subkey=value"):
        apply_overrides({}, ["grid.epochs"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"name": "x"}, ["name.first=1"])


def test_every_command_ships_recipes_that_load_and_the_help_lists_them(capsys):
    from vjepa2.cli import main
    from vjepa2.config import recipe_names, resolve_recipe
    from vjepa2.demo import demo_settings
    from vjepa2.world_model.config import load_ac_config
    from vjepa2.world_model.plan_eval import load_plan_eval_config

    assert recipe_names("demo") == ["full", "quick"] and recipe_names("train-ac") == ["toy-push"]
    for name in recipe_names("demo"):
        settings = demo_settings(name)
        ac = load_ac_config(settings.train_ac_recipe, settings.train_ac, **{"data.trajectories": "d"})
        plan = load_plan_eval_config(settings.plan_recipe, settings.plan, task="push")
        assert ac.model.residual and ac.loss.change_weight == 3 and plan.planner.state_weight == 10
    assert load_ac_config("toy-push", (), **{"data.trajectories": "d"}).schedule.iterations == 2000
    with pytest.raises(ConfigError, match="recipes: toy-push"):
        resolve_recipe("plan-eval", "no-such-recipe")
    with pytest.raises(SystemExit):
        main(["train-ac", "--help"])
    assert "(toy-push)" in capsys.readouterr().out
