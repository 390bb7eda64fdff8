"""The committed model files score what they say (their ``.scores.json``)."""

import json

import pytest

from nucstudy.engine.model_file import load_model
from nucstudy.study.paths import (
    RESULTS_DIR,
    ROBUST_MODEL,
    ROBUST_MODEL_RUN,
    STUDY_MODEL,
    STUDY_MODEL_RUN,
)
from nucstudy.study.stated_scores import recompute_stated_scores, stated_scores_path

MODELS = sorted((RESULTS_DIR / "models").glob("*.pt"))


def test_every_committed_model_states_its_scores():
    assert MODELS
    for model in MODELS:
        assert stated_scores_path(model).is_file(), f"{model.name} has no .scores.json"


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS, ids=[m.stem for m in MODELS])
def test_a_committed_model_reproduces_its_stated_scores(model, consep_dir):
    stated, recomputed = recompute_stated_scores(model, data_root=consep_dir)
    assert recomputed.keys() == stated.keys()
    for metric, value in stated.items():
        assert recomputed[metric] == pytest.approx(value, abs=0.005), metric


@pytest.mark.parametrize(
    ("model", "run"), [(STUDY_MODEL, STUDY_MODEL_RUN), (ROBUST_MODEL, ROBUST_MODEL_RUN)]
)
def test_a_committed_model_comes_from_the_run_folder_the_book_names(model, run):
    """The pages read a committed model's whole-split scores from the run it names."""
    trained_by = load_model(model).training_config
    assert trained_by["name"] == run.name
    assert (run / "metrics.json").is_file()
    assert json.loads((run / "config.json").read_text()) == trained_by
