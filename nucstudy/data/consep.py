"""CoNSeP-256: real CoNSeP patches (40x, 256 x 256) read into the CoNIC layout.

The folder ``<src>/<split>/`` holds ``images/<name>.jpg`` (RGB) and ``labels.npz`` with
``labels`` (N x 256 x 256 x 2 uint16, [instance, class]), ``names`` (image names, same
order) and ``class_names`` (HoVer-Net's merged CoNSeP classes). Patches of one source tile
share the name prefix ``<split>_<tile>``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from nucstudy.data.classes import CONSEP
from nucstudy.data.conic import ConicData
from nucstudy.data.labels import validate_labels

#: Resolution of CoNSeP, microns per pixel (40x).
CONSEP_MPP = 0.25
SPLITS = ("train", "test")
_TILE = re.compile(r"^(.*)_[^_]+$")


def import_consep256(
    src: str | os.PathLike, split: str = "train", resample: bool = False
) -> ConicData:
    """Read one split of CoNSeP-256 into a :class:`ConicData` with the CONSEP scheme.

    Args:
        src: the CoNSeP-256 folder (holding ``train/`` and ``test/``).
        split: ``"train"`` or ``"test"``.
        resample: halve the resolution to CoNIC's 0.5 um/px, giving 128 x 128 patches:
            images are area-averaged over 2 x 2 blocks, labels take each block's majority
            (:func:`halve_labels`), so both stay centred on the same block; ids are kept.

    Returns:
        ConicData with images N x S x S x 3 uint8 RGB, labels N x S x S x 2 int32 (S = 256,
        or 128 when resampled), ``mpp`` 0.25 (0.5 when resampled), and ``patch_info`` with
        columns ``name`` and ``source`` (the tile, e.g. ``train_7``).

    Raises:
        FileNotFoundError: the folder, ``labels.npz`` or an image is missing.
        ValueError: a bad split name, or malformed labels, class names or images.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = Path(src) / split
    labels_path = folder / "labels.npz"
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path}: file not found (is {src} a CoNSeP-256 folder?)")
    with np.load(labels_path, allow_pickle=False) as archive:
        missing = {"labels", "names", "class_names"} - set(archive.files)
        if missing:
            raise ValueError(f"{labels_path}: missing array(s) {', '.join(sorted(missing))}")
        labels, names = archive["labels"], archive["names"].astype(str)
        class_names = tuple(archive["class_names"].astype(str))
    if class_names != CONSEP.names:
        raise ValueError(
            f"{labels_path}: class_names {class_names} differ from the CONSEP scheme's "
            f"{CONSEP.names}"
        )
    if len(names) != len(labels):
        raise ValueError(f"{labels_path}: {len(names)} names for {len(labels)} label maps")
    validate_labels(labels, CONSEP, where=str(labels_path))
    images = np.stack(
        [_read_rgb(folder / "images" / f"{name}.jpg", labels.shape[1:3]) for name in names]
    )
    labels = labels.astype(np.int32)
    mpp = CONSEP_MPP
    if resample:
        images, labels, mpp = _halve(images), halve_labels(labels), CONSEP_MPP * 2
    patch_info = pd.DataFrame({"name": names, "source": [tile_of(name) for name in names]})
    return ConicData(images, labels, CONSEP, mpp, patch_info)


def tile_of(name: str) -> str:
    """The source tile of a CoNSeP-256 patch name: ``"train_7_012"`` -> ``"train_7"``."""
    match = _TILE.match(name)
    if match is None:
        raise ValueError(f"patch name {name!r} does not read <split>_<tile>_<k>")
    return match.group(1)


