"""The pretraining config: shipped recipes, dotted overrides, early errors that name the key, the CLI."""

import pytest
import yaml

from vjepa2.cli import main
from vjepa2.config import ConfigError
from vjepa2.config import recipe_names
from vjepa2.train.config import load_pretrain_config


def test_shipped_recipes_all_load_and_tiny_is_the_default():
    assert {"tiny", "vitl", "vith", "vitg"} <= set(recipe_names("pretrain"))
    for name in recipe_names("pretrain"):
        load_pretrain_config(name)
    tiny = load_pretrain_config()
    assert tiny.data.sources[0].kind == "synthetic"
    assert tiny.device == "auto" and tiny.total_iterations > 0


def test_overrides_reach_nested_keys_and_phases_by_name():
    cfg = load_pretrain_config("tiny", ["optim.lr=3e-4", "batch_size=32", "mask.mode=noise",
                                        "phases.cooldown.resolution=128", "phases.warmup.iterations=7"])
    assert cfg.optim.lr == 3e-4 and cfg.batch_size == 32 and cfg.mask.mode == "noise"
    by_name = {p.name: p for p in cfg.phases}
    assert by_name["cooldown"].resolution == 128 and by_name["warmup"].iterations == 7
    assert [p.name for p in cfg.phases] == ["warmup", "constant", "cooldown"]  # order kept


def test_predictor_size_is_nested_and_the_flat_spelling_still_reads():
    cfg = load_pretrain_config("tiny", ["model.predictor.depth=1"])
    assert cfg.model.predictor.numbers() == {"dim": 96, "depth": 1, "heads": 3, "mlp_hidden": 384}
    flat = load_pretrain_config("tiny", ["model.predictor_depth=1", "model.predictor_mlp_hidden=192"])
    assert flat.model.predictor.numbers() == {"dim": 96, "depth": 1, "heads": 3, "mlp_hidden": 192}
    built = flat.model.predictor_config(flat.encoder_config())
    assert (built.dim, built.depth, built.mlp_hidden, built.enc_dim) == (96, 1, 192, 96)
    vitl = load_pretrain_config("vitl").model  # the public predictor: small's width, 12 heads
    assert vitl.predictor.numbers() == {"dim": 384, "depth": 12, "heads": 12, "mlp_hidden": 1536}


@pytest.mark.parametrize("override, named", [
    ("optim.lrr=1e-4", "optim.lrr (did you mean optim.lr?)"),
    ("optim.lr=-1", "optim.lr"),
    ("optim.lr=fast", "optim.lr"),
    ("batch_sise=4", "batch_sise"),
    ("dtype=fp16", "dtype"),
    ("mask.mode=blur", "mask.mode"),
    ("phases.coldown.frames=8", "no phase named 'coldown'"),
    ("phases.cooldown.frames=7", "phases.cooldown.frames=7 is not a multiple of model.tubelet_size"),
    ("phases.constant.lr_end=0.0", "phases.constant.lr_end"),
    ("model.size=enormous", "model.size"),
    ("model.predictor.size=enormous", "model.predictor.size"),
    ("model.predictor.depth=0", "model.predictor.depth must be positive"),
    ("ema=[0.9, 1.2]", "ema"),
])
def test_config_errors_name_the_key(override, named):
    with pytest.raises(ConfigError) as err:
        load_pretrain_config("tiny", [override])
    assert named in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_file_and_recipe(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a shipped recipe; recipes: .*tiny"):
        load_pretrain_config("tinyy")
    with pytest.raises(ConfigError, match="does not exist"):
        load_pretrain_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("phases: []\n")
    with pytest.raises(ConfigError, match="at least one phase"):
        load_pretrain_config(str(bad))


def test_cli_print_config_and_error_exit(tmp_path, capsys):
    assert main(["pretrain", "--print-config", "--out", str(tmp_path / "o"), "optim.lr=2e-4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 2e-4 and printed["output_dir"] == str(tmp_path / "o")
    assert main(["pretrain", "optim.weight_decayy=0.1"]) == 2
    err = capsys.readouterr().err
    assert "optim.weight_decayy" in err and "did you mean optim.weight_decay" in err
    assert not (tmp_path / "o").exists()  # nothing was created: errors come before any work
