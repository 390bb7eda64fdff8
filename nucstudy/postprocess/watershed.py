"""HoVer-Net's marker-controlled watershed (Graham et al., 2019), one function per stage.

So that a notebook can show each stage:

1. :func:`foreground_mask`: NP probability >= 0.5, blobs under ``min_blob_px`` removed.
2. :func:`hv_energy`: each HV channel min-max normalised, differentiated along its own axis
   with a Sobel kernel, the response turned into ``1 - normalised``; the maximum of the two
   inside the foreground. High energy = a boundary between nuclei.
3. :func:`markers_from_energy`: foreground minus (energy >= 0.4), holes filled, opened with
   an elliptic kernel, small markers removed, labelled.
4. :func:`watershed_instances`: watershed of the negated, blurred ``1 - energy`` from the
   markers, inside the foreground; ids 1..n.

:func:`segment_instances` runs them in order. The published constants (Sobel kernel 21,
5 x 5 opening, 10 px minimum sizes) are for 0.25 um/px (40x); CoNIC is 0.5 um/px (20x),
where those constants merge touching nuclei. All resolution logic lives in
:meth:`WatershedParams.at`, which scales kernel sizes and pixel areas to a resolution;
:class:`Thresholds` carries the tunable thresholds (foreground, energy, smallest marker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
from skimage.segmentation import watershed

#: Resolution (um/px) HoVer-Net's published post-processing constants were tuned for.
HOVER_MPP = 0.25


_ELLIPSE = cv2.MORPH_ELLIPSE


@dataclass(frozen=True)
class WatershedParams:
    """Constants of the marker-controlled watershed. Defaults: HoVer-Net's, at 0.25 um/px.

    Attributes:
        fg_threshold: NP probability at or above which a pixel is nucleus.
        min_blob_px: foreground blobs with fewer pixels are dropped.
        sobel_ksize: Sobel kernel side in px (odd, 1..31).
        energy_threshold: energy at or above which a pixel is no marker.
        open_ksize: side in px of the elliptic kernel that opens the markers (odd, >= 1).
        min_marker_px: markers with fewer pixels are dropped.
        blur_ksize: side in px of the Gaussian blur of the watershed surface (odd, >= 1).
    """

    fg_threshold: float = 0.5
    min_blob_px: int = 10
    sobel_ksize: int = 21
    energy_threshold: float = 0.4
    open_ksize: int = 5
    min_marker_px: int = 10
    blur_ksize: int = 3

    @classmethod
    def at(cls, mpp: float) -> WatershedParams:
        """HoVer-Net's constants rescaled to ``mpp`` um/px: the one place mpp enters.

        With ``s = 0.25 / mpp``, each kernel side becomes the largest odd integer not above
        ``side x s`` (at least 1; Sobel at least 3, at most 31, OpenCV's limits) and each
        minimum size ``ceil(size x s**2)`` pixels. Thresholds do not change. At 0.25 um/px
        these are the published constants; at 0.5 um/px: Sobel 9, no opening (1), no blur
        (1), minimum sizes 3 px. Keeping the 40x constants at 20x merges touching nuclei
        (the Sobel kernel spans two of them, the opening erases small markers).
        """
        if not mpp > 0:
            raise ValueError(f"mpp must be a positive resolution in um/px, got {mpp}")
        base = cls()
        scale = HOVER_MPP / mpp
        return replace(
            base,
            min_blob_px=math.ceil(base.min_blob_px * scale**2),
            sobel_ksize=min(31, max(3, _odd_below(base.sobel_ksize * scale))),
            open_ksize=_odd_below(base.open_ksize * scale),
            min_marker_px=math.ceil(base.min_marker_px * scale**2),
            blur_ksize=_odd_below(base.blur_ksize * scale),
        )


@dataclass(frozen=True)
class Thresholds:
    """The thresholds of HoVer-Net's post-processing that a run may tune: its two
    probability-like thresholds and the smallest marker, as an area so that it does not
    depend on the resolution. Defaults: HoVer-Net's.

    Attributes:
        foreground: NP probability at or above which a pixel is nucleus.
        energy: boundary energy at or above which a pixel is no marker (higher: larger
            markers, fewer nuclei cut in two; lower: touching nuclei kept apart).
        min_marker_um2: markers with a smaller area (um²) are dropped; None: HoVer-Net's
            10 px at 0.25 um/px, scaled (:meth:`WatershedParams.at`).
    """

    foreground: float = 0.5
    energy: float = 0.4
    min_marker_um2: float | None = None

    def apply(self, params: WatershedParams, mpp: float) -> WatershedParams:
        """``params`` (constants at ``mpp`` um/px) with these thresholds."""
        params = replace(params, fg_threshold=self.foreground, energy_threshold=self.energy)
        if self.min_marker_um2 is None:
            return params
        return replace(params, min_marker_px=max(1, math.ceil(self.min_marker_um2 / mpp**2)))


def _odd_below(length: float) -> int:
    """The largest odd integer not above ``length``, and at least 1."""
    return max(1, 2 * math.floor((length - 1) / 2) + 1)


def label_components(mask: np.ndarray) -> np.ndarray:
    """4-connected components of a mask, numbered 1..m in raster order of their first pixel.

    Args:
        mask: H x W bool (or 0/1 integer) mask.

    Returns:
        H x W int32 labels, 0 outside the mask (as ``scipy.ndimage.label``, twice as fast).
    """
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    return cv2.connectedComponents(mask, connectivity=4, ltype=cv2.CV_32S)[1]


def remove_small(labels: np.ndarray, min_px: int) -> np.ndarray:
    """Drop the labelled components with fewer than ``min_px`` pixels; renumber the rest.

    Args:
        labels: H x W non-negative integer label image (0 background).
        min_px: smallest size kept, in pixels (1 keeps everything and only renumbers).

    Returns:
        H x W int32 labels 1..m, in increasing order of the old labels.
    """
    keep = np.bincount(labels.ravel()) >= min_px
    keep[0] = False
    if keep[1:].all():
        return labels.astype(np.int32, copy=False)
    new_id = np.cumsum(keep, dtype=np.int32) * keep
    return new_id[labels]


def foreground_mask(np_prob: np.ndarray, threshold: float = 0.5, min_px: int = 10) -> np.ndarray:
    """Nuclear foreground: ``np_prob >= threshold``, 4-connected blobs under ``min_px`` removed.

    Args:
        np_prob: H x W float nucleus probability in [0, 1].
        threshold: probability at or above which a pixel is foreground.
        min_px: smallest blob kept, pixels.

    Returns:
        H x W bool mask.
    """
    return remove_small(label_components(np_prob >= threshold), min_px) > 0


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled: background regions that do not reach the border.

    The same result as ``scipy.ndimage.binary_fill_holes`` (background 4-connected), from
    one labelling of the background instead of repeated dilations.

    Args:
        mask: H x W bool.

    Returns:
        H x W bool.
    """
    background = label_components(~mask)
    edge = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = np.zeros(int(background.max(initial=0)) + 1, dtype=bool)
    outside[edge] = True
    return mask | ~outside[background]


def _minmax(image: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] as cv2.NORM_MINMAX does (a constant image becomes all 0), float32."""
    return cv2.normalize(image, None, 0.0, 1.0, cv2.NORM_MINMAX, dtype=cv2.CV_32F)


def hv_energy(hv: np.ndarray, foreground: np.ndarray, sobel_ksize: int = 21) -> np.ndarray:
    """Boundary energy from the HV maps: high between nuclei, low at their centres.

    Each channel is min-max normalised over the patch and differentiated along its own axis
    (channel 0, horizontal, along x; channel 1, vertical, along y) with a Sobel kernel of
    side ``sobel_ksize``; each response becomes ``1 - min-max normalised`` and the energy is
    the larger of the two on foreground pixels, 0 elsewhere.

    Args:
        hv: 2 x H x W float HV map (channel 0 horizontal, 1 vertical), values in [-1, 1].
        foreground: H x W bool mask from :func:`foreground_mask`.
        sobel_ksize: odd Sobel kernel side in px (21 at 0.25 um/px).

    Returns:
        H x W float32 energy in [0, 1].
    """
    h_dir = _minmax(hv[0].astype(np.float32, copy=False))
    v_dir = _minmax(hv[1].astype(np.float32, copy=False))
    sobel_h = _minmax(cv2.Sobel(h_dir, cv2.CV_32F, 1, 0, ksize=sobel_ksize))
    sobel_v = _minmax(cv2.Sobel(v_dir, cv2.CV_32F, 0, 1, ksize=sobel_ksize))
    energy = 1.0 - np.minimum(sobel_h, sobel_v)  # = max(1 - sobel_h, 1 - sobel_v)
    energy[~foreground] = 0.0
    return energy


def markers_from_energy(
    energy: np.ndarray,
    foreground: np.ndarray,
    threshold: float = 0.4,
    open_ksize: int = 5,
    min_px: int = 10,
) -> np.ndarray:
    """Seeds of the watershed: the low-energy cores of the nuclei.

    Foreground pixels with ``energy < threshold``, holes filled, opened with an elliptic
    ``open_ksize`` kernel (1 = no opening), then 4-connected components of at least
    ``min_px`` pixels.

    Args:
        energy: H x W float energy from :func:`hv_energy`.
        foreground: H x W bool mask.
        threshold: energy at or above which a pixel cannot be a marker.
        open_ksize: odd side of the opening kernel in px (5 at 0.25 um/px).
        min_px: smallest marker kept, pixels.

    Returns:
        H x W int32 marker labels, 0 background, markers 1..m.
    """
    core = fill_holes(foreground & (energy < threshold)).astype(np.uint8)
    if open_ksize > 1:
        kernel = cv2.getStructuringElement(_ELLIPSE, (open_ksize, open_ksize))
        core = cv2.morphologyEx(core, cv2.MORPH_OPEN, kernel)
    return remove_small(label_components(core), min_px)


def watershed_instances(
    energy: np.ndarray, markers: np.ndarray, foreground: np.ndarray, blur_ksize: int = 3
) -> np.ndarray:
    """Grow the markers over the foreground along the valleys of the energy.

    The surface is ``-GaussianBlur((1 - energy) * foreground)`` (nuclei centres are deep
    basins), flooded 4-connected inside the foreground. A foreground blob that holds no
    marker stays background; one that holds a single marker becomes that nucleus whole
    (what flooding would give); only blobs with several markers are flooded, which gives
    the same map as one watershed over the whole patch in about half the time.

    Args:
        energy: H x W float energy from :func:`hv_energy`.
        markers: H x W int32 labels from :func:`markers_from_energy` (0 = no marker).
        foreground: H x W bool mask.
        blur_ksize: odd side of the Gaussian blur in px (1 = no blur).

    Returns:
        H x W int32 instance map, nuclei 1..n in the order of their markers.
    """
    blobs = label_components(foreground)
    seeds = np.where(foreground, markers, 0)
    sole_marker, shared, kept = _markers_per_blob(blobs, seeds)
    inst = sole_marker[blobs]
    if shared.any():
        surface = ((1.0 - energy) * foreground).astype(np.float32)
        if blur_ksize > 1:
            surface = cv2.GaussianBlur(surface, (blur_ksize, blur_ksize), 0)
        crowded = shared[blobs]
        flooded = watershed(-surface, np.where(crowded, seeds, 0), mask=crowded)
        inst = np.where(crowded, flooded, inst)
    if kept.size and kept[-1] != kept.size:  # markers outside the foreground were lost
        new_id = np.zeros(kept[-1] + 1, dtype=np.int32)
        new_id[kept] = np.arange(1, kept.size + 1)
        inst = new_id[inst]
    return inst.astype(np.int32, copy=False)


def _markers_per_blob(
    blobs: np.ndarray, seeds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per blob id: its marker if it holds exactly one (else 0) and whether it holds more;
    and the sorted ids of the markers present."""
    inside = seeds > 0
    pairs = np.unique(blobs[inside].astype(np.int64) << 32 | seeds[inside])
    blob, marker = pairs >> 32, pairs & 0xFFFFFFFF
    n_markers = np.bincount(blob, minlength=int(blobs.max(initial=0)) + 1)
    sole_marker = np.zeros(n_markers.size, dtype=np.int32)
    sole = n_markers[blob] == 1
    sole_marker[blob[sole]] = marker[sole]
    return sole_marker, n_markers > 1, np.unique(marker)


def segment_instances(
    np_prob: np.ndarray, hv: np.ndarray, params: WatershedParams | None = None
) -> np.ndarray:
    """Stages 1-4 (foreground, energy, markers, watershed) with ``params`` (default 40x).

    Args:
        np_prob: H x W float nucleus probability.
        hv: 2 x H x W float HV map.
        params: the watershed constants, e.g. ``WatershedParams.at(mpp)``.

    Returns:
        H x W int32 instance map, nuclei 1..n.
    """
    params = params or WatershedParams()
    foreground = foreground_mask(np_prob, params.fg_threshold, params.min_blob_px)
    energy = hv_energy(hv, foreground, params.sobel_ksize)
    markers = markers_from_energy(
        energy, foreground, params.energy_threshold, params.open_ksize, params.min_marker_px
    )
    return watershed_instances(energy, markers, foreground, params.blur_ksize)
