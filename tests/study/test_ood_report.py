"""Out-of-domain results by recipe: labels, means over seeds, the floor, spurious nuclei."""

from __future__ import annotations

import json
import math

import matplotlib
import pandas as pd
import pytest
from ood_rows import ROOT, floor_row, ood_row

from nucstudy.study.ood_plots import plot_seeds
from nucstudy.study.ood_report import (
    FLOOR,
    NOTHING,
    SHIPPED,
    TUNED,
    add_consep_scores,
    arm_words,
    group_runs,
    label_runs,
    recipe_table,
    run_parts,
    spurious_cost,
    spurious_sentence,
)
from nucstudy.study.paths import REPO_ROOT, STUDY_MODEL_RUN
from nucstudy.study.report import MISSING

matplotlib.use("Agg")


@pytest.fixture
def table() -> pd.DataFrame:
    """Two seeds of a remedy (tuned and not), one seed of the paper's recipe, the floor."""
    return pd.DataFrame(
        [
            ood_row("full-seed0", 0.05),
            ood_row("full-seed0", 0.15, normalised=True),
            ood_row("full-stain-seed0", 0.30, **{"nuclei predicted": 90, "spurious": 10}),
            ood_row("full-stain-seed1", 0.36, **{"nuclei predicted": 95, "spurious": 20}),
            ood_row("full-stain-seed0", 0.44, thresholds="tuned",
                 **{"nuclei predicted": 150, "spurious": 40}),
            ood_row("full-stain-seed1", 0.34, thresholds="tuned",
                 **{"nuclei predicted": 200, "spurious": 90}),
            floor_row(**{"nuclei predicted": 110, "spurious": 30}),
        ]
    )  # fmt: skip


def test_run_parts_reads_source_arm_and_seed():
    assert run_parts("results/runs/consep-paper/full-stain-b8-seed12") == (
        "consep-paper",
        "full-stain-b8",
        12,
    )
    with pytest.raises(ValueError, match="not named <arm>-seed<k>"):
        run_parts("results/runs/consep/fast-path")


def test_arm_words_takes_the_longest_network_and_keeps_unknown_words():
    assert arm_words("full") == ("proposed network", [])
    assert arm_words("no-SE-stainstrong") == ("proposed, no SE blocks", ["strong stain"])
    assert arm_words("full-stainstrong-scale-mystery") == (
        "proposed network",
        ["strong stain", "wide rescale", "mystery"],
    )
    assert arm_words("unet-stain") == ("unet", ["stain aug."])
    assert arm_words("reference") == ("proposed network", ["study recipe"])  # a recipe arm
    # a long run of the recipe (recipe.long_run_config), not the words "cpu + demo + 20000"
    assert arm_words("recipe-cpu-demo-20000") == (
        "proposed network",
        ["study recipe, 20,000 steps"],
    )


def test_the_run_of_the_shipped_model_is_named_so(table):
    shipped = STUDY_MODEL_RUN.relative_to(REPO_ROOT).as_posix()
    rows = pd.DataFrame([{**ood_row("x-seed0", 0.1), "run": shipped},
                         {**ood_row("x-seed0", 0.1), "run": str(STUDY_MODEL_RUN)}])  # fmt: skip
    changes = label_runs(rows)["changes"]
    assert changes[0] == changes[1]
    assert changes[0].endswith(f" ({SHIPPED})") and changes[0].startswith("study recipe, ")
    assert SHIPPED not in "".join(label_runs(table)["changes"])


def test_label_runs_names_the_floor_and_adds_tuned_thresholds_to_the_changes(table):
    labelled = label_runs(table)
    floor = labelled[labelled["floor"]].iloc[0]
    assert floor["network"] == FLOOR and pd.isna(floor["seed"]) and floor["thresholds"] == ""
    changes = list(labelled.loc[~labelled["floor"], "changes"])
    assert changes[:3] == [NOTHING, NOTHING, "stain aug."]
    assert changes[4] == f"stain aug. + {TUNED}"
    assert list(labelled["seed"].dropna()) == [0, 0, 0, 1, 0, 1]


def test_group_runs_averages_seeds_within_a_recipe_and_test_condition(table):
    groups = group_runs(label_runs(table))
    assert len(groups) == 4  # paper recipe x 2 normalisations, remedy, remedy tuned
    remedy = groups[(groups["changes"] == "stain aug.")].iloc[0]
    assert remedy["seeds"] == 2
    assert remedy["pq mean"] == pytest.approx(0.33)
    assert remedy["pq std"] == pytest.approx(math.sqrt(0.0018))  # ddof 1
    assert (remedy["pq min"], remedy["pq max"]) == (0.30, 0.36)
    one_seed = groups[groups["changes"] == NOTHING].iloc[0]
    assert one_seed["seeds"] == 1 and math.isnan(one_seed["pq std"])
    # reading order: fewer changes first, tiles as they are before normalised, tuned last
    assert list(groups["changes"]) == [NOTHING, NOTHING, "stain aug.", f"stain aug. + {TUNED}"]
    assert list(groups["stain normalisation"][:2]) == [False, True]


