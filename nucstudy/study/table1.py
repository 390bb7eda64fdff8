"""Table I: the three methods trained under one protocol, scored alike, in one table.

The paper compares HoVer-Net, Mask R-CNN and its SE-Res U-Net with Coordinate Attention.
Here the three share one base config (data, split, augmentation, epochs, schedule, seed:
:func:`table1_base`); each method changes only what defines it (:data:`METHODS`: the
model, its options and its own loss). Where a method must depart from the shared protocol
(for example fewer epochs because of its cost on the hardware at hand), the change is
given explicitly and every row of the table names it (:func:`protocol_differences`).

:func:`run_table1` trains what is missing into one registry folder, evaluates each run on
the test split with the same metrics, and writes ``table1.csv`` there; under a time budget
it first measures what each missing method would cost and trains only what fits,
recording why the rest was not trained (``table1_skipped.json``). :func:`table1_rows`
reads a registry folder back as the table (the ``nucstudy table1`` command and the Table I
notebook both use it), :func:`table1_seed_rows` with every seed trained there.

Equal compute (``compute_minutes``): on hardware where the paper's protocol (the same epochs
for every method) would give the cheap network many times the training of the expensive
ones, every method instead gets the same training time on this machine. Its step time is
measured once (:func:`measure_step_seconds`), the steps that time buys become its run's
length (its own schedule's shape kept, as fractions of the steps), and both are recorded in
``budget.json`` so that a later call reuses the runs instead of measuring again
(:mod:`nucstudy.study.compute_budget`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from nucstudy.common.io import atomic_write_text
from nucstudy.data import parse_source
from nucstudy.engine.methods import OWN_TRAINING
from nucstudy.study.ablations import reusable_run
from nucstudy.study.compute_budget import (
    BUDGET_FILE,
    budgeted_config,
    count_training_multiply_adds,
    estimate_minutes,
    training_record,
)
from nucstudy.study.evaluate import table1_row
from nucstudy.study.experiment import (
    CONFIG_FILE,
    ENV_FILE,
    METRICS_FILE,
    ExperimentConfig,
)
from nucstudy.study.presets import preset
from nucstudy.study.resumable import train_and_score

#: method -> its label in the table, the stem of its run folder and what defines it.
METHODS: dict[str, dict[str, Any]] = {
    "hovernet": {
        "label": "HoVer-Net",
        "run": "hovernet",
        "changes": {"model": "hovernet", "model_options": {}, **OWN_TRAINING["hovernet"]},
    },
    "maskrcnn": {
        "label": "Mask R-CNN",
        "run": "maskrcnn",
        "changes": {
            "model": "maskrcnn",
            # ResNet-50-FPN as the paper's baseline; 20x data seen at 40x pixel size
            "model_options": {"backbone": "resnet50", "upscale": 2.0},
            **OWN_TRAINING["maskrcnn"],
            # eager: torch.compile compiles again for each new count of proposals, and its
            # steps were no faster than eager ones between compilations (CPU, one thread)
            "compile": False,
            # Adam at the paper's 3e-4 whatever the protocol's lr: trained from scratch at the
            # recipe's 2e-3, its first epoch's loss reached 58 and its RPN and box classifier
            # stopped learning (objectness loss 0.57 after 588 steps, none kept on validation)
            "lr": 3e-4,
        },
    },
    "proposed": {"label": "SE-Res U-Net + CA (proposed)", "run": "full", "changes": {}},
}

#: Config fields that define a method rather than the protocol it is trained under.
METHOD_FIELDS = (
    "name",
    "model",
    "model_options",
    "loss",
    "loss_weights",
    "class_weights",
    "out_root",
    "workers",
    "device",
    "compile",
)

TABLE_FILE, SKIPPED_FILE = "table1.csv", "table1_skipped.json"


def table1_base(data: str, preset_name: str, **changes: Any) -> ExperimentConfig:
    """The protocol the three methods share: ``preset_name`` on ``data`` (CoNSeP halved to
    20x, as everywhere in the study), with ``changes`` applied."""
    kind = parse_source(data)[0]
    return preset(preset_name, data=data, resample=kind == "consep").replace(**changes)


def run_name(method: str, seed: int) -> str:
    """The run folder's name of ``method`` trained with ``seed``: ``hovernet-seed0``."""
    return f"{METHODS[method]['run']}-seed{seed}"


