"""Inference: a trained model file, network outputs and the nuclei they describe.

Pure inference, with no knowledge of run folders: :func:`load_model` restores a trained
model from its checkpoint file alone, :func:`predict_maps` runs the heads over a batch
(padding to the network's size multiple, optional flip test-time augmentation),
:func:`predict_labels` post-processes N patches into the CoNIC layout, and
:func:`segment_image` finds the nuclei of one image of any size and resolution, tile by tile.
Scoring a run folder lives in :mod:`nucstudy.evaluate`.
"""

from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nucstudy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nucstudy.classes import ClassScheme, get_scheme
from nucstudy.data.tiles import rescale_image
from nucstudy.device import choose_fast_path, resolve_device
from nucstudy.experiment import ExperimentConfig
from nucstudy.methods import method_for
from nucstudy.models import build_model
from nucstudy.models.blocks import SIZE_MULTIPLE
from nucstudy.postprocess import ROUTES, Nuclei, Thresholds
from nucstudy.stain import StainReference, reinhard_normalise, stain_reference
from nucstudy.tiling import SeamlessMerge, Tile, batches, tile_grid


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
        stain: the colour statistics of its training images (stored by
            :func:`export_model`), the target of stain normalisation; None if not stored.
    """

    network: nn.Module
    scheme: ClassScheme
    mpp: float
    postprocess: str
    config: ExperimentConfig
    epoch: int
    stain: StainReference | None = None
    step: int | None = None


#: What a trained-model checkpoint must hold (the rest of a training checkpoint, optimiser
#: and generator states, is only for resuming).
MODEL_KEYS = ("model", "config", "scheme", "mpp", "n_types", "epoch")
#: What a trained-model checkpoint may hold beside them: the optimiser step it was saved at
#: (checkpoints since steps were counted).
OPTIONAL_MODEL_KEYS = ("step",)


def _trained_model_state(path: str | os.PathLike) -> dict:
    """A checkpoint's contents, checked to hold what a trained model needs."""
    state = load_checkpoint(path)
    missing = [key for key in MODEL_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a trained-model checkpoint (no {', '.join(missing)})")
    return state


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
    state = _trained_model_state(path)
    config = ExperimentConfig.from_dict(json.loads(state["config"]))
    network = build_model(config.model, n_types=int(state["n_types"]), **config.model_options)
    network.load_state_dict(state["model"])
    network.eval()
    stain = None
    if "stain_mean" in state and "stain_std" in state:
        stain = StainReference(tuple(state["stain_mean"]), tuple(state["stain_std"]))
    return TrainedModel(
        network=network,
        scheme=get_scheme(state["scheme"]),
        mpp=float(state["mpp"]),
        postprocess=config.postprocess,
        config=config,
        epoch=int(state["epoch"]),
        stain=stain,
        step=int(state["step"]) if "step" in state else None,
    )


def export_model(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    half: bool = True,
    stain: StainReference | None = None,
) -> Path:
    """Write a small checkpoint for inference only: weights and what :func:`load_model` needs.

    Args:
        checkpoint: a training checkpoint (``checkpoints/best.pt`` of a run).
        out: the file to write (with its ``.sha256`` digest beside it).
        half: store floating-point weights as float16 (half the size; they are read back
            into float32, which changes the outputs by far less than the network's errors).
        stain: the colour statistics of the model's training images, stored for stain
            normalisation at inference (``segment_image(..., stain_normalise=True)``).

    Raises:
        nucstudy.checkpoint.CheckpointError: the checkpoint is missing, unsafe or incomplete.
    """
    state = _trained_model_state(checkpoint)
    slim = {key: state[key] for key in MODEL_KEYS + OPTIONAL_MODEL_KEYS if key in state}
    if half:
        slim["model"] = {
            name: value.half() if value.is_floating_point() else value
            for name, value in state["model"].items()
        }
    if stain is not None:
        slim["stain_mean"], slim["stain_std"] = list(stain.mean), list(stain.std)
    return save_checkpoint(out, slim)


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
    thresholds: Thresholds | None = None,
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
        thresholds: HoVer-Net's tunable thresholds (:class:`~nucstudy.postprocess.Thresholds`;
            None: its own), e.g. a run's tuned ones (:func:`nucstudy.tuning.read_thresholds`).

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
                chunks.append(method.to_labels(outputs, mpp, route, thresholds))
            else:
                chunks.append(pool.submit(method.to_labels, outputs, mpp, route, thresholds))
        labels = [chunk.result() if isinstance(chunk, Future) else chunk for chunk in chunks]
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        model.train(was_training)
    if not labels:
        return np.zeros((0, *images.shape[1:3], 2), np.int32)
    return np.concatenate(labels)


