"""Scoring speed: a trained run on the CoNSeP-256 test split, network and post-processing.

Loads a run folder's best checkpoint and predicts the 224 test patches (halved to 20x) with
:func:`nucstudy.engine.inference.predict_labels`, for the fast path on and off and for 0, 1 and 2
post-processing worker processes (0: post-processing after each batch in this process; n:
n processes post-process one batch while the network runs the next). It also times the
network alone and the post-processing alone, and checks that every setting predicts the
same nuclei as the float32, in-process one would within bf16's effect (PQ between them).

Usage: python benchmarks/evaluate.py RUN_DIR [--consep ../shared/data/consep256]
                                     [--out results/benchmarks/evaluate_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from nucstudy.common.io import atomic_write_text
from nucstudy.data import import_consep256
from nucstudy.engine.device import choose_fast_path
from nucstudy.engine.inference import predict_labels, predict_maps
from nucstudy.engine.methods import DenseMethod
from nucstudy.metrics import conic_metrics
from nucstudy.study.evaluate import load_run_model

BATCH = 16


def timed(function, *args, **kwargs):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def stage_times(model, images: np.ndarray, mpp: float, mixed_precision: bool) -> dict:
    """Seconds of the network alone and of the post-processing alone, over all patches."""
    network = postprocess = 0.0
    for start in range(0, len(images), BATCH):
        batch = torch.from_numpy(images[start : start + BATCH]).permute(0, 3, 1, 2) / 255.0
        maps, seconds = timed(predict_maps, model, batch, mixed_precision=mixed_precision)
        network += seconds
        arrays = [maps[key].numpy() for key in ("np", "hv", "tp")]
        postprocess += timed(DenseMethod().to_labels, arrays, mpp, "native")[1]
    return {"network_seconds": network, "postprocess_seconds": postprocess}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--consep", type=Path, default=Path("../shared/data/consep256"))
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    test = import_consep256(args.consep, "test", resample=True)
    images = np.asarray(test.images)
    trained = load_run_model(args.run_dir)
    model, config = trained.network, trained.config
    predict_labels(model, images[:BATCH], test.mpp, BATCH, "cpu")  # warm-up
    reference = None
    rows = []
    for mixed_precision in (False, True):
        path = choose_fast_path(torch.device("cpu"), mixed_precision)
        stages = stage_times(model, images, test.mpp, mixed_precision)
        for workers in (0, 1, 2):
            pred, seconds = timed(
                predict_labels,
                model,
                images,
                test.mpp,
                BATCH,
                "cpu",
                mixed_precision=mixed_precision,
                postprocess_workers=workers,
            )
            reference = pred if reference is None else reference
            agreement = conic_metrics(pred, reference, test.scheme)["pq"]
            row = {
                "bf16": path.bf16,
                "channels_last": path.channels_last,
                "postprocess_workers": workers,
                "seconds": seconds,
                "patches_per_s": len(images) / seconds,
                "pq_vs_fp32_inline": agreement,
                **stages,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "run": str(args.run_dir),
        "model_options": config.model_options,
        "patches": len(images),
        "size": images.shape[1],
        "batch": BATCH,
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "rows": rows,
    }
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
