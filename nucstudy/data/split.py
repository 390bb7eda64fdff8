"""Train/validation splits grouped by source image."""

from __future__ import annotations

import numpy as np

from nucstudy.data.conic import ConicData


def split_by_source(
    data: ConicData, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split patch indices so that no source image has patches on both sides.

    Source images (``data.patch_info["source"]``) are shuffled with ``seed`` and moved to
    the validation side one at a time until it holds at least ``val_fraction`` of the
    patches (at least one source, and at least one source left for training).

    Returns:
        (train_indices, val_indices): sorted int64 arrays of patch indices.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    sources = data.patch_info["source"].to_numpy()
    unique = np.unique(sources)
    if unique.size < 2:
        raise ValueError(
            f"cannot split by source: all {len(sources)} patches come from one source image"
        )
    order = np.random.default_rng(seed).permutation(unique)
    sizes = np.array([np.count_nonzero(sources == s) for s in order])
    target = val_fraction * len(sources)
    n_val = int(np.searchsorted(np.cumsum(sizes), target) + 1)
    n_val = min(max(n_val, 1), unique.size - 1)
    is_val = np.isin(sources, order[:n_val])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
