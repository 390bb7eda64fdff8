"""Does this environment reproduce the committed results?

The main job is deterministic under the locked environment (``requirements.lock``) on one
CPU: a fresh clone's ``make study`` must give the committed synthetic results to 4 decimals
on the kind of CPU that trained them (each run's ``env.json`` names its model, its vector
extensions and whether the fast path ran in bf16). On another CPU the kernels round
differently and training amplifies the difference (:func:`training_cpus` lets the comparison
say so); a model name alone does not settle it, as a hypervisor may call an AVX2-only and an
AVX512-BF16 machine both "AMD EPYC". A dependency
that resolves to another version (OpenCV drawing the synthetic nuclei differently, say)
changes them silently; two checks catch it:

* :func:`compare_results` compares every number of two results trees, timings aside: the run
  folders' ``metrics.json``, ``history.csv``, ``per_image.csv`` and ``trained_on.json``, and
  the data summary. ``python -m nucstudy.study.reproduce FRESH_RESULTS`` runs it against the
  committed ``results/`` after ``make study`` in a fresh clone.
* :func:`short_run_losses` trains the ``smoke`` preset with the main job's recipe in float32 on
  one thread (about a minute); ``tests/study/test_reproduce.py`` compares its losses with the
  committed :data:`SHORT_RUN_FILE` (``--write-short-run`` rewrites it: a deliberate commit, with
  the synthetic results regenerated, when a dependency is upgraded).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from nucstudy.common.io import atomic_write_text
from nucstudy.engine.run_folder import (
    CPU_NOT_RECORDED,
    ENV_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    PER_IMAGE_FILE,
    TRAINED_ON_FILE,
    cpu_label,
    environment_info,
)
from nucstudy.study.paths import RESULTS_DIR
from nucstudy.study.presets import HV_TERMS, preset

#: Digits after the point to which results must agree.
DECIMALS = 4
#: Files compared wherever they are under a results tree.
COMPARED_FILES = (METRICS_FILE, HISTORY_FILE, PER_IMAGE_FILE, TRAINED_ON_FILE, "data_summary.csv")
#: Values that measure time, not results: never compared.
TIMING_KEYS = frozenset({"seconds", "images_per_s", "predict_seconds", "evaluated"})
#: The parts of ``results/`` that the main job on synthetic data writes.
MAIN_JOB_PARTS = ("runs/synthetic", "study")
#: The committed losses of :func:`short_run_losses`.
SHORT_RUN_FILE = RESULTS_DIR / "reproduction" / "short_run_losses.json"


def _flat_values(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) of a JSON value, timing keys left out."""
    if isinstance(value, dict):
        for name, inner in value.items():
            if name not in TIMING_KEYS:
                yield from _flat_values(inner, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _flat_values(inner, f"{key}[{index}]")
    else:
        yield key, value


def _file_values(path: Path) -> dict[str, Any]:
    """Every compared value of one result file by key (CSV: ``column[row]``)."""
    if path.suffix == ".json":
        return dict(_flat_values(json.loads(path.read_text())))
    table = pd.read_csv(path)
    return {
        f"{column}[{row}]": value
        for column in table.columns
        if column not in TIMING_KEYS
        for row, value in enumerate(table[column].tolist())
    }


def _same(committed: Any, fresh: Any, decimals: int) -> bool:
    numbers = (int, float)
    if isinstance(committed, numbers) and isinstance(fresh, numbers):
        if isinstance(committed, bool) or isinstance(fresh, bool):
            return committed == fresh
        if math.isnan(committed) or math.isnan(fresh):
            return math.isnan(committed) and math.isnan(fresh)
        return abs(committed - fresh) <= 0.5 * 10.0**-decimals
    return committed == fresh


def compare_results(
    committed: str | os.PathLike,
    fresh: str | os.PathLike,
    parts: tuple[str, ...] = MAIN_JOB_PARTS,
    decimals: int = DECIMALS,
) -> pd.DataFrame:
    """Every value of ``committed``'s result files that ``fresh`` does not reproduce.

    Args:
        committed, fresh: two results trees (``results/`` of two clones).
        parts: sub-folders of the trees compared (default: what the synthetic main job writes).
        decimals: numbers agree when they differ by at most half a unit of this decimal.

    Returns:
        One row per difference, columns ``file`` (relative to the tree), ``key``,
        ``committed``, ``fresh`` (``None`` where a file or key is missing); empty if the
        results are reproduced. Timings (:data:`TIMING_KEYS`) are never compared.
    """
    committed, fresh = Path(committed), Path(fresh)
    rows = []
    for part in parts:
        for path in sorted((committed / part).rglob("*")):
            if path.name not in COMPARED_FILES:
                continue
            relative = path.relative_to(committed)
            if not (fresh / relative).is_file():
                rows.append((str(relative), "(file)", "present", None))
                continue
            ours, theirs = _file_values(path), _file_values(fresh / relative)
            for key in sorted(set(ours) | set(theirs)):
                if not _same(ours.get(key), theirs.get(key), decimals):
                    rows.append((str(relative), key, ours.get(key), theirs.get(key)))
    return pd.DataFrame(rows, columns=["file", "key", "committed", "fresh"])


def short_run_losses(out_root: str | os.PathLike) -> dict[str, list[float]]:
    """Train the ``smoke`` preset with the main job's recipe (HV terms, cosine), in float32 on
    one thread, on its synthetic data; its per-epoch training losses by term.

    Deterministic on any CPU up to rounding far below :data:`DECIMALS`; takes about a minute.
    """
    import torch

    from nucstudy.engine.trainer import Trainer

    config = preset(
        "smoke",
        device="cpu",
        mixed_precision=False,
        loss_weights=HV_TERMS,
        lr_schedule="cosine",
        out_root=str(out_root),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(config, progress=False).fit()
    finally:
        torch.set_num_threads(threads)
    history = pd.read_csv(config.run_dir / HISTORY_FILE)
    return {
        column: [float(value) for value in history[column]]
        for column in history.columns
        if column.startswith("train_")
    }


def write_short_run(path: str | os.PathLike = SHORT_RUN_FILE) -> Path:
    """Train :func:`short_run_losses` and write its losses, with the environment they came
    from, to ``path`` (atomically)."""
    with tempfile.TemporaryDirectory() as folder:
        losses = short_run_losses(folder)
    versions = {k: v for k, v in environment_info().items() if k not in ("git_commit",)}
    record = {"losses": losses, "environment": versions}
    return atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def training_cpus(root: str | os.PathLike, parts: tuple[str, ...] = MAIN_JOB_PARTS) -> set[str]:
    """The CPUs that trained the runs of a results tree, as
    :func:`~nucstudy.engine.run_folder.cpu_label` names them."""
    return {
        cpu_label(json.loads(path.read_text()))
        for part in parts
        for path in (Path(root) / part).rglob(ENV_FILE)
    }


def cpu_note(
    committed: str | os.PathLike, fresh: str | os.PathLike, parts: tuple[str, ...]
) -> str:
    """A sentence on the CPUs of two trees where they differ or are unknown ("" where both
    were trained on one and the same recorded CPU)."""
    ours, theirs = training_cpus(committed, parts), training_cpus(fresh, parts)
    if ours == theirs and len(ours) == 1 and CPU_NOT_RECORDED not in ours:
        return ""
    return (
        f"CPUs: committed {', '.join(sorted(ours)) or 'none'}; fresh "
        f"{', '.join(sorted(theirs)) or 'none'}. Kernels round differently on another CPU model, "
        "with other vector extensions or in bf16 rather than float32, and training amplifies "
        f"it: results agree to {DECIMALS} decimals only on the CPU that trained them."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nucstudy.study.reproduce",
        description="Compare a fresh clone's results with the committed ones "
        f"(to {DECIMALS} decimals, timings aside), or rewrite the short run's losses.",
    )
    parser.add_argument("fresh", nargs="?", help="results/ of a fresh clone after make study")
    parser.add_argument("--committed", default=str(RESULTS_DIR), help="default: this clone's")
    parser.add_argument("--parts", nargs="+", default=list(MAIN_JOB_PARTS))
    parser.add_argument(
        "--write-short-run", action="store_true", help=f"rewrite {SHORT_RUN_FILE.name}"
    )
    args = parser.parse_args(argv)
    if args.write_short_run:
        print(f"wrote {write_short_run()}")
        return 0
    if args.fresh is None:
        parser.error("give the fresh clone's results folder, or --write-short-run")
    for root in (args.committed, args.fresh):
        if not Path(root).is_dir():
            parser.error(f"results folder not found: {root}")
    differences = compare_results(args.committed, args.fresh, tuple(args.parts))
    if differences.empty:
        print(f"reproduced: {args.fresh} equals {args.committed} to {DECIMALS} decimals")
        return 0
    files = differences["file"].nunique()
    print(f"NOT reproduced: {len(differences)} values in {files} files differ; the first:")
    print(differences.head(20).to_string(index=False))
    note = cpu_note(args.committed, args.fresh, tuple(args.parts))
    if note:
        print(note)
    return 1


if __name__ == "__main__":
    sys.exit(main())
