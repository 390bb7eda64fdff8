"""The ablation plan and the reuse of a matching full-model run."""

import json

import pytest

from nucstudy.study import ablations
from nucstudy.study.ablations import (
    ABLATIONS,
    ADOPTED_FILE,
    ablation_config,
    ablation_plan,
    adopt_run,
    recipe_base,
    recipe_extra,
    reusable_run,
)
from nucstudy.study.presets import preset
from nucstudy.study.recipe import recipe_config
from nucstudy.study.resumable import run_state


def test_each_variant_changes_one_thing():
    base = preset("cpu-demo", seed=0)
    full = ablation_config(base, "full", 0)
    no_se = ablation_config(base, "no SE", 1)
    assert full.replace(name=base.name) == base
    assert no_se.model_options == {**base.model_options, "use_se": False}
    assert no_se.seed == 1 and no_se.name == "no-SE-seed1"
    no_cw = ablation_config(base, "no class weights", 2)
    assert no_cw.class_weights is None and no_cw.name == "no-cw-seed2"
    assert no_cw.replace(class_weights="paper", name=base.name, seed=0) == base
    with pytest.raises(ValueError, match="unknown ablation 'no heads'"):
        ablation_config(base, "no heads", 0)


def test_the_plan_covers_every_variant_and_seed():
    plan = ablation_plan(preset("smoke"), [0, 3])
    assert [(v, s) for v, s, _ in plan] == [(v, s) for s in (0, 3) for v in ABLATIONS]
    assert len({config.name for *_, config in plan}) == len(plan)


def test_a_finished_run_of_the_same_config_is_reused(tmp_path):
    config = ablation_config(preset("smoke", out_root=str(tmp_path / "abl")), "full", 0)
    done = preset("smoke", name="full-seed0", out_root=str(tmp_path / "train"))
    done.run_dir.mkdir(parents=True)
    done.save(done.run_dir / "config.json")
    assert reusable_run(done.run_dir, config) is None  # not scored yet
    (done.run_dir / "metrics.json").write_text(json.dumps({"overall": {}}))
    assert reusable_run(done.run_dir, config) == done.run_dir
    assert reusable_run(done.run_dir, config.replace(epochs=5)) is None
    assert reusable_run(done.run_dir, config.replace(compile=True)) == done.run_dir  # speed only
    assert reusable_run(None, config) is None


def test_the_paper_preset_compiles_and_the_short_presets_do_not():
    assert preset("paper").compile
    assert not preset("cpu-demo").compile and not preset("smoke").compile


def test_at_the_recipe_the_full_model_is_the_recipes_reference_arm(tmp_path):
    extra = recipe_extra([])
    assert extra["steps"] == 5000 and "data" not in extra and "resample" not in extra
    assert recipe_extra(["ema"])["ema_decay"] == 0.999
    # what the notebook makes from its parameters and extra, and what main() trains
    notebook = preset("cpu-demo").replace(
        data="consep:../shared/data/consep256", resample=True, out_root=str(tmp_path), **extra
    )
    assert notebook == recipe_base([], tmp_path)
    full = ablation_config(recipe_base([], tmp_path), "full", 1)
    assert full == recipe_config("reference", 1, tmp_path).replace(name="full-seed1")


def _scored(config):
    config.run_dir.mkdir(parents=True)
    config.save(config.run_dir / "config.json")
    (config.run_dir / "metrics.json").write_text(json.dumps({"overall": {"pq": 0.4}}))
    (config.run_dir / "checkpoints").mkdir()
    (config.run_dir / "checkpoints" / "best.pt").write_bytes(b"weights")
    return config.run_dir


def test_an_adopted_run_counts_as_the_variants_run_without_its_checkpoints(tmp_path):
    arm = _scored(recipe_config("reference", 0, tmp_path / "arms"))
    full = ablation_config(recipe_base([], tmp_path / "abl"), "full", 0)
    assert not adopt_run(arm, ablation_config(recipe_base(["ema"], tmp_path / "x"), "full", 0))
    assert adopt_run(arm, full)
    assert run_state(full) == "scored" and not (full.run_dir / "checkpoints").exists()
    assert json.loads((full.run_dir / ADOPTED_FILE).read_text())["from"] == str(arm)
    assert not adopt_run(arm, full)  # taken


def test_main_trains_every_chosen_variant_and_seed_after_adopting_the_full_runs(
    tmp_path, monkeypatch
):
    _scored(recipe_config("reference", 0, tmp_path / "arms"))
    trained = []
    monkeypatch.setattr(ablations, "train_and_score", lambda config, label: trained.append(config))
    argv = ["--out", str(tmp_path / "abl"), "--seeds", "0", "1", "--full-from"]
    assert ablations.main([*argv, str(tmp_path / "arms"), "--variants", "full", "no CA"]) == 0
    assert [c.name for c in trained] == ["full-seed0", "no-CA-seed0", "full-seed1", "no-CA-seed1"]
    assert (tmp_path / "abl" / "full-seed0" / ADOPTED_FILE).is_file()
    assert not (tmp_path / "abl" / "full-seed1").exists()  # no arm to adopt: trained
    assert all(c.steps == 5000 and c.resample for c in trained)
