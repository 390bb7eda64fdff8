"""Whole slides on a CPU: seconds per mm2 of tissue, per stage, and peak memory by slide size.

Run from the repository root (with the study model, ``results/models/consep-cpu-demo.pt``):

    OMP_NUM_THREADS=1 python benchmarks/slides.py                # print the figures
    OMP_NUM_THREADS=1 python benchmarks/slides.py --out results/benchmarks/slides_cpu.json

Two synthetic slides are written (tiled, JPEG, three levels, 0.5 um/px at level 0, the
model's resolution, so level 0 is segmented): a square of synthetic H&E (``--side`` px, and
twice that, so the second has four times the tissue; 2 x 2 and 4 x 4 regions by default) on
a margin of glass. Each goes through :func:`nucstudy.segment.slide_segment.segment_slide` with the
command's defaults (tiles of 1024 px overlapping by 128, regions of two tiles), in a child
process of its own whose peak resident memory (``ru_maxrss``) is recorded, beside its memory
once the model is loaded and its resident memory as each region is written.

Stages (seconds, then seconds per mm2 of tissue, the tissue mask's area):

- **read**: the thumbnail and the regions' pixels, decoded by tiffslide (and the mask);
- **network**: tiles through the model (``DenseMethod.predict``, timed by wrapping it);
- **postprocess**: HoVer-Net's watershed per tile (``DenseMethod.to_nuclei``, wrapped);
- **merge**: the rest of each region's work: tiles merged in the region, nuclei resized to
  the slide's pixels, and the region merged with its neighbours and written to disk;
- **export**: GeoJSON, table, summary and thumbnail, from the region files.

Every figure is one pass, on a CPU shared with whatever else runs (the JSON says what).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile

from nucstudy.common.io import atomic_write_text
from nucstudy.data import synthetic_conic
from nucstudy.study.paths import STUDY_MODEL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import machine  # noqa: E402  (benchmarks/metrics.py)

MPP = 0.5
MARGIN = 128


def write_slide(path: Path, side: int, seed: int = 0) -> Path:
    """A slide of ``side`` x ``side`` px of synthetic H&E (a 1024 px block of synthetic
    patches, repeated) with :data:`MARGIN` px of glass around it, at :data:`MPP` um/px;
    the whole level 0 is made in memory here (tens of MB), never in the child that segments."""
    data = synthetic_conic(4, size=512, seed=seed)
    patches = np.asarray(data.images)
    block = np.concatenate(
        [np.concatenate(list(patches[:2]), 1), np.concatenate(list(patches[2:]), 1)]
    )
    full = side + 2 * MARGIN
    rng = np.random.default_rng(seed)
    image = rng.integers(232, 246, (full, full, 1), dtype=np.uint8).repeat(3, axis=-1)
    reps = -(-side // 1024)
    image[MARGIN : MARGIN + side, MARGIN : MARGIN + side] = np.tile(block, (reps, reps, 1))[
        :side, :side
    ]
    levels = [image]
    for _ in range(2):
        level = levels[-1]
        size = (level.shape[1] // 4, level.shape[0] // 4)
        levels.append(cv2.resize(level, size, interpolation=cv2.INTER_AREA))
    options = {"tile": (256, 256), "compression": "jpeg", "photometric": "rgb", "metadata": None}
    with tifffile.TiffWriter(path) as tw:
        for k, level in enumerate(levels):
            scale = level.shape[1] / full
            extra = {"subifds": len(levels) - 1} if k == 0 else {"subfiletype": 1}
            tw.write(
                level,
                resolution=(1e4 / MPP * scale, 1e4 / MPP * scale),
                resolutionunit="CENTIMETER",
                **extra,
                **options,
            )
    return path


def child(path: str, out_dir: str, queue) -> None:
    """Child process: one slide through ``segment_slide``; puts the record, the wrapped
    stages' seconds and the memory figures on ``queue``."""
    import torch

    from nucstudy.engine.methods import DenseMethod
    from nucstudy.engine.model_file import load_model
    from nucstudy.segment.images import SegmentOptions
    from nucstudy.segment.regions import RegionStore
    from nucstudy.segment.slide_segment import SlideOptions, segment_slide

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = load_model(STUDY_MODEL)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timed = {"network": 0.0, "postprocess": 0.0}

    def wrap(name, function):
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timed[name] += time.perf_counter() - start

        return wrapped

    DenseMethod.predict = wrap("network", DenseMethod.predict)
    DenseMethod.to_nuclei = wrap("postprocess", DenseMethod.to_nuclei)
    trace = []  # resident memory as each region is saved, MB
    save = RegionStore.save

    def save_and_measure(self, index, nuclei):
        save(self, index, nuclei)
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        trace.append(round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1))

    RegionStore.save = save_and_measure
    start = time.perf_counter()
    record = segment_slide(
        model, path, out_dir, SlideOptions(), SegmentOptions(device="cpu"), overwrite=True
    )
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(
        {
            "record": record,
            "timed": timed,
            "wall": wall,
            "rss_model": rss_model,
            "peak": peak,
            "trace": trace,
        }
    )


