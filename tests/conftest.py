"""Shared fixtures: small synthetic data sets and the locations of the real data (CoNSeP
patches, CPM-15 test tiles)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nucstudy.data import synthetic_conic
from nucstudy.study.presets import preset

REPO = Path(__file__).resolve().parents[1]
CONSEP_DIR = REPO.parent / "shared" / "data" / "consep256"
CPM15_DIR = REPO.parent / "shared" / "data" / "cpm15"


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
def cpm15_dir() -> Path:
    """The CPM-15 test tiles beside the repository; tests using them are skipped without."""
    if not (CPM15_DIR / "labels.npz").is_file():
        pytest.skip(f"CPM-15 not found at {CPM15_DIR}")
    return CPM15_DIR


@pytest.fixture(scope="session")
def train_smoke(tmp_path_factory):
    """A function that trains a smoke run on the CPU in a folder of its own; returns its config."""
    from nucstudy.engine.trainer import Trainer

    def train(**changes):
        root = tmp_path_factory.mktemp("runs")
        config = preset("smoke", device="cpu", out_root=str(root), **changes)
        Trainer(config, progress=False).fit()
        return config

    return train


@pytest.fixture
def straight_and_resumed(tmp_path, monkeypatch):
    """A function that trains ``config`` twice on the CPU: straight through, and stopped
    after its first epoch then resumed from ``last.pt``; returns the two trainers."""
    from nucstudy.engine.trainer import Trainer

    def train(config):
        straight = Trainer(config, run_dir=tmp_path / "straight", progress=False)
        straight.fit()
        end_epoch = Trainer._end_epoch

        def stop_after_first(self, row):
            end_epoch(self, row)
            if self.epoch == 1:
                raise KeyboardInterrupt

        monkeypatch.setattr(Trainer, "_end_epoch", stop_after_first)
        with pytest.raises(KeyboardInterrupt):
            Trainer(config, run_dir=tmp_path / "resumed", progress=False).fit()
        monkeypatch.setattr(Trainer, "_end_epoch", end_epoch)
        resumed = Trainer(config, run_dir=tmp_path / "resumed", resume=True, progress=False)
        assert resumed.epoch == 1
        resumed.fit()
        return straight, resumed

    return train
