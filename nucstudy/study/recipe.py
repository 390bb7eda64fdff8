"""The training recipe, ingredient by ingredient: what each change to training buys.

All arms train the ``cpu-demo`` network (width 16, depth 4) on CoNSeP at 20x from scratch
and are scored on CoNSeP's test split. :data:`RECIPE_BASE` is the reference arm: 5,000
optimiser steps of batch 8, cosine decay from 2e-3, and the paper's loss with HoVer-Net's
HV terms (HV MSE counted twice plus MSGE). Every other arm (:data:`INGREDIENTS`) changes one
thing against it, at the same optimiser steps (batch 16 at the same patches seen), so that
its difference from the reference is that ingredient's effect. The earlier ``cpu-demo``
runs (30 epochs, the paper's loss and step schedule; :data:`COMMITTED`) are the starting
point.

:func:`recipe_plan` lists the runs, :func:`run_recipe` trains and scores what is missing
(resuming a run interrupted part-way), :func:`recipe_table` gathers their scores,
:func:`chosen_ingredients` picks the ingredients on the validation tiles,
:func:`recipe_changes` turns them into a config's changes, and :func:`long_run_config` gives
another preset's network (the paper's) that recipe for a long run (``--long paper``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from nucstudy.engine.run_folder import CONFIG_FILE, HISTORY_FILE, METRICS_FILE
from nucstudy.study.experiment import ExperimentConfig
from nucstudy.study.presets import HV_TERMS, preset
from nucstudy.study.resumable import train_and_score

#: The reference arm's changes to the ``cpu-demo`` preset.
RECIPE_BASE: dict[str, Any] = {
    "data": "consep:../shared/data/consep256",
    "resample": True,
    "steps": 5000,
    "lr_schedule": "cosine",
    "loss_weights": HV_TERMS,
    "eval_every": 10,
    "compile": True,
    "workers": 0,
}

#: Arm -> (what it tests, its changes to the reference arm), in the order they are trained.
INGREDIENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "reference": ("5,000 steps, cosine, HV terms", {}),
    "paper HV loss": ("without the HV terms: the paper's HV MSE alone", {"loss_weights": {}}),
    "dice present": (
        "Dice averaged over the classes present in the batch only (for the rare class)",
        {"dice_classes": "present"},
    ),
    "rare sampling": ("patches with rare classes drawn more often", {"sampling": "rare"}),
    "ema": ("a moving average of the weights (decay 0.999)", {"ema_decay": 0.999}),
    "1,260 steps": ("1,260 steps, as the earlier cpu-demo runs, not 5,000", {"steps": 1260}),
    "step schedule": (
        "the learning rate x0.1 at 2/3 and 13/15 of the steps instead of the cosine",
        {"lr_schedule": "step", "lr_milestone_fractions": [20 / 30, 26 / 30]},
    ),
    "keep ratio": ("the rescale keeps the aspect ratio", {"keep_ratio": True}),
    "crop 96": ("random 96 px crops of the 128 px patches", {"crop_fraction": 0.75}),
    "batch 16": (
        "batch 16 at the same patches seen (2,500 steps)",
        {"batch_size": 16, "steps": 2500},
    ),
    "all tiles": (
        "all 27 training tiles, none held out (the last checkpoint)",
        {"val_fraction": 0.0},
    ),
}


def run_name(arm: str, seed: int) -> str:
    """The run folder of an arm and seed: ``dice-present-seed0``, ``1260-steps-seed1``."""
    slug = arm.replace(",", "").replace(" ", "-")
    return f"{slug}-seed{seed}"


def recipe_config(arm: str, seed: int, out_root: str | os.PathLike) -> ExperimentConfig:
    """The config of one arm and seed.

    Raises:
        ValueError: an unknown arm.
    """
    if arm not in INGREDIENTS:
        raise ValueError(f"unknown recipe arm {arm!r}; known: {', '.join(INGREDIENTS)}")
    changes = {**RECIPE_BASE, **INGREDIENTS[arm][1]}
    return preset(
        "cpu-demo", name=run_name(arm, seed), seed=seed, out_root=str(out_root), **changes
    )


def recipe_plan(
    arms: list[str], seeds: list[int], out_root: str | os.PathLike
) -> list[tuple[str, int, ExperimentConfig]]:
    """(arm, seed, config) of every run, arm by arm."""
    return [(arm, seed, recipe_config(arm, seed, out_root)) for arm in arms for seed in seeds]


def run_recipe(
    arms: list[str], seeds: list[int], out_root: str | os.PathLike, progress: bool = True
) -> None:
    """Train and score every run of the plan that is not scored yet, one after another
    (:func:`train_and_score`)."""
    for arm, seed, config in recipe_plan(arms, seeds, out_root):
        train_and_score(config, f"[recipe] {arm}, seed {seed}", progress)


def long_run_config(
    preset_name: str,
    steps: int,
    seed: int,
    out_root: str | os.PathLike,
    ingredients: list[str],
) -> ExperimentConfig:
    """A long run of ``preset_name``'s network on CoNSeP with the reference recipe and
    ``ingredients`` (:func:`recipe_changes`) for ``steps`` optimiser steps, validated every
    10 epochs, through ``torch.compile`` as the arms; named ``recipe-<preset>-<steps>-seed<k>``."""
    return preset(
        preset_name,
        name=f"recipe-{preset_name}-{steps}-seed{seed}",
        seed=seed,
        out_root=str(out_root),
        data=RECIPE_BASE["data"],
        steps=steps,
        eval_every=10,
        workers=0,
        compile=RECIPE_BASE["compile"],
        **recipe_changes(ingredients),
    )


#: The arm of the earlier ``cpu-demo`` runs on CoNSeP (the paper's loss): the starting point.
COMMITTED = "earlier cpu-demo recipe with the paper's loss"
#: The arm of the reference runs scored with thresholds tuned on their validation tiles.
TUNED = "tuned thresholds"


#: The columns of :func:`recipe_table`.
TABLE_COLUMNS = [
    "arm", "seed", "steps", "images seen", "PQ", "mPQ+", "R²", "AJI", "PQ other",
    "other true", "other predicted", "val PQ", "val mPQ+", "run",
]  # fmt: skip


def recipe_table(
    out_root: str | os.PathLike,
    committed_root: str | os.PathLike | None = None,
    reference_roots: Sequence[str | os.PathLike] = (),
) -> pd.DataFrame:
    """One row per scored run: arm, seed, steps, patches seen and test scores.

    Args:
        out_root: the folder of the arms' run folders (:func:`run_recipe`'s ``out_root``).
            A reference run scored with tuned thresholds (``metrics-tuned.json``, written by
            ``nucstudy evaluate --tuned``) adds a row of the arm :data:`TUNED`.
        committed_root: the folder of the earlier ``cpu-demo`` runs on CoNSeP
            (``full-seed<k>``), whose rows form the arm :data:`COMMITTED`; None: none.
        reference_roots: further folders whose scored ``full-seed<k>`` runs are the reference
            arm's configuration (name, place and ``torch.compile`` aside): the full model of
            the ablations at the study's recipe. Each adds a reference row for a seed that
            ``out_root`` does not have (a copy of a reference run adds nothing); a run of
            another configuration is left out.

    Returns:
        Columns ``arm``, ``seed``, ``steps``, ``images seen``, ``PQ``, ``mPQ+``, ``R²``,
        ``AJI`` and ``PQ other`` (scores unitless, on CoNSeP's test split), ``other true``
        and ``other predicted`` (the test nuclei of the rare class "other" and the
        predictions given that class), ``val PQ`` and ``val mPQ+`` (the kept checkpoint's
        scores on the run's validation tiles, the only scores an ingredient is chosen on:
        None for a run without validation tiles, and for the tuned thresholds, chosen on
        those tiles) and ``run`` (the run folder).
    """
    rows = []
    names = {run_name(arm, 0).removesuffix("-seed0"): arm for arm in INGREDIENTS}
    for metrics_path in sorted(Path(out_root).glob(f"*/{METRICS_FILE}")):
        arm = names.get(metrics_path.parent.name.rsplit("-seed", 1)[0])
        if arm is not None:
            rows.append(_score_row(arm, metrics_path))
            tuned = metrics_path.with_name("metrics-tuned.json")
            if arm == "reference" and tuned.is_file():
                rows.append(_score_row(TUNED, tuned))
    seeds = {row["seed"] for row in rows if row["arm"] == "reference"}
    for root in reference_roots:
        for metrics_path in sorted(Path(root).glob(f"full-seed*/{METRICS_FILE}")):
            config = ExperimentConfig.load(metrics_path.parent / CONFIG_FILE)
            if config.seed not in seeds and _is_reference(config):
                rows.append(_score_row("reference", metrics_path))
                seeds.add(config.seed)
    if committed_root is not None:
        for metrics_path in sorted(Path(committed_root).glob(f"full-seed*/{METRICS_FILE}")):
            rows.append(_score_row(COMMITTED, metrics_path))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _is_reference(config: ExperimentConfig) -> bool:
    """Whether ``config`` trains the reference arm (its name, place and ``torch.compile``,
    which changes speed, not what is learnt, aside)."""
    reference = recipe_config("reference", config.seed, config.out_root)
    return config.replace(name=reference.name, compile=reference.compile) == reference


def validation_gain(scores: pd.DataFrame, metric: str = "val mPQ+") -> pd.Series:
    """Per arm, its mean gain over the reference on the validation tiles: the score the
    ingredients are chosen on.

    A seed draws its own validation tiles, so an arm is compared with the reference run of
    the same seed, and the paired differences are averaged over the seeds both have.

    Args:
        scores: :func:`recipe_table`'s rows.
        metric: the validation column (``val mPQ+`` or ``val PQ``).

    Returns:
        float Series indexed by arm (the reference and arms without validation scores left
        out), in the order of the arms' first rows.
    """
    reference = scores[scores["arm"] == "reference"].set_index("seed")[metric]
    gains = {}
    for arm, rows in scores[scores["arm"] != "reference"].groupby("arm", sort=False):
        paired = rows.set_index("seed")[metric] - reference.reindex(rows["seed"]).to_numpy()
        if paired.notna().any():
            gains[arm] = float(paired.mean())
    return pd.Series(gains, dtype=float, name=f"{metric} gain")


#: Arms that are not candidates for the recipe: the reference itself, a shorter run (fewer
#: steps only saves time), and training on every tile (no validation tiles to choose on).
NOT_CANDIDATES = ("reference", "1,260 steps", "all tiles")
#: The least mean validation mPQ+ gain over the reference (paired by seed) that an
#: ingredient must bring, on top of a gain on every seed, to join the recipe.
MIN_GAIN = 0.01
#: The config fields a recipe sets: how a network is trained, not which network, on what
#: data, for how long or where.
RECIPE_FIELDS = (
    "resample", "crop_fraction", "keep_ratio", "batch_size", "lr", "weight_decay",
    "lr_schedule", "lr_milestone_fractions", "lr_gamma", "warmup_steps", "ema_decay",
    "loss_weights", "dice_classes", "sampling",
)  # fmt: skip


#: What :func:`ingredient_verdicts` says of a candidate arm.
CHOSEN, NOT_CHOSEN, UNDECIDED = "chosen", "not chosen", "undecided"


def ingredient_verdicts(scores: pd.DataFrame, min_gain: float = MIN_GAIN) -> dict[str, str]:
    """Whether each candidate arm joins the recipe, chosen on the validation tiles alone.

    An arm joins (:data:`CHOSEN`) when its validation mPQ+ is above the reference's on every
    seed both have (at least two; paired by seed, since each seed holds out its own tiles)
    and by at least ``min_gain`` on average. It cannot join (:data:`NOT_CHOSEN`) once it is
    below on any seed, or when two or more seeds give less than ``min_gain`` on average;
    with fewer than two seeds and none below it is :data:`UNDECIDED`.

    Args:
        scores: :func:`recipe_table`'s rows.
        min_gain: the least mean gain (mPQ+, unitless).

    Returns:
        Candidate arm -> verdict, in the order of :data:`INGREDIENTS` (arms of
        :data:`NOT_CANDIDATES` left out).
    """
    reference = scores[scores["arm"] == "reference"].set_index("seed")["val mPQ+"]
    verdicts = {}
    for arm in INGREDIENTS:
        if arm in NOT_CANDIDATES:
            continue
        rows = scores[scores["arm"] == arm].set_index("seed")["val mPQ+"]
        paired = (rows - reference.reindex(rows.index)).dropna()
        if (paired <= 0).any():
            verdicts[arm] = NOT_CHOSEN
        elif len(paired) < 2:
            verdicts[arm] = UNDECIDED
        else:
            verdicts[arm] = CHOSEN if paired.mean() >= min_gain else NOT_CHOSEN
    return verdicts


def chosen_ingredients(scores: pd.DataFrame, min_gain: float = MIN_GAIN) -> list[str]:
    """The ingredients the best recipe takes (:func:`ingredient_verdicts` says
    :data:`CHOSEN`), in the order of :data:`INGREDIENTS`; empty: the reference stands."""
    verdicts = ingredient_verdicts(scores, min_gain)
    return [arm for arm, verdict in verdicts.items() if verdict == CHOSEN]


def recipe_changes(ingredients: list[str]) -> dict[str, Any]:
    """The training fields (:data:`RECIPE_FIELDS`) of the reference recipe with
    ``ingredients`` added: the changes that give another preset or network this recipe
    (its batch, learning rate and schedule, loss terms, sampling, augmentation), leaving
    the network, the data and the run's length to the caller.

    Raises:
        ValueError: an unknown ingredient.
    """
    unknown = [arm for arm in ingredients if arm not in INGREDIENTS]
    if unknown:
        raise ValueError(
            f"unknown recipe arm(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(map(repr, INGREDIENTS))}"
        )
    changes = {key: value for arm in ingredients for key, value in INGREDIENTS[arm][1].items()}
    config = recipe_config("reference", 0, "runs").replace(**changes)
    return {field: getattr(config, field) for field in RECIPE_FIELDS}


def _score_row(arm: str, metrics_path: Path) -> dict[str, Any]:
    """The row of :func:`recipe_table` of one scored run."""
    config = ExperimentConfig.load(metrics_path.parent / CONFIG_FILE)
    metrics = json.loads(metrics_path.read_text())
    history = pd.read_csv(metrics_path.parent / HISTORY_FILE)
    kept = history[history["epoch"] == int(metrics["epoch"])]
    steps = metrics.get("step")
    if steps is None:  # scored before steps were counted: the patches its epochs saw
        trained = history[history["epoch"] <= int(metrics["epoch"])]
        images = (trained["images_per_s"] * trained["seconds"]).round().sum()
        steps = int(images) // config.batch_size
    overall = metrics["overall"]
    other = metrics["per_class"].get("other", {})
    return {
        "arm": arm,
        "seed": config.seed,
        "steps": steps,
        "images seen": None if steps is None else steps * config.batch_size,
        "PQ": overall["pq"],
        "mPQ+": overall["mpq+"],
        "R²": overall["r2"],
        "AJI": overall["aji"],
        "PQ other": other.get("pq"),
        "other true": _count(other, "tp", "fn"),
        "other predicted": _count(other, "tp", "fp"),
        # tuned thresholds were chosen on the validation tiles: no unbiased score there
        "val PQ": None if arm == TUNED else _kept_score(kept, "val_pq"),
        "val mPQ+": None if arm == TUNED else _kept_score(kept, "val_mpq+"),
        "run": str(metrics_path.parent),
    }


def _count(stats: dict[str, Any], *keys: str) -> int | None:
    """The sum of a class's match counts (``tp``, ``fp``, ``fn``), None where one is missing."""
    values = [stats.get(key) for key in keys]
    return None if None in values else int(sum(values))


def _kept_score(kept: pd.DataFrame, column: str) -> float | None:
    """A validation score of the kept checkpoint's epoch (its ``history.csv`` row), if any."""
    if column not in kept.columns or kept[column].isna().all():
        return None
    return float(kept[column].iloc[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nucstudy.study.recipe",
        description="train and score the recipe's arms, or a long run with the chosen recipe",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder of the run folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", default=list(INGREDIENTS), choices=list(INGREDIENTS))
    parser.add_argument(
        "--long", metavar="PRESET", help="instead of the arms: a long run of this preset's network"
    )
    parser.add_argument("--steps", type=int, default=15000, help="the long run's optimiser steps")
    parser.add_argument(
        "--chosen-from",
        type=Path,
        default=Path("results/runs/consep-recipe"),
        help="the arms' run folders the long run's ingredients are chosen from (validation)",
    )
    args = parser.parse_args(argv)
    if args.long is None:
        run_recipe(args.arms, args.seeds, args.out)
        return 0
    ingredients = chosen_ingredients(recipe_table(args.chosen_from))
    print(f"[recipe] chosen on validation: {', '.join(ingredients) or 'the reference alone'}")
    for seed in args.seeds:
        config = long_run_config(args.long, args.steps, seed, args.out, ingredients)
        train_and_score(config, f"[recipe] {args.long}, {args.steps} steps, seed {seed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
