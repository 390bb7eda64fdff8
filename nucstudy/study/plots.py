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


def plot_sources(
    panels: Sequence[tuple[str, ConicData]], per_source: int = 3, seed: int = 0
) -> plt.Figure:
    """Patches of several data sources side by side, nuclei outlined in class colours.

    Args:
        panels: (title, data) pairs; one row per pair, each with its own class legend.
        per_source: patches shown per row.
        seed: which patches are picked (at random, reproducibly).

    Returns:
        The matplotlib Figure.
    """
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(
        len(panels), per_source, figsize=(2.9 * per_source + 2.4, 3.3 * len(panels)), squeeze=False
    )
    for row, (title, data) in enumerate(panels):
        picks = np.sort(rng.choice(len(data), size=min(per_source, len(data)), replace=False))
        for col, ax in enumerate(axes[row]):
            ax.set_axis_off()
            if col >= len(picks):
                continue
            k = picks[col]
            ax.imshow(
                outline_nuclei(np.asarray(data.images[k]), np.asarray(data.labels[k]), data.scheme)
            )
            name = data.patch_info["source"].iloc[k]
            ax.set_title(f"{name}\n{data.mpp:g} µm/px, {data.images.shape[1]} px", fontsize=12)
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
            fontsize=12,
            frameon=False,
        )
    fig.tight_layout(w_pad=0.5)
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
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    terms = [c for c in history.columns if c.startswith("train_") and c != "train_total"]
    for column in terms:
        left.plot(history["epoch"], history[column], label=column.removeprefix("train_"))
    left.plot(history["epoch"], history["train_total"], color="black", lw=2, label="total")
    left.set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss terms")
    left.legend(fontsize=8, ncol=2)
    scores = [c for c in ("val_mpq+", "val_pq", "val_r2") if c in history.columns]
    evaluated = history.dropna(subset=scores) if scores else history.iloc[:0]
    for column in scores:
        right.plot(
            evaluated["epoch"], evaluated[column], marker="o", label=column.removeprefix("val_")
        )
    right.axhline(0, color="grey", lw=0.8)
    right.set(xlabel="epoch", ylabel="score", title="validation")
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_histories(
    histories: dict[str, Any], group_of: dict[str, str], terms: Sequence[str], title: str = ""
) -> plt.Figure:
    """Training curves of several runs, one panel per loss term, runs coloured by group.

    Args:
        histories: run name -> its ``history.csv`` as a DataFrame.
        group_of: run name -> its group (for example the precision it trained in); one
            colour per group, one line per run.
        terms: history columns to plot, one panel each (e.g. ``train_total``).
        title: figure title.
    """
    groups = list(dict.fromkeys(group_of.values()))
    colours = dict(zip(groups, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    fig, axes = plt.subplots(1, len(terms), figsize=(3.6 * len(terms), 3.4), squeeze=False)
    for ax, term in zip(axes[0], terms, strict=True):
        for name, history in histories.items():
            group = group_of[name]
            ax.plot(history["epoch"], history[term], color=colours[group], lw=1, alpha=0.8)
        ax.set(xlabel="epoch", yscale="log", title=term.removeprefix("train_"))
    handles = [plt.Line2D([], [], color=colours[g], label=g) for g in groups]
    axes[0][-1].legend(handles=handles, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
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