def method_config(
    base: ExperimentConfig, method: str, changes: dict[str, Any] | None = None
) -> ExperimentConfig:
    """The config of ``method`` under the protocol ``base``, with its own ``changes``.

    ``changes`` are what this method alone departs from the protocol in; a
    ``model_options`` there is merged onto the method's. If they change the number of
    epochs but not ``lr_milestones``, the milestones are scaled with the epochs (the
    schedule keeps its shape, rounded half up: 25 and 35 of 50 become 8 and 11 of 15).
    """
    if method not in METHODS:
        raise ValueError(f"unknown Table I method {method!r}; known: {', '.join(METHODS)}")
    own = dict(METHODS[method]["changes"])
    changes = dict(changes or {})
    if "model_options" in changes:
        base_options = own.get("model_options", base.model_options)
        changes["model_options"] = {**base_options, **changes["model_options"]}
    if "epochs" in changes and "lr_milestones" not in changes:
        ratio = changes["epochs"] / base.epochs
        changes["lr_milestones"] = [
            max(1, math.floor(m * ratio + 0.5)) for m in base.lr_milestones
        ]
    config = base.replace(**own).replace(**changes)
    return config.replace(name=run_name(method, config.seed))


def protocol_differences(config: ExperimentConfig, reference: ExperimentConfig) -> str:
    """How ``config``'s protocol differs from ``reference``'s, in words ("" if not at all).

    Fields that define a method (:data:`METHOD_FIELDS`) are not protocol.
    """
    mine, theirs = config.to_dict(), reference.to_dict()
    differences = [
        f"{key} {mine[key]} (others: {theirs[key]})"
        for key in mine
        if key not in METHOD_FIELDS and mine[key] != theirs[key]
    ]
    return "; ".join(differences)


def option_departures(config: ExperimentConfig, method: str) -> str:
    """Where ``config``'s model options differ from the method's own (its Table I options,
    else the model's constructor defaults), in words ("" if nowhere)."""
    import inspect

    from nucstudy.models import MODELS

    parameters = inspect.signature(MODELS[config.model]).parameters
    own = {name: p.default for name, p in parameters.items() if p.default is not p.empty}
    own.update(METHODS[method]["changes"].get("model_options", {}))
    return "; ".join(
        f"{key} {value} (the method's: {own.get(key)})"
        for key, value in config.model_options.items()
        if own.get(key) != value
    )


def run_table1(
    base: ExperimentConfig,
    root: str | os.PathLike,
    method_changes: dict[str, dict[str, Any]] | None = None,
    methods: tuple[str, ...] = tuple(METHODS),
    budget_minutes: float | None = None,
    n_boot: int = 2000,
    progress: bool = True,
    compute_minutes: float | None = None,
) -> pd.DataFrame:
    """Train and score what is missing of Table I in ``root``; write and return the table.

    Args:
        base: the shared protocol (:func:`table1_base`); its ``out_root`` is replaced by
            ``root``.
        root: the registry folder of this comparison (one run folder per method).
        method_changes: method -> its departures from the protocol (see
            :func:`method_config`).
        methods: which methods to train where missing (the table shows all three).
        budget_minutes: train a missing method only if its measured estimate fits in what
            is left of this budget; otherwise record why it was not trained. None: train
            everything.
        n_boot: bootstrap resamples of the intervals.
        progress: print what happens.
        compute_minutes: give every method this many minutes of training on this machine:
            the steps its measured step time buys (see the module docstring). None: the
            protocol's epochs for every method.

    Returns:
        The table (see :func:`table1_rows`), also written to ``root/table1.csv``.
    """
    root = Path(root)
    base = base.replace(out_root=str(root))
    method_changes = method_changes or {}
    unknown = sorted(set(method_changes) - set(METHODS))
    if unknown:
        raise ValueError(
            f"unknown Table I method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}"
        )
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    for method in methods:
        config = method_config(base, method, method_changes.get(method))
        if compute_minutes is not None:
            config = budgeted_config(config, method, root, compute_minutes, progress)
        if reusable_run(config.run_dir, config) is not None:
            if progress:
                print(f"[table1] {method}: reusing {config.run_dir}", flush=True)
            continue
        if budget_minutes is not None:
            left = budget_minutes - (time.perf_counter() - started) / 60
            estimate = estimate_minutes(config)
            if estimate > left:
                skipped[method] = skip_reason(estimate, left)
                if progress:
                    print(f"[table1] {method}: {skipped[method]}", flush=True)
                continue
        train_and_score(config, f"[table1] {method}", progress)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / SKIPPED_FILE, json.dumps(skipped, indent=2) + "\n")
    table = table1_rows(root, n_boot=n_boot, seed=base.seed)
    atomic_write_text(root / TABLE_FILE, table.to_csv(index=False))
    return table


