"""The out-of-domain results in sentences: the floor, in and out of domain, the remedies."""

import math

import pandas as pd
import pytest
from ood_rows import floor_row, ood_row

from nucstudy.study.ood_report import TUNED, label_runs
from nucstudy.study.ood_summary import (
    describe,
    domain_sentence,
    floor_verdict,
    ordinal,
    recipe_words,
    remedy_sentence,
    seed_spread,
)


def _errors(missed: int, split: int, merged: int = 2, spurious: int = 10) -> dict:
    return {"missed": missed, "split": split, "merged": merged, "spurious": spurious}


@pytest.fixture
def table() -> pd.DataFrame:
    """The paper's recipe (one seed), a remedy and its tuned thresholds (two seeds each),
    the study's recipe on the small network (two seeds), the floor."""
    recipe = "results/runs/consep-recipe"
    return pd.DataFrame(
        [
            ood_row("full-seed0", 0.05, **{"consep pq": 0.30}),
            ood_row("full-seed0", 0.15, normalised=True),
            ood_row("full-stain-seed0", 0.30, **{"consep pq": 0.20}, **_errors(40, 20)),
            ood_row("full-stain-seed1", 0.36, **{"consep pq": 0.22}, **_errors(30, 10)),
            ood_row("full-stain-seed0", 0.44, thresholds="tuned", **{"consep pq": 0.25},
                 **_errors(35, 5)),
            ood_row("full-stain-seed1", 0.34, thresholds="tuned", **{"consep pq": 0.27},
                 **_errors(25, 5)),
            ood_row(f"{recipe}/reference-seed0", 0.07, preset="cpu-demo", **{"consep pq": 0.45},
                 **_errors(80, 1)),
            ood_row(f"{recipe}/reference-seed1", 0.08, preset="cpu-demo", **{"consep pq": 0.43},
                 **_errors(90, 1)),
            floor_row(),
        ]
    )  # fmt: skip


def test_floor_verdict_gives_the_mean_before_the_best_single_score(table):
    text = floor_verdict(label_runs(table), 0.40)
    assert text.startswith("Averaged over seeds, no network clears the classical floor")
    assert "0.390 ± 0.071 over 2 seeds" in text  # the tuned remedy: (0.44 + 0.34) / 2
    assert "that clear it: 1 of the 2 with tuned thresholds (best 0.440)" in text
    assert "none of the 6 with HoVer-Net's." in text
    assert text.index("0.390") < text.index("0.440")


def test_floor_verdict_says_when_a_mean_clears_the_floor_and_flags_one_seed(table):
    text = floor_verdict(label_runs(table), 0.35)
    assert "clears the classical floor (binary PQ 0.350) with 0.390 ± 0.071 over 2 seeds." in text
    one = label_runs(table.iloc[[0, 8]])
    assert "one seed only" in floor_verdict(one, 0.01)
    assert floor_verdict(one, 0.9).endswith(
        "No single score (one seed, one test condition) clears it either."
    )


def test_describe_and_recipe_words_say_what_was_changed(table):
    labelled = label_runs(table)
    assert describe(labelled.iloc[1]) == (
        "proposed network, paper preset, as the paper trains it, on stain-normalised tiles"
    )
    assert (
        describe(labelled.iloc[4]) == f"proposed network, paper preset, with stain aug. + {TUNED}"
    )
    assert recipe_words(labelled.iloc[0]) == "the paper preset as the paper trains it"
    assert recipe_words(labelled.iloc[6]) == "the cpu-demo preset's study recipe"
    other = labelled.iloc[0].copy()
    other["network"] = "Mask R-CNN"
    assert recipe_words(other) == "the paper preset's Mask R-CNN, as the paper trains it"


ORDINALS = [(1, "1st"), (2, "2nd"), (3, "3rd"), (11, "11th"), (12, "12th"), (21, "21st")]


@pytest.mark.parametrize(("n", "text"), [*ORDINALS, (13, "13th"), (23, "23rd")])
def test_ordinals(n, text):
    assert ordinal(n) == text


def test_the_best_recipes_in_domain_are_placed_out_of_domain(table):
    text = domain_sentence(label_runs(table))
    assert text.startswith(
        "The 2 recipes that score highest on CoNSeP's own test split are the cpu-demo "
        "preset's study recipe, with binary PQ 0.440 there and 0.075 on CPM-15 (2 seeds; 85 "
        "of the 100 nuclei outlined missed), and the paper preset as the paper trains it, "
        "with binary PQ 0.300 there and 0.050 on CPM-15 (1 seed)."
    )
    # CPM-15 order: tuned remedy 0.39, remedy 0.33, study recipe 0.075, paper's recipe 0.05
    assert "Of the 4 recipes, they rank 3rd and 4th on CPM-15" in text
    assert "below 2 of the 2 recipes trained with stain augmentation" in text
    assert text.endswith("the two orders disagree: the rank correlation of CoNSeP test PQ and "
                         "CPM-15 PQ is -0.60.")  # fmt: skip
    one = domain_sentence(label_runs(table), best=1)
    assert one.startswith("The recipe that scores highest on CoNSeP's own test split is the ")
    assert "it ranks 3rd" in one


def test_a_remedy_is_close_to_the_floor_only_within_twice_the_seed_spread(table):
    paper = label_runs(table)
    paper = paper[paper["floor"] | (paper["preset"] == "paper")]
    floor = paper[paper["floor"]].iloc[0]
    # the remedy's mean is 0.33, 0.07 below the floor's 0.40
    close = remedy_sentence(paper, "stain aug.", floor, spread=0.05)
    assert "0.070 below the classical floor's 0.400: within twice the seed spread" in close
    assert "close to it" in close
    far = remedy_sentence(paper, "stain aug.", floor, spread=0.02)
    assert "0.070 below the classical floor's 0.400: more than twice the seed spread (0.020" in far
    assert "close" not in far
    assert far.startswith("On CPM-15, training with stain aug. takes the paper-scale network from "
                          "binary PQ 0.050 to 0.330 ± 0.042 (2 seeds)")  # fmt: skip
    assert "on CoNSeP's own test split it goes from 0.300 to 0.210." in far


def test_the_remedy_sentence_names_the_largest_error_and_what_tuning_changes(table):
    paper = label_runs(table)
    paper = paper[paper["floor"] | (paper["preset"] == "paper")]
    text = remedy_sentence(paper, "stain aug.", paper[paper["floor"]].iloc[0], spread=0.05)
    assert (
        "The largest kind of error left is true nuclei missed outright (35 of the 100 outlined), "
        "then true nuclei cut into pieces (15), spurious predictions (10) and predictions "
        "merging neighbours (2)." in text
    )
    assert (
        "take the nuclei cut into pieces from 15 to 5 and the nuclei missed outright from 35 "
        "to 30, and PQ to 0.390 ± 0.071: 1 of the 2 seeds clears the floor." in text
    )


def test_the_seed_spread_pools_the_recipes_with_several_seeds(table):
    paper = label_runs(table)
    paper = paper[paper["floor"] | (paper["preset"] == "paper")]
    # the remedy (0.30, 0.36) and its tuned rows (0.44, 0.34) have two seeds each
    expected = math.sqrt((0.0018 + 0.005) / 2)
    assert seed_spread(paper) == pytest.approx(expected)
    assert math.isnan(seed_spread(paper.iloc[[0, -1]]))  # one seed and the floor
