"""Tables as the book shows them: counts as integers, no row numbers, no NaN."""

from __future__ import annotations

import math

import pandas as pd

from nucstudy.study.report import MISSING, mean_std, number_text, report_table, value_text


def test_mean_std_gives_the_spread_only_with_several_values():
    assert mean_std([0.4, 0.42]) == "0.410 ± 0.014"
    assert mean_std([0.4, math.nan]) == "0.400"
    assert mean_std([0.41234], decimals=4) == "0.4123"
    assert mean_std([]) == mean_std([math.nan]) == MISSING


def test_number_text_separates_thousands_and_keeps_text_and_missing_values_readable():
    assert number_text(1260.0) == "1,260"
    assert number_text(41.64, 1) == "41.6"
    assert number_text(math.nan) == number_text(None) == MISSING
    assert number_text("pending") == "pending"


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


def test_spaced_table_keeps_a_spread_on_one_line_and_spaces_the_columns():
    from nucstudy.study.report import spaced_table

    table = pd.DataFrame({"recipe": ["strong stain"], "PQ": ["0.322 ± 0.027"], "seeds": [3.0]})
    html = spaced_table(table, counts=["seeds"], first_column_em=10.5).to_html()
    assert "0.322\u00a0±\u00a00.027" in html and ">3<" in html
    assert "min-width: 10.5em" in html and "padding: 0.25em 0.6em" in html
    wide = spaced_table(table, one_line=True, small=True).to_html()
    assert "white-space: nowrap" in wide and "font-size: 0.9em" in wide


def test_value_text_writes_a_dict_as_a_reader_reads_it():
    assert value_text({"width": 16, "use_ca": False}) == "width 16, use_ca False"
    assert value_text({}) == "none"
    assert value_text(2e-3) == 2e-3 and value_text([20, 26]) == [20, 26]
