"""Tests of nucstudy.postprocess (each stage on two touching discs, then whole patches) and of
the challenge submission writer."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from skimage.segmentation import watershed

from nucstudy.data import count_nuclei, make_targets
from nucstudy.data.classes import CONIC
from nucstudy.metrics import conic_metrics
from nucstudy.postprocess import (
    Nuclei,
    WatershedParams,
    fill_holes,
    foreground_mask,
    hover_postprocess,
    hv_energy,
    markers_from_energy,
    nucleus_geometry,
    postprocess_batch,
    remove_small,
    segment_instances,
    to_conic_labels,
    type_map_of,
    vote_classes,
    watershed_instances,
)
from nucstudy.study.submission import (
    COUNTS_FILE,
    PREDICTIONS_FILE,
    read_submission,
    submission_counts,
    write_submission,
)

AT_20X = WatershedParams.at(0.5)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


@pytest.fixture(scope="module")
def discs():
    """Two touching discs of radius 8 px (centres 14 px apart), epithelial and lymphocyte."""
    rows, cols = np.mgrid[:40, :56]
    inst = np.zeros((40, 56), np.int32)
    inst[(rows - 20) ** 2 + (cols - 20) ** 2 <= 64] = 1
    inst[(rows - 20) ** 2 + (cols - 34) ** 2 <= 64] = 2
    cls = np.choose(inst, [0, 2, 3]).astype(np.int32)
    targets = make_targets(inst, cls)
    return inst, cls, targets["np"].astype(np.float32), targets["hv"]


# -- the stages, one at a time ----------------------------------------------------------------


def test_foreground_mask_thresholds_inclusively_and_drops_small_blobs(discs):
    inst, _, np_prob, _ = discs
    prob = np_prob * 0.5  # exactly at the threshold
    prob[0:2, 0:1] = 0.9  # a 2 px blob
    prob[0:3, 50:53] = 0.7  # a 9 px blob
    mask = foreground_mask(prob, threshold=0.5, min_px=3)
    assert mask.dtype == bool
    assert np.array_equal(mask[5:, :48], inst[5:, :48] > 0)
    assert not mask[0:2, 0:1].any() and mask[0:3, 50:53].all()
    assert not foreground_mask(prob, threshold=0.5, min_px=10)[0:3, 50:53].any()


def test_remove_small_keeps_components_of_exactly_min_px_and_renumbers():
    labels = np.array([[1, 1, 0, 7], [0, 0, 0, 7], [9, 9, 9, 0]])
    assert remove_small(labels, 3).tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]]
    assert remove_small(labels, 2).tolist() == [[1, 1, 0, 2], [0, 0, 0, 2], [3, 3, 3, 0]]
    assert remove_small(labels, 2).dtype == np.int32


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_fill_holes_equals_scipy(mask):
    assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_hv_energy_is_high_on_the_seam_and_low_at_the_centres(discs):
    inst, _, np_prob, hv = discs
    foreground = np_prob > 0
    energy = hv_energy(hv, foreground, AT_20X.sobel_ksize)
    assert energy.dtype == np.float32 and energy.shape == inst.shape
    assert energy.min() >= 0.0 and energy.max() <= 1.0
    assert not energy[~foreground].any()
    assert energy[20, 27] >= 0.4  # the seam between the discs (column 27)
    assert energy[20, 20] < 0.4 and energy[20, 34] < 0.4  # the centres


def test_hv_energy_needs_channel_0_horizontal(discs):
    inst, _, np_prob, hv = discs
    foreground = np_prob > 0
    swapped = hv_energy(hv[::-1], foreground, AT_20X.sobel_ksize)
    assert swapped[20, 20] >= 0.4 and swapped[20, 34] >= 0.4  # no low-energy centres
    split = segment_instances(np_prob, hv[::-1], AT_20X)
    assert max(iou(split == k, inst == k) for k in range(1, split.max() + 1)) < 0.9


def test_markers_are_one_core_per_disc(discs):
    inst, _, np_prob, hv = discs
    foreground = np_prob > 0
    energy = hv_energy(hv, foreground, AT_20X.sobel_ksize)
    markers = markers_from_energy(energy, foreground, 0.4, AT_20X.open_ksize, 3)
    assert markers.dtype == np.int32 and markers.max() == 2
    assert markers[20, 20] == 1 and markers[20, 34] == 2
    for marker in (1, 2):
        assert np.all(inst[markers == marker] == marker)  # each core inside its disc
    assert markers_from_energy(energy, foreground, 0.4, 1, min_px=10_000).max() == 0


def test_opening_removes_thin_marker_bridges():
    foreground = np.ones((7, 15), bool)
    energy = np.ones((7, 15), np.float32)
    energy[1:6, 1:6] = energy[1:6, 9:14] = 0.0  # two 5 x 5 cores
    energy[3, 6:9] = 0.0  # a 1 px wide bridge
    assert markers_from_energy(energy, foreground, 0.4, open_ksize=1, min_px=1).max() == 1
    assert markers_from_energy(energy, foreground, 0.4, open_ksize=3, min_px=1).max() == 2


def test_watershed_splits_the_touching_discs(discs):
    inst, _, np_prob, hv = discs
    foreground = np_prob > 0
    energy = hv_energy(hv, foreground, AT_20X.sobel_ksize)
    markers = markers_from_energy(energy, foreground, 0.4, AT_20X.open_ksize, 3)
    result = watershed_instances(energy, markers, foreground, AT_20X.blur_ksize)
    assert result.dtype == np.int32 and result.max() == 2
    assert np.array_equal(result > 0, foreground)
    assert iou(result == 1, inst == 1) > 0.9 and iou(result == 2, inst == 2) > 0.9


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), blur=st.sampled_from([1, 3]))
def test_watershed_shortcut_equals_one_full_watershed(seed, blur):
    """Blobs with one marker are filled directly; the result must equal plain flooding."""
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(4, 24, 2))
    foreground = ndimage.binary_opening(rng.random(shape) < 0.6)
    energy = rng.random(shape).astype(np.float32) * foreground
    markers = np.zeros(shape, np.int32)
    points = rng.integers(0, shape, size=(int(rng.integers(0, 12)), 2))
    for marker, (r, c) in enumerate(points, start=1):
        markers[max(0, r - 1) : r + 1, c : c + 2] = marker  # some outside the foreground
    surface = ((1.0 - energy) * foreground).astype(np.float32)
    if blur > 1:
        surface = cv2.GaussianBlur(surface, (blur, blur), 0)
    expected = remove_small(watershed(-surface, markers, mask=foreground), 1)
    assert np.array_equal(watershed_instances(energy, markers, foreground, blur), expected)


def test_watershed_leaves_blobs_without_a_marker_as_background():
    foreground = np.zeros((5, 9), bool)
    foreground[1:4, 1:4] = foreground[1:4, 5:8] = True
    markers = np.zeros((5, 9), np.int32)
    markers[2, 2] = 1
    result = watershed_instances(np.zeros((5, 9), np.float32), markers, foreground, 1)
    assert (result == 1).sum() == 9 and not result[:, 5:].any()


def test_vote_majority_ties_and_background():
    inst = np.array([[1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 4]])
    tp = np.array([[2, 2, 5, 0, 1, 4, 0, 0, 0, 0, 6]])
    class_id, class_prob = vote_classes(inst, tp)
    # 1: class 2 wins; 2: a tie between 1 and 4 goes to 1; 3: only background;
    # 4: background is the majority but class 6 is present, so 6
    assert class_id.tolist() == [2, 1, 0, 6]
    assert class_id.dtype == np.int32
    np.testing.assert_allclose(class_prob, [0.5, 0.5, 1.0, 1 / 3])


def test_a_nucleus_all_background_in_the_type_map_takes_its_likeliest_nuclear_class():
    inst = np.array([[1, 1, 2, 2]])
    tp = np.array([[0, 0, 3, 0]])
    fallback = np.array([[2, 2, 1, 1]])
    class_id, class_prob = vote_classes(inst, tp, fallback)
    assert class_id.tolist() == [2, 3]  # nucleus 1 from the fallback, 2 keeps its vote
    np.testing.assert_allclose(class_prob, [1.0, 0.5])


def test_post_processing_never_writes_a_nucleus_of_class_background():
    np_prob = np.zeros((32, 32), np.float32)
    np_prob[8:20, 8:20] = 1.0
    rows, cols = np.mgrid[0:32, 0:32].astype(np.float32)
    hv = np.stack([(cols - 13.5) / 6, (rows - 13.5) / 6]) * (np_prob > 0)
    tp = np.zeros((4, 32, 32), np.float32)
    tp[0] = 0.6  # the type head says background everywhere, nucleus included
    tp[3] = 0.3
    tp[1] = 0.1
    for route in ("native", "resample"):
        nuclei = hover_postprocess(np_prob, hv, tp, mpp=0.5, method=route)
        assert len(nuclei.class_id) == 1 and nuclei.class_id.tolist() == [3], route
        assert (nuclei.class_map[nuclei.inst_map > 0] == 3).all()


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_vote_equals_a_mask_per_nucleus(seed):
    rng = np.random.default_rng(seed)
    inst = remove_small(rng.integers(0, 6, size=(9, 9)), 1)
    types = rng.integers(0, 4, size=(9, 9))
    class_id, class_prob = vote_classes(inst, types)
    for nucleus in range(1, inst.max() + 1):
        ids, votes = np.unique(types[inst == nucleus], return_counts=True)
        ranked = sorted(zip(-votes, ids, strict=True))  # most votes first, then lower id
        best = next((i for _, i in ranked if i != 0), 0)
        assert class_id[nucleus - 1] == best
        assert class_prob[nucleus - 1] == np.mean(types[inst == nucleus] == best)


def test_type_map_from_probabilities_or_classes():
    probs = np.zeros((3, 2, 2), np.float32)
    probs[2, 0, 0] = probs[1, 1, 1] = 1.0
    assert type_map_of(probs, (2, 2)).tolist() == [[2, 0], [0, 1]]
    assert type_map_of(np.array([[1, 0], [0, 3]]), (2, 2)).tolist() == [[1, 0], [0, 3]]
    for bad in (np.zeros((2, 2), np.float32), np.zeros((3, 2, 3)), np.array([[-1, 0], [0, 0]])):
        with pytest.raises(ValueError, match="tp"):
            type_map_of(bad, (2, 2))


def test_nucleus_geometry_of_rectangles():
    inst = np.zeros((6, 8), np.int32)
    inst[1:3, 2:6] = 1
    inst[4:6, 0:1] = 2
    centroid, bbox, area = nucleus_geometry(inst)
    np.testing.assert_allclose(centroid, [[3.5, 1.5], [0.0, 4.5]])
    assert bbox.tolist() == [[1, 2, 3, 6], [4, 0, 6, 1]]
    assert area.tolist() == [8, 2]
    inst[inst == 2] = 3  # a gap in the ids
    assert nucleus_geometry(inst)[1].tolist() == [[1, 2, 3, 6], [0, 0, 0, 0], [4, 0, 6, 1]]


def test_params_scale_with_resolution():
    assert WatershedParams.at(0.25) == WatershedParams()
    assert (AT_20X.sobel_ksize, AT_20X.open_ksize, AT_20X.blur_ksize) == (9, 1, 1)
    assert (AT_20X.min_blob_px, AT_20X.min_marker_px) == (3, 3)
    assert WatershedParams.at(0.1).sobel_ksize == 31
    with pytest.raises(ValueError, match="mpp"):
        WatershedParams.at(0.0)


# -- one patch --------------------------------------------------------------------------------


def test_hover_postprocess_result(discs):
    inst, cls, np_prob, hv = discs
    probs = np.stack([cls == k for k in range(CONIC.n_classes)]).astype(np.float32)
    nuclei = hover_postprocess(np_prob, hv, probs, mpp=0.5)
    same = hover_postprocess(np_prob, hv, cls, mpp=0.5)
    assert isinstance(nuclei, Nuclei) and len(nuclei) == 2
    assert np.array_equal(nuclei.inst_map, same.inst_map)
    assert nuclei.inst_map.dtype == np.int32 and nuclei.class_map.dtype == np.int32
    assert nuclei.class_id.tolist() == [2, 3]
    assert np.array_equal(nuclei.class_map, np.choose(nuclei.inst_map, [0, 2, 3]))
    table = nuclei.table()
    assert list(table["id"]) == [1, 2]
    assert table["centroid_x"].tolist() == pytest.approx([20, 34], abs=1.0)
    assert table["centroid_y"].tolist() == pytest.approx([20, 20], abs=0.5)


def test_hover_postprocess_of_an_empty_patch():
    nuclei = hover_postprocess(
        np.zeros((16, 16)), np.zeros((2, 16, 16)), np.zeros((3, 16, 16)), 0.5
    )
    assert len(nuclei) == 0 and not nuclei.inst_map.any()
    assert nuclei.centroid.shape == (0, 2) and nuclei.bbox.shape == (0, 4)


@pytest.mark.parametrize(
    ("np_prob", "hv", "method", "message"),
    [
        (np.zeros((8, 8)), np.zeros((2, 8, 9)), "native", "hv: expected shape 2 x 8 x 8"),
        (np.zeros((1, 8, 8)), np.zeros((2, 8, 8)), "native", "np_prob"),
        (np.zeros((8, 8)), np.zeros((8, 8, 2)), "native", "channel 0 horizontal"),
        (np.zeros((8, 8)), np.zeros((2, 8, 8)), "x2", "method"),
    ],
)
def test_hover_postprocess_bad_input(np_prob, hv, method, message):
    with pytest.raises(ValueError, match=message):
        hover_postprocess(np_prob, hv, np.zeros((8, 8), np.int32), 0.5, method=method)


def perfect_outputs(labels: np.ndarray):
    targets = [make_targets(patch[..., 0], patch[..., 1]) for patch in labels]
    np_prob = np.stack([t["np"] for t in targets]).astype(np.float32)
    return np_prob, np.stack([t["hv"] for t in targets]), np.stack([t["tp"] for t in targets])


@pytest.fixture(scope="module")
def perfect(synthetic_small):
    return synthetic_small.labels, perfect_outputs(synthetic_small.labels)


def test_perfect_targets_recover_touching_synthetic_nuclei(perfect):
    labels, (np_prob, hv, tp) = perfect
    pred = to_conic_labels(postprocess_batch(np_prob, hv, tp, mpp=0.5))
    scores = conic_metrics(pred, labels, CONIC)
    assert scores["pq"] >= 0.95
    assert scores["mpq+"] >= 0.85


def test_native_route_at_least_as_good_as_the_resample_route(perfect):
    labels, (np_prob, hv, tp) = perfect
    native = to_conic_labels(postprocess_batch(np_prob[:4], hv[:4], tp[:4], 0.5))
    resampled = to_conic_labels(postprocess_batch(np_prob[:4], hv[:4], tp[:4], 0.5, "resample"))
    assert native.shape == resampled.shape == labels[:4].shape
    pq_native = conic_metrics(native, labels[:4], CONIC)["pq"]
    pq_resampled = conic_metrics(resampled, labels[:4], CONIC)["pq"]
    assert pq_resampled >= 0.9  # the route itself works
    assert pq_native >= pq_resampled


def test_40x_constants_at_20x_merge_nuclei(perfect):
    labels, (np_prob, hv, _) = perfect
    n_true = sum(len(np.unique(patch[..., 0])) - 1 for patch in labels[:4])
    n_native = sum(segment_instances(np_prob[i], hv[i], AT_20X).max() for i in range(4))
    n_40x = sum(segment_instances(np_prob[i], hv[i], WatershedParams()).max() for i in range(4))
    assert n_40x < 0.9 * n_true
    assert abs(n_native - n_true) <= 0.03 * n_true


# -- many patches -----------------------------------------------------------------------------


def test_batch_in_a_process_pool_equals_one_process(perfect):
    _, (np_prob, hv, tp) = perfect
    serial = to_conic_labels(postprocess_batch(np_prob[:4], hv[:4], tp[:4], 0.5))
    pooled = to_conic_labels(postprocess_batch(np_prob[:4], hv[:4], tp[:4], 0.5, workers=2))
    assert np.array_equal(serial, pooled)


def test_batch_checks_its_inputs():
    with pytest.raises(ValueError, match="one N"):
        postprocess_batch(np.zeros((2, 8, 8)), np.zeros((3, 2, 8, 8)), np.zeros((2, 8, 8)), 0.5)
    with pytest.raises(ValueError, match="at least one"):
        to_conic_labels([])


# -- the submission writer --------------------------------------------------------------------


def test_submission_round_trip(tmp_path, synthetic_small):
    labels = synthetic_small.labels[:3].astype(np.int64)
    npy, csv = write_submission(tmp_path, labels, CONIC)
    assert (npy.name, csv.name) == (PREDICTIONS_FILE, COUNTS_FILE)
    saved = np.load(npy, allow_pickle=False)
    assert saved.dtype == np.int32 and np.array_equal(saved, labels)
    table = pd.read_csv(csv)
    assert list(table.columns) == list(CONIC.foreground_names)
    assert np.array_equal(table.to_numpy(), count_nuclei(labels, CONIC, 224))
    predictions, counts = read_submission(tmp_path, CONIC)
    assert np.array_equal(predictions, labels) and counts.equals(table)


def test_submission_with_given_counts_in_any_column_order(tmp_path, synthetic_small):
    labels = synthetic_small.labels[:2]
    counts = submission_counts(labels, CONIC) + 1
    write_submission(tmp_path, labels, CONIC, counts=counts[counts.columns[::-1]])
    assert read_submission(tmp_path, CONIC)[1].equals(counts)


def test_bad_submission_leaves_the_folder_untouched(tmp_path, synthetic_small):
    labels = synthetic_small.labels[:2]
    write_submission(tmp_path, labels, CONIC)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    bad_class = labels.copy()
    bad_class[0, 0, 0, 1] = 9
    with pytest.raises(ValueError, match="class id 9"):
        write_submission(tmp_path, bad_class, CONIC)
    with pytest.raises(ValueError, match="counts: expected shape"):
        write_submission(tmp_path, labels, CONIC, counts=np.zeros((3, 6)))
    with pytest.raises(ValueError, match="missing"):
        write_submission(tmp_path, labels, CONIC, counts=pd.DataFrame({"x": [1, 2]}))
    with pytest.raises(ValueError, match="N x H x W x 2"):
        write_submission(tmp_path, labels[..., 0], CONIC)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
