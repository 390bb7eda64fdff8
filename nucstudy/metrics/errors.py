"""Failure analysis: what a model gets wrong, nucleus by nucleus.

:func:`confusion_of_matched` (the classes of the nuclei matched class-agnostically, as binary
PQ matches them), :func:`detection_errors` (per class: found, missed, spurious, right and
wrong class) and :func:`patch_errors` (per patch: PQ, merged neighbours, split, missed faint
or dark, spurious and wrong-class nuclei, and the dominant failure, :data:`FAILURES`). A
nucleus's class here is the class most of its pixels carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nucstudy.common.votes import class_votes
from nucstudy.data.classes import ClassScheme, get_scheme
from nucstudy.metrics.conic import _ratio_or_nan
from nucstudy.metrics.matching import (
    MATCH_IOU,
    OverlapTable,
    _check_maps,
    _Objects,
    _Pairs,
    _pairs,
    match_counts,
    overlap_table,
    panoptic_quality,
)

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
    votes = class_votes(objects.of_row[rows], classes[rows], objects.area.size, k, pixels[rows])
    return votes.argmax(axis=1)


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
