"""The main job: one command from a fresh clone to the study's outputs.

For now it builds the data side of the study: it generates the synthetic data set (the
embedded default), reads the real CoNSeP-256 patches when they are present, prints and
writes a data summary, and saves a figure with patches of every source side by side.

Run ``python -m nucstudy.study --help`` for its options.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from nucstudy.data import ConicData, import_consep256, save_conic, synthetic_conic
from nucstudy.io import atomic_write_text
from nucstudy.paths import consep_dir_or_none
from nucstudy.plots import plot_sources, save_figure


def summarise(name: str, data: ConicData) -> pd.DataFrame:
    """One row per class: nuclei counted on the central region, and their share.

    Returns:
        DataFrame with columns source, class, nuclei, share (fraction of the source's nuclei),
        patches, mpp.
    """
    totals = data.counts.sum(axis=0)
    return pd.DataFrame(
        {
            "source": name,
            "class": list(data.scheme.foreground_names),
            "nuclei": totals,
            "share": totals / max(int(totals.sum()), 1),
            "patches": len(data),
            "mpp": data.mpp,
        }
    )


def _step(message: str) -> None:
    print(f"[nucstudy {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(
    out: Path, data_dir: Path, n_synthetic: int, consep: Path | None, seed: int
) -> pd.DataFrame:
    """Write the data summary and figure under ``out``, the synthetic set under ``data_dir``.

    Returns:
        The summary table (see :func:`summarise`).
    """
    _step(f"generating {n_synthetic} synthetic patches (seed {seed})")
    synthetic = synthetic_conic(n_synthetic, seed=seed)
    save_conic(synthetic, data_dir / "synthetic")
    panels = [("synthetic (CoNIC classes)", synthetic)]
    summaries = [summarise("synthetic", synthetic)]
    if consep is not None:
        _step(f"reading CoNSeP-256 from {consep}")
        for split in ("train", "test"):
            data = import_consep256(consep, split)
            summaries.append(summarise(f"consep256-{split}", data))
        panels.append(("CoNSeP-256 test, 40x (CoNSeP classes)", data))
        panels.append(
            ("CoNSeP-256 test, halved to 20x", import_consep256(consep, "test", resample=True))
        )
    else:
        _step("CoNSeP-256 not found: real data left out (pass --consep PATH)")
    summary = pd.concat(summaries, ignore_index=True)
    atomic_write_text(out / "data_summary.csv", summary.to_csv(index=False))
    figure = save_figure(plot_sources(panels, seed=seed), out / "figures" / "data_sources.png")
    _step(f"summary written to {out / 'data_summary.csv'}, figure to {figure}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nucstudy.study", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/study"),
        help="folder for the summary and figures",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="folder for generated data sets"
    )
    parser.add_argument("--synthetic", type=int, default=64, help="synthetic patches to generate")
    parser.add_argument(
        "--consep",
        type=Path,
        default=None,
        help="CoNSeP-256 folder (default: ../shared/data/consep256 beside the repository, "
        "used when present)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.synthetic < 1:
        parser.error("--synthetic must be at least 1")
    consep = consep_dir_or_none(args.consep)
    if args.consep is not None and consep is None:
        parser.error(f"--consep: {args.consep} is not a CoNSeP-256 folder (no train/labels.npz)")
    summary = run(args.out, args.data_dir, args.synthetic, consep, args.seed)
    with pd.option_context("display.width", 120, "display.float_format", "{:.3f}".format):
        print(
            summary.pivot(index="class", columns="source", values="nuclei").fillna(0).astype(int)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
