"""Instance segmentation and classification metrics, scored as the CoNIC 2022 challenge does.

The challenge ranks by two numbers:

- **mPQ+** (:func:`conic_metrics` key ``"mpq+"``): for every class c, each map is first
  restricted to the pixels of class c (a nucleus painted with two classes becomes two
  objects); true and predicted objects are matched when their IoU is strictly above 0.5;
  TP, FP, FN and the sum of matched IoUs are *added up over the whole data set*, then
  DQ_c = TP / (TP + FP/2 + FN/2 + 1e-6), SQ_c = sum IoU / (TP + 1e-6), PQ_c = DQ_c x SQ_c, and
  mPQ+ is the mean of PQ_c over the classes. A class absent on both sides scores 0.
- **R²** (key ``"r2"``): nuclei per class counted on the central region
  (:func:`nucstudy.data.count_nuclei`), one coefficient of determination per class with
  scikit-learn's conventions (:func:`r2_per_class`), averaged over classes.

Beside them: ``"pq"``, class-agnostic PQ computed per image and averaged over images (the
challenge's auxiliary number; an image empty on both sides scores 0); ``"mpq_per_image"``,
the PanNuke-style multi-class PQ (per image, the mean PQ over the classes present in the
truth, then the mean over images); ``"aji"`` (aggregated Jaccard index) and ``"dice"``
(binary Dice), each per image and averaged over the images with a nucleus on either side.
mPQ+ pools before dividing and ``mpq_per_image`` averages ratios: they are different numbers.

Failure analysis, for looking at what a model gets wrong: :func:`confusion_of_matched` (the
classes of the nuclei matched class-agnostically, as binary PQ matches them),
:func:`detection_errors` (per class: found, missed, spurious, right and wrong class) and
:func:`patch_errors` (per patch: PQ, merged neighbours, split, missed faint or dark, spurious
and wrong-class nuclei, and the dominant failure). A nucleus's class there is the class most
of its pixels carry.

How it is fast: instead of a full-image mask per nucleus, every foreground pixel of a batch
of patches is reduced to one integer key (patch, true id, true class, predicted id,
predicted class) and the keys are counted once (:func:`overlap_table`). Every area,
intersection and IoU is then a sum over that small table. Because a match needs IoU > 0.5,
each true object has at most one partner, so no assignment problem is solved.

The results equal the official scoring code (``TissueImageAnalytics/CoNIC``,
``metrics/stats_utils.py``) to rounding: the IoUs are the same quotients of the same
integers and only the order of floating-point sums differs. Where the official code fails
(it raises on a map without a single background pixel) these functions follow the
definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nucstudy.classes import ClassScheme, get_scheme
from nucstudy.data import challenge_crop, check_label_layout, count_nuclei

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


# -- input checks -----------------------------------------------------------------------------


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


# -- the overlap table ------------------------------------------------------------------------


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


# -- matching ---------------------------------------------------------------------------------


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


# -- per-image segmentation scores -------------------------------------------------------------


def aji_per_image(table: OverlapTable) -> np.ndarray:
    """Aggregated Jaccard index of each image (class-agnostic), as MoNuSeg defines it.

    Each true nucleus is paired with the predicted nucleus of highest
    intersection / (union + 1e-6) among those it overlaps (ties to the lower predicted
    id; one prediction may serve several true nuclei). AJI = sum of paired intersections /
    (sum of paired unions + areas of unpaired true and unpaired predicted nuclei).

    Returns:
        float64 array (N,); NaN for an image with no nucleus on either side.
    """
    true, pred, pairs = _pairs(table, by_class=False)
    score = pairs.inter / (pairs.union + EPS)
    order = np.lexsort((pairs.pred_obj, -score, pairs.true_obj))
    first = np.ones(order.size, dtype=bool)
    first[1:] = pairs.true_obj[order][1:] != pairs.true_obj[order][:-1]
    best = order[first]  # one pair per true nucleus that overlaps any prediction

    n = table.n_images
    image_of_best = true.image[pairs.true_obj[best]]
    inter = _sum_per_image(image_of_best, pairs.inter[best], n)
    union = _sum_per_image(image_of_best, pairs.union[best], n)
    t_unpaired = np.ones(true.area.size, dtype=bool)
    t_unpaired[pairs.true_obj[best]] = False
    p_unpaired = np.ones(pred.area.size, dtype=bool)
    p_unpaired[pairs.pred_obj[best]] = False
    union += _sum_per_image(true.image[t_unpaired], true.area[t_unpaired], n)
    union += _sum_per_image(pred.image[p_unpaired], pred.area[p_unpaired], n)
    return _ratio_or_nan(inter, union)


def dice_per_image(table: OverlapTable) -> np.ndarray:
    """Binary Dice of each image's nuclear foreground: 2 |T and P| / (|T| + |P|).

    Returns:
        float64 array (N,); NaN for an image with no nucleus on either side.
    """
    n = table.n_images
    t_fg, p_fg = table.true_id > 0, table.pred_id > 0
    both = _sum_per_image(table.image[t_fg & p_fg], table.pixels[t_fg & p_fg], n)
    t_area = _sum_per_image(table.image[t_fg], table.pixels[t_fg], n)
    p_area = _sum_per_image(table.image[p_fg], table.pixels[p_fg], n)
    return _ratio_or_nan(2.0 * both, t_area + p_area)


def _sum_per_image(image: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """float64 (n,): the sum of ``values`` of each image index."""
    return np.bincount(image, weights=values, minlength=n).astype(np.float64)


def _ratio_or_nan(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _mean_or_nan(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (without a warning) when there are none."""
    values = values[~np.isnan(values)]
    return float(np.mean(values)) if values.size else float("nan")


