"""Predictions written as the CoNIC challenge scores them: one array and one counts table.

A submission folder holds two files, written together atomically (both appear, or neither
changes):

- ``predictions.npy``: N x H x W x 2 int32, channel 0 the instance map (0 background),
  channel 1 the class map, patches in the order of the test images (task 1, mPQ+);
- ``counts.csv``: N rows, one column per foreground class name in the scheme's id order
  (CoNIC: neutrophil, epithelial, lymphocyte, plasma, eosinophil, connective), nuclei per
  class on the central region of each patch (task 2, R²).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from nucstudy.common.io import atomic_write_many
from nucstudy.data import challenge_crop, check_label_layout, count_nuclei
from nucstudy.data.classes import ClassScheme, get_scheme

PREDICTIONS_FILE = "predictions.npy"
COUNTS_FILE = "counts.csv"
_INT32 = np.iinfo(np.int32)


def _checked_predictions(predictions: np.ndarray, scheme: ClassScheme) -> np.ndarray:
    """Validate the N x H x W x 2 layout and values; return the array as int32."""
    predictions = np.asarray(check_label_layout(predictions, "predictions"))
    if predictions.size:
        inst = predictions[..., 0]
        if int(inst.min()) < 0 or int(inst.max()) > _INT32.max:
            raise ValueError("predictions: instance ids must lie in 0..2**31-1")
        scheme.check_ids(predictions[..., 1], "predictions class map")
    return predictions.astype(np.int32, copy=False)


def submission_counts(predictions: np.ndarray, scheme: ClassScheme | str) -> pd.DataFrame:
    """Nuclei per class of each predicted patch, on the challenge's central region.

    Args:
        predictions: N x H x W x 2 integer array in the CoNIC layout.
        scheme: the class scheme (or its name).

    Returns:
        DataFrame, N rows, one int64 column per foreground class name; counted by
        :func:`nucstudy.data.count_nuclei` on the central ``challenge_crop(H)`` square.
    """
    scheme = get_scheme(scheme)
    predictions = _checked_predictions(predictions, scheme)
    crop = challenge_crop(min(predictions.shape[1:3]))
    counts = count_nuclei(predictions, scheme, crop)
    return pd.DataFrame(counts, columns=list(scheme.foreground_names))


def write_submission(
    folder: str | os.PathLike,
    predictions: np.ndarray,
    scheme: ClassScheme | str,
    counts: np.ndarray | pd.DataFrame | None = None,
) -> tuple[Path, Path]:
    """Write ``predictions.npy`` and ``counts.csv`` into ``folder``, both or neither.

    Args:
        folder: destination folder (created if missing; earlier files are replaced only
            once both new ones are complete).
        predictions: N x H x W x 2 integer array (instance ids, class ids of ``scheme``).
        scheme: the class scheme (or its name); sets the count columns and their order.
        counts: counts to submit instead of those of the predictions (e.g. from a
            regression head): N x K array in class-id order, or a DataFrame with the
            scheme's foreground class names as columns (any order). Default: counted from
            ``predictions`` (:func:`submission_counts`).

    Returns:
        (path of predictions.npy, path of counts.csv).

    Raises:
        ValueError: bad shape, dtype or values in ``predictions`` or ``counts``.
    """
    scheme = get_scheme(scheme)
    predictions = _checked_predictions(predictions, scheme)
    if counts is None:
        table = submission_counts(predictions, scheme)
    else:
        table = _checked_counts(counts, scheme, len(predictions))
    csv = table.to_csv(index=False).encode()
    paths = atomic_write_many(
        folder,
        {
            PREDICTIONS_FILE: lambda f: np.save(
                f, np.ascontiguousarray(predictions), allow_pickle=False
            ),
            COUNTS_FILE: lambda f: f.write(csv),
        },
    )
    return paths[0], paths[1]


def _checked_counts(
    counts: np.ndarray | pd.DataFrame, scheme: ClassScheme, n: int
) -> pd.DataFrame:
    names = list(scheme.foreground_names)
    if isinstance(counts, pd.DataFrame):
        missing = [name for name in names if name not in counts.columns]
        extra = [name for name in counts.columns if name not in names]
        if missing or extra:
            raise ValueError(
                f"counts: columns must be the class names {names}; "
                f"missing {missing}, unknown {extra}"
            )
        values = counts[names].to_numpy()
    else:
        values = np.asarray(counts)
    if values.shape != (n, len(names)):
        raise ValueError(f"counts: expected shape {(n, len(names))}, got {values.shape}")
    if not np.issubdtype(values.dtype, np.number) or np.isnan(values.astype(float)).any():
        raise ValueError("counts: expected numbers without NaN")
    return pd.DataFrame(values, columns=names)


def read_submission(
    folder: str | os.PathLike, scheme: ClassScheme | str
) -> tuple[np.ndarray, pd.DataFrame]:
    """Read a folder written by :func:`write_submission`.

    Returns:
        (predictions memory-mapped N x H x W x 2 int32, counts DataFrame with the scheme's
        class-name columns).

    Raises:
        FileNotFoundError: a file is missing. ValueError: the files disagree with the
        scheme or with each other.
    """
    scheme = get_scheme(scheme)
    folder = Path(folder)
    for name in (PREDICTIONS_FILE, COUNTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: file not found")
    predictions = np.load(folder / PREDICTIONS_FILE, mmap_mode="r", allow_pickle=False)
    if predictions.ndim != 4 or predictions.shape[-1] != 2 or predictions.dtype != np.int32:
        raise ValueError(
            f"{folder / PREDICTIONS_FILE}: expected N x H x W x 2 int32, got "
            f"{predictions.shape} {predictions.dtype}"
        )
    try:
        counts = _checked_counts(pd.read_csv(folder / COUNTS_FILE), scheme, len(predictions))
    except ValueError as error:
        raise ValueError(f"{folder / COUNTS_FILE}: {error}") from None
    return predictions, counts
