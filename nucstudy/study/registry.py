"""The results registry: many run folders gathered into one table for the notebooks
(:func:`collect`), and how long one epoch of a run folder's training was
(:func:`epoch_steps`, :func:`epoch_images`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from nucstudy.engine.run_folder import (
    CONFIG_FILE,
    ENV_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    trained_in_bf16,
)
from nucstudy.study.experiment import ExperimentConfig


def collect(root: str | os.PathLike) -> pd.DataFrame:
    """Gather every run folder under ``root`` (any depth) into one DataFrame.

    A run folder is one holding ``config.json``. Each row has the run's folder
    (``run_dir``), its config fields (``model_options`` flattened to ``model.<option>``),
    ``device_name``, ``started``/``finished`` and ``bf16`` (whether the run took bf16; None
    where env.json predates the record) from env.json, the last epoch of its history,
    and its overall metrics (``mpq+``, ``r2``, ``pq``, ...) from metrics.json, where those
    files exist (missing ones give NaN, so pending runs still show).
    """
    rows = []
    for config_path in sorted(Path(root).rglob(CONFIG_FILE)):
        run_dir = config_path.parent
        config = ExperimentConfig.load(config_path).to_dict()
        options = config.pop("model_options")
        row: dict[str, Any] = {"run_dir": str(run_dir), **config}
        row.update({f"model.{key}": value for key, value in options.items()})
        env = _read_json(run_dir / ENV_FILE)
        for key in ("device_name", "started", "finished", "git_commit"):
            row[key] = env.get(key)
        row["bf16"] = trained_in_bf16(env)
        history = run_dir / HISTORY_FILE
        row["epochs_done"] = len(pd.read_csv(history)) if history.is_file() else 0
        metrics = _read_json(run_dir / METRICS_FILE)
        for key, value in metrics.get("overall", {}).items():
            row[key] = value
        rows.append(row)
    return pd.DataFrame(rows)


def epoch_images(folder: str | os.PathLike) -> int:
    """The patches one epoch of a run's training saw: the training patches, less a last
    incomplete batch where there is more than one batch.

    Read from ``history.csv``: its ``images_seen`` column where it has one (the difference
    between epochs), else images per second times seconds; the median over epochs, so that
    an epoch cut short by a resume does not count.

    Raises:
        ValueError: the folder has no ``history.csv`` or it has no epoch.
    """
    history = _history(Path(folder))
    if "images_seen" in history and history["images_seen"].notna().all():
        return _median_epoch_increase(history["images_seen"])
    return int(round(float((history["images_per_s"] * history["seconds"]).median())))


def epoch_steps(folder: str | os.PathLike) -> int:
    """The optimiser steps of one epoch of a run's training: :func:`epoch_images` over the
    batch size of its ``config.json`` (``history.csv``'s ``step`` column where it has one)."""
    folder = Path(folder)
    history = _history(folder)
    if "step" in history and history["step"].notna().all():
        return _median_epoch_increase(history["step"])
    batch = ExperimentConfig.load(folder / CONFIG_FILE).batch_size
    return int(round(epoch_images(folder) / batch))


def _median_epoch_increase(counts: pd.Series) -> int:
    """The median over epochs of how much a running count (``step``, ``images_seen``) grew."""
    return int(round(float(counts.diff().fillna(counts).median())))


def _history(folder: Path) -> pd.DataFrame:
    """A run folder's ``history.csv`` (one row per epoch), refused when missing or empty."""
    path = folder / HISTORY_FILE
    if not path.is_file():
        raise ValueError(f"{folder}: no {HISTORY_FILE} (the run has not trained an epoch)")
    history = pd.read_csv(path)
    if history.empty:
        raise ValueError(f"{path}: no epoch recorded")
    return history


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    return value if isinstance(value, dict) else {}
