"""Grouped train/validation split."""

import numpy as np
import pytest

from nucstudy.data import split_by_source, synthetic_conic


def test_no_source_on_both_sides_and_seeded():
    d = synthetic_conic(20, size=64, seed=0, patches_per_source=2)
    train, val = split_by_source(d, 0.3, seed=5)
    sources = d.patch_info["source"].to_numpy()
    assert set(sources[train]).isdisjoint(sources[val])
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(20))
    assert len(val) >= 6
    again = split_by_source(d, 0.3, seed=5)
    assert np.array_equal(again[1], val)
    assert any(not np.array_equal(split_by_source(d, 0.3, seed=s)[1], val) for s in range(6, 12))


def test_split_needs_two_sources_and_a_sane_fraction():
    one = synthetic_conic(3, size=64, patches_per_source=4)
    with pytest.raises(ValueError, match="one source image"):
        split_by_source(one)
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_source(synthetic_conic(8, size=64, patches_per_source=1), 1.5)
