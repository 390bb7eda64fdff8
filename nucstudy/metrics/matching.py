"""Matching predicted and true nuclei, fast: the overlap table, match counts and PQ.

Instead of a full-image mask per nucleus, every foreground pixel of a batch of patches is
reduced to one integer key (patch, true id, true class, predicted id, predicted class) and
the keys are counted once (:func:`overlap_table`). Every area, intersection and IoU is then a
sum over that small table. Because a match needs IoU > 0.5 (:data:`MATCH_IOU`), each true
object has at most one partner, so no assignment problem is solved: :func:`match_counts`
gives TP, FP, FN and the sum of matched IoUs per group (image or class), and
:func:`panoptic_quality` DQ, SQ and PQ from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nucstudy.data import check_label_layout
from nucstudy.data.classes import ClassScheme, get_scheme

#: A predicted and a true object match when their IoU is strictly greater than this.
MATCH_IOU = 0.5


#: The challenge's smoothing term in DQ and SQ.
EPS = 1e-6


#: Patches reduced to an overlap table at a time (bounds memory on large or mapped arrays).
CHUNK = 64


_INT64_SAFE = 2**62


@dataclass(frozen=True)
class OverlapTable:
    """Pixel counts of every distinct (patch, true object, predicted object) combination.

    One row per distinct tuple (image, true_id, true_class, pred_id, pred_class) found on a
    pixel where the truth or the prediction is foreground; rows sorted in that order. A
    row with ``pred_id == 0`` counts true pixels on predicted background, and the other way
    round. Class ids on background (id 0) pixels are set to 0.

    Attributes:
        image, true_id, true_class, pred_id, pred_class: int64 arrays of shape (R,).
        pixels: int64 array (R,), the number of pixels with that combination.
        n_images: number of patches the table covers.
    """

    image: np.ndarray
    true_id: np.ndarray
    true_class: np.ndarray
    pred_id: np.ndarray
    pred_class: np.ndarray
    pixels: np.ndarray
    n_images: int

    def to_frame(self) -> pd.DataFrame:
        """The table as a DataFrame, one column per attribute (for notebooks)."""
        names = ("image", "true_id", "true_class", "pred_id", "pred_class", "pixels")
        return pd.DataFrame({name: getattr(self, name) for name in names})


@dataclass(frozen=True)
class MatchCounts:
    """PQ statistics per image and group, before any division.

    Attributes:
        tp, fp, fn: int64 arrays N x G: matched pairs, unmatched predicted objects,
            unmatched true objects.
        sum_iou: float64 array N x G, the sum of the matched pairs' IoUs.

    G is the number of class ids of the scheme (column = class id, column 0 always zero)
    for per-class matching, 1 for class-agnostic matching.
    """

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    sum_iou: np.ndarray


def panoptic_quality(
    tp: np.ndarray | float, fp: np.ndarray | float, fn: np.ndarray | float, sum_iou
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DQ, SQ and PQ from counts, exactly as the challenge divides (with its 1e-6 terms).

    DQ = TP / (TP + FP/2 + FN/2 + 1e-6), SQ = sum IoU / (TP + 1e-6), PQ = DQ x SQ. Works
    elementwise on arrays of any (matching) shape; all zero counts give 0.
    """
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    dq = tp / ((tp + 0.5 * fp + 0.5 * fn) + EPS)
    sq = np.asarray(sum_iou, dtype=np.float64) / (tp + EPS)
    return dq, sq, dq * sq