def run_slide(path: Path, out_dir: Path) -> dict:
    """One slide in a child process; its figures."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=child, args=(str(path), str(out_dir), queue))
    process.start()
    result = queue.get()
    process.join()
    record, timed = result["record"], result["timed"]
    seconds = record["seconds"]
    stages = {
        "read": seconds.get("read", 0.0) + seconds.get("tissue", 0.0),
        "network": timed["network"],
        "postprocess": timed["postprocess"],
        "merge": seconds.get("segment", 0.0)
        - timed["network"]
        - timed["postprocess"]
        + seconds.get("merge", 0.0),
        "export": seconds.get("export", 0.0),
    }
    mm2 = record["tissue_area_mm2"]
    return {
        "slide_px": [record["width"], record["height"]],
        "megapixels": round(record["width"] * record["height"] / 1e6, 2),
        "tissue_mm2": mm2,
        "regions": record["regions"],
        "tissue_regions": record["tissue_regions"],
        "region_size_px": record["region_size_level_px"],
        "nuclei": record["nuclei"],
        "seconds": {k: round(v, 2) for k, v in stages.items()},
        "seconds_end_to_end": round(result["wall"], 2),
        "seconds_per_mm2": {k: round(v / mm2, 2) for k, v in stages.items()},
        "seconds_per_mm2_end_to_end": round(result["wall"] / mm2, 2),
        "rss_after_loading_model_mb": round(result["rss_model"], 1),
        "peak_rss_mb": round(result["peak"], 1),
        "peak_rss_above_model_mb": round(result["peak"] - result["rss_model"], 1),
        "rss_after_each_region_mb": result["trace"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=3200, help="small slide's tissue side, px")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--note", default="", help="what else ran on the machine")
    args = parser.parse_args(argv)
    results = {
        "machine": machine(),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
        "note": args.note,
        "model": str(STUDY_MODEL.relative_to(STUDY_MODEL.parents[2])),
        "mpp": MPP,
        "slides": [],
    }
    with tempfile.TemporaryDirectory(prefix="nucstudy-slides-") as tmp:
        for k, side in enumerate((args.side, 2 * args.side)):
            path = write_slide(Path(tmp) / f"synthetic_{side}.tif", side, seed=k)
            row = {"name": path.name, **run_slide(path, Path(tmp) / "out")}
            results["slides"].append(row)
            print(json.dumps(row))
    small, large = results["slides"]
    results["tissue_ratio"] = round(large["tissue_mm2"] / small["tissue_mm2"], 2)
    results["peak_rss_ratio"] = round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)
    print(
        f"tissue x{results['tissue_ratio']}, peak memory x{results['peak_rss_ratio']} "
        f"({small['peak_rss_mb']:.0f} -> {large['peak_rss_mb']:.0f} MB)"
    )
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
