"""Equal compute: what a run costs on this machine, and the steps a time budget buys.

Table I (:mod:`nucstudy.study.table1`) can give every method the same training time on the
hardware at hand instead of the same epochs. This module measures a method's step time
(:func:`measure_step_seconds`, :func:`estimate_minutes`), turns minutes into a run length
that keeps the schedule's shape (:func:`budget_config`), keeps each measurement in a
registry folder's ``budget.json`` so that it is taken once (:func:`budgeted_config`), and
reads back how long a finished run trained and what a training patch cost
(:func:`training_record`, :func:`count_training_multiply_adds`).
"""

from __future__ import annotations

import fcntl
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd

from nucstudy.common.io import atomic_write_text
from nucstudy.engine.run_folder import (
    CPU_NOT_RECORDED,
    cpu_label,
    cpu_model,
    cpu_vector_extensions,
)
from nucstudy.study.experiment import HISTORY_FILE, ExperimentConfig
from nucstudy.study.registry import epoch_images, epoch_steps

#: The registry folder's record of each method's budget: method-seed -> minutes, step
#: seconds, threads and the CPU and precision the step was timed on.
BUDGET_FILE = "budget.json"


def measure_step_seconds(trainer, steps: int = 2, warmup: int = 1) -> float:
    """Seconds of one training step of a :class:`~nucstudy.engine.trainer.Trainer` (loading
    the batch included): the median of ``steps`` steps timed one by one, after ``warmup``
    untimed ones. The median keeps a step that compiles (``torch.compile`` compiles again for
    an input of a new shape) out of the method's step time. The trainer's weights move."""
    if len(trainer.loader) == 0:
        raise ValueError("no training batch to time: the training split is empty")
    trainer.network.train()
    batches = (batch for _ in range(steps + warmup) for batch in trainer.loader)  # loops if short
    for _ in range(warmup):
        trainer._step(next(batches), 0)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer._step(next(batches), 0)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def estimate_minutes(config: ExperimentConfig, steps: int = 1) -> float:
    """Minutes ``config`` would train for on this machine (validation aside), measured."""
    from nucstudy.engine.trainer import Trainer

    trainer = Trainer(config, progress=False)
    return measure_step_seconds(trainer, steps) * trainer.total_steps / 60


def budget_config(
    config: ExperimentConfig, minutes: float, step_seconds: float
) -> tuple[ExperimentConfig, int]:
    """``config`` trained for the optimiser steps ``minutes`` buy at ``step_seconds`` a step.

    The length becomes ``steps`` (at least one); a step schedule keeps its shape, its epoch
    milestones turned into fractions of the run (the paper's 25 and 35 of 50: 0.5 and 0.7).

    Returns:
        The config and its steps.
    """
    if not minutes > 0 or not step_seconds > 0:
        raise ValueError(f"need positive minutes and step seconds, got {minutes}, {step_seconds}")
    steps = max(1, int(minutes * 60 / step_seconds))
    changes: dict[str, Any] = {"steps": steps, "images": None}
    if config.lr_schedule == "step" and config.lr_milestone_fractions is None:
        changes["lr_milestone_fractions"] = [m / config.epochs for m in config.lr_milestones]
    return config.replace(**changes), steps


def measuring_cpu(bf16: bool) -> str:
    """This machine's CPU as :func:`~nucstudy.engine.run_folder.cpu_label` names a run's, for
    a step timed in ``bf16`` or float32: a budget buys its steps at that CPU's step time, so
    a run trained on another CPU, or in the other precision, takes other minutes for them."""
    return cpu_label(
        {
            "cpu_model": cpu_model(),
            "cpu_vector_extensions": list(cpu_vector_extensions()),
            "fast_path": {"bf16": bf16},
        }
    )


