"""The results registry: many run folders gathered into one table for the notebooks."""

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


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    return value if isinstance(value, dict) else {}
