"""The ablation plan and the reuse of a matching full-model run."""

import json

import pytest

from nucstudy.study.ablations import ABLATIONS, ablation_config, ablation_plan, reusable_run
from nucstudy.study.presets import preset


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
