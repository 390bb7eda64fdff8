"""Nuclei of one patch: the instance map, each nucleus's class, and its geometry.

- :func:`type_map_of`: an H x W class map from the TP head's probabilities (or a class map);
- :func:`vote_classes`: each nucleus takes the most frequent class of the type map inside it
  (ties to the lower id); a nucleus whose pixels all say background takes the most likely
  nuclear class instead (:func:`nuclear_type_map`), so no nucleus is ever of class
  background;
- :class:`Nuclei`: instance map, class map, and per nucleus class, class probability,
  centroid, bounding box and area (:func:`nucleus_geometry`);
- :func:`to_conic_labels`: many patches' nuclei stacked into the N x H x W x 2 CoNIC layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nucstudy.common.votes import class_votes


@dataclass(frozen=True)
class Nuclei:
    """Post-processed nuclei of one patch.

    Attributes:
        inst_map: H x W int32, 0 background, nuclei 1..n (contiguous).
        class_map: H x W int32, each nucleus painted with its class id (0 background).
        centroid: n x 2 float64, (x, y) = (column, row) centre of mass in px; row i is
            nucleus i + 1.
        bbox: n x 4 int64, (row_min, col_min, row_max, col_max), max exclusive.
        area: n int64, pixels.
        class_id: n int32, class voted by the type map.
        class_prob: n float64, fraction of the nucleus's pixels whose type is ``class_id``
            (HoVer-Net's type probability; NaN where the method gives none).
    """

    inst_map: np.ndarray
    class_map: np.ndarray
    centroid: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    class_id: np.ndarray
    class_prob: np.ndarray

    def __len__(self) -> int:
        return len(self.area)

    @classmethod
    def from_instances(
        cls, inst_map: np.ndarray, class_id: np.ndarray, class_prob: np.ndarray
    ) -> Nuclei:
        """Nuclei of a contiguous instance map (ids 1..n) and each nucleus's class.

        Args:
            inst_map: H x W int instance map, nuclei 1..n.
            class_id: n int class ids, entry i for nucleus i + 1.
            class_prob: n float, the confidence of each class (NaN where unknown).
        """
        inst_map = inst_map.astype(np.int32, copy=False)
        class_id = np.asarray(class_id, dtype=np.int32)
        if len(class_id) != int(inst_map.max(initial=0)) or len(class_prob) != len(class_id):
            raise ValueError(
                f"{int(inst_map.max(initial=0))} nuclei in the instance map, but "
                f"{len(class_id)} class ids and {len(class_prob)} probabilities"
            )
        centroid, bbox, area = nucleus_geometry(inst_map)
        class_map = np.concatenate([[0], class_id]).astype(np.int32)[inst_map]
        return cls(
            inst_map, class_map, centroid, bbox, area, class_id, np.asarray(class_prob, float)
        )

    def table(self) -> pd.DataFrame:
        """One row per nucleus: id, area, centroid_x/y, bbox row/col min/max, class, prob."""
        return pd.DataFrame(
            {
                "id": np.arange(1, len(self) + 1),
                "area": self.area,
                "centroid_x": self.centroid[:, 0],
                "centroid_y": self.centroid[:, 1],
                "row_min": self.bbox[:, 0],
                "col_min": self.bbox[:, 1],
                "row_max": self.bbox[:, 2],
                "col_max": self.bbox[:, 3],
                "class_id": self.class_id,
                "class_prob": self.class_prob,
            }
        )


def type_map_of(tp: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An H x W class map from a TP output: argmax of a K x H x W map, or the map itself.

    Raises:
        ValueError: ``tp`` is neither K x H x W (float) nor H x W (integer) of ``shape``.
    """
    tp = np.asarray(tp)
    if tp.ndim == 3 and tp.shape[1:] == shape:
        return np.argmax(tp, axis=0).astype(np.int32)
    if tp.ndim == 2 and tp.shape == shape and np.issubdtype(tp.dtype, np.integer):
        if tp.size and int(tp.min()) < 0:
            raise ValueError("tp: negative class id in the class map")
        return tp.astype(np.int32)
    raise ValueError(
        f"tp: expected a K x {shape[0]} x {shape[1]} probability map or an integer "
        f"{shape[0]} x {shape[1]} class map, got shape {tp.shape} and dtype {tp.dtype}"
    )


def vote_classes(
    inst_map: np.ndarray, type_map: np.ndarray, fallback_map: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each nucleus's most frequent class in the type map, without a mask per nucleus.

    Background (0) is never voted for while a nucleus has a pixel of another class; ties go
    to the lower class id. A nucleus whose pixels are all background in ``type_map`` takes
    its vote in ``fallback_map`` instead (the most likely nuclear class of each pixel), so
    that no nucleus is given the class background; without a fallback it keeps class 0.

    Args:
        inst_map: H x W int instance map, nuclei 1..n.
        type_map: H x W int class map (class ids >= 0).
        fallback_map: H x W int class map of nuclear classes (ids >= 1), or None.

    Returns:
        (class_id, class_prob): int32 (n,) voted class of nucleus i + 1 and float64 (n,)
        the fraction of its pixels with that class (in the map it was voted in).
    """
    class_id, class_prob = _vote(inst_map, type_map)
    if fallback_map is not None and (class_id == 0).any():
        fallback_id, fallback_prob = _vote(inst_map, fallback_map)
        unvoted = class_id == 0
        class_id[unvoted], class_prob[unvoted] = fallback_id[unvoted], fallback_prob[unvoted]
    return class_id, class_prob


def _vote(inst_map: np.ndarray, type_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The majority vote of :func:`vote_classes` in one class map."""
    n = int(inst_map.max(initial=0))
    k = int(type_map.max(initial=0)) + 1
    pixel = np.flatnonzero(inst_map)
    nucleus = inst_map.ravel()[pixel].astype(np.int64) - 1
    votes = class_votes(nucleus, type_map.ravel()[pixel], n, k)
    class_id = np.zeros(n, dtype=np.int32)
    has_class = votes[:, 1:].sum(axis=1) > 0
    if k > 1:
        class_id[has_class] = np.argmax(votes[has_class, 1:], axis=1) + 1
    class_prob = votes[np.arange(n), class_id] / np.maximum(votes.sum(axis=1), 1)
    return class_id, class_prob


def nuclear_type_map(tp: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
    """The most likely nuclear class (1..K-1) of every pixel of a K x H x W probability map;
    None for an integer class map, which has no second choice."""
    tp = np.asarray(tp)
    if tp.ndim == 3 and tp.shape[1:] == shape and tp.shape[0] > 1:
        return (np.argmax(tp[1:], axis=0) + 1).astype(np.int32)
    return None


def nucleus_geometry(inst_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, bounding box and area of each nucleus of a contiguous instance map.

    Args:
        inst_map: H x W int instance map, nuclei 1..n.

    Returns:
        (centroid, bbox, area): float64 n x 2 (x, y) centres of mass in px; int64 n x 4
        (row_min, col_min, row_max, col_max), max exclusive; int64 (n,) pixel counts.
    """
    n = int(inst_map.max(initial=0))
    pixel = np.flatnonzero(inst_map)
    label = inst_map.ravel()[pixel]
    rows, cols = np.divmod(pixel, inst_map.shape[1])
    area = np.bincount(label, minlength=n + 1)[1:]
    sum_x = np.bincount(label, weights=cols, minlength=n + 1)[1:]
    sum_y = np.bincount(label, weights=rows, minlength=n + 1)[1:]
    centroid = np.stack([sum_x, sum_y], axis=1) / np.maximum(area, 1)[:, None]
    low = np.full((2, n + 1), np.iinfo(np.int64).max)
    high = np.full((2, n + 1), -1)
    for axis, coords in enumerate((rows, cols)):
        np.minimum.at(low[axis], label, coords)
        np.maximum.at(high[axis], label, coords)
    bbox = np.concatenate([low[:, 1:], high[:, 1:] + 1]).T
    bbox[area == 0] = 0  # ids missing from a non-contiguous map
    return centroid, bbox, area.astype(np.int64)


def to_conic_labels(nuclei: Sequence[Nuclei]) -> np.ndarray:
    """Stack post-processed patches into the CoNIC layout.

    Returns:
        N x H x W x 2 int32: channel 0 instance maps, channel 1 class maps.
    """
    if not nuclei:
        raise ValueError("to_conic_labels needs at least one patch")
    return np.stack([np.stack([n.inst_map, n.class_map], axis=-1) for n in nuclei]).astype(
        np.int32
    )
