"""What a model file says it scores, and the check that it still does.

A committed model file ``<name>.pt`` carries beside it ``<name>.scores.json``: its scores
(binary PQ, mPQ+, R², AJI) on a fixed subset of a test split, computed from the file itself
(after export, float16 weights and all) with HoVer-Net's post-processing at its own route.
A test recomputes them from the file, so an export, a post-processing change or a library
upgrade can never again change a committed model's scores without a failing test.

The subset is every ``stride``-th patch of the split, in the split's order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nucstudy.common.io import atomic_write_text
from nucstudy.data.conic import ConicData
from nucstudy.data.sources import open_source

if TYPE_CHECKING:
    from nucstudy.engine.model_file import TrainedModel

#: Every 7th patch: 32 of CoNSeP's 224 test patches, seconds on a CPU.
SUBSET_STRIDE = 7
#: The scores a model file states (keys of :func:`nucstudy.metrics.conic_metrics`).
STATED_METRICS = ("pq", "mpq+", "r2", "aji")


def stated_scores_path(model_path: str | os.PathLike) -> Path:
    """``<name>.scores.json`` beside ``<name>.pt``."""
    path = Path(model_path)
    return path.with_name(path.stem + ".scores.json")


def scoring_subset(data: ConicData, stride: int = SUBSET_STRIDE) -> ConicData:
    """Every ``stride``-th patch of ``data``, starting with the first."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return data.subset(np.arange(0, len(data), stride))


def score_model_file(model_path: str | os.PathLike, data: ConicData) -> dict[str, float]:
    """The file's scores on ``data`` (every patch), on the CPU in float32.

    Returns:
        ``{"pq", "mpq+", "r2", "aji"}`` as floats.
    """
    from nucstudy.engine.model_file import load_model

    return _scores(load_model(model_path), data, model_path)


def _scores(trained: TrainedModel, data: ConicData, where: str | os.PathLike) -> dict[str, float]:
    """:func:`score_model_file` of a model already loaded from the file ``where``."""
    from nucstudy.engine.inference import predict_labels
    from nucstudy.metrics import conic_metrics
    from nucstudy.study.evaluate import check_scheme

    check_scheme(
        trained,
        data,
        where,
        "score it on data of its own scheme, or state the scores of a model trained on this data",
    )
    pred = predict_labels(
        trained.network,
        np.asarray(data.images),
        data.mpp,
        device="cpu",
        mixed_precision=False,
        route=trained.postprocess,
    )
    scores = conic_metrics(pred, data.labels, data.scheme)
    return {key: float(scores[key]) for key in STATED_METRICS}


def write_stated_scores(
    model_path: str | os.PathLike, data_spec: str, stride: int = SUBSET_STRIDE
) -> Path:
    """Score the file on the subset of ``data_spec``'s test split and write its
    ``.scores.json`` (data spec, split, stride, patches, scores), atomically."""
    from nucstudy.engine.model_file import load_model

    trained = load_model(model_path)
    resample = trained.mpp != open_source(data_spec, "test").mpp
    data = scoring_subset(open_source(data_spec, "test", resample=resample), stride)
    record: dict[str, Any] = {
        "data": data_spec,
        "split": "test",
        "resample": resample,
        "stride": stride,
        "patches": len(data),
        "scores": _scores(trained, data, model_path),
    }
    path = stated_scores_path(model_path)
    return atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def recompute_stated_scores(
    model_path: str | os.PathLike, data_root: str | os.PathLike | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """(stated, recomputed) scores of a model file, from its ``.scores.json``.

    Args:
        model_path: the model file.
        data_root: read the data from this folder instead of the one the record names
            (the same data set moved elsewhere).
    """
    record = json.loads(stated_scores_path(model_path).read_text())
    spec = record["data"]
    if data_root is not None:
        spec = f"{spec.partition(':')[0]}:{data_root}"
    data = scoring_subset(
        open_source(spec, record["split"], resample=record["resample"]), record["stride"]
    )
    if len(data) != record["patches"]:
        raise ValueError(f"{spec}: {len(data)} subset patches, the record has {record['patches']}")
    return record["scores"], score_model_file(model_path, data)
