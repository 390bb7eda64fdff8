"""The training-curve figure of several runs (the performance chapter's fast-path figure)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from nucstudy.study.plots import plot_histories  # noqa: E402


def _history(scale: float) -> pd.DataFrame:
    epochs = range(1, 6)
    return pd.DataFrame(
        {
            "epoch": list(epochs),
            **{t: [scale / e for e in epochs] for t in ("train_a", "train_b", "train_c")},
        }
    )


def test_groups_differ_in_line_style_and_two_panels_fit_the_text_column():
    histories = {"fast-0": _history(1.0), "fast-1": _history(1.1), "slow-0": _history(1.0)}
    group_of = {"fast-0": "bf16", "fast-1": "bf16", "slow-0": "float32"}
    fig = plot_histories(histories, group_of, ["train_a", "train_b", "train_c"])
    try:
        width, _ = fig.get_size_inches()
        assert width * 100 <= 690  # two panels a row: the book's column at 100 dpi, unshrunk
        visible = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in visible] == ["a", "b", "c"]
        assert not fig.axes[3].get_visible()  # the empty fourth place of the 2 x 2 grid
        styles = {line.get_color(): line.get_linestyle() for line in visible[0].get_lines()}
        assert len(styles) == 2 and len(set(styles.values())) == 2
        labels = [text.get_text() for text in fig.legends[0].get_texts()]
        assert labels == ["bf16", "float32"]
    finally:
        plt.close(fig)
