"""HoVer-Net's post-processing thresholds, chosen on a run's own validation patches.

HoVer-Net thresholds the NP probability at 0.5 for the foreground and the boundary energy
at 0.4 for the watershed markers, and drops markers under 10 px at 40x. Those values were
set for HoVer-Net's own network; a network whose HV maps are flatter (fewer steps, another
data set) splits nuclei at 0.4 and seeds nuclei from specks. As StarDist does with its
probability and overlap thresholds, :func:`tune_thresholds` runs the network once on the
validation patches of its run (the held-out side of :func:`nucstudy.data.split_by_source`
of its training source: never the test split, never another data set), scores every
combination of a small grid by binary PQ (classes ignored, per patch, averaged over the
patches), and :func:`save_thresholds` writes the best to ``thresholds.json`` beside the
checkpoints. The kernel sizes stay HoVer-Net's, scaled to the resolution. The same file
records the validation PQ with flip test-time augmentation at those thresholds
(:func:`flip_tta_pq`), so that whether to score a run with ``--tta`` is decided on
validation too.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from nucstudy.common.io import atomic_write_text
from nucstudy.data import split_by_source
from nucstudy.engine.device import resolve_device
from nucstudy.engine.inference import images_to_tensor
from nucstudy.engine.methods import DenseMethod, method_for
from nucstudy.engine.model_file import TrainedModel
from nucstudy.metrics import conic_metrics
from nucstudy.postprocess import Thresholds, hover_postprocess
from nucstudy.study.evaluate import load_run_model
from nucstudy.study.experiment import ExperimentConfig

__all__ = [
    "ENERGY_GRID",
    "FOREGROUND_GRID",
    "MIN_MARKER_GRID",
    "THRESHOLDS_FILE",
    "flip_tta_pq",
    "read_thresholds",
    "save_thresholds",
    "tune_thresholds",
]

#: The file in a run folder that holds its tuned thresholds.
THRESHOLDS_FILE = "thresholds.json"
#: The foreground (NP probability) thresholds tried.
FOREGROUND_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)
#: The marker (boundary energy) thresholds tried.
ENERGY_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: The smallest marker areas tried, in um² (None: HoVer-Net's 10 px at 40x, 0.625 um²).
MIN_MARKER_GRID = (None, 2.5, 5.0, 10.0)


def tune_thresholds(
    run_dir: str | os.PathLike,
    foreground_grid: tuple[float, ...] = FOREGROUND_GRID,
    energy_grid: tuple[float, ...] = ENERGY_GRID,
    min_marker_grid: tuple[float | None, ...] = MIN_MARKER_GRID,
    device: str = "auto",
    batch_size: int = 16,
) -> tuple[Thresholds, pd.DataFrame]:
    """The thresholds that give the highest binary PQ on a run's validation patches.

    Args:
        run_dir: a run folder with ``checkpoints/best.pt`` of a network with NP and HV
            heads (the proposed network or HoVer-Net; not Mask R-CNN).
        foreground_grid, energy_grid, min_marker_grid: the values tried, every
            combination of them.
        device: where the network runs.
        batch_size: patches per forward pass.

    Returns:
        (best, grid): the best combination (ties to the earlier in the grid, which lists
        HoVer-Net's first), and one row per combination with ``foreground``, ``energy``,
        ``min marker um2`` (NaN: HoVer-Net's) and ``val pq``, binary PQ per validation
        patch, averaged over the patches (:func:`nucstudy.metrics.conic_metrics`' ``pq``).

    Raises:
        ValueError: the run's network has no HoVer-Net post-processing.
    """
    model, np_prob, hv, true = _validation_maps(run_dir, device, batch_size, tta=False)
    default = Thresholds()
    grid_values = itertools.product(foreground_grid, energy_grid, min_marker_grid)
    candidates = [default] + [Thresholds(*values) for values in grid_values]
    candidates = list(dict.fromkeys(candidates))  # HoVer-Net's once, first
    rows = [
        {
            "foreground": chosen.foreground,
            "energy": chosen.energy,
            "min marker um2": chosen.min_marker_um2,
            "val pq": _binary_pq(model, np_prob, hv, true, chosen),
        }
        for chosen in candidates
    ]
    grid = pd.DataFrame(rows)
    return candidates[int(grid["val pq"].to_numpy().argmax())], grid


def flip_tta_pq(
    run_dir: str | os.PathLike, thresholds: Thresholds, device: str = "auto", batch_size: int = 16
) -> float:
    """Binary PQ on a run's validation patches (as :func:`tune_thresholds` scores them) with
    its maps averaged over the four flips (``nucstudy evaluate --tta``), at ``thresholds``:
    beside the tuned ``val pq``, it says on validation, not on the test split, whether the
    flips are worth four forward passes a patch."""
    model, np_prob, hv, true = _validation_maps(run_dir, device, batch_size, tta=True)
    return _binary_pq(model, np_prob, hv, true, thresholds)


def _validation_maps(
    run_dir: str | os.PathLike, device: str, batch_size: int, tta: bool
) -> tuple[TrainedModel, np.ndarray, np.ndarray, np.ndarray]:
    """A run's model, its NP probability and HV maps (N x H x W and N x H x W x 2, float32)
    on its validation patches, and their labels with every nucleus class 1 (N x H x W x 2).

    Raises:
        ValueError: the run's network has no HoVer-Net post-processing.
    """
    model = load_run_model(run_dir)
    config = ExperimentConfig.of_model(model)
    if not isinstance(method_for(model.network), DenseMethod):
        raise ValueError(f"{run_dir}: {config.model} has no HoVer-Net thresholds to tune")
    data = config.open_data("train")
    _, val_idx = split_by_source(data, config.val_fraction, config.seed)
    images, labels = np.asarray(data.images[val_idx]), np.asarray(data.labels[val_idx])
    device_t = resolve_device(device)
    network, method = model.network.to(device_t).eval(), method_for(model.network)
    outputs = [
        method.predict(network, images_to_tensor(images[i : i + batch_size], device_t), tta, True)
        for i in range(0, len(images), batch_size)
    ]
    np_prob, hv = (np.concatenate([o[k] for o in outputs]).astype(np.float32) for k in (0, 1))
    return model, np_prob, hv, _one_class(labels[..., 0])


def _binary_pq(
    model: TrainedModel, np_prob: np.ndarray, hv: np.ndarray, true: np.ndarray, chosen: Thresholds
) -> float:
    """Binary PQ of the maps post-processed with ``chosen`` against ``true`` (per patch,
    averaged over the patches)."""
    inst = np.stack(
        [
            hover_postprocess(
                p, h, np.zeros(p.shape, np.int32), model.mpp, model.postprocess, chosen
            ).inst_map
            for p, h in zip(np_prob, hv, strict=True)
        ]
    )
    return float(conic_metrics(_one_class(inst), true, model.scheme)["pq"])


def _one_class(instances: np.ndarray) -> np.ndarray:
    """N x H x W instance maps -> N x H x W x 2 CoNIC labels with every nucleus class 1."""
    return np.stack([instances, (instances > 0).astype(np.int32)], axis=-1).astype(np.int32)


def save_thresholds(
    run_dir: str | os.PathLike, best: Thresholds, grid: pd.DataFrame, tta_pq: float | None = None
) -> Path:
    """Write ``thresholds.json`` into the run folder: the chosen thresholds, their validation
    PQ, HoVer-Net's, their validation PQ with flip TTA where measured (:func:`flip_tta_pq`),
    and the whole grid (its first row HoVer-Net's, as :func:`tune_thresholds` lists it)."""
    default = grid["val pq"].iloc[:1]
    record = {
        "foreground": best.foreground,
        "energy": best.energy,
        "min marker um2": best.min_marker_um2,
        "val pq": float(grid["val pq"].max()),
        "val pq with HoVer-Net's": float(default.iloc[0]) if len(default) else None,
        "val pq with flip TTA": tta_pq,
        "chosen on": "the run's validation patches (binary PQ)",
        "grid": json.loads(grid.to_json(orient="records")),
    }
    path = Path(run_dir) / THRESHOLDS_FILE
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_thresholds(run_dir: str | os.PathLike) -> Thresholds:
    """The tuned thresholds of a run folder.

    Raises:
        FileNotFoundError: the run has none yet (with the command that makes them).
        ValueError: the file is not valid JSON or lacks a threshold.
    """
    path = Path(run_dir) / THRESHOLDS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {THRESHOLDS_FILE}; run `nucstudy tune {run_dir}`")
    try:
        record = json.loads(path.read_text())
        min_marker = record.get("min marker um2")
        return Thresholds(
            float(record["foreground"]),
            float(record["energy"]),
            None if min_marker is None else float(min_marker),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a thresholds file ({error})") from None
