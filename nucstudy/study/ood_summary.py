"""The out-of-domain results summed up in sentences, generated from the CPM-15 table.

:mod:`nucstudy.study.ood_report` labels and groups the rows of ``results/ood/cpm15.csv``;
this module says what they add up to, for the out-of-domain page and the discussion:

- :func:`describe`, :func:`recipe_words`: a group of runs in words;
- :func:`floor_verdict`: the networks against the classical floor, means over seeds first;
- :func:`domain_sentence`: the recipes best on CoNSeP's own test split, and where they stand
  on CPM-15;
- :func:`seed_spread`: the pooled seed-to-seed standard deviation of the recipes trained
  with several seeds;
- :func:`remedy_sentence`: what a remedy buys against the floor, whether that is close to
  it (within :data:`CLOSE_FACTOR` seed spreads), which kind of error is left and what tuned
  thresholds change.

Every score is binary PQ (unitless, in [0, 1]); counts are nuclei summed over the test
tiles, means over seeds.
"""

from __future__ import annotations

import pandas as pd

from nucstudy.study.ood_report import GROUP_KEYS, NOTHING, TUNED, group_runs
from nucstudy.study.report import mean_std
from nucstudy.study.verdicts import SPREAD_FACTOR, pooled_spread, seed_summary

__all__ = [
    "CLOSE_FACTOR",
    "ERROR_WORDS",
    "describe",
    "domain_sentence",
    "floor_verdict",
    "ordinal",
    "recipe_words",
    "remedy_sentence",
    "seed_spread",
]

#: A mean is "close" to the floor when it is within this many pooled seed standard
#: deviations of it (the rule by which the book tells differences from seed noise).
CLOSE_FACTOR = SPREAD_FACTOR
#: The error counts of the table (``nucstudy.metrics.patch_errors``' kinds) in words.
ERROR_WORDS = {
    "missed": "true nuclei missed outright",
    "spurious": "spurious predictions",
    "split": "true nuclei cut into pieces",
    "merged": "predictions merging neighbours",
}


def describe(row: pd.Series) -> str:
    """A group or run in words: ``"proposed network, paper preset, with strong stain +
    tuned thresholds, on stain-normalised tiles"``, or ``"HoVer-Net, paper preset, as the
    paper trains it"`` when nothing was changed."""
    changes = row["changes"]
    text = f"{row['network']}, {row['preset']} preset, " + (
        "as the paper trains it" if changes == NOTHING else f"with {changes}"
    )
    return text + (", on stain-normalised tiles" if row["stain normalisation"] else "")


def recipe_words(row: pd.Series) -> str:
    """A recipe in few words: ``"the cpu-demo preset's study recipe"``, ``"the paper preset
    as the paper trains it"``, ``"the paper preset's HoVer-Net, as the paper trains it"``,
    ``"the paper preset's HoVer-Net with stain aug."``; the proposed network is not named."""
    proposed = row["network"] == "proposed network"
    if row["changes"] == NOTHING:
        network = "" if proposed else f"'s {row['network']},"
        return f"the {row['preset']} preset{network} as the paper trains it"
    network = "" if proposed else f"{row['network']} with "
    return f"the {row['preset']} preset's {network}{row['changes']}"


