"""The ablation study: one part of the model removed at a time, everything else the same.

The paper's model adds three things to a U-Net with HoVer-Net's heads: squeeze-and-excitation
in the encoder, Coordinate Attention in the decoder and class weights in the type loss.
:data:`ABLATIONS` names each variant by the change it makes to the full model's config;
:func:`ablation_plan` gives the run of every variant and seed; :func:`reusable_run` finds a
finished run of the same config (the full model trained by the training step) so that it
is not trained twice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nucstudy.study.experiment import CONFIG_FILE, METRICS_FILE, ExperimentConfig

#: Variant -> the config changes that make it (``model_options`` are merged, not replaced).
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "no SE": {"model_options": {"use_se": False}},
    "no CA": {"model_options": {"use_ca": False}},
    "no class weights": {"class_weights": None},
}


def run_name(variant: str, seed: int) -> str:
    """The run folder name of a variant and seed: ``no-SE-seed0``, ``no-cw-seed1``, ..."""
    return variant.replace(" ", "-").replace("-class-weights", "-cw") + f"-seed{seed}"


def ablation_config(base: ExperimentConfig, variant: str, seed: int) -> ExperimentConfig:
    """The config of one variant and seed, derived from the full model's ``base``.

    Raises:
        ValueError: an unknown variant.
    """
    if variant not in ABLATIONS:
        raise ValueError(f"unknown ablation {variant!r}; known: {', '.join(ABLATIONS)}")
    change = dict(ABLATIONS[variant])
    if "model_options" in change:
        change["model_options"] = {**base.model_options, **change["model_options"]}
    return base.replace(name=run_name(variant, seed), seed=seed, **change)


def ablation_plan(
    base: ExperimentConfig, seeds: list[int]
) -> list[tuple[str, int, ExperimentConfig]]:
    """(variant, seed, config) of every run of the study, seed by seed."""
    return [
        (variant, seed, ablation_config(base, variant, seed))
        for seed in seeds
        for variant in ABLATIONS
    ]


def reusable_run(folder: str | os.PathLike | None, config: ExperimentConfig) -> Path | None:
    """``folder`` if it holds a scored run of exactly ``config`` (name and place aside, and
    whether it was trained through ``torch.compile``, which changes its speed, not what it
    learns).

    Returns:
        The folder, or None when it is None, unfinished or trained with another config.
    """
    if folder is None:
        return None
    folder = Path(folder)
    if not (folder / METRICS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        return None
    saved = ExperimentConfig.load(folder / CONFIG_FILE)
    same_place = saved.replace(name=config.name, out_root=config.out_root, compile=config.compile)
    return folder if same_place == config else None