#: Default tile side and overlap of :func:`segment_image`, in px at the model's resolution
#: (chosen in ``benchmarks/segment.py``). Large tiles matter beyond the overlap: HoVer-Net's
#: post-processing min-max normalises its Sobel responses over whatever it is given, so the
#: smaller the tile, the more its markers differ from the whole image's.
TILE_SIZE, OVERLAP = 1024, 128

#: The furthest an image's resolution may be from the model's (a factor either way).
MAX_RESOLUTION_RATIO = 8.0


def check_image(image: np.ndarray) -> None:
    """Raise a one-line ValueError unless ``image`` is H x W x 3 uint8 RGB."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}")


def check_resolution(mpp: float, model_mpp: float) -> None:
    """Raise a one-line ValueError unless ``mpp`` (um/px) is a resolution the model can use."""
    if not (isinstance(mpp, int | float) and np.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be the image's resolution in um/px (> 0), got {mpp!r}")
    ratio = mpp / model_mpp
    if not 1 / MAX_RESOLUTION_RATIO <= ratio <= MAX_RESOLUTION_RATIO:
        raise ValueError(
            f"mpp {mpp:g} um/px is more than {MAX_RESOLUTION_RATIO:g}x away from the model's "
            f"{model_mpp:g} um/px; check the image's resolution (40x is about 0.25, 20x 0.5)"
        )


def segment_image(
    model: TrainedModel,
    image: np.ndarray,
    mpp: float,
    tile_size: int = TILE_SIZE,
    overlap: int = OVERLAP,
    batch_size: int = 2,
    device: torch.device | str = "auto",
    tta: bool = False,
    mixed_precision: bool = True,
    postprocess_workers: int = 0,
    progress: bool = False,
    stain_normalise: bool = False,
    thresholds: Thresholds | None = None,
) -> Nuclei:
    """The nuclei of an image of any size, at the image's own size.

    The image is resampled from ``mpp`` to the model's resolution, cut into overlapping
    tiles (:func:`nucstudy.tiling.tile_grid`), each tile is run through the network and
    post-processed, and the tiles' nuclei are merged without seams
    (:class:`nucstudy.tiling.SeamlessMerge`); the instance map is then mapped back to the
    image's pixel grid (nearest neighbour). Only a batch of tiles' network outputs (and, with
    workers, a batch per worker) is held at a time.

    Args:
        model: from :func:`load_model`.
        image: H x W x 3 uint8 RGB.
        mpp: the image's resolution in um/px (required: nuclei sizes depend on it).
        tile_size: tile side in px at the model's resolution, a multiple of 32.
        overlap: px shared by neighbouring tiles (at least twice a nucleus's radius, so
            that a nucleus whose centre is in a tile's core lies whole inside the tile).
        batch_size: tiles per forward pass.
        device: where the network runs (``"auto"``: CUDA when available).
        tta: flip test-time augmentation.
        mixed_precision: take the device's fast path (bf16 autocast, channels_last).
        postprocess_workers: processes that post-process tiles while the network runs the
            next batch (0: post-process here, after each batch).
        progress: show a tqdm bar over tiles (on a terminal only).
        stain_normalise: bring the image's colours to those of the model's training images
            first (Reinhard, :mod:`nucstudy.stain`): the image's statistics are measured once
            and every tile is normalised with them, so no seam appears. Needs a model file
            that stores its training statistics (:func:`export_model`).
        thresholds: HoVer-Net's tunable thresholds (:class:`~nucstudy.postprocess.Thresholds`;
            None: its own).

    Returns:
        :class:`~nucstudy.postprocess.Nuclei` at H x W, nuclei numbered in tile order.

    Raises:
        ValueError: not an RGB uint8 image, an unusable ``mpp``, bad tiling options, or
            stain normalisation asked of a model without training statistics.
    """
    check_image(image)
    check_resolution(mpp, model.mpp)
    if tile_size < SIZE_MULTIPLE or tile_size % SIZE_MULTIPLE:
        raise ValueError(f"tile_size must be a multiple of {SIZE_MULTIPLE} px, got {tile_size}")
    if batch_size < 1 or postprocess_workers < 0:
        raise ValueError("batch_size must be >= 1 and postprocess_workers >= 0")
    if stain_normalise and model.stain is None:
        raise ValueError(
            "this model file stores no training colour statistics; write one that does "
            "with `nucstudy export RUN --out FILE`, or leave stain normalisation off"
        )
    height, width = image.shape[:2]
    small = image if np.isclose(mpp, model.mpp) else rescale_image(image, mpp / model.mpp)
    # the image's own colour statistics, from about a million of its pixels at most
    stride = max(1, int(np.sqrt(small.shape[0] * small.shape[1] / 1e6)))
    source = stain_reference(small[::stride, ::stride]) if stain_normalise else None
    tiles = tile_grid(*small.shape[:2], tile_size, overlap)
    merge = SeamlessMerge(*small.shape[:2])
    device = resolve_device(device) if isinstance(device, str) else device
    network, method = model.network.eval(), method_for(model.network)
    network.to(device, memory_format=choose_fast_path(device, mixed_precision).memory_format)
    pool = ProcessPoolExecutor(postprocess_workers) if postprocess_workers > 0 else None
    pending: deque[tuple[list[Tile], Future | list[Nuclei]]] = deque()
    bar = tqdm(total=len(tiles), desc="tiles", unit="tile", disable=not progress or None)

    def merge_oldest() -> None:
        group, result = pending.popleft()
        found = result.result() if isinstance(result, Future) else result
        for tile, nuclei in zip(group, found, strict=True):
            merge.add(tile, nuclei)
        bar.update(len(group))

    try:
        for group in batches(tiles, batch_size):
            crops = [small[tile.window] for tile in group]
            if source is not None:
                crops = [reinhard_normalise(crop, model.stain, source) for crop in crops]
            pixels = images_to_tensor(np.stack(crops), device)
            outputs = method.predict(network, pixels, tta, mixed_precision)
            if pool is None:
                found = method.to_nuclei(outputs, model.mpp, model.postprocess, thresholds)
                pending.append((group, found))
            else:
                job = pool.submit(
                    method.to_nuclei, outputs, model.mpp, model.postprocess, thresholds
                )
                pending.append((group, job))
            while len(pending) > postprocess_workers:
                merge_oldest()
        while pending:
            merge_oldest()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    nuclei = merge.nuclei()
    return nuclei if small.shape[:2] == (height, width) else resize_nuclei(nuclei, height, width)


def resize_nuclei(nuclei: Nuclei, height: int, width: int) -> Nuclei:
    """Nuclei mapped onto a ``height`` x ``width`` grid by nearest neighbour; nuclei that
    vanish (smaller than a pixel of the new grid) are dropped and the rest renumbered."""
    inst_map = cv2.resize(nuclei.inst_map, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    present = np.bincount(inst_map.ravel(), minlength=len(nuclei) + 1) > 0
    present[0] = False
    new_id = (np.cumsum(present) * present).astype(np.int32)
    kept = present[1:]
    return Nuclei.from_instances(new_id[inst_map], nuclei.class_id[kept], nuclei.class_prob[kept])
