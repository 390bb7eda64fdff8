"""Where the tissue is on a slide: a mask at thumbnail resolution, and the thumbnail drawn.

The mask (:func:`tissue_mask`) is the classical one, made of scikit-image steps:

1. **Saturation.** H&E-stained tissue is coloured (pink to purple) and glass is white or
   grey, so the HSV saturation (:func:`skimage.color.rgb2hsv`) separates them better than
   brightness does (bubbles, dust and pale fat are bright as glass; pen marks are dark as
   nuclei).
2. **Otsu's threshold** (:func:`skimage.filters.threshold_otsu`) on the saturation of the
   whole thumbnail splits it into two classes; the threshold is at least
   :data:`MIN_SATURATION`, so that a slide of glass alone (whose saturation is all noise)
   has no tissue.
3. **Closing** (:func:`skimage.morphology.closing` with a disk of
   :data:`CLOSING_UM` um) joins the tissue torn apart by pale or white spots (lumens, fat).
4. **Small objects and holes** (:func:`skimage.morphology.remove_small_objects` and
   :func:`~skimage.morphology.remove_small_holes`, both :data:`MIN_AREA_UM2` um2): specks
   of dust or debris are dropped, and small holes inside the tissue are filled.

A mask of one's own (QuPath's, a pathologist's) replaces it: :func:`read_mask` reads any
image, non-zero pixels tissue, and resizes it to the thumbnail.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import cv2
import numpy as np
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu
from skimage.morphology import closing, disk, remove_small_holes, remove_small_objects

from nucstudy.data.classes import ClassScheme
from nucstudy.segment.images import ImageError, read_image

#: Saturation below which nothing is tissue, whatever Otsu's threshold says (0..1).
MIN_SATURATION = 0.07
#: Radius of the closing's disk, in um.
CLOSING_UM = 16.0
#: Smallest piece of tissue kept, and largest hole filled, in um2 (70 x 70 um).
MIN_AREA_UM2 = 5000.0
#: Resolution of thumbnails and masks, in um/px (coarser for slides whose longest side
#: would exceed :data:`MAX_THUMBNAIL_SIDE` px).
THUMBNAIL_MPP = 4.0
MAX_THUMBNAIL_SIDE = 4096


def thumbnail_mpp(width_um: float, height_um: float, slide_mpp: float) -> float:
    """The um/px of a slide's thumbnail and mask: :data:`THUMBNAIL_MPP`, coarser if the
    longest side would exceed :data:`MAX_THUMBNAIL_SIDE` px, never finer than the slide."""
    return max(THUMBNAIL_MPP, max(width_um, height_um) / MAX_THUMBNAIL_SIDE, slide_mpp)


def tissue_mask(thumbnail: np.ndarray, mpp: float) -> np.ndarray:
    """The tissue of a slide's thumbnail (the steps are in the module's notes).

    Args:
        thumbnail: H x W x 3 uint8 RGB, the whole slide.
        mpp: the thumbnail's resolution in um/px (sizes of the steps are in um).

    Returns:
        H x W bool, True on tissue.
    """
    saturation = rgb2hsv(thumbnail)[..., 1]
    threshold = MIN_SATURATION
    if saturation.max() > saturation.min():
        threshold = max(threshold, float(threshold_otsu(saturation)))
    mask = saturation > threshold
    radius = max(1, round(CLOSING_UM / mpp))
    mask = closing(np.pad(mask, radius), disk(radius))[radius:-radius, radius:-radius]
    min_px = max(1, round(MIN_AREA_UM2 / mpp**2))
    mask = _drop_small(remove_small_objects, mask, min_px)
    return _drop_small(remove_small_holes, mask, min_px)


def _drop_small(function, mask: np.ndarray, min_px: int) -> np.ndarray:
    """``remove_small_objects`` or ``remove_small_holes`` below ``min_px`` px, in the
    keyword of scikit-image >= 0.26 (``max_size``) or before it."""
    if min_px <= 1:
        return mask
    try:
        return function(mask, max_size=min_px - 1)
    except TypeError:  # scikit-image < 0.26
        return function(mask, min_px)


def read_mask(path: str | os.PathLike, height: int, width: int) -> np.ndarray:
    """A tissue mask of one's own, as H x W bool at the thumbnail's size.

    Args:
        path: an image (PNG, JPEG, TIFF) of the whole slide at any size, non-zero (in any
            channel) on tissue; it is resized to ``height`` x ``width`` (nearest neighbour).
        height, width: the thumbnail's size in px.

    Raises:
        ImageError: the file cannot be read, or its shape is not the slide's (aspect ratio
            more than 5 % away).
    """
    image = read_image(path)
    aspect, slide_aspect = image.shape[1] / image.shape[0], width / height
    if abs(np.log(aspect / slide_aspect)) > np.log(1.05):
        raise ImageError(
            f"{path}: a mask of {image.shape[1]} x {image.shape[0]} px does not have the "
            f"slide's aspect ratio ({width} x {height} px at thumbnail size)"
        )
    mask = (image.max(axis=-1) > 0).astype(np.uint8)
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST) > 0


def box_has_tissue(mask: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """Whether a box holds any tissue pixel.

    Args:
        mask: H x W bool, the tissue mask.
        box: (top, bottom, left, right) in mask px (floats; every mask pixel the box
            touches counts).
    """
    top, bottom, left, right = box
    rows = slice(max(0, int(np.floor(top))), max(0, int(np.ceil(bottom))))
    cols = slice(max(0, int(np.floor(left))), max(0, int(np.ceil(right))))
    return bool(mask[rows, cols].any())


def draw_thumbnail(
    thumbnail: np.ndarray,
    mask: np.ndarray,
    boxes: Iterable[tuple[float, float, float, float]],
    points: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    scheme: ClassScheme,
) -> np.ndarray:
    """The thumbnail with the tissue mask (tinted green, outlined), the processed regions
    (blue rectangles) and the nuclei (one dot each, in class colours) drawn on it.

    Args:
        thumbnail: H x W x 3 uint8 RGB.
        mask: H x W bool tissue mask.
        boxes: (top, bottom, left, right) of each processed region, in thumbnail px.
        points: (x, y, class_id) arrays of nuclei centroids in thumbnail px (float, float,
            int), in any number of pieces.
        scheme: the classes' colours.

    Returns:
        H x W x 3 uint8 RGB.
    """
    out = thumbnail.astype(np.float32)
    out[mask] = 0.75 * out[mask] + 0.25 * np.array([0, 200, 0], np.float32)
    out = out.astype(np.uint8)
    colours = np.asarray(scheme.colours, np.uint8)
    height, width = mask.shape
    for x, y, class_id in points:
        cols = np.clip(np.floor(x).astype(np.int64), 0, width - 1)
        rows = np.clip(np.floor(y).astype(np.int64), 0, height - 1)
        out[rows, cols] = colours[class_id]
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (0, 140, 0), 1)
    for top, bottom, left, right in boxes:
        corner0 = (int(np.floor(left)), int(np.floor(top)))
        corner1 = (int(np.ceil(right)) - 1, int(np.ceil(bottom)) - 1)
        cv2.rectangle(out, corner0, corner1, (40, 80, 255), 1)
    return out
