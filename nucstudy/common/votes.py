"""Class votes: how many pixels of each object carry each class.

A nucleus's class is the class most of its pixels carry, in the labels (the data summary),
in the matching of the metrics and in the post-processing of the TP head alike;
:func:`class_votes` counts the votes that each of them then decides by its own rule.
"""

from __future__ import annotations

import numpy as np

__all__ = ["class_votes"]


def class_votes(
    objects: np.ndarray,
    classes: np.ndarray,
    n_objects: int,
    n_classes: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """The votes of pixels for classes, object by object.

    Args:
        objects: int (P,) the object (0 .. n_objects - 1) of each pixel or group of pixels.
        classes: int (P,) its class id (0 .. n_classes - 1).
        n_objects: how many objects there are (an object without pixels gets no votes).
        n_classes: how many class ids there are.
        weights: (P,) the pixels each entry stands for; None: one each.

    Returns:
        (n_objects, n_classes) array: row i, column c, the pixels of object i of class c
        (int64, or float64 with ``weights``).

    Raises:
        ValueError: an object or class id outside its range.
    """
    objects, classes = np.asarray(objects, dtype=np.int64), np.asarray(classes, dtype=np.int64)
    for name, ids, n in (("object", objects, n_objects), ("class", classes, n_classes)):
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(f"{name} ids must lie in 0..{n - 1}, got {ids.min()}..{ids.max()}")
    votes = np.bincount(objects * n_classes + classes, weights, minlength=n_objects * n_classes)
    return votes.reshape(n_objects, n_classes)
