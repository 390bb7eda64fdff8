"""The recipe's arms: one change each against the reference, the state of their run
folders, and the table of their scores (test scores to report, validation scores to choose)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from nucstudy.study.recipe import (
    HV_TERMS,
    INGREDIENTS,
    TUNED,
    chosen_ingredients,
    ingredient_verdicts,
    recipe_changes,
    recipe_config,
    recipe_table,
    run_name,
    validation_gain,
)
from nucstudy.study.resumable import run_state


def _changed_fields(arm: str, tmp_path: Path) -> set[str]:
    reference = dataclasses.asdict(recipe_config("reference", 0, tmp_path))
    config = dataclasses.asdict(recipe_config(arm, 0, tmp_path))
    return {key for key in config if config[key] != reference[key] and key != "name"}


@pytest.mark.parametrize("arm", [arm for arm in INGREDIENTS if arm != "reference"])
def test_each_arm_changes_only_its_ingredient(arm, tmp_path):
    assert _changed_fields(arm, tmp_path) == set(INGREDIENTS[arm][1])


def test_run_names_are_folder_safe_and_unknown_arms_are_refused(tmp_path):
    assert run_name("1,260 steps", 1) == "1260-steps-seed1"
    assert run_name("dice present", 0) == "dice-present-seed0"
    with pytest.raises(ValueError, match="unknown recipe arm 'warm restarts'"):
        recipe_config("warm restarts", 0, tmp_path)


def _fake_run(
    config, epochs: int, kept_epoch: int | None, val: bool = True, total_steps: int = 100
) -> Path:
    """A run folder with a history of ``epochs`` epochs of 10 steps; scored at ``kept_epoch``."""
    folder = config.run_dir
    (folder / "checkpoints").mkdir(parents=True)
    config.save(folder / "config.json")
    (folder / "checkpoints" / "last.pt").write_bytes(b"")
    (folder / "env.json").write_text(json.dumps({"total_steps": total_steps}))
    history = pd.DataFrame({"epoch": range(1, epochs + 1), "step": range(10, 10 * epochs + 1, 10)})
    if val:
        history["val_pq"] = [0.1 * e for e in history["epoch"]]
        history["val_mpq+"] = [0.01 * e for e in history["epoch"]]
    history.to_csv(folder / "history.csv", index=False)
    if kept_epoch is not None:
        metrics = {
            "overall": {"pq": 0.4 + config.seed / 100, "mpq+": 0.3, "r2": 0.6, "aji": 0.5},
            "per_class": {"other": {"pq": 0.05}},
            "epoch": kept_epoch,
            "step": 10 * kept_epoch,
        }
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_run_state_follows_the_folder(tmp_path):
    config = recipe_config("reference", 0, tmp_path)
    assert run_state(config) == "new"
    folder = _fake_run(config, epochs=4, kept_epoch=None)
    assert run_state(config) == "partial"  # 40 of 100 steps
    _fake_run(recipe_config("ema", 0, tmp_path), epochs=10, kept_epoch=None)
    assert run_state(recipe_config("ema", 0, tmp_path)) == "trained"
    (folder / "metrics.json").write_text("{}")
    assert run_state(config) == "scored"
    other = config.replace(name=config.name, steps=123)
    with pytest.raises(ValueError, match="holds a run of another config"):
        run_state(other)


def test_the_table_gives_test_scores_and_the_kept_checkpoints_validation_scores(tmp_path):
    reference = _fake_run(recipe_config("reference", 0, tmp_path), epochs=6, kept_epoch=4)
    _fake_run(recipe_config("reference", 1, tmp_path), epochs=6, kept_epoch=6)
    _fake_run(recipe_config("all tiles", 0, tmp_path), epochs=6, kept_epoch=6, val=False)
    _fake_run(recipe_config("ema", 0, tmp_path), epochs=3, kept_epoch=None)  # not scored
    tuned = json.loads((reference / "metrics.json").read_text())
    tuned["overall"]["pq"] = 0.45
    (reference / "metrics-tuned.json").write_text(json.dumps(tuned))

    table = recipe_table(tmp_path).set_index(["arm", "seed"])

    assert sorted(table.index) == [("all tiles", 0), ("reference", 0), ("reference", 1),
                                   (TUNED, 0)]  # fmt: skip
    row = table.loc[("reference", 0)]
    assert (row["steps"], row["images seen"]) == (40, 40 * 8)
    assert (row["PQ"], row["PQ other"]) == (0.4, 0.05)
    assert (row["val PQ"], row["val mPQ+"]) == pytest.approx((0.4, 0.04))  # epoch 4's
    assert table.loc[("reference", 1), "val PQ"] == pytest.approx(0.6)
    assert pd.isna(table.loc[("all tiles", 0), "val PQ"])
    assert table.loc[(TUNED, 0), "PQ"] == 0.45
    assert pd.isna(table.loc[(TUNED, 0), "val mPQ+"])  # chosen on those tiles


def test_the_validation_gain_pairs_each_seed_with_the_reference_of_that_seed():
    scores = pd.DataFrame(
        {
            "arm": ["reference", "reference", "ema", "ema", "all tiles", TUNED],
            "seed": [0, 1, 0, 1, 0, 0],
            "val mPQ+": [0.30, 0.40, 0.32, 0.41, None, None],
        }
    )
    gains = validation_gain(scores)
    assert list(gains.index) == ["ema"]  # no validation scores: not judged on them
    assert gains["ema"] == pytest.approx(0.015)  # (0.02 + 0.01) / 2, not 0.365 - 0.35


def _val_scores(gains: dict[str, list[float]]) -> pd.DataFrame:
    """recipe_table-like rows: the reference at 0.30 / 0.35 (seeds 0 / 1), each arm above it
    by its gains."""
    reference = {0: 0.30, 1: 0.35}
    rows = [{"arm": "reference", "seed": s, "val mPQ+": v} for s, v in reference.items()]
    for arm, arm_gains in gains.items():
        rows += [
            {"arm": arm, "seed": s, "val mPQ+": reference[s] + g} for s, g in enumerate(arm_gains)
        ]
    return pd.DataFrame(rows)


def test_an_ingredient_joins_the_recipe_only_if_it_helps_on_every_seed_by_enough():
    scores = _val_scores(
        {
            "ema": [0.02, 0.03],  # on both seeds, 0.025 on average: joins
            "dice present": [0.05, -0.01],  # not on every seed
            "rare sampling": [0.004, 0.004],  # too little
            "keep ratio": [0.03],  # one seed only
            "1,260 steps": [0.05, 0.05],  # not a candidate
        }
    )
    assert chosen_ingredients(scores) == ["ema"]
    assert chosen_ingredients(scores, min_gain=0.003) == ["rare sampling", "ema"]
    verdicts = ingredient_verdicts(scores)
    assert verdicts["keep ratio"] == "undecided" and verdicts["dice present"] == "not chosen"
    assert verdicts["rare sampling"] == "not chosen" and "1,260 steps" not in verdicts
    assert verdicts["batch 16"] == "undecided"  # no seed yet
    down_once = _val_scores({"crop 96": [-0.001]})
    assert ingredient_verdicts(down_once)["crop 96"] == "not chosen"  # can no longer join


def test_recipe_changes_carry_the_training_and_leave_the_network_and_length_to_the_caller():
    from nucstudy.study.presets import preset

    changes = recipe_changes(["ema", "step schedule"])
    assert changes["loss_weights"] == HV_TERMS and changes["ema_decay"] == 0.999
    assert changes["lr_schedule"] == "step" and changes["lr_milestone_fractions"][0] > 0.6
    assert (changes["batch_size"], changes["lr"]) == (8, 2e-3)  # the cpu-demo preset's
    assert changes["resample"] and changes["crop_fraction"] is None
    assert recipe_changes(["paper HV loss"])["loss_weights"] == {}
    assert recipe_changes(["crop 96"])["crop_fraction"] == 0.75
    paper = preset("paper", steps=100, **recipe_changes([]))
    assert paper.model_options == preset("paper").model_options and paper.steps == 100
    assert paper.lr_schedule == "cosine" and paper.crop_fraction is None
    with pytest.raises(ValueError, match="'warm restarts'"):
        recipe_changes(["warm restarts"])


def test_a_long_run_gives_the_papers_network_the_chosen_recipe(tmp_path):
    from nucstudy.study.presets import preset
    from nucstudy.study.recipe import long_run_config

    config = long_run_config("paper", 15000, 1, tmp_path, ["ema"])
    assert config.model_options == preset("paper").model_options  # the paper's network
    assert (config.steps, config.seed, config.name) == (15000, 1, "recipe-paper-15000-seed1")
    assert config.loss_weights == HV_TERMS and config.ema_decay == 0.999
    assert config.batch_size == 8 and config.lr_schedule == "cosine"
    assert config.compile == recipe_config("reference", 1, tmp_path).compile  # as the arms
    assert config.run_dir == tmp_path / "recipe-paper-15000-seed1"


def test_the_long_run_command_takes_the_ingredients_chosen_on_validation(tmp_path, monkeypatch):
    import nucstudy.study.recipe as recipe

    scores = _val_scores({"ema": [0.02, 0.03], "dice present": [0.05, -0.01]})
    monkeypatch.setattr(recipe, "recipe_table", lambda root: scores)
    trained = []
    monkeypatch.setattr(recipe, "train_and_score", lambda config, label: trained.append(config))
    argv = ["--out", str(tmp_path), "--long", "paper", "--steps", "300", "--seeds", "0", "2"]
    assert recipe.main(argv) == 0
    assert [c.seed for c in trained] == [0, 2]
    assert all(c.ema_decay == 0.999 and c.dice_classes == "all" for c in trained)
    assert trained[0].steps == 300


def test_reference_seeds_trained_elsewhere_count_once_and_only_with_the_reference_config(tmp_path):
    """The ablations' full model at the recipe is the reference arm's config: a seed the arms
    lack is added, a copy of an arm's seed is not counted twice, another config is left out."""
    arms, ablations = tmp_path / "arms", tmp_path / "ablations"
    _fake_run(recipe_config("reference", 0, arms), epochs=6, kept_epoch=6)
    for seed, changes in ((0, {}), (2, {"compile": False}), (3, {"steps": 123})):
        config = recipe_config("reference", seed, ablations)
        _fake_run(config.replace(name=f"full-seed{seed}", **changes), epochs=6, kept_epoch=6)

    table = recipe_table(arms, reference_roots=[ablations])

    reference = table[table["arm"] == "reference"].set_index("seed")
    assert sorted(reference.index) == [0, 2]
    assert Path(reference.loc[0, "run"]).parent == arms
    assert Path(reference.loc[2, "run"]).parent == ablations
    assert len(recipe_table(arms)) == 1  # without the other folder: the arms' own seed


def test_the_table_counts_the_rare_class_true_and_predicted(tmp_path):
    folder = _fake_run(recipe_config("1,260 steps", 0, tmp_path), epochs=6, kept_epoch=6)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["per_class"]["other"] = {"pq": 0.0, "tp": 0, "fp": 0, "fn": 658}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    _fake_run(recipe_config("reference", 0, tmp_path), epochs=6, kept_epoch=6)  # no counts

    table = recipe_table(tmp_path).set_index("arm")

    assert (
        table.loc["1,260 steps", "other true"],
        table.loc["1,260 steps", "other predicted"],
    ) == (
        658,
        0,
    )
    assert pd.isna(table.loc["reference", "other predicted"])
