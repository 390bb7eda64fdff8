"""Out-of-domain evaluation: how a segmenter does on tissue it has never seen.

A *segmenter* is any function ``(image H x W x 3 uint8, mpp) -> H x W int32 instance map``:
a trained model of the study (:func:`model_segmenter`, optionally with stain normalisation
to its training images), or the classical floor
(:func:`nucstudy.postprocess.classical.classical_segment`).
:func:`evaluate_tiles` runs one on labelled tiles of any size (:mod:`nucstudy.data.tiles`),
each brought to the resolution the segmenter works at, and scores it class-agnostically:
the test tiles (CPM-15) have instance labels only. Nothing here trains or tunes: the tiles
are a test set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from nucstudy.data.stain import StainReference, reinhard_normalise, stain_reference
from nucstudy.data.tiles import LabelledTile, resample_tile
from nucstudy.engine.inference import predict_labels
from nucstudy.engine.model_file import TrainedModel
from nucstudy.metrics import conic_metrics, patch_errors
from nucstudy.postprocess import Thresholds
from nucstudy.postprocess.classical import classical_segment
from nucstudy.study.experiment import ExperimentConfig

__all__ = [
    "Segmenter",
    "agnostic_scores",
    "evaluate_tiles",
    "model_segmenter",
    "ood_table",
    "run_stain_reference",
    "summarise_tiles",
]

#: (H x W x 3 uint8 RGB image, its mpp in um/px) -> H x W int32 instance map.
Segmenter = Callable[[np.ndarray, float], np.ndarray]

#: The one foreground class both maps get for class-agnostic scoring (CoNSeP's "other").
_ONE_CLASS = 1


def agnostic_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Class-agnostic PQ, AJI and Dice of one H x W instance map against the truth.

    Both maps are integer H x W, 0 background; their classes are ignored. Returns ``pq``,
    ``aji``, ``dice``; PQ's two factors ``dq`` (detection quality: matches over matches plus
    half the misses and false nuclei) and ``sq`` (mean IoU of the matches); ``pixel
    precision``, the share of the predicted nuclear pixels that lie in a true nucleus (low
    where background is taken for nuclei); all NaN where undefined, e.g. no nucleus on
    either side; the numbers of nuclei ``predicted`` and ``true``; and how the nuclei were
    got wrong (:func:`nucstudy.metrics.patch_errors`): ``merged`` (predictions covering two
    or more true nuclei), ``split`` (true nuclei cut into two or more predictions),
    ``missed`` and ``spurious`` (the other unmatched true and predicted nuclei).
    """
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and true must be H x W maps of one shape, got {pred.shape}, {true.shape}"
        )
    maps = [
        np.stack([m, (m > 0) * _ONE_CLASS], axis=-1)[None].astype(np.int32) for m in (pred, true)
    ]
    scores = conic_metrics(maps[0], maps[1], "consep")
    row = scores["per_image"].iloc[0]
    parts = next(iter(scores["per_class"].values()))
    predicted_pixels = int((pred > 0).sum())
    errors = patch_errors(maps[0], maps[1], "consep").iloc[0]
    return {
        "pq": float(row["pq"]),
        "aji": float(row["aji"]),
        "dice": float(row["dice"]),
        "dq": float(parts["dq"]),
        "sq": float(parts["sq"]),
        "pixel precision": (
            float(((pred > 0) & (true > 0)).sum() / predicted_pixels)
            if predicted_pixels
            else float("nan")
        ),
        "predicted": int(np.unique(pred[pred > 0]).size),
        "true": int(np.unique(true[true > 0]).size),
        **{kind: int(errors[kind]) for kind in ("merged", "split", "missed", "spurious")},
    }


def model_segmenter(
    model: TrainedModel,
    stain: StainReference | None = None,
    device: str = "auto",
    tta: bool = False,
    thresholds: Thresholds | None = None,
) -> Segmenter:
    """A trained model as a segmenter of whole images at its own resolution.

    Args:
        model: from :func:`nucstudy.engine.model_file.load_model`.
        stain: normalise each image to these colour statistics first (Reinhard), or None.
        device: where the network runs.
        tta: flip test-time augmentation.
        thresholds: HoVer-Net's tunable thresholds (:class:`~nucstudy.postprocess.Thresholds`;
            None: its own).

    The image is run whole (padded to the network's size multiple) and post-processed with
    the model's own route; the instance channel is returned.
    """

    def segment(image: np.ndarray, mpp: float) -> np.ndarray:
        if stain is not None:
            image = reinhard_normalise(image, stain)
        labels = predict_labels(
            model.network,
            image[None],
            mpp,
            batch_size=1,
            device=device,
            tta=tta,
            route=model.postprocess,
            thresholds=thresholds,
        )
        return labels[0, ..., 0]

    return segment


