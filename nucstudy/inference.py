"""Inference: a trained model file, network outputs and the nuclei they describe.

Pure inference, with no knowledge of run folders: :func:`load_model` restores a trained
model from its checkpoint file alone, :func:`predict_maps` runs the heads over a batch
(padding to the network's size multiple, optional flip test-time augmentation) and
:func:`predict_labels` post-processes N patches into the CoNIC layout. Scoring a run folder
lives in :mod:`nucstudy.evaluate`.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nucstudy.checkpoint import CheckpointError, load_checkpoint
from nucstudy.classes import ClassScheme, get_scheme
from nucstudy.device import choose_fast_path, resolve_device
from nucstudy.experiment import ExperimentConfig
from nucstudy.methods import method_for
from nucstudy.models import build_model
from nucstudy.models.blocks import SIZE_MULTIPLE
from nucstudy.postprocess import ROUTES


@dataclass
class TrainedModel:
    """A trained network with what it needs to be used anywhere.

    Attributes:
        network: the model, on the CPU, in eval mode.
        scheme: the class scheme of its TP head.
        mpp: the resolution it was trained at, in um/px.
        postprocess: its post-processing route (``"native"`` or ``"resample"``).
        config: the experiment it was trained by.
        epoch: the epoch of the checkpoint.
    """

    network: nn.Module
    scheme: ClassScheme
    mpp: float
    postprocess: str
    config: ExperimentConfig
    epoch: int


def load_model(path: str | os.PathLike) -> TrainedModel:
    """Restore a trained model from its checkpoint file alone, without its run folder.

    The checkpoint (written by :class:`nucstudy.train.Trainer`) carries the experiment's
    config (architecture and options, post-processing route), the class scheme and the
    training resolution. It is loaded weights-only; its SHA-256 sidecar is checked when it
    is there, and a checkpoint without one loads with a warning.

    Raises:
        nucstudy.checkpoint.CheckpointError: missing, modified or unsafe file, or one that
            lacks what a trained model needs.
    """
    path = Path(path)
    state = load_checkpoint(path)
    required = ("model", "config", "scheme", "mpp", "n_types", "epoch")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a trained-model checkpoint (no {', '.join(missing)})")
    config = ExperimentConfig.from_dict(json.loads(state["config"]))
    network = build_model(config.model, n_types=int(state["n_types"]), **config.model_options)
    network.load_state_dict(state["model"])
    network.eval()
    return TrainedModel(
        network=network,
        scheme=get_scheme(state["scheme"]),
        mpp=float(state["mpp"]),
        postprocess=config.postprocess,
        config=config,
        epoch=int(state["epoch"]),
    )


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
        # reflect where the image is large enough to mirror, else repeat the edge pixels
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
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

    The network's method (:func:`nucstudy.methods.method_for`) turns its outputs into
    nuclei: HoVer-Net's post-processing of NP/HV/TP maps, or Mask R-CNN's pasted masks.

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
        route: post-processing route of NP/HV/TP maps, ``"native"`` or ``"resample"`` (see
            :func:`nucstudy.postprocess.hover_postprocess`; no effect on Mask R-CNN).
        progress: show a tqdm bar (on a terminal only).

    The model is put in eval mode (its mode is restored afterwards) and in the fast path's
    memory format (channels_last where that is taken), which it keeps.

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
    method = method_for(model)
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
            outputs = method.predict(model, batch, tta, mixed_precision)
            if pool is None:
                chunks.append(method.to_labels(outputs, mpp, route))
            else:
                chunks.append(pool.submit(method.to_labels, outputs, mpp, route))
        labels = [chunk.result() if isinstance(chunk, Future) else chunk for chunk in chunks]
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        model.train(was_training)
    if not labels:
        return np.zeros((0, *images.shape[1:3], 2), np.int32)
    return np.concatenate(labels)
