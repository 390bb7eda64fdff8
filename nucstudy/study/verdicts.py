"""Differences between arms of an experiment, judged against the seed-to-seed spread.

One training run is one draw: the same config trained with another seed scores differently.
Given per-seed scores of several arms (the variants of an ablation, the methods of a table),
this module says which differences from a reference arm are larger than that noise:

- :func:`seed_summary`: per arm, the mean and standard deviation (ddof 1) over seeds of each
  metric;
- :func:`pooled_spread`: per metric, the pooled standard deviation over the arms trained with
  at least two seeds, the square root of the mean of their variances;
- :func:`spread_verdicts`: per arm and metric, the difference of its mean from the reference
  arm's and a verdict (:func:`verdict`): "beyond the spread" when it is larger than twice the
  pooled standard deviation, "within the spread" otherwise, "no spread measured" when no arm
  has two seeds, "not trained" when the arm (or the reference) has no score;
- :func:`spread_sentence`: one generated sentence naming the differences beyond the spread.

This is the rule of the ablations notebook's "seed spread" cell, in the library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

#: The verdicts, from a difference that stands out to one that cannot be judged.
BEYOND, WITHIN, NO_SPREAD, NOT_TRAINED = (
    "beyond the spread",
    "within the spread",
    "no spread measured",
    "not trained",
)
#: How many pooled standard deviations a difference must exceed to be beyond the spread.
SPREAD_FACTOR = 2.0


def _metric_columns(scores: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    missing = {"arm", "seed"} - set(scores.columns)
    if missing:
        raise ValueError(f"scores need the columns arm and seed; missing {sorted(missing)}")
    if metrics is None:
        return [c for c in scores.columns if c not in ("arm", "seed")]
    unknown = sorted(set(metrics) - set(scores.columns))
    if unknown:
        raise ValueError(f"scores have no column(s) {', '.join(unknown)}")
    return list(metrics)


def seed_summary(
    scores: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    arms: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each metric, per arm.

    Args:
        scores: one row per run, with columns ``arm`` (str), ``seed`` (int) and float metric
            columns (e.g. ``mpq+``, ``r2``, ``pq``; unitless scores).
        metrics: the metric columns to summarise (default: every other column).
        arms: the arms in the order wanted (default: order of first appearance); an arm
            without rows gets NaN.

    Returns:
        DataFrame indexed by arm, with two-level columns ``(metric, "mean")`` and
        ``(metric, "std")``; the std has ddof 1, so it is NaN for an arm with one seed.
    """
    metrics = _metric_columns(scores, metrics)
    order = list(arms) if arms is not None else list(dict.fromkeys(scores["arm"]))
    summary = scores.groupby("arm")[metrics].agg(["mean", "std"])
    return summary.reindex(order)


def pooled_spread(summary: pd.DataFrame) -> pd.Series:
    """Per metric, the pooled standard deviation over seeds of the arms with several seeds.

    Args:
        summary: as :func:`seed_summary` returns it (arms with one seed have a NaN std and
            do not count).

    Returns:
        float Series indexed by metric: ``sqrt(mean over arms of std**2)``; NaN where no arm
        has two seeds.
    """
    variances = summary.xs("std", axis=1, level=1).pow(2)
    return variances.mean().pow(0.5)


def verdict(difference: float, spread: float, factor: float = SPREAD_FACTOR) -> str:
    """The verdict on one difference of means (NaN: an arm not trained) against the pooled
    standard deviation ``spread`` (NaN: none measured), both in the metric's units."""
    if math.isnan(difference):
        return NOT_TRAINED
    if math.isnan(spread):
        return NO_SPREAD
    return BEYOND if abs(difference) > factor * spread else WITHIN


def spread_verdicts(
    scores: pd.DataFrame,
    reference: str,
    metrics: Sequence[str] | None = None,
    arms: Sequence[str] | None = None,
    spread: pd.Series | None = None,
) -> pd.DataFrame:
    """Each arm's difference from ``reference`` per metric, judged against the seed spread.

    Args:
        scores: one row per run: ``arm``, ``seed`` and metric columns (see
            :func:`seed_summary`).
        reference: the arm every other arm is compared with (e.g. ``"full"``).
        metrics: the metric columns to judge (default: every other column).
        arms: the arms, in order (default: order of first appearance); ``reference`` is
            added if missing, and an arm without rows is "not trained".
        spread: a pooled standard deviation per metric measured elsewhere (e.g. on another
            page's seeds), used where this table gives none; default: this table's.

    Returns:
        DataFrame with one row per arm other than ``reference`` and metric: ``arm``,
        ``metric``, ``reference``, ``seeds`` (int, runs of the arm), ``mean`` (the arm's),
        ``difference`` (its mean minus the reference's), ``seed std`` (the pooled standard
        deviation used) and ``verdict`` (:func:`verdict`).
    """
    metrics = _metric_columns(scores, metrics)
    order = list(arms) if arms is not None else list(dict.fromkeys(scores["arm"]))
    if reference not in order:
        order.insert(0, reference)
    summary = seed_summary(scores, metrics, order)
    pooled = pooled_spread(summary)
    if spread is not None and pooled.isna().all():
        pooled = spread.reindex(metrics).astype(float)
    counts = scores.groupby("arm").size()
    rows = []
    for arm in order:
        if arm == reference:
            continue
        for metric in metrics:
            mean = summary.loc[arm, (metric, "mean")]
            difference = mean - summary.loc[reference, (metric, "mean")]
            rows.append(
                {
                    "arm": arm,
                    "metric": metric,
                    "reference": reference,
                    "seeds": int(counts.get(arm, 0)),
                    "mean": mean,
                    "difference": difference,
                    "seed std": pooled[metric],
                    "verdict": verdict(float(difference), float(pooled[metric])),
                }
            )
    columns = ["arm", "metric", "reference", "seeds", "mean", "difference", "seed std"]
    return pd.DataFrame(rows, columns=[*columns, "verdict"])


def spread_sentence(
    verdicts: pd.DataFrame,
    source: str = "their seeds",
    noun: str = "arm",
    reference: str | None = None,
) -> str:
    """One sentence on which differences are beyond the seed spread.

    Args:
        verdicts: as :func:`spread_verdicts` returns it.
        source: where the spread was measured, in words (e.g. ``"3 seeds of this page"``).
        noun: what an arm is called in the sentence (``"variant"``, ``"method"``).
        reference: the reference arm in words (default: its name, e.g. ``"the full model"``).

    Returns:
        With no spread measured, a sentence saying that no difference can be told from seed
        noise; with none beyond it, one saying that the arms cannot be told apart from the
        reference; otherwise one listing each arm with its differences beyond it:
        ``arm (metric +difference, metric -difference)``.
    """
    if reference is None:
        reference = verdicts["reference"].iloc[0] if len(verdicts) else "the reference"
    if verdicts.empty or verdicts["seed std"].isna().all():
        return (
            f"Only one seed per {noun} and no other spread to compare with: "
            "no difference here can be told from seed noise."
        )
    beyond = verdicts[verdicts["verdict"] == BEYOND]
    if beyond.empty:
        return (
            f"No {noun} differs from {reference} by more than twice the seed spread "
            f"({source}): they cannot be told apart."
        )
    listed = "; ".join(
        f"{arm} ("
        + ", ".join(f"{r['metric']} {r['difference']:+.3f}" for _, r in rows.iterrows())
        + ")"
        for arm, rows in beyond.groupby("arm", sort=False)
    )
    return (
        f"Beyond twice the seed spread ({source}): {listed}. Every other difference is within it."
    )
