"""The ablation study: one part of the model removed at a time, everything else the same.

The paper's model adds three things to a U-Net with HoVer-Net's heads: squeeze-and-excitation
in the encoder, Coordinate Attention in the decoder and class weights in the type loss.
:data:`ABLATIONS` names each variant by the change it makes to the full model's config;
:func:`ablation_plan` gives the run of every variant and seed; :func:`reusable_run` finds a
finished run of the same config (the full model trained by the training step) so that it
is not trained twice.

At the study's recipe on CoNSeP (``python -m nucstudy.study.ablations --out DIR``), every
variant trains the ``cpu-demo`` network with the recipe's settings (:func:`recipe_extra`,
also the ablation notebook's ``extra``); the full model's runs are the recipe's reference
arm where those exist (:func:`adopt_run`), and the runs resume across sessions
(:func:`nucstudy.study.resumable.train_and_score`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from nucstudy.study.experiment import CONFIG_FILE, METRICS_FILE, ExperimentConfig
from nucstudy.study.presets import preset
from nucstudy.study.recipe import INGREDIENTS, RECIPE_BASE, recipe_changes, recipe_config
from nucstudy.study.recipe import run_name as arm_run_name
from nucstudy.study.resumable import train_and_score

#: Config fields the ablation notebook sets from its own parameters, not from ``extra``.
NOTEBOOK_FIELDS = ("name", "preset", "seed", "data", "resample", "device", "out_root")
#: The file an adopted run keeps of where it came from.
ADOPTED_FILE = "adopted_from.json"

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


def recipe_extra(ingredients: list[str]) -> dict[str, Any]:
    """The ablation notebook's ``extra`` that trains its variants with the study's recipe plus
    ``ingredients`` (:func:`nucstudy.study.recipe.recipe_changes`): every field in which the
    recipe's reference arm differs from the ``cpu-demo`` preset, the notebook's own
    parameters (:data:`NOTEBOOK_FIELDS`: data, resample, ...) aside."""
    recipe = recipe_config("reference", 0, "runs").replace(**recipe_changes(ingredients))
    plain = preset("cpu-demo")
    return {
        field.name: getattr(recipe, field.name)
        for field in dataclasses.fields(recipe)
        if field.name not in NOTEBOOK_FIELDS
        and getattr(recipe, field.name) != getattr(plain, field.name)
    }


def recipe_base(ingredients: list[str], out_root: str | os.PathLike) -> ExperimentConfig:
    """The full model's config at the recipe on CoNSeP at 20x, runs under ``out_root``: what
    the ablation notebook makes with ``preset="cpu-demo"``, the recipe's data, ``resample``
    and ``extra=recipe_extra(ingredients)``."""
    return preset("cpu-demo").replace(
        data=RECIPE_BASE["data"],
        resample=RECIPE_BASE["resample"],
        out_root=str(out_root),
        **recipe_extra(ingredients),
    )


def adopt_run(source: str | os.PathLike, config: ExperimentConfig) -> bool:
    """Copy ``source``, a scored run of ``config`` under another name or place, into
    ``config.run_dir`` (checkpoints left behind), so that it counts as that run; the copy
    says where it came from (:data:`ADOPTED_FILE`).

    Returns:
        Whether ``config.run_dir`` now holds the run (False: ``source`` is not a scored run
        of ``config``, or the folder is taken).
    """
    source = Path(source)
    if config.run_dir.exists() or reusable_run(source, config) is None:
        return False
    partial = config.run_dir.with_name(config.run_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns("checkpoints"))
    saved = ExperimentConfig.load(source / CONFIG_FILE)
    saved.replace(name=config.name, out_root=config.out_root).save(partial / CONFIG_FILE)
    reason = "the same config, name and place aside"
    (partial / ADOPTED_FILE).write_text(json.dumps({"from": str(source), "why": reason}) + "\n")
    partial.rename(config.run_dir)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nucstudy.study.ablations",
        description="train and score the ablations at the study's recipe on CoNSeP at 20x "
        "(cpu-demo network), resuming what an earlier session left",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder of the run folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS))
    parser.add_argument(
        "--recipe", nargs="*", default=[], metavar="INGREDIENT", choices=list(INGREDIENTS),
        help="ingredients added to the reference recipe (default: none)",
    )  # fmt: skip
    parser.add_argument(
        "--full-from",
        type=Path,
        help="the recipe's arms: their reference runs are the full model where they match",
    )
    args = parser.parse_args(argv)
    base = recipe_base(args.recipe, args.out)
    for variant, seed, config in ablation_plan(base, args.seeds):
        if variant not in args.variants:
            continue
        if variant == "full" and args.full_from is not None:
            if adopt_run(args.full_from / arm_run_name("reference", seed), config):
                print(f"[ablations] full, seed {seed}: the recipe's reference arm, adopted")
        train_and_score(config, f"[ablations] {variant}, seed {seed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
