"""Speed and quality of nucstudy.postprocess at 0.5 um/px: native route vs the x2 route.

Run from the repository root:

    python benchmarks/postprocess.py                     # print the tables
    python benchmarks/postprocess.py --out results/benchmarks/postprocess_cpu.json

Inputs are *perfect* network outputs: NP, HV and TP targets (``make_targets``) of synthetic
CoNIC patches (``synthetic_conic``, touching and overlapping nuclei at 0.5 um/px), so the
scores measure what the post-processing itself loses. Three ways to post-process them:

- ``native``: ``hover_postprocess(..., mpp=0.5)``, constants scaled to 0.5 um/px;
- ``resample``: the CoNIC baseline's route, maps resized x2, HoVer-Net's 40x constants,
  every second pixel taken back;
- ``40x constants at 20x``: the 40x constants applied to the 20x maps (what not to do);
- ``resample, written plainly``: the resample route written the straightforward way
  (SciPy labelling and hole filling, one watershed over the whole patch, a mask per nucleus
  to vote and paint its class), as the baseline's code does it. It gives the same labels as
  ``resample``, which is built from this library's faster stages.

The same comparison is repeated on network-like maps: NP and HV blurred (Gaussian, sigma
1 px) with noise added (``blurred``).

Timings are the fastest of ``--repeats`` passes over the batch (other work on the machine
only ever adds time; the routes take turns within each round, so a busy spell hits them
alike), in one process with OpenCV limited to one thread; the process-pool figures use
``postprocess_batch(workers=...)``. Speed is also measured against patch size (synthetic
patches of 128-512 px) and against the number of nuclei (disc fields from
``benchmarks/metrics.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed

from nucstudy.common.io import atomic_write_text
from nucstudy.data import make_targets, synthetic_conic
from nucstudy.data.classes import CONIC
from nucstudy.metrics import conic_metrics
from nucstudy.postprocess import (
    WatershedParams,
    postprocess_batch,
    segment_instances,
    to_conic_labels,
    vote_classes,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import disc_labels, fastest_seconds, machine  # noqa: E402  (benchmarks/metrics.py)

MPP = 0.5


def perfect_outputs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NP (N x H x W float32), HV (N x 2 x H x W) and TP class maps (N x H x W) of labels."""
    targets = [make_targets(patch[..., 0], patch[..., 1]) for patch in labels]
    np_prob = np.stack([t["np"] for t in targets]).astype(np.float32)
    return np_prob, np.stack([t["hv"] for t in targets]), np.stack([t["tp"] for t in targets])


