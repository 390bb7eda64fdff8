"""The out-of-domain pages' figure: every seed of every recipe against the classical floor.

One training run is one draw: :func:`plot_seeds` shows each seed's score as a dot and the
mean over seeds as a bar, one row per recipe (grouped by
:func:`nucstudy.study.ood_report.group_runs`), so that a reader sees the spread before the
best run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def plot_seeds(
    ax,
    labelled: pd.DataFrame,
    groups: pd.DataFrame,
    floor_pq: float,
    column: str = "pq",
    label: Callable[[pd.Series], str] | None = None,
) -> list[str]:
    """One row per group: a dot per seed (filled: tiles as they are, hollow: stain-normalised)
    and a bar at each mean, the floor as a dashed line.

    Args:
        ax: a matplotlib Axes.
        labelled: from :func:`label_runs` (or :func:`add_consep_scores`), with ``column``.
        groups: the groups to draw (from :func:`group_runs`; both normalisations of a recipe
            share one row, labelled by its ``changes``).
        floor_pq: where the dashed line goes (NaN: none).
        column: the score drawn.
        label: a recipe's row label from its keys (default: its ``changes``).

    Returns:
        The row labels, top to bottom.
    """
    keys = ["preset", "network", "changes", "thresholds", "mpp"]
    recipes = groups[keys].drop_duplicates().reset_index(drop=True)
    for row, recipe in recipes.iterrows():
        same = (labelled[keys] == recipe[keys]).all(axis=1) & ~labelled["floor"]
        for normalised, offset, face in ((False, -0.15, "tab:blue"), (True, 0.15, "none")):
            values = labelled.loc[same & (labelled["stain normalisation"] == normalised), column]
            values = values.dropna()
            if values.empty:
                continue
            y = np.full(len(values), row + offset)
            ax.scatter(values, y, s=22, facecolors=face, edgecolors="tab:blue", zorder=3)
            ax.plot([values.mean()] * 2, [y[0] - 0.13, y[0] + 0.13], color="black", lw=2)
    if not np.isnan(floor_pq):
        ax.axvline(floor_pq, color="0.35", ls="--", lw=1)
    labels = [label(r) if label else r["changes"] for _, r in recipes.iterrows()]
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    return labels
