"""Tables as the book shows them: no row numbers, counts as integers, no ``NaN``.

The experiment notebooks and the book's pages show their results as pandas tables. A plain
DataFrame renders with a column of row numbers, whole numbers read back from JSON as floats
(``53.0``), missing values as ``NaN`` and every float to pandas' precision.
:func:`report_table` gives the one look the book uses (:func:`spaced_table` the same with its
columns spaced, for the long tables of the out-of-domain pages); :func:`mean_std` writes a
mean over seeds with its standard deviation, the way every results table of the book gives it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

#: What a missing value is shown as.
MISSING = "–"


def mean_std(values: Iterable[float], decimals: int = 3) -> str:
    """``"0.412 ± 0.010"``: the mean of ``values`` and their standard deviation (ddof 1);
    one value alone without the ``±``; none (or only NaN) as :data:`MISSING`."""
    finite = [float(v) for v in values if v is not None and not np.isnan(v)]
    if not finite:
        return MISSING
    text = f"{np.mean(finite):.{decimals}f}"
    if len(finite) > 1:
        text += f" ± {np.std(finite, ddof=1):.{decimals}f}"
    return text


def value_text(value: object) -> object:
    """A config value as a table cell shows it: a dict as ``"key value, ..."`` (``"none"`` if
    empty), anything else as it is."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {item}" for key, item in value.items()) or "none"
    return value


def report_table(
    table: pd.DataFrame,
    counts: Iterable[str] = (),
    decimals: int = 3,
    index: bool = False,
) -> Styler:
    """A DataFrame styled for the book.

    Args:
        table: any DataFrame; its index is shown only with ``index=True`` (use it for a named
            index such as the classes of a per-class table).
        counts: columns that count something (nuclei, epochs, seeds): shown as integers.
        decimals: digits after the point of every other numeric column.
        index: show the index (its name as the header of its column).

    Returns:
        A :class:`pandas.io.formats.style.Styler`; a notebook cell displays it as HTML.
        Missing values are shown as :data:`MISSING`.
    """
    counts = [c for c in counts if c in table.columns]
    numeric = [c for c in table.select_dtypes("number").columns if c not in counts]
    # the class pandas gives a plain DataFrame's table, which the book's theme styles
    styler = table.style.format(na_rep=MISSING).set_table_attributes('class="dataframe"')
    if numeric:
        styler = styler.format(f"{{:.{decimals}f}}", subset=numeric, na_rep=MISSING)
    if counts:
        styler = styler.format(number_text, subset=counts)
    return styler if index else styler.hide(axis="index")


def spaced_table(
    table: pd.DataFrame,
    counts: Iterable[str] = (),
    decimals: int = 3,
    first_column_em: float = 12.0,
    one_line: bool = False,
    small: bool = False,
) -> Styler:
    """:func:`report_table` with its columns spaced and ``mean ± std`` and ``before → after``
    kept on one line.

    Args:
        table, counts, decimals: as for :func:`report_table` (the index is not shown).
        first_column_em: the least width of the first column, in em (its labels wrap less).
        one_line: every cell on one line, the first column too (a wide table then scrolls
            inside its box) instead of the first column's least width.
        small: a smaller font and tighter spacing.
    """
    table = table.replace({r" ± ": "\u00a0±\u00a0", r" → ": "\u00a0→\u00a0"}, regex=True)
    padding = "padding: 0.25em 0.6em 0.25em 0; vertical-align: top"
    if one_line or small:
        padding = "padding: 0.2em 0.5em 0.2em 0; vertical-align: top; font-size: 0.9em"
    first = "white-space: nowrap" if one_line else f"min-width: {first_column_em:g}em"
    return report_table(table, counts=counts, decimals=decimals).set_table_styles(
        [
            {"selector": "th", "props": padding},
            {"selector": "td", "props": padding},
            {"selector": "td.col0", "props": first},
        ]
    )


def number_text(value: object, digits: int = 0) -> str:
    """A number as text with ``digits`` decimals, thousands separated (``1,260``); a missing
    one (None, NaN) as :data:`MISSING`; text as it is."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return MISSING
    if isinstance(value, (int, float, np.number)):
        return f"{float(value):,.{digits}f}"
    return str(value)
