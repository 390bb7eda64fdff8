"""NP, HV and TP targets."""

import numpy as np
import pytest

from nucstudy.data import make_targets
from nucstudy.data.targets import network_like_maps


def test_hv_spans_minus_one_to_one_per_nucleus_and_axis():
    inst = np.zeros((12, 12), np.int32)
    inst[1:4, 1:6] = 5  # 3 x 5 block: centre (x=3, y=2)
    inst[6:11, 6:9] = 2  # 5 x 3 block
    cls = np.where(inst > 0, 3, 0)
    t = make_targets(inst, cls)
    assert t["np"].dtype == np.uint8 and t["np"].sum() == 30
    assert t["hv"].shape == (2, 12, 12) and t["hv"].dtype == np.float32
    assert t["tp"].dtype == np.int64 and np.array_equal(t["tp"], cls)
    h, v = t["hv"]
    assert h[2, 1:6].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert v[1:4, 3].tolist() == [-1.0, 0.0, 1.0]
    for ident in (5, 2):
        for channel in (h, v):
            values = channel[inst == ident]
            assert values.min() == -1.0 and values.max() == 1.0
    assert np.all(t["hv"][:, inst == 0] == 0)


def test_scaling_is_separate_on_each_side():
    inst = np.zeros((5, 8), np.int32)
    inst[2, 0:3] = 1  # a 1 x 3 row ...
    inst[1:4, 3] = 1  # ... and a column to its right: centre of mass is off centre
    h = make_targets(inst, (inst > 0).astype(np.int32))["hv"][0]
    values = h[inst == 1]
    assert values.min() == -1.0 and values.max() == 1.0
    centre = (0 + 1 + 2 + 3 * 3) / 6  # 2.0: two px left of it, one px right
    assert h[2, 0] == -1.0
    assert np.isclose(h[2, 1], (1 - centre) / centre)  # -0.5: scaled by 2 on the left
    assert h[2, 3] == 1.0  # scaled by 1 on the right


def test_small_and_border_nuclei_get_targets():
    inst = np.zeros((10, 10), np.int32)
    inst[0:2, 0:3] = 1  # touches the border, 6 px
    inst[5, 5:7] = 2  # two pixels
    inst[8, 8] = 3  # a single pixel: offsets are all zero
    h, v = make_targets(inst, (inst > 0).astype(np.int32))["hv"]
    assert h[0, 0] == -1.0 and h[0, 2] == 1.0 and v[0, 0] == -1.0 and v[1, 0] == 1.0
    assert h[5, 5] == -1.0 and h[5, 6] == 1.0 and v[5, 5] == 0.0
    assert h[8, 8] == 0.0 and v[8, 8] == 0.0


def test_ids_need_not_be_contiguous():
    inst = np.zeros((6, 6), np.int32)
    inst[1:4, 1:4] = 70000
    h = make_targets(inst, (inst > 0).astype(np.int32))["hv"][0]
    assert h[2, 1:4].tolist() == [-1.0, 0.0, 1.0]


def test_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        make_targets(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="integer"):
        make_targets(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.int32))


def test_network_like_maps_are_blurred_noisy_and_valid(synthetic_small):
    label = synthetic_small.labels[0]
    targets = make_targets(label[..., 0], label[..., 1])
    np_prob, hv, tp = network_like_maps(targets, np.random.default_rng(0), 1.0, 0.1, 7)
    assert np_prob.shape == label.shape[:2] and hv.shape == (2, *label.shape[:2])
    assert tp.shape == (7, *label.shape[:2]) and np.allclose(tp.sum(axis=0), 1, atol=1e-5)
    assert 0 <= np_prob.min() and np_prob.max() <= 1 and np.abs(hv).max() <= 1
    assert 0.01 < np.abs(np_prob - targets["np"]).mean() < 0.3  # changed, not destroyed
    again = network_like_maps(targets, np.random.default_rng(0), 1.0, 0.1, 7)
    assert all(np.array_equal(a, b) for a, b in zip((np_prob, hv, tp), again, strict=True))
    exact = network_like_maps(targets, np.random.default_rng(0), 0.0, 0.0)
    assert np.array_equal(exact[0], targets["np"]) and exact[2] is targets["tp"]
