"""HoVer-Net post-processing: network outputs (NP, HV, TP) -> nuclei, in small public steps.

The marker-controlled watershed of Graham et al. (2019), one function per stage so that a
notebook can show each of them:

1. :func:`foreground_mask`: NP probability >= 0.5, blobs under ``min_blob_px`` removed.
2. :func:`hv_energy`: each HV channel min-max normalised, differentiated along its own axis
   with a Sobel kernel, the response turned into ``1 - normalised``; the maximum of the two
   inside the foreground. High energy = a boundary between nuclei.
3. :func:`markers_from_energy`: foreground minus (energy >= 0.4), holes filled, opened with
   an elliptic kernel, small markers removed, labelled.
4. :func:`watershed_instances`: watershed of the negated, blurred ``1 - energy`` from the
   markers, inside the foreground; ids 1..n.
5. :func:`vote_classes`: each nucleus takes the most frequent class of the type map inside
   it (ties to the lower id); a nucleus whose pixels all say background takes the most
   likely nuclear class instead, so no nucleus is ever of class background.

The published constants (Sobel kernel 21, 5 x 5 opening, 10 px minimum sizes) are for
0.25 um/px (40x). CoNIC is 0.5 um/px (20x), where those constants merge touching nuclei.
All resolution logic lives in :meth:`WatershedParams.at`: ``method="native"`` scales the
kernel sizes and pixel areas to the data's resolution and runs once at that resolution;
``method="resample"`` is the CoNIC baseline's route (resize the maps to 0.25 um/px, run
with the 40x constants, take every second pixel back). On perfect and on blurred, noisy
synthetic maps the native route scores at least as high and runs several times faster (see
``benchmarks/postprocess.py`` and the book's performance chapter).

:func:`hover_postprocess` runs the stages on one patch and returns a :class:`Nuclei`;
:func:`postprocess_batch` runs it over N patches (optionally in a process pool) and
:func:`to_conic_labels` stacks the results into the N x H x W x 2 CoNIC layout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import cv2
import numpy as np
import pandas as pd
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


@dataclass(frozen=True)
class Nuclei:
    """Post-processed nuclei of one patch.

    Attributes:
        inst_map: H x W int32, 0 background, nuclei 1..n (contiguous).
        class_map: H x W int32, each nucleus painted with its class id (0 background).
        centroid: n x 2 float64, (x, y) = (column, row) centre of mass in px; row i is
            nucleus i + 1.
        bbox: n x 4 int64, (row_min, col_min, row_max, col_max), max exclusive.
        area: n int64, pixels.
        class_id: n int32, class voted by the type map.
        class_prob: n float64, fraction of the nucleus's pixels whose type is ``class_id``
            (HoVer-Net's type probability; NaN where the method gives none).
    """

    inst_map: np.ndarray
    class_map: np.ndarray
    centroid: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    class_id: np.ndarray
    class_prob: np.ndarray

    def __len__(self) -> int:
        return len(self.area)

    @classmethod
    def from_instances(
        cls, inst_map: np.ndarray, class_id: np.ndarray, class_prob: np.ndarray
    ) -> Nuclei:
        """Nuclei of a contiguous instance map (ids 1..n) and each nucleus's class.

        Args:
            inst_map: H x W int instance map, nuclei 1..n.
            class_id: n int class ids, entry i for nucleus i + 1.
            class_prob: n float, the confidence of each class (NaN where unknown).
        """
        inst_map = inst_map.astype(np.int32, copy=False)
        class_id = np.asarray(class_id, dtype=np.int32)
        if len(class_id) != int(inst_map.max(initial=0)) or len(class_prob) != len(class_id):
            raise ValueError(
                f"{int(inst_map.max(initial=0))} nuclei in the instance map, but "
                f"{len(class_id)} class ids and {len(class_prob)} probabilities"
            )
        centroid, bbox, area = nucleus_geometry(inst_map)
        class_map = np.concatenate([[0], class_id]).astype(np.int32)[inst_map]
        return cls(
            inst_map, class_map, centroid, bbox, area, class_id, np.asarray(class_prob, float)
        )

    def table(self) -> pd.DataFrame:
        """One row per nucleus: id, area, centroid_x/y, bbox row/col min/max, class, prob."""
        return pd.DataFrame(
            {
                "id": np.arange(1, len(self) + 1),
                "area": self.area,
                "centroid_x": self.centroid[:, 0],
                "centroid_y": self.centroid[:, 1],
                "row_min": self.bbox[:, 0],
                "col_min": self.bbox[:, 1],
                "row_max": self.bbox[:, 2],
                "col_max": self.bbox[:, 3],
                "class_id": self.class_id,
                "class_prob": self.class_prob,
            }
        )


# -- the stages -------------------------------------------------------------------------------


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


def type_map_of(tp: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An H x W class map from a TP output: argmax of a K x H x W map, or the map itself.

    Raises:
        ValueError: ``tp`` is neither K x H x W (float) nor H x W (integer) of ``shape``.
    """
    tp = np.asarray(tp)
    if tp.ndim == 3 and tp.shape[1:] == shape:
        return np.argmax(tp, axis=0).astype(np.int32)
    if tp.ndim == 2 and tp.shape == shape and np.issubdtype(tp.dtype, np.integer):
        if tp.size and int(tp.min()) < 0:
            raise ValueError("tp: negative class id in the class map")
        return tp.astype(np.int32)
    raise ValueError(
        f"tp: expected a K x {shape[0]} x {shape[1]} probability map or an integer "
        f"{shape[0]} x {shape[1]} class map, got shape {tp.shape} and dtype {tp.dtype}"
    )


def vote_classes(
    inst_map: np.ndarray, type_map: np.ndarray, fallback_map: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each nucleus's most frequent class in the type map, without a mask per nucleus.

    Background (0) is never voted for while a nucleus has a pixel of another class; ties go
    to the lower class id. A nucleus whose pixels are all background in ``type_map`` takes
    its vote in ``fallback_map`` instead (the most likely nuclear class of each pixel), so
    that no nucleus is given the class background; without a fallback it keeps class 0.

    Args:
        inst_map: H x W int instance map, nuclei 1..n.
        type_map: H x W int class map (class ids >= 0).
        fallback_map: H x W int class map of nuclear classes (ids >= 1), or None.

    Returns:
        (class_id, class_prob): int32 (n,) voted class of nucleus i + 1 and float64 (n,)
        the fraction of its pixels with that class (in the map it was voted in).
    """
    class_id, class_prob = _vote(inst_map, type_map)
    if fallback_map is not None and (class_id == 0).any():
        fallback_id, fallback_prob = _vote(inst_map, fallback_map)
        unvoted = class_id == 0
        class_id[unvoted], class_prob[unvoted] = fallback_id[unvoted], fallback_prob[unvoted]
    return class_id, class_prob


def _vote(inst_map: np.ndarray, type_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The majority vote of :func:`vote_classes` in one class map."""
    n = int(inst_map.max(initial=0))
    k = int(type_map.max(initial=0)) + 1
    pixel = np.flatnonzero(inst_map)
    nucleus = inst_map.ravel()[pixel].astype(np.int64) - 1
    votes = np.bincount(nucleus * k + type_map.ravel()[pixel], minlength=n * k).reshape(n, k)
    class_id = np.zeros(n, dtype=np.int32)
    has_class = votes[:, 1:].sum(axis=1) > 0
    if k > 1:
        class_id[has_class] = np.argmax(votes[has_class, 1:], axis=1) + 1
    class_prob = votes[np.arange(n), class_id] / np.maximum(votes.sum(axis=1), 1)
    return class_id, class_prob


def nuclear_type_map(tp: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
    """The most likely nuclear class (1..K-1) of every pixel of a K x H x W probability map;
    None for an integer class map, which has no second choice."""
    tp = np.asarray(tp)
    if tp.ndim == 3 and tp.shape[1:] == shape and tp.shape[0] > 1:
        return (np.argmax(tp[1:], axis=0) + 1).astype(np.int32)
    return None


def nucleus_geometry(inst_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, bounding box and area of each nucleus of a contiguous instance map.

    Args:
        inst_map: H x W int instance map, nuclei 1..n.

    Returns:
        (centroid, bbox, area): float64 n x 2 (x, y) centres of mass in px; int64 n x 4
        (row_min, col_min, row_max, col_max), max exclusive; int64 (n,) pixel counts.
    """
    n = int(inst_map.max(initial=0))
    pixel = np.flatnonzero(inst_map)
    label = inst_map.ravel()[pixel]
    rows, cols = np.divmod(pixel, inst_map.shape[1])
    area = np.bincount(label, minlength=n + 1)[1:]
    sum_x = np.bincount(label, weights=cols, minlength=n + 1)[1:]
    sum_y = np.bincount(label, weights=rows, minlength=n + 1)[1:]
    centroid = np.stack([sum_x, sum_y], axis=1) / np.maximum(area, 1)[:, None]
    low = np.full((2, n + 1), np.iinfo(np.int64).max)
    high = np.full((2, n + 1), -1)
    for axis, coords in enumerate((rows, cols)):
        np.minimum.at(low[axis], label, coords)
        np.maximum.at(high[axis], label, coords)
    bbox = np.concatenate([low[:, 1:], high[:, 1:] + 1]).T
    bbox[area == 0] = 0  # ids missing from a non-contiguous map
    return centroid, bbox, area.astype(np.int64)


# -- one patch --------------------------------------------------------------------------------


def _check_outputs(np_prob: np.ndarray, hv: np.ndarray) -> tuple[int, int]:
    """Check NP and HV shapes; return (H, W)."""
    if np_prob.ndim != 2:
        raise ValueError(f"np_prob: expected an H x W probability map, got shape {np_prob.shape}")
    if hv.shape != (2, *np_prob.shape):
        raise ValueError(
            f"hv: expected shape 2 x {np_prob.shape[0]} x {np_prob.shape[1]} (channel 0 "
            f"horizontal, 1 vertical), got {hv.shape}"
        )
    for name, array in (("np_prob", np_prob), ("hv", hv)):
        if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(
            array.dtype, np.integer
        ):
            raise ValueError(f"{name}: expected a numeric map, got dtype {array.dtype}")
    return np_prob.shape


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


#: Post-processing routes of :func:`hover_postprocess`.
ROUTES = ("native", "resample")


def hover_postprocess(
    np_prob: np.ndarray,
    hv: np.ndarray,
    tp: np.ndarray,
    mpp: float,
    method: str = "native",
    thresholds: Thresholds | None = None,
) -> Nuclei:
    """Nuclei of one patch from the three heads' outputs, at the patch's resolution.

    Args:
        np_prob: H x W float nucleus probability (NP head after softmax/sigmoid).
        hv: 2 x H x W float HV map, channel 0 horizontal (x), 1 vertical (y), in [-1, 1].
        tp: K x H x W float class probabilities (TP head after softmax), or an H x W integer
            class map.
        mpp: resolution of the maps in um/px (CoNIC 0.5, CoNSeP 0.25).
        method: ``"native"`` runs once at ``mpp`` with :meth:`WatershedParams.at`;
            ``"resample"`` is the CoNIC baseline's route: resize the maps by
            ``mpp / 0.25`` (NP, HV bilinear, types nearest), run with the 40x constants,
            take the nearest pixels back to H x W.
        thresholds: the foreground, energy and smallest-marker thresholds (None: HoVer-Net's),
            e.g. those chosen on a run's validation patches (:mod:`nucstudy.tuning`).

    Returns:
        :class:`Nuclei` at H x W.

    Raises:
        ValueError: wrong shapes or dtypes, a non-positive ``mpp`` or an unknown ``method``.
    """
    np_prob, hv = np.asarray(np_prob), np.asarray(hv)
    shape = _check_outputs(np_prob, hv)
    type_map = type_map_of(tp, shape)
    fallback_map = nuclear_type_map(tp, shape)
    thresholds = thresholds or Thresholds()
    if method == "native":
        params = thresholds.apply(WatershedParams.at(mpp), mpp)
        inst_map = segment_instances(np_prob, hv, params)
        class_id, class_prob = vote_classes(inst_map, type_map, fallback_map)
    elif method == "resample":
        inst_map, class_id, class_prob = _resample_route(
            np_prob, hv, type_map, fallback_map, mpp, thresholds
        )
    else:
        raise ValueError(f"method must be 'native' or 'resample', got {method!r}")
    return Nuclei.from_instances(inst_map, class_id, class_prob)


def _resample_route(
    np_prob: np.ndarray,
    hv: np.ndarray,
    type_map: np.ndarray,
    fallback_map: np.ndarray | None,
    mpp: float,
    thresholds: Thresholds,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Post-process at 0.25 um/px and sample back: instance map, classes, class fractions."""
    if not mpp > 0:
        raise ValueError(f"mpp must be a positive resolution in um/px, got {mpp}")
    height, width = np_prob.shape
    scale = mpp / HOVER_MPP
    big = (round(width * scale), round(height * scale))  # cv2 sizes are (width, height)

    def up(image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        return cv2.resize(image, big, interpolation=interpolation)

    inst_big = segment_instances(
        up(np_prob.astype(np.float32)),
        np.stack([up(channel.astype(np.float32)) for channel in hv]),
        thresholds.apply(WatershedParams(), HOVER_MPP),
    )
    fallback_big = None if fallback_map is None else up(fallback_map, cv2.INTER_NEAREST)
    class_big, prob_big = vote_classes(inst_big, up(type_map, cv2.INTER_NEAREST), fallback_big)
    inst_small = cv2.resize(inst_big, (width, height), interpolation=cv2.INTER_NEAREST)
    kept = np.unique(inst_small)
    kept = kept[kept > 0]
    return remove_small(inst_small, 1), class_big[kept - 1], prob_big[kept - 1]


# -- many patches -----------------------------------------------------------------------------


def _one(args: tuple) -> Nuclei:
    return hover_postprocess(*args)


def postprocess_batch(
    np_prob: np.ndarray,
    hv: np.ndarray,
    tp: np.ndarray,
    mpp: float,
    method: str = "native",
    workers: int = 1,
    thresholds: Thresholds | None = None,
) -> list[Nuclei]:
    """:func:`hover_postprocess` over N patches, optionally in a process pool.

    Args:
        np_prob: N x H x W float nucleus probabilities.
        hv: N x 2 x H x W float HV maps.
        tp: N x K x H x W float class probabilities, or N x H x W integer class maps.
        mpp: resolution in um/px.
        method: ``"native"`` or ``"resample"`` (see :func:`hover_postprocess`).
        workers: processes to use; 1 runs in this process, 0 uses every CPU.
        thresholds: see :func:`hover_postprocess`.

    Returns:
        One :class:`Nuclei` per patch, in order.
    """
    np_prob, hv, tp = np.asarray(np_prob), np.asarray(hv), np.asarray(tp)
    if np_prob.ndim != 3 or len(hv) != len(np_prob) or len(tp) != len(np_prob):
        raise ValueError(
            "expected np_prob N x H x W, hv N x 2 x H x W and tp N x K x H x W or N x H x W "
            f"with one N; got {np_prob.shape}, {hv.shape} and {tp.shape}"
        )
    jobs = [(np_prob[i], hv[i], tp[i], mpp, method, thresholds) for i in range(len(np_prob))]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < 2:
        return [_one(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_one, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def to_conic_labels(nuclei: Sequence[Nuclei]) -> np.ndarray:
    """Stack post-processed patches into the CoNIC layout.

    Returns:
        N x H x W x 2 int32: channel 0 instance maps, channel 1 class maps.
    """
    if not nuclei:
        raise ValueError("to_conic_labels needs at least one patch")
    return np.stack([np.stack([n.inst_map, n.class_map], axis=-1) for n in nuclei]).astype(
        np.int32
    )
