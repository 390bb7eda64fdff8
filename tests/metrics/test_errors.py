"""Tests of the failure analysis in nucstudy.metrics, on small hand-built maps (CoNSeP classes).

CoNSeP class ids: 1 other, 2 inflammatory, 3 epithelial, 4 spindle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nucstudy.data.classes import CONIC, CONSEP
from nucstudy.metrics import (
    FAILURES,
    confusion_of_matched,
    conic_metrics,
    detection_errors,
    patch_errors,
)

SIZE = 64
NAMES = list(CONSEP.foreground_names)
ERRORS = ["merged", "split", "missed_faint", "missed", "spurious", "wrong_class"]


def blank(n: int = 1) -> np.ndarray:
    return np.zeros((n, SIZE, SIZE, 2), dtype=np.int32)


def rect(labels: np.ndarray, rows: slice, cols: slice, inst: int, cls: int, image: int = 0):
    labels[image, rows, cols] = inst, cls


def disc(labels: np.ndarray, centre: tuple[int, int], radius: int, inst: int, cls: int):
    r, c = np.ogrid[:SIZE, :SIZE]
    labels[0, (r - centre[0]) ** 2 + (c - centre[1]) ** 2 <= radius**2] = inst, cls


def three_discs() -> np.ndarray:
    """Discs of class other, inflammatory and epithelial."""
    labels = blank()
    disc(labels, (12, 12), 6, 1, 1)
    disc(labels, (12, 45), 7, 2, 2)
    disc(labels, (45, 30), 8, 3, 3)
    return labels


def renamed(labels: np.ndarray) -> np.ndarray:
    """The same nuclei under other (sparse) instance ids."""
    out = labels.copy()
    out[..., 0] *= 10
    return out


def only_errors(frame: pd.DataFrame) -> dict[str, int]:
    """The non-zero error counts of the first row of a patch_errors frame."""
    return {c: int(frame[c].iloc[0]) for c in ERRORS if frame[c].iloc[0]}


# -- one failure at a time ---------------------------------------------------------------------


def test_a_perfect_prediction_has_a_diagonal_confusion_and_no_errors():
    true = three_discs()
    pred = renamed(true)
    confusion = confusion_of_matched(pred, true, CONSEP)
    assert confusion.index.name == "true" and confusion.columns.name == "predicted"
    assert list(confusion.index) == NAMES and list(confusion.columns) == NAMES
    assert (confusion.to_numpy() == np.diag([1, 1, 1, 0])).all()
    assert confusion.dtypes.map(lambda d: np.issubdtype(d, np.integer)).all()

    errors = detection_errors(pred, true, "consep")
    assert errors.index.name == "class" and list(errors.index) == NAMES
    assert errors["matched"].tolist() == [1, 1, 1, 0]
    assert errors[["missed", "spurious", "wrong_class"]].to_numpy().sum() == 0

    patches = patch_errors(pred, true, CONSEP, images=np.full((1, SIZE, SIZE, 3), 99, np.uint8))
    row = patches.iloc[0]
    assert (row["patch"], row["true"], row["predicted"], row["matched"]) == (0, 3, 3, 3)
    assert only_errors(patches) == {}
    assert row["failure"] == "none"
    assert row["pq"] == pytest.approx(1.0, abs=1e-5)


def test_a_wrong_class_is_off_the_diagonal():
    true = three_discs()
    pred = renamed(true)
    pred[..., 1][pred[..., 0] == 20] = 4  # the inflammatory nucleus predicted spindle
    confusion = confusion_of_matched(pred, true, CONSEP)
    assert confusion.loc["inflammatory", "spindle"] == 1
    assert confusion.loc["inflammatory", "inflammatory"] == 0
    assert confusion.to_numpy().sum() == 3

    errors = detection_errors(pred, true, CONSEP)
    assert errors.loc["inflammatory", ["correct_class", "wrong_class"]].tolist() == [0, 1]
    assert errors.loc["spindle", ["predicted", "spurious", "true"]].tolist() == [1, 0, 0]

    patches = patch_errors(pred, true, CONSEP)
    assert only_errors(patches) == {"wrong_class": 1}
    assert patches["failure"].iloc[0] == "wrong class"


def test_the_class_of_a_nucleus_is_its_majority_class_ties_to_the_lower_id():
    true, pred = blank(), blank()
    rect(true, slice(0, 10), slice(0, 10), 1, 3)
    rect(pred, slice(0, 10), slice(0, 10), 1, 4)
    pred[0, 0:5, 0:10, 1] = 2  # 50 px inflammatory, 50 px spindle: inflammatory
    rect(true, slice(20, 30), slice(0, 10), 2, 1)
    rect(pred, slice(20, 30), slice(0, 10), 2, 4)
    pred[0, 20:24, 0:10, 1] = 3  # 40 px epithelial, 60 px spindle: spindle
    confusion = confusion_of_matched(pred, true, CONSEP)
    assert confusion.loc["epithelial", "inflammatory"] == 1
    assert confusion.loc["other", "spindle"] == 1
    assert confusion.to_numpy().sum() == 2


def merged_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two touching 10 x 10 true nuclei under one 10 x 20 prediction (IoU 0.5 each: no
    match), and one matched nucleus elsewhere."""
    true, pred = blank(), blank()
    rect(true, slice(10, 20), slice(10, 20), 1, 2)
    rect(true, slice(10, 20), slice(20, 30), 2, 2)
    rect(pred, slice(10, 20), slice(10, 30), 7, 2)
    rect(true, slice(40, 50), slice(40, 50), 3, 3)
    rect(pred, slice(40, 50), slice(40, 50), 8, 3)
    return pred, true


