"""A slow, literal re-implementation of the CoNIC scoring, to test nucstudy.metrics against.

It follows the official definitions step by step, the obvious way: one full-image mask per
nucleus, a dense IoU matrix per image and class, each class map built as
``instance map x (class map == c)`` and relabelled, counts pooled over images before
dividing. Nothing here is fast or clever on purpose.
"""

from __future__ import annotations

import numpy as np


def relabel(inst: np.ndarray) -> np.ndarray:
    """Instance ids renumbered 1..n in increasing order of the old ids (0 stays 0)."""
    out = np.zeros(inst.shape, dtype=np.int64)
    for new, old in enumerate(i for i in np.unique(inst) if i != 0):
        out[inst == old] = new + 1
    return out


def pq_info(true: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, float]:
    """(tp, fp, fn, sum of matched IoUs) of two H x W instance maps, matching at IoU > 0.5."""
    true, pred = relabel(true), relabel(pred)
    n_true, n_pred = int(true.max()), int(pred.max())
    iou = np.zeros((n_true, n_pred))
    for t in range(1, n_true + 1):
        t_mask = true == t
        for p in range(1, n_pred + 1):
            p_mask = pred == p
            inter = np.logical_and(t_mask, p_mask).sum()
            if inter:
                iou[t - 1, p - 1] = inter / np.logical_or(t_mask, p_mask).sum()
    matched = iou > 0.5
    assert (matched.sum(axis=0) <= 1).all() and (matched.sum(axis=1) <= 1).all()
    tp = int(matched.sum())
    return tp, n_pred - tp, n_true - tp, float(iou[matched].sum())


def pq_from(tp: float, fp: float, fn: float, sum_iou: float) -> tuple[float, float, float]:
    """DQ, SQ, PQ with the challenge's 1e-6 terms."""
    dq = tp / ((tp + 0.5 * fp + 0.5 * fn) + 1.0e-6)
    sq = sum_iou / (tp + 1.0e-6)
    return dq, sq, dq * sq


def class_map_of(inst: np.ndarray, cls: np.ndarray, c: int) -> np.ndarray:
    """The instance map restricted to the pixels of class ``c``."""
    return inst * (cls == c)


def aji(true: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard index of one image (MoNuSeg's definition); NaN if both empty."""
    true, pred = relabel(true), relabel(pred)
    n_true, n_pred = int(true.max()), int(pred.max())
    inter = np.zeros((n_true, n_pred))
    union = np.zeros((n_true, n_pred))
    for t in range(1, n_true + 1):
        for p in range(1, n_pred + 1):
            t_mask, p_mask = true == t, pred == p
            if np.logical_and(t_mask, p_mask).any():
                inter[t - 1, p - 1] = np.logical_and(t_mask, p_mask).sum()
                union[t - 1, p - 1] = np.logical_or(t_mask, p_mask).sum()
    score = inter / (union + 1.0e-6)
    total_inter, total_union = 0.0, 0.0
    used = set()
    for t in range(n_true):
        if score[t].max(initial=0.0) > 0:
            p = int(np.argmax(score[t]))
            total_inter += inter[t, p]
            total_union += union[t, p]
            used.add(p)
        else:
            total_union += (true == t + 1).sum()
    for p in range(n_pred):
        if p not in used:
            total_union += (pred == p + 1).sum()
    return total_inter / total_union if total_union else float("nan")


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Binary Dice of the foregrounds; NaN if both empty."""
    t, p = true > 0, pred > 0
    total = t.sum() + p.sum()
    return 2.0 * np.logical_and(t, p).sum() / total if total else float("nan")


def count(labels: np.ndarray, n_classes: int, crop: int) -> np.ndarray:
    """N x (n_classes - 1) nuclei per class on the central crop x crop region."""
    n, h, w, _ = labels.shape
    top, left = (h - crop) // 2, (w - crop) // 2
    out = np.zeros((n, n_classes - 1), dtype=np.int64)
    for i in range(n):
        inst = labels[i, top : top + crop, left : left + crop, 0]
        cls = labels[i, top : top + crop, left : left + crop, 1]
        for c in range(1, n_classes):
            ids = np.unique(class_map_of(inst, cls, c))
            out[i, c - 1] = int((ids != 0).sum())
    return out


def reference_metrics(pred: np.ndarray, true: np.ndarray, n_classes: int) -> dict:
    """mPQ+ (pooled), per-class stats, binary PQ, PanNuke mPQ, AJI and Dice of a batch."""
    n = len(true)
    pooled = np.zeros((n_classes - 1, 4))
    pq_images, mpq_images, aji_images, dice_images = [], [], [], []
    for i in range(n):
        t_inst, t_cls = true[i, ..., 0], true[i, ..., 1]
        p_inst, p_cls = pred[i, ..., 0], pred[i, ..., 1]
        pq_images.append(pq_from(*pq_info(t_inst, p_inst))[2])
        present = []
        for c in range(1, n_classes):
            info = pq_info(class_map_of(t_inst, t_cls, c), class_map_of(p_inst, p_cls, c))
            pooled[c - 1] += info
            if info[0] + info[2] > 0:  # the class is in the truth of this image
                present.append(pq_from(*info)[2])
        mpq_images.append(np.mean(present) if present else float("nan"))
        aji_images.append(aji(t_inst, p_inst))
        dice_images.append(dice(t_inst, p_inst))
    per_class = [pq_from(*row) for row in pooled]
    return {
        "mpq+": float(np.mean([pq for _, _, pq in per_class])),
        "pq": float(np.mean(pq_images)),
        "tp": pooled[:, 0],
        "fp": pooled[:, 1],
        "fn": pooled[:, 2],
        "sum_iou": pooled[:, 3],
        "dq": np.array([dq for dq, _, _ in per_class]),
        "sq": np.array([sq for _, sq, _ in per_class]),
        "pq_per_class": np.array([pq for _, _, pq in per_class]),
        "pq_per_image": np.array(pq_images),
        "mpq_per_image": np.array(mpq_images),
        "aji_per_image": np.array(aji_images),
        "dice_per_image": np.array(dice_images),
    }
