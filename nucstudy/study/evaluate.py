"""Scoring a trained run folder: metrics.json, per_image.csv, and the rows of Table I.

:func:`evaluate` predicts a data set with a run's checkpoint (through
:mod:`nucstudy.engine.inference`), scores it as the CoNIC challenge does and writes the results
into the run folder; it refuses patches the run trained or validated on.
:func:`table1_row` reads a finished run back as one row of the study's Table I.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nucstudy.common.io import atomic_write_text
from nucstudy.data.classes import ClassScheme
from nucstudy.data.conic import ConicData
from nucstudy.engine.device import choose_fast_path, resolve_device
from nucstudy.engine.inference import predict_labels
from nucstudy.engine.methods import method_for
from nucstudy.engine.model_file import TrainedModel, load_model
from nucstudy.engine.run_folder import augmentation_frozen, cpu_label, trained_in_bf16
from nucstudy.metrics import conic_metrics
from nucstudy.metrics.bootstrap import bootstrap_intervals, per_image_stats
from nucstudy.postprocess import Thresholds
from nucstudy.study.experiment import (
    CONFIG_FILE,
    ENV_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    PER_IMAGE_FILE,
    TRAINED_ON_FILE,
    ExperimentConfig,
    now,
)


def summarise_metrics(scores: dict[str, Any], scheme: ClassScheme) -> dict[str, Any]:
    """The JSON-ready part of :func:`nucstudy.metrics.conic_metrics`: overall and per class."""
    overall = {
        key: float(scores[key]) for key in ("mpq+", "r2", "pq", "mpq_per_image", "aji", "dice")
    }
    per_class = {}
    for name in scheme.foreground_names:
        stats = {key: float(value) for key, value in scores["per_class"][name].items()}
        stats["r2"] = float(scores["r2_per_class"][name])
        per_class[name] = stats
    return {"overall": overall, "per_class": per_class}


def run_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """The path of a run folder's ``which`` (``best`` or ``last``) checkpoint."""
    return Path(run_dir) / "checkpoints" / f"{which}.pt"


def load_run_model(run_dir: str | os.PathLike, which: str = "best") -> TrainedModel:
    """The trained model of a run folder, from its ``which`` (``best`` or ``last``) checkpoint.

    Returns:
        The :class:`~nucstudy.engine.model_file.TrainedModel` (network on the CPU in eval mode).
    """
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
    return load_model(run_checkpoint(run_dir, which))


def check_held_out(run_dir: str | os.PathLike, data: ConicData) -> None:
    """Refuse (ValueError) to score a run on patches it was trained or validated on.

    Compares the patches' fingerprints (:meth:`ConicData.fingerprints`) with those the run
    recorded in ``trained_on.json``. A run folder without that file predates the record and
    is not checked.
    """
    path = Path(run_dir) / TRAINED_ON_FILE
    if not path.is_file():
        return
    seen = set(json.loads(path.read_text())["fingerprints"])
    overlap = sum(fingerprint in seen for fingerprint in data.fingerprints())
    if overlap:
        raise ValueError(
            f"{run_dir}: {overlap} of the {len(data)} patches to score were used to train or "
            "validate this run; score it on held-out data (its source's test split)"
        )


def result_files(
    run_dir: str | os.PathLike,
    route: str,
    run_route: str,
    tuned: bool = False,
    tta: bool = False,
) -> tuple[Path, Path]:
    """Where an evaluation with post-processing ``route`` is written in ``run_dir``.

    The run's own route (``run_route``, its config's ``postprocess``) with HoVer-Net's
    thresholds and no test-time augmentation writes ``metrics.json`` and ``per_image.csv``;
    another route writes ``metrics-<route>.json`` and ``per_image-<route>.csv`` beside them,
    tuned thresholds (:mod:`nucstudy.study.tuning`) add ``-tuned`` and flip test-time
    augmentation ``-tta`` (``metrics-tuned-tta.json`` with the run's own route), so the
    registry always reads the run's own.
    """
    run_dir = Path(run_dir)
    parts = ([] if route == run_route else [route]) + (["tuned"] if tuned else [])
    parts += ["tta"] if tta else []
    if not parts:
        return run_dir / METRICS_FILE, run_dir / PER_IMAGE_FILE
    variant = "-".join(parts)
    metrics, per_image = Path(METRICS_FILE), Path(PER_IMAGE_FILE)
    return (
        run_dir / f"{metrics.stem}-{variant}{metrics.suffix}",
        run_dir / f"{per_image.stem}-{variant}{per_image.suffix}",
    )


