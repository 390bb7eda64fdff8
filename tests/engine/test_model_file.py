"""Model files keep what float16 cannot hold, refuse lost weights, and lost batch-norm
statistics can be estimated again from the training patches."""

import numpy as np
import pytest
import torch
from torch import nn

from nucstudy.cli import main
from nucstudy.data import synthetic_conic
from nucstudy.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nucstudy.engine.forward import images_to_tensor, predict_maps
from nucstudy.engine.model_file import FLOAT16_MAX, export_model, load_model
from nucstudy.engine.training_data import training_split
from nucstudy.study.experiment import ExperimentConfig
from nucstudy.study.restore import lost_batch_norms, restore_lost_batch_norms


@pytest.fixture(scope="module")
def checkpoint(train_smoke):
    """A smoke run's best checkpoint."""
    return train_smoke().run_dir / "checkpoints" / "best.pt"


def _first_batch_norm(state: dict) -> str:
    """The name of the first batch-norm layer of a checkpoint's network."""
    return next(
        name.removesuffix(".running_var") for name in state["model"] if "running_var" in name
    )


def _changed(checkpoint, path, layer: str, change):
    """Save ``checkpoint`` at ``path`` with ``change`` applied to ``layer``'s running variance."""
    state = load_checkpoint(checkpoint)
    state["model"][f"{layer}.running_var"] = change(state["model"][f"{layer}.running_var"])
    save_checkpoint(path, state)
    return path


def _lost(checkpoint, path, channel: int) -> tuple:
    """(the first batch-norm layer, ``checkpoint`` saved at ``path`` with that layer's running
    variance infinite in ``channel``), as a float16 export that overflowed leaves it."""
    layer = _first_batch_norm(load_checkpoint(checkpoint))
    path = _changed(
        checkpoint, path, layer, lambda var: var.index_fill(0, torch.tensor([channel]), torch.inf)
    )
    return layer, path


def test_export_keeps_in_float32_a_tensor_beyond_float16s_range(checkpoint, tmp_path):
    layer = _first_batch_norm(load_checkpoint(checkpoint))
    large = _changed(checkpoint, tmp_path / "large.pt", layer, lambda var: var + 2 * FLOAT16_MAX)
    export_model(large, tmp_path / "model.pt")
    stored = load_checkpoint(tmp_path / "model.pt")["model"]
    assert stored[f"{layer}.running_var"].dtype == torch.float32
    assert stored[f"{layer}.running_mean"].dtype == torch.float16  # within range: halved
    assert torch.equal(
        stored[f"{layer}.running_var"], load_checkpoint(large)["model"][f"{layer}.running_var"]
    )
    image = np.asarray(synthetic_conic(1, size=128, seed=2).images[0])
    tensor = images_to_tensor(image[None], torch.device("cpu"))
    full, slim = (load_model(path).network for path in (large, tmp_path / "model.pt"))
    maps = [predict_maps(network, tensor, mixed_precision=False) for network in (full, slim)]
    for key in ("np", "hv", "tp"):
        assert torch.allclose(maps[0][key], maps[1][key], atol=0.02)


def test_a_file_with_weights_that_are_not_finite_is_refused_with_the_repair(checkpoint, tmp_path):
    layer, lost = _lost(checkpoint, tmp_path / "lost.pt", channel=0)
    with pytest.raises(
        CheckpointError, match=f"{layer}.running_var \\(1\\).*--restore-batch-norm"
    ):
        load_model(lost)
    assert lost_batch_norms(load_model(lost, require_finite=False).network) == [layer]
    with pytest.raises(CheckpointError, match="not finite.*nothing written"):
        export_model(lost, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()


def test_lost_statistics_are_the_mean_over_the_training_patches_and_nothing_else_changes(
    checkpoint, tmp_path
):
    original = load_checkpoint(checkpoint)["model"]
    layer = _first_batch_norm({"model": original})
    lost = _changed(
        checkpoint, tmp_path / "lost.pt", layer, lambda var: torch.full_like(var, float("inf"))
    )
    repaired = load_model(lost, require_finite=False)
    assert restore_lost_batch_norms(repaired) == [layer]
    weights = repaired.network.state_dict()
    statistics = {
        f"{layer}.{buffer}" for buffer in ("running_mean", "running_var", "num_batches_tracked")
    }
    for name, value in original.items():
        if name not in statistics:
            assert torch.equal(weights[name], value), name
    # the expected statistics, from the layer's inputs in the eval-mode network, batch by batch
    model = load_model(checkpoint)
    config = ExperimentConfig.of_model(model)
    data, train_idx, _ = training_split(config, config.open_data("train"))
    images = np.asarray(data.images[train_idx])
    inputs = []
    module = dict(model.network.named_modules())[layer]
    module.register_forward_hook(lambda _m, args, _out: inputs.append(args[0].detach()))
    for start in range(0, len(images), 16):
        predict_maps(
            model.network,
            images_to_tensor(images[start : start + 16], torch.device("cpu")),
            mixed_precision=False,
        )
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(0)
    variances = torch.stack([x.transpose(0, 1).flatten(1).var(dim=1) for x in inputs]).mean(0)
    assert torch.allclose(weights[f"{layer}.running_mean"], means, rtol=1e-4, atol=1e-6)
    assert torch.allclose(weights[f"{layer}.running_var"], variances, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(
        variances, original[f"{layer}.running_var"], rtol=1e-4
    )  # re-estimated, not copied


def test_only_lost_batch_norm_statistics_are_restored(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="nothing to restore"):
        restore_lost_batch_norms(load_model(checkpoint))
    state = load_checkpoint(checkpoint)
    conv = next(name for name, value in state["model"].items() if value.dim() == 4)
    state["model"][conv] = torch.full_like(state["model"][conv], float("nan"))
    save_checkpoint(tmp_path / "nan.pt", state)
    with pytest.raises(ValueError, match=f"not batch-norm statistics.*{conv}"):
        restore_lost_batch_norms(load_model(tmp_path / "nan.pt", require_finite=False))


def test_export_restores_a_file_that_lost_batch_norm_statistics(checkpoint, tmp_path, capsys):
    layer, lost = _lost(checkpoint, tmp_path / "lost.pt", channel=1)
    argv = ["export", str(lost), "--out", str(tmp_path / "fixed.pt"), "--restore-batch-norm"]
    assert main([*argv, "--no-stain-reference"]) == 0
    assert f"statistics estimated again for {layer}" in capsys.readouterr().out
    fixed = load_model(tmp_path / "fixed.pt")
    assert lost_batch_norms(fixed.network) == []
    assert isinstance(dict(fixed.network.named_modules())[layer], nn.modules.batchnorm._BatchNorm)
    assert (
        main(["export", str(checkpoint), "--out", str(tmp_path / "x.pt"), "--restore-batch-norm"])
        == 2
    )
    assert "nothing to restore" in capsys.readouterr().err
