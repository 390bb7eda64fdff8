"""Table I as the book shows it: the answer first, the provenance after.

:func:`nucstudy.study.table1.table1_rows` gives one wide row per method and data set (scores,
intervals, provenance, training). The Table I page opens with what carries the claim and
keeps the rest for the reader who wants it:

- :func:`answer_table`: the paper's mPQ+ and R² of each method, then ours on each data set
  with 95 % intervals, optimiser steps and training minutes;
- :func:`plot_answer`: our mPQ+ with its interval beside the paper's, as a figure;
- :func:`interval_sentence`: over what the intervals were drawn, generated from the rows;
- :func:`order_sentences`: per data set, whether the proposed model's mPQ+ is above or below
  each baseline's and whether their intervals overlap, generated from the rows;
- :func:`provenance_table`: where one data set's rows come from, one column per method,
  every value as text (counts as integers).
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from nucstudy.study.report import MISSING, number_text

#: The paper's Table I (CoNIC): method label -> (mPQ+, R²).
PUBLISHED: dict[str, tuple[float, float]] = {
    "HoVer-Net": (0.2956, -0.428),
    "Mask R-CNN": (0.3546, -0.198),
    "SE-Res U-Net + CA (proposed)": (0.4342, 0.5648),
}
#: The label of the proposed model's rows.
PROPOSED = "SE-Res U-Net + CA (proposed)"
#: Provenance fields shown, in order (those a row lacks are left out).
PROVENANCE = (
    "status",
    "test data",
    "test patches",
    "CI over",
    "post-processing",
    "preset",
    "model",
    "protocol",
    "epochs",
    "best epoch",
    "steps",
    "images seen",
    "budget min",
    "still improving",
    "train minutes",
    "train GMACs/patch",
    "GMACs counted",
    "seed",
    "device",
    "threads",
    "bf16",
    "commit",
)
#: Provenance fields that count (shown as integers).
COUNTED = ("test patches", "epochs", "best epoch", "steps", "images seen", "seed", "threads")


def _interval(text: Any) -> tuple[float, float]:
    """``"[0.196, 0.259]"`` -> (0.196, 0.259); missing -> (nan, nan)."""
    if not isinstance(text, str):
        return math.nan, math.nan
    low, high = (float(x) for x in text.strip("[]").split(","))
    return low, high


def _score(row: pd.Series, metric: str) -> str:
    """``"0.2192 [0.196, 0.259]"`` for a finished row, its status otherwise."""
    if row.get("status") != "done":
        return str(row.get("status", MISSING)).split(":")[0]
    return f"{row[metric]:.4f} {row[f'{metric} 95% CI']}"


def answer_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The paper's rows, then ours: one row per data set and method.

    Args:
        rows: :func:`nucstudy.study.table1.table1_rows` of one or more registry folders
            (column ``data set`` tells them apart).

    Returns:
        Columns ``data set`` (``paper (CoNIC)`` for the published rows), ``method``,
        ``mPQ+ [95% CI]``, ``R² [95% CI]``, ``steps`` and ``train min``; all text. A method
        without a finished run shows its status ("pending", "not trained here") instead of
        its scores; what a row does not record is a dash.
    """
    table = [
        {"data set": "paper (CoNIC)", "method": method, "mPQ+ [95% CI]": f"{mpq:.4f}",
         "R² [95% CI]": f"{r2:.4f}", "steps": MISSING, "train min": MISSING}
        for method, (mpq, r2) in PUBLISHED.items()
    ]  # fmt: skip
    for _, row in rows.iterrows():
        table.append(
            {
                "data set": row["data set"],
                "method": row["method"],
                "mPQ+ [95% CI]": _score(row, "mPQ+"),
                "R² [95% CI]": _score(row, "R²") if row.get("status") == "done" else MISSING,
                "steps": number_text(row.get("steps"), 0),
                "train min": number_text(row.get("train minutes"), 0),
            }
        )
    return pd.DataFrame(table)


def plot_answer(rows: pd.DataFrame) -> plt.Figure:
    """mPQ+ of each method with its 95 % interval on each data set, one row each, and the
    paper's value (CoNIC) of the method as an open marker on the same row.

    Args:
        rows: as for :func:`answer_table`.
    """
    done = rows[rows["status"] == "done"]
    labels = [f"{r['data set']}: {r['method'].replace(' (proposed)', '')}"
              for _, r in done.iterrows()]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(done), 1) + 1.1))
    for y, (_, row) in enumerate(done.iterrows()):
        value = float(row["mPQ+"])
        low, high = _interval(row["mPQ+ 95% CI"])
        ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", color="tab:blue",
                    capsize=3)  # fmt: skip
        ax.scatter(PUBLISHED[row["method"]][0], y, facecolors="none", edgecolors="grey")
    ax.set_yticks(range(len(done)), labels)
    ax.set(xlabel="mPQ+", ylim=(len(done) - 0.5, -0.5))
    ax.grid(axis="x", alpha=0.3)
    handles = [
        plt.Line2D([], [], marker="o", color="tab:blue", ls="", label="ours (95 % interval)"),
        plt.Line2D([], [], marker="o", mfc="none", mec="grey", ls="", label="paper (CoNIC)"),
    ]
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


def order_sentences(rows: pd.DataFrame) -> list[str]:
    """Per data set and baseline: is the proposed model's mPQ+ above or below, and do the
    95 % intervals overlap? A baseline not trained there gets a sentence with the reason.

    Args:
        rows: as for :func:`answer_table`.

    Returns:
        One sentence per comparison (empty when no data set has a finished proposed row).
    """
    lines = []
    for name, group in rows.groupby("data set", sort=False):
        by_method = group.set_index("method")
        if PROPOSED not in by_method.index or by_method.loc[PROPOSED, "status"] != "done":
            continue
        ours = by_method.loc[PROPOSED]
        low, high = _interval(ours["mPQ+ 95% CI"])
        for method in by_method.index.drop(PROPOSED):
            other = by_method.loc[method]
            if other["status"] != "done":
                lines.append(f"{name}: {method} has no score ({other['status']}).")
                continue
            o_low, o_high = _interval(other["mPQ+ 95% CI"])
            side = "above" if ours["mPQ+"] > other["mPQ+"] else "below"
            overlap = "overlap" if low <= o_high and o_low <= high else "do not overlap"
            lines.append(
                f"{name}: the proposed model's mPQ+ ({ours['mPQ+']:.3f}) is {side} "
                f"{method}'s ({other['mPQ+']:.3f}); their 95 % intervals {overlap}."
            )
    return lines


def provenance_table(rows: pd.DataFrame, data_set: str) -> pd.DataFrame:
    """Where one data set's rows come from: one column per method, one row per field.

    Args:
        rows: as for :func:`answer_table`.
        data_set: the ``data set`` whose rows are shown.

    Returns:
        String DataFrame indexed by field (named ``field``), the fields of
        :data:`PROVENANCE` that any of the rows has; counts as integers, other numbers to
        one decimal, missing values as a dash.
    """
    group = rows[rows["data set"] == data_set].set_index("method")
    fields = [f for f in PROVENANCE if f in group.columns and group[f].notna().any()]
    table = pd.DataFrame(
        {method: [_field_text(group.loc[method, f], f) for f in fields] for method in group.index},
        index=pd.Index(fields, name="field"),
    )
    return table


def _field_text(value: Any, field: str) -> str:
    """One provenance value as text (see :func:`provenance_table`)."""
    if isinstance(value, bool):
        return str(value)
    return number_text(value, 0 if field in COUNTED else 1)
