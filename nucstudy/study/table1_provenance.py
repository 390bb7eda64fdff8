"""Where each Table I row comes from: the provenance tables under the Table I page's answer.

:func:`provenance_table` shows one data set's runs side by side, one row per field of
:data:`PROVENANCE` (test data, protocol, training length and cost, machine), every value as
text, counts as integers.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from nucstudy.study.report import number_text
from nucstudy.study.table1_report import column_or_nan

#: Provenance fields shown, in order (those a row lacks are left out).
PROVENANCE = (
    "status",
    "test data",
    "test patches",
    "CI over",
    "post-processing",
    "preset",
    "model",
    "protocol",
    "epochs",
    "best epoch",
    "steps",
    "images seen",
    "budget min",
    "step s",
    "step measured on",
    "still improving",
    "train minutes",
    "train GMACs/patch",
    "GMACs counted",
    "seed",
    "device",
    "cpu",
    "threads",
    "bf16",
    "commit",
)
#: Provenance fields that count (shown as integers).
COUNTED = ("test patches", "epochs", "best epoch", "steps", "images seen", "seed", "threads")


def provenance_table(rows: pd.DataFrame, data_set: str) -> pd.DataFrame:
    """Where one data set's rows come from: one column per run, one row per field.

    Args:
        rows: as for :func:`nucstudy.study.table1_report.answer_table`.
        data_set: the ``data set`` whose rows are shown.

    Returns:
        String DataFrame indexed by field (named ``field``), the fields of
        :data:`PROVENANCE` that any of the rows has; one column per run, named by its
        method (``method, seed N`` where the method has several); counts as integers, other
        numbers to one decimal, missing values as a dash.
    """
    group = rows[rows["data set"] == data_set]
    several = group["method"].duplicated(keep=False)
    names = [
        f"{method}, seed {number_text(seed, 0)}" if repeated else method
        for method, seed, repeated in zip(
            group["method"], column_or_nan(group, "seed"), several, strict=True
        )
    ]
    group = group.set_axis(names)
    fields = [f for f in PROVENANCE if f in group.columns and group[f].notna().any()]
    return pd.DataFrame(
        {name: [_field_text(group.loc[name, f], f) for f in fields] for name in group.index},
        index=pd.Index(fields, name="field"),
    )


def _field_text(value: Any, field: str) -> str:
    """One provenance value as text (see :func:`provenance_table`)."""
    if isinstance(value, bool):
        return str(value)
    return number_text(value, 0 if field in COUNTED else 1)
