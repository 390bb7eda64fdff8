"""The reproduction checks: result trees compared to 4 decimals, timings aside; the short run's
losses and the main job's synthetic data against what is committed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from nucstudy.study.experiment import ExperimentConfig
from nucstudy.study.paths import RESULTS_DIR
from nucstudy.study.reproduce import (
    DECIMALS,
    SHORT_RUN_FILE,
    compare_results,
    cpu_note,
    main,
    short_run_losses,
    training_cpus,
)


def _tree(root: Path, pq: float, seconds: float, loss: float) -> Path:
    run = root / "runs" / "synthetic" / "full-seed0"
    run.mkdir(parents=True)
    metrics = {"overall": {"pq": pq, "r2": 0.25}, "predict_seconds": seconds, "tta": False}
    (run / "metrics.json").write_text(json.dumps(metrics))
    history = pd.DataFrame({"epoch": [1, 2], "train_total": [1.0, loss], "seconds": [seconds] * 2})
    history.to_csv(run / "history.csv", index=False)
    (run / "notes.txt").write_text(str(seconds))  # not a result file: never compared
    return root


def test_equal_results_to_four_decimals_whatever_the_timings(tmp_path):
    committed = _tree(tmp_path / "a", pq=0.66421, seconds=3.0, loss=0.5)
    fresh = _tree(tmp_path / "b", pq=0.66423, seconds=9.0, loss=0.50004)
    assert compare_results(committed, fresh).empty
    assert main([str(fresh), "--committed", str(committed)]) == 0


def test_a_change_in_the_fourth_decimal_is_found(tmp_path, capsys):
    committed = _tree(tmp_path / "a", pq=0.6642, seconds=3.0, loss=0.5)
    fresh = _tree(tmp_path / "b", pq=0.6645, seconds=3.0, loss=0.5 + 2 * 10.0**-DECIMALS)
    differences = compare_results(committed, fresh)
    assert set(differences["key"]) == {"overall.pq", "train_total[1]"}
    assert main([str(fresh), "--committed", str(committed)]) == 1
    assert "NOT reproduced: 2 values in 2 files" in capsys.readouterr().out


def test_results_of_another_cpu_model_are_said_to_be_so(tmp_path, capsys):
    """bf16 rounds differently on another CPU model: a failed comparison names both models."""
    committed = _tree(tmp_path / "a", pq=0.6642, seconds=3.0, loss=0.5)
    fresh = _tree(tmp_path / "b", pq=0.6645, seconds=3.0, loss=0.5)
    run = Path("runs") / "synthetic" / "full-seed0" / "env.json"
    (committed / run).write_text(json.dumps({"cpu_model": "Intel Xeon"}))
    (fresh / run).write_text(json.dumps({"cpu_model": "AMD EPYC"}))
    assert training_cpus(fresh) == {"AMD EPYC"}
    assert main([str(fresh), "--committed", str(committed)]) == 1
    out = capsys.readouterr().out
    assert "committed Intel Xeon; fresh AMD EPYC" in out and "bf16" in out
    (committed / run).write_text(json.dumps({"cpu_model": "AMD EPYC"}))
    assert cpu_note(committed, fresh, ("runs/synthetic",)) == ""
    (committed / run).write_text(json.dumps({}))  # a run from before the model was recorded
    assert "committed not recorded" in cpu_note(committed, fresh, ("runs/synthetic",))


def test_one_model_name_with_other_arithmetic_is_another_cpu(tmp_path):
    """Two machines both called "AMD EPYC", one computing in bf16 and one in float32 with
    AVX2 only, do not give the same numbers: the note names the difference."""
    committed = _tree(tmp_path / "a", pq=0.6642, seconds=3.0, loss=0.5)
    fresh = _tree(tmp_path / "b", pq=0.6645, seconds=3.0, loss=0.5)
    run = Path("runs") / "synthetic" / "full-seed0" / "env.json"
    bf16 = {"cpu_model": "AMD EPYC", "fast_path": {"bf16": True}}
    (committed / run).write_text(json.dumps(bf16))
    avx2 = {
        "cpu_model": "AMD EPYC",
        "fast_path": {"bf16": False},
        "cpu_vector_extensions": ["avx2"],
    }
    (fresh / run).write_text(json.dumps(avx2))
    assert training_cpus(fresh) == {"AMD EPYC (float32; avx2)"}
    note = cpu_note(committed, fresh, ("runs/synthetic",))
    assert "committed AMD EPYC (bf16); fresh AMD EPYC (float32; avx2)" in note
    (committed / run).write_text(json.dumps(avx2))
    assert cpu_note(committed, fresh, ("runs/synthetic",)) == ""
    resumed = {**bf16, "segments": [{"bf16": True}, {"bf16": False}]}  # resumed without bf16
    (committed / run).write_text(json.dumps(resumed))
    assert training_cpus(committed) == {"AMD EPYC (bf16 and float32)"}


def test_a_missing_file_or_value_is_a_difference(tmp_path):
    committed = _tree(tmp_path / "a", pq=0.5, seconds=3.0, loss=0.5)
    fresh = _tree(tmp_path / "b", pq=0.5, seconds=3.0, loss=0.5)
    run = fresh / "runs" / "synthetic" / "full-seed0"
    (run / "history.csv").unlink()
    (run / "metrics.json").write_text(json.dumps({"overall": {"pq": 0.5}, "tta": False}))
    differences = compare_results(committed, fresh)
    assert set(differences["key"]) == {"(file)", "overall.r2"}


def test_a_short_run_reproduces_its_committed_losses(tmp_path):
    """A dependency that changes the synthetic data or training shows here: regenerate the
    synthetic results and this file together (``--write-short-run``) when upgrading one."""
    committed = json.loads(SHORT_RUN_FILE.read_text())["losses"]
    losses = short_run_losses(tmp_path)
    assert set(losses) == set(committed)
    for term, values in committed.items():
        assert losses[term] == pytest.approx(values, abs=0.5 * 10.0**-DECIMALS), term


def test_the_main_job_synthetic_data_is_the_committed_runs_data():
    run = RESULTS_DIR / "runs" / "synthetic" / "full-seed0"
    config = ExperimentConfig.load(run / "config.json")
    committed = json.loads((run / "trained_on.json").read_text())["fingerprints"]
    assert config.open_data("train").fingerprints() == committed
