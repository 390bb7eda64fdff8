"""The post-processing route is a choice everywhere: config, CLI, prediction, evaluation."""

import json

import numpy as np
import pytest

from nucstudy.cli import main as cli
from nucstudy.data import synthetic_conic
from nucstudy.engine.inference import predict_labels
from nucstudy.models import build_model
from nucstudy.study.evaluate import evaluate
from nucstudy.study.presets import preset


@pytest.fixture(scope="module")
def trained_run(train_smoke):
    """A smoke run trained with the resample route for validation."""
    return train_smoke(postprocess="resample")


def test_the_route_is_a_checked_config_field():
    assert preset("paper").postprocess == "native"
    with pytest.raises(ValueError, match="postprocess must be 'native' or 'resample'"):
        preset("smoke", postprocess="fast")


def test_prediction_takes_either_route_and_refuses_others(synthetic_small):
    model = build_model("seresunet", 7, width=8, depth=3)
    images = np.asarray(synthetic_small.images[:2, :64, :64])
    for route in ("native", "resample"):
        labels = predict_labels(model, images, 0.5, device="cpu", route=route)
        assert labels.shape == (2, 64, 64, 2)
    with pytest.raises(ValueError, match="route must be"):
        predict_labels(model, images, 0.5, route="watershed")


def test_evaluation_records_its_route_and_keeps_the_runs_own_metrics(trained_run):
    test = synthetic_conic(4, size=64, seed=11)
    own = evaluate(trained_run.run_dir, test, device="cpu")
    assert own["postprocess"] == "resample"
    other = evaluate(trained_run.run_dir, test, device="cpu", route="native")
    assert other["postprocess"] == "native"
    run = trained_run.run_dir
    assert json.loads((run / "metrics.json").read_text())["postprocess"] == "resample"
    assert json.loads((run / "metrics-native.json").read_text())["postprocess"] == "native"
    assert (run / "per_image-native.csv").is_file()


def test_the_cli_takes_a_route(trained_run, capsys):
    run = str(trained_run.run_dir)
    assert cli(["evaluate", run, "--postprocess", "native", "--device", "cpu"]) == 0
    assert json.loads((trained_run.run_dir / "metrics-native.json").read_text())["patches"] > 0
    assert cli(["evaluate", run, "--postprocess", "fast"]) == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err
