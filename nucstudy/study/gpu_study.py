"""The GPU study in one command: the paper's protocol on CoNSeP for every run of the study.

``python -m nucstudy.study.gpu_study --data consep:<folder>`` (``make gpu-study``), on one CUDA
GPU:

1. throughput: training images/s of the default network, float32 against bf16 autocast +
   channels_last (:func:`nucstudy.engine.cost.time_training_steps`);
2. seed 0 of the full model and of the three ablations (no SE, no CA, no class weights) and
   the Table I baselines (HoVer-Net, Mask R-CNN), all under the paper preset;
3. further seeds of the four variants, each only if its seed-0 time fits what is left of
   ``--minutes``;
4. where papermill is installed, the ablations and Table I notebooks (which read these runs),
   then the book unless ``--no-book``. On a machine without papermill (the lent GPU machine
   has none) the runs come back and the same pages are made here by
   ``python -m nucstudy.study.gpu_study --pages-only``.

Runs go to ``results/runs/<data>-gpu/`` (one folder per run, as everywhere), the record of the
study (device, throughput, minutes per run, what was skipped and why) to ``gpu_study.json``
there. ``--device cpu --preset smoke`` runs the same command end to end on a CPU, as a check.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from nucstudy.common.io import atomic_write_text
from nucstudy.study.ablations import ABLATIONS, ablation_config, reusable_run
from nucstudy.study.experiment import ExperimentConfig
from nucstudy.study.paths import REPO_ROOT
from nucstudy.study.presets import PRESETS
from nucstudy.study.table1 import method_config, table1_base

#: The record of a GPU study, in its registry folder.
RECORD_FILE = "gpu_study.json"
#: The default network's training step is timed on this many patches of this side.
THROUGHPUT_BATCH, THROUGHPUT_SIDE = 32, 128


def measure_throughput(
    device: str, batch_size: int = THROUGHPUT_BATCH, steps: int = 5
) -> list[dict[str, Any]]:
    """Training images/s of the default network on ``device``: float32, then bf16 autocast
    with channels_last where the device has it (forward + loss + backward on ``batch_size``
    patches of :data:`THROUGHPUT_SIDE` px, the fastest of ``steps`` timed steps)."""
    import torch

    from nucstudy.data.classes import CONIC
    from nucstudy.engine.cost import synthetic_batch, time_training_steps
    from nucstudy.engine.device import choose_fast_path
    from nucstudy.engine.methods import build_method
    from nucstudy.models import build_model

    torch_device = torch.device(device)
    config = ExperimentConfig()
    network = build_model(config.model, CONIC.n_classes).to(torch_device).train()
    method = build_method(config, CONIC).to(torch_device)
    batch = synthetic_batch(method, batch_size, THROUGHPUT_SIDE)
    rows = []
    for mixed in (False, True):
        fast = choose_fast_path(torch_device, mixed)
        if mixed and not fast.bf16:
            break
        seconds = time_training_steps(network, method, batch, steps, fast)
        rows.append(
            {
                "mode": "bf16 + channels_last" if mixed else "float32",
                "batch": batch_size,
                "side": THROUGHPUT_SIDE,
                "seconds_per_step": seconds,
                "images_per_s": batch_size / seconds,
            }
        )
    return rows


def plan(base: ExperimentConfig, seeds: list[int]) -> list[tuple[str, int, ExperimentConfig]]:
    """(what, seed, config) of every run, in the order they are trained: seed 0 of the four
    variants, then the two Table I baselines, then the further seeds of the variants."""
    first, *others = seeds
    runs = [(variant, first, ablation_config(base, variant, first)) for variant in ABLATIONS]
    for method in ("hovernet", "maskrcnn"):
        runs.append((method, first, method_config(base.replace(seed=first), method)))
    for seed in others:
        runs += [(variant, seed, ablation_config(base, variant, seed)) for variant in ABLATIONS]
    return runs


def recorded_minutes(run_dir: Path) -> float:
    """Minutes a finished run trained for, from its ``env.json`` (started to finished)."""
    from nucstudy.study.evaluate import minutes_between

    env = json.loads((run_dir / "env.json").read_text())
    return minutes_between(env.get("started"), env.get("finished"))


def run_study(
    base: ExperimentConfig, seeds: list[int], minutes: float | None, progress: bool = True
) -> dict[str, Any]:
    """Train and score every run of :func:`plan` that is missing and fits the time.

    A further seed of a variant is trained only if the measured minutes of its first seed
    fit in what is left of ``minutes`` (None: no limit). Returns the record written to
    ``<base.out_root>/gpu_study.json``.
    """
    from nucstudy.study.evaluate import train_and_evaluate

    started = time.perf_counter()
    record: dict[str, Any] = {"runs": {}, "skipped": {}, "budget_minutes": minutes}
    first_minutes: dict[str, float] = {}
    for what, seed, config in plan(base, seeds):
        left = None if minutes is None else minutes - (time.perf_counter() - started) / 60
        if reusable_run(config.run_dir, config) is not None:
            spent = recorded_minutes(config.run_dir)
            first_minutes.setdefault(what, spent)
            record["runs"][config.name] = {"what": what, "seed": seed, "minutes": spent}
            continue
        estimate = first_minutes.get(what)
        if left is not None and estimate is not None and estimate > left:
            record["skipped"][config.name] = (
                f"about {estimate:.1f} min (its seed-0 run), {max(left, 0):.1f} min left"
            )
            continue
        if progress:
            print(f"[gpu-study] {what} seed {seed}: training {config.run_dir}", flush=True)
        start = time.perf_counter()
        train_and_evaluate(config, progress=False)
        spent = (time.perf_counter() - start) / 60
        first_minutes.setdefault(what, spent)
        metrics = json.loads((config.run_dir / "metrics.json").read_text())["overall"]
        record["runs"][config.name] = {"what": what, "seed": seed, "minutes": spent, **metrics}
        if progress:
            print(f"[gpu-study]   mPQ+ {metrics['mpq+']:.4f} in {spent:.1f} min", flush=True)
    record["minutes"] = (time.perf_counter() - started) / 60
    return record


def make_pages(
    base: ExperimentConfig,
    seeds: list[int],
    changes: dict[str, Any],
    pages: Path,
    book: bool,
    progress: bool = True,
) -> None:
    """The ablations and Table I pages of the study's runs (papermill; nothing is trained:
    a run that is missing shows as not trained), then the book."""
    from nucstudy.study.main_job import RUNS_ROOT, build_book, registry_roots, run_notebook

    root = Path(base.out_root)
    ablations = {
        "preset": base.preset,
        "data": base.data,
        "resample": base.resample,
        "seeds": seeds,
        "device": base.device,
        "out_root": str(root),
        "reuse_finished": True,
        "train_missing": False,
        "extra": {"workers": base.workers, **changes},
    }
    if progress:
        print(f"[gpu-study] pages into {pages}", flush=True)
    run_notebook("ablations", pages / "ablations.ipynb", ablations)
    in_registry = root.resolve().parent == (REPO_ROOT / RUNS_ROOT).resolve()
    roots = registry_roots(root) if in_registry else [str(root)]  # elsewhere: itself only
    run_notebook("table1", pages / "table1.ipynb", {"runs_roots": roots})
    if book:
        build_book()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nucstudy.study.gpu_study", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", default="consep:../shared/data/consep256")
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=8.0, help="time for training runs")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a check")
    parser.add_argument("--workers", type=int, default=min(8, (os.cpu_count() or 2) - 1))
    parser.add_argument("--throughput-batch", type=int, default=THROUGHPUT_BATCH)
    parser.add_argument(
        "--out", type=Path, help="registry folder (default results/runs/<data>-gpu)"
    )
    parser.add_argument("--pages", type=Path, help="where the executed notebooks go")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--no-book", action="store_true", help="pages, but no book build")
    parser.add_argument("--pages-only", action="store_true", help="no training: pages of runs")
    args = parser.parse_args(argv)

    import torch

    from nucstudy.common.validation import parse_pairs
    from nucstudy.data import parse_source

    kind, folder = parse_source(args.data)
    if folder is not None and not folder.exists():
        parser.error(f"--data: folder {folder} not found")
    if args.device == "cuda" and not args.pages_only and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run on a GPU machine, or pass --device cpu for a check")
    try:
        changes = parse_pairs(args.set, "--set")
    except ValueError as error:
        parser.error(str(error))
    tag = f"{kind}-gpu"
    out = args.out or REPO_ROOT / "results" / "runs" / tag
    pages = args.pages or REPO_ROOT / "book" / "experiments" / tag
    base = table1_base(args.data, args.preset, device=args.device, workers=args.workers)
    base = base.replace(out_root=str(out), **changes)
    if not args.pages_only:
        record = {"device": _device_name(args.device), "data": args.data, "preset": args.preset}
        record["throughput"] = measure_throughput(args.device, args.throughput_batch)
        for row in record["throughput"]:
            print(f"[gpu-study] {row['mode']}: {row['images_per_s']:.0f} images/s", flush=True)
        record.update(run_study(base, args.seeds, args.minutes))
        atomic_write_text(Path(out) / RECORD_FILE, json.dumps(record, indent=2) + "\n")
        print(f"[gpu-study] runs in {out}; record in {Path(out) / RECORD_FILE}", flush=True)
    if importlib.util.find_spec("papermill") is None:
        print(
            "[gpu-study] no papermill here: make the pages where it is installed with "
            "python -m nucstudy.study.gpu_study --pages-only",
            flush=True,
        )
        return 0
    make_pages(base, args.seeds, changes, pages, book=not args.no_book)
    return 0


def _device_name(device: str) -> str:
    import platform

    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
