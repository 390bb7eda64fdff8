"""Overlapping tiles over a large image, and their nuclei merged without seams.

An image larger than one network input is cut into tiles of ``tile_size`` px that overlap
by ``overlap`` px (the last tile of a row or column is moved back to end at the image's
edge). Along each axis the image is split between neighbouring tiles at the middle of their
overlap, so every pixel belongs to the *core* of exactly one tile, and every core lies at
least ``overlap / 2`` px inside its tile wherever the tile has a neighbour:

    tile 0  |=========core 0=====:----|
    tile 1                   |----:======core 1=====:----|

:class:`SeamlessMerge` then takes each nucleus from the one tile whose core holds its
centroid. A nucleus that reaches into a tile's overlap is therefore taken from the tile where
it lies inside, away from the tile's edge, where the network saw its surroundings; it is
never cut in two. If two tiles segment one nucleus with centroids on either side of a
boundary, the second copy overlaps the first by more than half its area and is dropped, so
that it is not counted twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from nucstudy.postprocess import Nuclei


@dataclass(frozen=True)
class Tile:
    """One tile of a grid, in pixels of the image it was cut from.

    Attributes:
        top, left: the tile's first row and column.
        height, width: its size.
        core: (row_start, row_stop, col_start, col_stop), stop exclusive: the pixels whose
            nuclei this tile contributes.
    """

    top: int
    left: int
    height: int
    width: int
    core: tuple[int, int, int, int]

    @property
    def window(self) -> tuple[slice, slice]:
        """The tile's rows and columns, for indexing the image."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def _axis_tiles(length: int, tile_size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis: (start, size, core_start, core_stop) each."""
    if length <= tile_size:
        return [(0, length, 0, length)]
    step = tile_size - overlap
    starts = list(range(0, length - tile_size, step)) + [length - tile_size]
    bounds = [0]
    bounds += [(a + b + tile_size) // 2 for a, b in zip(starts, starts[1:], strict=False)]
    bounds += [length]
    return [(start, tile_size, bounds[i], bounds[i + 1]) for i, start in enumerate(starts)]


def tile_grid(height: int, width: int, tile_size: int, overlap: int) -> list[Tile]:
    """The tiles covering an image of ``height`` x ``width`` px, row by row.

    Args:
        height, width: the image's size in px (at least 1).
        tile_size: a tile's side in px; an axis shorter than it is one tile of its length.
        overlap: px shared by neighbouring tiles (0 <= overlap < tile_size).

    Returns:
        Tiles whose cores partition the image.

    Raises:
        ValueError: non-positive sizes or an overlap outside [0, tile_size).
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    if tile_size < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size={tile_size}), got {overlap}")
    rows = _axis_tiles(height, tile_size, overlap)
    cols = _axis_tiles(width, tile_size, overlap)
    return [
        Tile(top, left, tile_h, tile_w, (core_top, core_bottom, core_left, core_right))
        for top, tile_h, core_top, core_bottom in rows
        for left, tile_w, core_left, core_right in cols
    ]


class SeamlessMerge:
    """Nuclei of many tiles merged into one instance map of the whole image.

    Args:
        height, width: the image's size in px.

    Add each tile's nuclei with :meth:`add`, then take the result with :meth:`nuclei`. Only
    the instance map of the whole image and one number per nucleus are held. Pixels of nuclei
    merged elsewhere (a neighbouring region of a whole slide,
    :mod:`nucstudy.segment.slide_segment`)
    can be marked with :meth:`reserve` first: they count as taken, exactly as pixels of an
    earlier tile's nuclei do, but are not nuclei of the result.
    """

    #: A nucleus overlapping already merged nuclei on more than this share of its pixels is a
    #: second copy of one of them, and is dropped.
    DUPLICATE_SHARE = 0.5
    #: The value of :attr:`inst_map` on reserved pixels (:meth:`reserve`).
    RESERVED = -1

    def __init__(self, height: int, width: int) -> None:
        self.inst_map = np.zeros((height, width), np.int32)
        self._class_id: list[int] = []
        self._class_prob: list[float] = []
        self._reserved = False

    def reserve(self, mask: np.ndarray) -> None:
        """Mark pixels as taken by nuclei merged elsewhere, before any :meth:`add`.

        Args:
            mask: H x W bool, the image's size; True where another merge's nuclei lie.
        """
        if mask.shape != self.inst_map.shape:
            raise ValueError(f"a reserve mask of {mask.shape} for {self.inst_map.shape} px")
        self.inst_map[mask & (self.inst_map == 0)] = self.RESERVED
        self._reserved = True

    def add(self, tile: Tile, nuclei: Nuclei) -> int:
        """Merge the nuclei of ``tile`` whose centroid lies in its core; returns how many.

        Args:
            tile: where the nuclei's maps lie in the image.
            nuclei: post-processed nuclei at the tile's size.
        """
        if nuclei.inst_map.shape != (tile.height, tile.width):
            raise ValueError(
                f"nuclei of shape {nuclei.inst_map.shape} for a tile of "
                f"{tile.height} x {tile.width}"
            )
        core_top, core_bottom, core_left, core_right = tile.core
        x = nuclei.centroid[:, 0] + tile.left
        y = nuclei.centroid[:, 1] + tile.top
        inside = (y >= core_top) & (y < core_bottom) & (x >= core_left) & (x < core_right)
        added = 0
        for index in np.flatnonzero(inside & (nuclei.area > 0)):
            row_min, col_min, row_max, col_max = nuclei.bbox[index]
            mask = nuclei.inst_map[row_min:row_max, col_min:col_max] == index + 1
            target = self.inst_map[
                tile.top + row_min : tile.top + row_max, tile.left + col_min : tile.left + col_max
            ]
            free = target == 0
            if (mask & ~free).sum() > self.DUPLICATE_SHARE * mask.sum():
                continue
            self._class_id.append(int(nuclei.class_id[index]))
            self._class_prob.append(float(nuclei.class_prob[index]))
            target[mask & free] = len(self._class_id)
            added += 1
        return added

    def nuclei(self) -> Nuclei:
        """The merged nuclei, numbered in the order they were added (reserved pixels are
        background)."""
        inst_map = np.maximum(self.inst_map, 0) if self._reserved else self.inst_map
        return Nuclei.from_instances(
            inst_map, np.array(self._class_id, np.int32), np.array(self._class_prob)
        )


def batches(tiles: list[Tile], size: int) -> Iterator[list[Tile]]:
    """``tiles`` in consecutive groups of at most ``size``."""
    for start in range(0, len(tiles), size):
        yield tiles[start : start + size]