def blurred(
    outputs: tuple[np.ndarray, np.ndarray, np.ndarray], sigma: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Perfect outputs made network-like: NP and HV Gaussian-blurred (``sigma`` px) with
    noise (NP sd 0.1, clipped to [0, 1]; HV sd 0.05); types unchanged."""
    rng = np.random.default_rng(seed)
    np_prob, hv, tp = outputs
    np_prob = ndimage.gaussian_filter(np_prob, (0, sigma, sigma))
    np_prob = np.clip(np_prob + rng.normal(0, 0.1, np_prob.shape), 0, 1).astype(np.float32)
    hv = ndimage.gaussian_filter(hv, (0, 0, sigma, sigma))
    return np_prob, (hv + rng.normal(0, 0.05, hv.shape)).astype(np.float32), tp


def with_40x_constants(np_prob: np.ndarray, hv: np.ndarray, tp: np.ndarray) -> np.ndarray:
    """Post-process 20x maps with HoVer-Net's 40x constants; N x H x W x 2 labels."""
    out = []
    for i in range(len(np_prob)):
        inst = segment_instances(np_prob[i], hv[i], WatershedParams())
        class_id, _ = vote_classes(inst, tp[i])
        out.append(np.stack([inst, np.concatenate([[0], class_id])[inst]], axis=-1))
    return np.stack(out).astype(np.int32)


def baseline_x2_route(np_prob: np.ndarray, hv: np.ndarray, tp: np.ndarray) -> np.ndarray:
    """The CoNIC baseline's route written the straightforward way, for timing only.

    Maps resized x2; HoVer-Net's steps at 0.25 um/px with SciPy labelling, scikit-image
    small-object removal, float64 Sobel, ``binary_fill_holes`` and one watershed over the
    whole patch; the class of each nucleus voted with a mask per nucleus and painted back;
    every second pixel taken. Returns N x H x W x 2 labels.
    """
    out = []
    for np_map, hv_map, tp_map in zip(np_prob, hv, tp, strict=True):
        height, width = np_map.shape
        np_big = cv2.resize(np_map, (2 * width, 2 * height))
        h_big = cv2.resize(hv_map[0], (2 * width, 2 * height))
        v_big = cv2.resize(hv_map[1], (2 * width, 2 * height))
        tp_big = cv2.resize(
            tp_map.astype(np.int32), (2 * width, 2 * height), interpolation=cv2.INTER_NEAREST
        )
        blobs = remove_small_objects(ndimage.label(np_big >= 0.5)[0], max_size=9) > 0

        def edge(channel: np.ndarray, dx: int, dy: int) -> np.ndarray:
            unit = cv2.normalize(channel, None, 0, 1, cv2.NORM_MINMAX, dtype=cv2.CV_32F)
            sobel = cv2.Sobel(unit, cv2.CV_64F, dx, dy, ksize=21)
            return 1 - cv2.normalize(sobel, None, 0, 1, cv2.NORM_MINMAX, dtype=cv2.CV_32F)

        energy = np.maximum(edge(h_big, 1, 0), edge(v_big, 0, 1)) * blobs
        surface = -cv2.GaussianBlur(((1.0 - energy) * blobs).astype(np.float32), (3, 3), 0)
        core = ndimage.binary_fill_holes(blobs & (energy < 0.4)).astype(np.uint8)
        ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        core = cv2.morphologyEx(core, cv2.MORPH_OPEN, ellipse)
        markers = remove_small_objects(ndimage.label(core)[0], max_size=9)
        inst = watershed(surface, markers, mask=blobs)
        classes = np.zeros_like(inst)
        for nucleus in np.unique(inst)[1:]:
            mask = inst == nucleus
            ids, votes = np.unique(tp_big[mask], return_counts=True)
            order = np.argsort(-votes, kind="stable")
            best = ids[order[0]]
            if best == 0 and ids.size > 1:
                best = ids[order[1]]
            classes[mask] = best
        out.append(np.stack([inst[::2, ::2], classes[::2, ::2]], axis=-1))
    return np.stack(out).astype(np.int32)


ROUTES = {
    "native": lambda a, h, t: to_conic_labels(postprocess_batch(a, h, t, MPP, "native")),
    "resample": lambda a, h, t: to_conic_labels(postprocess_batch(a, h, t, MPP, "resample")),
    "40x constants at 20x": with_40x_constants,
    "resample, written plainly": baseline_x2_route,
}


def compare_routes(labels: np.ndarray, repeats: int, blur_sigma: float = 0.0) -> list[dict]:
    outputs = perfect_outputs(labels)
    if blur_sigma:
        outputs = blurred(outputs, blur_sigma)
    predictions = {route: run(*outputs) for route, run in ROUTES.items()}  # also warm-up
    times = {route: [] for route in ROUTES}
    for _ in range(repeats):  # routes take turns, so a busy spell hits them alike
        for route, run in ROUTES.items():
            start = time.perf_counter()
            run(*outputs)
            times[route].append(time.perf_counter() - start)
    rows = []
    for route in ROUTES:
        scores = conic_metrics(predictions[route], labels, CONIC)
        seconds = min(times[route])
        rows.append(
            {
                "route": route,
                "inputs": f"blurred (sigma {blur_sigma} px) + noise" if blur_sigma else "perfect",
                "patches": len(labels),
                "size": labels.shape[1],
                "ms_per_patch": 1e3 * seconds / len(labels),
                "patches_per_s": len(labels) / seconds,
                "pq": scores["pq"],
                "mpq+": scores["mpq+"],
                "r2": scores["r2"],
            }
        )
    plain = next(row for row in rows if row["route"] == "resample, written plainly")
    plain["same_labels_as_resample"] = np.array_equal(
        predictions["resample"], predictions["resample, written plainly"]
    )
    return rows


def time_native(labels: np.ndarray, repeats: int, workers: int = 1) -> dict:
    np_prob, hv, tp = perfect_outputs(labels)
    seconds = fastest_seconds(
        lambda: postprocess_batch(np_prob, hv, tp, MPP, workers=workers), repeats
    )
    return {
        "patches": len(labels),
        "size": labels.shape[1],
        "nuclei_per_patch": round(float(np.mean([np.unique(p).size - 1 for p in labels[..., 0]]))),
        "workers": workers,
        "ms_per_patch": 1e3 * seconds / len(labels),
        "patches_per_s": len(labels) / seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--patches", type=int, default=64, help="synthetic patches per case")
    parser.add_argument("--repeats", type=int, default=3, help="passes per figure (fastest kept)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    labels = synthetic_conic(args.patches, size=256, seed=100).labels
    rng = np.random.default_rng(0)
    results = {
        "benchmark": "benchmarks/postprocess.py",
        "machine": machine(),
        "mpp": MPP,
        "opencv_threads": 1,
        "repeats": args.repeats,
        "routes": compare_routes(labels, args.repeats),
        "routes_blurred": compare_routes(labels, args.repeats, blur_sigma=1.0),
        "by_size": [
            time_native(synthetic_conic(max(4, args.patches * 256**2 // s**2), s, 100).labels, 3)
            for s in (128, 256, 512)
        ],
        "by_nuclei": [
            time_native(disc_labels(rng, args.patches, 256, k), args.repeats)
            for k in (25, 50, 100, 200)
        ],
        "by_workers": [time_native(labels, args.repeats, workers=w) for w in (1, 2)],
    }
    ms = {row["route"]: row["ms_per_patch"] for row in results["routes"]}
    results["speedup_native_over_resample"] = ms["resample"] / ms["native"]
    results["speedup_native_over_plain_resample"] = ms["resample, written plainly"] / ms["native"]

    for row in results["routes"] + results["routes_blurred"]:
        print(
            f"{row['inputs']:>30} {row['route']:>22}: {row['ms_per_patch']:6.2f} ms/patch "
            f"({row['patches_per_s']:5.0f} patches/s)  PQ {row['pq']:.4f}  "
            f"mPQ+ {row['mpq+']:.4f}  R2 {row['r2']:.4f}"
        )
    print(
        f"native is {results['speedup_native_over_resample']:.1f}x faster than resample, "
        f"{results['speedup_native_over_plain_resample']:.1f}x faster than it written plainly"
    )
    for key in ("by_size", "by_nuclei", "by_workers"):
        print(f"\n{key}")
        for row in results[key]:
            print(
                f"  {row['patches']:4d} patches of {row['size']} px, ~{row['nuclei_per_patch']:3d}"
                f" nuclei, {row['workers']} worker(s): {row['ms_per_patch']:.2f} ms/patch,"
                f" {row['patches_per_s']:.0f} patches/s"
            )
    if args.out:
        atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
