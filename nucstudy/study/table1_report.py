"""Table I as the book shows it: the answer first (the provenance: :mod:`table1_provenance`).

:func:`nucstudy.study.table1.table1_rows` gives one wide row per method and data set (scores,
intervals, provenance, training). The Table I page opens with what carries the claim and
keeps the rest for the reader who wants it:

- :func:`answer_table`: the paper's mPQ+ and R² of each method, then ours on each data set:
  the mean and standard deviation over seeds beside each seed's 95 % interval, optimiser
  steps and training minutes;
- :func:`plot_answer`: our mPQ+, one point per seed with its interval, beside the paper's;
- :func:`interval_sentence`: over what the intervals were drawn, generated from the rows;
- :func:`defect_warning`: a warning box naming the rows trained before the loader fix
  (marked ``DEFECT_MARK`` in the table and the figure), to open the page with;
- :func:`protocol_sentences`: per data set, the training budget its methods shared;
- :func:`training_end_sentences`: the runs still improving when their training ended, and
  those that peaked in the first half of it;
- :func:`order_sentences`: per data set, whether the proposed model's mPQ+ is above or below
  each baseline's, and whether the difference exceeds twice the seed spread (with one seed
  each: whether the intervals overlap), generated from the rows;

The rows may hold several seeds of a method (column ``seed``,
:func:`nucstudy.study.table1.table1_seed_rows`); without that column each row is one run.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from nucstudy.engine.run_folder import CPU_NOT_RECORDED
from nucstudy.study.defect_departures import LOADER_DEFECT
from nucstudy.study.report import MISSING, mean_std, number_text
from nucstudy.study.verdicts import SPREAD_FACTOR, spread_verdicts

#: The paper's Table I (CoNIC): method label -> (mPQ+, R²).
PUBLISHED: dict[str, tuple[float, float]] = {
    "HoVer-Net": (0.2956, -0.428),
    "Mask R-CNN": (0.3546, -0.198),
    "SE-Res U-Net + CA (proposed)": (0.4342, 0.5648),
}
#: The label of the proposed model's rows.
PROPOSED = "SE-Res U-Net + CA (proposed)"
#: Beside the mPQ+ of a row (and the figure's label) whose runs trained before the loader fix.
DEFECT_MARK = "†"


def _interval(text: Any) -> tuple[float, float]:
    """``"[0.196, 0.259]"`` -> (0.196, 0.259); missing -> (nan, nan)."""
    if not isinstance(text, str):
        return math.nan, math.nan
    low, high = (float(x) for x in text.strip("[]").split(","))
    return low, high


def _runs(rows: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """The rows grouped by (data set, method), in order of first appearance."""
    return list(rows.groupby(["data set", "method"], sort=False))


def column_or_nan(rows: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` of ``rows``, or NaN in every row where no run recorded it."""
    return rows[name] if name in rows else pd.Series(math.nan, index=rows.index)


def _span(values: pd.Series, decimals: int) -> str:
    """One count as text, or ``low–high`` where the seeds differ; a dash where missing."""
    finite = values.dropna()
    if finite.empty:
        return MISSING
    low, high = (number_text(v, decimals) for v in (finite.min(), finite.max()))
    return low if low == high else f"{low}–{high}"