def budgeted_config(
    config: ExperimentConfig, method: str, root: Path, minutes: float, progress: bool
) -> ExperimentConfig:
    """The method's config under the compute budget: its steps measured once and kept in
    ``root/budget.json`` (method and seed -> minutes, step seconds, threads, the CPU and
    precision they were measured on: :func:`measuring_cpu`), so that a run
    resumed in a later session keeps its length. Another seed of a method already measured
    under the same budget reuses that measurement, so that the method's seeds are
    step-matched. Processes that train other methods into the same ``root`` side by side
    take turns to read and write the file (a lock beside it)."""
    import torch

    from nucstudy.engine.trainer import Trainer

    path = root / BUDGET_FILE
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{BUDGET_FILE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        budgets = json.loads(path.read_text()) if path.is_file() else {}
        key = f"{method}-seed{config.seed}"
        same_budget = [  # this seed's record first, then the method's other seeds'
            record
            for name, record in sorted(budgets.items(), key=lambda item: (item[0] != key, item[0]))
            if name.startswith(f"{method}-seed") and record["minutes"] == minutes
        ]
        record = same_budget[0] if same_budget else None
        if record is None:
            trainer = Trainer(config, progress=False)
            seconds = measure_step_seconds(trainer, steps=5, warmup=2)
            record = {
                "minutes": minutes,
                "step_seconds": seconds,
                "threads": torch.get_num_threads(),
                "measured_on": measuring_cpu(trainer.fast_path.bf16),
            }
        if budgets.get(key) != record:
            budgets[key] = record
            atomic_write_text(path, json.dumps(budgets, indent=2) + "\n")
    budgeted, steps = budget_config(config, minutes, record["step_seconds"])
    if progress:
        print(
            f"[table1] {method}: {minutes:g} min at {record['step_seconds']:.2f} s a step "
            f"buy {steps} steps",
            flush=True,
        )
    return budgeted


def count_training_multiply_adds(config: ExperimentConfig, side: int, scheme_name: str) -> float:
    """Multiply-adds of forward and backward of one training patch of ``config``'s method,
    counted on two synthetic patches of ``side`` px (for runs that predate the Trainer's own
    count on its first step; a dense network's count does not depend on the content)."""
    import torch

    from nucstudy.data.classes import get_scheme
    from nucstudy.engine.cost import synthetic_batch, training_multiply_adds
    from nucstudy.engine.device import choose_fast_path
    from nucstudy.engine.methods import build_method
    from nucstudy.models import build_model

    scheme = get_scheme(scheme_name)
    torch.manual_seed(config.seed)
    network = build_model(config.model, n_types=scheme.n_classes, **config.model_options)
    method = build_method(config, scheme)
    batch = synthetic_batch(method, 2, side, scheme_name, seed=config.seed)
    device = torch.device("cpu")
    return training_multiply_adds(network, method, batch, device, choose_fast_path(device, False))


def training_record(folder: Path, budget: dict[str, Any] | None) -> dict[str, Any]:
    """How long one run trained and whether it had more to gain.

    Args:
        folder: a finished run folder (its ``history.csv``).
        budget: its record in ``budget.json`` (None: trained for the protocol's epochs).

    Returns:
        ``steps`` (optimiser steps trained) and ``images seen``: the last epoch's counts,
        or for a history that predates those columns its epochs times one epoch's
        (:func:`~nucstudy.study.registry.epoch_steps`, ``epoch_images``); ``budget min``
        (the compute budget in minutes, NaN without one), ``step s`` (its measured seconds
        a step), ``step measured on`` (the CPU and precision of that measurement, None
        without a budget) and ``still improving``: "yes" when its last validation scored its best
        mPQ+ and more than the one before, else "no" ("not validated" without validation
        scores).
    """
    history = pd.read_csv(folder / HISTORY_FILE)
    last = history.iloc[-1]
    epochs = float(last["epoch"])
    steps = float(last["step"]) if "step" in history else epochs * epoch_steps(folder)
    images = (
        float(last["images_seen"]) if "images_seen" in history else epochs * epoch_images(folder)
    )
    scores = history["val_mpq+"].dropna() if "val_mpq+" in history else pd.Series(dtype=float)
    if len(scores) < 2:
        improving = "not validated" if scores.empty else "no"
    else:
        rising = scores.iloc[-1] >= scores.max() and scores.iloc[-1] > scores.iloc[-2]
        improving = "yes" if rising else "no"
    return {
        "steps": steps,
        "images seen": images,
        "budget min": budget["minutes"] if budget else math.nan,
        "step s": budget["step_seconds"] if budget else math.nan,
        "step measured on": budget.get("measured_on", CPU_NOT_RECORDED) if budget else None,
        "still improving": improving,
    }
