"""Data-side speed: synthetic patches/s and make_targets ms/patch on one core.

Usage: python benchmarks/data.py [--patches 200] [--out results/benchmarks/data_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from nucstudy.common.io import atomic_write_text
from nucstudy.data import make_targets, synthetic_conic


def best_of(repeats: int, work) -> float:
    """Smallest wall time of ``repeats`` calls of ``work()``, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)
    synthetic_s = best_of(args.repeats, lambda: synthetic_conic(args.patches, seed=0))
    data = synthetic_conic(32, seed=1)
    labels = data.labels
    targets_s = best_of(
        args.repeats, lambda: [make_targets(lab[..., 0], lab[..., 1]) for lab in labels]
    )
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": 1,
        "synthetic_patches_per_s": args.patches / synthetic_s,
        "synthetic_ms_per_patch": 1000 * synthetic_s / args.patches,
        "make_targets_ms_per_patch": 1000 * targets_s / len(labels),
        "mean_nuclei_per_patch": float(np.mean([lab[..., 0].max() for lab in labels])),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
