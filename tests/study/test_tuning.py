"""HoVer-Net's thresholds chosen on a run's validation patches, and their use."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nucstudy.cli import main
from nucstudy.data import make_targets
from nucstudy.postprocess import Thresholds, hover_postprocess
from nucstudy.study.evaluate import result_files
from nucstudy.study.tuning import (
    ENERGY_GRID,
    FOREGROUND_GRID,
    MIN_MARKER_GRID,
    THRESHOLDS_FILE,
    _validation_maps,
    flip_tta_pq,
    read_thresholds,
    save_thresholds,
    tune_thresholds,
)


def _discs():
    """Two touching discs (radius 8 px) and their perfect NP and HV maps."""
    rows, cols = np.mgrid[:40, :56]
    inst = np.zeros((40, 56), np.int32)
    inst[(rows - 20) ** 2 + (cols - 20) ** 2 <= 64] = 1
    inst[(rows - 20) ** 2 + (cols - 34) ** 2 <= 64] = 2
    targets = make_targets(inst, (inst > 0).astype(np.int32))
    return inst, targets["np"].astype(np.float32), targets["hv"]


def test_thresholds_reach_the_post_processing():
    inst, np_prob, hv = _discs()
    classes = (inst > 0).astype(np.int32)
    doubtful = 0.6 * np_prob  # a network that is never sure
    assert len(hover_postprocess(doubtful, hv, classes, 0.5)) == 2
    assert len(hover_postprocess(doubtful, hv, classes, 0.5, thresholds=Thresholds(0.7))) == 0
    for route in ("native", "resample"):
        same = hover_postprocess(np_prob, hv, classes, 0.5, route, Thresholds())
        assert np.array_equal(
            same.inst_map, hover_postprocess(np_prob, hv, classes, 0.5, route).inst_map
        )
    # every pixel a marker: the two touching discs become one nucleus
    merged = hover_postprocess(np_prob, hv, classes, 0.5, thresholds=Thresholds(energy=1.01))
    assert len(merged) == 1
    # each disc's marker is about 50 um² at 0.5 um/px: a larger smallest marker drops both
    assert (
        len(hover_postprocess(np_prob, hv, classes, 0.5, thresholds=Thresholds(0.5, 0.4, 1.0)))
        == 2
    )
    assert (
        len(hover_postprocess(np_prob, hv, classes, 0.5, thresholds=Thresholds(0.5, 0.4, 60.0)))
        == 0
    )


def test_tuned_results_are_written_beside_the_run_own(tmp_path):
    assert result_files(tmp_path, "native", "native", tuned=True)[0].name == "metrics-tuned.json"
    assert result_files(tmp_path, "resample", "native", tuned=True)[1].name == (
        "per_image-resample-tuned.csv"
    )
    assert result_files(tmp_path, "native", "native")[0].name == "metrics.json"
    assert result_files(tmp_path, "native", "native", tta=True)[0].name == "metrics-tta.json"
    assert result_files(tmp_path, "native", "native", tuned=True, tta=True)[1].name == (
        "per_image-tuned-tta.csv"
    )


def test_thresholds_files_are_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="nucstudy tune"):
        read_thresholds(tmp_path)
    (tmp_path / THRESHOLDS_FILE).write_text("{")
    with pytest.raises(ValueError, match="not a thresholds file"):
        read_thresholds(tmp_path)
    (tmp_path / THRESHOLDS_FILE).write_text(json.dumps({"foreground": 0.6}))
    with pytest.raises(ValueError, match="not a thresholds file"):
        read_thresholds(tmp_path)


@pytest.mark.slow
def test_tune_then_evaluate_and_ood_with_the_tuned_thresholds(tmp_path, train_smoke):
    from nucstudy.data import save_conic, synthetic_conic

    config = train_smoke()
    best, grid = tune_thresholds(config.run_dir, device="cpu")
    assert len(grid) == len(FOREGROUND_GRID) * len(ENERGY_GRID) * len(MIN_MARKER_GRID)
    first = grid.iloc[0]  # HoVer-Net's first
    assert (first["foreground"], first["energy"]) == (0.5, 0.4)
    assert pd.isna(first["min marker um2"])
    assert grid["val pq"].between(0, 1).all()
    top = grid.loc[grid["val pq"].idxmax()]
    assert (top["foreground"], top["energy"]) == (best.foreground, best.energy)

    assert main(["tune", str(config.run_dir), "--device", "cpu"]) == 0
    record = json.loads((config.run_dir / THRESHOLDS_FILE).read_text())
    assert read_thresholds(config.run_dir) == best
    assert record["val pq"] == pytest.approx(grid["val pq"].max())
    assert record["val pq with HoVer-Net's"] == pytest.approx(grid["val pq"].iloc[0])
    tta_pq = flip_tta_pq(config.run_dir, best, device="cpu")
    assert record["val pq with flip TTA"] == pytest.approx(tta_pq) and 0 <= tta_pq <= 1
    flipped, plain = (_validation_maps(config.run_dir, "cpu", 16, tta)[1] for tta in (True, False))
    assert flipped.shape == plain.shape and not np.allclose(flipped, plain)  # the flips were run
    save_thresholds(tmp_path, Thresholds(0.6, 0.7, 5.0), grid)
    assert read_thresholds(tmp_path) == Thresholds(0.6, 0.7, 5.0)

    assert main(["evaluate", str(config.run_dir), "--tuned", "--device", "cpu"]) == 0
    tuned = json.loads((config.run_dir / "metrics-tuned.json").read_text())
    assert tuned["thresholds"] == {
        "foreground": best.foreground,
        "energy": best.energy,
        "min_marker_um2": best.min_marker_um2,
    }
    assert main(["evaluate", str(config.run_dir), "--tta", "--device", "cpu"]) == 0
    assert json.loads((config.run_dir / "metrics-tta.json").read_text())["tta"] is True
    assert not (config.run_dir / "metrics.json").exists()  # the run's own is not overwritten

    # out of domain: a tuned row beside the run's own, each scored once
    save_conic(synthetic_conic(8, size=64, seed=11, patches_per_source=1), tmp_path / "tiles")
    out = tmp_path / "ood.csv"
    scored = ["ood", str(config.run_dir), "--tiles", f"conic:{tmp_path / 'tiles'}"]
    scored += ["--out", str(out), "--stain-normalise", "no", "--device", "cpu", "--update"]
    assert (
        main(scored) == 0 and main([*scored, "--tuned"]) == 0 and main([*scored, "--tuned"]) == 0
    )
    summary = pd.read_csv(out)
    assert summary["thresholds"].fillna("").tolist() == ["", "HoVer-Net's", "tuned"]


def test_tune_refuses_what_is_not_a_run_folder(tmp_path, capsys):
    assert main(["tune", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
