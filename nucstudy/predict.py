"""Inference: network outputs -> post-processing -> CoNIC-layout predictions -> metrics.

``predict_labels`` runs a model over N patches batch by batch (optionally with flip
test-time augmentation), post-processes each patch with HoVer-Net's watershed at the data's
resolution and returns N x H x W x 2 predictions. ``evaluate`` does the same for a trained
run folder and writes ``metrics.json`` beside the run.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
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
from nucstudy.experiment import CONFIG_FILE, METRICS_FILE, PER_IMAGE_FILE, ExperimentConfig, now
from nucstudy.io import atomic_write_text
from nucstudy.metrics import conic_metrics
from nucstudy.models import build_model
from nucstudy.models.blocks import SIZE_MULTIPLE
from nucstudy.postprocess import postprocess_batch, to_conic_labels

# Flips for test-time augmentation: (flip width, flip height).
_FLIPS = ((False, False), (True, False), (False, True), (True, True))


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names are passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return torch.device(device)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``; a no-op context otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


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
        mixed_precision: bf16 autocast on CUDA.

    Returns:
        dict with ``"np"`` B x H x W nucleus probability, ``"hv"`` B x 2 x H x W and
        ``"tp"`` B x K x H x W class probabilities, float32.
    """
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect")
    totals: dict[str, torch.Tensor] = {}
    flips = _FLIPS if tta else _FLIPS[:1]
    for flip_w, flip_h in flips:
        dims = [d for d, on in ((-1, flip_w), (-2, flip_h)) if on]
        x = images.flip(dims) if dims else images
        with autocast(images.device, mixed_precision):
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
    workers: int = 1,
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
        mixed_precision: bf16 autocast on CUDA.
        workers: post-processing processes (1: in this process).
        progress: show a tqdm bar.

    Returns:
        N x H x W x 2 int32: instance ids 1..n per patch, and class ids.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be N x H x W x 3 uint8, got {images.shape} {images.dtype}")
    device = resolve_device(device) if isinstance(device, str) else device
    was_training = model.training
    model.eval()
    chunks = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="predict", unit="batch", disable=not progress, leave=False):
        batch = images_to_tensor(images[start : start + batch_size], device)
        maps = {
            k: v.cpu().numpy() for k, v in predict_maps(model, batch, tta, mixed_precision).items()
        }
        nuclei = postprocess_batch(maps["np"], maps["hv"], maps["tp"], mpp, workers=workers)
        chunks.append(to_conic_labels(nuclei))
    model.train(was_training)
    if not chunks:
        return np.zeros((0, *images.shape[1:3], 2), np.int32)
    return np.concatenate(chunks)


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


def evaluate(
    run_dir: str | os.PathLike,
    data: ConicData,
    which: str = "best",
    tta: bool = False,
    batch_size: int = 16,
    device: str = "auto",
    data_name: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score a trained run on ``data``; write ``metrics.json`` and ``per_image.csv`` beside it.

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
        progress: show a progress bar.

    Returns:
        The dict written to metrics.json: ``overall`` (mpq+, r2, pq, mpq_per_image, aji,
        dice), ``per_class`` ({name: tp, fp, fn, sum_iou, dq, sq, pq, r2}) and provenance.
    """
    model, config, state = load_run_model(run_dir, which)
    if int(state["n_types"]) != data.scheme.n_classes:
        raise ValueError(
            f"{run_dir}: the model predicts {state['n_types']} classes, the data's scheme "
            f"{data.scheme.name!r} has {data.scheme.n_classes}"
        )
    device_t = resolve_device(device)
    model.to(device_t)
    pred = predict_labels(
        model,
        np.asarray(data.images),
        data.mpp,
        batch_size,
        device_t,
        tta,
        config.mixed_precision,
        progress=progress,
    )
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
        "device": str(device_t),
        "evaluated": now(),
    }
    atomic_write_text(Path(run_dir) / PER_IMAGE_FILE, stats.to_csv(index=False))
    atomic_write_text(Path(run_dir) / METRICS_FILE, json.dumps(result, indent=2) + "\n")
    return result
