"""The CoNIC 2022 challenge's scores (mPQ+, R²) and the per-image ones beside them.

:func:`conic_metrics` computes them all for a batch of predictions; see
:mod:`nucstudy.metrics` for their definitions. AJI and Dice per image
(:func:`aji_per_image`, :func:`dice_per_image`) and R² per class (:func:`r2_per_class`,
scikit-learn's conventions; :func:`r2_from_sums` for pooled sums, as the bootstrap needs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nucstudy.data import challenge_crop, count_nuclei
from nucstudy.data.classes import ClassScheme, get_scheme
from nucstudy.metrics.matching import (
    EPS,
    MatchCounts,
    OverlapTable,
    _check_maps,
    _pairs,
    match_counts,
    overlap_table,
    panoptic_quality,
)


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
