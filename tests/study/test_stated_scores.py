"""The committed model files score what they say (their ``.scores.json``)."""

import pytest

from nucstudy.study.paths import RESULTS_DIR
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