def _times(factor: float) -> str:
    """``2`` -> ``"twice"``: how many times, in words."""
    return {1: "once", 2: "twice"}.get(factor, f"{factor:g} times")


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def ordinal(n: int) -> str:
    """``1`` -> ``"1st"``, ``12`` -> ``"12th"``, ``23`` -> ``"23rd"``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def floor_verdict(labelled: pd.DataFrame, floor_pq: float) -> str:
    """Two sentences on the networks against the classical floor: the best mean over seeds
    first (with its spread and number of seeds), then how many single scores clear it.

    Args:
        labelled: from :func:`~nucstudy.study.ood_report.label_runs`, with ``pq``.
        floor_pq: the floor's binary PQ on the same tiles at the networks' resolution.
    """
    groups = group_runs(labelled)
    runs = labelled[~labelled["floor"]]
    best = groups.loc[groups["pq mean"].idxmax()]
    values = runs.loc[(runs[GROUP_KEYS] == best[GROUP_KEYS]).all(axis=1), "pq"]
    seeds = f"{best['seeds']} seed{'s' if best['seeds'] > 1 else ''}"
    if best["pq mean"] > floor_pq:
        first = (
            f"Averaged over seeds, {describe(best)} clears the classical floor "
            f"(binary PQ {floor_pq:.3f}) with {mean_std(values)} over {seeds}"
            + (": one seed only, so this is not yet a result." if best["seeds"] == 1 else ".")
        )
    else:
        first = (
            f"Averaged over seeds, no network clears the classical floor (binary PQ "
            f"{floor_pq:.3f}): the best mean is {mean_std(values)} over {seeds} "
            f"({describe(best)})."
        )
    parts = []
    for kind, name in (("tuned", "tuned thresholds"), ("HoVer-Net's", "HoVer-Net's")):
        scored = runs[runs["thresholds"] == kind]["pq"]
        if scored.empty:
            continue
        above = scored[scored > floor_pq]
        count = (
            f"{len(above)} of the {len(scored)}" if len(above) else f"none of the {len(scored)}"
        )
        parts.append(f"{count} with {name}" + (f" (best {above.max():.3f})" if len(above) else ""))
    if not (runs["pq"] > floor_pq).any():
        return first + " No single score (one seed, one test condition) clears it either."
    return (
        first
        + " Single scores (one seed, one test condition) that clear it: "
        + (", ".join(parts) + ".")
    )


def _plain_groups(labelled: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """:func:`group_runs` of the networks' rows on tiles as they are, with the ``metrics``
    the table has."""
    runs = labelled[~labelled["floor"] & ~labelled["stain normalisation"].astype(bool)]
    return group_runs(runs, [m for m in metrics if m in runs.columns])


def seed_spread(labelled: pd.DataFrame, metric: str = "pq") -> float:
    """The pooled standard deviation over seeds of ``metric`` (ddof 1), over the recipes
    (``changes``) of ``labelled`` trained with two or more seeds, on tiles as they are: the
    size of a difference another seed could make. NaN where no recipe has two seeds.

    Args:
        labelled: from :func:`~nucstudy.study.ood_report.label_runs`, one network and preset
            (recipes are told apart by ``changes`` alone).
        metric: ``pq`` (CPM-15) or ``consep pq``.
    """
    runs = labelled[~labelled["floor"] & ~labelled["stain normalisation"].astype(bool)]
    scores = runs[["changes", "seed", metric]].rename(columns={"changes": "arm"})
    return float(pooled_spread(seed_summary(scores, [metric]))[metric])


def domain_sentence(labelled: pd.DataFrame, best: int = 2) -> str:
    """Where the recipes best on CoNSeP's own test split stand on CPM-15.

    Args:
        labelled: from :func:`~nucstudy.study.ood_report.label_runs` with
            :func:`~nucstudy.study.ood_report.add_consep_scores` (``consep pq``); the rows on
            tiles as they are are read, one recipe per group of seeds.
        best: how many of the best recipes on CoNSeP to name.

    Returns:
        Sentences naming the ``best`` recipes by CoNSeP test PQ with their scores on both
        (and the nuclei they miss on CPM-15, where counted), their ranks on CPM-15, how many
        of the recipes trained with stain augmentation score above the first of them there,
        and the rank correlation (Spearman) of the two scores over every recipe.
    """
    groups = _plain_groups(labelled, ["pq", "consep pq", "missed", "nuclei true"])
    groups = groups.dropna(subset=["consep pq mean"]).reset_index(drop=True)
    groups["cpm rank"] = groups["pq mean"].rank(ascending=False, method="min").astype(int)
    top = groups.sort_values("consep pq mean", ascending=False).head(best)
    named = []
    for _, row in top.iterrows():
        missed = ""
        if pd.notna(row.get("missed mean")) and pd.notna(row.get("nuclei true mean")):
            missed = (
                f"; {row['missed mean']:,.0f} of the {row['nuclei true mean']:,.0f} nuclei "
                "outlined missed"
            )
        named.append(
            f"{recipe_words(row)}, with binary PQ {row['consep pq mean']:.3f} there and "
            f"{row['pq mean']:.3f} on CPM-15 ({_seeds(row['seeds'])}{missed})"
        )
    n = len(groups)
    ranks = [ordinal(int(r)) for r in top["cpm rank"]]
    first = top.iloc[0]
    stained = groups[groups["changes"].str.contains("stain")]
    above = int((stained["pq mean"] > first["pq mean"]).sum())
    correlation = groups["pq mean"].corr(groups["consep pq mean"], method="spearman")
    which = "recipe that scores" if len(top) == 1 else f"{len(top)} recipes that score"
    text = (
        f"The {which} highest on CoNSeP's own test split "
        f"{'is' if len(top) == 1 else 'are'} {', and '.join(named)}. Of the {n} "
        f"recipes, {'it ranks' if len(top) == 1 else 'they rank'} {' and '.join(ranks)} on "
        "CPM-15"
    )
    if len(stained):
        text += (
            f", {'the best of them in domain ' if len(top) > 1 else ''}below {above} of the "
            f"{len(stained)} "
            "recipes trained with stain augmentation"
        )
    order = "agree" if correlation > 0 else "disagree"
    return text + (
        f". Over the {n} recipes the two orders {order}: the rank correlation of CoNSeP test "
        f"PQ and CPM-15 PQ is {correlation:+.2f}."
    )


def remedy_sentence(
    labelled: pd.DataFrame,
    remedy: str,
    floor: pd.Series,
    spread: float,
    start: str = NOTHING,
) -> str:
    """What one remedy buys on CPM-15, whether that is close to the floor, and what is left.

    Args:
        labelled: from :func:`~nucstudy.study.ood_report.label_runs` with
            :func:`~nucstudy.study.ood_report.add_consep_scores`, restricted to one network
            and preset (the paper-scale network); tiles as they are are read.
        remedy: the remedy's ``changes`` (e.g. ``"strong stain + wide rescale + blur &
            noise"``); its tuned rows, where scored, are ``"<remedy> + tuned thresholds"``.
        floor: the floor's row (``pq``; ``nuclei true``).
        spread: the pooled seed standard deviation of CPM-15 PQ: the remedy is called close
            to the floor only within :data:`CLOSE_FACTOR` times it.
        start: the ``changes`` the remedy is compared with (the paper's recipe).

    Returns:
        Sentences: the remedy's CPM-15 PQ against ``start``'s and the floor's, and its CoNSeP
        test PQ against ``start``'s; the error counts left, largest first (where counted);
        and, where tuned, what the tuned thresholds change and how many seeds then clear
        the floor.
    """
    metrics = ["pq", "consep pq", *ERROR_WORDS]
    groups = _plain_groups(labelled, metrics).set_index("changes")
    runs = labelled[~labelled["floor"] & ~labelled["stain normalisation"].astype(bool)]
    row, before = groups.loc[remedy], groups.loc[start]
    values = runs.loc[runs["changes"] == remedy, "pq"]
    gap = floor["pq"] - row["pq mean"]
    margin = CLOSE_FACTOR * spread
    spreads = f"{_times(CLOSE_FACTOR)} the seed spread ({spread:.3f}, a pooled standard deviation)"
    side = "below" if gap > 0 else "above"
    closeness = f"{abs(gap):.3f} {side} the classical floor's {floor['pq']:.3f}: " + (
        f"within {spreads}, close to it" if abs(gap) <= margin else f"more than {spreads}"
    )
    text = (
        f"On CPM-15, training with {remedy} takes the paper-scale network from binary PQ "
        f"{before['pq mean']:.3f} to {mean_std(values)} ({_seeds(row['seeds'])}), "
        f"{closeness}; on CoNSeP's own test split it goes from "
        f"{before['consep pq mean']:.3f} to {row['consep pq mean']:.3f}."
    )
    counted = {k: row.get(f"{k} mean") for k in ERROR_WORDS}
    counted = {k: v for k, v in counted.items() if v is not None and pd.notna(v)}
    if counted:
        kinds = sorted(counted, key=counted.get, reverse=True)
        rest = [f"{ERROR_WORDS[k]} ({counted[k]:,.0f})" for k in kinds[1:]]
        text += (
            f" The largest kind of error left is {ERROR_WORDS[kinds[0]]} "
            f"({counted[kinds[0]]:,.0f} of the {int(floor['nuclei true']):,} outlined)"
            + (
                ", then " + ", ".join(rest[:-1]) + (" and " if len(rest) > 1 else "") + rest[-1]
                if rest
                else ""
            )
            + "."
        )
    tuned_name = f"{remedy} + {TUNED}"
    if tuned_name in groups.index:
        tuned = groups.loc[tuned_name]
        tuned_values = runs.loc[runs["changes"] == tuned_name, "pq"]
        changes = [
            f"the {ERROR_WORDS[k].removeprefix('true ')} from {counted[k]:,.0f} to "
            f"{tuned[f'{k} mean']:,.0f}"
            for k in ("split", "missed")
            if k in counted and pd.notna(tuned.get(f"{k} mean"))
        ]
        cleared = int((tuned_values > floor["pq"]).sum())
        text += (
            " Post-processing thresholds tuned on CoNSeP's own validation patches take "
            + (" and ".join(changes) + ", and " if changes else "")
            + f"PQ to {mean_std(tuned_values)}: {cleared} of the {_seeds(len(tuned_values))} "
            + ("clears" if cleared == 1 else "clear")
            + " the floor."
        )
    return text