def skip_reason(estimate: float, left: float) -> str:
    """Why a Table I method was not trained: its measured training time ``estimate`` and the
    ``left`` minutes of the study's budget for it (both in minutes)."""
    return (
        "not trained here: measured on this machine, its training would take about "
        f"{estimate:.0f} min, more than the {max(left, 0):.0f} min this run of the study sets "
        "aside for it"
    )


def table1_rows(
    root: str | os.PathLike,
    n_boot: int = 2000,
    bootstrap_by: str = "source",
    route: str | None = None,
    seed: int = 0,
    runs: dict[str, str] | None = None,
) -> pd.DataFrame:
    """The Table I rows of one registry folder: one per method, finished or not.

    Each row is :func:`nucstudy.study.evaluate.table1_row` of the method's run folder, plus
    ``protocol``: how the run's protocol differs from the proposed model's, and its model
    options from the method's own (:func:`option_departures`; "as the proposed model"
    where nothing differs), ``GMACs counted``: where the training
    multiply-adds come from (a run older than the Trainer's count gets them counted
    afterwards by :func:`count_training_multiply_adds`, at its recorded crop), its training
    (:func:`training_record`: optimiser steps, patches seen, the compute budget it had and
    whether its validation score was still rising at the end), and for a method that was
    not trained there the reason recorded by :func:`run_table1`.

    Args:
        root: the registry folder.
        n_boot, bootstrap_by, route: as :func:`nucstudy.study.evaluate.table1_row`.
        seed: the seed in the run folders' names.
        runs: method -> run folder name, where not :func:`run_name`.
    """
    root = Path(root)
    runs = {method: run_name(method, seed) for method in METHODS} | (runs or {})
    skipped_path = root / SKIPPED_FILE
    skipped = json.loads(skipped_path.read_text()) if skipped_path.is_file() else {}
    budget_path = root / BUDGET_FILE
    budgets = json.loads(budget_path.read_text()) if budget_path.is_file() else {}
    reference_path = root / runs["proposed"] / CONFIG_FILE
    reference = ExperimentConfig.load(reference_path) if reference_path.is_file() else None
    rows = []
    for method, spec in METHODS.items():
        folder = root / runs[method]
        row = table1_row(
            folder, spec["label"], n_boot=n_boot, bootstrap_by=bootstrap_by, route=route
        )
        if row["status"] != "done":
            row["status"] = skipped.get(method, row["status"])
            rows.append(row)
            continue
        config = ExperimentConfig.load(folder / CONFIG_FILE)
        row.update(training_record(folder, budgets.get(f"{method}-seed{config.seed}")))
        if method == "proposed" or reference is None:
            row["protocol"] = "the proposed model's" if method == "proposed" else "unknown"
        else:
            departures = [
                protocol_differences(config, reference),
                option_departures(config, method),
            ]
            row["protocol"] = "; ".join(d for d in departures if d) or "as the proposed model"
        row["GMACs counted"] = "on its first training step"
        if math.isnan(row["train GMACs/patch"]):
            env = json.loads((folder / ENV_FILE).read_text())
            side = env.get("crop_px")
            row["GMACs counted"] = "not recorded"
            if side:
                scheme = json.loads((folder / METRICS_FILE).read_text())["scheme"]
                row["train GMACs/patch"] = count_training_multiply_adds(config, side, scheme) / 1e9
                row["GMACs counted"] = f"afterwards, on {side} px synthetic patches"
        rows.append(row)
    return pd.DataFrame(rows)


def table1_seed_rows(
    root: str | os.PathLike,
    seeds: Sequence[int] = (0,),
    runs: dict[str, str] | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """The Table I rows of several seeds of one registry folder, with a column ``seed``.

    The first seed gives a row for every method, finished or not (with its status), the
    later seeds only the runs begun there, so that a folder trained with one seed shows no
    rows for seeds nobody started; a folder with no Table I run at all gives no rows.

    Args:
        root: the registry folder.
        seeds: the seeds, first the one every method is expected to have.
        runs: method -> run folder name of the first seed, where not :func:`run_name`.
        **kwargs: ``n_boot``, ``bootstrap_by``, ``route`` of :func:`table1_rows`.
    """
    root = Path(root)
    frames, any_begun = [], False
    for index, seed in enumerate(seeds):
        rows = table1_rows(root, seed=seed, runs=runs if index == 0 else None, **kwargs)
        begun = rows["run"].map(lambda run: (root / run / CONFIG_FILE).is_file()).astype(bool)
        any_begun = any_begun or bool(begun.any())
        frames.append((rows if index == 0 else rows[begun]).assign(seed=seed))
    table = pd.concat(frames, ignore_index=True)
    return table if any_begun else table.iloc[:0]
