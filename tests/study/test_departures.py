"""The departures table lists every aspect of the protocol, from the runs' own configs."""

import dataclasses
import json

import pytest

from nucstudy.engine.run_folder import WORKERS_REDRAW
from nucstudy.study.defect_departures import trained_with_frozen_augmentation
from nucstudy.study.departure_rows import Run, registry_full_runs
from nucstudy.study.departures import (
    ASPECTS,
    BASELINE_ASPECTS,
    NOT_PROTOCOL,
    departures_summary,
    departures_table,
)
from nucstudy.study.experiment import ExperimentConfig
from nucstudy.study.presets import preset


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
    same |= {"patch sampling"}
    assert set(table.index[table["departs"] == "no"]) == same
    assert table.loc["random crop", "x"] == "192 px (0.75 of the side)"
    assert (table.loc[table["departs"] == "yes", "why"] != "").all()


def test_a_cpu_demo_run_on_consep_lists_its_departures():
    config = preset("cpu-demo", data="consep:/data", resample=True, mixed_precision=False)
    table = departures_table([_run(config, scheme="consep", bf16=False)])
    for aspect in ("data set", "classes", "epochs", "batch size", "random crop", "hardware"):
        assert table.loc[aspect, "departs"] == "yes", aspect
    assert table.loc["precision", "x"] == "float32"
    resumed = _run(config, scheme="consep", bf16=False)
    resumed.env["segments"] = [{"bf16": True}, {"bf16": False}]  # resumed on another CPU
    assert departures_table([resumed]).loc["precision", "x"] == "bf16 and float32"
    assert table.loc["classes", "x"] == "4 CoNSeP classes"
    assert table.loc["TP class weights", "x"] == "the paper's, mapped onto CoNSeP's classes"
    assert table.loc["test split", "x"] == "CoNSeP's official test tiles"
    assert table.loc["stain augmentation", "departs"] == "no"
    stained = departures_table([_run(config.replace(stain_augment=True), scheme="consep")])
    assert stained.loc["stain augmentation", "departs"] == "yes"
    assert "HEStain" in stained.loc["stain augmentation", "x"]
    strong = config.replace(stain_augment=True, stain_strength="strong", scale_range=[0.5, 2.0])
    strong_table = departures_table([_run(strong, scheme="consep")])
    assert strong_table.loc["stain augmentation", "x"].startswith(
        "strong: HEStain (random preset stain matrices, intensity x0.5-1.5"
    )
    assert "rescale x0.5 to 2;" in strong_table.loc["augmentation", "x"]
    assert "rotation -180 to 180 deg" in strong_table.loc["augmentation", "x"]
    assert table.loc["network width, depth", "x"] == "SE-Res U-Net, 16 channels, 4 levels"
    assert table.loc["epochs", "x"] == "30 epochs"
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
    (run,) = registry_full_runs(tmp_path, {"synthetic": "synthetic tissue"})
    assert run.name == "synthetic tissue"
    copy = tmp_path / "elsewhere" / "full-seed0"  # a copy of another folder's run: left out
    copy.mkdir(parents=True)
    for name in ("config.json", "metrics.json"):
        (copy / name).write_text((config.run_dir / name).read_text())
    (copy / "adopted_from.json").write_text('{"from": "synthetic/full-seed0"}')
    assert [run.name for run in registry_full_runs(tmp_path)] == ["synthetic (smoke)"]


def test_the_baselines_set_up_is_listed_where_a_run_is_of_that_method():
    base = preset("paper", data="consep:/data", resample=True)
    full = _run(base)
    own = {"model_options": {}, "class_weights": None}
    hovernet = Run("hovernet", base.replace(model="hovernet", loss="hovernet", **own), {}, {})
    maskrcnn_config = base.replace(model="maskrcnn", loss="maskrcnn", **own)
    maskrcnn = Run("maskrcnn", maskrcnn_config.replace(model_options={"upscale": 1.0}), {}, {})
    assert not set(departures_table([full]).index) & {a.name for a in BASELINE_ASPECTS}
    table = departures_table([full, hovernet, maskrcnn])
    assert {a.name for a in BASELINE_ASPECTS} <= set(table.index)
    head = table.loc["HoVer-Net output layers"]
    assert head["x"] == "does not apply" and head["maskrcnn"] == "does not apply"
    assert head["hovernet"].startswith("output convs normal (std 0.01), zero bias by default")
    assert "Kaiming fan-out" in head["hovernet"] and head["departs"] == "yes"
    scale = table.loc["Mask R-CNN image scale and anchors", "maskrcnn"]
    assert scale.startswith("images x1; anchors [6, 12, 24, 48, 96] px of the data by default")
    assert "[4, 8, 16, 32, 64]" in scale  # the earlier default
    rule = table.loc["Mask R-CNN detection score", "maskrcnn"]
    assert rule.startswith("nucleus score 1 - p(background)")
    assert "500 detections" in table.loc["Mask R-CNN proposals and detections", "maskrcnn"]
    stated = maskrcnn.config.replace(
        model_options={"upscale": 2.0, "anchor_sizes": [6, 12, 24, 48, 96]}
    )
    table = departures_table([Run("m", stated, {}, {})])
    assert table.loc["Mask R-CNN image scale and anchors", "m"] == (
        "images x2; anchors [6, 12, 24, 48, 96] px of the data"
    )


