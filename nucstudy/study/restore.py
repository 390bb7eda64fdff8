"""Batch-norm statistics that a model file lost, estimated again from its training patches.

Before :func:`~nucstudy.engine.model_file.export_model` kept out-of-range tensors in float32,
a float16 export turned every batch-norm running variance above 65,504 into infinity, and a
channel divided by an infinite variance is silenced at inference: the model still runs, and
scores worse. Its learned weights are intact, and a layer's running mean and variance are
only an average over training data, so they can be computed again.
:func:`restore_batch_norms` runs the network over its training patches with every layer in
eval mode but the damaged ones, so each sees the inputs it sees at inference, and sets each
damaged layer's statistics to the plain mean over the batches (as
:func:`torch.optim.swa_utils.update_bn` does). :func:`restore_lost_batch_norms` does that
for a loaded model file, on the training side of its run's own split (validation tiles left
out); every other tensor stays as it was.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nucstudy.engine.forward import images_to_tensor
from nucstudy.engine.methods import method_for
from nucstudy.engine.model_file import TrainedModel, non_finite_weights
from nucstudy.engine.training_data import training_split
from nucstudy.study.experiment import ExperimentConfig

__all__ = ["lost_batch_norms", "restore_batch_norms", "restore_lost_batch_norms"]

#: The running statistics of a batch-norm layer, which a restore estimates again.
STATISTICS = ("running_mean", "running_var")


def lost_batch_norms(network: nn.Module) -> list[str]:
    """The names of ``network``'s batch-norm layers with a running mean or variance that is
    not finite."""
    return _lost(network.state_dict())[0]


def _lost(weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """The tensors of a state dict that are not finite (:func:`non_finite_weights`), as (the
    batch-norm layers whose running statistics they are, the other tensors' names)."""
    layers, others = [], []
    for name in non_finite_weights(weights):
        layer, _, buffer = name.rpartition(".")
        if buffer in STATISTICS:
            layers.append(layer)
        else:
            others.append(name)
    return list(dict.fromkeys(layers)), others


def restore_batch_norms(
    network: nn.Module, names: list[str], images: np.ndarray, batch_size: int = 16
) -> None:
    """Estimate the running statistics of the named batch-norm layers again, in place.

    Args:
        network: a model from :func:`nucstudy.models.build_model`; left in eval mode.
        names: its batch-norm layers to estimate (:func:`lost_batch_norms`).
        images: N x H x W x 3 uint8 RGB training patches at the network's resolution.
        batch_size: patches per forward pass (each batch counts once in the mean).
    """
    if len(images) == 0:
        raise ValueError("no images to estimate the batch-norm statistics from")
    layers = dict(network.named_modules())
    network.eval()
    momenta = {}
    for name in names:
        layer = layers[name]
        momenta[name] = layer.momentum
        layer.reset_running_stats()
        layer.momentum = None  # a plain mean over the batches
        layer.train()
    method, device = method_for(network), torch.device("cpu")
    try:
        for start in range(0, len(images), batch_size):
            batch = images_to_tensor(images[start : start + batch_size], device)
            method.predict(network, batch, False, False)
    finally:
        for name in names:
            layers[name].momentum = momenta[name]
        network.eval()


def restore_lost_batch_norms(model: TrainedModel) -> list[str]:
    """Estimate again, in place, the batch-norm statistics a model file lost, from the
    training side of its run's split (its config's source, seed and validation fraction).

    Args:
        model: a model file loaded with ``load_model(path, require_finite=False)``.

    Returns:
        The names of the layers estimated again; every other tensor is left as it was.

    Raises:
        ValueError: the model lost nothing, or lost weights that are not batch-norm statistics.
        FileNotFoundError: the model's training data is not at hand.
    """
    names, others = _lost(model.network.state_dict())
    if others:
        raise ValueError(
            f"weights that are not batch-norm statistics are not finite ({', '.join(others)}); "
            "export the model again from its checkpoint"
        )
    if not names:
        raise ValueError("every batch-norm statistic is finite; nothing to restore")
    config = ExperimentConfig.of_model(model)
    data, train_idx, _ = training_split(config, config.open_data("train"))
    restore_batch_norms(model.network, names, np.asarray(data.images[train_idx]))
    return names