def evaluate_tiles(
    segment: Segmenter, tiles: Sequence[LabelledTile], mpp: float, progress: bool = False
) -> pd.DataFrame:
    """Score ``segment`` on every tile, each resampled to ``mpp`` um/px first.

    Returns:
        One row per tile: ``tile``, ``tile mpp`` (its own resolution), ``pq``, ``aji``,
        ``dice``, ``predicted`` and ``true`` (numbers of nuclei, at ``mpp``).
    """
    rows = []
    for tile in tqdm(tiles, desc="tiles", disable=not progress or None, leave=False):
        at = resample_tile(tile, mpp)
        pred = np.asarray(segment(at.image, mpp), dtype=np.int32)
        if pred.shape != at.labels.shape:
            raise ValueError(
                f"{tile.name}: the segmenter returned {pred.shape}, not {at.labels.shape}"
            )
        rows.append({"tile": tile.name, "tile mpp": tile.mpp, **agnostic_scores(pred, at.labels)})
    return pd.DataFrame(rows)


def summarise_tiles(per_tile: pd.DataFrame) -> dict[str, float]:
    """Mean PQ, AJI, Dice, DQ, SQ and pixel precision over tiles (NaN ignored), the nuclei
    predicted and true, and the merged, split, missed and spurious nuclei, all summed."""
    return {
        **{
            metric: float(per_tile[metric].mean())
            for metric in ("pq", "aji", "dice", "dq", "sq", "pixel precision")
        },
        "nuclei predicted": int(per_tile["predicted"].sum()),
        "nuclei true": int(per_tile["true"].sum()),
        **{kind: int(per_tile[kind].sum()) for kind in ("merged", "split", "missed", "spurious")},
        "tiles": len(per_tile),
    }


#: The method name of the classical floor's row.
CLASSICAL_ROW = "classical (colour deconvolution, Otsu, watershed)"
#: The method name of a trained model's row, by its config's ``model``.
MODEL_LABELS = {"seresunet": "SE-Res U-Net", "hovernet": "HoVer-Net", "maskrcnn": "Mask R-CNN"}


def run_stain_reference(model: TrainedModel) -> StainReference:
    """The colour statistics of the training split a model was trained on (its config's
    source, at its training resolution): the target of its stain normalisation."""
    return stain_reference(ExperimentConfig.of_model(model).open_data("train").images)


def ood_table(
    run_dirs: Sequence[str | os.PathLike],
    tiles: Sequence[LabelledTile],
    stain_normalise: Sequence[bool] = (False, True),
    classical: bool = True,
    mpp: float = 0.5,
    device: str = "auto",
    progress: bool = False,
    tuned: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score trained runs (and the classical floor) on out-of-domain tiles.

    Args:
        run_dirs: run folders with a ``checkpoints/best.pt``; each is scored at its own
            training resolution, once per value of ``stain_normalise``.
        tiles: the test tiles (:func:`nucstudy.data.tiles.load_tiles`).
        stain_normalise: whether to Reinhard-normalise the tiles to each run's training
            images, one row per value.
        classical: add the row of :func:`nucstudy.postprocess.classical.classical_segment` at
            ``mpp``.
        mpp: the resolution of the classical row, in um/px.
        device: where the networks run.
        progress: tqdm bars.
        tuned: post-process with each run's tuned thresholds (``thresholds.json``, chosen on
            its own validation patches: :mod:`nucstudy.study.tuning`) instead of HoVer-Net's.

    Returns:
        (summary, per_tile): one row per segmenter with ``method``, ``run``, ``preset``,
        ``trained on``, ``stain augmentation``
        (:attr:`~nucstudy.study.experiment.ExperimentConfig.stain_augmentation_used`), ``scale
        range``
        (of the training rescale, ``low-high``), ``stain normalisation``, ``thresholds``
        (``HoVer-Net's`` or ``tuned``; empty for the classical row), ``mpp`` and the
        :func:`summarise_tiles` scores; and the per-tile rows behind them, keyed the same.
    """
    from nucstudy.study.evaluate import load_run_model
    from nucstudy.study.tuning import read_thresholds

    summary, per_tile = [], []

    def add(key: dict, frame: pd.DataFrame) -> None:
        summary.append({**key, **summarise_tiles(frame)})
        per_tile.append(frame.assign(**key))

    if classical:
        key = {
            "method": CLASSICAL_ROW,
            "run": "",
            "preset": "",
            "trained on": "nothing",
            "stain augmentation": "none",
            "scale range": "",
            "stain normalisation": False,
            "thresholds": "",
            "mpp": mpp,
        }
        add(key, evaluate_tiles(classical_segment, tiles, mpp, progress))
    for run_dir in run_dirs:
        model = load_run_model(run_dir)
        thresholds = read_thresholds(run_dir) if tuned else None
        reference = run_stain_reference(model) if any(stain_normalise) else None
        config = ExperimentConfig.of_model(model)
        for normalise in stain_normalise:
            key = {
                "method": MODEL_LABELS.get(config.model, config.model),
                "run": str(run_dir),
                "preset": config.preset,
                "trained on": config.data,
                "stain augmentation": config.stain_augmentation_used,
                "scale range": "{:g}-{:g}".format(*config.scale_range),
                "stain normalisation": bool(normalise),
                "thresholds": "tuned" if tuned else "HoVer-Net's",
                "mpp": model.mpp,
            }
            stain = reference if normalise else None
            segment = model_segmenter(model, stain, device, thresholds=thresholds)
            add(key, evaluate_tiles(segment, tiles, model.mpp, progress))
    per_tile_frame = pd.concat(per_tile, ignore_index=True) if per_tile else pd.DataFrame()
    return pd.DataFrame(summary), per_tile_frame
