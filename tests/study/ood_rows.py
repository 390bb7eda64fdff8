"""Rows of the out-of-domain results table, built by hand for the tests of what reads it."""

from __future__ import annotations

from nucstudy.study.ood import CLASSICAL_ROW

#: The registry folder of a run named without one.
ROOT = "results/runs/consep-paper"


def ood_row(
    run: str, pq: float, normalised: bool = False, thresholds: str = "HoVer-Net's", **more
) -> dict:
    """One network's row: ``run`` inside :data:`ROOT` unless it names its folder."""
    return {
        "method": "SE-Res U-Net",
        "run": run if "/" in run else f"{ROOT}/{run}",
        "preset": "paper",
        "stain normalisation": normalised,
        "thresholds": thresholds,
        "mpp": 0.5,
        "pq": pq,
        "nuclei true": 100,
        **more,
    }


def floor_row(pq: float = 0.40, **more) -> dict:
    """The classical floor's row, as read back from the CSV (NaN where it has no run)."""
    return {
        "method": CLASSICAL_ROW,
        "run": float("nan"),
        "preset": float("nan"),
        "stain normalisation": False,
        "thresholds": float("nan"),
        "mpp": 0.5,
        "pq": pq,
        "nuclei true": 100,
        **more,
    }
