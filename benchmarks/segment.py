"""Segmenting large images: seams against tile size and overlap, and throughput per stage.

Run from the repository root (with the study model, ``results/models/consep-cpu-demo.pt``):

    python benchmarks/segment.py                       # print the tables
    python benchmarks/segment.py --out results/benchmarks/segment_cpu.json

1. **Seams.** ``segment_image`` on two images small enough to run whole (a mosaic of nine
   768 px regions of CoNSeP test tiles at 40x, rebuilt from their patches, 1152 px at 20x,
   and a 2048 px synthetic image at 20x), once as one tile and once per tiling; PQ between
   the two nucleus sets and the whole-image nuclei split by a seam. Twice: with the trained
   model, and with perfect maps of the same images' labels read pointwise
   (``nucstudy.engine.oracle``), which isolates what the tiling and the post-processing do from
   what the network does with less context.
2. **Throughput.** A large synthetic image (synthetic patches laid side by side, ``--side``
   px at 20x) through the same steps as ``segment_image``, each timed on its own: network
   (tiles through the model), post-processing (HoVer-Net watershed per tile), merging, and
   export (table, GeoJSON, overlay, label TIFF). Megapixels of the input image per second,
   per stage; then ``segment_image`` end to end with 0 and 1 post-processing workers, and the
   process's peak memory.
3. **A 10,000 x 10,000 px image** at 40x (``--huge``) through ``segment_image`` and every
   export, in a child process whose peak memory is recorded.

Every figure is one pass (these runs take seconds to minutes; a busy machine only adds time).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nucstudy.common.io import atomic_write_text
from nucstudy.data import import_consep256, region_mosaic, synthetic_conic
from nucstudy.data.classes import CONSEP
from nucstudy.data.consep import halve_labels
from nucstudy.data.tiles import rescale_image
from nucstudy.engine.inference import images_to_tensor
from nucstudy.engine.methods import method_for
from nucstudy.engine.model_file import load_model
from nucstudy.engine.oracle import encode_targets, oracle_model
from nucstudy.segment.export import (
    nuclei_geojson,
    nuclei_table,
    overlay,
    png_bytes,
    write_label_tiff,
)
from nucstudy.segment.image import OVERLAP, TILE_SIZE, segment_image
from nucstudy.segment.tiling import SeamlessMerge, batches, tile_grid
from nucstudy.study.ood import agnostic_scores
from nucstudy.study.paths import DEFAULT_CONSEP_DIR, STUDY_MODEL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import machine  # noqa: E402  (benchmarks/metrics.py)

TILINGS = [(256, 0), (256, 64), (512, 0), (512, 128), (1024, 0), (1024, 128), (1024, 256)]
#: CoNSeP test tiles whose top-left regions make the mosaic (3 x 3 regions, 2304 px at 40x).
MOSAIC = [f"test_{k}" for k in range(1, 10)]


def seam_splits(tiled: np.ndarray, whole: np.ndarray) -> int:
    """Whole-image nuclei covered by two or more tiled nuclei of more than 25 % each."""
    keep = (whole.ravel() > 0) & (tiled.ravel() > 0)
    pairs, counts = np.unique(
        np.stack([whole.ravel()[keep], tiled.ravel()[keep]]), axis=1, return_counts=True
    )
    area = np.bincount(whole.ravel())
    large = counts > 0.25 * area[pairs[0]]
    return int((np.bincount(pairs[0][large]) >= 2).sum())


def seams(model, images: list[tuple[str, np.ndarray, float]], kind: str) -> list[dict]:
    rows = []
    for name, image, mpp in images:
        side = max(image.shape[:2]) * mpp / model.mpp
        whole = segment_image(model, image, mpp, tile_size=32 * int(np.ceil(side / 32)), overlap=0)
        for tile_size, overlap in TILINGS:
            start = time.perf_counter()
            tiled = segment_image(model, image, mpp, tile_size=tile_size, overlap=overlap)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "model": kind,
                    "image": name,
                    "tile_size": tile_size,
                    "overlap": overlap,
                    "nuclei_whole": len(whole),
                    "nuclei_tiled": len(tiled),
                    "pq_vs_whole": agnostic_scores(tiled.inst_map, whole.inst_map)["pq"],
                    "seam_splits": seam_splits(tiled.inst_map, whole.inst_map),
                    "seconds": seconds,
                }
            )
            print(rows[-1])
    return rows


def large_image(side: int) -> np.ndarray:
    """A side x side px synthetic H&E image at 20x: 1024 px synthetic patches laid in a grid."""
    patches = np.asarray(synthetic_conic(4, size=1024, seed=21).images)
    reps = -(-side // 1024)
    rows = [
        np.concatenate([patches[(r + c) % 4] for c in range(reps)], axis=1) for r in range(reps)
    ]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:side, :side])


def stages(model, image: np.ndarray, tile_size: int, overlap: int, batch_size: int) -> dict:
    """The steps of ``segment_image`` (image already at the model's resolution), timed."""
    method, network = method_for(model.network), model.network.eval()
    device = torch.device("cpu")
    tiles = tile_grid(*image.shape[:2], tile_size, overlap)
    merge = SeamlessMerge(*image.shape[:2])
    seconds = dict.fromkeys(("network", "postprocess", "merge", "export"), 0.0)
    for group in batches(tiles, batch_size):
        start = time.perf_counter()
        pixels = images_to_tensor(np.stack([image[t.window] for t in group]), device)
        outputs = method.predict(network, pixels, False, True)
        middle = time.perf_counter()
        found = method.to_nuclei(outputs, model.mpp, model.postprocess)
        end = time.perf_counter()
        for tile, nuclei in zip(group, found, strict=True):
            merge.add(tile, nuclei)
        seconds["network"] += middle - start
        seconds["postprocess"] += end - middle
        seconds["merge"] += time.perf_counter() - end
    start = time.perf_counter()
    nuclei = merge.nuclei()
    seconds["merge"] += time.perf_counter() - start
    start = time.perf_counter()
    nuclei_table(nuclei, model.scheme, model.mpp).to_csv()
    json.dumps(nuclei_geojson(nuclei, model.scheme))
    png_bytes(overlay(image, nuclei, model.scheme))
    write_label_tiff(io.BytesIO(), nuclei.inst_map)
    seconds["export"] = time.perf_counter() - start
    megapixels = image.shape[0] * image.shape[1] / 1e6
    return {
        "side_px": image.shape[0],
        "megapixels": megapixels,
        "tiles": len(tiles),
        "nuclei": len(nuclei),
        "seconds": seconds,
        "megapixels_per_s": {stage: megapixels / s for stage, s in seconds.items() if s > 0},
        "megapixels_per_s_all": megapixels / sum(seconds.values()),
    }


def end_to_end(model, image: np.ndarray, workers: int) -> dict:
    start = time.perf_counter()
    nuclei = segment_image(model, image, model.mpp, postprocess_workers=workers)
    seconds = time.perf_counter() - start
    megapixels = image.shape[0] * image.shape[1] / 1e6
    return {
        "postprocess_workers": workers,
        "seconds": seconds,
        "megapixels_per_s": megapixels / seconds,
        "nuclei": len(nuclei),
    }


def huge(side: int, queue) -> None:
    """Child process: a ``side`` x ``side`` px image at 40x (the 20x synthetic image enlarged
    x2) through ``segment_image`` and every export; puts its seconds and nuclei on ``queue``."""
    model = load_model(STUDY_MODEL)
    image = rescale_image(large_image(side // 2), 2.0)[:side, :side]
    start = time.perf_counter()
    nuclei = segment_image(model, image, 0.25, postprocess_workers=1)
    segmented = time.perf_counter()
    json.dumps(nuclei_geojson(nuclei, model.scheme))
    png_bytes(overlay(image, nuclei, model.scheme))
    write_label_tiff(io.BytesIO(), nuclei.inst_map)
    queue.put(
        {
            "side_px": side,
            "mpp": 0.25,
            "nuclei": len(nuclei),
            "seconds_segment": segmented - start,
            "seconds_export": time.perf_counter() - segmented,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--side", type=int, default=4096, help="large image side, px at 20x")
    parser.add_argument("--consep", type=Path, default=DEFAULT_CONSEP_DIR)
    parser.add_argument(
        "--huge", type=int, default=10_000, help="side of the 40x image run in a child (0: none)"
    )
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model = load_model(STUDY_MODEL)
    test = import_consep256(args.consep, "test")
    mosaic, mosaic_labels = region_mosaic(test, MOSAIC, columns=3)
    synthetic = synthetic_conic(1, 2048, seed=12, scheme=CONSEP)
    images = [
        ("CoNSeP mosaic", mosaic, 0.25),
        ("synthetic 2048", np.asarray(synthetic.images[0]), 0.5),
    ]
    # the same labels as perfect maps, read pointwise by the oracle (at 20x: no resampling)
    labels = [
        ("CoNSeP mosaic", halve_labels(mosaic_labels[None])[0]),
        ("synthetic 2048", np.asarray(synthetic.labels[0])),
    ]
    encoded = [(name, encode_targets(label), 0.5) for name, label in labels]
    figures = {"machine": machine(), "threads": torch.get_num_threads(), "model": str(STUDY_MODEL)}
    figures["seams"] = seams(model, images, "trained model") + seams(
        oracle_model(CONSEP, 0.5), encoded, "perfect maps (oracle)"
    )
    image = large_image(args.side)
    figures["stages"] = stages(model, image, TILE_SIZE, OVERLAP, 2)
    print(figures["stages"])
    figures["end_to_end"] = [end_to_end(model, image, workers) for workers in (0, 1)]
    print(figures["end_to_end"])
    figures["peak_memory_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    if args.huge:
        # spawned, not forked: a child forked after torch's OpenMP threads started can hang
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(target=huge, args=(args.huge, queue))
        child.start()
        figures["huge"] = queue.get()
        child.join()
        # ru_maxrss of children: the largest resident set of any child, in kB on Linux
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
        figures["huge"]["peak_memory_gb"] = peak
        print(figures["huge"])
    if args.out:
        atomic_write_text(args.out, json.dumps(figures, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
