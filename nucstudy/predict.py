"""Inference: network outputs -> post-processing -> CoNIC-layout predictions -> metrics.

``predict_labels`` runs a model over N patches batch by batch (optionally with flip
test-time augmentation), post-processes each patch with HoVer-Net's watershed at the data's
resolution and returns N x H x W x 2 predictions. ``evaluate`` does the same for a trained
run folder and writes ``metrics.json`` beside the run.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nucstudy.bootstrap import per_image_stats
from nucstudy.checkpoint import load_checkpoint
from nucstudy.classes import ClassScheme
from nucstudy.data.conic import ConicData
from nucstudy.device import choose_fast_path, resolve_device
from nucstudy.experiment import (
    CONFIG_FILE,
    METRICS_FILE,
    PER_IMAGE_FILE,
    TRAINED_ON_FILE,
    ExperimentConfig,
    now,
)
from nucstudy.io import atomic_write_text
from nucstudy.metrics import conic_metrics
from nucstudy.models import build_model
from nucstudy.models.blocks import SIZE_MULTIPLE
from nucstudy.postprocess import ROUTES, postprocess_batch, to_conic_labels

# Flips for test-time augmentation: (flip width, flip height).
_FLIPS = ((False, False), (True, False), (False, True), (True, True))


def images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """B x H x W x 3 uint8 RGB -> B x 3 x H x W float32 in [0, 1] on ``device``."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def predict_maps(
    model: nn.Module, images: torch.Tensor, tta: bool = False, mixed_precision: bool = True
) -> dict[str, torch.Tensor]:
    """Head outputs as probabilities for one batch, padded to a multiple of 32 and back.

    Args:
        model: a model from :func:`nucstudy.models.build_model`, in eval mode.
        images: B x 3 x H x W float in [0, 1].
        tta: average over the four horizontal/vertical flips (the horizontal HV channel
            changes sign under a horizontal flip, the vertical one under a vertical flip).
        mixed_precision: take the device's fast path (:func:`nucstudy.device.choose_fast_path`:
            bf16 autocast and channels_last where supported).

    Returns:
        dict with ``"np"`` B x H x W nucleus probability, ``"hv"`` B x 2 x H x W and
        ``"tp"`` B x K x H x W class probabilities, float32.
    """
    fast = choose_fast_path(images.device, mixed_precision)
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect")
    totals: dict[str, torch.Tensor] = {}
    flips = _FLIPS if tta else _FLIPS[:1]
    for flip_w, flip_h in flips:
        dims = [d for d, on in ((-1, flip_w), (-2, flip_h)) if on]
        x = (images.flip(dims) if dims else images).contiguous(memory_format=fast.memory_format)
        with fast.autocast():
            out = model(x)
        maps = {
            "np": out["np"].float().softmax(dim=1)[:, 1],
            "hv": out["hv"].float(),
            "tp": out["tp"].float().softmax(dim=1),
        }
        if dims:
            maps = {key: value.flip(dims) for key, value in maps.items()}
            sign = torch.tensor([-1.0 if flip_w else 1.0, -1.0 if flip_h else 1.0])
            maps["hv"] = maps["hv"] * sign.to(maps["hv"].device).view(1, 2, 1, 1)
        for key, value in maps.items():
            totals[key] = totals[key] + value if key in totals else value
    return {key: (value / len(flips))[..., :height, :width] for key, value in totals.items()}