def test_group_runs_by_tile_keeps_tiles_apart():
    rows = [
        ood_row(f"full-seed{seed}", pq, tile=tile)
        for seed, (a, b) in enumerate([(0.1, 0.5), (0.3, 0.7)])
        for tile, pq in (("image01", a), ("image02", b))
    ]
    groups = group_runs(label_runs(pd.DataFrame(rows)), by=("tile",))
    assert list(groups["tile"]) == ["image01", "image02"]
    assert list(groups["pq mean"]) == pytest.approx([0.2, 0.6])


def test_spurious_cost_pairs_each_tuned_run_with_its_untuned_row(table):
    cost = spurious_cost(label_runs(table))
    assert list(cost["seed"]) == [0, 1]
    assert list(cost["spurious, HoVer-Net's"]) == [10, 20]
    assert list(cost["spurious, tuned"]) == [40, 90]
    assert list(cost["nuclei predicted, tuned"]) == [150, 200]
    assert list(cost["pq, tuned"]) == [0.44, 0.34]
    with_pq = spurious_cost(label_runs(table), extra=["pq"])  # any column, compared alike
    assert list(with_pq["pq, HoVer-Net's"]) == [0.30, 0.36]
    assert spurious_cost(label_runs(table), normalised=True).empty


def test_spurious_sentence_quotes_averages_and_the_largest_rises(table):
    labelled = label_runs(table)
    floor = labelled[labelled["floor"]].iloc[0]
    text = spurious_sentence(spurious_cost(labelled), floor, worst=1)
    assert "in every one of the 2 runs scored with them: from 15 to 65 on average" in text
    assert "the largest rises 20 → 90." in text  # x4.5 beats x4
    assert "from 92 to 175 on average (up to 200), against 100 outlined" in text
    assert "floor predicts 110, 30 of them spurious" in text
    assert spurious_sentence(spurious_cost(labelled.iloc[:2])) == (
        "No run was scored with tuned thresholds."
    )


def test_add_consep_scores_reads_the_tuned_metrics_for_tuned_rows(table, tmp_path):
    for name, pq in (("metrics.json", 0.2), ("metrics-tuned.json", 0.25)):
        folder = tmp_path / ROOT / "full-stain-seed0"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps({"overall": {"pq": pq}}))
    scored = add_consep_scores(label_runs(table), tmp_path)["consep pq"]
    assert scored[2] == 0.2 and scored[4] == 0.25
    assert math.isnan(scored[3]) and math.isnan(scored[6])  # no file; the floor


def test_recipe_table_puts_both_test_conditions_of_a_recipe_on_one_row(table):
    labelled = label_runs(table).assign(consep_pq=[0.3, 0.3, 0.2, 0.22, 0.25, 0.27, None])
    labelled = labelled.rename(columns={"consep_pq": "consep pq"})
    shown = recipe_table(labelled, shown=("network", "changes"))
    assert list(shown.columns) == [
        "network", "changes", "seeds", "CoNSeP test PQ", "CPM-15 PQ",
        "CPM-15 PQ, stain-normalised", "nuclei predicted",
    ]  # fmt: skip
    paper, remedy, tuned = (shown.iloc[i] for i in range(3))
    assert (paper["CPM-15 PQ"], paper["CPM-15 PQ, stain-normalised"]) == ("0.050", "0.150")
    assert paper["seeds"] == 1 and paper["CoNSeP test PQ"] == "0.300"
    assert remedy["seeds"] == 2 and remedy["CPM-15 PQ"] == "0.330 ± 0.042"
    assert remedy["CPM-15 PQ, stain-normalised"] == MISSING
    assert remedy["nuclei predicted"] == 92  # 92.5 rounded to even
    assert tuned["CoNSeP test PQ"] == "0.260 ± 0.014"
    assert (
        "consep pq" not in label_runs(table)
        and recipe_table(label_runs(table)).iloc[0]["CoNSeP test PQ"] == MISSING
    )


def test_plot_seeds_draws_one_row_per_recipe(table):
    import matplotlib.pyplot as plt

    labelled = label_runs(table)
    fig, ax = plt.subplots()
    labels = plot_seeds(ax, labelled, group_runs(labelled), 0.4)
    assert labels == [NOTHING, "stain aug.", f"stain aug. + {TUNED}"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 6  # one dot per network row
    plt.close(fig)
