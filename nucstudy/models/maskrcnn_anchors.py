"""How well Mask R-CNN's anchors fit the nuclei of a data set: each nucleus's best anchor IoU.

The RPN learns from anchors that overlap a nucleus at IoU >= 0.7 (and each nucleus's
best-matching anchors), so the share of nuclei with a well-fitting anchor at the model's
scale bounds what it can find. :func:`anchor_coverage` measures that share, e.g.
``anchor_coverage(labels, model.rpn.anchor_generator, model.upscale)`` for a
:class:`~nucstudy.models.maskrcnn.NucleusMaskRCNN`; the module docstring of
:mod:`nucstudy.models.maskrcnn` gives the measured shares on CoNSeP.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from scipy import ndimage
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from nucstudy.models.maskrcnn import FPN_STRIDES


def nucleus_boxes(inst: np.ndarray) -> np.ndarray:
    """Boxes of the nuclei of an H x W integer instance map (0 background), as
    :func:`~nucstudy.data.targets.instance_targets` makes them: K x 4 float32
    ``(x0, y0, x1, y1)``, the edges of each nucleus's pixels, in id order."""
    windows = ndimage.find_objects(np.asarray(inst).astype(np.int64))
    boxes = [(c.start, r.start, c.stop, r.stop) for r, c in (w for w in windows if w)]
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def image_anchors(generator: AnchorGenerator, height: int, width: int) -> torch.Tensor:
    """The anchors ``generator`` places on one image of height x width network pixels.

    The image is padded to a multiple of 32, as the model's transform pads it, and the FPN's
    feature maps have the sizes its ResNet and max-pool give (each stride halves with
    rounding up). Returns A x 4 float32 ``(x0, y0, x1, y1)`` in network pixels.
    """
    padded = (math.ceil(height / 32) * 32, math.ceil(width / 32) * 32)
    grid, features = [side // FPN_STRIDES[0] for side in padded], []
    for _ in FPN_STRIDES:
        features.append(torch.zeros(1, 1, *grid))
        grid = [math.ceil(side / 2) for side in grid]
    images = ImageList(torch.zeros(1, 1, *padded), [(height, width)])
    return generator(images, features)[0]


def best_anchor_iou(
    labels: np.ndarray | Iterable[np.ndarray], generator: AnchorGenerator, upscale: float
) -> np.ndarray:
    """Each nucleus's highest IoU with any anchor, at the model's scale.

    Args:
        labels: N x H x W x 2 CoNIC labels, N x H x W instance maps, or an iterable of
            H x W (x 2) maps; images are scaled by ``upscale`` (rounded as the model does).
        generator: the RPN's anchor generator (``model.rpn.anchor_generator``).
        upscale: the model's scale (``model.upscale``).

    Returns:
        float32 array with one IoU in [0, 1] per nucleus, images in order, ids in order.
    """
    cache: dict[tuple[int, int], torch.Tensor] = {}
    best = []
    for label in labels:
        inst = label[..., 0] if label.ndim == 3 else label
        boxes = torch.from_numpy(nucleus_boxes(inst)) * upscale
        if not len(boxes):
            continue
        size = (round(inst.shape[0] * upscale), round(inst.shape[1] * upscale))
        if size not in cache:
            cache[size] = image_anchors(generator, *size)
        best.append(box_iou(boxes, cache[size]).max(dim=1).values)
    return torch.cat(best).numpy() if best else np.zeros(0, np.float32)


def anchor_coverage(
    labels: np.ndarray | Iterable[np.ndarray],
    generator: AnchorGenerator,
    upscale: float,
    thresholds: Sequence[float] = (0.5, 0.7),
) -> dict[float, float]:
    """Share of the nuclei of ``labels`` that have an anchor at IoU >= each threshold.

    See :func:`best_anchor_iou` for the arguments; e.g.
    ``anchor_coverage(labels, model.rpn.anchor_generator, model.upscale)``. Returns
    threshold -> share in [0, 1] (NaN where there are no nuclei).
    """
    best = best_anchor_iou(labels, generator, upscale)
    return {t: float((best >= t).mean()) if len(best) else math.nan for t in thresholds}