# -- counts -----------------------------------------------------------------------------------


def r2_per_class(true_counts: np.ndarray, pred_counts: np.ndarray) -> np.ndarray:
    """Coefficient of determination of each count column, with scikit-learn's conventions.

    R² = 1 - SS_res / SS_tot per column. A constant true column (SS_tot = 0) gives 1.0 if
    predicted exactly and 0.0 otherwise; fewer than two rows give NaN (as ``r2_score``).

    Args:
        true_counts, pred_counts: N x K arrays of counts (any real dtype), same shape.

    Returns:
        float64 array (K,).
    """
    true_counts = np.asarray(true_counts, dtype=np.float64)
    pred_counts = np.asarray(pred_counts, dtype=np.float64)
    if true_counts.ndim != 2 or true_counts.shape != pred_counts.shape:
        raise ValueError(
            "true_counts and pred_counts must be N x K arrays of one shape, got "
            f"{true_counts.shape} and {pred_counts.shape}"
        )
    if len(true_counts) < 2:
        return np.full(true_counts.shape[1], np.nan)
    ss_res = ((true_counts - pred_counts) ** 2).sum(axis=0)
    ss_tot = ((true_counts - true_counts.mean(axis=0)) ** 2).sum(axis=0)
    return r2_from_sums(ss_res, ss_tot)


def r2_from_sums(ss_res: np.ndarray, ss_tot: np.ndarray) -> np.ndarray:
    """R² = 1 - SS_res / SS_tot elementwise, with scikit-learn's rule for SS_tot = 0.

    A constant truth (SS_tot = 0) scores 1.0 where it is predicted exactly (SS_res = 0) and
    0.0 otherwise.
    """
    ss_res, ss_tot = np.asarray(ss_res, np.float64), np.asarray(ss_tot, np.float64)
    r2 = np.where(ss_res == 0, 1.0, 0.0)
    np.subtract(1.0, ss_res / np.where(ss_tot > 0, ss_tot, 1.0), out=r2, where=ss_tot > 0)
    return r2


# -- everything at once -----------------------------------------------------------------------


