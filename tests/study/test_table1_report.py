"""Table I's page: the answer table, the figure, the generated sentences, the provenance."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd

from nucstudy.study.table1_report import (
    PROPOSED,
    PUBLISHED,
    answer_table,
    interval_sentence,
    order_sentences,
    plot_answer,
    provenance_table,
)

matplotlib.use("Agg")


def _rows() -> pd.DataFrame:
    """Table I rows of two data sets: consep with all three methods (Mask R-CNN not trained
    there), synthetic with the proposed model alone."""
    done = {"status": "done", "epochs": 30.0, "steps": 5000.0, "train minutes": 41.6,
            "seed": 0.0, "bf16": True, "device": "cpu"}  # fmt: skip
    return pd.DataFrame(
        [
            {**done, "data set": "consep", "method": "HoVer-Net", "mPQ+": 0.25,
             "mPQ+ 95% CI": "[0.20, 0.30]", "R²": 0.1, "R² 95% CI": "[0.0, 0.2]"},
            {"data set": "consep", "method": "Mask R-CNN",
             "status": "not trained here: about 90 min measured on this machine"},
            {**done, "data set": "consep", "method": PROPOSED, "mPQ+": 0.34,
             "mPQ+ 95% CI": "[0.31, 0.37]", "R²": 0.6, "R² 95% CI": "[0.5, 0.7]"},
            {**done, "data set": "synthetic", "method": PROPOSED, "mPQ+": 0.41,
             "mPQ+ 95% CI": "[0.38, 0.44]", "R²": 0.66, "R² 95% CI": "[0.6, 0.7]",
             "train minutes": math.nan},
        ]
    )  # fmt: skip


def test_the_answer_table_puts_ours_beside_the_papers_values():
    table = answer_table(_rows()).set_index(["data set", "method"])
    assert list(table.index[:3]) == [("paper (CoNIC)", m) for m in PUBLISHED]
    assert table.loc[("paper (CoNIC)", "HoVer-Net"), "mPQ+ [95% CI]"] == "0.2956"
    assert table.loc[("consep", PROPOSED), "mPQ+ [95% CI]"] == "0.3400 [0.31, 0.37]"
    assert table.loc[("consep", "Mask R-CNN"), "mPQ+ [95% CI]"] == "not trained here"
    assert table.loc[("consep", "Mask R-CNN"), "R² [95% CI]"] == "–"
    assert table.loc[("consep", PROPOSED), "steps"] == "5,000"
    assert table.loc[("synthetic", PROPOSED), "train min"] == "–"
    assert len(table) == 3 + len(_rows())


def test_the_interval_sentence_names_the_unit_the_rows_were_drawn_over():
    rows = _rows().assign(**{"CI over": "sources"})
    assert interval_sentence(rows).startswith("The 95 % intervals are a bootstrap over sources:")
    rows.loc[rows["data set"] == "synthetic", "CI over"] = "patches"
    assert interval_sentence(rows) == (
        "The 95 % intervals are a bootstrap over different units (consep: over sources; "
        "synthetic: over patches)."
    )
    assert interval_sentence(rows[rows["status"] != "done"]) == ""


def test_the_sentences_say_the_order_and_whether_the_intervals_overlap():
    lines = order_sentences(_rows())
    assert lines == [
        "consep: the proposed model's mPQ+ (0.340) is above HoVer-Net's (0.250); their 95 % "
        "intervals do not overlap.",
        "consep: Mask R-CNN has no score (not trained here: about 90 min measured on this "
        "machine).",
    ]
    overlapping = _rows().assign(**{"mPQ+ 95% CI": "[0.2, 0.4]"})
    assert "intervals overlap" in order_sentences(overlapping)[0]


def test_provenance_shows_counts_as_integers_and_drops_fields_nobody_has():
    table = provenance_table(_rows(), "consep")
    assert list(table.columns) == ["HoVer-Net", "Mask R-CNN", PROPOSED]
    assert table.loc["epochs", PROPOSED] == "30" and table.loc["seed", "HoVer-Net"] == "0"
    assert table.loc["train minutes", PROPOSED] == "41.6"
    assert table.loc["epochs", "Mask R-CNN"] == "–"
    assert table.loc["bf16", PROPOSED] == "True"
    assert "commit" not in table.index  # no row has it


def test_the_figure_has_one_row_per_finished_run():
    (ax,) = plot_answer(_rows()).axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [
        "consep: HoVer-Net",
        "consep: SE-Res U-Net + CA",
        "synthetic: SE-Res U-Net + CA",
    ]