def test_a_prediction_over_two_touching_nuclei_is_one_merge_not_misses_or_spurious():
    pred, true = merged_pair()
    patches = patch_errors(pred, true, CONSEP)
    row = patches.iloc[0]
    assert (row["true"], row["predicted"], row["matched"]) == (3, 2, 1)
    assert only_errors(patches) == {"merged": 1}
    assert row["failure"] == "merged neighbours"
    # the per-class table still sees two misses and one unmatched prediction
    inflammatory = detection_errors(pred, true, CONSEP).loc["inflammatory"]
    assert inflammatory[["true", "missed", "predicted", "spurious"]].tolist() == [2, 2, 1, 1]


def test_a_matched_prediction_that_also_covers_a_small_neighbour_is_a_merge():
    true, pred = blank(), blank()
    rect(true, slice(0, 10), slice(0, 10), 1, 1)  # 100 px
    rect(true, slice(0, 2), slice(10, 12), 2, 1)  # 4 px beside it
    rect(pred, slice(0, 10), slice(0, 10), 5, 2)  # matches nucleus 1 (IoU 100/103) ...
    rect(pred, slice(0, 2), slice(10, 11), 5, 2)  # ... and covers 3 of the 4 px of nucleus 2
    pred[0, 0, 11] = 5, 2
    patches = patch_errors(pred, true, CONSEP)
    assert patches["matched"].iloc[0] == 1
    assert only_errors(patches) == {"merged": 1}  # not missed, and not a wrong class


def test_a_merged_nucleus_is_not_also_split():
    true, pred = blank(), blank()
    rect(true, slice(0, 10), slice(0, 10), 1, 1)
    rect(true, slice(0, 10), slice(10, 20), 2, 1)
    rect(pred, slice(0, 10), slice(0, 16), 5, 1)  # nucleus 1 (IoU 100/160) and 60 % of 2
    rect(pred, slice(0, 10), slice(16, 20), 6, 1)  # the other 40 % of nucleus 2
    patches = patch_errors(pred, true, CONSEP)
    assert patches["matched"].iloc[0] == 1
    assert only_errors(patches) == {"merged": 1, "spurious": 1}


def test_a_nucleus_cut_in_two_is_one_split():
    true, pred = blank(), blank()
    rect(true, slice(10, 20), slice(10, 30), 1, 3)  # 200 px
    rect(pred, slice(10, 20), slice(10, 20), 4, 3)  # two halves: IoU 0.5 each, no match
    rect(pred, slice(10, 20), slice(20, 30), 5, 3)
    patches = patch_errors(pred, true, CONSEP)
    assert patches["matched"].iloc[0] == 0
    assert only_errors(patches) == {"split": 1}
    assert patches["failure"].iloc[0] == "split nucleus"


def test_a_split_with_one_matched_piece_leaves_no_spurious_fragment():
    true, pred = blank(), blank()
    rect(true, slice(10, 20), slice(10, 30), 1, 3)  # 200 px
    rect(pred, slice(10, 20), slice(10, 24), 4, 3)  # 70 %: matched
    rect(pred, slice(10, 20), slice(24, 30), 5, 3)  # 30 % > 25 %: a fragment
    patches = patch_errors(pred, true, CONSEP)
    assert patches["matched"].iloc[0] == 1
    assert only_errors(patches) == {"split": 1}
    # a fragment of 20 % is not a split but a spurious nucleus
    pred[0, 10:20, 24:26] = 4, 3
    assert only_errors(patch_errors(pred, true, CONSEP)) == {"spurious": 1}


