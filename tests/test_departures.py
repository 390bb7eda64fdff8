"""The departures table lists every aspect of the protocol, from the runs' own configs."""

import dataclasses

from nucstudy.departures import ASPECTS, NOT_PROTOCOL, Run, departures_table, registry_full_runs
from nucstudy.experiment import ExperimentConfig, preset


def test_every_config_field_is_in_the_table_or_declared_not_protocol():
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    covered = [name for aspect in ASPECTS for name in aspect.fields]
    assert len(covered) == len(set(covered)), "a field belongs to one aspect only"
    assert set(covered) | set(NOT_PROTOCOL) == fields
    assert not set(covered) & set(NOT_PROTOCOL)


def _run(config, scheme="conic", mpp=0.5, device="cpu", bf16=True, crop=None):
    env = {"device_name": device, "fast_path": {"bf16": bf16}, "crop_px": crop}
    return Run("x", config, env, {"scheme": scheme, "mpp": mpp})


def test_a_paper_run_on_conic_on_a_gpu_departs_only_where_the_paper_is_silent():
    run = _run(preset("paper", data="conic:/data"), device="NVIDIA H200", crop=192)
    table = departures_table([run])
    same = {"data set", "classes", "magnification", "epochs", "batch size", "random crop"}
    same |= {"optimiser, learning rate, schedule", "TP class weights", "loss", "hardware"}
    same |= {"stain augmentation", "blur, noise, grayscale", "synthetic training patches"}
    assert set(table.index[table["departs"] == "no"]) == same
    assert table.loc["random crop", "x"] == "192 px (0.75 of the side)"
    assert (table.loc[table["departs"] == "yes", "why"] != "").all()


def test_a_cpu_demo_run_on_consep_lists_its_departures():
    config = preset("cpu-demo", data="consep:/data", resample=True, mixed_precision=False)
    table = departures_table([_run(config, scheme="consep", bf16=False)])
    for aspect in ("data set", "classes", "epochs", "batch size", "random crop", "hardware"):
        assert table.loc[aspect, "departs"] == "yes", aspect
    assert table.loc["precision", "x"] == "float32"
    assert table.loc["TP class weights", "x"] == "the paper's, mapped onto consep"
    assert table.loc["test split", "x"] == "CoNSeP's official test tiles"
    assert table.loc["stain augmentation", "departs"] == "no"
    stained = departures_table([_run(config.replace(stain_augment=True), scheme="consep")])
    assert stained.loc["stain augmentation", "departs"] == "yes"
    assert "HEStain" in stained.loc["stain augmentation", "x"]
    strong = config.replace(stain_augment=True, stain_strength="strong", scale_range=[0.5, 2.0])
    strong_table = departures_table([_run(strong, scheme="consep")])
    assert strong_table.loc["stain augmentation", "x"].startswith("strong: HEStain on every")
    assert "rescale (0.5, 2.0)" in strong_table.loc["augmentation", "x"]
    assert strong_table.loc["blur, noise, grayscale", "departs"] == "no"
    extra = config.replace(extra_augment=["blur_noise", "grayscale"])
    extra_table = departures_table([_run(extra, scheme="consep")])
    assert extra_table.loc["blur, noise, grayscale", "departs"] == "yes"
    assert extra_table.loc["blur, noise, grayscale", "x"].endswith("grayscale (p 0.2)")
    mixed_table = departures_table([_run(config.replace(synthetic_mix=1.0), scheme="consep")])
    assert mixed_table.loc["synthetic training patches", "departs"] == "yes"
    assert mixed_table.loc["synthetic training patches", "x"].startswith("1 synthetic patch")


def test_the_registry_runs_are_read(tmp_path):
    config = preset("smoke", name="full-seed0", out_root=str(tmp_path / "synthetic"))
    config.run_dir.mkdir(parents=True)
    config.save(config.run_dir / "config.json")
    assert registry_full_runs(tmp_path) == []  # not scored yet
    (config.run_dir / "metrics.json").write_text('{"scheme": "conic", "mpp": 0.5}')
    (run,) = registry_full_runs(tmp_path)
    assert run.name == "synthetic (smoke)" and run.metrics["mpp"] == 0.5