def conic_metrics(
    pred: np.ndarray, true: np.ndarray, scheme: ClassScheme | str
) -> dict[str, object]:
    """Score predictions as the CoNIC challenge does, plus per-image PQ, AJI and Dice.

    Args:
        pred, true: N x H x W x 2 integer arrays in the CoNIC layout (channel 0 instance ids,
            0 background, ids need not be contiguous; channel 1 class ids of ``scheme``).
            May be memory-mapped; read ``CHUNK`` patches at a time.
        scheme: the class scheme (or its name).

    Returns:
        A dict of plain values:

        - ``"mpq+"``: the challenge's multi-class PQ, statistics pooled over all images;
        - ``"pq"``: class-agnostic PQ per image, averaged over images;
        - ``"r2"``: mean over classes of the R² of counts on the central region;
        - ``"mpq_per_image"``: PanNuke-style mPQ (NOT the challenge's mPQ+);
        - ``"aji"``, ``"dice"``: per-image scores averaged over images with any nucleus;
        - ``"pq_per_class"``, ``"r2_per_class"``: {class name: float};
        - ``"per_class"``: {class name: {"tp", "fp", "fn", "sum_iou", "dq", "sq", "pq"}},
          the pooled statistics behind mPQ+;
        - ``"per_image"``: DataFrame with one row per image, columns ``pq``,
          ``mpq_per_image``, ``aji``, ``dice`` (NaN where undefined).

    Raises:
        ValueError: wrong shape or dtype, shapes that differ, a negative instance id or a
            class id outside the scheme.
    """
    scheme = get_scheme(scheme)
    pred, true = _check_maps(pred, true)
    table = overlap_table(pred, true, scheme)

    by_class = match_counts(table, scheme.n_classes, by_class=True)
    tp, fp, fn = (x[:, 1:].sum(axis=0) for x in (by_class.tp, by_class.fp, by_class.fn))
    sum_iou = by_class.sum_iou[:, 1:].sum(axis=0)
    dq, sq, pq_class = panoptic_quality(tp, fp, fn, sum_iou)

    binary = match_counts(table, 1, by_class=False)
    pq_image = panoptic_quality(binary.tp, binary.fp, binary.fn, binary.sum_iou)[2][:, 0]
    mpq_image = _pannuke_mpq_per_image(by_class)

    crop = challenge_crop(min(true.shape[1:3]))
    r2 = r2_per_class(count_nuclei(true, scheme, crop), count_nuclei(pred, scheme, crop))
    names = scheme.foreground_names
    per_image = pd.DataFrame(
        {
            "pq": pq_image,
            "mpq_per_image": mpq_image,
            "aji": aji_per_image(table),
            "dice": dice_per_image(table),
        }
    )
    return {
        "mpq+": float(np.mean(pq_class)),
        "pq": float(np.mean(pq_image)) if len(pq_image) else float("nan"),
        "r2": float(np.mean(r2)),
        "mpq_per_image": _mean_or_nan(mpq_image),
        "aji": _mean_or_nan(per_image["aji"].to_numpy()),
        "dice": _mean_or_nan(per_image["dice"].to_numpy()),
        "pq_per_class": dict(zip(names, map(float, pq_class), strict=True)),
        "r2_per_class": dict(zip(names, map(float, r2), strict=True)),
        "per_class": {
            name: {
                "tp": int(tp[k]),
                "fp": int(fp[k]),
                "fn": int(fn[k]),
                "sum_iou": float(sum_iou[k]),
                "dq": float(dq[k]),
                "sq": float(sq[k]),
                "pq": float(pq_class[k]),
            }
            for k, name in enumerate(names)
        },
        "per_image": per_image,
    }


def _pannuke_mpq_per_image(counts: MatchCounts) -> np.ndarray:
    """Per image, the mean PQ over the classes present in the truth (NaN if none)."""
    tp, fp, fn, sum_iou = (x[:, 1:] for x in (counts.tp, counts.fp, counts.fn, counts.sum_iou))
    pq = panoptic_quality(tp, fp, fn, sum_iou)[2]
    present = (tp + fn) > 0
    total = np.where(present, pq, 0.0).sum(axis=1)
    return _ratio_or_nan(total, present.sum(axis=1).astype(np.float64))


# -- failure analysis -------------------------------------------------------------------------

#: Failure categories of :func:`patch_errors`, in order of precedence (ties go to the first).
FAILURES = (
    "merged neighbours",
    "split nucleus",
    "missed faint nucleus",
    "missed nucleus",
    "spurious nucleus",
    "wrong class",
)
_FAILURE_COLUMNS = ("merged", "split", "missed_faint", "missed", "spurious", "wrong_class")
#: A prediction covering more than this fraction of a true nucleus's pixels "holds" it (merge).
MERGE_COVER = 0.5
#: Two predictions each covering more than this fraction of a true nucleus split it.
SPLIT_COVER = 0.25


