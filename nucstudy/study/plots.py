"""Figures shared by the main job, the notebooks and the book."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from nucstudy.common.io import atomic_write
from nucstudy.data.classes import ClassScheme
from nucstudy.data.conic import ConicData
from nucstudy.segment.export import outline_nuclei  # noqa: F401 (the plots' own name too)


def class_legend(scheme: ClassScheme) -> list[Patch]:
    """Legend handles, one per foreground class, in the scheme's colours."""
    colours = scheme.colour_table() / 255.0
    return [
        Patch(facecolor=colours[i], edgecolor="black", label=name)
        for i, name in zip(scheme.foreground_ids, scheme.foreground_names, strict=True)
    ]


def _patch_name(data: ConicData, k: int) -> str:
    """The name of patch ``k``: the CoNIC release's ``patch_info`` column, CoNSeP-256's
    ``name``, or else its source image and index (``"test_3 #12"``)."""
    for column in ("patch_info", "name"):
        if column in data.patch_info.columns:
            return str(data.patch_info[column].iloc[k])
    return f"{data.patch_info['source'].iloc[k]} #{k}"


def plot_sources(
    panels: Sequence[tuple[str, ConicData]], per_source: int = 3, seed: int = 0
) -> plt.Figure:
    """Patches of several data sources side by side, nuclei outlined in class colours.

    Each row picks its patches at random with the same ``seed``, so rows with as many
    patches pick the same indices: a data set and its resampled copy (CoNSeP at 40x and
    halved to 20x) show the same tissue. Each panel is titled with the patch's name
    (:func:`_patch_name`), resolution and size. Sized to be read at a text column's width
    (10.6 inches for three patches per row; titles 12 pt, row labels and legends 13 pt).

    Args:
        panels: (title, data) pairs; one row per pair, each with its own class legend.
        per_source: patches shown per row.
        seed: which patches are picked (at random, reproducibly).

    Returns:
        The matplotlib Figure.
    """
    fig, axes = plt.subplots(
        len(panels),
        per_source,
        figsize=(2.8 * per_source + 2.2, 3.2 * len(panels)),
        squeeze=False,
    )
    for row, (title, data) in enumerate(panels):
        rng = np.random.default_rng(seed)
        picks = np.sort(rng.choice(len(data), size=min(per_source, len(data)), replace=False))
        for col, ax in enumerate(axes[row]):
            ax.set_axis_off()
            if col >= len(picks):
                continue
            k = picks[col]
            ax.imshow(
                outline_nuclei(np.asarray(data.images[k]), np.asarray(data.labels[k]), data.scheme)
            )
            ax.set_title(
                f"{_patch_name(data, k)}\n{data.mpp:g} µm/px, {data.images.shape[1]} px",
                fontsize=12,
            )
        axes[row, 0].text(
            -0.08,
            0.5,
            title,
            transform=axes[row, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=13,
            fontweight="bold",
        )
        axes[row, -1].legend(
            handles=class_legend(data.scheme),
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            fontsize=13,
            frameon=False,
        )
    fig.tight_layout(w_pad=1.5)
    return fig


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically and close it; returns the path."""
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_history(history, title: str = "") -> plt.Figure:
    """Training curves of one run: loss terms per epoch (left), validation scores (right).

    Args:
        history: the run's ``history.csv`` as a DataFrame.
        title: figure title.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    terms = [c for c in history.columns if c.startswith("train_") and c != "train_total"]
    for column in terms:
        left.plot(history["epoch"], history[column], label=column.removeprefix("train_"))
    left.plot(history["epoch"], history["train_total"], color="black", lw=2, label="total")
    left.set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss terms")
    # legends under the axes, where they hide no curve
    left.legend(fontsize=9, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    scores = [c for c in ("val_mpq+", "val_pq", "val_r2") if c in history.columns]
    evaluated = history.dropna(subset=scores) if scores else history.iloc[:0]
    for column in scores:
        right.plot(
            evaluated["epoch"], evaluated[column], marker="o", label=column.removeprefix("val_")
        )
    right.axhline(0, color="grey", lw=0.8)
    right.set(xlabel="epoch", ylabel="score", title="validation")
    right.legend(fontsize=9, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


#: Line styles of the groups of :func:`plot_histories`, in order: each group differs in style
#: as well as colour, so that one group's lines stay visible where another's lie over them.
GROUP_STYLES = ("-", "--", ":", "-.")


def plot_histories(
    histories: dict[str, Any],
    group_of: dict[str, str],
    terms: Sequence[str],
    title: str = "",
    ncols: int = 2,
) -> plt.Figure:
    """Training curves of several runs, one panel per loss term, runs coloured by group.

    The panels fill rows of ``ncols`` at 3.4 inches each, so that two of them fit the book's
    text column (about 680 px at 100 dpi) unshrunk; the legend sits under the panels.

    Args:
        histories: run name -> its ``history.csv`` as a DataFrame.
        group_of: run name -> its group (for example the precision it trained in); one
            colour and line style (:data:`GROUP_STYLES`) per group, one line per run.
        terms: history columns to plot, one panel each (e.g. ``train_total``).
        title: figure title.
        ncols: panels per row.
    """
    groups = list(dict.fromkeys(group_of.values()))
    colours = dict(zip(groups, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    styles = {group: GROUP_STYLES[k % len(GROUP_STYLES)] for k, group in enumerate(groups)}
    ncols = max(1, min(ncols, len(terms)))
    nrows = -(-len(terms) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.4 * ncols, 2.7 * nrows + 0.7), squeeze=False, sharex=True
    )
    for ax, term in zip(axes.flat, terms, strict=False):
        for name, history in histories.items():
            group = group_of[name]
            ax.plot(
                history["epoch"],
                history[term],
                color=colours[group],
                ls=styles[group],
                lw=1.5,
                alpha=0.9,
            )
        ax.set(yscale="log", title=term.removeprefix("train_"))
    for ax in axes.flat[len(terms) :]:
        ax.set_visible(False)
    for k, ax in enumerate(axes.flat[: len(terms)]):
        if k + ncols >= len(terms):  # the lowest panel of its column
            ax.set_xlabel("epoch")
            ax.xaxis.set_tick_params(labelbottom=True)
    handles = [plt.Line2D([], [], color=colours[g], ls=styles[g], lw=1.5, label=g) for g in groups]
    fig.legend(handles=handles, loc="lower center", ncol=len(groups), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))
    return fig


def plot_per_class(table, value: str = "pq", hue: str = "run", title: str = "") -> plt.Figure:
    """Grouped bars of a per-class score (columns ``class``, ``value`` and ``hue``).

    Where ``table`` holds several rows per (class, hue), e.g. several seeds, the bar is their
    mean and the error bar their standard deviation.
    """
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(9, 3.8))
    sns.barplot(data=table, x="class", y=value, hue=hue, errorbar="sd", ax=ax)
    ax.set(ylabel=value, xlabel="", title=title)
    ax.legend(fontsize=8, title=hue)
    fig.tight_layout()
    return fig


def plot_predictions(
    images: np.ndarray,
    true: np.ndarray,
    pred: np.ndarray,
    scheme: ClassScheme,
    titles: Sequence[str] | None = None,
) -> plt.Figure:
    """Each patch with its true nuclei (top row) and predicted nuclei (bottom row) outlined.

    Args:
        images: N x H x W x 3 uint8.
        true, pred: N x H x W x 2 label arrays.
        scheme: their class scheme (outline colours).
        titles: one title per patch.
    """
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2.8 * n + 1.8, 6), squeeze=False)
    for k in range(n):
        for row, (labels, name) in enumerate(((true, "truth"), (pred, "prediction"))):
            ax = axes[row, k]
            ax.imshow(outline_nuclei(np.asarray(images[k]), np.asarray(labels[k]), scheme))
            ax.set_axis_off()
            ax.set_title(f"{titles[k] if titles else k}: {name}", fontsize=8)
    axes[0, -1].legend(
        handles=class_legend(scheme),
        loc="center left",
        bbox_to_anchor=(1.02, 0.0),
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout()
    return fig
