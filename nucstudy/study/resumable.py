"""Train and score a run folder whatever state an earlier session left it in.

Long studies (the recipe's arms, the ablations at the recipe) train one run after another
over several sessions; a session may stop in the middle of a run. :func:`run_state` reads
what a run folder holds, and :func:`train_and_score` does what is missing: a new run trains,
a partial one resumes from its last checkpoint, a trained one is scored on its data's test
split, a scored one is left as it is.
"""

from __future__ import annotations

import json

import pandas as pd

from nucstudy.engine.run_folder import CONFIG_FILE, ENV_FILE, HISTORY_FILE, METRICS_FILE
from nucstudy.study.experiment import ExperimentConfig


def run_state(config: ExperimentConfig) -> str:
    """``"scored"``, ``"trained"`` (not scored), ``"partial"`` (resumable) or ``"new"``.

    Raises:
        ValueError: the run folder holds a run of another config.
    """
    folder = config.run_dir
    if (folder / CONFIG_FILE).is_file() and ExperimentConfig.load(folder / CONFIG_FILE) != config:
        raise ValueError(f"{folder}: holds a run of another config; move it or choose --out")
    if (folder / METRICS_FILE).is_file():
        return "scored"
    if not (folder / "checkpoints" / "last.pt").is_file():
        return "new"
    history = pd.read_csv(folder / HISTORY_FILE)
    planned = json.loads((folder / ENV_FILE).read_text())["total_steps"]  # the Trainer's record
    done = "step" in history.columns and int(history["step"].iloc[-1]) >= planned
    return "trained" if done else "partial"


def train_and_score(config: ExperimentConfig, label: str, progress: bool = True) -> None:
    """Train ``config`` unless it is trained, then score it on its data's test split
    (``metrics.json``). A run interrupted part-way resumes from its last checkpoint; a scored
    run is left as it is. ``label`` starts the progress line (``"[recipe] ema, seed 0"``)."""
    from nucstudy.engine.trainer import Trainer
    from nucstudy.study.evaluate import score_on_test

    state = run_state(config)
    if state == "scored":
        return
    if progress:
        print(f"{label}: {state} -> {config.run_dir}", flush=True)
    if state in ("new", "partial"):
        Trainer(config, resume=state == "partial", progress=progress).fit()
    score_on_test(config, progress=progress)
