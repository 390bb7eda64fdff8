"""One image of any size and resolution, segmented tile by tile.

:func:`segment_image` brings the image to the model's resolution, cuts it into overlapping
tiles (:mod:`nucstudy.segment.tiling`), runs the network on batches of tiles
(:func:`nucstudy.engine.inference.predict_maps`), post-processes each tile (optionally in a
process pool while the network runs the next batch), merges the seams so that no nucleus is
cut or doubled, and brings the nuclei back to the image's own resolution.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor

import cv2
import numpy as np
import torch
from tqdm import tqdm

from nucstudy.data.stain import reinhard_normalise, stain_reference
from nucstudy.data.tiles import rescale_image
from nucstudy.engine.device import choose_fast_path, resolve_device
from nucstudy.engine.inference import images_to_tensor
from nucstudy.engine.methods import method_for
from nucstudy.engine.model_file import TrainedModel
from nucstudy.models import SIZE_MULTIPLE
from nucstudy.postprocess import Nuclei, Thresholds
from nucstudy.segment.tiling import SeamlessMerge, Tile, batches, tile_grid

#: Default tile side and overlap of :func:`segment_image`, in px at the model's resolution
#: (chosen in ``benchmarks/segment.py``). Large tiles matter beyond the overlap: HoVer-Net's
#: post-processing min-max normalises its Sobel responses over whatever it is given, so the
#: smaller the tile, the more its markers differ from the whole image's.
TILE_SIZE, OVERLAP = 1024, 128
#: How far an image's resolution may be from the model's (either way) before it is refused.
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
    tiles (:func:`nucstudy.segment.tiling.tile_grid`), each tile is run through the network and
    post-processed, and the tiles' nuclei are merged without seams
    (:class:`nucstudy.segment.tiling.SeamlessMerge`); the instance map is then mapped back to the
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
            first (Reinhard, :mod:`nucstudy.data.stain`): the image's statistics are measured once
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
