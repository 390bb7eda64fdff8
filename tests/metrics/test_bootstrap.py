"""Per-image statistics and bootstrap intervals."""

import numpy as np
import pandas as pd
import pytest

from nucstudy.data import synthetic_conic
from nucstudy.metrics import conic_metrics
from nucstudy.metrics.bootstrap import bootstrap_intervals, per_image_stats, scores_from_stats


@pytest.fixture(scope="module")
def pair():
    """Truth, and a prediction that drops, shifts and relabels some nuclei."""
    true = synthetic_conic(12, size=128, seed=5).labels
    rng = np.random.default_rng(0)
    pred = np.roll(true, 1, axis=2).copy()
    inst, cls = pred[..., 0], pred[..., 1]
    for k in range(len(pred)):
        ids = np.unique(inst[k])[1:]
        dropped = rng.choice(ids, size=len(ids) // 5, replace=False)
        relabel = rng.choice(ids, size=len(ids) // 5, replace=False)
        drop = np.isin(inst[k], dropped)
        inst[k][drop], cls[k][drop] = 0, 0
        change = np.isin(inst[k], relabel) & ~drop
        cls[k][change] = cls[k][change] % 6 + 1
    return pred, true


def test_scores_from_the_table_equal_conic_metrics(pair):
    pred, true = pair
    stats = per_image_stats(pred, true, "conic")
    assert len(stats) == 12 * 6
    reference = conic_metrics(pred, true, "conic")
    scores = scores_from_stats(stats)
    assert scores["mpq+"] == pytest.approx(reference["mpq+"], abs=1e-12)
    assert scores["r2"] == pytest.approx(reference["r2"], abs=1e-12)


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded(pair):
    stats = per_image_stats(*pair, "conic")
    table = bootstrap_intervals(stats, n_boot=500, seed=1)
    assert list(table.index) == ["mpq+", "r2"]
    for metric in table.index:
        low, estimate, high = table.loc[metric, ["low", "estimate", "high"]]
        assert low < high and low <= estimate + 0.05 and estimate - 0.05 <= high
    assert table.equals(bootstrap_intervals(stats, n_boot=500, seed=1))
    narrow = bootstrap_intervals(stats, n_boot=500, level=0.5, seed=1)
    assert (narrow["high"] - narrow["low"] <= table["high"] - table["low"]).all()


def test_perfect_predictions_have_a_degenerate_interval(pair):
    _, true = pair
    table = bootstrap_intervals(per_image_stats(true, true, "conic"), n_boot=200)
    assert np.allclose(table.loc["r2"], 1.0)
    assert table.loc["mpq+", "estimate"] == pytest.approx(1.0, abs=1e-5)
    assert table.loc["mpq+", "high"] == pytest.approx(1.0, abs=1e-5)
    # A resample without any neutrophil scores that class 0, as the challenge scores a class
    # absent from both sides: with perfect predictions every resample scores (classes
    # present) / 6, and the interval's low end shows how rare classes make mPQ+ fragile.
    present = 6 * table.loc["mpq+", "low"]
    assert present == pytest.approx(round(present), abs=1e-4) and 1 <= round(present) <= 6


def test_bad_tables_are_refused(pair):
    stats = per_image_stats(*pair, "conic")
    with pytest.raises(ValueError, match="lacks column"):
        bootstrap_intervals(stats.drop(columns="fp"))
    with pytest.raises(ValueError, match="every"):
        bootstrap_intervals(stats.iloc[1:])
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(stats, level=95)


def _correlated_stats(n_sources: int = 12, per_source: int = 8) -> pd.DataFrame:
    """A per-image table where the patches of one source share that source's quality."""
    rng = np.random.default_rng(3)
    rows = []
    for source in range(n_sources):
        quality = rng.uniform(0.1, 0.9)
        for _ in range(per_source):
            tp = int(round(20 * np.clip(quality + rng.normal(0, 0.02), 0, 1)))
            rows.append(
                {"source": f"tile{source}", "class": "a", "tp": tp, "fp": 20 - tp}
                | {"fn": 20 - tp, "sum_iou": 0.8 * tp, "true_count": 20, "pred_count": 20}
            )
    stats = pd.DataFrame(rows)
    stats.insert(0, "image", np.arange(len(stats)))
    return stats


def test_by_source_intervals_are_wider_for_correlated_patches():
    stats = _correlated_stats()
    by_source = bootstrap_intervals(stats, n_boot=1000, by="source")
    by_patch = bootstrap_intervals(stats, n_boot=1000, by="patch")
    width = lambda table: table.loc["mpq+", "high"] - table.loc["mpq+", "low"]  # noqa: E731
    assert width(by_source) > 1.5 * width(by_patch)
    assert by_source.loc["mpq+", "estimate"] == by_patch.loc["mpq+", "estimate"]


def test_sources_are_recorded_and_required_for_by_source(pair):
    pred, true = pair
    sources = [f"s{k // 4}" for k in range(len(true))]
    stats = per_image_stats(pred, true, "conic", sources)
    assert stats.drop_duplicates("image")["source"].tolist() == sources
    assert per_image_stats(pred, true, "conic")["source"].nunique() == len(true)
    with pytest.raises(ValueError, match="no 'source' column"):
        bootstrap_intervals(stats.drop(columns="source"))
    with pytest.raises(ValueError, match="by must be"):
        bootstrap_intervals(stats, by="tile")
    with pytest.raises(ValueError, match="3 sources for 12 patches"):
        per_image_stats(pred, true, "conic", ["a", "b", "c"])
