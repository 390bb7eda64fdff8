"""Does the fast path change anything that matters? cpu-demo on CoNSeP-256 with and without.

Trains the cpu-demo preset (the full model) on CoNSeP-256 halved to 20x, once per seed with
the fast path (``mixed_precision=True``: bf16 autocast + channels_last where the CPU supports
them) and once without (float32), and scores each on the official test split. The run
folders (config, env.json with the path taken, history, metrics) go under
``results/runs/consep/fast-path/``; the summary, one row per run with its minutes, images/s,
final loss terms and test scores, goes to ``--out``. The performance page plots the loss
curves from the run folders and compares the two paths' difference with the seed-to-seed
spread.

Usage: python benchmarks/fast_path_consep.py [--seeds 0 1 2] [--epochs N]
           [--consep ../shared/data/consep256] [--out results/benchmarks/fast_path_consep.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from nucstudy.common.io import atomic_write_text
from nucstudy.study.evaluate import train_and_evaluate
from nucstudy.study.experiment import ENV_FILE, HISTORY_FILE
from nucstudy.study.presets import preset

RUNS = Path("results/runs/consep/fast-path")


def run_one(consep: Path, seed: int, mixed_precision: bool, epochs: int | None) -> dict:
    """Train and score one run; its summary row."""
    path = "fast" if mixed_precision else "fp32"
    changes = {
        "name": f"full-{path}-seed{seed}",
        "out_root": str(RUNS),
        "data": f"consep:{consep}",
        "resample": True,
        "seed": seed,
        "mixed_precision": mixed_precision,
        "device": "cpu",
    }
    if epochs is not None:
        changes["epochs"] = epochs
    config = preset("cpu-demo", **changes)
    start = time.perf_counter()
    metrics = train_and_evaluate(config, progress=True)
    minutes = (time.perf_counter() - start) / 60
    history = pd.read_csv(config.run_dir / HISTORY_FILE)
    env = json.loads((config.run_dir / ENV_FILE).read_text())
    last = history.iloc[-1]
    return {
        "run": str(config.run_dir),
        "path": path,
        "seed": seed,
        "fast_path": env["fast_path"],
        "minutes": minutes,
        "train_images_per_s": float(history["images_per_s"].median()),
        **{name: float(last[name]) for name in history if name.startswith("train_")},
        **{f"test_{key}": value for key, value in metrics["overall"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--consep", type=Path, default=Path("../shared/data/consep256"))
    parser.add_argument("--out", default=None, help="write the summary as JSON here")
    args = parser.parse_args()
    rows = []
    for mixed_precision in (True, False):
        for seed in args.seeds:
            rows.append(run_one(args.consep, seed, mixed_precision, args.epochs))
            print(json.dumps(rows[-1]), flush=True)
            if args.out:  # written after every run, so a stopped benchmark keeps its rows
                atomic_write_text(args.out, json.dumps({"runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