def predict_labels(
    model: nn.Module,
    images: np.ndarray,
    mpp: float,
    batch_size: int = 16,
    device: torch.device | str = "auto",
    tta: bool = False,
    mixed_precision: bool = True,
    postprocess_workers: int = 0,
    route: str = "native",
    progress: bool = False,
) -> np.ndarray:
    """Predict nuclei for N patches in the CoNIC layout.

    Args:
        model: a model from :func:`nucstudy.models.build_model`.
        images: N x H x W x 3 uint8 RGB (may be memory-mapped).
        mpp: resolution of the images in um/px; selects the post-processing constants.
        batch_size: patches per forward pass.
        device: where to run the model (``"auto"``: CUDA when available).
        tta: flip test-time augmentation.
        mixed_precision: take the device's fast path (bf16 autocast, channels_last).
        postprocess_workers: processes that post-process one batch while the network runs
            the next (0: post-process in this process, after each batch).
        route: post-processing route, ``"native"`` or ``"resample"`` (see
            :func:`nucstudy.postprocess.hover_postprocess`).
        progress: show a tqdm bar (on a terminal only).

    Returns:
        N x H x W x 2 int32: instance ids 1..n per patch, and class ids.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be N x H x W x 3 uint8, got {images.shape} {images.dtype}")
    if route not in ROUTES:
        raise ValueError(f"route must be {' or '.join(map(repr, ROUTES))}, got {route!r}")
    if postprocess_workers < 0:
        raise ValueError(f"postprocess_workers must be >= 0, got {postprocess_workers}")
    device = resolve_device(device) if isinstance(device, str) else device
    was_training = model.training
    model.eval()
    model.to(memory_format=choose_fast_path(device, mixed_precision).memory_format)
    pool = ProcessPoolExecutor(postprocess_workers) if postprocess_workers > 0 else None
    chunks: list[np.ndarray | Future] = []
    starts = range(0, len(images), batch_size)
    bar = tqdm(starts, desc="predict", unit="batch", disable=not progress or None, leave=False)
    try:
        for start in bar:
            batch = images_to_tensor(images[start : start + batch_size], device)
            maps = predict_maps(model, batch, tta, mixed_precision)
            arrays = [maps[key].cpu().numpy() for key in ("np", "hv", "tp")]
            if pool is None:
                chunks.append(maps_to_labels(*arrays, mpp, route))
            else:
                chunks.append(pool.submit(maps_to_labels, *arrays, mpp, route))
        labels = [chunk.result() if isinstance(chunk, Future) else chunk for chunk in chunks]
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        model.train(was_training)
    if not labels:
        return np.zeros((0, *images.shape[1:3], 2), np.int32)
    return np.concatenate(labels)


def maps_to_labels(
    np_prob: np.ndarray, hv: np.ndarray, tp: np.ndarray, mpp: float, route: str = "native"
) -> np.ndarray:
    """Post-process one batch of head outputs (see :func:`predict_maps`) into CoNIC labels.

    Returns:
        B x H x W x 2 int32 (instance ids, class ids).
    """
    return to_conic_labels(postprocess_batch(np_prob, hv, tp, mpp, route))


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


def load_run_model(
    run_dir: str | os.PathLike, which: str = "best"
) -> tuple[nn.Module, ExperimentConfig, dict[str, Any]]:
    """The model of a run folder with its ``which`` (``best`` or ``last``) checkpoint's weights.

    Returns:
        (model on the CPU in eval mode, the run's config, the checkpoint's other entries).
    """
    run_dir = Path(run_dir)
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    config = ExperimentConfig.load(run_dir / CONFIG_FILE)
    state = load_checkpoint(run_dir / "checkpoints" / f"{which}.pt")
    model = build_model(config.model, n_types=int(state["n_types"]), **config.model_options)
    model.load_state_dict(state.pop("model"))
    model.eval()
    return model, config, state


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


def result_files(run_dir: str | os.PathLike, route: str, run_route: str) -> tuple[Path, Path]:
    """Where an evaluation with post-processing ``route`` is written in ``run_dir``.

    The run's own route (``run_route``, its config's ``postprocess``) writes
    ``metrics.json`` and ``per_image.csv``; another route writes ``metrics-<route>.json``
    and ``per_image-<route>.csv`` beside them, so the registry always reads the run's own.
    """
    run_dir = Path(run_dir)
    if route == run_route:
        return run_dir / METRICS_FILE, run_dir / PER_IMAGE_FILE
    metrics, per_image = Path(METRICS_FILE), Path(PER_IMAGE_FILE)
    return (
        run_dir / f"{metrics.stem}-{route}{metrics.suffix}",
        run_dir / f"{per_image.stem}-{route}{per_image.suffix}",
    )


def evaluate(
    run_dir: str | os.PathLike,
    data: ConicData,
    which: str = "best",
    tta: bool = False,
    batch_size: int = 16,
    device: str = "auto",
    data_name: str | None = None,
    postprocess_workers: int = 1,
    route: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score a trained run on ``data``; write ``metrics.json`` and ``per_image.csv`` into it.

    ``per_image.csv`` holds the per-image, per-class statistics of
    :func:`nucstudy.bootstrap.per_image_stats`, from which bootstrap intervals are drawn.

    Args:
        run_dir: a run folder written by :class:`nucstudy.train.Trainer`.
        data: the evaluation patches (same class scheme as the run's training data).
        which: ``"best"`` or ``"last"`` checkpoint.
        tta: flip test-time augmentation.
        batch_size: patches per forward pass.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        data_name: how to name the data in metrics.json (default: the run's data source).
        postprocess_workers: see :func:`predict_labels` (default: one process beside this one,
            so that post-processing overlaps the network).
        route: post-processing route (default: the run's ``postprocess``); recorded as
            ``postprocess``. Another route than the run's is written to
            ``metrics-<route>.json`` (see :func:`result_files`).
        progress: a bar on a terminal, and one line with the scores when done.

    Returns:
        The dict written to metrics.json: ``overall`` (mpq+, r2, pq, mpq_per_image, aji,
        dice), ``per_class`` ({name: tp, fp, fn, sum_iou, dq, sq, pq, r2}) and provenance.
    """
    model, config, state = load_run_model(run_dir, which)
    check_held_out(run_dir, data)
    if int(state["n_types"]) != data.scheme.n_classes:
        raise ValueError(
            f"{run_dir}: the model predicts {state['n_types']} classes, the data's scheme "
            f"{data.scheme.name!r} has {data.scheme.n_classes}"
        )
    device_t = resolve_device(device)
    model.to(device_t)
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
    )
    seconds = time.perf_counter() - started
    scores = conic_metrics(pred, data.labels, data.scheme)
    stats = per_image_stats(pred, data.labels, data.scheme)
    result = {
        **summarise_metrics(scores, data.scheme),
        "data": data_name or config.data,
        "scheme": data.scheme.name,
        "patches": len(data),
        "mpp": data.mpp,
        "checkpoint": which,
        "epoch": int(state["epoch"]),
        "tta": tta,
        "postprocess": route,
        "device": str(device_t),
        "fast_path": choose_fast_path(device_t, config.mixed_precision).to_dict(),
        "predict_seconds": seconds,
        "evaluated": now(),
    }
    metrics_path, per_image_path = result_files(run_dir, route, config.postprocess)
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
