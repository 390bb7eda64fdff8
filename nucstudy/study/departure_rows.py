"""The pieces of the departures table: a run as the table reads it (and the registry's full-model
runs), one aspect of the protocol (the paper's value, ours, whether they differ, and why), and
the table with its runs merged into one column for a page (:func:`departures_summary`)."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nucstudy.engine.run_folder import CONFIG_FILE, ENV_FILE, METRICS_FILE
from nucstudy.study.ablations import ADOPTED_FILE
from nucstudy.study.experiment import ExperimentConfig
from nucstudy.study.paths import REPO_ROOT


@dataclass(frozen=True)
class Run:
    """What the table reads of one run folder."""

    name: str
    config: ExperimentConfig
    env: dict
    metrics: dict

    @classmethod
    def read(cls, folder: str | os.PathLike, name: str | None = None) -> Run:
        folder = Path(folder)
        config = ExperimentConfig.load(folder / CONFIG_FILE)

        def optional(file: str) -> dict:
            path = folder / file
            return json.loads(path.read_text()) if path.is_file() else {}

        label = name or f"{folder.parent.name} ({config.preset})"
        return cls(label, config, optional(ENV_FILE), optional(METRICS_FILE))


def _every_run(run: Run) -> bool:
    return True


@dataclass(frozen=True)
class Aspect:
    """One aspect of the protocol: the paper's value, ours, and why they differ; ``applies``
    says to which runs it applies (by default every run)."""

    name: str
    paper: str
    fields: tuple[str, ...]
    ours: Callable[[Run], str]
    same: Callable[[Run], bool]
    why: str
    applies: Callable[[Run], bool] = _every_run


def registry_full_runs(
    root: str | os.PathLike | None = None, names: Mapping[str, str] | None = None
) -> list[Run]:
    """The full-model run (``full-seed0``) of each data set in the results registry.

    Args:
        root: the registry (default ``results/runs``).
        names: a registry folder's name -> the run's name in the table (default:
            ``"<folder> (<preset>)"``).

    Returns:
        One :class:`Run` per scored ``<folder>/full-seed0``, by folder name; a run copied from
        another folder (it keeps :data:`ADOPTED_FILE`) is left out: it is that run.
    """
    root = Path(root) if root is not None else REPO_ROOT / "results" / "runs"
    names = names or {}
    return [
        Run.read(path.parent, names.get(path.parent.parent.name))
        for path in sorted(root.glob(f"*/full-seed0/{CONFIG_FILE}"))
        if (path.parent / METRICS_FILE).is_file() and not (path.parent / ADOPTED_FILE).is_file()
    ]


def departures_summary(table: pd.DataFrame, merged: str = "the study's runs") -> pd.DataFrame:
    """:func:`departures_table`'s rows with the runs' columns merged into one, for a page.

    Each distinct value of an aspect's runs is given once, followed by the runs that have it
    in brackets; where the runs differ, the value most runs have comes last, with "(the other
    runs)", and where every run has the same value no run is named. Runs where the aspect
    does not apply are left out. The values are HTML-escaped and one a line (``<br>``).

    Returns:
        DataFrame with the columns ``aspect``, ``the paper``, ``merged`` and ``departs``, in
        the table's order (no index to show).
    """
    runs = [column for column in table.columns if column not in ("paper", "departs", "why")]
    rows = []
    for aspect, row in table.iterrows():
        groups: dict[str, list[str]] = {}
        for run in runs:
            if row[run] != "does not apply":
                groups.setdefault(str(row[run]), []).append(run)
        largest = max(groups, key=lambda value: len(groups[value])) if len(groups) > 1 else None
        lines = [
            html.escape(value)
            + ("" if len(names) == len(runs) else f" ({html.escape(', '.join(names))})")
            for value, names in groups.items()
            if value != largest
        ]
        if largest is not None:
            lines.append(f"{html.escape(largest)} (the other runs)")
        rows.append(
            {
                "aspect": aspect,
                "the paper": html.escape(row["paper"]),
                merged: "<br>".join(lines),
                "departs": row["departs"],
            }
        )
    return pd.DataFrame(rows, columns=["aspect", "the paper", merged, "departs"])
