"""The CoNIC array layout: the in-memory :class:`ConicData`, per-class counts, and file I/O.

On disk a data set is a folder as the CoNIC 2022 release ships it:

- ``images.npy``: N x H x W x 3 uint8 RGB;
- ``labels.npy``: N x H x W x 2 integer, channel 0 the instance map (0 background, 1..n),
  channel 1 the class map;
- ``counts.csv``: N rows, one column per foreground class name, nuclei per class counted on
  the central region (see :func:`~nucstudy.data.labels.count_nuclei`);
- ``patch_info.csv``: one row per patch; the release's ``patch_info`` column reads
  ``<source image>-<patch number>``;
- ``meta.json`` (written by this library, optional when reading): the class scheme's name and
  the resolution in microns per pixel. Without it the CoNIC scheme at 0.5 um/px is assumed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nucstudy.common.io import atomic_write_many
from nucstudy.data.classes import CONIC, ClassScheme, get_scheme
from nucstudy.data.labels import (
    challenge_crop,
    check_label_layout,
    count_nuclei,
    median_diameters,
    validate_labels,
)

#: Resolution of the CoNIC release, microns per pixel (20x).
CONIC_MPP = 0.5


@dataclass
class ConicData:
    """A data set in the CoNIC layout, as every loader and the synthetic generator return it.

    Attributes:
        images: N x H x W x 3 uint8 RGB (may be memory-mapped, read-only).
        labels: N x H x W x 2 int32; channel 0 instance ids (0 background), channel 1 class ids.
        scheme: the class scheme of ``labels[..., 1]``.
        mpp: resolution in microns per pixel (CoNIC 0.5, CoNSeP 0.25).
        patch_info: one row per patch with at least a ``source`` column naming the source
            image (patches of one source must stay on one side of a split).
        counts: N x K int64 nuclei per foreground class on the central
            ``challenge_crop(H)`` region; computed from ``labels`` when not given.
    """

    images: np.ndarray
    labels: np.ndarray
    scheme: ClassScheme
    mpp: float
    patch_info: pd.DataFrame
    counts: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.scheme = get_scheme(self.scheme)
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images: expected N x H x W x 3, got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"images: expected uint8, got {self.images.dtype}")
        check_label_layout(self.labels, "labels")
        if self.labels.dtype != np.int32:
            raise ValueError(f"labels: expected int32, got {self.labels.dtype}")
        if self.labels.shape[:3] != self.images.shape[:3]:
            raise ValueError(
                f"images {self.images.shape[:3]} and labels {self.labels.shape[:3]} "
                "differ in N, H or W"
            )
        if len(self.patch_info) != len(self.images):
            raise ValueError(
                f"patch_info has {len(self.patch_info)} rows for {len(self.images)} patches"
            )
        if "source" not in self.patch_info.columns:
            raise ValueError("patch_info needs a 'source' column naming each patch's image")
        if not self.mpp > 0:
            raise ValueError(f"mpp must be positive, got {self.mpp}")
        if self.counts is None:
            size = min(self.images.shape[1:3])
            self.counts = count_nuclei(self.labels, self.scheme, challenge_crop(size))
        elif self.counts.shape != (len(self.images), self.scheme.n_classes - 1):
            raise ValueError(
                f"counts: expected shape {(len(self.images), self.scheme.n_classes - 1)}, "
                f"got {self.counts.shape}"
            )

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray | list[int]) -> ConicData:
        """The patches at ``indices``, in that order, as a new in-memory ConicData."""
        indices = np.asarray(indices, dtype=np.int64)
        return ConicData(
            images=np.asarray(self.images[indices]),
            labels=np.asarray(self.labels[indices]),
            scheme=self.scheme,
            mpp=self.mpp,
            patch_info=self.patch_info.iloc[indices].reset_index(drop=True),
            counts=self.counts[indices],
        )

    def fingerprints(self) -> list[str]:
        """One short content hash per patch (BLAKE2b, 8 bytes, of the image's pixels, hex).

        The same image gives the same fingerprint whichever folder or split it was read
        from: this is how evaluation recognises patches a run was trained on.
        """
        return [
            hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=8).hexdigest()
            for image in self.images
        ]

    def counts_frame(self) -> pd.DataFrame:
        """Counts as a DataFrame with one column per foreground class name."""
        return pd.DataFrame(self.counts, columns=list(self.scheme.foreground_names))

    def class_summary(self) -> pd.DataFrame:
        """One row per foreground class: ``nuclei`` counted on the central region of every
        patch, their ``share`` of all nuclei, and the ``median diameter um`` of its whole
        nuclei (:func:`~nucstudy.data.labels.median_diameters`); indexed by class name."""
        totals = self.counts.sum(axis=0)
        return pd.DataFrame(
            {
                "nuclei": totals,
                "share": totals / max(int(totals.sum()), 1),
                "median diameter um": median_diameters(self.labels, self.scheme, self.mpp),
            },
            index=pd.Index(self.scheme.foreground_names, name="class"),
        )


def concat_data(parts: list[ConicData]) -> ConicData:
    """Data sets of one class scheme, resolution and patch size, one after another.

    Raises:
        ValueError: no parts, or parts that differ in scheme, mpp or patch size.
    """
    if not parts:
        raise ValueError("concat_data needs at least one data set")
    first = parts[0]
    for part in parts[1:]:
        if (part.scheme.name, part.mpp, part.images.shape[1:3]) != (
            first.scheme.name,
            first.mpp,
            first.images.shape[1:3],
        ):
            raise ValueError(
                "data sets differ in class scheme, resolution or patch size: "
                f"{first.scheme.name} at {first.mpp} um/px, {first.images.shape[1:3]} px and "
                f"{part.scheme.name} at {part.mpp} um/px, {part.images.shape[1:3]} px"
            )
    return ConicData(
        images=np.concatenate([np.asarray(part.images) for part in parts]),
        labels=np.concatenate([np.asarray(part.labels) for part in parts]),
        scheme=first.scheme,
        mpp=first.mpp,
        patch_info=pd.concat([part.patch_info for part in parts], ignore_index=True),
        counts=np.concatenate([part.counts for part in parts]),
    )


def _fail(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise _fail(path, f"not a readable .npy array ({error})") from None


def load_conic(
    root: str | os.PathLike, scheme: ClassScheme | str | None = None, mpp: float | None = None
) -> ConicData:
    """Read a data set in the CoNIC release layout, memory-mapped.

    Args:
        root: folder holding ``images.npy``, ``labels.npy``, ``counts.csv`` and
            ``patch_info.csv`` (see the module docstring).
        scheme: class scheme; default from ``meta.json``, else CoNIC.
        mpp: microns per pixel; default from ``meta.json``, else 0.5.

    Returns:
        ConicData whose images are a read-only memory map. Labels stay memory-mapped when the
        file is int32 and are converted (read into memory) otherwise.

    Raises:
        FileNotFoundError: a file is missing (the message names it).
        ValueError: a file is malformed, or the files disagree (the message names the file).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found")
    meta = _read_meta(root / "meta.json")
    scheme = get_scheme(scheme or meta.get("scheme", CONIC.name))
    mpp = float(mpp if mpp is not None else meta.get("mpp", CONIC_MPP))

    images = _load_array(root / "images.npy")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise _fail(root / "images.npy", f"expected shape N x H x W x 3, got {images.shape}")
    if images.dtype != np.uint8:
        raise _fail(root / "images.npy", f"expected dtype uint8, got {images.dtype}")

    labels_path = root / "labels.npy"
    labels = _load_array(labels_path)
    try:
        validate_labels(labels, scheme, where=str(labels_path))
    except ValueError as error:
        raise ValueError(str(error)) from None
    if labels.shape[:3] != images.shape[:3]:
        raise _fail(
            labels_path,
            f"{labels.shape[0]} patches of {labels.shape[1]} x {labels.shape[2]} px, but "
            f"images.npy has {images.shape[0]} of {images.shape[1]} x {images.shape[2]}",
        )
    if labels.dtype != np.int32:
        labels = np.asarray(labels, dtype=np.int32)

    patch_info = _read_patch_info(root / "patch_info.csv", len(images))
    data = ConicData(images, labels, scheme, mpp, patch_info)
    _check_counts_csv(root / "counts.csv", data)
    return data


def _read_meta(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise _fail(path, f"not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise _fail(path, "expected a JSON object")
    return meta


def _read_patch_info(path: Path, n: int) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        info = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise _fail(path, f"not a readable CSV table ({error})") from None
    if len(info) != n:
        raise _fail(path, f"{len(info)} rows, but images.npy has {n} patches")
    if "source" not in info.columns:
        if "patch_info" not in info.columns:
            raise _fail(path, "needs a 'patch_info' or a 'source' column")
        info["source"] = info["patch_info"].str.rsplit("-", n=1).str[0]
    return info


def _check_counts_csv(path: Path, data: ConicData) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise _fail(path, f"not a readable CSV table ({error})") from None
    expected = list(data.scheme.foreground_names)
    if list(table.columns) != expected:
        raise _fail(path, f"columns {list(table.columns)} differ from the scheme's {expected}")
    if len(table) != len(data):
        raise _fail(path, f"{len(table)} rows, but images.npy has {len(data)} patches")
    if not np.array_equal(table.to_numpy(), data.counts):
        rows = np.flatnonzero(np.any(table.to_numpy() != data.counts, axis=1))
        raise _fail(
            path,
            f"counts disagree with the labels in {rows.size} rows (first: row {rows[0]}); "
            "recount with nucstudy.data.count_nuclei",
        )


def save_conic(data: ConicData, root: str | os.PathLike) -> Path:
    """Write ``data`` in the CoNIC release layout (plus ``meta.json``), atomically.

    Every file is first written under a temporary name in ``root`` and renamed into place
    only once all of them are complete, so an interrupted save leaves any earlier data set in
    ``root`` intact.

    Returns:
        The folder written.
    """
    root = Path(root)
    patch_info = data.patch_info.copy()
    if "patch_info" not in patch_info.columns:
        patch_info.insert(
            0, "patch_info", [f"{s}-{i:04d}" for i, s in enumerate(patch_info["source"])]
        )
    meta = json.dumps({"scheme": data.scheme.name, "mpp": data.mpp}, indent=2)
    atomic_write_many(
        root,
        {
            "images.npy": lambda f: np.save(
                f, np.ascontiguousarray(data.images), allow_pickle=False
            ),
            "labels.npy": lambda f: np.save(
                f, np.ascontiguousarray(data.labels, dtype=np.int32), allow_pickle=False
            ),
            "counts.csv": lambda f: f.write(data.counts_frame().to_csv(index=False).encode()),
            "patch_info.csv": lambda f: f.write(patch_info.to_csv(index=False).encode()),
            "meta.json": lambda f: f.write(meta.encode()),
        },
    )
    return root