def check_scheme(
    trained: TrainedModel, data: ConicData, where: str | os.PathLike, instead: str
) -> None:
    """Raise a one-line ValueError naming ``where`` unless the model predicts as many classes
    as ``data``'s scheme has; ``instead`` says what to do then."""
    if trained.scheme.n_classes != data.scheme.n_classes:
        raise ValueError(
            f"{where}: the model predicts {trained.scheme.n_classes} classes (scheme "
            f"{trained.scheme.name!r}), the data's scheme {data.scheme.name!r} has "
            f"{data.scheme.n_classes}; {instead}"
        )


def evaluate(
    run_dir: str | os.PathLike,
    data: ConicData,
    which: str = "best",
    tta: bool = False,
    batch_size: int = 16,
    device: str = "auto",
    data_name: str | None = None,
    postprocess_workers: int = 0,
    route: str | None = None,
    progress: bool = False,
    thresholds: Thresholds | None = None,
) -> dict[str, Any]:
    """Score a trained run on ``data``; write ``metrics.json`` and ``per_image.csv`` into it
    (or their variant for another route, tuned thresholds or TTA: :func:`result_files`).

    ``per_image.csv`` holds the per-image, per-class statistics of
    :func:`nucstudy.metrics.bootstrap.per_image_stats`, from which bootstrap intervals are drawn.

    Args:
        run_dir: a run folder written by :class:`nucstudy.engine.trainer.Trainer`.
        data: the evaluation patches (same class scheme as the run's training data).
        which: ``"best"`` or ``"last"`` checkpoint.
        tta: flip test-time augmentation; written to ``metrics-tta.json`` (see
            :func:`result_files`), never over the run's own ``metrics.json``.
        batch_size: patches per forward pass.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        data_name: how to name the data in metrics.json (default: the run's data source).
        postprocess_workers: processes that post-process while the network runs the next
            batch (:func:`~nucstudy.engine.inference.predict_labels`). Default 0: on the CoNSeP
            test
            split (128 x 128 patches, 2 cores) post-processing is a fifth of the network's
            time and a pool costs more than it saves (``benchmarks/evaluate.py``); it pays
            where post-processing is slow beside the network (large images, a GPU, spare
            cores).
        route: post-processing route (default: the run's ``postprocess``); recorded as
            ``postprocess``. Another route than the run's is written to
            ``metrics-<route>.json`` (see :func:`result_files`).
        progress: a bar on a terminal, and one line with the scores when done.
        thresholds: HoVer-Net's tunable thresholds (:class:`~nucstudy.postprocess.Thresholds`;
            None: its own), e.g. the run's tuned ones
                (:func:`nucstudy.study.tuning.read_thresholds`);
            recorded as ``thresholds`` and written to ``metrics-tuned.json`` (see
            :func:`result_files`).

    Returns:
        The dict written to metrics.json: ``overall`` (mpq+, r2, pq, mpq_per_image, aji,
        dice), ``per_class`` ({name: tp, fp, fn, sum_iou, dq, sq, pq, r2}) and provenance.
    """
    trained = load_run_model(run_dir, which)
    config = ExperimentConfig.of_model(trained)
    check_held_out(run_dir, data)
    check_scheme(
        trained,
        data,
        run_dir,
        "evaluate it on data of its own scheme, or train a model on this data "
        "(nucstudy train --data ...) and evaluate that one",
    )
    device_t = resolve_device(device)
    model = trained.network.to(device_t)
    route = route or config.postprocess
    started = time.perf_counter()
    pred = predict_labels(
        model,
        np.asarray(data.images),
        data.mpp,
        batch_size,
        device_t,
        tta,
        config.mixed_precision,
        postprocess_workers=postprocess_workers,
        route=route,
        progress=progress,
        thresholds=thresholds,
    )
    seconds = time.perf_counter() - started
    scores = conic_metrics(pred, data.labels, data.scheme)
    stats = per_image_stats(pred, data.labels, data.scheme, data.patch_info["source"])
    result = {
        **summarise_metrics(scores, data.scheme),
        "data": data_name or config.data,
        "scheme": data.scheme.name,
        "patches": len(data),
        "mpp": data.mpp,
        "checkpoint": which,
        "epoch": trained.epoch,
        # optimiser steps and training patches seen by the checkpoint (None: not recorded)
        "step": trained.step,
        "images_seen": None if trained.step is None else trained.step * config.batch_size,
        "tta": tta,
        "postprocess": route,
        "postprocessing": method_for(model).describe_postprocess(route),
        "thresholds": "HoVer-Net's" if thresholds is None else dataclasses.asdict(thresholds),
        "device": str(device_t),
        "fast_path": choose_fast_path(device_t, config.mixed_precision).to_dict(),
        "predict_seconds": seconds,
        "evaluated": now(),
    }
    metrics_path, per_image_path = result_files(
        run_dir, route, config.postprocess, tuned=thresholds is not None, tta=tta
    )
    atomic_write_text(per_image_path, stats.to_csv(index=False))
    atomic_write_text(metrics_path, json.dumps(result, indent=2) + "\n")
    if progress:
        overall = result["overall"]
        print(
            f"evaluated {run_dir} on {len(data)} patches of {result['data']} in {seconds:.1f} s: "
            f"mPQ+ {overall['mpq+']:.4f}, R² {overall['r2']:.4f}, PQ {overall['pq']:.4f}",
            flush=True,
        )
    return result


