"""HoVer-Net post-processing of a patch: network outputs (NP, HV, TP) -> :class:`Nuclei`.

:func:`hover_postprocess` runs the watershed (:mod:`nucstudy.postprocess.watershed`) and the
type vote (:mod:`nucstudy.postprocess.nuclei`) on one patch by one of two routes
(:data:`ROUTES`): ``"native"`` scales the constants to the data's resolution and runs once
at that resolution; ``"resample"`` is the CoNIC baseline's route (resize the maps to
0.25 um/px, run with the 40x constants, take every second pixel back). On perfect and on
blurred, noisy synthetic maps the native route scores at least as high and runs several
times faster (see ``benchmarks/postprocess.py`` and the book's performance chapter).
:func:`postprocess_batch` runs it over N patches, optionally in a process pool.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

from nucstudy.postprocess.nuclei import Nuclei, nuclear_type_map, type_map_of, vote_classes
from nucstudy.postprocess.watershed import (
    HOVER_MPP,
    Thresholds,
    WatershedParams,
    remove_small,
    segment_instances,
)


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
            e.g. those chosen on a run's validation patches (:mod:`nucstudy.study.tuning`).

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
