"""Mask R-CNN's detections as CoNIC-layout labels: threshold, resolve overlaps, clean up.

Mask R-CNN predicts each nucleus on its own, so its masks may overlap and may be cut into
pieces by higher-scoring neighbours. :func:`detections_to_labels` turns one image's
detections into an instance map and a class map:

1. detections scoring below ``score_threshold`` are dropped; a mask pixel belongs to the
   nucleus where its probability is at least ``mask_threshold``. The score is what the
   network gives: with :class:`~nucstudy.models.maskrcnn.NucleusMaskRCNN`'s default rule the
   nucleus probability, one minus the background probability (the class being the most
   probable foreground class), so a nucleus is kept however its class probability spreads;
2. where masks overlap, the pixel goes to the higher-scoring nucleus;
3. of what each nucleus keeps, only its largest connected piece stays, and nuclei left
   with fewer than ``min_area`` pixels are removed;
4. the survivors are numbered 1..n in descending score; the class map carries each one's
   predicted class.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Defaults of the conversion: a detection counts from this score on (a nucleus score, or
#: a threshold chosen on validation patches instead), a mask pixel from this probability on.
SCORE_THRESHOLD, MASK_THRESHOLD = 0.5, 0.5

#: The smallest nucleus kept, in pixels at 0.25 um/px (40x), as HoVer-Net's post-processing
#: (10 px); scaled by the squared ratio of resolutions elsewhere.
MIN_AREA_40X = 10


def min_area_at(mpp: float) -> int:
    """The smallest nucleus kept at ``mpp`` um/px: :data:`MIN_AREA_40X` scaled by area."""
    return max(1, round(MIN_AREA_40X * (0.25 / mpp) ** 2))


def detections_to_labels(
    scores: np.ndarray,
    classes: np.ndarray,
    masks: np.ndarray,
    score_threshold: float = SCORE_THRESHOLD,
    mask_threshold: float = MASK_THRESHOLD,
    min_area: int = 1,
) -> np.ndarray:
    """One image's detections as an H x W x 2 CoNIC label map (instance ids, class ids).

    Args:
        scores: K float detection scores in [0, 1] (nucleus scores, ``1 - p(background)``,
            under the network's default rule).
        classes: K integer class ids (of the scheme; 0 is never predicted).
        masks: K x H x W float mask probabilities in [0, 1], pasted into the image.
        score_threshold: lowest score of a detection that is kept.
        mask_threshold: lowest probability of a mask pixel that is kept.
        min_area: fewest pixels a nucleus may keep after the overlaps are resolved.

    Returns:
        H x W x 2 int32: instance ids 1..n in descending score, and class ids.
    """
    scores, classes = np.asarray(scores), np.asarray(classes)
    if masks.ndim != 3 or not len(scores) == len(classes) == len(masks):
        raise ValueError(
            f"expected K scores, K classes and K x H x W masks, got {scores.shape}, "
            f"{classes.shape} and {masks.shape}"
        )
    height, width = masks.shape[1:]
    owner = np.zeros((height, width), np.int64)  # detection index + 1 that owns each pixel
    order = [k for k in np.argsort(-scores, kind="stable") if scores[k] >= score_threshold]
    for k in reversed(order):  # lowest score first, so that higher scores overwrite
        owner[masks[k] >= mask_threshold] = k + 1
    labels = np.zeros((height, width, 2), np.int32)
    next_id = 1
    windows = ndimage.find_objects(owner)
    for k in order:
        window = windows[k] if k < len(windows) else None
        if window is None:
            continue
        piece = _largest_piece(owner[window] == k + 1)
        if piece.sum() < min_area:
            continue
        labels[window][piece] = (next_id, int(classes[k]))
        next_id += 1
    return labels


def _largest_piece(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (the mask itself if whole)."""
    pieces, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(pieces.ravel())[1:]
    return pieces == 1 + int(np.argmax(sizes))
