"""A CoNIC folder is scored on held-out source images, never on what a run trained on."""

import json

import numpy as np
import pytest

from nucstudy.cli import main as cli
from nucstudy.data import save_conic, synthetic_conic
from nucstudy.data.sources import conic_split
from nucstudy.engine.trainer import Trainer
from nucstudy.study.evaluate import evaluate
from nucstudy.study.presets import preset


@pytest.fixture(scope="module")
def conic_folder(tmp_path_factory):
    """A CoNIC-layout folder of 16 synthetic patches from 4 source images."""
    data = synthetic_conic(16, size=64, seed=5)
    return save_conic(data, tmp_path_factory.mktemp("conic") / "conic")


def test_the_split_is_by_source_image_disjoint_and_complete(conic_folder):
    config = preset("smoke", data=f"conic:{conic_folder}", test_fraction=0.25)
    train, test = config.open_data("train"), config.open_data("test")
    whole = synthetic_conic(16, size=64, seed=5)
    train_sources = set(train.patch_info["source"])
    test_sources = set(test.patch_info["source"])
    assert train_sources.isdisjoint(test_sources)
    assert train_sources | test_sources == set(whole.patch_info["source"])
    assert len(train) + len(test) == len(whole)
    assert len(test) >= 0.25 * len(whole)
    fingerprints = train.fingerprints() + test.fingerprints()
    assert sorted(fingerprints) == sorted(whole.fingerprints())


def test_the_split_is_seeded_and_the_share_is_a_config_field(conic_folder):
    data = preset("smoke", data=f"conic:{conic_folder}").open_data("train")
    full = synthetic_conic(16, size=64, seed=5)
    first, second = conic_split(full, 0.25), conic_split(full, 0.25)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    small = preset("smoke", data=f"conic:{conic_folder}", test_fraction=0.25)
    large = preset("smoke", data=f"conic:{conic_folder}", test_fraction=0.5)
    assert len(large.open_data("test")) > len(small.open_data("test"))
    assert len(data) < len(full)
    with pytest.raises(ValueError, match="test_fraction"):
        preset("smoke", test_fraction=1.0)


def test_a_separate_test_folder(conic_folder, tmp_path):
    other = save_conic(synthetic_conic(4, size=64, seed=99), tmp_path / "test")
    config = preset("smoke", data=f"conic:{conic_folder}", test_data=f"conic:{other}")
    assert len(config.open_data("train")) == 16
    assert (
        config.open_data("test").fingerprints()
        == synthetic_conic(4, size=64, seed=99).fingerprints()
    )


def test_evaluation_refuses_the_patches_a_run_trained_on(conic_folder, tmp_path, capsys):
    config = preset("smoke", data=f"conic:{conic_folder}", device="cpu", out_root=str(tmp_path))
    Trainer(config, progress=False).fit()
    recorded = json.loads((config.run_dir / "trained_on.json").read_text())
    assert len(recorded["fingerprints"]) == len(config.open_data("train"))
    with pytest.raises(ValueError, match="were used to train or validate this run"):
        evaluate(config.run_dir, config.open_data("train"), device="cpu")
    assert cli(["evaluate", str(config.run_dir), "--split", "train"]) == 2
    assert "used to train or validate" in capsys.readouterr().err
    scored = evaluate(config.run_dir, config.open_data("test"), device="cpu")
    assert scored["patches"] == len(config.open_data("test"))
