"""The pieces of the departures table: a run as the table reads it (and the registry's full-model
runs), and one aspect of the protocol (the paper's value, ours, whether they differ, and why)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nucstudy.engine.run_folder import CONFIG_FILE, ENV_FILE, METRICS_FILE
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


def registry_full_runs(root: str | os.PathLike | None = None) -> list[Run]:
    """The full-model run (``full-seed0``) of each data set in the results registry."""
    root = Path(root) if root is not None else REPO_ROOT / "results" / "runs"
    folders = sorted(root.glob(f"*/full-seed0/{CONFIG_FILE}"))
    return [Run.read(path.parent) for path in folders if (path.parent / METRICS_FILE).is_file()]
