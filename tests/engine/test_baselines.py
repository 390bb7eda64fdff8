"""The Table I baselines start where they can learn: HoVer-Net's first losses are of the order
of the proposed network's (its output layers start small), as measured through the methods
the Trainer uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nucstudy.data import synthetic_conic
from nucstudy.engine.device import choose_fast_path
from nucstudy.engine.methods import OWN_TRAINING, build_method
from nucstudy.models import build_model
from nucstudy.study.presets import preset


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    """Four 64 px synthetic patches, CoNIC scheme."""
    return synthetic_conic(4, size=64, seed=0)


def first_step_losses(data, model: str, options: dict, **training) -> dict[str, float]:
    """The loss terms of an untrained ``model`` (seeded) on one batch of ``data``, through the
    method and loss that ``build_method`` gives the config (float32, CPU)."""
    config = preset("smoke", model=model, model_options=options, **training)
    method = build_method(config, data.scheme)
    images = np.asarray(data.images).transpose(0, 3, 1, 2).astype(np.float32) / 255
    items = [
        {"image": torch.from_numpy(image), **method.targets(label)}
        for image, label in zip(images, np.asarray(data.labels), strict=True)
    ]
    torch.manual_seed(0)
    network = build_model(model, data.scheme.n_classes, **options)
    cpu = torch.device("cpu")
    with torch.no_grad():
        terms = method.loss_terms(
            network, method.collate(items), cpu, choose_fast_path(cpu, False)
        )
    return {name: float(value) for name, value in terms.items()}


def test_hovernet_starts_near_the_proposed_networks_losses(data):
    hovernet = first_step_losses(data, "hovernet", {}, **OWN_TRAINING["hovernet"])
    assert set(hovernet) == {"np_ce", "np_dice", "hv_mse", "tp_ce", "tp_dice", "hv_msge", "total"}
    proposed = first_step_losses(data, "seresunet", {}, **OWN_TRAINING["seresunet"])
    same_loss = first_step_losses(data, "seresunet", {}, loss="hovernet", class_weights=None)
    assert hovernet["hv_mse"] < 1.0
    assert 1 / 3 < hovernet["total"] / same_loss["total"] < 3  # under HoVer-Net's loss
    for term in ("np_ce", "hv_mse", "hv_msge", "tp_ce"):
        assert hovernet[term] < 3 * same_loss[term], term
    # HoVer-Net's loss weighs the HV MSE twice, adds MSGE and sums the Dice over classes, so
    # its total is a few times the paper's loss of the same outputs
    assert hovernet["total"] < 4 * proposed["total"]


def test_kaiming_output_layers_start_far_off(data):
    """The study's earlier set-up, kept as ``head_init="kaiming"``: HV outputs of several
    units, a first HV MSE over ten times the targets' own mean square."""
    old = first_step_losses(data, "hovernet", {"head_init": "kaiming"}, **OWN_TRAINING["hovernet"])
    new = first_step_losses(data, "hovernet", {}, **OWN_TRAINING["hovernet"])
    assert old["hv_mse"] > 10 and old["total"] > 10 * new["total"]
