"""How training patches are drawn: once each per epoch, or more often where rare classes are.

``"rare"`` sampling is repeat-factor sampling (Gupta et al., LVIS, 2019, with threshold 1):
a class present in a share ``f_c`` of the training patches gets the factor ``1 / sqrt(f_c)``,
and a patch is drawn with a probability proportional to the largest factor of the classes
it holds (1 for a patch without nuclei). A class present in one patch in nine is then drawn
about three times as often as under uniform sampling, while a patch of common classes keeps
a factor near 1.
"""

from __future__ import annotations

import numpy as np

#: How training patches are drawn (see :func:`rare_class_weights`).
SAMPLINGS = ("uniform", "rare")


def rare_class_weights(class_maps: np.ndarray, n_classes: int) -> np.ndarray:
    """Sampling weights of patches by the rarest class each holds.

    Args:
        class_maps: N x H x W integer class maps (0 background, 1..n_classes-1 nuclei).
        n_classes: classes of the scheme, background included.

    Returns:
        N float64 weights, each ``max(1, max over classes c in the patch of 1/sqrt(f_c))``
        with ``f_c`` the share of the N patches that hold class c.

    Raises:
        ValueError: a class id outside 0..n_classes-1.
    """
    class_maps = np.asarray(class_maps)
    if class_maps.ndim != 3:
        raise ValueError(f"class maps must be N x H x W, got shape {class_maps.shape}")
    if class_maps.size and (class_maps.min() < 0 or class_maps.max() >= n_classes):
        raise ValueError(f"class ids must lie in 0..{n_classes - 1}")
    present = np.stack(
        [(class_maps == c).any(axis=(1, 2)) for c in range(1, n_classes)], axis=1
    )  # N x (n_classes - 1)
    share = present.mean(axis=0)
    factor = np.where(share > 0, 1 / np.sqrt(np.maximum(share, 1e-12)), 1.0)
    return np.maximum(1.0, (present * factor).max(axis=1, initial=0.0))
