"""Table I's page: the answer table, the figure, the generated sentences, the provenance."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd

from nucstudy.study.table1_provenance import provenance_table
from nucstudy.study.table1_report import (
    DEFECT_MARK,
    PROPOSED,
    PUBLISHED,
    answer_table,
    defect_warning,
    frozen_augmentation_rows,
    interval_sentence,
    order_sentences,
    plot_answer,
    protocol_sentences,
    training_end_sentences,
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


def _two_seeds() -> pd.DataFrame:
    """consep with two seeds of the proposed model and of HoVer-Net (the second HoVer-Net
    run 300 steps shorter), the second Mask R-CNN seed pending."""
    done = {"status": "done", "data set": "consep", "steps": 5000.0, "train minutes": 150.0}
    runs = [
        (PROPOSED, 0, 0.34, "[0.31, 0.37]", 0.60),
        (PROPOSED, 1, 0.36, "[0.33, 0.39]", 0.64),
        ("HoVer-Net", 0, 0.25, "[0.20, 0.30]", 0.10),
        ("HoVer-Net", 1, 0.27, "[0.22, 0.32]", 0.20),
        ("Mask R-CNN", 0, 0.30, "[0.26, 0.34]", 0.30),
    ]
    rows = [
        {**done, "method": m, "seed": s, "mPQ+": mpq, "mPQ+ 95% CI": ci, "R²": r2}
        for m, s, mpq, ci, r2 in runs
    ]
    rows[3]["steps"] = 4700.0
    rows.append({"data set": "consep", "method": "Mask R-CNN", "seed": 1,
                 "status": "pending: not scored yet"})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_answer_table_puts_ours_beside_the_papers_values():
    table = answer_table(_rows()).set_index(["data set", "method"])
    assert list(table.index[:3]) == [("paper (CoNIC)", m) for m in PUBLISHED]
    assert table.loc[("paper (CoNIC)", "HoVer-Net"), "mPQ+"] == "0.2956"
    assert table.loc[("consep", PROPOSED), ["mPQ+", "mPQ+ 95% CI", "seeds"]].tolist() == [
        "0.3400",
        "[0.31, 0.37]",
        "1",
    ]
    assert table.loc[("consep", "Mask R-CNN"), "mPQ+"] == "not trained here"
    assert table.loc[("consep", "Mask R-CNN"), ["R²", "seeds"]].tolist() == ["–", "–"]
    assert table.loc[("consep", PROPOSED), "steps"] == "5,000"
    assert table.loc[("synthetic", PROPOSED), "train min"] == "–"
    assert len(table) == 3 + len(_rows())


def test_the_answer_table_gives_mean_and_spread_over_seeds_beside_each_interval():
    table = answer_table(_two_seeds()).set_index(["data set", "method"])
    assert len(table) == 3 + 3  # one row per method, not per seed
    proposed = table.loc[("consep", PROPOSED)]
    assert proposed["mPQ+"] == "0.3500 ± 0.0141" and proposed["R²"] == "0.6200 ± 0.0283"
    assert proposed["mPQ+ 95% CI"] == "[0.31, 0.37]; [0.33, 0.39]"
    assert proposed["seeds"] == "2"
    assert table.loc[("consep", "HoVer-Net"), "steps"] == "4,700–5,000"
    assert table.loc[("consep", "Mask R-CNN"), ["seeds", "mPQ+"]].tolist() == ["1 of 2", "0.3000"]


def test_a_difference_is_called_real_only_beyond_twice_the_seed_spread():
    lines = order_sentences(_two_seeds())
    # means 0.35 and 0.26, pooled sd 0.0141: 0.09 is beyond 2 x 0.0141
    assert lines[0] == (
        "consep: the proposed model's mean mPQ+ over 2 seeds (0.350) is above HoVer-Net's "
        "over 2 (0.260); the difference (+0.090) is beyond 2 times the seed spread "
        "(pooled sd 0.014)."
    )
    assert lines[1].startswith("consep: the proposed model's mPQ+ (0.350) is above Mask R-CNN's")
    assert lines[1].endswith("(one seed of one of them: the seed spread is not measured).")
    noisy = _two_seeds()
    noisy.loc[noisy["method"] == "HoVer-Net", "mPQ+"] = [0.20, 0.40]  # sd 0.14
    assert "is within 2 times the seed spread" in order_sentences(noisy)[0]


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
        "intervals do not overlap (one seed of each: the seed spread is not measured).",
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


def test_provenance_names_each_seed_where_a_method_has_several():
    table = provenance_table(_two_seeds(), "consep")
    assert list(table.columns) == [
        f"{PROPOSED}, seed 0",
        f"{PROPOSED}, seed 1",
        "HoVer-Net, seed 0",
        "HoVer-Net, seed 1",
        "Mask R-CNN, seed 0",
        "Mask R-CNN, seed 1",
    ]
    assert table.loc["steps", "HoVer-Net, seed 1"] == "4,700"


def test_runs_trained_before_the_loader_fix_open_the_page_with_a_warning_and_a_mark():
    rows = _two_seeds()
    assert defect_warning(rows) == ""  # no column: runs from before it was recorded
    flagged = rows.assign(**{"augmentation each epoch": rows["method"] != "HoVer-Net"})
    warning = defect_warning(flagged)
    assert warning.startswith("```{warning}\n") and warning.endswith("\n```")
    assert "They are consep: HoVer-Net." in warning
    table = answer_table(flagged).set_index(["data set", "method"])
    assert table.loc[("consep", "HoVer-Net"), "mPQ+"].endswith(DEFECT_MARK)
    assert not table.loc[("consep", PROPOSED), "mPQ+"].endswith(DEFECT_MARK)
    (ax,) = plot_answer(flagged).axes
    labels = [label.get_text() for label in ax.get_yticklabels()]
    assert [label.endswith(DEFECT_MARK) for label in labels].count(True) == 1
    assert defect_warning(rows.assign(**{"augmentation each epoch": True})) == ""


def test_runs_stopped_while_improving_or_long_after_their_best_are_named():
    rows = _two_seeds().assign(**{"still improving": "no", "best epoch": 40.0, "epochs": 50.0})
    assert training_end_sentences(rows) == []
    rows.loc[0, "still improving"] = "yes"
    rows.loc[1, "best epoch"] = 10.0
    lines = training_end_sentences(rows)
    assert len(lines) == 2
    assert (
        f"{rows.loc[0, 'method']}, seed {rows.loc[0, 'seed']:.0f}, was still improving" in lines[0]
    )
    assert "best validation mPQ+ at epoch 10 of 50" in lines[1]
    unseeded = training_end_sentences(rows.drop(columns="seed"))
    assert unseeded[0].startswith(f"consep: {rows.loc[0, 'method']} was still improving")


def test_the_rows_trained_before_the_loader_fix_are_the_finished_ones_without_it():
    rows = _two_seeds()
    assert frozen_augmentation_rows(rows).empty  # not recorded: drawn each epoch
    flagged = rows.assign(**{"augmentation each epoch": rows["method"] != "HoVer-Net"})
    assert frozen_augmentation_rows(flagged)["method"].tolist() == ["HoVer-Net", "HoVer-Net"]


def test_the_figure_shows_one_point_per_seed_on_one_row_per_method():
    (ax,) = plot_answer(_two_seeds()).axes
    assert len(ax.get_yticklabels()) == 3
    assert len(ax.containers) == 5  # an error bar per finished run


def test_a_value_outside_its_interval_is_drawn_where_it_is():
    """A percentile interval of mPQ+ (a ratio of sums) may miss the whole test set's value."""
    rows = _two_seeds()
    rows.loc[0, "mPQ+"] = 0.30  # below its interval [0.31, 0.37]
    (ax,) = plot_answer(rows).axes
    (_, _, (bar,)) = ax.containers[0]
    assert np.allclose(bar.get_segments()[0][:, 0], [0.31, 0.37])
    assert any(np.allclose(line.get_xdata(), [0.30]) for line in ax.get_lines())


