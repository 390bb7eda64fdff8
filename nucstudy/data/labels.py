"""Label arrays in the CoNIC layout: their checks, and the nuclei per class counted as CoNIC does.

A label array is N x H x W x 2 integer: channel 0 the instance map (0 background, 1..n),
channel 1 the class map (0 background, class ids of a :class:`~nucstudy.data.classes.ClassScheme`).
"""

from __future__ import annotations

import numpy as np

from nucstudy.common.votes import class_votes
from nucstudy.data.classes import CONIC, ClassScheme

#: CoNIC counts nuclei on the central 224 x 224 region of each 256 x 256 patch.
CHALLENGE_CROP = 224

_CHUNK = 256  # patches validated or counted at a time, to bound memory on memory-mapped data


def challenge_crop(size: int) -> int:
    """Side of the central counting region for a patch of side ``size`` px.

    The challenge counts on 224 of 256 px (a 16 px margin each side); other patch sizes keep
    that ratio: ``size * 7 // 8`` (224 for 256, 112 for 128).
    """
    return size * 7 // 8


def count_nuclei(
    labels: np.ndarray, scheme: ClassScheme = CONIC, crop: int | None = CHALLENGE_CROP
) -> np.ndarray:
    """Count nuclei per class on the central ``crop`` x ``crop`` region, as CoNIC does.

    A nucleus counts for class c if any of its pixels inside the region has class c (a
    nucleus painted with two classes counts once for each). Instance ids need not be
    contiguous.

    Args:
        labels: N x H x W x 2 integer array, channel 0 instance ids, channel 1 class ids.
        scheme: the class scheme the class ids follow.
        crop: side of the central square in pixels; ``None`` counts the whole patch.

    Returns:
        N x K int64 array, K = number of foreground classes, column k for class id k + 1.
    """
    labels = check_label_layout(labels, "labels")
    n, height, width, _ = labels.shape
    if crop is not None:
        if crop > min(height, width) or crop <= 0:
            raise ValueError(
                f"crop={crop} does not fit patches of {height} x {width} px; "
                f"use crop={challenge_crop(min(height, width))} (the challenge's 7/8) or None"
            )
        top, left = (height - crop) // 2, (width - crop) // 2
        labels = labels[:, top : top + crop, left : left + crop]
    n_fg = scheme.n_classes - 1
    counts = np.zeros((n, n_fg), dtype=np.int64)
    for start in range(0, n, _CHUNK):
        chunk = np.asarray(labels[start : start + _CHUNK])
        scheme.check_ids(chunk[..., 1], "labels class map")
        for offset, (_, cls) in enumerate(_unique_instance_class_pairs(chunk)):
            counts[start + offset] = np.bincount(cls[cls > 0] - 1, minlength=n_fg)
    return counts


def median_diameters(labels: np.ndarray, scheme: ClassScheme, mpp: float) -> np.ndarray:
    """The median size of each class's nuclei: the diameter of the circle of a nucleus's
    area, over the nuclei that do not touch the patch's edge (a cut nucleus looks smaller).

    A nucleus's class is the class of most of its pixels.

    Args:
        labels: N x H x W x 2 integer array, channel 0 instance ids, channel 1 class ids.
        scheme: the class scheme the class ids follow.
        mpp: microns per pixel of the patches.

    Returns:
        float64 array (K,) in µm, K = number of foreground classes (column k for class id
        k + 1); NaN for a class without a whole nucleus.
    """
    labels = check_label_layout(labels, "labels")
    n_fg = scheme.n_classes - 1
    diameters: list[list[float]] = [[] for _ in range(n_fg)]
    for start in range(0, len(labels), _CHUNK):
        for patch in np.asarray(labels[start : start + _CHUNK]):
            inst, cls = patch[..., 0].astype(np.int64), patch[..., 1].astype(np.int64)
            fg = inst > 0
            if not fg.any():
                continue
            ids, which = np.unique(inst[fg], return_inverse=True)
            majority = class_votes(which, cls[fg], ids.size, scheme.n_classes).argmax(axis=1)
            areas = np.bincount(which, minlength=ids.size)
            edge = np.concatenate([inst[0], inst[-1], inst[:, 0], inst[:, -1]])
            whole = ~np.isin(ids, edge) & (majority > 0)
            for cid, area in zip(majority[whole], areas[whole], strict=True):
                diameters[cid - 1].append(2.0 * np.sqrt(area / np.pi) * mpp)
    return np.array([np.median(d) if d else np.nan for d in diameters], dtype=np.float64)


def _unique_instance_class_pairs(chunk: np.ndarray):
    """Yield, per patch, the distinct (instance id, class id) pairs with instance id > 0."""
    for patch in chunk:
        inst = patch[..., 0].astype(np.int64).ravel()
        cls = patch[..., 1].astype(np.int64).ravel()
        fg = inst > 0
        if not fg.any():
            yield np.zeros(0, np.int64), np.zeros(0, np.int64)
            continue
        high = int(cls.max()) + 1
        pairs = np.unique(inst[fg] * high + cls[fg])
        yield pairs // high, pairs % high


def check_label_layout(labels: np.ndarray, where: str = "labels") -> np.ndarray:
    """Check the N x H x W x 2 integer layout of a label array; return it as an array.

    Raises:
        ValueError: naming ``where``, for a wrong shape or a non-integer dtype. Memory maps
            are returned as they are (nothing is read).
    """
    if not isinstance(labels, np.ndarray):
        labels = np.asarray(labels)
    if labels.ndim != 4 or labels.shape[-1] != 2:
        raise ValueError(f"{where}: expected shape N x H x W x 2, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: expected an integer dtype, got {labels.dtype}")
    return labels


def validate_labels(labels: np.ndarray, scheme: ClassScheme, where: str = "labels") -> None:
    """Check a label array's layout and content; raise ValueError naming ``where`` if wrong.

    Checks: shape N x H x W x 2, integer dtype, no negative instance id, class ids within the
    scheme, class foreground equal to instance foreground, and one class per instance.
    Memory-mapped arrays are read in chunks.
    """
    labels = check_label_layout(labels, where)
    for start in range(0, labels.shape[0], _CHUNK):
        chunk = np.asarray(labels[start : start + _CHUNK])
        inst, cls = chunk[..., 0], chunk[..., 1]
        if inst.size and int(inst.min()) < 0:
            raise ValueError(f"{where}: negative instance id in patches {start}..")
        scheme.check_ids(cls, where)
        if np.any((inst > 0) != (cls > 0)):
            patch = start + int(np.argmax(np.any((inst > 0) != (cls > 0), axis=(1, 2))))
            raise ValueError(
                f"{where}: patch {patch} has pixels where the instance map and the class map "
                "disagree on foreground"
            )
        for offset, (ids, _) in enumerate(_unique_instance_class_pairs(chunk)):
            if ids.size != np.unique(ids).size:
                raise ValueError(
                    f"{where}: patch {start + offset} has a nucleus painted with more than "
                    "one class"
                )
