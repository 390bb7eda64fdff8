"""A slide's finished regions on disk: what makes a whole-slide run bounded and resumable.

Each region's nuclei (those the region owns, :mod:`nucstudy.segment.slide_segment`) are written,
atomically, to one small file of their own in the store's folder as soon as the region is
done; nothing else of a region is kept. An interrupted run finds the files of the regions it
finished and starts at the first one missing. A manifest of the run's settings (model,
slide, level, tiling, tissue mask) sits beside them: a run with other settings does not
reuse them.

A region's file (``region-000123.npz``, read with ``allow_pickle=False``) holds, for its n
nuclei, in px of the slide level that was segmented:

=============  =============  ======================================================
``bbox``       n x 4 int64    row_min, col_min, row_max, col_max (max exclusive)
``bits``       m uint8        each nucleus's mask over its box, row by row,
                              ``np.packbits``, one after the other
``offsets``    n + 1 int64    where each nucleus's bits start in ``bits``
``centroid``   n x 2 float64  (x, y) centre of mass of its pixels' indices
``area``       n int64        pixels
``class_id``   n int32        its class in the model's scheme
``class_prob`` n float64      the share of its pixels that voted for the class
=============  =============  ======================================================
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucstudy.common.io import atomic_write, atomic_write_text
from nucstudy.postprocess import Nuclei

MANIFEST = "manifest.json"


@dataclass
class RegionNuclei:
    """The nuclei one region owns, in px of the segmented level (see the module's table)."""

    bbox: np.ndarray
    bits: np.ndarray
    offsets: np.ndarray
    centroid: np.ndarray
    area: np.ndarray
    class_id: np.ndarray
    class_prob: np.ndarray

    FIELDS = ("bbox", "bits", "offsets", "centroid", "area", "class_id", "class_prob")

    def __len__(self) -> int:
        return len(self.area)

    @classmethod
    def from_nuclei(cls, nuclei: Nuclei, top: int, left: int) -> RegionNuclei:
        """The nuclei of a region's merge, shifted by the region's position.

        Args:
            nuclei: H x W nuclei of the region's window (its contiguous ids in order).
            top, left: the window's position in the level, in px.
        """
        keep = np.flatnonzero(nuclei.area > 0)
        pieces = []
        for index in keep:
            row_min, col_min, row_max, col_max = nuclei.bbox[index]
            mask = nuclei.inst_map[row_min:row_max, col_min:col_max] == index + 1
            pieces.append(np.packbits(mask))
        lengths = [len(piece) for piece in pieces]
        shift = np.array([top, left, top, left], np.int64)
        return cls(
            bbox=(nuclei.bbox[keep] + shift).astype(np.int64).reshape(-1, 4),
            bits=np.concatenate(pieces) if pieces else np.zeros(0, np.uint8),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            centroid=(nuclei.centroid[keep] + [left, top]).astype(np.float64).reshape(-1, 2),
            area=nuclei.area[keep].astype(np.int64),
            class_id=nuclei.class_id[keep].astype(np.int32),
            class_prob=nuclei.class_prob[keep].astype(np.float64),
        )

    def mask(self, index: int) -> np.ndarray:
        """Nucleus ``index``'s pixels over its box, h x w bool."""
        row_min, col_min, row_max, col_max = self.bbox[index]
        shape = (int(row_max - row_min), int(col_max - col_min))
        bits = self.bits[self.offsets[index] : self.offsets[index + 1]]
        return np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)

    def paint(self, target: np.ndarray, top: int, left: int) -> None:
        """Set ``target`` (h x w bool, a window of the level at ``top``, ``left``) to True
        on every pixel of these nuclei that falls inside it."""
        height, width = target.shape
        for index, (row_min, col_min, row_max, col_max) in enumerate(self.bbox):
            r0, r1 = max(row_min, top), min(row_max, top + height)
            c0, c1 = max(col_min, left), min(col_max, left + width)
            if r0 >= r1 or c0 >= c1:
                continue
            mask = self.mask(index)[r0 - row_min : r1 - row_min, c0 - col_min : c1 - col_min]
            target[r0 - top : r1 - top, c0 - left : c1 - left] |= mask

    def to_bytes(self) -> bytes:
        """The region's ``.npz`` file, compressed."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{name: getattr(self, name) for name in self.FIELDS})
        return buffer.getvalue()

    @classmethod
    def load(cls, path: str | os.PathLike) -> RegionNuclei:
        """A region's file (no pickles)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(**{name: data[name] for name in cls.FIELDS})


class RegionStore:
    """The folder of one slide's finished regions.

    Args:
        folder: e.g. ``OUT/.regions/<slide stem>``.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def path(self, index: int) -> Path:
        """Region ``index``'s file."""
        return self.folder / f"region-{index:06d}.npz"

    def open(self, manifest: dict) -> tuple[set[int], bool]:
        """Start or resume a run with these settings (JSON-serialisable).

        Returns:
            (finished region indices, whether a store of other settings was discarded).
        """
        text = json.dumps(manifest, indent=1, sort_keys=True)
        discarded = False
        manifest_path = self.folder / MANIFEST
        if manifest_path.is_file() and manifest_path.read_text() != text:
            self.remove()
            discarded = True
        if not manifest_path.is_file():
            self.remove()  # region files without a manifest are not known to be ours
            atomic_write_text(manifest_path, text)
        done = {
            int(path.stem.split("-")[1])
            for path in self.folder.glob("region-*.npz")
            if path.stem.split("-")[1].isdigit()
        }
        return done, discarded

    def save(self, index: int, nuclei: RegionNuclei) -> None:
        """Write a finished region's nuclei (atomically)."""
        data = nuclei.to_bytes()
        atomic_write(self.path(index), lambda f: f.write(data))

    def load(self, index: int) -> RegionNuclei:
        """A finished region's nuclei."""
        return RegionNuclei.load(self.path(index))

    def remove(self) -> None:
        """Delete the folder and everything in it."""
        shutil.rmtree(self.folder, ignore_errors=True)