def test_the_protocol_sentence_tells_equal_compute_from_equal_epochs():
    equal = _two_seeds().assign(**{"budget min": 150.0, "threads": 1.0, "epochs": 50})
    assert protocol_sentences(equal) == [
        "consep: each method gets the same 150 minutes of training (1 thread each) on the CPU "
        "its step time was measured on: as many optimiser steps as its step time, measured "
        "before training, fits in them (its train min is the wall clock it took, which other "
        "work on the machine, or steps that grow slower as it learns, can lengthen)."
    ]
    timed, other = "Xeon (bf16; avx512_bf16)", "EPYC (float32; avx2)"
    moved = equal.assign(**{"step measured on": timed, "cpu": timed})
    moved.loc[moved["method"] == "HoVer-Net", "cpu"] = other
    moved.loc[moved["method"] == "Mask R-CNN", "cpu"] = "not recorded"
    (sentence,) = protocol_sentences(moved)
    assert f"measured on ({timed}):" in sentence
    assert sentence.endswith(
        "These runs trained their steps on another CPU or in another precision, so their "
        f"train min are that CPU's: HoVer-Net, seed 0 ({other}); HoVer-Net, seed 1 ({other})."
    )
    started = equal[equal["method"] != "HoVer-Net"].assign(
        status=lambda rows: rows["status"].where(rows["method"] == PROPOSED, "pending")
    )
    assert protocol_sentences(started)[0].endswith(f"can lengthen); finished so far: {PROPOSED}.")
    epochs = _rows()  # no budget: HoVer-Net and the proposed model 30 epochs each
    epochs.loc[epochs["method"] == "HoVer-Net", "epochs"] = 12.0
    assert protocol_sentences(epochs) == [
        "consep: trained in epochs, not in equal time (HoVer-Net 12; SE-Res U-Net + CA 30 "
        "epochs).",
        "synthetic: trained in epochs, not in equal time (SE-Res U-Net + CA 30 epochs).",
    ]