@dataclass(frozen=True)
class _Matching:
    """Class-agnostic matching of a batch, with each nucleus's class and partner.

    ``true_class``/``pred_class``: each object's majority class id (ties to the lower id);
    ``true_matched``/``pred_matched``: whether it has a partner; ``matched``: per pair.
    """

    table: OverlapTable
    true: _Objects
    pred: _Objects
    pairs: _Pairs
    matched: np.ndarray
    true_class: np.ndarray
    pred_class: np.ndarray
    true_matched: np.ndarray
    pred_matched: np.ndarray


def _as_batch(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accept one H x W x 2 map per side as a batch of one; then the module's layout checks."""
    pred, true = (x if isinstance(x, np.ndarray) else np.asarray(x) for x in (pred, true))
    pred, true = (x[np.newaxis] if x.ndim == 3 else x for x in (pred, true))
    return _check_maps(pred, true)


def _majority_class(
    objects: _Objects, classes: np.ndarray, pixels: np.ndarray, k: int
) -> np.ndarray:
    """int64 (objects,): the class id most of each object's pixels carry (ties to lower id)."""
    rows = np.flatnonzero(objects.of_row >= 0)
    votes = np.bincount(
        objects.of_row[rows] * k + classes[rows],
        weights=pixels[rows],
        minlength=objects.area.size * k,
    )
    return votes.reshape(-1, k).argmax(axis=1)


def _match_nuclei(pred: np.ndarray, true: np.ndarray, scheme: ClassScheme) -> _Matching:
    """Match class-agnostic nuclei at IoU > 0.5 and give every nucleus its majority class."""
    table = overlap_table(pred, true, scheme)
    t_obj, p_obj, pairs = _pairs(table, by_class=False)
    matched = pairs.inter / pairs.union > MATCH_IOU
    true_matched = np.zeros(t_obj.area.size, dtype=bool)
    true_matched[pairs.true_obj[matched]] = True
    pred_matched = np.zeros(p_obj.area.size, dtype=bool)
    pred_matched[pairs.pred_obj[matched]] = True
    k = scheme.n_classes
    return _Matching(
        table=table,
        true=t_obj,
        pred=p_obj,
        pairs=pairs,
        matched=matched,
        true_class=_majority_class(t_obj, table.true_class, table.pixels, k),
        pred_class=_majority_class(p_obj, table.pred_class, table.pixels, k),
        true_matched=true_matched,
        pred_matched=pred_matched,
    )


def _per_class(classes: np.ndarray, k: int) -> np.ndarray:
    """int64 (k - 1,): how many of ``classes`` fall on each foreground class id 1..k-1."""
    return np.bincount(classes, minlength=k)[1:k]


def confusion_of_matched(
    pred: np.ndarray, true: np.ndarray, scheme: ClassScheme | str, normalise: bool = False
) -> pd.DataFrame:
    """Confusion of classes over the nuclei matched class-agnostically (IoU > 0.5).

    Matching is that of binary PQ; a nucleus's class is the class id most of its pixels
    carry (ties to the lower id). A nucleus whose majority class is 0 (pixels left without
    a class) has no row or column and is left out.

    Args:
        pred, true: N x H x W x 2 integer arrays in the CoNIC layout (or one H x W x 2 map
            each); channel 0 instance ids (0 background), channel 1 class ids of ``scheme``.
        scheme: the class scheme (or its name).
        normalise: divide each row by its sum (the fraction of a true class predicted as
            each class); a row without any matched nucleus is NaN.

    Returns:
        K x K DataFrame over ``scheme.foreground_names``, index named ``"true"``, columns
        ``"predicted"``: int64 counts of matched pairs, or float64 fractions if ``normalise``.

    Raises:
        ValueError: wrong shape or dtype, shapes that differ, a negative instance id or a
            class id outside the scheme.
    """
    scheme = get_scheme(scheme)
    m = _match_nuclei(*_as_batch(pred, true), scheme)
    k = scheme.n_classes
    t_cls = m.true_class[m.pairs.true_obj[m.matched]]
    p_cls = m.pred_class[m.pairs.pred_obj[m.matched]]
    counts = np.bincount(t_cls * k + p_cls, minlength=k * k).reshape(k, k)[1:, 1:]
    if normalise:
        counts = _ratio_or_nan(counts.astype(np.float64), counts.sum(axis=1, keepdims=True))
    names = list(scheme.foreground_names)
    return pd.DataFrame(
        counts,
        index=pd.Index(names, name="true"),
        columns=pd.Index(names, name="predicted"),
    )


def detection_errors(
    pred: np.ndarray, true: np.ndarray, scheme: ClassScheme | str
) -> pd.DataFrame:
    """Per class, how many nuclei were found, missed, invented and classified right.

    Matching and classes as in :func:`confusion_of_matched` (class-agnostic, IoU > 0.5;
    majority class; nuclei of majority class 0 are in no row).

    Args:
        pred, true: N x H x W x 2 integer arrays in the CoNIC layout (or one H x W x 2 map
            each).
        scheme: the class scheme (or its name).

    Returns:
        DataFrame with one row per foreground class (index ``scheme.foreground_names``,
        named ``"class"``) and int64 columns:

        - ``true``: true nuclei of that class; ``matched``: of those, matched to a
          prediction; ``missed`` = ``true`` - ``matched``;
        - ``predicted``: predicted nuclei of that class; ``spurious``: of those, matched
          to no true nucleus;
        - ``correct_class``, ``wrong_class``: the matched true nuclei of that class whose
          partner has the same class / another class (``matched`` is their sum).

    Raises:
        ValueError: as :func:`confusion_of_matched`.
    """
    scheme = get_scheme(scheme)
    m = _match_nuclei(*_as_batch(pred, true), scheme)
    k = scheme.n_classes
    t_cls = m.true_class[m.pairs.true_obj[m.matched]]
    p_cls = m.pred_class[m.pairs.pred_obj[m.matched]]
    n_true, matched = _per_class(m.true_class, k), _per_class(t_cls, k)
    predicted = _per_class(m.pred_class, k)
    correct = _per_class(t_cls[t_cls == p_cls], k)
    return pd.DataFrame(
        {
            "true": n_true,
            "matched": matched,
            "missed": n_true - matched,
            "predicted": predicted,
            "spurious": predicted - _per_class(m.pred_class[m.pred_matched], k),
            "correct_class": correct,
            "wrong_class": matched - correct,
        },
        index=pd.Index(list(scheme.foreground_names), name="class"),
    )


def patch_errors(
    pred: np.ndarray,
    true: np.ndarray,
    scheme: ClassScheme | str,
    images: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per patch, its PQ and its errors sorted into failure categories.

    Matching and classes as in :func:`confusion_of_matched`. Each nucleus is counted in at
    most one error category, taken in this order:

    1. ``merged``: predictions that each cover more than 50 % of the pixels of two or more
       true nuclei (one count per prediction); those true nuclei are not missed and the
       prediction is not spurious;
    2. ``split``: true nuclei, not already merged, of which two or more predictions each
       cover more than 25 % of the pixels (one count per true nucleus); it is not missed
       and those predictions are not spurious;
    3. ``missed_faint`` and ``missed``: the other unmatched true nuclei. With ``images``, a
       missed nucleus is faint when its darkness (255 minus the mean grey value of its
       pixels, grey = mean of R, G, B) is below the median darkness of all matched true
       nuclei of the batch (none is faint if nothing matched); without, all are ``missed``;
    4. ``spurious``: the other unmatched predictions;
    5. ``wrong_class``: matched pairs of different classes, neither of whose nuclei was
       counted in 1 or 2.

    A merge or split may involve a matched pair (a prediction can match one true nucleus
    and also cover most of a small neighbour), so ``merged`` and ``split`` do not simply
    add to the unmatched counts.

    Args:
        pred, true: N x H x W x 2 integer arrays in the CoNIC layout (or one H x W x 2 map
            each).
        scheme: the class scheme (or its name).
        images: optional N x H x W x 3 (or H x W x 3) uint8 RGB patches of ``true``.

    Returns:
        DataFrame with one row per patch: ``patch`` (0..N-1); ``pq``, the class-agnostic
        PQ of the patch (as ``conic_metrics(...)["per_image"]["pq"]``); int64 ``true``,
        ``predicted``, ``matched`` (nuclei and pairs), ``merged``, ``split``,
        ``missed_faint``, ``missed``, ``spurious``, ``wrong_class``; and ``failure``, the
        category of :data:`FAILURES` with the most counts (ties to the earlier), or
        ``"none"`` when all are 0.

    Raises:
        ValueError: as :func:`confusion_of_matched`, or images of the wrong shape or dtype.
    """
    scheme = get_scheme(scheme)
    pred, true = _as_batch(pred, true)
    if images is not None:
        images = _check_images(images, true.shape)
    m = _match_nuclei(pred, true, scheme)
    t_of, p_of = m.pairs.true_obj, m.pairs.pred_obj
    cover = m.pairs.inter / m.true.area[t_of]  # fraction of the true nucleus covered

    holds = cover > MERGE_COVER
    merging = np.bincount(p_of[holds], minlength=m.pred.area.size) >= 2
    merged_true = np.zeros(m.true.area.size, dtype=bool)
    merged_true[t_of[holds & merging[p_of]]] = True
    part = cover > SPLIT_COVER
    split = (np.bincount(t_of[part], minlength=m.true.area.size) >= 2) & ~merged_true
    fragment = np.zeros(m.pred.area.size, dtype=bool)
    fragment[p_of[part & split[t_of]]] = True
    explained_true, explained_pred = merged_true | split, merging | fragment

    missed = ~m.true_matched & ~explained_true
    faint = np.zeros_like(missed)
    if images is not None:
        darkness = _darkness(true, images, m.true)
        if m.true_matched.any():
            faint = missed & (darkness < np.median(darkness[m.true_matched]))
    # a matched partner covers > 50 % of its true nucleus, so a merged or split true nucleus
    # always has an explained partner: testing the prediction suffices
    wrong = m.matched & (m.true_class[t_of] != m.pred_class[p_of]) & ~explained_pred[p_of]

    n = m.table.n_images
    t_img, p_img = m.true.image, m.pred.image
    pq = match_counts(m.table, 1, by_class=False)
    errors = {
        "merged": np.bincount(p_img[merging], minlength=n),
        "split": np.bincount(t_img[split], minlength=n),
        "missed_faint": np.bincount(t_img[faint], minlength=n),
        "missed": np.bincount(t_img[missed & ~faint], minlength=n),
        "spurious": np.bincount(p_img[~m.pred_matched & ~explained_pred], minlength=n),
        "wrong_class": np.bincount(t_img[t_of[wrong]], minlength=n),
    }
    counts = np.stack([errors[c] for c in _FAILURE_COLUMNS], axis=1)
    failure = np.where(
        counts.max(axis=1, initial=0) > 0, np.array(FAILURES)[counts.argmax(1)], "none"
    )
    return pd.DataFrame(
        {
            "patch": np.arange(n),
            "pq": panoptic_quality(pq.tp, pq.fp, pq.fn, pq.sum_iou)[2][:, 0],
            "true": np.bincount(t_img, minlength=n),
            "predicted": np.bincount(p_img, minlength=n),
            "matched": pq.tp[:, 0],
            **errors,
            "failure": failure,
        }
    )


def _check_images(images: np.ndarray, label_shape: tuple[int, ...]) -> np.ndarray:
    """Images must be uint8 RGB of the labels' N x H x W (one H x W x 3 image for N = 1)."""
    images = images if isinstance(images, np.ndarray) else np.asarray(images)
    if images.ndim == 3:
        images = images[np.newaxis]
    expected = (*label_shape[:3], 3)
    if images.shape != expected or images.dtype != np.uint8:
        raise ValueError(
            f"images: expected {expected} uint8 RGB, got {images.shape} {images.dtype}"
        )
    return images


def _darkness(true: np.ndarray, images: np.ndarray, objects: _Objects) -> np.ndarray:
    """float64 (objects,): 255 minus the mean grey value (RGB mean) of each true nucleus."""
    rgb_sum = np.empty(objects.area.size)
    bounds = np.searchsorted(objects.image, np.arange(len(true) + 1))
    for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if start == stop:
            continue
        ids = np.asarray(true[i, ..., 0]).ravel()
        foreground = np.flatnonzero(ids > 0)
        inverse = np.unique(ids[foreground], return_inverse=True)[1]  # objects sorted by id
        pixels = np.asarray(images[i]).reshape(-1, 3)[foreground]
        rgb_sum[start:stop] = np.bincount(inverse, weights=pixels.sum(axis=1, dtype=np.int64))
    return 255.0 - rgb_sum / (3.0 * objects.area)
