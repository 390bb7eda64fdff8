"""Label arrays in the CoNIC layout: count_nuclei counts as CoNIC does, validate_labels
catches each problem."""

import numpy as np
import pytest

from nucstudy.data.classes import CONIC, CONSEP
from nucstudy.data.labels import (
    challenge_crop,
    count_nuclei,
    median_diameters,
    validate_labels,
)


def _labels(n=2, size=256):
    return np.zeros((n, size, size, 2), np.int32)


def _paint(labels, k, rows, cols, inst, cls):
    labels[k, rows, cols, 0] = inst
    labels[k, rows, cols, 1] = cls


def test_count_nuclei_counts_on_central_224():
    labels = _labels()
    _paint(labels, 0, slice(100, 110), slice(100, 110), 3, 2)  # centre: counts
    _paint(labels, 0, slice(0, 10), slice(0, 10), 4, 3)  # corner, outside the crop
    _paint(labels, 0, slice(10, 20), slice(120, 130), 5, 6)  # straddles the crop edge (16)
    counts = count_nuclei(labels, CONIC)
    assert counts.shape == (2, 6) and counts.dtype == np.int64
    assert counts[0].tolist() == [0, 1, 0, 0, 0, 1]
    assert counts[1].tolist() == [0] * 6
    assert count_nuclei(labels, CONIC, crop=None)[0].tolist() == [0, 1, 1, 0, 0, 1]


def test_a_two_class_nucleus_counts_for_both_and_ids_need_not_be_contiguous():
    labels = _labels(1)
    _paint(labels, 0, slice(120, 125), slice(120, 130), 1000, 1)
    _paint(labels, 0, slice(125, 130), slice(120, 130), 1000, 6)
    _paint(labels, 0, slice(60, 70), slice(60, 70), 7, 6)
    assert count_nuclei(labels, CONIC)[0].tolist() == [1, 0, 0, 0, 0, 2]


def test_count_nuclei_refuses_a_crop_larger_than_the_patch():
    with pytest.raises(ValueError, match="crop=224 does not fit"):
        count_nuclei(_labels(1, 128), CONIC)
    assert challenge_crop(256) == 224 and challenge_crop(128) == 112


def test_count_nuclei_refuses_bad_layouts():
    with pytest.raises(ValueError, match="N x H x W x 2"):
        count_nuclei(np.zeros((2, 64, 64), np.int32), CONIC)
    with pytest.raises(ValueError, match="integer"):
        count_nuclei(np.zeros((1, 64, 64, 2), np.float32), CONIC, crop=None)
    bad = _labels(1, 64)
    _paint(bad, 0, slice(30, 34), slice(30, 34), 1, 9)
    with pytest.raises(ValueError, match="class id 9"):
        count_nuclei(bad, CONIC, crop=None)


def test_validate_labels_catches_each_problem():
    good = _labels(1, 32)
    _paint(good, 0, slice(5, 9), slice(5, 9), 1, 2)
    validate_labels(good, CONIC)
    mixed = good.copy()
    mixed[0, 5, 5, 1] = 3
    with pytest.raises(ValueError, match="more than one class"):
        validate_labels(mixed, CONIC, "labels.npy")
    orphan = good.copy()
    orphan[0, 20, 20, 1] = 2
    with pytest.raises(ValueError, match="disagree on foreground"):
        validate_labels(orphan, CONIC)
    unclassified = good.copy()
    unclassified[0, 20, 20, 0] = 5
    with pytest.raises(ValueError, match="disagree on foreground"):
        validate_labels(unclassified, CONIC)
    negative = good.copy()
    negative[0, 0, 0] = (-1, 0)
    with pytest.raises(ValueError, match="negative"):
        validate_labels(negative, CONIC)
    with pytest.raises(ValueError, match="class id 5 .* 'consep'"):
        validate_labels(np.where(good > 0, 5, 0).astype(np.int32), CONSEP)


def test_median_diameters_measure_whole_nuclei_by_their_majority_class():
    labels = np.zeros((2, 20, 20, 2), dtype=np.int32)
    # patch 0: a 4 x 4 class-1 nucleus with one pixel painted class 2, a class-2 nucleus cut
    # by the edge (not measured), and a 6 x 6 class-2 nucleus
    labels[0, 2:6, 2:6] = (1, 1)
    labels[0, 2, 2, 1] = 2
    labels[0, 0:3, 12:15] = (2, 2)
    labels[0, 10:16, 10:16] = (3, 2)
    labels[1, 5:7, 5:7] = (7, 1)  # patch 1: a 2 x 2 class-1 nucleus
    diameters = median_diameters(labels, CONSEP, mpp=0.5)

    def circle_diameter_um(side: int) -> float:  # of a square nucleus's area, at 0.5 um/px
        return 2 * np.sqrt(side * side / np.pi) * 0.5

    assert diameters[0] == pytest.approx(np.median([circle_diameter_um(4), circle_diameter_um(2)]))
    assert diameters[1] == pytest.approx(circle_diameter_um(6))
    assert np.isnan(diameters[2:]).all()  # no epithelial or spindle nucleus