def test_the_training_recipe_options_are_named_in_their_rows():
    config = preset("paper", data="consep:/data", resample=True).replace(
        steps=2000,
        lr_schedule="cosine",
        warmup_steps=100,
        ema_decay=0.999,
        loss_weights={"hv_mse": 2.0, "hv_msge": 1.0},
        dice_classes="present",
        sampling="rare",
        keep_ratio=True,
    )
    table = departures_table([_run(config, scheme="consep")])
    assert table.loc["epochs", "x"] == "2,000 optimiser steps"
    optimiser = table.loc["optimiser, learning rate, schedule", "x"]
    assert optimiser == (
        "Adam, 3e-4, cosine to 0, warm-up 100 steps, "
        "weight average (EMA 0.999, batch-norm statistics recomputed)"
    )
    assert table.loc["loss", "x"] == (
        "the paper's (Dice: mean over classes), with the HV mean squared error x2 and "
        "HoVer-Net's HV gradient loss (MSGE) added; Dice over the classes present in the batch"
    )
    assert "baseline" not in table.loc["loss", "why"].split(";")[0]
    assert table.loc["patch sampling", "x"] == "rare classes more often"
    assert "(aspect ratio kept)" in table.loc["augmentation", "x"]
    for aspect in ("epochs", "optimiser, learning rate, schedule", "loss", "patch sampling"):
        assert table.loc[aspect, "departs"] == "yes", aspect
    fractions = config.replace(steps=None, lr_schedule="step", lr_milestone_fractions=[0.5, 0.7])
    table = departures_table([_run(fractions, scheme="consep")])
    assert table.loc["optimiser, learning rate, schedule", "x"].startswith(
        "Adam, 3e-4, x0.1 at 0.5, 0.7 of the run"
    )


def test_a_run_trained_before_the_loader_fix_is_named_where_it_is_in_the_table():
    """Loader workers repeated each segment's first epoch's augmentation until the fix; a
    segment trained since records it, and the row is listed only for a run without it."""
    config = preset("paper", data="consep:/data", workers=4)
    segment = {"started": "2026-12-01T00:00:00+0000", "threads": 1}
    before = Run("before", config, {"segments": [segment]}, {})
    after = Run("after", config, {"segments": [{**segment, WORKERS_REDRAW: True}]}, {})
    in_process = Run("in process", config.replace(workers=0), {"segments": [segment]}, {})
    row = "augmentation drawn each epoch"
    assert row not in departures_table([after, in_process]).index
    table = departures_table([before, after, in_process])
    assert table.loc[row, "before"].startswith("no: each training segment repeated")
    assert table.loc[row, "after"] == table.loc[row, "in process"] == "yes"
    assert table.loc[row, "departs"] == "yes" and "defect" in table.loc[row, "why"]
    resumed = {"segments": [segment, {**segment, WORKERS_REDRAW: True}]}
    assert departures_table([Run("resumed", config, resumed, {})]).loc[row, "departs"] == "yes"


def test_a_run_folder_says_whether_it_trained_before_the_loader_fix(tmp_path):
    config = preset("paper", data="consep:/data", workers=4, out_root=str(tmp_path))
    config.save(tmp_path / "config.json")
    (tmp_path / "env.json").write_text(json.dumps({"segments": [{"threads": 1}]}))
    assert trained_with_frozen_augmentation(tmp_path)
    segment = {"threads": 1, WORKERS_REDRAW: True}
    (tmp_path / "env.json").write_text(json.dumps({"segments": [segment]}))
    assert not trained_with_frozen_augmentation(tmp_path)


def test_the_summary_gives_each_value_once_with_the_runs_that_have_it():
    demo = preset("cpu-demo", data="consep:/data", resample=True)
    paper = preset("paper", data="consep:/data", resample=True)
    env, metrics = {"device_name": "cpu"}, {"scheme": "consep", "mpp": 0.5}
    runs = [Run("small & fast", demo, env, metrics), Run("paper preset", paper, env, metrics),
            Run("paper, again", paper, env, metrics)]  # fmt: skip
    table = departures_table(runs)
    summary = departures_summary(table, merged="ours")

    assert list(summary.columns) == ["aspect", "the paper", "ours", "departs"]
    assert list(summary["aspect"]) == list(table.index)  # a column, not an index to show
    row = summary.set_index("aspect").loc["network width, depth"]
    assert row["ours"] == (
        "SE-Res U-Net, 16 channels, 4 levels (small &amp; fast)<br>"
        "SE-Res U-Net, 32 channels, 5 levels (the other runs)"  # the value most runs have
    )
    assert summary.set_index("aspect").loc["classes", "ours"] == "4 CoNSeP classes"  # all runs
    assert (summary["departs"] == table["departs"].to_numpy()).all()
    with pytest.raises(ValueError, match="a name of its own"):
        departures_table([Run("paper", paper, env, metrics)])  # would hide the paper's column
    with pytest.raises(ValueError, match="a name of its own"):
        departures_table([Run("x", paper, env, metrics), Run("x", demo, env, metrics)])
