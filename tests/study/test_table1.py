"""Table I: one protocol for three methods, departures named per row, the table command."""

import json
import threading
import time

import pandas as pd
import pytest
import torch

import nucstudy.study.compute_budget as compute_budget
import nucstudy.study.table1 as table1
from nucstudy.cli import main
from nucstudy.study.table1 import (
    METHODS,
    method_config,
    protocol_differences,
    run_table1,
    table1_base,
    table1_rows,
    table1_seed_rows,
)

#: Mask R-CNN and HoVer-Net small enough for tests.
SMALL = {
    "maskrcnn": {"model_options": {"backbone": "resnet18", "upscale": 1.0}},
    "hovernet": {"epochs": 1},
}


def test_each_method_changes_only_what_defines_it():
    base = table1_base("consep:somewhere", "paper")
    assert base.resample and base.epochs == 50 and base.batch_size == 32
    configs = {method: method_config(base, method) for method in METHODS}
    assert configs["proposed"].replace(name=base.name) == base
    assert configs["hovernet"].model == "hovernet" and configs["hovernet"].loss == "hovernet"
    assert configs["hovernet"].class_weights is None
    assert configs["maskrcnn"].model_options == {"backbone": "resnet50", "upscale": 2.0}
    assert [c.name for c in configs.values()] == ["hovernet-seed0", "maskrcnn-seed0", "full-seed0"]
    for config in configs.values():
        assert protocol_differences(config, configs["proposed"]) == ""


def test_a_recipe_shared_by_the_methods_leaves_the_baselines_their_own_loss_terms():
    recipe = {"loss_weights": {"hv_mse": 2.0, "hv_msge": 1.0}, "lr_schedule": "cosine"}
    base = table1_base("consep:somewhere", "cpu-demo", steps=100, **recipe)
    configs = {method: method_config(base, method) for method in METHODS}  # no config error
    assert configs["proposed"].loss_weights == recipe["loss_weights"]
    assert configs["hovernet"].loss_weights == configs["maskrcnn"].loss_weights == {}
    assert all(config.lr_schedule == "cosine" for config in configs.values())
    assert protocol_differences(configs["hovernet"], configs["proposed"]) == ""
    # Mask R-CNN keeps the paper's lr whatever the recipe's, and its row says so
    assert configs["maskrcnn"].lr == 3e-4
    assert protocol_differences(configs["maskrcnn"], configs["proposed"]) == (
        f"lr 0.0003 (others: {base.lr})"
    )


def test_fewer_epochs_scale_the_schedule_and_are_named():
    base = table1_base("synthetic", "paper")
    config = method_config(base, "hovernet", {"epochs": 15})
    assert config.lr_milestones == [8, 11]
    text = protocol_differences(config, method_config(base, "proposed"))
    assert "epochs 15 (others: 50)" in text and "lr_milestones [8, 11]" in text
    options = method_config(base, "maskrcnn", {"model_options": {"backbone": "resnet18"}})
    assert options.model_options == {"backbone": "resnet18", "upscale": 2.0}
    with pytest.raises(ValueError, match="unknown Table I method"):
        method_config(base, "unet")


def test_run_table1_trains_the_three_scores_them_and_reuses_runs(tmp_path, monkeypatch):
    base = table1_base("synthetic", "smoke", device="cpu")
    table = run_table1(base, tmp_path, SMALL, n_boot=50, progress=False)
    assert table["status"].tolist() == ["done"] * 3
    assert set(table["method"]) == {m["label"] for m in METHODS.values()}
    rows = table.set_index("method")
    assert "epochs 1 (others: 2)" in rows.loc["HoVer-Net", "protocol"]
    assert rows.loc["Mask R-CNN", "protocol"] == (
        f"lr 0.0003 (others: {base.lr}); "
        "backbone resnet18 (the method's: resnet50); upscale 1.0 (the method's: 2.0)"
    )
    assert rows["augmentation each epoch"].all()  # trained with the fixed loader
    assert rows.loc["Mask R-CNN", "post-processing"].startswith("masks pasted")
    assert rows.loc["HoVer-Net", "post-processing"].startswith("HoVer-Net watershed")
    assert (rows["train GMACs/patch"] > 0).all() and (rows["train minutes"] >= 0).all()
    assert (
        rows.loc["HoVer-Net", "train GMACs/patch"]
        > rows.loc[METHODS["proposed"]["label"], "train GMACs/patch"]
    )
    assert any(column.startswith("PQ ") for column in table)
    written = pd.read_csv(tmp_path / "table1.csv")
    assert written["mPQ+"].tolist() == pytest.approx(table["mPQ+"].tolist())

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run of the same config was trained again")

    monkeypatch.setattr(table1, "train_and_score", no_training)
    again = run_table1(base, tmp_path, SMALL, n_boot=50, progress=False)
    assert again["mPQ+"].tolist() == pytest.approx(table["mPQ+"].tolist())


