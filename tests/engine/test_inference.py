"""Inference and evaluation: padding, flip TTA, CoNIC-layout output, model files, evaluate()."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nucstudy.data import make_targets, synthetic_conic
from nucstudy.engine.checkpoint import CheckpointError
from nucstudy.engine.device import resolve_device
from nucstudy.engine.inference import predict_labels, predict_maps
from nucstudy.engine.model_file import TrainedModel, load_model
from nucstudy.metrics import conic_metrics
from nucstudy.study.evaluate import evaluate, load_run_model, table1_row
from nucstudy.study.experiment import ExperimentConfig


class GradientModel(nn.Module):
    """Flip-equivariant toy: NP and TP pointwise, HV the x and y gradients of the red channel.

    Flipping the input along x flips every output along x and negates the horizontal map, as a
    real HV head would.
    """

    def forward(self, x):
        red = x[:, :1]
        kx = torch.tensor([[[[-1.0, 0.0, 1.0]]]])
        h = F.conv2d(F.pad(red, (1, 1, 0, 0), mode="replicate"), kx)
        v = F.conv2d(F.pad(red, (0, 0, 1, 1), mode="replicate"), kx.transpose(2, 3))
        return {
            "np": torch.cat([-red, red], dim=1),
            "hv": torch.cat([h, v], dim=1),
            "tp": torch.cat([x, -x.sum(1, keepdim=True)], dim=1),
        }


def test_flip_tta_of_an_equivariant_model_changes_nothing():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    # float32: the check is of the flips, not of bf16 rounding
    plain = predict_maps(GradientModel(), images, tta=False, mixed_precision=False)
    tta = predict_maps(GradientModel(), images, tta=True, mixed_precision=False)
    assert plain["hv"].abs().mean() > 0.05  # the check below is not vacuous
    for key in ("np", "hv", "tp"):
        assert torch.allclose(plain[key], tta[key], atol=1e-6), key
    assert plain["tp"].shape == (2, 4, 64, 64)
    assert torch.allclose(plain["tp"].sum(1), torch.ones(2, 64, 64))


def test_sizes_that_are_not_multiples_of_32_are_padded_and_cropped():
    seen = []

    class Recorder(GradientModel):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return super().forward(x)

    maps = predict_maps(Recorder(), torch.rand(1, 3, 50, 70))
    assert seen == [(64, 96)]
    assert maps["np"].shape == (1, 50, 70) and maps["hv"].shape == (1, 2, 50, 70)


class OracleModel(nn.Module):
    """Returns the targets of known patches as confident logits: tests the whole route."""

    def __init__(self, labels, n_types):
        super().__init__()
        self.targets = [make_targets(lab[..., 0], lab[..., 1]) for lab in labels]
        self.n_types = n_types
        self.calls = 0

    def forward(self, x):
        batch = self.targets[self.calls : self.calls + len(x)]
        self.calls += len(x)
        fg = torch.stack([torch.from_numpy(t["np"]).float() for t in batch])
        tp = torch.stack([torch.from_numpy(t["tp"]) for t in batch])
        return {
            "np": torch.stack([1 - fg, fg], dim=1) * 20 - 10,
            "hv": torch.stack([torch.from_numpy(t["hv"]) for t in batch]),
            "tp": F.one_hot(tp, self.n_types).permute(0, 3, 1, 2).float() * 20,
        }


def test_perfect_outputs_score_near_perfectly(synthetic_small):
    data = synthetic_small.subset(range(4))
    model = OracleModel(data.labels, data.scheme.n_classes)
    pred = predict_labels(model, data.images, data.mpp, batch_size=3, device="cpu")
    assert pred.shape == data.labels.shape and pred.dtype == np.int32
    scores = conic_metrics(pred, data.labels, data.scheme)
    assert scores["pq"] > 0.9 and scores["mpq+"] > 0.85


def test_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        predict_labels(GradientModel(), np.zeros((1, 32, 32, 3), np.float32), 0.5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a CPU-only machine")
def test_asking_for_cuda_without_it():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.parametrize("size", [(5, 7), (31, 1), (40, 70)])
def test_any_image_size_is_padded_even_below_the_pad(size):
    maps = predict_maps(GradientModel(), torch.rand(1, 3, *size), mixed_precision=False)
    assert maps["np"].shape == (1, *size) and maps["tp"].shape == (1, 4, *size)


@pytest.fixture(scope="module")
def smoke_run(train_smoke):
    return train_smoke(postprocess="resample")


def test_a_checkpoint_copied_anywhere_is_a_usable_model(smoke_run, tmp_path, synthetic_small):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    checkpoints = smoke_run.run_dir / "checkpoints"
    shutil.copy(checkpoints / "best.pt", folder / "model.pt")
    shutil.copy(checkpoints / "best.pt.sha256", folder / "model.pt.sha256")
    model = load_model(folder / "model.pt")
    assert isinstance(model, TrainedModel) and not model.network.training
    assert (model.scheme.name, model.mpp, model.postprocess) == ("conic", 0.5, "resample")
    assert ExperimentConfig.of_model(model) == smoke_run
    images = np.asarray(synthetic_small.images[:2, :64, :64])
    from_file = predict_labels(model.network, images, model.mpp, route=model.postprocess)
    network = load_run_model(smoke_run.run_dir).network
    np.testing.assert_array_equal(
        from_file, predict_labels(network, images, 0.5, route="resample")
    )
    (folder / "model.pt.sha256").unlink()
    with pytest.warns(UserWarning, match="no model.pt.sha256"):
        assert load_model(folder / "model.pt").epoch == model.epoch
    torch.save({"weights": torch.zeros(1)}, folder / "other.pt")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="not a trained-model"):
        load_model(folder / "other.pt")


def test_table1_rows_for_finished_and_pending_runs(smoke_run):
    pending = table1_row(smoke_run.run_dir.parent / "never-trained", "Mask R-CNN")
    assert pending["status"].startswith("pending: not trained yet")
    assert set(pending) == {"data set", "method", "run", "status"}
    metrics = evaluate(smoke_run.run_dir, synthetic_conic(4, size=64, seed=21), device="cpu")
    row = table1_row(smoke_run.run_dir, "proposed", n_boot=50)
    assert row["status"] == "done" and row["post-processing"] == "HoVer-Net watershed (resample)"
    assert row["mPQ+"] == metrics["overall"]["mpq+"]
    assert row["mPQ+ 95% CI"].startswith("[") and row["bf16"] in (True, False)
    unscored = table1_row(smoke_run.run_dir, "proposed", route="native")
    assert unscored["status"].startswith("pending: not scored yet")
    evaluate(smoke_run.run_dir, synthetic_conic(4, size=64, seed=21), route="native")
    native = table1_row(smoke_run.run_dir, "proposed", n_boot=50, route="native")
    assert (
        native["post-processing"] == "HoVer-Net watershed (native)" and native["status"] == "done"
    )
    assert native["CI over"] == "sources"
    per_image = smoke_run.run_dir / "per_image-native.csv"
    pd.read_csv(per_image).drop(columns="source").to_csv(per_image, index=False)
    legacy = table1_row(smoke_run.run_dir, "proposed", n_boot=50, route="native")
    assert legacy["CI over"] == "patches" and legacy["status"] == "done"