def answer_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The paper's rows, then ours: one row per data set and method, over its seeds.

    Args:
        rows: :func:`nucstudy.study.table1.table1_seed_rows` (or ``table1_rows``) of one or
            more registry folders (column ``data set`` tells them apart; several rows of a
            method are its seeds).

    Returns:
        Columns ``data set`` (``paper (CoNIC)`` for the published rows), ``method``,
        ``seeds`` (finished runs, ``"1 of 2"`` where one is not, a dash where none is),
        ``mPQ+`` and ``R²`` (the mean, ``± sd`` over seeds where there are two or more),
        ``mPQ+ 95% CI`` (each seed's bootstrap interval), ``steps`` and ``train min``; all
        text. A method without a finished run shows its status ("pending", "not trained
        here") instead of its scores; what a row does not record is a dash.
    """
    table = [
        {"data set": "paper (CoNIC)", "method": method, "seeds": MISSING,
         "mPQ+": f"{mpq:.4f}", "mPQ+ 95% CI": MISSING, "R²": f"{r2:.4f}",
         "steps": MISSING, "train min": MISSING}
        for method, (mpq, r2) in PUBLISHED.items()
    ]  # fmt: skip
    marked = _marked(rows)
    for (data_set, method), group in _runs(rows):
        done = group[group["status"] == "done"]
        if done.empty:  # nothing finished: the status says why, no count of seeds
            status = str(group["status"].iloc[0]).split(":")[0]
            table.append({"data set": data_set, "method": method, "seeds": MISSING,
                          "mPQ+": status, "mPQ+ 95% CI": MISSING, "R²": MISSING,
                          "steps": MISSING, "train min": MISSING})  # fmt: skip
            continue
        seeds = f"{len(done)}" if len(done) == len(group) else f"{len(done)} of {len(group)}"
        mark = f" {DEFECT_MARK}" if (data_set, method) in marked else ""
        table.append(
            {
                "data set": data_set,
                "method": method,
                "seeds": seeds,
                "mPQ+": mean_std(done["mPQ+"], 4) + mark,
                "mPQ+ 95% CI": "; ".join(done["mPQ+ 95% CI"]),
                "R²": mean_std(done["R²"], 4),
                "steps": _span(column_or_nan(done, "steps"), 0),
                "train min": _span(column_or_nan(done, "train minutes"), 0),
            }
        )
    return pd.DataFrame(table)


def plot_answer(rows: pd.DataFrame) -> plt.Figure:
    """mPQ+ of each method on each data set, one row each: a point per seed with its 95 %
    interval, and the paper's value (CoNIC) of the method as an open marker on the row.

    Args:
        rows: as for :func:`answer_table`.
    """
    groups = [(key, g[g["status"] == "done"]) for key, g in _runs(rows)]
    groups = [(key, done) for key, done in groups if not done.empty]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(groups), 1) + 1.1))
    for y, ((_, method), done) in enumerate(groups):
        offsets = [0.0] if len(done) == 1 else [0.3 * (i / (len(done) - 1) - 0.5)
                                                 for i in range(len(done))]  # fmt: skip
        for offset, (_, row) in zip(offsets, done.iterrows(), strict=True):
            value = float(row["mPQ+"])
            low, high = _interval(row["mPQ+ 95% CI"])
            # the interval drawn apart from the point: a percentile interval of mPQ+, a ratio
            # of sums, need not contain the value over the whole test set (small test sets)
            ax.errorbar((low + high) / 2, y + offset, xerr=(high - low) / 2, fmt="none",
                        ecolor="tab:blue", capsize=3)  # fmt: skip
            ax.plot(value, y + offset, "o", color="tab:blue", markersize=4)
        ax.scatter(PUBLISHED[method][0], y, facecolors="none", edgecolors="grey")
    marked = _marked(rows)
    labels = [
        f"{data_set}: {method.replace(' (proposed)', '')}"
        + (f" {DEFECT_MARK}" if (data_set, method) in marked else "")
        for (data_set, method), _ in groups
    ]
    ax.set_yticks(range(len(groups)), labels)
    ax.set(xlabel="mPQ+", ylim=(len(groups) - 0.5, -0.5))
    ax.grid(axis="x", alpha=0.3)
    handles = [
        plt.Line2D([], [], marker="o", color="tab:blue", ls="",
                   label="ours, one point per seed (95 % interval)"),
        plt.Line2D([], [], marker="o", mfc="none", mec="grey", ls="", label="paper (CoNIC)"),
    ]  # fmt: skip
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=2,
              fontsize=8, frameon=False)  # fmt: skip
    fig.tight_layout()
    return fig


#: What each bootstrap unit of :func:`nucstudy.study.evaluate.table1_row` resamples.
BOOTSTRAP_UNITS = {
    "sources": "the test set's source images, each drawn with all its patches (which are "
    "correlated)",
    "patches": "the test patches, each drawn on its own (narrower than over sources when "
    "patches of one image are correlated)",
}


def interval_sentence(rows: pd.DataFrame) -> str:
    """Over what the finished rows' 95 % intervals were drawn, as one sentence.

    Args:
        rows: as for :func:`answer_table` (column ``CI over``: ``sources`` or ``patches``).

    Returns:
        ``"The 95 % intervals are a bootstrap over sources: ..."``; with rows drawn over
        different units, one clause per data set; empty without finished rows.
    """
    done = rows[rows["status"] == "done"] if "status" in rows else rows.iloc[:0]
    if done.empty:
        return ""
    units = done.groupby("data set", sort=False)["CI over"].agg(lambda u: sorted(set(u)))
    flat = sorted({unit for data_units in units for unit in data_units})
    if len(flat) == 1:
        return f"The 95 % intervals are a bootstrap over {flat[0]}: {BOOTSTRAP_UNITS[flat[0]]}."
    clauses = "; ".join(f"{name}: over {' and '.join(u)}" for name, u in units.items())
    return f"The 95 % intervals are a bootstrap over different units ({clauses})."


def _run_names(rows: pd.DataFrame) -> list[str]:
    """Each row's run as a sentence names it: "method, seed N" (the method alone where no
    seed is recorded)."""
    seeds = column_or_nan(rows, "seed")
    return [
        method if math.isnan(seed) else f"{method}, seed {seed:.0f}"
        for method, seed in zip(rows["method"], seeds, strict=True)
    ]


def protocol_sentences(rows: pd.DataFrame) -> list[str]:
    """Per data set, what training the methods were given, so that a reader can tell an
    equal-compute comparison from one in equal epochs.

    Args:
        rows: as for :func:`answer_table` (columns ``budget min``, ``threads`` and ``epochs``
            where the runs record them).

    Returns:
        One sentence per data set with a finished run: "each method gets the same N minutes
        of training (T thread(s) each) on the CPU its step time was measured on" where every
        finished run had that compute budget (naming the CPU where recorded, the finished
        methods while others are not, and the runs that trained their steps on another CPU
        or in another precision: columns ``step measured on`` and ``cpu``), otherwise the
        epochs of each method.
    """
    lines = []
    for name, group in rows.groupby("data set", sort=False):
        done = group[group["status"] == "done"]
        if done.empty:
            continue
        budget = column_or_nan(done, "budget min")
        if budget.notna().all() and budget.nunique() == 1:
            threads = set(column_or_nan(done, "threads").dropna())
            count = threads.pop() if len(threads) == 1 else None
            on = f" ({count:.0f} thread{'s' if count != 1 else ''} each)" if count else ""
            finished = list(dict.fromkeys(done["method"]))
            so_far = (
                ""
                if len(finished) == group["method"].nunique()
                else f"; finished so far: {', '.join(finished)}"
            )
            measured = column_or_nan(done, "step measured on")
            known = sorted({cpu for cpu in measured.dropna() if cpu != CPU_NOT_RECORDED})
            lines.append(
                f"{name}: each method gets the same {number_text(budget.iloc[0], 0)} minutes "
                f"of training{on} on the CPU its step time was measured on"
                f"{' (' + '; '.join(known) + ')' if known else ''}: as many optimiser steps "
                "as its step time, measured before training, fits in them (its train min is "
                "the wall clock it took, which other work on the machine, or steps that grow "
                f"slower as it learns, can lengthen){so_far}."
            )
            trained = column_or_nan(done, "cpu")
            moved = [
                f"{run} ({cpu})"
                for run, cpu, timed in zip(_run_names(done), trained, measured, strict=True)
                if timed in known and isinstance(cpu, str) and cpu not in (timed, CPU_NOT_RECORDED)
            ]
            if moved:
                lines[-1] += (
                    " These runs trained their steps on another CPU or in another precision, "
                    f"so their train min are that CPU's: {'; '.join(moved)}."
                )
            continue
        epochs = "; ".join(
            f"{method.replace(' (proposed)', '')} {_span(runs['epochs'], 0)}"
            for method, runs in done.groupby("method", sort=False)
        )
        lines.append(f"{name}: trained in epochs, not in equal time ({epochs} epochs).")
    return lines


def training_end_sentences(rows: pd.DataFrame) -> list[str]:
    """Per data set, the finished runs whose training ended too early or too late to show
    the method at its best: those whose validation mPQ+ was still rising at the end
    (``still improving`` "yes"), and those whose best validation came in the first half of
    their epochs (their test score is the best checkpoint's, but they trained on past it).

    Args:
        rows: as for :func:`answer_table` (columns ``still improving``, ``best epoch`` and
            ``epochs`` where the runs record them).
    """
    lines = []
    for name, done in rows[rows["status"] == "done"].groupby("data set", sort=False):
        runs = {  # index -> the run's name, a comma after its seed for the sentence
            i: run if run == method else f"{run},"
            for i, run, method in zip(done.index, _run_names(done), done["method"], strict=True)
        }
        for i in done.index[column_or_nan(done, "still improving") == "yes"]:
            lines.append(
                f"{name}: {runs[i]} was still improving when its training ended: more "
                "training could raise its score."
            )
        best, epochs = column_or_nan(done, "best epoch"), column_or_nan(done, "epochs")
        for i in done.index[best < epochs / 2]:
            lines.append(
                f"{name}: {runs[i]} scored its best validation mPQ+ at epoch {best[i]:.0f} of "
                f"{epochs[i]:.0f}; its test score is that checkpoint's, and it had stopped "
                "gaining long before its training ended."
            )
    return lines


def frozen_augmentation_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The finished rows trained before the loader fix (each training segment repeated its
    first epoch's augmentation): ``augmentation each epoch`` False; unrecorded counts as
    drawn each epoch."""
    done = rows[rows["status"] == "done"]
    drawn = column_or_nan(done, "augmentation each epoch").astype(object)
    return done[~drawn.where(drawn.notna(), True).astype(bool)]


def defect_warning(rows: pd.DataFrame) -> str:
    """A MyST warning box naming, per data set, the finished runs trained before the loader
    fix (:func:`frozen_augmentation_rows`), marked ``DEFECT_MARK`` in the table and the
    figure; an empty string where every run drew its augmentation each epoch."""
    hit = frozen_augmentation_rows(rows)
    if hit.empty:
        return ""
    where = "; ".join(
        f"{name}: {', '.join(dict.fromkeys(group['method']))}"
        for name, group in hit.groupby("data set", sort=False)
    )
    return (
        "```{warning}\n"
        f"Some rows below ({DEFECT_MARK} in the table and the figure) trained with "
        f"{LOADER_DEFECT}. These runs saw fewer distinct patches than their epochs and "
        "overfit sooner, so their scores may understate what the method reaches with the "
        f"same training. They are {where}. The departures table names them too.\n"
        "```"
    )


def _marked(rows: pd.DataFrame) -> set[tuple[str, str]]:
    """The (data set, method) pairs with a finished run trained before the loader fix."""
    hit = frozen_augmentation_rows(rows)
    return set(zip(hit["data set"], hit["method"], strict=True))


def order_sentences(rows: pd.DataFrame) -> list[str]:
    """Per data set and baseline: is the proposed model's mPQ+ above or below, and is the
    difference real? With two or more seeds of each, the difference of the means is judged
    against the seed spread (:func:`nucstudy.study.verdicts.spread_verdicts`: real where it
    exceeds twice the pooled standard deviation); with one seed of either, the sentence says
    whether the 95 % intervals overlap and that the seed spread was not measured. A
    baseline without a finished run gets a sentence with the reason.

    Args:
        rows: as for :func:`answer_table`.

    Returns:
        One sentence per comparison (empty when no data set has a finished proposed row).
    """
    lines = []
    for name, group in rows.groupby("data set", sort=False):
        done = group[group["status"] == "done"]
        ours = done[done["method"] == PROPOSED]
        if ours.empty:
            continue
        for method, other_rows in group.groupby("method", sort=False):
            if method == PROPOSED:
                continue
            other = other_rows[other_rows["status"] == "done"]
            if other.empty:
                lines.append(f"{name}: {method} has no score ({other_rows['status'].iloc[0]}).")
                continue
            lines.append(f"{name}: " + _comparison(ours, other, method))
    return lines


def _comparison(ours: pd.DataFrame, other: pd.DataFrame, method: str) -> str:
    """The proposed model's finished runs against one baseline's, as a sentence."""
    mine, theirs = ours["mPQ+"].mean(), other["mPQ+"].mean()
    side = "above" if mine > theirs else "below"
    if len(ours) > 1 and len(other) > 1:
        seeds = pd.concat([ours.assign(arm=PROPOSED), other.assign(arm=method)])
        judged = spread_verdicts(seeds[["arm", "seed", "mPQ+"]], method, ["mPQ+"]).iloc[0]
        beyond = "beyond" if judged["verdict"] == "beyond the spread" else "within"
        return (
            f"the proposed model's mean mPQ+ over {len(ours)} seeds ({mine:.3f}) is {side} "
            f"{method}'s over {len(other)} ({theirs:.3f}); the difference "
            f"({mine - theirs:+.3f}) is {beyond} {SPREAD_FACTOR:g} times the seed spread "
            f"(pooled sd {judged['seed std']:.3f})."
        )
    low, high = _interval(ours["mPQ+ 95% CI"].iloc[0])
    o_low, o_high = _interval(other["mPQ+ 95% CI"].iloc[0])
    overlap = "overlap" if low <= o_high and o_low <= high else "do not overlap"
    return (
        f"the proposed model's mPQ+ ({mine:.3f}) is {side} {method}'s ({theirs:.3f}); their "
        f"95 % intervals {overlap} (one seed of "
        f"{'each' if len(ours) == len(other) else 'one of them'}: the seed spread is not "
        "measured)."
    )
