"""Speed of nucstudy.metrics.conic_metrics against batch size, nuclei per patch and patch size.

Run from the repository root:

    python benchmarks/metrics.py                      # print the tables
    python benchmarks/metrics.py --out results/benchmarks/metrics_cpu.json

Truth: fields of overlapping discs (radius 4-9 px, random classes, non-contiguous ids).
Prediction: the truth shifted by one pixel, 10 % of nuclei dropped, 5 % of classes
changed, ids renamed; so about half the IoUs are near the 0.5 threshold and matching does
real work. Every figure is the fastest of ``--repeats`` runs in one process (other work on
the machine only ever adds time; NumPy does not use threads for these operations). The
slow reference of ``tests/reference_metrics.py`` (a full-image mask per nucleus, the way
the official code works) is timed on a few patches for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from nucstudy.common.io import atomic_write_text
from nucstudy.data.classes import CONIC
from nucstudy.metrics import conic_metrics

REPO = Path(__file__).resolve().parents[1]


def disc_labels(
    rng: np.random.Generator, n_patches: int, size: int, n_nuclei: int, n_classes: int = 7
) -> np.ndarray:
    """N x size x size x 2 int32 labels: ``n_nuclei`` random discs per patch (radius 4-9 px,
    later discs cut earlier ones), random classes 1..n_classes-1, ids 1..n_nuclei shuffled
    over a sparse range (non-contiguous)."""
    labels = np.zeros((n_patches, size, size, 2), dtype=np.int32)
    rows, cols = np.mgrid[:size, :size]
    for patch in labels:
        ids = rng.choice(np.arange(1, 50 * n_nuclei), n_nuclei, replace=False)
        for nucleus_id in ids:
            r, c = rng.uniform(0, size, 2)
            radius = rng.uniform(4, 9)
            box = (
                slice(max(0, int(r - radius)), int(r + radius) + 1),
                slice(max(0, int(c - radius)), int(c + radius) + 1),
            )
            disc = (rows[box] - r) ** 2 + (cols[box] - c) ** 2 <= radius**2
            patch[box][disc] = nucleus_id, rng.integers(1, n_classes)
    return labels


def perturb(rng: np.random.Generator, labels: np.ndarray, n_classes: int = 7) -> np.ndarray:
    """A plausible prediction of ``labels`` (see the module docstring)."""
    pred = np.roll(labels, 1, axis=2).copy()
    for patch in pred:
        ids = np.unique(patch[..., 0])[1:]
        dropped = rng.random(ids.size) < 0.10
        patch[np.isin(patch[..., 0], ids[dropped])] = 0
        relabel = rng.random(ids.size) < 0.05
        changed = np.isin(patch[..., 0], ids[relabel])
        patch[changed, 1] = rng.integers(1, n_classes)
        patch[..., 0] = np.where(patch[..., 0] > 0, patch[..., 0] * 7 + 3, 0)
    return pred


def fastest_seconds(function, repeats: int) -> float:
    """Fastest wall time of ``function()`` over ``repeats`` runs, after one warm-up."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def time_case(n_patches: int, size: int, n_nuclei: int, repeats: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    true = disc_labels(rng, n_patches, size, n_nuclei)
    pred = perturb(rng, true)
    seconds = fastest_seconds(lambda: conic_metrics(pred, true, CONIC), repeats)
    return {
        "patches": n_patches,
        "size": size,
        "nuclei_per_patch": round(float(np.mean([len(np.unique(p)) - 1 for p in true[..., 0]]))),
        "seconds": seconds,
        "ms_per_patch": 1e3 * seconds / n_patches,
        "patches_per_s": n_patches / seconds,
    }


def time_reference(n_patches: int, size: int, n_nuclei: int) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from reference_metrics import reference_metrics

    rng = np.random.default_rng(1)
    true = disc_labels(rng, n_patches, size, n_nuclei)
    pred = perturb(rng, true)
    seconds = fastest_seconds(lambda: reference_metrics(pred, true, CONIC.n_classes), 1)
    return {"patches": n_patches, "size": size, "ms_per_patch": 1e3 * seconds / n_patches}


def machine() -> dict:
    """The machine and library versions the figures were taken on."""
    import cv2
    import scipy
    import skimage

    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "opencv": cv2.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "load_average_1min_at_start": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (fastest kept)")
    args = parser.parse_args(argv)

    results = {
        "benchmark": "benchmarks/metrics.py",
        "machine": machine(),
        "repeats": args.repeats,
        "by_patches": [time_case(n, 256, 50, args.repeats) for n in (50, 100, 200, 400)],
        "by_nuclei": [time_case(200, 256, k, args.repeats) for k in (25, 50, 100, 200)],
        "by_size": [
            time_case(200 * 256**2 // s**2, s, 50 * s**2 // 256**2, args.repeats)
            for s in (128, 256, 512)
        ],
        "reference": time_reference(2, 256, 50),
    }
    for key in ("by_patches", "by_nuclei", "by_size"):
        print(f"\n{key}")
        for row in results[key]:
            print(
                f"  {row['patches']:4d} patches of {row['size']} px, ~{row['nuclei_per_patch']:3d}"
                f" nuclei: {row['seconds']:.3f} s, {row['ms_per_patch']:.2f} ms/patch,"
                f" {row['patches_per_s']:.0f} patches/s"
            )
    print(f"\nslow reference: {results['reference']['ms_per_patch']:.0f} ms/patch")
    if args.out:
        atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