def table1_row(
    run_dir: str | os.PathLike,
    method: str,
    n_boot: int = 2000,
    bootstrap_by: str = "source",
    route: str | None = None,
) -> dict[str, Any]:
    """One row of the study's Table I from a run folder: scores, intervals, provenance.

    Args:
        run_dir: the run folder (its parent's name is the data set's registry name).
        method: the method's name in the table (e.g. ``"HoVer-Net"``).
        n_boot: bootstrap resamples of the 95 % intervals.
        bootstrap_by: ``"source"`` (source images resampled with all their patches) or
            ``"patch"`` (see :func:`nucstudy.metrics.bootstrap.bootstrap_intervals`); a run scored
            before sources were recorded falls back to patches, and ``CI over`` says so.
        route: read the scores of this post-processing route (written by ``nucstudy
            evaluate --postprocess``); None: the run's own.

    Returns:
        A dict with ``data set``, ``method``, ``run`` and ``status``: ``"done"`` with
        mPQ+, R², PQ and their intervals, PQ per class (``PQ <class>``), the test data,
        the run's protocol and its training cost (``train minutes``, wall clock from
        env.json; ``cpu``, the CPU and precision it trained on, for a run on the CPU:
        :func:`~nucstudy.engine.run_folder.cpu_label`; ``train GMACs/patch``, multiply-adds
        of forward and backward on one training patch, NaN where not recorded),
        ``augmentation each epoch`` (False for a run trained before the loader fix:
        :func:`~nucstudy.engine.run_folder.augmentation_frozen`), or ``"pending: <reason>"``
        alone when the run has not finished.
    """
    folder = Path(run_dir)
    base = {"data set": folder.parent.name, "method": method, "run": folder.name}
    if not (folder / CONFIG_FILE).is_file():
        return {**base, "status": "pending: not trained yet"}
    config = ExperimentConfig.load(folder / CONFIG_FILE)
    metrics_path, per_image_path = result_files(
        folder, route or config.postprocess, config.postprocess
    )
    if not metrics_path.is_file():
        return {**base, "status": f"pending: not scored yet (no {metrics_path.name})"}
    metrics = json.loads(metrics_path.read_text())
    env = json.loads((folder / ENV_FILE).read_text()) if (folder / ENV_FILE).is_file() else {}
    stats = pd.read_csv(per_image_path)
    if "source" not in stats.columns:  # scored before sources were recorded
        bootstrap_by = "patch"
    ci = bootstrap_intervals(stats, n_boot=n_boot, by=bootstrap_by)
    return {
        **base,
        "status": "done",
        "mPQ+": metrics["overall"]["mpq+"],
        "mPQ+ 95% CI": f"[{ci.loc['mpq+', 'low']:.3f}, {ci.loc['mpq+', 'high']:.3f}]",
        "R²": metrics["overall"]["r2"],
        "R² 95% CI": f"[{ci.loc['r2', 'low']:.3f}, {ci.loc['r2', 'high']:.3f}]",
        "CI over": {"source": "sources", "patch": "patches"}[bootstrap_by],
        "PQ": metrics["overall"]["pq"],
        **{f"PQ {name}": values["pq"] for name, values in metrics["per_class"].items()},
        "test data": metrics["data"],
        "test patches": metrics["patches"],
        "test mpp": metrics.get("mpp"),
        "post-processing": metrics.get("postprocessing", metrics.get("postprocess", "native")),
        "preset": config.preset,
        "model": config.model_text,
        "epochs": epochs_trained(folder, config),
        "best epoch": metrics["epoch"],
        "seed": config.seed,
        "device": env.get("device_name"),
        "cpu": cpu_label(env) if env.get("device_name") == "cpu" else None,
        "threads": env.get("threads"),
        "bf16": trained_in_bf16(env),
        "train minutes": training_minutes(env),
        "train GMACs/patch": (env.get("train_multiply_adds_per_patch") or math.nan) / 1e9,
        "augmentation each epoch": not augmentation_frozen(env, config.workers, config.augment),
        "commit": (env.get("git_commit") or "")[:8],
    }


