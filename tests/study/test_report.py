"""Tables as the book shows them: counts as integers, no row numbers, no NaN."""

from __future__ import annotations

import math

import pandas as pd

from nucstudy.study.report import MISSING, mean_std, report_table


def test_mean_std_gives_the_spread_only_with_several_values():
    assert mean_std([0.4, 0.42]) == "0.410 ± 0.014"
    assert mean_std([0.4, math.nan]) == "0.400"
    assert mean_std([0.41234], decimals=4) == "0.4123"
    assert mean_std([]) == mean_std([math.nan]) == MISSING


def test_report_table_shows_counts_as_integers_and_missing_values_as_a_dash():
    table = pd.DataFrame({"class": ["other", "epithelial"], "tp": [17.0, 1197.0],
                          "pq": [0.04837, math.nan]})  # fmt: skip
    html = report_table(table, counts=["tp", "not a column"], decimals=3).to_html()
    assert "1,197" in html and "17" in html and "17.0" not in html
    assert "0.048" in html and "0.04837" not in html
    assert "nan" not in html.lower() and MISSING in html
    assert ">0<" not in html and ">1<" not in html  # no row numbers


def test_report_table_shows_a_named_index_when_asked():
    table = pd.DataFrame({"pq": [0.5]}, index=pd.Index(["other"], name="class"))
    assert "other" in report_table(table, index=True).to_html()
    assert "other" not in report_table(table).to_html()
