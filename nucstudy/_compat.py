"""Old import paths of the flat package, kept working for a while: the one list of them.

Until the package was grouped by layer, every module sat in ``nucstudy/`` itself. Importing
an old path (``import nucstudy.train``, ``from nucstudy.inference import load_model``) still
works: the old module is an alias that takes each name from its new home, with a
:class:`DeprecationWarning` naming that home. :data:`MOVED_MODULES` maps each old module to
the module most of its names went to; :data:`MOVED_NAMES` the names that went elsewhere.
Old modules whose path is now a package (``nucstudy.segment``, ``nucstudy.study``) give
their old names through the package (:func:`package_getattr`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Any

#: Old module -> the module most of its names are in now.
MOVED_MODULES: dict[str, str] = {
    "nucstudy.io": "nucstudy.common.io",
    "nucstudy.validation": "nucstudy.common.validation",
    "nucstudy.classes": "nucstudy.data.classes",
    "nucstudy.stain": "nucstudy.data.stain",
    "nucstudy.methods": "nucstudy.engine.methods",
    "nucstudy.losses": "nucstudy.engine.losses",
    "nucstudy.train": "nucstudy.engine.trainer",
    "nucstudy.checkpoint": "nucstudy.engine.checkpoint",
    "nucstudy.device": "nucstudy.engine.device",
    "nucstudy.cost": "nucstudy.engine.cost",
    "nucstudy.inference": "nucstudy.engine.inference",
    "nucstudy.schedule": "nucstudy.engine.schedule",
    "nucstudy.oracle": "nucstudy.engine.oracle",
    "nucstudy.tiling": "nucstudy.segment.tiling",
    "nucstudy.export": "nucstudy.segment.export",
    "nucstudy.slides": "nucstudy.segment.slides",
    "nucstudy.tissue": "nucstudy.segment.tissue",
    "nucstudy.regions": "nucstudy.segment.regions",
    "nucstudy.slide_segment": "nucstudy.segment.slide_segment",
    "nucstudy.slide_export": "nucstudy.segment.slide_export",
    "nucstudy.experiment": "nucstudy.study.experiment",
    "nucstudy.ablations": "nucstudy.study.ablations",
    "nucstudy.table1": "nucstudy.study.table1",
    "nucstudy.departures": "nucstudy.study.departures",
    "nucstudy.ood": "nucstudy.study.ood",
    "nucstudy.tuning": "nucstudy.study.tuning",
    "nucstudy.gpu_study": "nucstudy.study.gpu_study",
    "nucstudy.evaluate": "nucstudy.study.evaluate",
    "nucstudy.plots": "nucstudy.study.plots",
    "nucstudy.recipe": "nucstudy.study.recipe",
    "nucstudy.verdicts": "nucstudy.study.verdicts",
    "nucstudy.submission": "nucstudy.study.submission",
    "nucstudy.stated_scores": "nucstudy.study.stated_scores",
    "nucstudy.paths": "nucstudy.study.paths",
    "nucstudy.instances": "nucstudy.postprocess.detections",
    "nucstudy.classical": "nucstudy.postprocess.classical",
    "nucstudy.bootstrap": "nucstudy.metrics.bootstrap",
    # now packages: their old names come through the package's __getattr__
    "nucstudy.segment": "nucstudy.segment.images",
    "nucstudy.study": "nucstudy.study.main_job",
}
#: (old module, name) -> the module the name is in now, where not MOVED_MODULES' one.
MOVED_NAMES: dict[tuple[str, str], str] = (
    {
        ("nucstudy.inference", name): "nucstudy.engine.model_file"
        for name in (
            "TrainedModel",
            "load_model",
            "export_model",
            "MODEL_KEYS",
            "OPTIONAL_MODEL_KEYS",
        )
    }
    | {
        ("nucstudy.inference", name): "nucstudy.segment.image"
        for name in (
            "segment_image",
            "resize_nuclei",
            "check_image",
            "check_resolution",
            "TILE_SIZE",
            "OVERLAP",
            "MAX_RESOLUTION_RATIO",
        )
    }
    | {
        ("nucstudy.train", "train_and_evaluate"): "nucstudy.study.evaluate",
        ("nucstudy.train", "BESIDE_VARIABLE"): "nucstudy.engine.run_folder",
        ("nucstudy.experiment", "crop_side"): "nucstudy.engine.training_data",
        ("nucstudy.experiment", "preset"): "nucstudy.study.presets",
        ("nucstudy.experiment", "PRESETS"): "nucstudy.study.presets",
        ("nucstudy.experiment", "collect"): "nucstudy.study.registry",
    }
    | {
        ("nucstudy.table1", name): "nucstudy.study.compute_budget"
        for name in (
            "BUDGET_FILE",
            "budget_config",
            "count_training_multiply_adds",
            "estimate_minutes",
            "measure_step_seconds",
            "training_record",
        )
    }
    | {
        ("nucstudy.recipe", name): "nucstudy.study.resumable"
        for name in ("run_state", "train_and_score")
    }
    | {("nucstudy.recipe", "HV_TERMS"): "nucstudy.study.presets"}
    | {("nucstudy.departures", "registry_full_runs"): "nucstudy.study.departure_rows"}
)
#: Old modules that are packages now.
PACKAGES = ("nucstudy.segment", "nucstudy.study")


def new_home(old_module: str, name: str) -> str:
    """The module that holds ``name`` of ``old_module`` now."""
    return MOVED_NAMES.get((old_module, name), MOVED_MODULES[old_module])


def _moved(old_module: str, name: str) -> Any:
    home = new_home(old_module, name)
    warnings.warn(
        f"{old_module}.{name} is now {home}.{name}; import it from there",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(home), name)


class _OldModule(types.ModuleType):
    """An old module path: each name is taken from its new home, with a warning."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _moved(self.__name__, name)


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module paths of :data:`MOVED_MODULES` (not the packages)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES and fullname not in PACKAGES:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return _OldModule(spec.name)

    def exec_module(self, module):
        module.__doc__ = f"Moved: see {MOVED_MODULES[module.__name__]}."


def package_getattr(package: str, name: str) -> Any:
    """A package's ``__getattr__`` for the names its old module had."""
    if name.startswith("__") or importlib.util.find_spec(f"{package}.{name}") is not None:
        raise AttributeError(name)  # a submodule: the import system loads it
    try:
        return _moved(package, name)
    except AttributeError:
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None


def install() -> None:
    """Make the old module paths importable (once)."""
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OldPaths())  # before any finder of stale files