def epochs_trained(run_dir: Path, config: ExperimentConfig) -> int:
    """The epochs a run trained: the last epoch of its ``history.csv`` (a run given its length
    in optimiser steps runs as many epochs as those steps span, not ``config.epochs``), or
    ``config.epochs`` where no history is recorded."""
    history = run_dir / HISTORY_FILE
    if not history.is_file():
        return config.epochs
    epochs = pd.read_csv(history, usecols=["epoch"])["epoch"]
    return int(epochs.max()) if len(epochs) else config.epochs


def training_minutes(env: dict[str, Any]) -> float:
    """Wall-clock minutes a run trained, from its env.json: the sum over its segments (each
    to its end, or to its last checkpoint where it was stopped), or for an env.json older
    than segments its ``started`` to ``finished``; NaN where unknown."""
    if "segments" not in env:
        return minutes_between(env.get("started"), env.get("finished"))
    return sum(
        minutes_between(part.get("started"), part.get("finished") or part.get("last_checkpoint"))
        for part in env["segments"]
    )


def minutes_between(started: str | None, finished: str | None) -> float:
    """Minutes between two :func:`nucstudy.study.experiment.now` stamps (NaN if either is None)."""
    if not started or not finished:
        return math.nan
    fmt = "%Y-%m-%dT%H:%M:%S%z"
    delta = datetime.strptime(finished, fmt) - datetime.strptime(started, fmt)
    return delta.total_seconds() / 60


def train_and_evaluate(
    config: ExperimentConfig,
    test_split: str = "test",
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``config`` into its run folder, then score its best checkpoint on test data.

    The test data come from the same source as the training data: CoNSeP's official test
    split, a synthetic set drawn from another seed, or (CoNIC) the held-out source images
    (``test_fraction``) or the separate ``test_data`` folder.

    Returns:
        The metrics dict written to ``<run_dir>/metrics.json``.
    """
    from nucstudy.engine.trainer import Trainer

    Trainer(config, progress=progress).fit()
    return score_on_test(config, test_split, progress)


def score_on_test(
    config: ExperimentConfig, test_split: str = "test", progress: bool = True
) -> dict[str, Any]:
    """Score the trained run of ``config`` (its best checkpoint) on its source's
    ``test_split`` (see :func:`train_and_evaluate`); returns the metrics dict written to
    ``<run_dir>/metrics.json``."""
    return evaluate(
        config.run_dir,
        config.open_data(test_split),
        device=config.device,
        data_name=f"{config.data} ({test_split})",
        progress=progress,
    )
