"""What every command shares: the usage error (one line, exit code 2), the parser that
raises it, ``KEY=VALUE`` settings, and the checks of data sources, run folders and model
files named on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nucstudy.common.validation import parse_pairs
from nucstudy.study.experiment import CONFIG_FILE

if TYPE_CHECKING:
    from nucstudy.data.tiles import LabelledTile


EXIT_USAGE = 2


EXIT_FAILED = 1


class UsageError(Exception):
    """A bad argument or missing input: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        raise UsageError(message)


def settings(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` settings (:func:`nucstudy.common.validation.parse_pairs`); a bad one
    is a usage error."""
    try:
        return parse_pairs(items, flag)
    except ValueError as error:
        raise UsageError(str(error)) from None


def recipe_settings(ingredients: list[str] | None) -> dict[str, Any]:
    """The training fields of the study's recipe with ``ingredients`` added
    (:func:`nucstudy.study.recipe.recipe_changes`); None: no recipe, no changes. An unknown
    ingredient is a usage error."""
    if ingredients is None:
        return {}
    from nucstudy.study.recipe import recipe_changes

    try:
        return recipe_changes(ingredients)
    except ValueError as error:
        raise UsageError(f"--recipe: {error}") from None


def check_source(spec: str) -> None:
    from nucstudy.data import parse_source

    kind, folder = parse_source(spec)
    if folder is not None and not folder.exists():
        raise UsageError(f"--data {spec}: folder {folder} not found")


def check_run_dirs(run_dirs: list[Path]) -> None:
    """Refuse, in one sentence, any folder that is not a run folder."""
    for run_dir in run_dirs:
        if not (run_dir / CONFIG_FILE).is_file():
            raise UsageError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")


def model_file(path: Path) -> Path:
    """A checkpoint named directly, or a run folder's ``checkpoints/best.pt``."""
    from nucstudy.study.evaluate import run_checkpoint

    return run_checkpoint(path) if path.is_dir() else path


def is_source(spec: str) -> bool:
    """Whether ``spec`` names a data source (``synthetic``, ``consep:...``), not a folder."""
    return ":" in spec or spec == "synthetic"


def read_tiles(spec: str, split: str = "test") -> list[LabelledTile]:
    """Labelled tiles from a labelled-tiles folder, or from a data source's ``split``."""
    from nucstudy.data.tiles import load_tiles, tiles_from_source

    if is_source(spec):
        check_source(spec)
        return tiles_from_source(spec, split)
    return load_tiles(spec)
