"""Data sources by name, as the config, the CLI and the notebooks give them.

A source spec is ``"synthetic"``, ``"consep:<folder>"`` (CoNSeP-256) or ``"conic:<folder>"``
(a folder in the CoNIC release layout).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nucstudy.data.conic import ConicData, load_conic
from nucstudy.data.consep import import_consep256
from nucstudy.data.split import split_by_source
from nucstudy.data.synthetic import synthetic_conic

SOURCES = ("synthetic", "consep", "conic")
#: Each kind of source as a reader names it (figure titles, tables).
SOURCE_NAMES = {"synthetic": "synthetic H&E", "consep": "CoNSeP-256", "conic": "CoNIC"}
#: Seed of the train/test split of a CoNIC folder by source image. It is fixed, not the
#: run's seed, so that every run of a study (every seed, every ablation) is scored on the
#: same held-out source images.
CONIC_SPLIT_SEED = 0


def parse_source(spec: str) -> tuple[str, Path | None]:
    """Split a spec into (kind, folder); raises ValueError for an unknown or incomplete spec."""
    kind, _, folder = spec.partition(":")
    if kind not in SOURCES:
        raise ValueError(
            f"unknown data source {spec!r}; use synthetic, consep:<folder> or conic:<folder>"
        )
    if kind == "synthetic":
        if folder:
            raise ValueError(f"data source {spec!r}: synthetic takes no folder")
        return kind, None
    if not folder:
        raise ValueError(f"data source {spec!r}: give the folder, as {kind}:<folder>")
    return kind, Path(folder).expanduser()


def source_name(spec: str) -> str:
    """The data set a source spec names, as a reader names it (``"consep:<folder>"`` ->
    ``"CoNSeP-256"``); raises ValueError for an unknown spec."""
    return SOURCE_NAMES[parse_source(spec)[0]]


def conic_split(data: ConicData, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """The train/test split of a CoNIC folder: (train indices, test indices).

    By source image (``patch_info``'s source: no image has patches on both sides), with
    :data:`CONIC_SPLIT_SEED`; the test side holds at least ``test_fraction`` of the patches
    (see :func:`nucstudy.data.split_by_source`).
    """
    return split_by_source(data, test_fraction, CONIC_SPLIT_SEED)


def open_source(
    spec: str,
    split: str = "train",
    resample: bool = False,
    synthetic_patches: int = 512,
    synthetic_size: int = 256,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> ConicData:
    """Read (or generate) a data set by its spec.

    Args:
        spec: ``"synthetic"``, ``"consep:<folder>"`` or ``"conic:<folder>"``.
        split: ``"train"`` or ``"test"``: CoNSeP's official split; for synthetic data the
            test split is generated from another seed (``seed + 1_000_000``); a CoNIC folder
            is split by source image (:func:`conic_split`). ``"all"`` (CoNIC only): the
            whole folder, for a folder that is one split already.
        resample: halve CoNSeP's resolution to 0.5 um/px.
        synthetic_patches, synthetic_size: size of a synthetic set.
        seed: seed of a synthetic set.
        test_fraction: CoNIC: share of the patches held out for testing.

    Returns:
        ConicData.
    """
    kind, folder = parse_source(spec)
    splits = ("train", "test", "all") if kind == "conic" else ("train", "test")
    if split not in splits:
        raise ValueError(
            f"split of {kind} data must be {' or '.join(map(repr, splits))}, got {split!r}"
        )
    if kind == "synthetic":
        test_seed = seed + 1_000_000 if split == "test" else seed
        return synthetic_conic(synthetic_patches, size=synthetic_size, seed=test_seed)
    if kind == "consep":
        return import_consep256(folder, split, resample=resample)
    data = load_conic(folder)
    if split == "all":
        return data
    train, test = conic_split(data, test_fraction)
    return data.subset(train if split == "train" else test)
