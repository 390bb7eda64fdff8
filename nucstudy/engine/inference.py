"""Inference on patches: network outputs -> nuclei in the CoNIC layout.

Pure inference, with no knowledge of run folders: :func:`predict_labels` runs a network over
N patches (:func:`nucstudy.engine.forward.predict_maps`) and turns its outputs into nuclei by
its method (HoVer-Net's post-processing, or Mask R-CNN's pasted masks), optionally
post-processing one batch in a process pool while the network runs the next. A model file is
:mod:`nucstudy.engine.model_file`'s; one image of any size is :mod:`nucstudy.segment.image`'s;
scoring a run folder is :mod:`nucstudy.study.evaluate`'s.
"""

from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nucstudy.engine.device import choose_fast_path, resolve_device
from nucstudy.engine.forward import images_to_tensor, predict_maps  # noqa: F401 (names of this module too)
from nucstudy.engine.methods import method_for
from nucstudy.postprocess import ROUTES, Thresholds


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

    The network's method (:func:`nucstudy.engine.methods.method_for`) turns its outputs into
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
            None: its own), e.g. a run's tuned ones
                (:func:`nucstudy.study.tuning.read_thresholds`).

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


#: The furthest an image's resolution may be from the model's (a factor either way).