def _check_maps(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check the N x H x W x 2 layout and dtypes; return both as arrays (maps stay mapped)."""
    pred, true = check_label_layout(pred, "pred"), check_label_layout(true, "true")
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} differ in shape")
    return pred, true


def _check_values(chunk: np.ndarray, scheme: ClassScheme, name: str, start: int) -> None:
    """Instance ids must be >= 0 and class ids within the scheme."""
    if chunk.size == 0:
        return
    if int(chunk[..., 0].min()) < 0:
        raise ValueError(f"{name}: negative instance id in patches {start}..")
    scheme.check_ids(chunk[..., 1], f"{name} class map (patches {start}..)")


def overlap_table(
    pred: np.ndarray, true: np.ndarray, scheme: ClassScheme | str, chunk: int = CHUNK
) -> OverlapTable:
    """Count the pixels of every (patch, true object, predicted object) combination.

    Args:
        pred, true: N x H x W x 2 integer arrays (channel 0 instance ids, 0 background, any
            non-negative ids; channel 1 class ids of ``scheme``). May be memory-mapped.
        scheme: the class scheme (or its name) both class maps follow.
        chunk: patches reduced at a time.

    Returns:
        The :class:`OverlapTable` of the whole batch.

    Raises:
        ValueError: wrong shape or dtype, shapes that differ, a negative instance id or a
            class id outside the scheme.
    """
    scheme = get_scheme(scheme)
    pred, true = _check_maps(pred, true)
    parts = []
    for start in range(0, len(true), chunk):
        p = np.asarray(pred[start : start + chunk])
        t = np.asarray(true[start : start + chunk])
        _check_values(p, scheme, "pred", start)
        _check_values(t, scheme, "true", start)
        part = _chunk_table(t, p, scheme.n_classes)
        part[0] += start
        parts.append(part)
    columns = np.concatenate(parts, axis=1) if parts else np.zeros((6, 0), dtype=np.int64)
    return OverlapTable(*columns, n_images=len(true))


def _chunk_table(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Overlap rows of one chunk as a 6 x R int64 array (image index local to the chunk)."""
    n, height, width, _ = true.shape
    t_flat, p_flat = true.reshape(-1, 2), pred.reshape(-1, 2)
    pixel = np.flatnonzero((t_flat[:, 0] > 0) | (p_flat[:, 0] > 0))
    t_vals = np.take(t_flat, pixel, axis=0).astype(np.int64)
    p_vals = np.take(p_flat, pixel, axis=0).astype(np.int64)
    image = pixel // (height * width)
    t_id, p_id = t_vals[:, 0], p_vals[:, 0]
    t_cls = np.where(t_id > 0, t_vals[:, 1], 0)
    p_cls = np.where(p_id > 0, p_vals[:, 1], 0)

    t_names, p_names = None, None
    if not _key_fits(n, t_id, p_id, n_classes):  # huge ids: count by rank, report the ids
        t_names, t_id = _ranks(t_id)
        p_names, p_id = _ranks(p_id)
        if not _key_fits(n, t_id, p_id, n_classes):
            raise ValueError(f"too many distinct instance ids in {n} patches; pass chunk=1")
    radix = (n, _bound(t_id), n_classes, _bound(p_id), n_classes)
    key = image
    for column, base in zip((t_id, t_cls, p_id, p_cls), radix[1:], strict=True):
        key = key * base + column
    keys, pixels = np.unique(key, return_counts=True)
    columns = []
    for base in radix[:0:-1]:
        keys, column = np.divmod(keys, base)
        columns.append(column)
    image_col = keys
    p_cls_col, p_id_col, t_cls_col, t_id_col = columns
    if t_names is not None:
        t_id_col, p_id_col = t_names[t_id_col], p_names[p_id_col]
    return np.stack([image_col, t_id_col, t_cls_col, p_id_col, p_cls_col, pixels])


def _bound(ids: np.ndarray) -> int:
    return int(ids.max()) + 1 if ids.size else 1


def _key_fits(n: int, t_id: np.ndarray, p_id: np.ndarray, n_classes: int) -> bool:
    return n * _bound(t_id) * _bound(p_id) * n_classes * n_classes < _INT64_SAFE


def _ranks(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (0 first) and each id's rank among them; rank 0 stays background."""
    names = np.unique(np.concatenate([[0], ids]))
    return names, np.searchsorted(names, ids)


def _group(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number the distinct rows of ``columns`` in lexicographic order.

    Returns:
        (inverse, first): inverse[i] = group of row i; first[g] = one row of group g.
    """
    if columns[0].size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort(columns[::-1])
    new = np.zeros(order.size, dtype=bool)
    new[0] = True
    for column in columns:
        ordered = column[order]
        new[1:] |= ordered[1:] != ordered[:-1]
    inverse = np.empty(order.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return inverse, order[new]


@dataclass(frozen=True)
class _Objects:
    """Objects of one side: per object its area, image and group; per table row its object."""

    area: np.ndarray
    image: np.ndarray
    group: np.ndarray
    of_row: np.ndarray  # -1 where the row belongs to no object


def _objects(
    image: np.ndarray, ids: np.ndarray, group: np.ndarray, valid: np.ndarray, pixels: np.ndarray
) -> _Objects:
    """Group the table rows marked ``valid`` into objects keyed by (image, group, id)."""
    rows = np.flatnonzero(valid)
    inverse, first = _group(image[rows], group[rows], ids[rows])
    of_row = np.full(ids.size, -1, dtype=np.int64)
    of_row[rows] = inverse
    area = np.bincount(inverse, weights=pixels[rows], minlength=first.size)
    return _Objects(area, image[rows][first], group[rows][first], of_row)


@dataclass(frozen=True)
class _Pairs:
    """Overlapping (true object, predicted object) pairs of one matching."""

    true_obj: np.ndarray
    pred_obj: np.ndarray
    inter: np.ndarray  # float64 pixel counts
    union: np.ndarray


def _pairs(table: OverlapTable, by_class: bool) -> tuple[_Objects, _Objects, _Pairs]:
    """Objects of both sides and their overlapping pairs, per class or class-agnostic."""
    if by_class:  # an object is the pixels of one id that carry one class (never class 0)
        t_group, p_group = table.true_class, table.pred_class
        t_valid = (table.true_id > 0) & (t_group > 0)
        p_valid = (table.pred_id > 0) & (p_group > 0)
    else:
        t_group = p_group = np.zeros_like(table.true_class)
        t_valid, p_valid = table.true_id > 0, table.pred_id > 0
    true = _objects(table.image, table.true_id, t_group, t_valid, table.pixels)
    pred = _objects(table.image, table.pred_id, p_group, p_valid, table.pixels)
    rows = np.flatnonzero(t_valid & p_valid & (t_group == p_group))
    inverse, first = _group(true.of_row[rows], pred.of_row[rows])
    inter = np.bincount(inverse, weights=table.pixels[rows], minlength=first.size)
    t_obj, p_obj = true.of_row[rows][first], pred.of_row[rows][first]
    union = true.area[t_obj] + pred.area[p_obj] - inter
    return true, pred, _Pairs(t_obj, p_obj, inter, union)


def match_counts(table: OverlapTable, n_groups: int, by_class: bool) -> MatchCounts:
    """TP, FP, FN and sum of IoUs per image and group, matching at IoU > 0.5.

    Args:
        table: the batch's :func:`overlap_table`.
        n_groups: the scheme's number of class ids when ``by_class``, else 1.
        by_class: restrict both maps to each class before matching (mPQ+), or match
            class-agnostic instances (PQ).

    Returns:
        :class:`MatchCounts` with arrays of shape ``table.n_images x n_groups``.
    """
    true, pred, pairs = _pairs(table, by_class)
    iou = pairs.inter / pairs.union
    matched = iou > MATCH_IOU
    cells = table.n_images * n_groups

    def per_cell(image, group, weights=None):
        counts = np.bincount(image * n_groups + group, weights=weights, minlength=cells)
        return counts.reshape(table.n_images, n_groups)

    m_image = true.image[pairs.true_obj[matched]]
    m_group = true.group[pairs.true_obj[matched]]
    tp = per_cell(m_image, m_group).astype(np.int64)
    sum_iou = per_cell(m_image, m_group, iou[matched]).astype(np.float64)
    return MatchCounts(
        tp=tp,
        fp=per_cell(pred.image, pred.group) - tp,
        fn=per_cell(true.image, true.group) - tp,
        sum_iou=sum_iou,
    )
