"""Seed-spread verdicts: means, pooled spread and verdicts on hand-built numbers, the sentence,
and the same verdicts as the ablations notebook's inline rule."""

import math

import numpy as np
import pandas as pd
import pytest

from nucstudy.study.verdicts import (
    BEYOND,
    NO_SPREAD,
    NOT_TRAINED,
    WITHIN,
    pooled_spread,
    seed_summary,
    spread_sentence,
    spread_verdicts,
    verdict,
)


def _scores() -> pd.DataFrame:
    rows = [
        ("full", 0, 0.40, 0.1),
        ("full", 1, 0.42, 0.2),
        ("full", 2, 0.44, 0.3),
        ("no SE", 0, 0.30, 0.2),
        ("no SE", 1, 0.33, 0.3),
        ("no SE", 2, 0.36, 0.4),
        ("no CA", 0, 0.43, 0.5),
    ]
    return pd.DataFrame(rows, columns=["arm", "seed", "mpq+", "r2"])


def test_means_stds_and_the_pooled_spread_by_hand():
    summary = seed_summary(_scores(), arms=["full", "no SE", "no CA", "no cw"])
    assert summary.loc["no SE", ("mpq+", "mean")] == pytest.approx(0.33)
    assert summary.loc["no SE", ("mpq+", "std")] == pytest.approx(0.03)  # ddof 1
    assert math.isnan(summary.loc["no CA", ("mpq+", "std")])  # one seed
    assert summary.loc["no cw"].isna().all()  # no rows
    spread = pooled_spread(summary)
    assert spread["mpq+"] == pytest.approx(math.sqrt((0.02**2 + 0.03**2) / 2))
    assert spread["r2"] == pytest.approx(0.1)


def test_verdicts_by_hand():
    table = spread_verdicts(_scores(), "full", arms=["full", "no SE", "no CA", "no cw"])
    got = {(r.arm, r.metric): r.verdict for r in table.itertuples()}
    assert got == {
        ("no SE", "mpq+"): BEYOND,  # -0.09, beyond 2 x 0.0255
        ("no SE", "r2"): WITHIN,  # +0.1, not beyond 2 x 0.1
        ("no CA", "mpq+"): WITHIN,  # +0.01
        ("no CA", "r2"): BEYOND,  # +0.3
        ("no cw", "mpq+"): NOT_TRAINED,
        ("no cw", "r2"): NOT_TRAINED,
    }
    row = table.set_index(["arm", "metric"]).loc[("no SE", "mpq+")]
    assert row["difference"] == pytest.approx(-0.09) and row["seeds"] == 3
    assert row["seed std"] == pytest.approx(0.0254951, rel=1e-5)
    assert table.set_index(["arm", "metric"]).loc[("no cw", "r2"), "seeds"] == 0
    assert verdict(0.2, 0.1) == WITHIN and verdict(0.21, 0.1) == BEYOND  # strictly beyond
    assert verdict(float("nan"), 0.1) == NOT_TRAINED and verdict(0.5, float("nan")) == NO_SPREAD


def test_one_seed_each_gives_no_spread_unless_one_is_given():
    scores = _scores().drop_duplicates("arm")
    table = spread_verdicts(scores, "full", metrics=["mpq+"])
    assert set(table["verdict"]) == {NO_SPREAD}
    assert spread_sentence(table, noun="variant").startswith("Only one seed per variant")
    given = spread_verdicts(scores, "full", metrics=["mpq+"], spread=pd.Series({"mpq+": 0.02}))
    assert given.set_index("arm")["verdict"].to_dict() == {"no SE": BEYOND, "no CA": WITHIN}


def test_the_sentence_names_what_is_beyond_the_spread():
    table = spread_verdicts(_scores(), "full", arms=["full", "no SE", "no CA"])
    text = spread_sentence(table, source="3 seeds of this page")
    assert text == (
        "Beyond twice the seed spread (3 seeds of this page): no SE (mpq+ -0.090); "
        "no CA (r2 +0.300). Every other difference is within it."
    )
    both = table.assign(verdict=BEYOND)
    assert spread_sentence(both, "3 seeds").startswith(
        "Beyond twice the seed spread (3 seeds): no SE (mpq+ -0.090, r2 "
    )  # one arm, its metrics together
    calm = spread_verdicts(_scores(), "full", metrics=["mpq+"], arms=["full", "no CA"])
    assert spread_sentence(calm, "3 seeds", "variant", "the full model") == (
        "No variant differs from the full model by more than twice the seed spread "
        "(3 seeds): they cannot be told apart."
    )


def test_bad_tables_are_named():
    with pytest.raises(ValueError, match="arm and seed"):
        seed_summary(pd.DataFrame({"arm": ["a"], "pq": [0.1]}))
    with pytest.raises(ValueError, match="no column"):
        spread_verdicts(_scores(), "full", metrics=["aji"])


def _notebook_rule(runs: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The ablations notebook's seed_spread cell, as it is written there."""
    summary = runs.groupby("variant")[["mpq+", "r2", "pq"]].agg(["mean", "std"]).reindex(order)
    spread = summary.xs("std", axis=1, level=1).pow(2).mean().pow(0.5)
    differences = []
    for variant in order[1:]:
        for metric in ["mpq+", "r2", "pq"]:
            delta = summary.loc[variant, (metric, "mean")] - summary.loc["full", (metric, "mean")]
            if pd.isna(delta):
                result = "not trained"
            elif pd.isna(spread[metric]):
                result = "no spread measured"
            else:
                result = (
                    "beyond the spread" if abs(delta) > 2 * spread[metric] else "within the spread"
                )
            differences.append(
                {"variant": variant, "metric": metric, "minus full": delta, "verdict": result}
            )
    return pd.DataFrame(differences)


@pytest.mark.parametrize("seed", range(5))
def test_the_same_verdicts_as_the_ablations_notebook(seed):
    rng = np.random.default_rng(seed)
    order = ["full", "no SE", "no CA", "no class weights"]
    rows = []
    for arm, shift in zip(order[:3], (0.0, -0.05, 0.01), strict=True):
        for run_seed in range(int(rng.integers(1, 4))):
            values = 0.4 + shift + rng.normal(0, 0.02, 3)
            rows.append(
                {
                    "variant": arm,
                    "seed": run_seed,
                    **dict(zip(["mpq+", "r2", "pq"], values, strict=True)),
                }
            )
    runs = pd.DataFrame(rows)
    expected = _notebook_rule(runs, order)
    ours = spread_verdicts(runs.rename(columns={"variant": "arm"}), "full", arms=order)
    assert ours["verdict"].tolist() == expected["verdict"].tolist()
    assert np.allclose(ours["difference"], expected["minus full"], equal_nan=True)
