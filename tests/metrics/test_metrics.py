"""Tests of nucstudy.metrics: hand-made cases for each rule, a slow reference on random maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_metrics import count as reference_count
from reference_metrics import reference_metrics
from sklearn.metrics import r2_score

from nucstudy.data import count_nuclei
from nucstudy.data.classes import CONIC, CONSEP
from nucstudy.metrics import (
    conic_metrics,
    match_counts,
    matching,
    overlap_table,
    panoptic_quality,
    r2_per_class,
)

EPS = 1e-6


def blank(n: int = 1, size: int = 16) -> np.ndarray:
    return np.zeros((n, size, size, 2), dtype=np.int32)


def paint(labels: np.ndarray, image: int, rows: slice, cols: slice, inst: int, cls: int):
    labels[image, rows, cols, 0] = inst
    labels[image, rows, cols, 1] = cls


# -- hand-made cases --------------------------------------------------------------------------


def test_iou_of_exactly_one_half_is_no_match_and_just_above_is():
    true, pred = blank(), blank()
    paint(true, 0, slice(0, 2), slice(0, 2), 1, 2)  # 4 px
    paint(pred, 0, slice(0, 1), slice(0, 2), 5, 2)  # 2 px inside: IoU 2/4 = 0.5
    stats = conic_metrics(pred, true, CONIC)["per_class"]["epithelial"]
    assert (stats["tp"], stats["fp"], stats["fn"]) == (0, 1, 1)
    assert stats["sum_iou"] == 0.0

    paint(true, 0, slice(4, 7), slice(0, 3), 2, 2)  # 9 px
    paint(pred, 0, slice(4, 6), slice(0, 3), 6, 2)  # 6 px inside: IoU 6/9 > 0.5
    stats = conic_metrics(pred, true, CONIC)["per_class"]["epithelial"]
    assert (stats["tp"], stats["fp"], stats["fn"]) == (1, 1, 1)
    assert stats["sum_iou"] == pytest.approx(6 / 9, abs=1e-15)


def test_formulas_with_the_challenge_epsilon():
    true, pred = blank(), blank()
    paint(true, 0, slice(0, 3), slice(0, 3), 1, 3)
    paint(pred, 0, slice(0, 2), slice(0, 3), 1, 3)  # IoU 6/9
    paint(pred, 0, slice(8, 10), slice(8, 10), 2, 3)  # a false positive
    result = conic_metrics(pred, true, CONIC)
    dq = 1 / (1 + 0.5 * 1 + 0.5 * 0 + EPS)
    sq = (6 / 9) / (1 + EPS)
    stats = result["per_class"]["lymphocyte"]
    assert stats["dq"] == pytest.approx(dq, abs=1e-12)
    assert stats["sq"] == pytest.approx(sq, abs=1e-12)
    assert result["pq_per_class"]["lymphocyte"] == pytest.approx(dq * sq, abs=1e-12)
    # five classes absent on both sides score 0 and still count in the mean
    assert result["pq_per_class"]["plasma"] == 0.0
    assert result["mpq+"] == pytest.approx(dq * sq / 6, abs=1e-12)


def test_empty_images_score_zero_pq_and_undefined_segmentation_scores():
    result = conic_metrics(blank(3), blank(3), CONIC)
    assert result["mpq+"] == 0.0
    assert result["pq"] == 0.0
    assert result["r2"] == 1.0  # constant (zero) truth predicted exactly
    assert math.isnan(result["aji"]) and math.isnan(result["dice"])
    assert math.isnan(result["mpq_per_image"])
    assert result["per_image"]["pq"].tolist() == [0.0, 0.0, 0.0]


def test_an_empty_image_lowers_the_mean_pq_but_not_the_pooled_mpq():
    true, pred = blank(2), blank(2)
    paint(true, 0, slice(0, 4), slice(0, 4), 1, 1)
    paint(pred, 0, slice(0, 4), slice(0, 4), 1, 1)
    result = conic_metrics(pred, true, CONIC)
    perfect = (1 / (1 + EPS)) * (1 / (1 + EPS))
    assert result["pq"] == pytest.approx(perfect / 2, abs=1e-12)
    assert result["pq_per_class"]["neutrophil"] == pytest.approx(perfect, abs=1e-12)
    assert result["mpq_per_image"] == pytest.approx(perfect, abs=1e-12)  # image 1 skipped


def test_missing_classes_pooled_over_the_data_set():
    true, pred = blank(2), blank(2)
    paint(true, 0, slice(0, 4), slice(0, 4), 1, 4)  # plasma only in image 0
    paint(pred, 1, slice(0, 4), slice(0, 4), 1, 4)  # predicted only in image 1
    stats = conic_metrics(pred, true, CONIC)["per_class"]["plasma"]
    assert (stats["tp"], stats["fp"], stats["fn"]) == (0, 1, 1)


def test_a_nucleus_painted_with_two_classes_is_two_objects():
    true, pred = blank(), blank()
    paint(true, 0, slice(0, 2), slice(0, 5), 1, 2)  # 10 px epithelial
    paint(pred, 0, slice(0, 2), slice(0, 5), 9, 2)
    pred[0, 0:2, 3:5, 1] = 6  # 4 of its pixels painted connective
    result = conic_metrics(pred, true, CONIC)
    epi, con = result["per_class"]["epithelial"], result["per_class"]["connective"]
    assert (epi["tp"], epi["fp"], epi["fn"]) == (1, 0, 0)
    assert epi["sum_iou"] == pytest.approx(0.6, abs=1e-15)
    assert (con["tp"], con["fp"], con["fn"]) == (0, 1, 0)
    # class-agnostic PQ sees one perfectly matched nucleus
    assert result["per_image"]["pq"][0] == pytest.approx(1 / (1 + EPS) ** 2, abs=1e-12)


def test_pixels_of_class_zero_count_for_pq_but_for_no_class():
    true, pred = blank(), blank()
    paint(true, 0, slice(0, 2), slice(0, 4), 1, 3)
    paint(pred, 0, slice(0, 2), slice(0, 4), 1, 3)
    pred[0, 0, 0:4, 1] = 0  # half the nucleus without a class
    result = conic_metrics(pred, true, CONIC)
    stats = result["per_class"]["lymphocyte"]  # IoU 4/8 in class 3: no match
    assert (stats["tp"], stats["fp"], stats["fn"], stats["sum_iou"]) == (0, 1, 1, 0.0)
    assert result["per_image"]["pq"][0] == pytest.approx(1 / (1 + EPS) ** 2)


def shuffled_ids(labels: np.ndarray, seed: int) -> np.ndarray:
    """The same segmentation with instance ids mapped to large, non-contiguous, shuffled ids."""
    rng = np.random.default_rng(seed)
    out = labels.astype(np.int64)
    ids = np.unique(out[..., 0])
    new = np.concatenate([[0], rng.choice(np.arange(1, 2**40, 2**20), ids.size, replace=False)])
    new = new[: ids.size] if ids[0] == 0 else new[1:]
    out[..., 0] = new[np.searchsorted(ids, out[..., 0])]
    return out


def random_labels(rng: np.random.Generator, n: int, size: int, n_classes: int) -> np.ndarray:
    """Rectangles with random (possibly repeated, non-contiguous) ids and classes; some
    painted with two classes, some with class 0, overlapping ones cut each other."""
    labels = np.zeros((n, size, size, 2), dtype=np.int64)
    for image in range(n):
        for j in range(rng.integers(0, 9)):
            r, c = rng.integers(0, size, 2)
            h, w = rng.integers(1, 7, 2)
            inst = int(rng.choice([j + 1, rng.integers(1, 50), rng.integers(1, 2**31 - 1)]))
            cls = int(rng.integers(1, n_classes)) if rng.random() > 0.05 else 0
            labels[image, r : r + h, c : c + w] = inst, cls
            if rng.random() < 0.25:
                labels[image, r : r + h // 2 + 1, c : c + w, 1] = rng.integers(1, n_classes)
    return labels


def perturbed(rng: np.random.Generator, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """A prediction near ``labels``: shifted, eroded at random pixels, ids renamed, some
    classes swapped, so that IoUs fall on both sides of 0.5."""
    pred = labels.copy()
    for image in range(len(pred)):
        pred[image] = np.roll(pred[image], rng.integers(-1, 2), axis=int(rng.integers(0, 2)))
        pred[image][rng.random(pred.shape[1:3]) < 0.15] = 0
        swap = rng.random(pred.shape[1:3]) < 0.05
        pred[image][swap & (pred[image, ..., 0] > 0), 1] = rng.integers(1, n_classes)
    return shuffled_ids(pred, int(rng.integers(0, 1000)))


def test_non_contiguous_ids_give_the_same_scores(synthetic_small):
    true = synthetic_small.labels[:4]
    pred = np.roll(true, 1, axis=2)
    reference = conic_metrics(pred, true, CONIC)
    renamed = conic_metrics(shuffled_ids(pred, 1), shuffled_ids(true, 2), CONIC)
    for key in ("mpq+", "pq", "r2", "aji", "dice", "mpq_per_image"):
        assert renamed[key] == pytest.approx(reference[key], abs=1e-12)
    for name, stats in reference["per_class"].items():
        assert renamed["per_class"][name] == pytest.approx(stats, abs=1e-12)  # sum order


def test_overlap_table_same_for_any_chunk_size_and_reports_original_ids():
    rng = np.random.default_rng(4)
    true = random_labels(rng, 5, 12, 7)
    pred = perturbed(rng, true, 7)
    whole = overlap_table(pred, true, CONIC).to_frame()
    one_by_one = overlap_table(pred, true, CONIC, chunk=1).to_frame()
    assert whole.equals(one_by_one)
    assert set(whole["pred_id"]) - {0} == set(np.unique(pred[..., 0])) - {0}
    assert whole["pixels"].sum() == np.count_nonzero((true[..., 0] > 0) | (pred[..., 0] > 0))


def test_ranked_ids_give_the_same_table_and_a_hopeless_key_is_refused(monkeypatch):
    rng = np.random.default_rng(8)
    true = random_labels(rng, 3, 10, 7)
    pred = perturbed(rng, true, 7)
    for labels in (true, pred):  # sparse ids, but small enough for the direct key
        labels[..., 0] = 97 * np.unique(labels[..., 0], return_inverse=True)[1].reshape(3, 10, 10)
    direct = overlap_table(pred, true, CONIC).to_frame()
    key_size = 3 * (int(true[..., 0].max()) + 1) * (int(pred[..., 0].max()) + 1) * 49
    monkeypatch.setattr(matching, "_INT64_SAFE", key_size)  # too big now: ranks are used
    assert overlap_table(pred, true, CONIC).to_frame().equals(direct)
    monkeypatch.setattr(matching, "_INT64_SAFE", 10)
    with pytest.raises(ValueError, match="too many distinct instance ids"):
        overlap_table(pred, true, CONIC)


def test_match_counts_shapes_and_agnostic_matching():
    true, pred = blank(2), blank(2)
    paint(true, 1, slice(0, 4), slice(0, 4), 3, 1)
    paint(pred, 1, slice(0, 4), slice(0, 4), 8, 2)  # right nucleus, wrong class
    table = overlap_table(pred, true, CONIC)
    agnostic = match_counts(table, 1, by_class=False)
    per_class = match_counts(table, CONIC.n_classes, by_class=True)
    assert agnostic.tp.shape == (2, 1) and per_class.tp.shape == (2, 7)
    assert agnostic.tp[:, 0].tolist() == [0, 1]
    assert per_class.tp.sum() == 0
    assert per_class.fn[1].tolist() == [0, 1, 0, 0, 0, 0, 0]
    assert per_class.fp[1].tolist() == [0, 0, 1, 0, 0, 0, 0]


def test_panoptic_quality_of_nothing_is_zero():
    dq, sq, pq = panoptic_quality(0, 0, 0, 0.0)
    assert (dq, sq, pq) == (0.0, 0.0, 0.0)


def test_aji_and_dice_by_hand():
    true, pred = blank(), blank()
    paint(true, 0, slice(0, 4), slice(0, 4), 1, 1)  # 16 px
    paint(true, 0, slice(8, 10), slice(8, 10), 2, 1)  # 4 px, missed
    paint(pred, 0, slice(0, 4), slice(0, 2), 1, 1)  # 8 px inside nucleus 1
    paint(pred, 0, slice(12, 13), slice(12, 15), 2, 1)  # 3 px false positive
    result = conic_metrics(pred, true, CONIC)
    assert result["aji"] == pytest.approx(8 / (16 + 4 + 3))
    assert result["dice"] == pytest.approx(2 * 8 / (20 + 11))


@pytest.mark.parametrize(("left_id", "right_id", "expected"), [(1, 2, 8 / 24), (2, 1, 8 / 32)])
def test_aji_ties_go_to_the_lower_predicted_id(left_id, right_id, expected):
    true, pred = blank(), blank()
    paint(true, 0, slice(0, 2), slice(2, 6), 1, 1)  # T1, 8 px
    paint(true, 0, slice(0, 2), slice(6, 10), 2, 1)  # T2, 8 px
    paint(pred, 0, slice(0, 2), slice(0, 4), left_id, 1)  # 4 px in T1: IoU 4/12
    paint(pred, 0, slice(0, 2), slice(4, 8), right_id, 1)  # 4 px in T1, 4 in T2: IoU 4/12
    # T2 takes the right prediction; if T1 takes it too, the left one is unpaired
    assert conic_metrics(pred, true, CONIC)["aji"] == pytest.approx(expected)


# -- R² ---------------------------------------------------------------------------------------


def test_r2_constant_columns_follow_scikit_learn():
    true = np.array([[3, 0], [3, 1], [3, 2]])
    exact = r2_per_class(true, true.copy())
    off = r2_per_class(true, true + np.array([[1, 0]]))
    assert exact.tolist() == [1.0, 1.0]
    assert off[0] == 0.0 and off[1] == 1.0
    for pred in (true, true + [[1, 0]]):
        for k in range(2):
            assert r2_per_class(true, pred)[k] == r2_score(true[:, k], pred[:, k])


def test_r2_of_one_patch_is_undefined():
    assert np.isnan(r2_per_class(np.array([[1, 2]]), np.array([[1, 3]]))).all()


@settings(max_examples=80, deadline=None)
@given(
    st.integers(2, 12).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.integers(0, 6), min_size=3, max_size=3), min_size=n, max_size=n),
            st.lists(st.lists(st.integers(0, 6), min_size=3, max_size=3), min_size=n, max_size=n),
        )
    )
)
def test_r2_equals_scikit_learn(pair):
    true, pred = (np.array(x) for x in pair)
    ours = r2_per_class(true, pred)
    for k in range(3):
        assert ours[k] == pytest.approx(r2_score(true[:, k], pred[:, k]), abs=1e-12)


def test_r2_uses_central_counts(synthetic_small):
    true = synthetic_small.labels
    pred = np.roll(true, 3, axis=1)
    result = conic_metrics(pred, true, CONIC)
    t_counts, p_counts = count_nuclei(true, CONIC, 224), count_nuclei(pred, CONIC, 224)
    for k, name in enumerate(CONIC.foreground_names):
        expected = r2_score(t_counts[:, k], p_counts[:, k])
        assert result["r2_per_class"][name] == pytest.approx(expected, abs=1e-12)
    assert result["r2"] == pytest.approx(np.mean(list(result["r2_per_class"].values())))


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "true", "message"),
    [
        (blank(1, 8), blank(1, 9), "differ in shape"),
        (blank(1, 8)[..., :1], blank(1, 8)[..., :1], "N x H x W x 2"),
        (blank(1, 8)[0], blank(1, 8)[0], "N x H x W x 2"),
        (blank(1, 8).astype(float), blank(1, 8), "integer dtype"),
        (np.full((1, 8, 8, 2), 7, np.int32), blank(1, 8), "class id 7"),
        (np.full((1, 8, 8, 2), -1, np.int32), blank(1, 8), "negative instance id"),
    ],
)
def test_bad_input_is_one_clear_value_error(pred, true, message):
    with pytest.raises(ValueError, match=message):
        conic_metrics(pred, true, CONIC)


def test_class_ids_are_checked_against_the_given_scheme():
    labels = blank(1, 8)
    paint(labels, 0, slice(0, 2), slice(0, 2), 1, 6)  # connective in CoNIC, unknown in CoNSeP
    conic_metrics(labels, labels, CONIC)
    with pytest.raises(ValueError, match="out of range for scheme 'consep'"):
        conic_metrics(labels, labels, CONSEP)


# -- against the slow reference ---------------------------------------------------------------


def assert_matches_reference(pred: np.ndarray, true: np.ndarray, scheme) -> None:
    ours = conic_metrics(pred, true, scheme)
    ref = reference_metrics(pred, true, scheme.n_classes)
    assert ours["mpq+"] == pytest.approx(ref["mpq+"], abs=1e-9)
    assert ours["pq"] == pytest.approx(ref["pq"], abs=1e-9)
    for k, name in enumerate(scheme.foreground_names):
        stats = ours["per_class"][name]
        for key in ("tp", "fp", "fn"):
            assert stats[key] == ref[key][k]
        for key in ("sum_iou", "dq", "sq"):
            assert stats[key] == pytest.approx(ref[key][k], abs=1e-9)
        assert ours["pq_per_class"][name] == pytest.approx(ref["pq_per_class"][k], abs=1e-9)
    per_image = ours["per_image"]
    for column, key in (
        ("pq", "pq_per_image"),
        ("mpq_per_image", "mpq_per_image"),
        ("aji", "aji_per_image"),
        ("dice", "dice_per_image"),
    ):
        np.testing.assert_allclose(per_image[column], ref[key], rtol=0, atol=1e-9)
    crop = 7 * true.shape[1] // 8
    t_counts = reference_count(true, scheme.n_classes, crop)
    p_counts = reference_count(pred, scheme.n_classes, crop)
    if len(true) >= 2:
        expected = np.mean(
            [r2_score(t_counts[:, k], p_counts[:, k]) for k in range(len(t_counts[0]))]
        )
        assert ours["r2"] == pytest.approx(expected, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3),
    size=st.integers(4, 14),
    related=st.booleans(),
    consep=st.booleans(),
)
def test_matches_the_slow_reference_on_random_maps(seed, n, size, related, consep):
    scheme = CONSEP if consep else CONIC
    rng = np.random.default_rng(seed)
    true = random_labels(rng, n, size, scheme.n_classes)
    if related:
        pred = perturbed(rng, true, scheme.n_classes)
    else:
        pred = random_labels(rng, n, size, scheme.n_classes)
    assert_matches_reference(pred, true, scheme)


def test_matches_the_slow_reference_on_synthetic_patches(synthetic_small):
    true = synthetic_small.labels[:2, 64:128, 64:128]
    rng = np.random.default_rng(0)
    pred = perturbed(rng, true.astype(np.int64), CONIC.n_classes)
    assert_matches_reference(pred, true, CONIC)
