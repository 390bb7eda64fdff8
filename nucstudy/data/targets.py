"""Training targets of the three heads: nuclear pixels (NP), distance maps (HV), types (TP)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def make_targets(inst: np.ndarray, cls: np.ndarray) -> dict[str, np.ndarray]:
    """Build the NP, HV and TP targets of one patch.

    HV: for every nucleus, each pixel's horizontal (x) and vertical (y) offset from the
    nucleus's centre of mass (not rounded), scaled separately on each side of the centre so
    that the offsets span [-1, 1]: negative offsets are divided by the largest negative
    offset's magnitude, positive ones by the largest positive offset. A nucleus one pixel wide
    along an axis gets 0 along it.

    Unlike HoVer-Net's reference code, which leaves nuclei under 30 px and ones it cannot pad
    at the patch border at zero, every nucleus gets an HV target here, small ones and ones
    cut by the border included.

    Args:
        inst: H x W integer instance map, 0 background; ids need not be contiguous.
        cls: H x W integer class map (class ids of a scheme, 0 background).

    Returns:
        dict with ``"np"`` H x W uint8 (1 on nuclei), ``"hv"`` 2 x H x W float32 (channel 0
        horizontal, 1 vertical) and ``"tp"`` H x W int64 (the class map).
    """
    if inst.ndim != 2 or inst.shape != cls.shape:
        raise ValueError(
            f"inst and cls must be two H x W maps of one shape, got {inst.shape} and {cls.shape}"
        )
    if not (np.issubdtype(inst.dtype, np.integer) and np.issubdtype(cls.dtype, np.integer)):
        raise ValueError(f"inst and cls must be integer maps, got {inst.dtype} and {cls.dtype}")
    foreground = inst > 0
    hv = np.zeros((2,) + inst.shape, dtype=np.float32)
    if foreground.any():
        ids, compact = np.unique(inst[foreground], return_inverse=True)
        labels = np.zeros(inst.shape, dtype=np.int64)
        labels[foreground] = compact + 1
        index = np.arange(1, ids.size + 1)
        rows, cols = np.nonzero(foreground)
        pixel_label = labels[rows, cols]
        for axis, coords in ((0, cols), (1, rows)):
            coords = coords.astype(np.float64)
            centre = ndimage.mean(coords, pixel_label, index)
            offset = coords - centre[pixel_label - 1]
            low = ndimage.minimum(offset, pixel_label, index)[pixel_label - 1]
            high = ndimage.maximum(offset, pixel_label, index)[pixel_label - 1]
            scaled = np.zeros_like(offset)
            negative, positive = offset < 0, offset > 0
            scaled[negative] = offset[negative] / -low[negative]
            scaled[positive] = offset[positive] / high[positive]
            hv[axis, rows, cols] = scaled
    return {
        "np": foreground.astype(np.uint8),
        "hv": hv,
        "tp": cls.astype(np.int64),
    }


def network_like_maps(
    targets: dict[str, np.ndarray],
    rng: np.random.Generator,
    blur_sigma: float = 1.0,
    noise_std: float = 0.1,
    n_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head outputs that look like a network's: the perfect targets blurred and noisy.

    For teaching and for testing post-processing and metrics without a trained model.

    Args:
        targets: one patch's targets from :func:`make_targets`.
        rng: the generator of the noise.
        blur_sigma: Gaussian blur of the maps, in pixels.
        noise_std: standard deviation of the Gaussian noise added after the blur.
        n_classes: give K to get class probabilities (the one-hot class map blurred,
            noisy and renormalised); None keeps the exact class map.

    Returns:
        ``(np_prob, hv, tp)``: H x W float32 nucleus probability in [0, 1], 2 x H x W float32
        HV map in [-1, 1], and K x H x W float32 class probabilities (or the H x W class map).
    """

    def blur(array: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(array.astype(np.float32), blur_sigma)

    def noise(shape: tuple[int, ...]) -> np.ndarray:
        return rng.normal(0, noise_std, shape).astype(np.float32)

    np_prob = np.clip(blur(targets["np"]) + noise(targets["np"].shape), 0, 1)
    hv = np.clip(np.stack([blur(ch) for ch in targets["hv"]]) + noise(targets["hv"].shape), -1, 1)
    if n_classes is None:
        return np_prob, hv, targets["tp"]
    onehot = np.stack([targets["tp"] == c for c in range(n_classes)])
    tp = np.clip(np.stack([blur(ch) for ch in onehot]) + noise(onehot.shape), 0, None)
    return np_prob, hv, tp / np.maximum(tp.sum(axis=0), 1e-6)


def instance_targets(inst: np.ndarray, cls: np.ndarray) -> dict[str, np.ndarray]:
    """Mask R-CNN's targets of one patch: one box, mask and class per nucleus.

    A nucleus's class is the most common non-background class under its mask; a nucleus
    with no class pixel under it is left out (it has no type to learn). A patch without
    nuclei gives empty arrays, which torchvision trains on as a patch of background only.

    Args:
        inst: H x W integer instance map, 0 background; ids need not be contiguous.
        cls: H x W integer class map (class ids of a scheme, 0 background).

    Returns:
        dict with ``"boxes"`` K x 4 float32 ``(x0, y0, x1, y1)`` in pixels, the edges of
        the nucleus's pixels (so a one-pixel nucleus has a 1 x 1 box), ``"labels"`` K
        int64 class ids and ``"masks"`` K x H x W uint8, for the K nuclei in id order.
    """
    if inst.ndim != 2 or inst.shape != cls.shape:
        raise ValueError(
            f"inst and cls must be two H x W maps of one shape, got {inst.shape} and {cls.shape}"
        )
    boxes, labels, masks = [], [], []
    for index, window in enumerate(ndimage.find_objects(inst.astype(np.int64)), start=1):
        if window is None:
            continue
        mask = inst[window] == index
        classes = cls[window][mask]
        classes = classes[classes > 0]
        if classes.size == 0:
            continue
        rows, cols = window
        boxes.append((cols.start, rows.start, cols.stop, rows.stop))
        labels.append(np.bincount(classes).argmax())
        full = np.zeros(inst.shape, np.uint8)
        full[window][mask] = 1
        masks.append(full)
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, np.int64),
        "masks": np.stack(masks) if masks else np.zeros((0, *inst.shape), np.uint8),
    }
