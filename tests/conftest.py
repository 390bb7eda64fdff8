"""Shared fixtures: small synthetic data sets and the location of the real CoNSeP patches."""

from __future__ import annotations

from pathlib import Path

import pytest

from nucstudy.data import synthetic_conic
from nucstudy.experiment import preset

REPO = Path(__file__).resolve().parents[1]
CONSEP_DIR = REPO.parent / "shared" / "data" / "consep256"


@pytest.fixture(scope="session")
def synthetic_small():
    """Eight 256 x 256 synthetic patches (two source images), CoNIC scheme."""
    return synthetic_conic(8, size=256, seed=3)


@pytest.fixture(scope="session")
def consep_dir() -> Path:
    """The CoNSeP-256 folder beside the repository; tests using it are skipped without it."""
    if not (CONSEP_DIR / "train" / "labels.npz").is_file():
        pytest.skip(f"CoNSeP-256 not found at {CONSEP_DIR}")
    return CONSEP_DIR


@pytest.fixture(scope="session")
def train_smoke(tmp_path_factory):
    """A function that trains a smoke run on the CPU in a folder of its own; returns its config."""
    from nucstudy.train import Trainer

    def train(**changes):
        root = tmp_path_factory.mktemp("runs")
        config = preset("smoke", device="cpu", out_root=str(root), **changes)
        Trainer(config, progress=False).fit()
        return config

    return train