def _read_rgb(path: Path, shape: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    if image.shape[:2] != tuple(shape):
        raise ValueError(
            f"{path}: {image.shape[1]} x {image.shape[0]} px, labels are {shape[1]} x {shape[0]}"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _halve(images: np.ndarray) -> np.ndarray:
    """Average 2 x 2 blocks: N x H x W x 3 uint8 -> N x H/2 x W/2 x 3 uint8 (rounded)."""
    n, h, w, c = images.shape
    blocks = images.reshape(n, h // 2, 2, w // 2, 2, c).astype(np.float32)
    return np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)


def halve_labels(labels: np.ndarray) -> np.ndarray:
    """Halve CoNIC-layout labels by 2 x 2 blocks, aligned with an area-averaged image.

    Each output pixel takes the instance that covers most of its block (a tie between a
    nucleus and background goes to the nucleus, so that thin nuclei survive), with that
    instance's class. A nucleus that wins no block at all gets the block it covers most,
    unless that block's winner would vanish in its place. Taking the top-left pixel of each
    block instead shifts every nucleus by a quarter of an output pixel along both axes.

    Args:
        labels: N x H x W x 2 integer (H, W even), [instance, class].

    Returns:
        N x H/2 x W/2 x 2 int32.
    """
    n, h, w, _ = labels.shape
    if h % 2 or w % 2:
        raise ValueError(f"labels must have an even height and width to halve, got {h} x {w}")
    blocks = labels.reshape(n, h // 2, 2, w // 2, 2, 2).transpose(0, 1, 3, 5, 2, 4)
    blocks = blocks.reshape(n, h // 2, w // 2, 2, 4)  # [..., channel, pixel of the block]
    ids = blocks[..., 0, :]
    votes = (ids[..., :, None] == ids[..., None, :]).sum(axis=-1) * 2 + (ids > 0)
    pick = votes.argmax(axis=-1)[..., None, None]
    halved = np.take_along_axis(blocks, np.broadcast_to(pick, (*pick.shape[:3], 2, 1)), -1)
    halved = np.ascontiguousarray(halved[..., 0]).astype(np.int32)
    for k in range(n):
        _rescue_vanished(labels[k], ids[k], halved[k])
    return halved


def _rescue_vanished(original: np.ndarray, block_ids: np.ndarray, halved: np.ndarray) -> None:
    """Give each nucleus of ``original`` missing from ``halved`` its best-covered block."""
    missing = np.setdiff1d(np.unique(original[..., 0]), np.unique(halved[..., 0]))
    areas = dict(zip(*np.unique(halved[..., 0], return_counts=True), strict=True))
    for nucleus in missing[missing > 0]:
        cover = (block_ids == nucleus).sum(axis=-1)
        row, col = np.unravel_index(cover.argmax(), cover.shape)
        owner = halved[row, col, 0]
        if owner == 0 or areas[owner] > 1:
            areas[owner] -= 1
            areas[nucleus] = 1
            class_id = original[..., 1][original[..., 0] == nucleus][0]
            halved[row, col] = (nucleus, class_id)


#: Patches ``000`` to ``008`` of each CoNSeP-256 tile are its top-left 3 x 3 grid of 256 px
#: squares without overlap, row by row (their shared edges continue each other); the other
#: seven patches are further crops. :func:`tile_region` puts the grid back together.
GRID_PATCHES = 3
#: Grey of an empty slide, for the cells of a mosaic without a region.
_GLASS = 242


def tile_region(data: ConicData, tile: str) -> tuple[np.ndarray, np.ndarray]:
    """The top-left 768 x 768 px (at 40x) of a CoNSeP tile, rebuilt from its patches.

    Args:
        data: a CoNSeP-256 split at 40x (:func:`import_consep256` without ``resample``).
        tile: the tile's name, e.g. ``"test_1"`` (see :func:`tile_of`).

    Returns:
        (image, labels): 768 x 768 x 3 uint8 RGB and 768 x 768 x 2 int32 [instance, class].
        Instance ids are made unique across patches; a nucleus cut by a patch edge in the
        data stays two nuclei.

    Raises:
        ValueError: data not at 40x, or the tile lacks one of patches 000 to 008.
    """
    if not np.isclose(data.mpp, CONSEP_MPP):
        raise ValueError(f"tile_region needs CoNSeP at {CONSEP_MPP} um/px, got {data.mpp}")
    index = {name: k for k, name in enumerate(data.patch_info["name"])}
    wanted = [f"{tile}_{k:03d}" for k in range(GRID_PATCHES**2)]
    missing = [name for name in wanted if name not in index]
    if missing:
        raise ValueError(f"tile {tile!r} lacks patch(es) {', '.join(missing)}")
    pieces = [(data.images[index[name]], np.asarray(data.labels[index[name]])) for name in wanted]
    return _lay_out(pieces, GRID_PATCHES)


def region_mosaic(
    data: ConicData, tiles: list[str], columns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Regions of several tiles (:func:`tile_region`) laid out in a grid, row by row: a test
    image larger than any CoNSeP tile, with instance ids unique across it.

    Returns:
        (image, labels): (rows x 768) x (columns x 768) x 3 uint8 and the matching x 2 int32
        [instance, class], with rows = ceil(len(tiles) / columns); missing cells are white
        glass with no nuclei.
    """
    return _lay_out([tile_region(data, tile) for tile in tiles], columns)


def _lay_out(
    pieces: list[tuple[np.ndarray, np.ndarray]], columns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Square (image, labels) pieces of one side placed in a grid, row by row, with instance
    ids offset so that they stay unique; cells without a piece are glass."""
    side = pieces[0][0].shape[0]
    rows = -(-len(pieces) // columns)
    image = np.full((rows * side, columns * side, 3), _GLASS, np.uint8)
    labels = np.zeros((rows * side, columns * side, 2), np.int32)
    next_id = 0
    for k, (piece, label) in enumerate(pieces):
        row, col = divmod(k, columns)
        window = np.s_[row * side : (row + 1) * side, col * side : (col + 1) * side]
        image[window] = piece
        inst = label[..., 0]
        labels[window + (0,)] = np.where(inst > 0, inst + next_id, 0)
        labels[window + (1,)] = label[..., 1]
        next_id += int(inst.max(initial=0))
    return image, labels