def test_a_run_stopped_part_way_resumes_in_the_next_session(tmp_path, monkeypatch):
    from nucstudy.engine.trainer import Trainer

    end_epoch = Trainer._end_epoch

    def stop_after_first(self, row):
        end_epoch(self, row)
        if self.epoch == 1:
            raise KeyboardInterrupt

    base = table1_base("synthetic", "smoke", device="cpu")
    monkeypatch.setattr(Trainer, "_end_epoch", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_table1(base, tmp_path, methods=("proposed",), progress=False)
    monkeypatch.setattr(Trainer, "_end_epoch", end_epoch)
    table = run_table1(base, tmp_path, methods=("proposed",), n_boot=20, progress=False)
    assert table.set_index("method").loc[METHODS["proposed"]["label"], "status"] == "done"
    folder = tmp_path / "full-seed0"
    assert pd.read_csv(folder / "history.csv")["epoch"].tolist() == [1, 2]
    segments = json.loads((folder / "env.json").read_text())["segments"]
    assert [s["from_step"] for s in segments] == [0, segments[0]["to_step"]]


def test_a_method_over_budget_is_not_trained_and_its_row_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(table1, "estimate_minutes", lambda config: 95.0)
    base = table1_base("synthetic", "smoke", device="cpu")
    table = run_table1(base, tmp_path, methods=("hovernet",), budget_minutes=5, progress=False)
    status = table.set_index("method")["status"]
    assert status["HoVer-Net"].startswith(
        "not trained here: measured on this machine, its training would take about 95 min"
    )
    assert status["Mask R-CNN"] == "pending: not trained yet"
    assert not (tmp_path / "hovernet-seed0").exists()
    assert json.loads((tmp_path / "table1_skipped.json").read_text())["hovernet"]


def test_estimate_minutes_measures_real_steps():
    config = table1_base("synthetic", "smoke", device="cpu", out_root="unused")
    minutes = compute_budget.estimate_minutes(config)
    assert 0 < minutes < 5


def test_measured_step_time_leaves_out_steps_that_compile(monkeypatch):
    """A step that compiles (the first, or one with a new input shape) is not the step time."""
    clock = [0.0]
    durations = iter([120.0, 9.0, 60.0, 8.0, 10.0, 9.5])  # warm-up, then a recompile among five

    class FakeTrainer:
        loader = [{"image": None}] * 3
        network = torch.nn.Identity()

        def _step(self, batch, epoch):
            clock[0] += next(durations)

    monkeypatch.setattr(compute_budget.time, "perf_counter", lambda: clock[0])
    seconds = compute_budget.measure_step_seconds(FakeTrainer(), steps=5, warmup=1)
    assert seconds == 9.5  # the median of 9, 60, 8, 10 and 9.5; their mean would be 19.3


def test_table1_command_fills_the_table_from_runs(tmp_path, capsys):
    out = tmp_path / "registry"
    args = ["table1", "--data", "synthetic", "--preset", "smoke", "--out", str(out)]
    args += ["--set", "device=cpu", "--methods", "proposed", "--n-boot", "20"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "done" in printed and "pending: not trained yet" in printed
    rows = table1_rows(out, n_boot=20)
    assert rows.set_index("method").loc[METHODS["proposed"]["label"], "status"] == "done"
    assert main([*args[:-4], "--method-set", "unet:epochs=1"]) == 2
    assert "METHOD:KEY=VALUE" in capsys.readouterr().err


def test_a_run_older_than_the_count_gets_its_multiply_adds_counted_afterwards(
    train_smoke, tmp_path
):
    config = train_smoke()
    folder = config.run_dir
    from nucstudy.study.evaluate import evaluate

    evaluate(folder, config.open_data("test"), device="cpu")
    root = tmp_path / "registry"
    root.mkdir()
    (root / "full-seed0").symlink_to(folder.resolve(), target_is_directory=True)
    env_path = folder / "env.json"
    env = json.loads(env_path.read_text())
    counted = env.pop("train_multiply_adds_per_patch")
    assert counted > 0
    env["crop_px"] = 64  # the smoke patches' side
    env_path.write_text(json.dumps(env))
    row = table1_rows(root, n_boot=20).set_index("run").loc["full-seed0"]
    assert row["GMACs counted"] == "afterwards, on 64 px synthetic patches"
    assert row["train GMACs/patch"] * 1e9 == pytest.approx(counted, rel=1e-6)
    env.pop("crop_px")
    env_path.write_text(json.dumps(env))
    row = table1_rows(root, n_boot=20).set_index("run").loc["full-seed0"]
    assert row["GMACs counted"] == "not recorded"


def test_budget_config_buys_steps_and_keeps_the_schedule_shape():
    base = table1_base("synthetic", "paper")
    config, steps = compute_budget.budget_config(base, minutes=120, step_seconds=2.4)
    assert steps == 3000 and config.steps == 3000
    assert config.lr_milestone_fractions == [0.5, 0.7]
    assert config.lr_schedule_of(steps_per_epoch=10).milestones == (1500, 2100)
    with pytest.raises(ValueError, match="positive"):
        compute_budget.budget_config(base, 0, 1.0)


def test_equal_compute_gives_each_method_the_steps_its_step_time_buys(tmp_path, monkeypatch):
    seconds = {"seresunet": 0.5, "hovernet": 2.0}
    measured = lambda trainer, steps, warmup: seconds[trainer.config.model]  # noqa: E731
    monkeypatch.setattr(compute_budget, "measure_step_seconds", measured)
    base = table1_base("synthetic", "smoke", device="cpu")
    methods = ("proposed", "hovernet")
    table = run_table1(
        base, tmp_path, methods=methods, compute_minutes=0.1, n_boot=20, progress=False
    )
    rows = table.set_index("method")
    proposed, hovernet = rows.loc[METHODS["proposed"]["label"]], rows.loc["HoVer-Net"]
    assert (proposed["steps"], hovernet["steps"]) == (12, 3)  # 6 s at 0.5 and 2 s a step
    assert proposed["images seen"] == 12 * base.batch_size
    assert proposed["budget min"] == hovernet["budget min"] == 0.1
    assert hovernet["step s"] == 2.0
    assert proposed["still improving"] in ("yes", "no")
    budgets = json.loads((tmp_path / "budget.json").read_text())
    assert set(budgets) == {"proposed-seed0", "hovernet-seed0"}
    # timed and trained on this CPU in one precision: the two records name it alike
    assert budgets["hovernet-seed0"]["measured_on"] == hovernet["step measured on"]
    assert hovernet["step measured on"] == hovernet["cpu"] != "not recorded"

    def no_measure(trainer, steps, warmup):
        raise AssertionError("the step time was measured again")

    monkeypatch.setattr(compute_budget, "measure_step_seconds", no_measure)
    monkeypatch.setattr(
        table1,
        "train_and_score",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")),
    )
    again = run_table1(
        base, tmp_path, methods=methods, compute_minutes=0.1, n_boot=20, progress=False
    )
    assert again["mPQ+"].tolist() == pytest.approx(table["mPQ+"].tolist(), nan_ok=True)


def test_runs_side_by_side_keep_every_measured_budget(tmp_path, monkeypatch):
    """Two processes training other methods into one folder: neither loses the other's
    record of budget.json (without it, a resumed run would get another length)."""

    def slow_measure(trainer, steps, warmup):
        time.sleep(0.3)  # both read the file before either writes, without the lock
        return 1.0

    monkeypatch.setattr(compute_budget, "measure_step_seconds", slow_measure)
    base = table1_base("synthetic", "smoke", device="cpu")
    configs = {m: table1.method_config(base.replace(out_root=str(tmp_path)), m) for m in METHODS}
    threads = [
        threading.Thread(
            target=compute_budget.budgeted_config, args=(config, method, tmp_path, 1.0, False)
        )
        for method, config in configs.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    budgets = json.loads((tmp_path / "budget.json").read_text())
    assert set(budgets) == {f"{method}-seed0" for method in METHODS}


def test_another_seed_of_a_method_reuses_its_measured_step_time(tmp_path, monkeypatch):
    """Seeds of one method are step-matched: the second seed does not measure again."""
    times = iter([1.5, 9.0, 3.0])
    monkeypatch.setattr(
        compute_budget, "measure_step_seconds", lambda trainer, steps, warmup: next(times)
    )
    base = table1_base("synthetic", "smoke", device="cpu").replace(out_root=str(tmp_path))
    seed0 = compute_budget.budgeted_config(
        method_config(base, "hovernet"), "hovernet", tmp_path, 1.0, False
    )
    seed1 = compute_budget.budgeted_config(
        method_config(base.replace(seed=1), "hovernet"), "hovernet", tmp_path, 1.0, False
    )
    assert seed0.steps == seed1.steps == 40  # 60 s at 1.5 s a step, measured once
    other = compute_budget.budgeted_config(
        method_config(base, "proposed"), "proposed", tmp_path, 1.0, False
    )
    assert other.steps == 6  # another method measures its own: 60 s at 9 s a step
    budgets = json.loads((tmp_path / "budget.json").read_text())
    assert budgets["hovernet-seed1"] == budgets["hovernet-seed0"]
    longer = compute_budget.budgeted_config(
        method_config(base.replace(seed=2), "hovernet"), "hovernet", tmp_path, 2.0, False
    )
    assert longer.steps == 40  # another budget is measured again: 120 s at 3 s a step


def test_seed_rows_show_every_method_of_the_first_seed_and_only_begun_runs_after(tmp_path):
    base = table1_base("synthetic", "smoke").replace(out_root=str(tmp_path))
    assert table1_seed_rows(tmp_path, seeds=(0, 1)).empty  # no Table I run at all
    for method, seed in (("proposed", 0), ("hovernet", 1)):
        config = method_config(base.replace(seed=seed), method)
        config.save(tmp_path / config.name / "config.json")
    rows = table1_seed_rows(tmp_path, seeds=(0, 1, 2))
    assert list(zip(rows["run"], rows["seed"], strict=True)) == [
        ("hovernet-seed0", 0),
        ("maskrcnn-seed0", 0),
        ("full-seed0", 0),
        ("hovernet-seed1", 1),
    ]
    assert rows["status"].tolist() == [
        "pending: not trained yet",
        "pending: not trained yet",
        "pending: not scored yet (no metrics.json)",
        "pending: not scored yet (no metrics.json)",
    ]


def test_training_record_says_whether_validation_was_still_rising(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "step": [5, 10, 15], "images_seen": [20, 40, 60]})
    for scores, expected in (([0.1, 0.2, 0.3], "yes"), ([0.1, 0.3, 0.2], "no")):
        history.assign(**{"val_mpq+": scores}).to_csv(tmp_path / "history.csv", index=False)
        record = compute_budget.training_record(tmp_path, {"minutes": 120, "step_seconds": 0.6})
        assert record["still improving"] == expected
        assert (record["steps"], record["images seen"], record["budget min"]) == (15, 60, 120)
        assert record["step measured on"] == "not recorded"  # a budget from before the record
    history.to_csv(tmp_path / "history.csv", index=False)
    assert compute_budget.training_record(tmp_path, None)["still improving"] == "not validated"


def test_the_table1_command_shares_the_recipe_among_the_methods(monkeypatch, tmp_path):
    shared = {}

    def capture(base, out, changes, **kwargs):
        shared["base"] = base
        return pd.DataFrame({"method": [], "status": []})

    monkeypatch.setattr(table1, "run_table1", capture)
    argv = ["table1", "--data", "synthetic", "--preset", "cpu-demo", "--out", str(tmp_path)]
    assert main([*argv, "--recipe", "--set", "steps=300"]) == 0
    base = shared["base"]
    assert base.loss_weights == {"hv_mse": 2.0, "hv_msge": 1.0} and base.steps == 300
    assert base.lr_schedule == "cosine" and base.ema_decay is None


def test_a_row_counts_the_epochs_a_run_trained_not_its_configured_epochs(tmp_path):
    """A run given its length in optimiser steps spans as many epochs as those steps take:
    its Table I row must not show the config's epochs beside a later best epoch."""
    from nucstudy.study.evaluate import epochs_trained
    from nucstudy.study.presets import preset

    config = preset("paper", steps=8149)
    assert epochs_trained(tmp_path, config) == config.epochs  # no history: as configured
    pd.DataFrame({"epoch": range(1, 196), "step": range(42, 42 * 196, 42)}).to_csv(
        tmp_path / "history.csv", index=False
    )
    assert epochs_trained(tmp_path, config) == 195


def test_mask_rcnn_trains_eager_under_a_compiled_protocol():
    """torch.compile recompiles Mask R-CNN for each new count of proposals: it trains eager,
    the other methods as the protocol says."""
    base = table1_base("synthetic", "smoke", compile=True)
    assert method_config(base, "maskrcnn").compile is False
    assert method_config(base, "proposed").compile is True
    assert method_config(base, "hovernet").compile is True
    assert "compile" not in protocol_differences(method_config(base, "maskrcnn"), base)
