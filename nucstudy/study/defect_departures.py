"""The departures table's rows on defects of the study's own code found after runs were
trained with them: listed only where a run in the table was trained with one."""

from __future__ import annotations

import os

from nucstudy.engine.run_folder import augmentation_frozen
from nucstudy.study.departure_rows import Aspect, Run

#: What the loader defect did, as a noun phrase the pages that name affected runs put after
#: "trained with".
LOADER_DEFECT = (
    "the loader defect, since fixed: each epoch of a training segment repeated the segment's "
    "first draw of augmentation (only the order of the patches changed)"
)


def _frozen(run: Run) -> bool:
    return augmentation_frozen(run.env, run.config.workers, run.config.augment)


def trained_with_frozen_augmentation(folder: str | os.PathLike) -> bool:
    """Whether the run folder's training repeated each segment's first epoch's augmentation
    (loader workers before the fix: :func:`~nucstudy.engine.run_folder.augmentation_frozen`)."""
    return _frozen(Run.read(folder))


#: Defects of the study's code that some committed runs were trained with.
DEFECT_ASPECTS: tuple[Aspect, ...] = (
    Aspect(
        "augmentation drawn each epoch",
        "yes (implied)",
        ("workers", "augment"),
        lambda run: (
            "no: each training segment repeated its first epoch's draw" if _frozen(run) else "yes"
        ),
        lambda run: not _frozen(run),
        f"{LOADER_DEFECT}, because the loader's worker processes kept their first copy of the "
        "data set; such a run fits its training patches sooner, and retrained runs record the fix",
    ),
)
