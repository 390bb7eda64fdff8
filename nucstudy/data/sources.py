"""Data sources by name, as the config, the CLI and the notebooks give them.

A source spec is ``"synthetic"``, ``"consep:<folder>"`` (CoNSeP-256) or ``"conic:<folder>"``
(a folder in the CoNIC release layout).
"""

from __future__ import annotations

from pathlib import Path

from nucstudy.data.conic import ConicData, load_conic
from nucstudy.data.consep import import_consep256
from nucstudy.data.synthetic import synthetic_conic

SOURCES = ("synthetic", "consep", "conic")


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


def open_source(
    spec: str,
    split: str = "train",
    resample: bool = False,
    synthetic_patches: int = 512,
    synthetic_size: int = 256,
    seed: int = 0,
) -> ConicData:
    """Read (or generate) a data set by its spec.

    Args:
        spec: ``"synthetic"``, ``"consep:<folder>"`` or ``"conic:<folder>"``.
        split: ``"train"`` or ``"test"``: CoNSeP's official split; for synthetic data the
            test split is generated from another seed (``seed + 1_000_000``); a CoNIC folder
            is one split already, so ``split`` is ignored there.
        resample: halve CoNSeP's resolution to 0.5 um/px.
        synthetic_patches, synthetic_size: size of a synthetic set.
        seed: seed of a synthetic set.

    Returns:
        ConicData.
    """
    kind, folder = parse_source(spec)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if kind == "synthetic":
        test_seed = seed + 1_000_000 if split == "test" else seed
        return synthetic_conic(synthetic_patches, size=synthetic_size, seed=test_seed)
    if kind == "consep":
        return import_consep256(folder, split, resample=resample)
    return load_conic(folder)