def missed_case(missed_rgb: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """Two matched nuclei of grey 50 and 100 (darkness 205 and 155, median 180) and one missed
    nucleus of colour ``missed_rgb`` on a pale background."""
    true, pred = blank(), blank()
    images = np.full((1, SIZE, SIZE, 3), 230, np.uint8)
    for inst, (rows, grey) in enumerate([(slice(0, 8), 50), (slice(20, 28), 100)], start=1):
        rect(true, rows, slice(0, 8), inst, 1)
        rect(pred, rows, slice(0, 8), inst, 1)
        images[0, rows, 0:8] = grey
    rect(true, slice(40, 48), slice(40, 48), 3, 2)
    images[0, 40:48, 40:48] = missed_rgb
    return pred, true, images


def test_a_pale_missed_nucleus_is_faint_a_dark_one_is_not():
    pale = missed_case((150, 200, 250))  # grey 200, darkness 55 < 180
    patches = patch_errors(*pale[:2], CONSEP, images=pale[2])
    assert only_errors(patches) == {"missed_faint": 1}
    assert patches["failure"].iloc[0] == "missed faint nucleus"

    dark = missed_case((0, 30, 60))  # grey 30, darkness 225 > 180
    patches = patch_errors(*dark[:2], CONSEP, images=dark[2])
    assert only_errors(patches) == {"missed": 1}
    assert patches["failure"].iloc[0] == "missed nucleus"

    at_median = missed_case((74, 75, 76))  # grey 75, darkness 180: not below the median
    assert only_errors(patch_errors(*at_median[:2], CONSEP, images=at_median[2])) == {"missed": 1}
    # grey = mean of R, G, B = 85, darkness 170: below the median of the *matched* nuclei
    # (180; luminance weights would give about 181, the median of all three 170)
    between = missed_case((25, 85, 145))
    assert only_errors(patch_errors(*between[:2], CONSEP, images=between[2])) == {
        "missed_faint": 1
    }


def test_without_images_every_missed_nucleus_is_missed():
    pred, true, _ = missed_case((150, 200, 250))
    patches = patch_errors(pred, true, CONSEP)
    assert only_errors(patches) == {"missed": 1}
    assert detection_errors(pred, true, CONSEP).loc["inflammatory", "missed"] == 1


def test_an_invented_nucleus_is_spurious():
    true = three_discs()
    pred = renamed(true)
    disc(pred, (50, 55), 5, 99, 4)
    patches = patch_errors(pred, true, CONSEP)
    assert only_errors(patches) == {"spurious": 1}
    assert patches["failure"].iloc[0] == "spurious nucleus"
    spindle = detection_errors(pred, true, CONSEP).loc["spindle"]
    assert spindle[["predicted", "spurious"]].tolist() == [1, 1]


def test_the_failure_is_the_largest_category_ties_to_the_earlier():
    pred, true = merged_pair()  # one merge
    rect(pred, slice(55, 60), slice(0, 5), 30, 1)  # one spurious: tie, merge comes first
    assert patch_errors(pred, true, CONSEP)["failure"].iloc[0] == "merged neighbours"
    rect(pred, slice(55, 60), slice(10, 15), 31, 1)  # two spurious
    patches = patch_errors(pred, true, CONSEP)
    assert only_errors(patches) == {"merged": 1, "spurious": 2}
    assert patches["failure"].iloc[0] == "spurious nucleus"
    assert set(patches["failure"]) <= {*FAILURES, "none"}


# -- tables that add up ------------------------------------------------------------------------


def test_the_normalised_confusion_rows_sum_to_one_and_empty_rows_are_nan():
    true = three_discs()
    pred = renamed(true)
    pred[..., 1][pred[..., 0] == 20] = 3
    disc(true, (50, 55), 5, 9, 2)  # a second inflammatory nucleus, matched and right
    disc(pred, (50, 55), 5, 90, 2)
    confusion = confusion_of_matched(pred, true, CONSEP, normalise=True)
    assert confusion.loc["inflammatory"].tolist() == [0.0, 0.5, 0.5, 0.0]
    sums = confusion.sum(axis=1, skipna=False)
    assert sums[["other", "inflammatory", "epithelial"]].tolist() == pytest.approx([1, 1, 1])
    assert confusion.loc["spindle"].isna().all()


def perturbed_synthetic(labels: np.ndarray) -> np.ndarray:
    """A prediction near ``labels``: shifted by 3 pixels, every third nucleus relabelled."""
    pred = np.roll(labels, 3, axis=2).astype(np.int64)
    relabel = (pred[..., 0] % 3 == 0) & (pred[..., 0] > 0)
    pred[..., 1][relabel] = pred[..., 1][relabel] % (CONIC.n_classes - 1) + 1
    return pred


def test_detection_errors_and_the_confusion_add_up(synthetic_small):
    true = synthetic_small.labels
    pred = perturbed_synthetic(true)
    errors = detection_errors(pred, true, CONIC)
    confusion = confusion_of_matched(pred, true, CONIC)
    assert list(errors.columns) == [
        "true",
        "matched",
        "missed",
        "predicted",
        "spurious",
        "correct_class",
        "wrong_class",
    ]
    assert errors["matched"].sum() > 0 and errors["wrong_class"].sum() > 0
    assert (errors["missed"] == errors["true"] - errors["matched"]).all()
    assert (errors["matched"] == errors["correct_class"] + errors["wrong_class"]).all()
    assert (confusion.sum(axis=1) == errors["matched"]).all()
    assert (confusion.sum(axis=0) == errors["predicted"] - errors["spurious"]).all()
    assert (np.diag(confusion.to_numpy()) == errors["correct_class"].to_numpy()).all()
    assert errors["true"].sum() == sum(
        np.unique(patch[..., 0]).size - 1 for patch in true
    )  # every nucleus of a validated map has a class

    patches = patch_errors(pred, true, CONIC, images=synthetic_small.images)
    for column in ("true", "predicted", "matched"):
        assert patches[column].sum() == errors[column].sum()
    pq = conic_metrics(pred, true, CONIC)["per_image"]["pq"]
    assert np.array_equal(patches["pq"].to_numpy(), pq.to_numpy())


def test_a_batch_adds_up_and_each_row_is_the_patch_alone():
    cases = [(renamed(three_discs()), three_discs()), merged_pair()]
    cases.append((renamed(three_discs()), three_discs()))
    cases[-1][0][..., 1][cases[-1][0][..., 0] == 30] = 1  # a wrong class
    split_true, split_pred = blank(), blank()
    rect(split_true, slice(10, 20), slice(10, 30), 1, 3)
    rect(split_pred, slice(10, 20), slice(10, 20), 4, 3)
    rect(split_pred, slice(10, 20), slice(20, 30), 5, 3)
    cases.append((split_pred, split_true))
    cases.append(missed_case((150, 200, 250))[:2])
    spurious = renamed(three_discs())
    disc(spurious, (50, 55), 5, 99, 4)
    cases.append((spurious, three_discs()))
    pred = np.concatenate([p for p, _ in cases])
    true = np.concatenate([t for _, t in cases])

    patches = patch_errors(pred, true, CONSEP)
    assert patches["patch"].tolist() == list(range(6))
    assert patches["failure"].tolist() == [
        "none",
        "merged neighbours",
        "wrong class",
        "split nucleus",
        "missed nucleus",
        "spurious nucleus",
    ]
    errors = detection_errors(pred, true, CONSEP)
    for column in ("true", "predicted", "matched", "wrong_class"):
        assert patches[column].sum() == errors[column].sum()
    # the merge hides 2 unmatched true nuclei and 1 prediction, the split 1 and 2
    assert patches["missed"].sum() + patches["missed_faint"].sum() == errors["missed"].sum() - 3
    assert patches["spurious"].sum() == errors["spurious"].sum() - 3
    pq = conic_metrics(pred, true, CONSEP)["per_image"]["pq"]
    assert np.array_equal(patches["pq"].to_numpy(), pq.to_numpy())

    for i, (p, t) in enumerate(cases):  # one H x W x 2 map at a time
        alone = patch_errors(p[0], t[0], CONSEP).drop(columns="patch")
        assert alone.iloc[0].equals(patches.drop(columns="patch").iloc[i])


# -- bad input ---------------------------------------------------------------------------------


def test_bad_input_raises_a_value_error():
    true = three_discs()
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_of_matched(true[:, :32], true, CONSEP)
    with pytest.raises(ValueError, match="differ in shape"):
        patch_errors(true, np.concatenate([true, true]), CONSEP)
    with pytest.raises(ValueError, match="N x H x W x 2"):
        detection_errors(true[..., 0], true[..., 0], CONSEP)
    with pytest.raises(ValueError, match="class map"):
        detection_errors(np.where(true == 3, 7, true), true, CONSEP)
    with pytest.raises(ValueError, match="images"):
        patch_errors(true, true, CONSEP, images=np.zeros((1, SIZE, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        patch_errors(true, true, CONSEP, images=np.zeros((1, SIZE, SIZE, 3), np.float32))
