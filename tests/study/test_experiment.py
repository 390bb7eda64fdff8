"""ExperimentConfig, presets, env info and the results registry."""

import json

import pandas as pd
import pytest

from nucstudy.study.experiment import ExperimentConfig, environment_info
from nucstudy.study.presets import PRESETS, preset
from nucstudy.study.registry import collect


def test_defaults_are_the_papers():
    config = preset("paper")
    assert (config.lr, config.epochs, config.batch_size) == (3e-4, 50, 32)
    assert config.lr_milestones == [25, 35] and config.lr_gamma == 0.1
    assert config.model == "seresunet" and config.class_weights == "paper"


def test_presets_differ_and_take_changes():
    assert set(PRESETS) == {"paper", "cpu-demo", "smoke"}
    smoke = preset("smoke", seed=3)
    assert smoke.seed == 3 and smoke.epochs < preset("cpu-demo").epochs < preset("paper").epochs
    assert smoke.model_options["width"] < preset("cpu-demo").model_options["width"]
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        preset("fast")
    with pytest.raises(ValueError, match="unknown config field.*colour"):
        preset("smoke", colour="red")


def test_a_config_written_before_a_field_existed_loads_with_its_default(tmp_path):
    values = preset("smoke").to_dict()
    del values["stain_strength"], values["scale_range"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    loaded = ExperimentConfig.load(path)
    assert loaded.stain_strength == "default" and loaded.scale_range == [0.8, 1.25]


def test_config_round_trip(tmp_path):
    config = preset("cpu-demo", class_weights=None, model_options={"width": 8, "use_ca": False})
    config.save(tmp_path / "config.json")
    assert ExperimentConfig.load(tmp_path / "config.json") == config


def test_a_bad_set_value_is_one_line_naming_field_and_value(capsys):
    from nucstudy.cli import main

    assert main(["train", "--preset", "smoke", "--set", "epochs=abc"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "epochs must be an integer, got 'abc'" in error


def test_bad_config_files_are_named(tmp_path):
    path = tmp_path / "config.json"
    with pytest.raises(FileNotFoundError, match="config not found"):
        ExperimentConfig.load(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        ExperimentConfig.load(path)
    path.write_text(json.dumps({"epochs": -2}))
    with pytest.raises(ValueError, match="config.json: invalid experiment config"):
        ExperimentConfig.load(path)


def test_environment_info_names_versions():
    info = environment_info()
    for key in ("python", "torch", "torchvision", "numpy", "device_name", "git_commit"):
        assert key in info
    assert info["torch"]


def test_collect_lists_finished_and_pending_runs(tmp_path):
    done = preset("smoke", name="done", out_root=str(tmp_path))
    done.run_dir.mkdir(parents=True)
    done.save(done.run_dir / "config.json")
    (done.run_dir / "metrics.json").write_text(
        json.dumps({"overall": {"mpq+": 0.4, "r2": 0.5, "pq": 0.6}})
    )
    pd.DataFrame({"epoch": [1, 2]}).to_csv(done.run_dir / "history.csv", index=False)
    pending = preset("smoke", name="pending", out_root=str(tmp_path / "nested"))
    pending.run_dir.mkdir(parents=True)
    pending.save(pending.run_dir / "config.json")
    table = collect(tmp_path).set_index("name")
    assert set(table.index) == {"done", "pending"}
    assert table.loc["done", "mpq+"] == 0.4 and table.loc["done", "epochs_done"] == 2
    assert pd.isna(table.loc["pending", "mpq+"]) and table.loc["pending", "epochs_done"] == 0
    assert table.loc["done", "model.width"] == 8


def test_the_recipe_flag_gives_the_studys_recipe_and_set_overrides_it(monkeypatch, capsys):
    import nucstudy.engine.trainer as trainer_module
    from nucstudy.cli import main
    from nucstudy.study.recipe import HV_TERMS

    class Built(Exception):
        """Raised where the Trainer would start: the config is what is checked."""

    def capture(config, resume=False, progress=True):
        raise Built(config)

    monkeypatch.setattr(trainer_module, "Trainer", capture)
    with pytest.raises(Built) as built:
        main(["train", "--preset", "smoke", "--recipe", "ema", "--set", "lr=0.001"])
    config = built.value.args[0]
    assert config.loss_weights == HV_TERMS and config.lr_schedule == "cosine"
    assert config.ema_decay == 0.999 and config.lr == 0.001  # --set over the recipe
    assert config.model_options == {"width": 8, "depth": 3}  # the preset's network
    assert main(["train", "--preset", "smoke", "--recipe", "warm restarts"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "'warm restarts'" in error and "'ema'" in error
