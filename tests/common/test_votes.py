"""Class votes counted object by object."""

import numpy as np
import pytest

from nucstudy.common.votes import class_votes


def test_votes_count_pixels_or_their_weights_per_object_and_class():
    objects = np.array([0, 0, 0, 2, 2, 1])
    classes = np.array([1, 1, 2, 0, 2, 2])
    expected = [[0, 2, 1], [0, 0, 1], [1, 0, 1], [0, 0, 0]]  # object 3 has no pixels
    votes = class_votes(objects, classes, n_objects=4, n_classes=3)
    assert votes.dtype == np.int64 and votes.tolist() == expected
    weighted = class_votes(objects, classes, 4, 3, weights=np.array([1, 1, 5, 2, 1, 3.0]))
    assert weighted.tolist() == [[0, 2, 5], [0, 0, 3], [2, 0, 1], [0, 0, 0]]
    assert class_votes(np.array([], int), np.array([], int), 2, 3).shape == (2, 3)


def test_an_id_out_of_range_is_refused_not_counted_in_another_row():
    with pytest.raises(ValueError, match="class ids must lie in 0..2, got 0..3"):
        class_votes(np.array([0, 1]), np.array([0, 3]), 2, 3)
    with pytest.raises(ValueError, match="object ids"):
        class_votes(np.array([0, 2]), np.array([0, 1]), 2, 3)
