"""Labelled tiles of any size: a test set of whole images with instance labels only.

Out-of-domain test sets such as CPM-15 (brain tumour, MICCAI 2015) come as a few tiles of
different sizes and resolutions, with every nucleus outlined but no nucleus classes, so they
do not fit the N x H x W CoNIC layout. The folder layout read here:

- ``images/<name>.png``: RGB tiles (lossless);
- ``labels.npz`` (loaded with ``allow_pickle=False``): ``names`` (the tile names in order),
  ``mpp`` (their resolution in um/px, same order) and one int32 H x W instance map per name
  (0 background, 1..n nuclei).

:func:`load_tiles` reads and checks such a folder; :func:`tiles_from_source` gives the
patches of a CoNIC-layout source the same form; :func:`resample_tile` brings a tile to
another resolution (the image by area averaging, the labels by nearest neighbour);
:func:`nucleus_sizes` measures how large their nuclei are, in um, whatever the resolution.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage.io import imread
from skimage.segmentation import clear_border

__all__ = ["LabelledTile", "load_tiles", "nucleus_sizes", "resample_tile", "tiles_from_source"]


@dataclass(frozen=True)
class LabelledTile:
    """One tile with its instance labels.

    Attributes:
        name: the tile's name (``image01``, ...).
        image: H x W x 3 uint8 RGB.
        labels: H x W int32 instance map, 0 background, 1..n nuclei.
        mpp: resolution in um/px.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    mpp: float

    @property
    def n_nuclei(self) -> int:
        """Number of nuclei in the labels."""
        return int(np.unique(self.labels[self.labels > 0]).size)


def load_tiles(folder: str | os.PathLike) -> list[LabelledTile]:
    """Read every tile of a labelled-tiles folder (see the module docstring), in order.

    Raises:
        ValueError: a missing file or array, a label map whose size is not its image's, a
            non-integer or negative label, or a resolution that is not positive; the message
            names the file.
    """
    folder = Path(folder)
    path = folder / "labels.npz"
    if not path.is_file():
        raise ValueError(f"{folder}: not a labelled-tiles folder (no labels.npz)")
    try:
        store = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot be read as a NumPy archive ({error})") from error
    with store:
        names = [str(name) for name in _array(store, "names", path)]
        mpps = np.asarray(_array(store, "mpp", path), dtype=np.float64)
        if mpps.shape != (len(names),) or not np.all(mpps > 0):
            raise ValueError(f"{path}: 'mpp' must hold one positive resolution per name")
        return [
            _tile(folder, name, _array(store, name, path), float(mpp))
            for name, mpp in zip(names, mpps, strict=True)
        ]


def _array(store: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """One array of the archive, never unpickled; a missing or unsafe one names the file."""
    if key not in store.files:
        raise ValueError(f"{path}: no {key!r} array")
    try:
        return store[key]
    except ValueError as error:  # an object array: it would need unpickling
        raise ValueError(f"{path}: {key!r} cannot be loaded safely ({error})") from None


def _tile(folder: Path, name: str, labels: np.ndarray, mpp: float) -> LabelledTile:
    image_path = folder / "images" / f"{name}.png"
    if not image_path.is_file():
        raise ValueError(f"{image_path}: image not found")
    image = imread(image_path)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{image_path}: expected an 8-bit RGB image, got {image.shape} {image.dtype}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != image.shape[:2]:
        raise ValueError(
            f"{folder / 'labels.npz'}: {name!r} must be an integer map of its image's size "
            f"{image.shape[:2]}, got {labels.shape} {labels.dtype}"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"{folder / 'labels.npz'}: {name!r} has negative instance ids")
    return LabelledTile(name, np.ascontiguousarray(image), labels.astype(np.int32), mpp)


def resample_tile(tile: LabelledTile, mpp: float) -> LabelledTile:
    """The tile at ``mpp`` um/px: image by area averaging (or linear when enlarging), labels
    by nearest neighbour; a tile already at ``mpp`` is returned as it is."""
    if not mpp > 0:
        raise ValueError(f"mpp must be a positive resolution in um/px, got {mpp}")
    if np.isclose(tile.mpp, mpp):
        return tile
    image = rescale_image(tile.image, tile.mpp / mpp)
    size = (image.shape[1], image.shape[0])
    labels = cv2.resize(tile.labels, size, interpolation=cv2.INTER_NEAREST)
    return LabelledTile(tile.name, image, labels, mpp)


def rescale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """An H x W x 3 image resized by ``scale`` (each side rounded, at least 1 px): by area
    averaging when shrinking, bilinear when enlarging."""
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def tiles_from_source(spec: str, split: str = "test", resample: bool = True) -> list[LabelledTile]:
    """The patches of a data source's split as tiles (instance channel only), e.g. to score a
    class-agnostic segmenter on CoNSeP's test split as on out-of-domain tiles.

    Args:
        spec: ``synthetic``, ``consep:<folder>`` or ``conic:<folder>``.
        split: ``"train"`` or ``"test"``.
        resample: CoNSeP only: halve 40x to 20x.
    """
    from nucstudy.data.sources import open_source

    data = open_source(spec, split, resample=resample)
    return [
        LabelledTile(f"{split}-{k:04d}", np.asarray(image), np.asarray(label[..., 0]), data.mpp)
        for k, (image, label) in enumerate(zip(data.images, data.labels, strict=True))
    ]


def nucleus_sizes(tiles: Sequence[LabelledTile]) -> dict[str, float]:
    """How large the nuclei of some tiles are, in physical units.

    Nuclei that touch a tile's edge are left out (they are cut, so smaller than they are).
    Each tile is measured at its own resolution, so tiles of mixed magnification compare.

    Returns:
        ``nuclei`` (the number measured), the 25th, 50th and 75th percentile of the area in
        um² (``area q25``, ``area median``, ``area q75``) and the median equivalent diameter
        in um (``diameter median``: that of a disc of the median area).

    Raises:
        ValueError: no tile has a nucleus clear of its edges.
    """
    areas = []
    for tile in tiles:
        inner = clear_border(tile.labels)
        _, pixels = np.unique(inner[inner > 0], return_counts=True)
        areas.append(pixels * tile.mpp**2)
    area = np.concatenate(areas) if areas else np.empty(0)
    if area.size == 0:
        raise ValueError("no nucleus clear of the tiles' edges to measure")
    q25, median, q75 = np.percentile(area, [25, 50, 75])
    return {
        "nuclei": int(area.size),
        "area q25": float(q25),
        "area median": float(median),
        "area q75": float(q75),
        "diameter median": float(2 * np.sqrt(median / np.pi)),
    }
